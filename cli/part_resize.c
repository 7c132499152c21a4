/* part_resize.c — `inplace part shrink` and `inplace part grow`. */
#include <string.h>

#include "cli/cli.h"
#include "partctl/partctl.h"

enum { OPT_TO = OPT_CLI_LAST, OPT_MAX, OPT_NO_REPAIR, OPT_OVER };

static void shrink_usage(void)
{
	fputs("\nUsage:\n"
	      " inplace part shrink [options] DISK N --to SIZE\n"
	      "\nShrink the filesystem of partition N (ext2/3/4 through resize2fs, NTFS\n"
	      "through ntfsresize), then the partition.  The filesystem is checked first.\n"
	      "Crash-safe: after kill -9 or a power cut, 'inplace part resume DISK' rolls\n"
	      "an interrupted ext resize back (e2undo) and finishes the shrink.\n"
	      "\nOptions:\n"
	      "     --to SIZE       the partition's new size (512MiB, 8G, bytes, or\n"
	      "                       sectors with 's'); its end is aligned up to the\n"
	      "                       table's grain (1 MiB)\n"
	      "     --no-repair     refuse a filesystem e2fsck would repair (it is\n"
	      "                       repaired with e2fsck -f -y otherwise, and told)\n"
	      "     --dry-run       check and show the plan, write nothing\n"
	      "     --json          one JSON document on stdout\n"
	      " -q, --quiet         no progress output\n"
	      " -h, --help          display this help\n"
	      "\nEnvironment:\n"
	      " INPLACE_STATE_DIR   where the shrink journal and undo file live\n"
	      "                       (default /var/lib/inplace)\n"
	      "\nExit status: 0 done, 1 failed, 2 bad usage or input (nothing changed).\n",
	      stdout);
}

static void grow_usage(void)
{
	fputs("\nUsage:\n"
	      " inplace part grow [options] DISK N [--to SIZE | --max | --over M]\n"
	      "\nGrow partition N into the free space after it, then its filesystem\n"
	      "(ext2/3/4 through resize2fs, NTFS through ntfsresize).  A mounted\n"
	      "ext2/3/4 partition of a block device grows online.\n"
	      "\nOptions:\n"
	      "     --to SIZE       the partition's new size; its end is aligned down\n"
	      "                       to the table's grain (1 MiB)\n"
	      "     --max           as large as the free space after it allows (default)\n"
	      "     --over M        delete partition M (after N, not in use) and grow N\n"
	      "                       over its space, in one table write\n"
	      "     --dry-run       check and show the plan, write nothing\n"
	      "     --json          one JSON document on stdout\n"
	      " -q, --quiet         no progress output\n"
	      " -h, --help          display this help\n"
	      "\nExit status: 0 done, 1 failed, 2 bad usage or input (nothing changed).\n",
	      stdout);
}

static int emit(const struct cli_opts *o, const char *cmd, const char *disk,
		const struct partctl_resize_plan *p, bool grow)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];
	bool changed = !o->dry_run && !p->nothing;

	if (o->json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "partition", json_object_new_int((int)p->n));
		json_object_object_add(doc, "fs", json_object_new_string(p->fstype));
		json_object_object_add(doc, "start", ip_json_u64(p->start));
		json_object_object_add(doc, "old_size", ip_json_u64(p->old_size));
		json_object_object_add(doc, "new_size", ip_json_u64(p->new_size));
		if (p->fs_min)
			json_object_object_add(doc, "fs_min_size", ip_json_u64(p->fs_min));
		if (grow)
			json_object_object_add(doc, "max_size", ip_json_u64(p->max_size));
		if (!grow) {
			/* what e2fsck repaired before the shrink */
			json_object_object_add(doc, "repairs", json_object_new_int((int)p->repairs));
			json_object_object_add(doc, "repaired", p->repaired[0] ? json_object_new_string(p->repaired) : NULL);
		}
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o->dry_run));
		json_object_object_add(doc, "changed", json_object_new_boolean(changed));
		return cli_emit(doc);
	}
	if (!grow && p->repairs)
		printf("e2fsck repaired %u problem%s in partition %u of %s first: %s\n", p->repairs,
		       p->repairs == 1 ? "" : "s", p->n, disk, p->repaired[0] ? p->repaired : "(it did not say what)");
	ip_format_size(p->old_size, b1, sizeof(b1));
	ip_format_size(p->new_size, b2, sizeof(b2));
	if (p->nothing)
		printf("partition %u of %s is already %s: nothing to do\n", p->n, disk, b2);
	else
		printf("%s partition %u of %s (%s) from %s to %s\n",
		       o->dry_run ? (grow ? "would grow" : "would shrink") : (grow ? "grew" : "shrank"),
		       p->n, disk, p->fstype, b1, b2);
	if (fflush(stdout) != 0)
		return IP_EXIT_FAILED;
	return IP_EXIT_OK;
}

