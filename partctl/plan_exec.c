/* plan_exec.c — the planner's two contacts with a real disk: describing it
 * (table + filesystem probe of every partition) and carrying a plan out,
 * each step through the module that owns it (partctl_shrink and
 * partctl_move journal their own work; table changes are single writes). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "partctl/partctl.h"

void partctl_plan_disk_free(struct partctl_plan_disk *d)
{
	if (!d)
		return;
	free((char *)d->path);
	free(d->parts);
	free(d->regions);
	free(d);
}

/* A plan made in the running OS (before the pipeline reboots) meets its
 * root mounted, and the resizer will not give a minimum for a mounted
 * filesystem: then count the bytes in use and an eighth more for the
 * metadata a smaller filesystem still needs.  The shrink itself runs
 * unmounted and checks the true minimum again. */
static void mounted_min(const char *disk, struct partctl_plan_part *pp)
{
	char mnt[16];
	bool rw;

	if (pp->fs.resizable && !pp->fs.min_size && pp->fs.used &&
	    ip_range_mount(disk, pp->part.start, pp->part.size, mnt, sizeof(mnt), &rw) == 1)
		pp->fs.min_size = pp->fs.used + pp->fs.used / 8;
}

int partctl_plan_describe(const char *disk, struct partctl_plan_disk **out, ip_error *e)
{
	partctl_table *t = NULL;
	ip_disk *dk = NULL;
	struct partctl_plan_disk *d;
	int r;

	*out = NULL;
	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	r = ip_disk_open(disk, IP_DISK_RDONLY, &dk, e);
	if (r < 0) {
		partctl_table_free(t);
		return r;
	}
	d = calloc(1, sizeof(*d));
	if (!d || !(d->parts = calloc(partctl_table_count(t) + 1, sizeof(*d->parts))) ||
	    !(d->path = strdup(disk))) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	snprintf(d->label, sizeof(d->label), "%s", partctl_table_label(t));
	d->sector_size = partctl_table_sector_size(t);
	d->size = partctl_table_disk_size(t);
	d->grain = partctl_table_grain(t);
	d->first_usable = partctl_table_first_usable(t);
	d->end_usable = partctl_table_end_usable(t);
	d->max_parts = partctl_table_max_parts(t);
	r = partctl_table_free_regions(t, &d->regions, &d->nregions, e);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		struct partctl_plan_part *pp = &d->parts[d->n++];

		pp->part = *partctl_table_at(t, i);
		if (pp->part.extended)
			continue;
		/* An unreadable filesystem is one the planner leaves alone. */
		if (partctl_fs_probe(dk, pp->part.start, pp->part.size, &pp->fs, NULL) < 0)
			memset(&pp->fs, 0, sizeof(pp->fs));
		mounted_min(disk, pp);
	}
	*out = d;
	d = NULL;
out:
	partctl_plan_disk_free(d);
	ip_disk_free(dk);
	partctl_table_free(t);
	return r;
}

/* A table change; for CREATE the filesystem is made first, in the range
 * the new entry will describe, and the entry written last: a crash before
 * leaves free space (make-storage plans the same range again), a crash
 * after leaves a finished storage partition. */
static int table_step(const char *disk, const struct partctl_plan_step *s, const char *type, const char *fs,
		      const char *label, unsigned *n_out, ip_error *e)
{
	partctl_table *t = NULL;
	int r;

	r = partctl_table_open(disk, true, &t, e);
	if (r < 0)
		return r;
	if (s->op == PARTCTL_OP_GROW_EXTENDED) {
		const struct partctl_part *p = partctl_table_find(t, s->partition);

		r = p ? partctl_table_set_range(t, s->partition, p->start, s->to, e)
		      : ip_fail(e, -ENOENT, "extended partition %u of %s vanished", s->partition, disk);
	} else {
		struct partctl_part spec = {
			.start = s->start,
			.size = s->size,
			.extended = s->op == PARTCTL_OP_CREATE_EXTENDED,
			.logical = s->logical,
		};

		snprintf(spec.type, sizeof(spec.type), "%s", type ? type : "linux");
		r = partctl_table_add(t, &spec, n_out, e);
		if (r == 0 && s->op == PARTCTL_OP_CREATE)
			r = partctl_format_range(disk, s->start, s->size, fs, label, e);
	}
	if (r == 0)
		r = partctl_table_write(t, e);
	partctl_table_free(t);
	return r;
}

