/* part_table.c — `inplace part show|create|delete|plan|make-storage`: the
 * partition table, and making room for the storage partition. */
#include <errno.h>
#include <string.h>

#include <libsmartcols.h>

#include "cli/cli.h"
#include "partctl/partctl.h"

#define DEFAULT_STORE_LABEL "INPLACE-STORE"

enum {
	OPT_START = OPT_CLI_LAST,
	OPT_SIZE,
	OPT_TYPE,
	OPT_FS,
	OPT_LABEL,
	OPT_NEED,
};

static char *hsize(uint64_t v, char *buf)
{
	return ip_format_size(v, buf, IP_SIZE_BUFSZ);
}

/* ---- show ---------------------------------------------------------------- */

struct region {
	uint64_t start, size;
	bool inside;        /* inside the extended container */
};

/* Free regions of at least one grain, aligned as a new partition would be:
 * at top level and inside the extended container. */
static size_t free_regions(const partctl_table *t, struct region *out, size_t max)
{
	uint64_t g = partctl_table_grain(t), cur = partctl_table_first_usable(t);
	const struct partctl_part *ext = NULL;
	size_t n = partctl_table_count(t), k = 0;
	const struct partctl_part **v = calloc(n + 1, sizeof(*v));
	size_t nv = 0;

	if (!v)
		return 0;
	for (int pass = 0; pass < 2; pass++) {
		uint64_t end;

		nv = 0;
		for (size_t i = 0; i < n; i++) {
			const struct partctl_part *p = partctl_table_at(t, i);

			if (p->extended)
				ext = p;
			if (p->logical == (pass == 1))
				v[nv++] = p;
		}
		if (pass == 1) {
			if (!ext)
				break;
			cur = ext->start + g; /* the first EBR */
		}
		/* sort by start (few entries) */
		for (size_t i = 1; i < nv; i++)
			for (size_t j = i; j > 0 && v[j - 1]->start > v[j]->start; j--) {
				const struct partctl_part *x = v[j];

				v[j] = v[j - 1];
				v[j - 1] = x;
			}
		end = pass ? ext->start + ext->size : partctl_table_end_usable(t);
		for (size_t i = 0; i <= nv && k < max; i++) {
			uint64_t s = (cur + g - 1) / g * g;
			uint64_t e = i < nv ? v[i]->start : end;

			if (pass && i < nv)
				e = e > g ? e - g : 0; /* the EBR before a logical */
			if (e > s && e - s >= g)
				out[k++] = (struct region){ s, e - s, pass == 1 };
			if (i < nv && v[i]->start + v[i]->size > cur)
				cur = v[i]->start + v[i]->size;
		}
	}
	free(v);
	return k;
}

static const char *show_usage =
	"\nUsage:\n inplace part show [options] DISK\n\n"
	"Show the partition table of DISK (a block device or a disk-image file):\n"
	"each partition with its filesystem, usage and minimum size, and the free\n"
	"regions.\n\nOptions:\n"
	"     --json         one JSON document on stdout\n"
	" -h, --help         display this help\n";

static void add_fs_json(json_object *o, const struct partctl_fsinfo *fs)
{
	json_object_object_add(o, "fs", fs->type[0] ? json_object_new_string(fs->type) : NULL);
	json_object_object_add(o, "label", json_object_new_string(fs->label));
	json_object_object_add(o, "uuid", json_object_new_string(fs->uuid));
	json_object_object_add(o, "fs_size", ip_json_u64(fs->size));
	json_object_object_add(o, "used", ip_json_u64(fs->used));
	json_object_object_add(o, "min_size", ip_json_u64(fs->min_size));
	/* min_bytes: ours (min_size kept for existing readers); the resizer's
	 * own estimate beside it, so a fleet tool sees the difference. */
	json_object_object_add(o, "min_bytes", ip_json_u64(fs->min_size));
	json_object_object_add(o, "min_estimate_bytes", ip_json_u64(fs->min_estimate));
	json_object_object_add(o, "resizable", json_object_new_boolean(fs->resizable));
}

