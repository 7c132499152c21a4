/* create.c — `part create` and `part delete` as library calls: every check
 * before the first write, the filesystem before the table entry, so that
 * the CLI and the pipeline create partitions by the same rules. */
#include <errno.h>
#include <string.h>

#include "partctl/internal.h"

static void progress(const struct partctl_opts *o, const char *what, uint64_t done, uint64_t total)
{
	if (o && o->progress)
		o->progress(o->progress_data, what, done, total);
}

/* Turn the caller's type and fs into a table entry; bad input before any
 * disk is opened. */
static int make_entry(const struct partctl_create_spec *s, struct partctl_part *p, const char **fs,
		      ip_error *e)
{
	const char *type = s->type && *s->type ? s->type : "linux";

	*fs = s->fs && *s->fs ? s->fs : "none";
	if (strcmp(*fs, "ext4") && strcmp(*fs, "ntfs") && strcmp(*fs, "none"))
		return ip_bad(e, -EINVAL, "unsupported filesystem '%s': inplace formats ext4 and ntfs (or none)", *fs);
	memset(p, 0, sizeof(*p));
	p->n = s->n;
	p->start = s->start;
	p->size = s->size;
	if (!strcmp(type, "extended")) {
		p->extended = true;
		if (strcmp(*fs, "none"))
			return ip_bad(e, -EINVAL, "an extended partition holds partitions, not a filesystem: create it without one");
	} else if (!strcmp(type, "logical")) {
		p->logical = true;
		type = !strcmp(*fs, "ntfs") ? "ntfs" : "linux";
	} else if (!strcmp(type, "linux") && !strcmp(*fs, "ntfs")) {
		type = "ntfs";
	}
	if (s->label && !strcmp(*fs, "ext4") && strlen(s->label) > 16)
		return ip_bad(e, -EINVAL, "the ext4 label '%s' is longer than 16 bytes: choose a shorter one", s->label);
	snprintf(p->type, sizeof(p->type), "%s", type);
	if (s->label)
		snprintf(p->name, sizeof(p->name), "%s", s->label);
	return 0;
}

/* Open the table for a writing verb; a dry run opens it read-only but
 * makes the same mount check the write would. */
static int open_for(const char *disk, const struct partctl_opts *o, partctl_table **t, ip_error *e)
{
	bool dry = o && o->dry_run;
	int r = partctl_table_open(disk, !dry, t, e);

	if (r == 0 && dry) {
		r = ip_check_unmounted(disk, e);
		if (r < 0) {
			partctl_table_free(*t);
			*t = NULL;
		}
	}
	return r;
}

int partctl_create(const char *disk, const struct partctl_create_spec *s, const struct partctl_opts *o,
		   struct partctl_create_result *res, ip_error *e)
{
	struct partctl_create_result dummy;
	struct partctl_part spec;
	partctl_table *t = NULL;
	const char *fs;
	unsigned n = 0;
	int r;

	if (!res)
		res = &dummy;
	memset(res, 0, sizeof(*res));
	r = make_entry(s, &spec, &fs, e);
	if (r < 0)
		return r;
	r = open_for(disk, o, &t, e);
	if (r < 0)
		return r;
	/* in memory: the range, slot and type checks of the table */
	r = partctl_table_add(t, &spec, &n, e);
	if (r < 0)
		goto out;
	res->part = *partctl_table_find(t, n);
	snprintf(res->fs, sizeof(res->fs), "%s", fs);
	if (o && o->dry_run)
		goto out;
	/* the filesystem first, the entry last: after a crash there is free
	 * space or a finished partition, never an entry over garbage */
	progress(o, "format", 0, 2);
	r = partctl_format_range(disk, spec.start, spec.size, fs, s->label, e);
	if (r < 0)
		goto out;
	progress(o, "table", 1, 2);
	r = partctl_table_write(t, e);
	if (r < 0)
		goto out;
	progress(o, "done", 2, 2);
out:
	partctl_table_free(t);
	return r;
}

int partctl_delete(const char *disk, unsigned n, const struct partctl_opts *o,
		   struct partctl_delete_result *res, ip_error *e)
{
	struct partctl_delete_result dummy;
	partctl_table *t = NULL;
	const struct partctl_part *p;
	int r;

	if (!res)
		res = &dummy;
	memset(res, 0, sizeof(*res));
	r = open_for(disk, o, &t, e);
	if (r < 0)
		return r;
	p = partctl_table_find(t, n);
	if (p)
		res->part = *p;
	/* the extended-with-logicals rule and a missing n: table.c */
	r = partctl_table_delete(t, n, e);
	if (r == 0 && !(o && o->dry_run))
		r = partctl_table_write(t, e);
	partctl_table_free(t);
	return r;
}