int partctl_plan_execute(const char *disk, const struct partctl_plan *p, const char *fs,
			 const char *label, const struct partctl_opts *o, const struct partctl_move_opts *mo,
			 size_t *done, unsigned *n_out, ip_error *e)
{
	unsigned n = 0;
	size_t i;
	int r = 0;

	for (i = 0; i < p->n; i++) {
		const struct partctl_plan_step *s = &p->steps[i];

		if (o && o->progress) {
			char what[64];

			snprintf(what, sizeof(what), "%s partition %u", partctl_plan_op_name(s->op), s->partition);
			o->progress(o->progress_data, what, i, p->n);
		}
		switch (s->op) {
		case PARTCTL_OP_SHRINK:
			r = partctl_shrink(disk, s->partition, s->to, e);
			break;
		case PARTCTL_OP_MOVE:
			r = partctl_move_ex(disk, s->partition, s->to, mo, NULL, e);
			break;
		case PARTCTL_OP_GROW_EXTENDED:
		case PARTCTL_OP_CREATE_EXTENDED:
			r = table_step(disk, s, NULL, NULL, NULL, NULL, e);
			break;
		case PARTCTL_OP_CREATE:
			r = table_step(disk, s, fs && !strcmp(fs, "ntfs") ? "ntfs" : "linux", fs, label, &n, e);
			break;
		}
		if (r < 0) {
			ip_error_prefix(e, "step %zu (%s partition %u)", i + 1, partctl_plan_op_name(s->op),
					s->partition);
			break;
		}
	}
	if (done)
		*done = i;
	if (r == 0 && n_out)
		*n_out = n;
	return r;
}

/* ---- formatting --------------------------------------------------------- */

static int run_mkfs(const char *fs, const char *dev, uint64_t off, uint64_t size, unsigned ssz,
		    const char *label, bool image, ip_error *e)
{
	char offopt[64], sizek[32], sect[32], ssopt[16];
	const char *argv[20];
	size_t k = 0;

	if (!strcmp(fs, "ext4")) {
		argv[k++] = "mke2fs";
		argv[k++] = "-q";
		argv[k++] = "-F";
		argv[k++] = "-t";
		argv[k++] = "ext4";
		if (label && *label) {
			argv[k++] = "-L";
			argv[k++] = label;
		}
		argv[k++] = "-E";
		/* nodiscard: a discard on an image file with an offset is not
		 * worth the risk, and a new partition needs none */
		if (image) {
			snprintf(offopt, sizeof(offopt), "nodiscard,offset=%llu", (unsigned long long)off);
			argv[k++] = offopt;
			argv[k++] = dev;
			snprintf(sizek, sizeof(sizek), "%lluk", (unsigned long long)(size / 1024));
			argv[k++] = sizek;
		} else {
			argv[k++] = "nodiscard";
			argv[k++] = dev;
		}
	} else {
		argv[k++] = "mkntfs";
		argv[k++] = "-F";
		argv[k++] = "-Q";
		argv[k++] = "-q";
		if (label && *label) {
			argv[k++] = "-L";
			argv[k++] = label;
		}
		/* the boot sector records where the partition starts */
		snprintf(sect, sizeof(sect), "%llu", (unsigned long long)(off / ssz));
		argv[k++] = "-p";
		argv[k++] = sect;
		snprintf(ssopt, sizeof(ssopt), "%u", ssz);
		argv[k++] = "-s";
		argv[k++] = ssopt;
		argv[k++] = "-H";
		argv[k++] = "255";
		argv[k++] = "-S";
		argv[k++] = "63";
		argv[k++] = dev;
	}
	argv[k] = NULL;
	return ip_spawn(argv, NULL, e);
}

int partctl_format_range(const char *disk, uint64_t off, uint64_t size, const char *fs, const char *label,
			 ip_error *e)
{
	char dev[256];
	struct stat st;
	unsigned ssz = 512;
	ip_disk *d = NULL;
	int r;

	if (!fs || !*fs || !strcmp(fs, "none"))
		return 0;
	if (strcmp(fs, "ext4") && strcmp(fs, "ntfs"))
		return ip_bad(e, -EPROTONOSUPPORT, "inplace formats ext4 and ntfs, not %s: choose --fs ext4, ntfs or none", fs);
	r = ip_check_range_unmounted(disk, off, size, e);
	if (r < 0)
		return r;
	if (stat(disk, &st) < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", disk, strerror(errno));
	if (ip_disk_open(disk, IP_DISK_RDONLY, &d, NULL) == 0) {
		ssz = ip_disk_sector_size(d);
		ip_disk_free(d);
	}
	if (S_ISREG(st.st_mode) && !strcmp(fs, "ext4")) {
		r = run_mkfs(fs, disk, off, size, ssz, label, true, e);
	} else {
		/* a loop device over the range: the tools take a device, and the
		 * range need not be a partition yet */
		ip_error de = { 0 };

		r = ip_loop_attach(disk, off, size, false, dev, sizeof(dev), e);
		if (r < 0)
			return r;
		r = run_mkfs(fs, dev, off, size, ssz, label, false, e);
		if (ip_loop_detach(dev, &de) < 0 && r == 0)
			r = ip_fail(e, de.code, "%s", de.msg);
	}
	if (r < 0)
		ip_error_prefix(e, "cannot format %s at byte %llu of %s", fs, (unsigned long long)off, disk);
	return r;
}

int partctl_format(const char *disk, unsigned n, const char *fs, const char *label, ip_error *e)
{
	uint64_t off, size;
	int r;

	if (!fs || !*fs || !strcmp(fs, "none"))
		return 0;
	r = partctl_part_range(disk, n, &off, &size, e);
	if (r < 0)
		return r;
	return partctl_format_range(disk, off, size, fs, label, e);
}