static void set_size_cell(struct libscols_line *ln, int col, uint64_t v)
{
	char b[IP_SIZE_BUFSZ];

	if (v)
		scols_line_set_data(ln, col, hsize(v, b));
}

static int print_show_human(const partctl_table *t, const struct partctl_fsinfo *fsv,
			    const struct region *fr, size_t nfr)
{
	struct libscols_table *tb = scols_new_table();
	struct libscols_line **lines;
	struct libscols_line *extline = NULL;
	unsigned ssz = partctl_table_sector_size(t);
	size_t n = partctl_table_count(t);
	char b[IP_SIZE_BUFSZ], num[32];
	enum { C_NR, C_START, C_END, C_SIZE, C_TYPE, C_FS, C_LABEL, C_UUID, C_USED, C_MIN };
	int r;

	if (!tb)
		return IP_EXIT_FAILED;
	printf("Disk %s: %s, %llu sectors of %u bytes, %s partition table\n", partctl_table_path(t),
	       hsize(partctl_table_disk_size(t), b),
	       (unsigned long long)(partctl_table_disk_size(t) / ssz), ssz,
	       !strcmp(partctl_table_label(t), "dos") ? "MBR (dos)" : "GPT");
	scols_table_new_column(tb, "NR", 0, SCOLS_FL_TREE);
	scols_table_new_column(tb, "START", 0, SCOLS_FL_RIGHT);
	scols_table_new_column(tb, "END", 0, SCOLS_FL_RIGHT);
	scols_table_new_column(tb, "SIZE", 0, SCOLS_FL_RIGHT);
	scols_table_new_column(tb, "TYPE", 0, 0);
	scols_table_new_column(tb, "FS", 0, 0);
	scols_table_new_column(tb, "LABEL", 0, SCOLS_FL_TRUNC);
	scols_table_new_column(tb, "UUID", 0, 0);
	scols_table_new_column(tb, "USED", 0, SCOLS_FL_RIGHT);
	scols_table_new_column(tb, "MIN", 0, SCOLS_FL_RIGHT);

	/* rows in disk order: partitions and free regions; logical ones and
	 * the free space inside the container under the extended row */
	lines = calloc(n + nfr + 1, sizeof(*lines));
	if (!lines) {
		scols_unref_table(tb);
		return IP_EXIT_FAILED;
	}
	for (int inside = 0; inside < 2; inside++) {
		uint64_t cur = 0;

		for (;;) {
			/* next item at or after cur in this level */
			const struct partctl_part *bp = NULL;
			const struct region *br = NULL;
			uint64_t bs = UINT64_MAX;
			struct libscols_line *ln;

			for (size_t i = 0; i < n; i++) {
				const struct partctl_part *p = partctl_table_at(t, i);

				if (p->logical == (inside == 1) && p->start >= cur && p->start < bs) {
					bs = p->start;
					bp = p;
				}
			}
			for (size_t i = 0; i < nfr; i++)
				if (fr[i].inside == (inside == 1) && fr[i].start >= cur && fr[i].start < bs) {
					bs = fr[i].start;
					br = &fr[i];
					bp = NULL;
				}
			if (bs == UINT64_MAX)
				break;
			if (inside && !extline)
				break;
			ln = scols_table_new_line(tb, inside ? extline : NULL);
			if (!ln)
				break;
			if (bp) {
				size_t idx = (size_t)(bp - partctl_table_at(t, 0));
				const struct partctl_fsinfo *fs = &fsv[idx];

				snprintf(num, sizeof(num), "%u", bp->n);
				scols_line_set_data(ln, C_NR, num);
				snprintf(num, sizeof(num), "%llu", (unsigned long long)(bp->start / ssz));
				scols_line_set_data(ln, C_START, num);
				snprintf(num, sizeof(num), "%llu", (unsigned long long)((bp->start + bp->size) / ssz - 1));
				scols_line_set_data(ln, C_END, num);
				set_size_cell(ln, C_SIZE, bp->size);
				scols_line_set_data(ln, C_TYPE, bp->type);
				scols_line_set_data(ln, C_FS, fs->type);
				scols_line_set_data(ln, C_LABEL, fs->label[0] ? fs->label : bp->name);
				scols_line_set_data(ln, C_UUID, fs->uuid);
				set_size_cell(ln, C_USED, fs->used);
				set_size_cell(ln, C_MIN, fs->min_size);
				if (bp->extended)
					extline = ln;
				cur = bp->start + 1;
			} else {
				scols_line_set_data(ln, C_NR, "-");
				snprintf(num, sizeof(num), "%llu", (unsigned long long)(br->start / ssz));
				scols_line_set_data(ln, C_START, num);
				snprintf(num, sizeof(num), "%llu", (unsigned long long)((br->start + br->size) / ssz - 1));
				scols_line_set_data(ln, C_END, num);
				set_size_cell(ln, C_SIZE, br->size);
				scols_line_set_data(ln, C_TYPE, "free");
				cur = br->start + 1;
			}
		}
	}
	free(lines);
	r = scols_print_table(tb);
	scols_unref_table(tb);
	return r < 0 ? IP_EXIT_FAILED : IP_EXIT_OK;
}

