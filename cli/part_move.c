/* part_move.c — `inplace part move` and `inplace part resume`. */
#include <string.h>

#include "cli/cli.h"
#include "partctl/partctl.h"

enum { OPT_TO = OPT_CLI_LAST, OPT_JOURNAL };

const struct cli_help cli_help_part_move = {
	.synopsis = "[options] DISK N --to START",
	.description =
		"Move partition N so that it starts at START, copying only the blocks its\n"
		"filesystem uses.  Crash-safe: after kill -9 or a power cut,\n"
		"'inplace part resume DISK' finishes the move.\n",
	.opts = (const struct cli_opt[]){
		{ "to", 0, "START", OPT_TO, "new start (512MiB, 2G, bytes, or sectors with 's'), "
					     "aligned to the table's grain (1 MiB)" },
		{ "journal", 0, "FILE", OPT_JOURNAL, "keep the journal in FILE (on another disk) instead of "
						     "the gap before the first partition" },
		CLI_OPT_DRY_RUN("check and show the plan, write nothing"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
	.more = "Exit status: 0 done, 1 failed, 2 bad usage or input (nothing changed).\n",
};

const struct cli_help cli_help_part_resume = {
	.synopsis = "[options] DISK",
	.description =
		"Finish an interrupted 'part move' or 'part shrink' of DISK.  Nothing to\n"
		"finish is success.\n",
	.opts = (const struct cli_opt[]){
		{ "journal", 0, "FILE", OPT_JOURNAL, "the journal file given to 'part move --journal' (by "
						     "default the one the state directory recorded)" },
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
	.more = "Exit status: 0 done or nothing to do, 1 failed, 2 bad usage or input.\n",
};

static void add_info(json_object *doc, const struct partctl_move_info *in)
{
	json_object_object_add(doc, "partition", json_object_new_int((int)in->n));
	json_object_object_add(doc, "from", ip_json_u64(in->from));
	json_object_object_add(doc, "to", ip_json_u64(in->to));
	json_object_object_add(doc, "size", ip_json_u64(in->size));
	json_object_object_add(doc, "copy_bytes", ip_json_u64(in->used));
	json_object_object_add(doc, "journal", json_object_new_string(in->journal));
}

int cmd_part_move(int argc, char **argv)
{
	const char *cmd = "part move";
	struct cli_opts o = { 0 };
	struct partctl_move_opts mo = { 0 };
	struct partctl_move_info info = { 0 };
	const char *to_arg = NULL, *disk;
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];
	ip_error e = { 0 };
	uint64_t to;
	unsigned n;
	int c, r;

	while ((c = cli_getopt(argc, argv, &cli_help_part_move)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_TO:
			to_arg = optarg;
			break;
		case OPT_JOURNAL:
			mo.journal = optarg;
			break;
		case 'h':
			return cli_help_print(cmd, &cli_help_part_move);
		default:
			return cli_usage(&o, cmd, "unknown option");
		}
	}
	if (argc - optind != 2)
		return cli_usage(&o, cmd, "give DISK and N");
	if (!to_arg)
		return cli_usage(&o, cmd, "give the new start with --to START");
	disk = argv[optind];
	if (cli_parse_uint(&o, cmd, "partition number", argv[optind + 1], &n))
		return IP_EXIT_BADINPUT;
	cli_opts_apply(&o);
	r = cli_parse_disk_size(&o, cmd, disk, to_arg, &to);
	if (r)
		return r;
	mo.dry_run = o.dry_run;
	if (partctl_move_ex(disk, n, to, &mo, &info, &e) < 0)
		return cli_error(&o, cmd, &e);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o.dry_run));
		add_info(doc, &info);
		return cli_emit(doc);
	}
	printf("%s partition %u of %s from byte %llu to %llu (%s, %s to copy), journal: %s\n",
	       o.dry_run ? "would move" : "moved", n, disk, (unsigned long long)info.from,
	       (unsigned long long)info.to, ip_format_size(info.size, b1, sizeof(b1)),
	       ip_format_size(info.used, b2, sizeof(b2)), info.journal);
	if (fflush(stdout) != 0)
		return IP_EXIT_FAILED;
	return IP_EXIT_OK;
}

int cmd_part_resume(int argc, char **argv)
{
	const char *cmd = "part resume";
	struct cli_opts o = { 0 };
	struct partctl_move_opts mo = { 0 };
	struct partctl_move_info info = { 0 };
	ip_error e = { 0 };
	bool did = false;
	const char *disk;
	int c;

	while ((c = cli_getopt(argc, argv, &cli_help_part_resume)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_JOURNAL:
			mo.journal = optarg;
			break;
		case 'h':
			return cli_help_print(cmd, &cli_help_part_resume);
		default:
			return cli_usage(&o, cmd, "unknown option");
		}
	}
	if (o.dry_run)
		return cli_usage(&o, cmd, "resume has no --dry-run: it only finishes what was started");
	if (argc - optind != 1)
		return cli_usage(&o, cmd, "give DISK");
	disk = argv[optind];
	cli_opts_apply(&o);
	if (partctl_resume_ex(disk, &mo, &did, &info, &e) < 0)
		return cli_error(&o, cmd, &e);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "resumed", json_object_new_boolean(did));
		json_object_object_add(doc, "shrink_finished", json_object_new_boolean(info.resized));
		if (info.journal[0])
			add_info(doc, &info);
		return cli_emit(doc);
	}
	if (!did)
		printf("nothing to resume on %s\n", disk);
	else if (info.journal[0])
		printf("finished the move of partition %u of %s to byte %llu\n", info.n, disk,
		       (unsigned long long)info.to);
	if (info.resized)
		printf("finished an interrupted shrink on %s\n", disk);
	if (fflush(stdout) != 0)
		return IP_EXIT_FAILED;
	return IP_EXIT_OK;
}