static int resize_verb(int argc, char **argv, bool grow)
{
	static const struct option longopts[] = {
		{ "to", required_argument, NULL, OPT_TO },
		{ "max", no_argument, NULL, OPT_MAX },
		{ "no-repair", no_argument, NULL, OPT_NO_REPAIR },
		{ "over", required_argument, NULL, OPT_OVER },
		CLI_COMMON_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd = grow ? "part grow" : "part shrink";
	struct cli_opts o = { 0 };
	struct partctl_resize_plan p;
	const char *to_arg = NULL, *over_arg = NULL, *disk;
	bool max = false, no_repair = false;
	ip_error e = { 0 };
	uint64_t to = 0;
	unsigned n, over = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_TO:
			to_arg = optarg;
			break;
		case OPT_MAX:
			if (!grow)
				return cli_usage(&o, cmd, "--max is for 'part grow'; give --to SIZE");
			max = true;
			break;
		case OPT_OVER:
			if (!grow)
				return cli_usage(&o, cmd, "--over is for 'part grow'");
			over_arg = optarg;
			break;
		case OPT_NO_REPAIR:
			if (grow)
				return cli_usage(&o, cmd, "--no-repair is for 'part shrink'");
			no_repair = true;
			break;
		case 'h':
			grow ? grow_usage() : shrink_usage();
			return IP_EXIT_OK;
		default:
			return cli_usage(&o, cmd, "unknown option");
		}
	}
	if (argc - optind != 2)
		return cli_usage(&o, cmd, "give DISK and N");
	if (!grow && !to_arg)
		return cli_usage(&o, cmd, "give the new size with --to SIZE");
	if (max && to_arg)
		return cli_usage(&o, cmd, "give either --to SIZE or --max, not both");
	if (over_arg && (max || to_arg))
		return cli_usage(&o, cmd, "--over grows as far as the space allows: give it without --to or --max");
	disk = argv[optind];
	if (cli_parse_uint(&o, cmd, "partition number", argv[optind + 1], &n))
		return IP_EXIT_BADINPUT;
	if (over_arg && cli_parse_uint(&o, cmd, "partition number", over_arg, &over))
		return IP_EXIT_BADINPUT;
	cli_opts_apply(&o);
	if (to_arg && (r = cli_parse_disk_size(&o, cmd, disk, to_arg, &to)))
		return r;
	struct partctl_opts po = { .dry_run = o.dry_run, .no_repair = no_repair };

	if (over)
		r = partctl_part_grow_over(disk, n, over, &po, &p, &e);
	else
		r = grow ? partctl_part_grow(disk, n, to, &po, &p, &e) : partctl_part_shrink(disk, n, to, &po, &p, &e);
	if (r < 0)
		return cli_error(&o, cmd, &e);
	return emit(&o, cmd, disk, &p, grow);
}

int cmd_part_shrink(int argc, char **argv)
{
	return resize_verb(argc, argv, false);
}

int cmd_part_grow(int argc, char **argv)
{
	return resize_verb(argc, argv, true);
}