int cmd_part_show(int argc, char **argv)
{
	static const struct option longopts[] = { CLI_COMMON_LONGOPTS, { NULL, 0, NULL, 0 } };
	struct cli_opts o = { 0 };
	partctl_table *t = NULL;
	ip_disk *d = NULL;
	struct partctl_fsinfo *fsv = NULL;
	struct region fr[256];
	size_t nfr;
	ip_error e = { 0 };
	const char *disk;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		if (c == 'h') {
			fputs(show_usage, stdout);
			return IP_EXIT_OK;
		}
		return cli_usage(&o, "part show", "unknown option");
	}
	cli_opts_apply(&o);
	if (optind + 1 != argc)
		return cli_usage(&o, "part show", "give one DISK");
	disk = argv[optind];

	r = partctl_table_open(disk, false, &t, &e);
	if (r < 0)
		return cli_error(&o, "part show", &e);
	r = ip_disk_open(disk, IP_DISK_RDONLY, &d, &e);
	if (r < 0) {
		partctl_table_free(t);
		return cli_error(&o, "part show", &e);
	}
	fsv = calloc(partctl_table_count(t) + 1, sizeof(*fsv));
	if (!fsv) {
		ip_disk_free(d);
		partctl_table_free(t);
		ip_fail(&e, -ENOMEM, "out of memory");
		return cli_error(&o, "part show", &e);
	}
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *p = partctl_table_at(t, i);

		if (!p->extended)
			(void)partctl_fs_probe(d, p->start, p->size, &fsv[i], NULL);
	}
	ip_disk_free(d);
	nfr = free_regions(t, fr, IP_ARRAY_SIZE(fr));

	if (o.json) {
		json_object *doc = ip_json_doc("part show");
		json_object *parts = json_object_new_array();
		json_object *free_a = json_object_new_array();

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "label", json_object_new_string(partctl_table_label(t)));
		json_object_object_add(doc, "size", ip_json_u64(partctl_table_disk_size(t)));
		json_object_object_add(doc, "sector_size", json_object_new_int((int)partctl_table_sector_size(t)));
		json_object_object_add(doc, "grain", ip_json_u64(partctl_table_grain(t)));
		json_object_object_add(doc, "first_usable", ip_json_u64(partctl_table_first_usable(t)));
		json_object_object_add(doc, "end_usable", ip_json_u64(partctl_table_end_usable(t)));
		for (size_t i = 0; i < partctl_table_count(t); i++) {
			const struct partctl_part *p = partctl_table_at(t, i);
			json_object *o2 = json_object_new_object();

			json_object_object_add(o2, "number", json_object_new_int((int)p->n));
			json_object_object_add(o2, "start", ip_json_u64(p->start));
			json_object_object_add(o2, "end", ip_json_u64(p->start + p->size));
			json_object_object_add(o2, "size", ip_json_u64(p->size));
			json_object_object_add(o2, "type", json_object_new_string(p->type));
			json_object_object_add(o2, "name", json_object_new_string(p->name));
			json_object_object_add(o2, "part_uuid", json_object_new_string(p->uuid));
			json_object_object_add(o2, "extended", json_object_new_boolean(p->extended));
			json_object_object_add(o2, "logical", json_object_new_boolean(p->logical));
			add_fs_json(o2, &fsv[i]);
			json_object_array_add(parts, o2);
		}
		for (size_t i = 0; i < nfr; i++) {
			json_object *o2 = json_object_new_object();

			json_object_object_add(o2, "start", ip_json_u64(fr[i].start));
			json_object_object_add(o2, "end", ip_json_u64(fr[i].start + fr[i].size));
			json_object_object_add(o2, "size", ip_json_u64(fr[i].size));
			json_object_object_add(o2, "inside_extended", json_object_new_boolean(fr[i].inside));
			json_object_array_add(free_a, o2);
		}
		json_object_object_add(doc, "partitions", parts);
		json_object_object_add(doc, "free", free_a);
		rc = cli_emit(doc);
	} else {
		rc = print_show_human(t, fsv, fr, nfr);
	}
	free(fsv);
	partctl_table_free(t);
	return rc;
}

