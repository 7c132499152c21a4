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
	OPT_JOURNAL,
	OPT_CLEAN_CACHES,
};

static char *hsize(uint64_t v, char *buf)
{
	return ip_format_size(v, buf, IP_SIZE_BUFSZ);
}

/* ---- show ---------------------------------------------------------------- */

const struct cli_help cli_help_part_show = {
	.synopsis = "[options] DISK",
	.description =
		"Show the partition table of DISK (a block device or a disk-image file):\n"
		"each partition with its filesystem, usage and minimum size, and the free\n"
		"regions.\n",
	.opts = (const struct cli_opt[]){
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

/* A number inplace could not learn is null, never 0 (0 reads as "empty"). */
static json_object *known_u64(bool known, uint64_t v)
{
	return known ? ip_json_u64(v) : NULL;
}

static void add_fs_json(json_object *o, const struct partctl_fsinfo *fs, const char *fs_problem)
{
	json_object_object_add(o, "fs", fs->type[0] ? json_object_new_string(fs->type) : NULL);
	json_object_object_add(o, "label", json_object_new_string(fs->label));
	json_object_object_add(o, "uuid", json_object_new_string(fs->uuid));
	json_object_object_add(o, "fs_size", known_u64(fs->size > 0, fs->size));
	json_object_object_add(o, "used", known_u64(fs->used_known, fs->used));
	json_object_object_add(o, "min_size", known_u64(fs->min_known, fs->min_size));
	/* min_bytes: ours (min_size kept for existing readers); the resizer's
	 * own estimate beside it, so a fleet tool sees the difference. */
	json_object_object_add(o, "min_bytes", known_u64(fs->min_known, fs->min_size));
	json_object_object_add(o, "min_estimate_bytes", known_u64(fs->min_estimate > 0, fs->min_estimate));
	json_object_object_add(o, "resizable", json_object_new_boolean(fs->resizable));
	/* why used or min_size is null */
	json_object_object_add(o, "unknown", fs->unknown[0] ? json_object_new_string(fs->unknown) : NULL);
	json_object_object_add(o, "fs_problem", fs_problem && fs_problem[0] ? json_object_new_string(fs_problem) : NULL);
}

/* The fault of a filesystem larger than its partition ("" when none). */
static const char *fs_problem(const struct partctl_fsinfo *fs, const struct partctl_part *p, const char *disk,
			      ip_error *e)
{
	ip_error_clear(e);
	if (partctl_fs_check_fits(fs, p->size, disk, p->n, e) < 0)
		return e->msg;
	return "";
}

/* A size cell: empty when there is nothing to measure, "?" when there is
 * but inplace could not learn it. */
static void set_size_cell(struct libscols_line *ln, int col, bool known, uint64_t v, bool measurable)
{
	char b[IP_SIZE_BUFSZ];

	if (known && v)
		scols_line_set_data(ln, col, hsize(v, b));
	else if (!known && measurable)
		scols_line_set_data(ln, col, "?");
}

static int print_show_human(const partctl_table *t, const struct partctl_fsinfo *fsv,
			    const struct partctl_region *fr, size_t nfr)
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
			const struct partctl_region *br = NULL;
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
				set_size_cell(ln, C_SIZE, true, bp->size, false);
				scols_line_set_data(ln, C_TYPE, bp->type);
				scols_line_set_data(ln, C_FS, fs->type);
				scols_line_set_data(ln, C_LABEL, fs->label[0] ? fs->label : bp->name);
				scols_line_set_data(ln, C_UUID, fs->uuid);
				set_size_cell(ln, C_USED, fs->used_known, fs->used, fs->type[0]);
				set_size_cell(ln, C_MIN, fs->min_known, fs->min_size, fs->resizable);
				if (bp->extended)
					extline = ln;
				cur = bp->start + 1;
			} else {
				scols_line_set_data(ln, C_NR, "-");
				snprintf(num, sizeof(num), "%llu", (unsigned long long)(br->start / ssz));
				scols_line_set_data(ln, C_START, num);
				snprintf(num, sizeof(num), "%llu", (unsigned long long)((br->start + br->size) / ssz - 1));
				scols_line_set_data(ln, C_END, num);
				set_size_cell(ln, C_SIZE, true, br->size, false);
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
	struct cli_opts o = { 0 };
	partctl_table *t = NULL;
	ip_disk *d = NULL;
	struct partctl_fsinfo *fsv = NULL;
	struct partctl_region *fr = NULL;
	size_t nfr = 0;
	ip_error e = { 0 };
	const char *disk;
	int c, r, rc;

	while ((c = cli_getopt(argc, argv, &cli_help_part_show)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		if (c == 'h') {
			return cli_help_print("part show", &cli_help_part_show);
		}
		return cli_usage(&o, "part show", "unknown option");
	}
	cli_opts_apply(&o);
	if (optind + 1 != argc)
		return cli_usage(&o, "part show", "give one DISK");
	disk = argv[optind];

	/* a damaged table is shown, with its fault, so that it can be repaired */
	r = partctl_table_inspect(disk, &t, &e);
	if (r < 0)
		return cli_error(&o, "part show", &e);
	if (partctl_table_problem(t)[0])
		fprintf(stderr, "inplace: warning: the partition table is damaged: %s: repair it (gdisk, fdisk) before changing this disk\n",
			partctl_table_problem(t));
	else
		r = partctl_table_free_regions(t, &fr, &nfr, &e);
	if (r == 0)
		r = ip_disk_open(disk, IP_DISK_RDONLY, &d, &e);
	if (r < 0) {
		free(fr);
		partctl_table_free(t);
		return cli_error(&o, "part show", &e);
	}
	fsv = calloc(partctl_table_count(t) + 1, sizeof(*fsv));
	if (!fsv) {
		ip_disk_free(d);
		free(fr);
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
		json_object_object_add(doc, "problem", partctl_table_problem(t)[0]
				       ? json_object_new_string(partctl_table_problem(t)) : NULL);
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
			add_fs_json(o2, &fsv[i], fs_problem(&fsv[i], p, disk, &e));
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
		for (size_t i = 0; i < partctl_table_count(t); i++) {
			const struct partctl_part *p = partctl_table_at(t, i);

			if (fsv[i].resizable && fsv[i].unknown[0])
				printf("partition %u: %s unknown: %s\n", p->n,
				       !fsv[i].used_known ? "usage and minimum" : "minimum", fsv[i].unknown);
			if (fs_problem(&fsv[i], p, disk, &e)[0])
				fprintf(stderr, "inplace: warning: %s\n", e.msg);
		}
	}
	free(fsv);
	free(fr);
	partctl_table_free(t);
	return rc;
}

/* ---- create / delete ----------------------------------------------------- */

const struct cli_help cli_help_part_create = {
	.synopsis = "[options] DISK --start S --size Z",
	.description =
		"Create a partition on DISK at byte S (aligned to 1 MiB) of size Z, and\n"
		"format it.  S and Z take bytes, units (512MiB, 8G) or sectors (2048s).\n",
	.opts = (const struct cli_opt[]){
		{ "start", 0, "S", OPT_START, "where the partition starts" },
		{ "size", 0, "Z", OPT_SIZE, "how large it is" },
		{ "type", 0, "T", OPT_TYPE, "linux (default), ntfs, extended (MBR container) or "
					     "logical (MBR, inside the extended partition)" },
		{ "fs", 0, "FS", OPT_FS, "ext4, ntfs or none (default: none)" },
		{ "label", 0, "L", OPT_LABEL, "filesystem label (GPT: also the partition name)" },
		CLI_OPT_DRY_RUN("check and say what would be done; write nothing"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

int cmd_part_create(int argc, char **argv)
{
	const char *cmd = "part create";
	struct cli_opts o = { 0 };
	struct partctl_create_spec spec = { .type = "linux", .fs = "none" };
	struct partctl_create_result res;
	struct partctl_opts po = { 0 };
	const char *start_s = NULL, *size_s = NULL, *disk;
	ip_error e = { 0 };
	int c, r;

	while ((c = cli_getopt(argc, argv, &cli_help_part_create)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_START: start_s = optarg; break;
		case OPT_SIZE: size_s = optarg; break;
		case OPT_TYPE: spec.type = optarg; break;
		case OPT_FS: spec.fs = optarg; break;
		case OPT_LABEL: spec.label = optarg; break;
		case 'h':
			return cli_help_print(cmd, &cli_help_part_create);
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
	r = cli_parse_disk_size(&o, cmd, disk, start_s, &spec.start);
	if (r == 0)
		r = cli_parse_disk_size(&o, cmd, disk, size_s, &spec.size);
	if (r)
		return r;
	po.dry_run = o.dry_run;
	if (partctl_create(disk, &spec, &po, &res, &e) < 0)
		return cli_error(&o, cmd, &e);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "disk", json_object_new_string(disk));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o.dry_run));
		json_object_object_add(doc, "partition", json_object_new_int((int)res.part.n));
		json_object_object_add(doc, "start", ip_json_u64(res.part.start));
		json_object_object_add(doc, "size", ip_json_u64(res.part.size));
		json_object_object_add(doc, "type", json_object_new_string(res.part.type));
		json_object_object_add(doc, "logical", json_object_new_boolean(res.part.logical));
		json_object_object_add(doc, "fs", json_object_new_string(res.fs));
		json_object_object_add(doc, "label", spec.label ? json_object_new_string(spec.label) : NULL);
		return cli_emit(doc);
	} else {
		char b[IP_SIZE_BUFSZ];
		bool fmt = strcmp(res.fs, "none");

		printf("%s partition %u of %s: %s at byte %llu%s%s%s\n", o.dry_run ? "would create" : "created", res.part.n,
		       disk, hsize(res.part.size, b), (unsigned long long)res.part.start,
		       fmt ? ", formatted " : "", fmt ? res.fs : "",
		       o.dry_run ? " (dry run: nothing written)" : "");
	}
	return IP_EXIT_OK;
}

const struct cli_help cli_help_part_delete = {
	.synopsis = "[options] DISK N",
	.description =
		"Delete partition N of DISK from the partition table (its data stays on\n"
		"the disk until something overwrites it).\n",
	.opts = (const struct cli_opt[]){
		CLI_OPT_DRY_RUN("check and say what would be done; write nothing"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

int cmd_part_delete(int argc, char **argv)
{
	const char *cmd = "part delete";
	struct cli_opts o = { 0 };
	struct partctl_opts po = { 0 };
	ip_error e = { 0 };
	unsigned n;
	int c;

	while ((c = cli_getopt(argc, argv, &cli_help_part_delete)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		if (c == 'h') {
			return cli_help_print(cmd, &cli_help_part_delete);
		}
		return cli_usage(&o, cmd, "unknown option");
	}
	cli_opts_apply(&o);
	if (optind + 2 != argc)
		return cli_usage(&o, cmd, "give DISK and a partition number N");
	if (cli_parse_uint(&o, cmd, "partition number", argv[optind + 1], &n))
		return IP_EXIT_BADINPUT;
	po.dry_run = o.dry_run;
	if (partctl_delete(argv[optind], n, &po, NULL, &e) < 0)
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

/* A size in a plan step, exact enough that a shrink by a few MiB shows
 * ("4095 MiB to 4078 MiB", where one decimal of GiB would print 4.0 GiB
 * twice). */
static char *msize(uint64_t v, char *buf)
{
	const uint64_t mib = 1024 * 1024;

	if (v < mib)
		snprintf(buf, IP_SIZE_BUFSZ, "%llu KiB", (unsigned long long)(v / 1024));
	else if (v % mib == 0)
		snprintf(buf, IP_SIZE_BUFSZ, "%llu MiB", (unsigned long long)(v / mib));
	else
		snprintf(buf, IP_SIZE_BUFSZ, "%.1f MiB", (double)v / (double)mib);
	return buf;
}

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
			printf("shrink partition %u from %s to %s\n", s->partition, msize(s->from, b1), msize(s->to, b2));
			break;
		case PARTCTL_OP_MOVE:
			printf("move partition %u from byte %llu to byte %llu (%s %s)\n", s->partition,
			       (unsigned long long)s->from, (unsigned long long)s->to,
			       msize(s->from > s->to ? s->from - s->to : s->to - s->from, b1),
			       s->from > s->to ? "down" : "up");
			break;
		case PARTCTL_OP_GROW_EXTENDED:
			printf("grow extended partition %u from %s to %s\n", s->partition, msize(s->from, b1),
			       msize(s->to, b2));
			break;
		case PARTCTL_OP_CREATE_EXTENDED:
			printf("create extended partition %u of %s at byte %llu\n", s->partition, msize(s->size, b1),
			       (unsigned long long)s->start);
			break;
		case PARTCTL_OP_CREATE:
			printf("create %spartition %u of %s at byte %llu, %s%s%s%s\n", s->logical ? "logical " : "",
			       s->partition, msize(s->size, b1), (unsigned long long)s->start, fs,
			       label ? " labelled \"" : "", label ? label : "", label ? "\"" : "");
			break;
		}
	}
}

const struct cli_help cli_help_part_plan = {
	.synopsis = "[options] DISK --need SIZE",
	.description =
		"Show the steps that would make a new partition of SIZE on DISK: use free\n"
		"space, else shrink the filesystem with the most room (keeping 5% and\n"
		"64 MiB above its minimum) and move the partitions after it, else shrink\n"
		"several and pack the partitions between them.  Warns when a move's\n"
		"journal would have no place.  Writes nothing.\n",
	.opts = (const struct cli_opt[]){
		{ "need", 0, "SIZE", OPT_NEED, "size of the new partition (512MiB, 8G, bytes, or sectors with 's')" },
		{ "journal", 0, "FILE", OPT_JOURNAL, "where moves would keep their journal (on another disk)" },
		{ "clean-caches", 0, NULL, OPT_CLEAN_CACHES,
		  "first delete the system caches (package caches, the systemd journal above 64 MiB, "
		  "/var/tmp, core dumps) of a system root of DISK mounted read-write here" },
		CLI_OPT_DRY_RUN("with --clean-caches: only count them"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

const struct cli_help cli_help_part_make_storage = {
	.synopsis = "[options] DISK --need SIZE",
	.description =
		"Carry out 'inplace part plan': shrink and move partitions as needed, then\n"
		"create and format an ext4 storage partition of SIZE.  Everything the plan\n"
		"needs is checked before the first write.\n",
	.opts = (const struct cli_opt[]){
		{ "need", 0, "SIZE", OPT_NEED, "size of the storage partition" },
		{ "label", 0, "L", OPT_LABEL, "its filesystem label (default " DEFAULT_STORE_LABEL ")" },
		{ "journal", 0, "FILE", OPT_JOURNAL, "keep the move journal in FILE (on another disk) when the "
						     "gap below 1 MiB has no room for it" },
		{ "clean-caches", 0, NULL, OPT_CLEAN_CACHES, "first delete the system caches of a system root of DISK "
							     "mounted read-write here (see 'part plan --help')" },
		CLI_OPT_DRY_RUN("print the plan; write nothing"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

static void caches_print(const struct partctl_caches *c)
{
	char b[IP_SIZE_BUFSZ];

	if (!c->n) {
		printf("no system caches to delete\n");
		return;
	}
	for (size_t i = 0; i < c->n; i++)
		printf("%s %s of %s (%zu file%s) on partition %u, mounted on %s\n",
		       c->cleaned ? "deleted" : "would delete", msize(c->v[i].bytes, b), c->v[i].what, c->v[i].files,
		       c->v[i].files == 1 ? "" : "s", c->v[i].partition, c->v[i].mnt);
}

static json_object *caches_json(const struct partctl_caches *c)
{
	json_object *o = json_object_new_object(), *a = json_object_new_array();

	for (size_t i = 0; i < c->n; i++) {
		json_object *x = json_object_new_object();

		json_object_object_add(x, "partition", json_object_new_int((int)c->v[i].partition));
		json_object_object_add(x, "what", json_object_new_string(c->v[i].what));
		json_object_object_add(x, "mounted_on", json_object_new_string(c->v[i].mnt));
		json_object_object_add(x, "bytes", ip_json_u64(c->v[i].bytes));
		json_object_object_add(x, "files", ip_json_u64(c->v[i].files));
		json_object_array_add(a, x);
	}
	json_object_object_add(o, "deleted", json_object_new_boolean(c->cleaned));
	json_object_object_add(o, "bytes", ip_json_u64(c->total));
	json_object_object_add(o, "caches", a);
	return o;
}

static int storage_json(const char *cmd, const char *disk, bool execute, const char *label, uint64_t need,
			const struct partctl_storage_result *res, const struct partctl_caches *cleaned)
{
	json_object *doc = ip_json_doc(cmd);

	if (cleaned)
		json_object_object_add(doc, "caches_cleaned", caches_json(cleaned));
	json_object_object_add(doc, "disk", json_object_new_string(disk));
	json_object_object_add(doc, "need", ip_json_u64(res->plan.need ? res->plan.need : need));
	json_object_object_add(doc, "dry_run", json_object_new_boolean(res->dry_run));
	json_object_object_add(doc, "partition", json_object_new_int((int)res->partition));
	json_object_object_add(doc, "start", ip_json_u64(res->start));
	json_object_object_add(doc, "size", ip_json_u64(res->size));
	json_object_object_add(doc, "logical", json_object_new_boolean(res->logical));
	if (execute) {
		json_object_object_add(doc, "existing", json_object_new_boolean(res->existing));
		json_object_object_add(doc, "label", json_object_new_string(label));
		json_object_object_add(doc, "resumed", json_object_new_boolean(res->resumed));
	}
	json_object_object_add(doc, "journal", res->journal[0] ? json_object_new_string(res->journal) : NULL);
	json_object_object_add(doc, "warning", res->warning[0] ? json_object_new_string(res->warning) : NULL);
	json_object_object_add(doc, "steps", res->existing ? json_object_new_array()
							 : plan_json(&res->plan, "ext4", execute ? label : NULL));
	return cli_emit(doc);
}

static int plan_verb(int argc, char **argv, bool execute)
{
	const char *cmd = execute ? "part make-storage" : "part plan";
	struct partctl_caches caches = { 0 };
	bool clean = false;
	struct cli_opts o = { 0 };
	const char *need_s = NULL, *label = DEFAULT_STORE_LABEL, *disk;
	struct partctl_opts po = { 0 };
	struct partctl_storage_result res;
	char b[IP_SIZE_BUFSZ];
	ip_error e = { 0 };
	uint64_t need;
	int c, r;

	while ((c = cli_getopt(argc, argv, execute ? &cli_help_part_make_storage : &cli_help_part_plan)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_NEED: need_s = optarg; break;
		case OPT_JOURNAL: po.journal = optarg; break;
		case OPT_CLEAN_CACHES: clean = true; break;
		case OPT_LABEL:
			if (!execute)
				return cli_usage(&o, cmd, "unknown option");
			label = optarg;
			break;
		case 'h':
			return cli_help_print(cmd, execute ? &cli_help_part_make_storage : &cli_help_part_plan);
		default:
			return cli_usage(&o, cmd, "unknown option");
		}
	}
	cli_opts_apply(&o);
	if (clean) {
		/* before anything else, so that the plan sees the room; a dry
		 * run only counts them */
		struct partctl_opts co = { .dry_run = o.dry_run };

		if (optind + 1 != argc)
			return cli_usage(&o, cmd, "give one DISK");
		if (partctl_caches_clean(argv[optind], &co, &caches, &e) < 0)
			return cli_error(&o, cmd, &e);
	}
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

	po.dry_run = o.dry_run;
	if (execute)
		r = partctl_make_storage(disk, need, label, &po, &res, &e);
	else
		r = partctl_plan_storage(disk, need, &po, &res, &e);
	if (clean && !o.json)
		caches_print(&caches);
	if (r < 0)
		return cli_error(&o, cmd, &e);
	if (o.json)
		return storage_json(cmd, disk, execute, label, need, &res, clean ? &caches : NULL);
	if (res.resumed)
		printf("finished an interrupted operation on %s first\n", disk);
	if (res.existing) {
		printf("storage partition %u (%s, ext4 labelled \"%s\") already exists on %s: nothing to do\n",
		       res.partition, msize(res.size, b), label, disk);
		return IP_EXIT_OK;
	}
	if (!res.dry_run)
		printf("made storage partition %u of %s on %s, ext4 labelled \"%s\", in %zu step%s:\n", res.partition,
		       msize(res.size, b), disk, label, res.plan.n, res.plan.n == 1 ? "" : "s");
	else
		printf("plan for a %s partition of %s on %s%s:\n", execute ? "storage" : "new",
		       msize(res.plan.need, b), disk, execute ? " (dry run: nothing written)" : " (nothing written)");
	plan_print(&res.plan, "ext4", execute ? label : NULL);
	if (res.journal[0])
		printf("moves keep their journal in %s\n", res.journal);
	if (res.warning[0])
		fprintf(stderr, "inplace: warning: make-storage would refuse this plan: %s\n", res.warning);
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

/* The same plan in `inplace run`'s preflight (cli/boot.c). */
json_object *cli_plan_json(const struct partctl_plan *p, const char *fs, const char *label)
{
	return plan_json(p, fs, label);
}

void cli_plan_print(const struct partctl_plan *p, const char *fs, const char *label)
{
	plan_print(p, fs, label);
}