/* ---- create / delete ----------------------------------------------------- */

static const char *create_usage =
	"\nUsage:\n inplace part create [options] DISK --start S --size Z\n\n"
	"Create a partition on DISK at byte S (aligned to 1 MiB) of size Z, and\n"
	"format it.  S and Z take bytes, units (512MiB, 8G) or sectors (2048s).\n\nOptions:\n"
	"     --start S      where the partition starts\n"
	"     --size Z       how large it is\n"
	"     --type T       linux (default), ntfs, extended (MBR container) or\n"
	"                    logical (MBR, inside the extended partition)\n"
	"     --fs FS        ext4, ntfs or none (default: none)\n"
	"     --label L      filesystem label (GPT: also the partition name)\n"
	"     --dry-run      check and say what would be done; write nothing\n"
	"     --json         one JSON document on stdout\n"
	" -q, --quiet        no progress\n"
	" -h, --help         display this help\n";

int cmd_part_create(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "start", required_argument, NULL, OPT_START },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "fs", required_argument, NULL, OPT_FS },
		{ "label", required_argument, NULL, OPT_LABEL },
		CLI_COMMON_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd = "part create";
	struct cli_opts o = { 0 };
	const char *start_s = NULL, *size_s = NULL, *type = "linux", *fs = "none", *label = NULL, *disk;
	struct partctl_part spec = { 0 };
	partctl_table *t = NULL;
	ip_error e = { 0 };
	unsigned n = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_START: start_s = optarg; break;
		case OPT_SIZE: size_s = optarg; break;
		case OPT_TYPE: type = optarg; break;
		case OPT_FS: fs = optarg; break;
		case OPT_LABEL: label = optarg; break;
		case 'h':
			fputs(create_usage, stdout);
			return IP_EXIT_OK;
		default:
			return cli_usage(&o, cmd, "unknown option");
		}
	}
	cli_opts_apply(&o);
	if (optind + 1 != argc)
		return cli_usage(&o, cmd, "give one DISK");
	disk = argv[optind];
	if (!start_s || !size_s)
		return cli_usage(&o, cmd, "give --start and --size");
	if (strcmp(fs, "ext4") && strcmp(fs, "ntfs") && strcmp(fs, "none"))
		return cli_usage(&o, cmd, "unsupported --fs '%s': inplace formats ext4 and ntfs (or none)", fs);
	if (!strcmp(type, "extended")) {
		spec.extended = true;
		if (strcmp(fs, "none"))
			return cli_usage(&o, cmd, "an extended partition holds partitions, not a filesystem: drop --fs");
	} else if (!strcmp(type, "logical")) {
		spec.logical = true;
		type = !strcmp(fs, "ntfs") ? "ntfs" : "linux";
	} else if (!strcmp(type, "linux") && !strcmp(fs, "ntfs")) {
		type = "ntfs";
	}
	if (label && !strcmp(fs, "ext4") && strlen(label) > 16)
		return cli_usage(&o, cmd, "an ext4 label has at most 16 bytes");
	snprintf(spec.type, sizeof(spec.type), "%s", type);
	if (label)
		snprintf(spec.name, sizeof(spec.name), "%s", label);

	r = partctl_table_open(disk, !o.dry_run, &t, &e);
	if (r < 0)
		return cli_error(&o, cmd, &e);
	if (o.dry_run) {
		/* the same checks, on a table that will not be written */
		r = ip_check_unmounted(disk, &e);
		if (r < 0)
			goto fail;
	}
	if (cli_parse_size(&o, cmd, start_s, partctl_table_sector_size(t), &spec.start) ||
	    cli_parse_size(&o, cmd, size_s, partctl_table_sector_size(t), &spec.size)) {
		partctl_table_free(t);
		return IP_EXIT_BADINPUT;
	}
	r = partctl_table_add(t, &spec, &n, &e);
	if (r < 0)
		goto fail;
	if (!o.dry_run) {
		/* the filesystem first, the entry last: a partition appears
		 * only with its filesystem */
		r = partctl_format_range(disk, spec.start, spec.size, fs, label, &e);
		if (r == 0)
			r = partctl_table_write(t, &e);
		if (r < 0)
			goto fail;
	}
	partctl_table_free(t);
	t = NULL;
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o.dry_run));
		json_object_object_add(doc, "partition", json_object_new_int((int)n));
		json_object_object_add(doc, "start", ip_json_u64(spec.start));
		json_object_object_add(doc, "size", ip_json_u64(spec.size));
		json_object_object_add(doc, "type", json_object_new_string(spec.extended ? "extended" : type));
		json_object_object_add(doc, "logical", json_object_new_boolean(spec.logical));
		json_object_object_add(doc, "fs", json_object_new_string(fs));
		json_object_object_add(doc, "label", label ? json_object_new_string(label) : NULL);
		return cli_emit(doc);
	} else {
		char b[IP_SIZE_BUFSZ];

		printf("%s partition %u of %s: %s at byte %llu%s%s%s\n", o.dry_run ? "would create" : "created", n,
		       disk, hsize(spec.size, b), (unsigned long long)spec.start,
		       strcmp(fs, "none") ? ", formatted " : "", strcmp(fs, "none") ? fs : "",
		       o.dry_run ? " (dry run: nothing written)" : "");
	}
	return IP_EXIT_OK;
fail:
	partctl_table_free(t);
	return cli_error(&o, cmd, &e);
}

static const char *delete_usage =
	"\nUsage:\n inplace part delete [options] DISK N\n\n"
	"Delete partition N of DISK from the partition table (its data stays on\n"
	"the disk until something overwrites it).\n\nOptions:\n"
	"     --dry-run      check and say what would be done; write nothing\n"
	"     --json         one JSON document on stdout\n"
	" -h, --help         display this help\n";

int cmd_part_delete(int argc, char **argv)
{
	static const struct option longopts[] = { CLI_COMMON_LONGOPTS, { NULL, 0, NULL, 0 } };
	const char *cmd = "part delete";
	struct cli_opts o = { 0 };
	partctl_table *t = NULL;
	ip_error e = { 0 };
	unsigned n;
	int c, r;

	while ((c = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		if (c == 'h') {
			fputs(delete_usage, stdout);
			return IP_EXIT_OK;
		}
		return cli_usage(&o, cmd, "unknown option");
	}
	cli_opts_apply(&o);
	if (optind + 2 != argc)
		return cli_usage(&o, cmd, "give DISK and a partition number N");
	if (cli_parse_uint(&o, cmd, "partition number", argv[optind + 1], &n))
		return IP_EXIT_BADINPUT;
	r = partctl_table_open(argv[optind], !o.dry_run, &t, &e);
	if (r == 0 && o.dry_run)
		r = ip_check_unmounted(argv[optind], &e);
	if (r == 0)
		r = partctl_table_delete(t, n, &e);
	if (r == 0 && !o.dry_run)
		r = partctl_table_write(t, &e);
	partctl_table_free(t);
	if (r < 0)
		return cli_error(&o, cmd, &e);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(argv[optind]));
		json_object_object_add(doc, "partition", json_object_new_int((int)n));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o.dry_run));
		return cli_emit(doc);
	}
	printf("%s partition %u of %s%s\n", o.dry_run ? "would delete" : "deleted", n, argv[optind],
	       o.dry_run ? " (dry run: nothing written)" : "");
	return IP_EXIT_OK;
}

/* ---- plan / make-storage -------------------------------------------------- */

static json_object *plan_json(const struct partctl_plan *p, const char *fs, const char *label)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < p->n; i++) {
		const struct partctl_plan_step *s = &p->steps[i];
		json_object *o = json_object_new_object();

		json_object_object_add(o, "op", json_object_new_string(partctl_plan_op_name(s->op)));
		json_object_object_add(o, "partition", json_object_new_int((int)s->partition));
		switch (s->op) {
		case PARTCTL_OP_SHRINK:
		case PARTCTL_OP_GROW_EXTENDED:
		case PARTCTL_OP_MOVE:
			json_object_object_add(o, "from", ip_json_u64(s->from));
			json_object_object_add(o, "to", ip_json_u64(s->to));
			json_object_object_add(o, "unit", json_object_new_string(s->op == PARTCTL_OP_MOVE ? "start" : "size"));
			break;
		case PARTCTL_OP_CREATE_EXTENDED:
		case PARTCTL_OP_CREATE:
			json_object_object_add(o, "start", ip_json_u64(s->start));
			json_object_object_add(o, "size", ip_json_u64(s->size));
			if (s->op == PARTCTL_OP_CREATE) {
				json_object_object_add(o, "logical", json_object_new_boolean(s->logical));
				json_object_object_add(o, "fs", json_object_new_string(fs));
				json_object_object_add(o, "label", label ? json_object_new_string(label) : NULL);
			}
			break;
		}
		json_object_array_add(a, o);
	}
	return a;
}

static void plan_print(const struct partctl_plan *p, const char *fs, const char *label)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];

	for (size_t i = 0; i < p->n; i++) {
		const struct partctl_plan_step *s = &p->steps[i];

		printf(" %zu. ", i + 1);
		switch (s->op) {
		case PARTCTL_OP_SHRINK:
			printf("shrink partition %u from %s to %s\n", s->partition, hsize(s->from, b1), hsize(s->to, b2));
			break;
		case PARTCTL_OP_MOVE:
			printf("move partition %u from byte %llu to byte %llu\n", s->partition,
			       (unsigned long long)s->from, (unsigned long long)s->to);
			break;
		case PARTCTL_OP_GROW_EXTENDED:
			printf("grow extended partition %u from %s to %s\n", s->partition, hsize(s->from, b1),
			       hsize(s->to, b2));
			break;
		case PARTCTL_OP_CREATE_EXTENDED:
			printf("create extended partition %u of %s at byte %llu\n", s->partition, hsize(s->size, b1),
			       (unsigned long long)s->start);
			break;
		case PARTCTL_OP_CREATE:
			printf("create %spartition %u of %s at byte %llu, %s%s%s%s\n", s->logical ? "logical " : "",
			       s->partition, hsize(s->size, b1), (unsigned long long)s->start, fs,
			       label ? " labelled \"" : "", label ? label : "", label ? "\"" : "");
			break;
		}
	}
}

static const char *plan_usage =
	"\nUsage:\n inplace part plan [options] DISK --need SIZE\n\n"
	"Show the steps that would make a new partition of SIZE on DISK: use free\n"
	"space, else shrink the filesystem with the most room (keeping 5% and\n"
	"64 MiB above its minimum) and move the partitions after it.  Writes nothing.\n\nOptions:\n"
	"     --need SIZE    size of the new partition (512MiB, 8G, bytes, or sectors\n"
	"                    with 's')\n"
	"     --json         one JSON document on stdout\n"
	" -h, --help         display this help\n";

static const char *storage_usage =
	"\nUsage:\n inplace part make-storage [options] DISK --need SIZE\n\n"
	"Carry out 'inplace part plan': shrink and move partitions as needed, then\n"
	"create and format an ext4 storage partition of SIZE.\n\nOptions:\n"
	"     --need SIZE    size of the storage partition\n"
	"     --label L      its filesystem label (default " DEFAULT_STORE_LABEL ")\n"
	"     --dry-run      print the plan; write nothing\n"
	"     --json         one JSON document on stdout\n"
	" -q, --quiet        no progress\n"
	" -h, --help         display this help\n";

static int existing_storage(const struct cli_opts *o, const char *cmd, const char *disk, const char *label,
			    const struct partctl_part *p)
{
	char b[IP_SIZE_BUFSZ];

	if (o->json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o->dry_run));
		json_object_object_add(doc, "existing", json_object_new_boolean(1));
		json_object_object_add(doc, "partition", json_object_new_int((int)p->n));
		json_object_object_add(doc, "start", ip_json_u64(p->start));
		json_object_object_add(doc, "size", ip_json_u64(p->size));
		json_object_object_add(doc, "logical", json_object_new_boolean(p->logical));
		json_object_object_add(doc, "label", json_object_new_string(label));
		json_object_object_add(doc, "steps", json_object_new_array());
		return cli_emit(doc);
	}
	printf("storage partition %u (%s, ext4 labelled \"%s\") already exists on %s: nothing to do\n", p->n,
	       hsize(p->size, b), label, disk);
	return IP_EXIT_OK;
}

static int plan_verb(int argc, char **argv, bool execute)
{
	static const struct option longopts[] = {
		{ "need", required_argument, NULL, OPT_NEED },
		{ "label", required_argument, NULL, OPT_LABEL },
		CLI_COMMON_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd = execute ? "part make-storage" : "part plan";
	struct cli_opts o = { 0 };
	const char *need_s = NULL, *label = DEFAULT_STORE_LABEL, *disk;
	struct partctl_plan_disk *d = NULL;
	struct partctl_plan plan;
	ip_error e = { 0 };
	uint64_t need;
	unsigned n = 0;
	bool resumed = false;
	int c, r;

	while ((c = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_NEED: need_s = optarg; break;
		case OPT_LABEL:
			if (!execute)
				return cli_usage(&o, cmd, "unknown option");
			label = optarg;
			break;
		case 'h':
			fputs(execute ? storage_usage : plan_usage, stdout);
			return IP_EXIT_OK;
		default:
			return cli_usage(&o, cmd, "unknown option");
		}
	}
	cli_opts_apply(&o);
	if (!execute)
		o.dry_run = true;
	if (optind + 1 != argc)
		return cli_usage(&o, cmd, "give one DISK");
	disk = argv[optind];
	if (!need_s)
		return cli_usage(&o, cmd, "give --need SIZE");
	if (strlen(label) > 16)
		return cli_usage(&o, cmd, "an ext4 label has at most 16 bytes");
	r = cli_parse_disk_size(&o, cmd, disk, need_s, &need);
	if (r)
		return r;

	r = partctl_plan_describe(disk, &d, &e);
	if (r < 0)
		return cli_error(&o, cmd, &e);
	if (execute && !o.dry_run) {
		r = ip_check_unmounted(disk, &e);
		/* a move or shrink cut short by a crash is finished first, so
		 * that the plan starts from a consistent disk */
		if (r == 0)
			r = partctl_resume(disk, &resumed, &e);
		if (r == 0 && resumed) {
			partctl_plan_disk_free(d);
			d = NULL;
			r = partctl_plan_describe(disk, &d, &e);
		}
		if (r < 0) {
			partctl_plan_disk_free(d);
			return cli_error(&o, cmd, &e);
		}
	}
	if (execute) {
		/* Idempotent: a storage partition made by an earlier run (one that
		 * may have been cut short after it) is the result, not a reason to
		 * make a second one. */
		for (size_t i = 0; i < d->n; i++) {
			const struct partctl_plan_part *pp = &d->parts[i];

			if (strcmp(pp->fs.label, label) || strcmp(pp->fs.type, "ext4"))
				continue;
			if (pp->part.size < need) {
				ip_bad(&e, -EEXIST,
				       "partition %u of %s is already labelled %s but holds only %s: delete it or choose another --label",
				       pp->part.n, disk, label, hsize(pp->part.size, (char[IP_SIZE_BUFSZ]){ 0 }));
				partctl_plan_disk_free(d);
				return cli_error(&o, cmd, &e);
			}
			r = existing_storage(&o, cmd, disk, label, &pp->part);
			partctl_plan_disk_free(d);
			return r;
		}
	}
	r = partctl_plan_compute(d, need, &plan, &e);
	partctl_plan_disk_free(d);
	if (r < 0)
		return cli_error(&o, cmd, &e);
	if (execute && !o.dry_run) {
		r = partctl_plan_execute(disk, &plan, "ext4", label, &n, &e);
		if (r < 0)
			return cli_error(&o, cmd, &e);
	}
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "need", ip_json_u64(plan.need));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o.dry_run));
		json_object_object_add(doc, "partition", json_object_new_int((int)(n ? n : plan.partition)));
		json_object_object_add(doc, "start", ip_json_u64(plan.start));
		json_object_object_add(doc, "size", ip_json_u64(plan.size));
		json_object_object_add(doc, "logical", json_object_new_boolean(plan.logical));
		if (execute) {
			json_object_object_add(doc, "existing", json_object_new_boolean(0));
			json_object_object_add(doc, "label", json_object_new_string(label));
			json_object_object_add(doc, "resumed", json_object_new_boolean(resumed));
		}
		json_object_object_add(doc, "steps", plan_json(&plan, "ext4", execute ? label : NULL));
		return cli_emit(doc);
	}
	if (resumed)
		printf("finished an interrupted operation on %s first\n", disk);
	if (execute && !o.dry_run) {
		char b[IP_SIZE_BUFSZ];

		printf("made storage partition %u of %s on %s, ext4 labelled \"%s\", in %zu step%s:\n", n,
		       hsize(plan.size, b), disk, label, plan.n, plan.n == 1 ? "" : "s");
	} else {
		printf("plan for a %s partition of %s on %s%s:\n", execute ? "storage" : "new",
		       hsize(plan.need, (char[IP_SIZE_BUFSZ]){ 0 }), disk,
		       execute ? " (dry run: nothing written)" : " (nothing written)");
	}
	plan_print(&plan, "ext4", execute ? label : NULL);
	return IP_EXIT_OK;
}

int cmd_part_plan(int argc, char **argv)
{
	return plan_verb(argc, argv, false);
}

int cmd_part_make_storage(int argc, char **argv)
{
	return plan_verb(argc, argv, true);
}
