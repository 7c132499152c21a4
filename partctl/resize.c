/* resize.c — what a shrink or grow would do (the plan: geometry, the
 * filesystem's minimum, the free space after it), the table step of both,
 * and the grows: the table first, then the filesystem, so that at no
 * instant is a filesystem larger than its partition.  The shrink itself,
 * journaled, lives in shrink.c; the tools in fstool.c. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "partctl/internal.h"

/* INPLACE_TEST_NO_MIN=1 (tests only) lets a shrink below the minimum
 * reach resize2fs, so that its failure and the roll back are tested. */
bool partctl_test_no_min(void)
{
	const char *v = getenv("INPLACE_TEST_NO_MIN");

	return v && !strcmp(v, "1");
}

/* Tell a caller that logs events how far an operation got. */
void partctl_report(const struct partctl_opts *o, const char *what, uint64_t done, uint64_t total)
{
	if (o && o->progress)
		o->progress(o->progress_data, what, done, total);
}

/* ---- the plan -------------------------------------------------------------- */

static int unsupported(const char *fstype, const char *what, const char *disk, unsigned n,
		       ip_error *e)
{
	if (!*fstype)
		return ip_bad(e, -EOPNOTSUPP,
			      "partition %u of %s holds no filesystem inplace recognises, so it cannot be %s: inplace resizes ext2/3/4 and NTFS",
			      n, disk, what);
	if (!strcmp(fstype, "swap"))
		return ip_bad(e, -EOPNOTSUPP,
			      "swap cannot be %s (partition %u of %s): delete it and create a new swap partition with mkswap instead",
			      what, n, disk);
	return ip_bad(e, -EOPNOTSUPP, "%s cannot be %s by inplace (partition %u of %s): inplace resizes ext2/3/4 and NTFS only",
		      fstype, what, n, disk);
}

struct part_geom {
	uint64_t grain;
	uint64_t limit;   /* where the partition may end at most (grow) */
	bool logical;
};

/* gone (0: none): a partition after n that the grow deletes; its space
 * counts as free. */
static int load_part(const char *disk, unsigned n, unsigned gone, struct partctl_resize_plan *p,
		     struct part_geom *g, ip_error *e)
{
	partctl_table *t = NULL;
	const struct partctl_part *pp, *ext = NULL;
	uint64_t end;
	unsigned ssz;
	int r;

	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	pp = partctl_table_find(t, n);
	if (!pp) {
		partctl_table_free(t);
		return ip_bad(e, -ENOENT, "%s has no partition %u: see 'inplace part show %s'", disk, n, disk);
	}
	if (pp->extended) {
		partctl_table_free(t);
		return ip_bad(e, -EINVAL,
			      "partition %u of %s is an extended container, not a filesystem: shrink or grow the logical partitions inside it",
			      n, disk);
	}
	if (gone) {
		const struct partctl_part *gp = partctl_table_find(t, gone);

		if (!gp || gone == n || gp->extended || gp->logical != pp->logical || gp->start < pp->start) {
			partctl_table_free(t);
			return ip_bad(e, -EINVAL,
				      "%s has no partition %u after partition %u and beside it (primary or logical alike, no extended container): see 'inplace part show %s'",
				      disk, gone, n, disk);
		}
	}
	p->n = n;
	p->start = pp->start;
	p->old_size = pp->size;
	g->logical = pp->logical;
	g->grain = partctl_table_grain(t);
	if (!g->grain)
		g->grain = 1 << 20;
	ssz = partctl_table_sector_size(t);
	end = partctl_table_disk_size(t);
	/* GPT keeps a backup header and entry array (16 KiB) in the last
	 * sectors of the disk. */
	if (!strcmp(partctl_table_label(t), "gpt"))
		end -= ssz + partctl_round_up(16384, ssz);
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *q = partctl_table_at(t, i);

		if (q->extended)
			ext = q;
	}
	if (pp->logical && ext && ext->start + ext->size < end)
		end = ext->start + ext->size;
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *q = partctl_table_at(t, i);
		uint64_t qend;

		if (q->n == n || q->n == gone || q->start <= pp->start)
			continue;
		if (pp->logical && q->extended)
			continue;
		if (!pp->logical && q->logical)
			continue; /* the container bounds them */
		/* a following logical partition's boot record lies in the
		 * grain before it */
		qend = q->logical ? (q->start > g->grain ? q->start - g->grain : 0) : q->start;
		if (qend < end)
			end = qend;
	}
	g->limit = partctl_round_down(end, g->grain);
	partctl_table_free(t);
	return 0;
}

static int probe_part(const char *disk, const struct partctl_resize_plan *p,
		      struct partctl_fsinfo *fi, ip_error *e)
{
	ip_disk *d = NULL;
	int r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e);

	if (r < 0)
		return r;
	r = partctl_fs_probe(d, p->start, p->old_size, fi, e);
	ip_disk_free(d);
	return r;
}

/* Size such that start + size lies on the grain. */
static uint64_t align_end(uint64_t start, uint64_t size, uint64_t grain, bool up)
{
	uint64_t end = start + size;

	end = up ? partctl_round_up(end, grain) : partctl_round_down(end, grain);
	return end > start ? end - start : 0;
}

/* The partition size the message suggests for a filesystem minimum. */
static unsigned long long suggest_mib(uint64_t start, uint64_t min, uint64_t grain)
{
	return (unsigned long long)(partctl_round_up(align_end(start, min, grain, true), 1 << 20) >> 20);
}

static bool fs_fits(const struct partctl_fsinfo *fi, uint64_t size)
{
	if (partctl_is_ext(fi->type))
		return partctl_round_down(size, fi->block_size) >= fi->min_size;
	return size >= fi->min_size;
}

/* The partition, its filesystem, and a refusal when inplace cannot resize
 * that filesystem (verb: "shrunk" or "grown", for the message). */
static int load_resizable(const char *disk, unsigned n, unsigned gone, const char *verb,
			  struct partctl_resize_plan *out, struct part_geom *g,
			  struct partctl_fsinfo *fi, ip_error *e)
{
	int r = load_part(disk, n, gone, out, g, e);

	if (r < 0)
		return r;
	r = probe_part(disk, out, fi, e);
	if (r < 0)
		return r;
	snprintf(out->fstype, sizeof(out->fstype), "%s", fi->type);
	if (!fi->resizable)
		return unsupported(fi->type, verb, disk, n, e);
	return 0;
}

int partctl_shrink_plan_fs(const char *disk, unsigned n, uint64_t new_size,
		       struct partctl_resize_plan *out, struct partctl_fsinfo *fi, ip_error *e)
{
	struct part_geom g;
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];
	int r;

	memset(out, 0, sizeof(*out));
	if (new_size == 0)
		return ip_bad(e, -EINVAL, "a partition cannot be shrunk to 0 bytes: give --to SIZE");
	r = load_resizable(disk, n, 0, "shrunk", out, &g, fi, e);
	if (r < 0)
		return r;
	/* its minimum and the sizes proposed would be measured past the end */
	r = partctl_fs_check_fits(fi, out->old_size, disk, n, e);
	if (r < 0)
		return r;
	/* Rounded up: never smaller than asked, so never below a minimum the
	 * user chose with care. */
	out->new_size = align_end(out->start, new_size, g.grain, true);
	out->fs_min = fi->min_size;
	if (out->new_size > out->old_size)
		return ip_bad(e, -EINVAL,
			      "partition %u of %s is %s, --to %s would not shrink it: use 'inplace part grow' to make it larger",
			      n, disk, ip_format_size(out->old_size, b1, sizeof(b1)),
			      ip_format_size(out->new_size, b2, sizeof(b2)));
	if (out->new_size == out->old_size) {
		out->nothing = true;
		return 0;
	}
	/* a refusal before anything is written: bad input, exit 2 */
	if (!fi->min_known && fi->unknown[0])
		return ip_bad(e, -EUCLEAN, "cannot learn the minimum size of the %s filesystem on partition %u of %s: %s",
			      fi->type, n, disk, fi->unknown);
	if (!fi->min_known)
		return ip_bad(e, -EUCLEAN,
			      "cannot learn the minimum size of the %s filesystem on partition %u of %s: check it with %s",
			      fi->type, n, disk, partctl_is_ext(fi->type) ? "e2fsck -f" : "chkdsk /f (Windows) or ntfsfix -n");
	if (!fs_fits(fi, out->new_size) && !partctl_test_no_min())
		return ip_bad(e, -ENOSPC,
			      "cannot shrink partition %u of %s below %s (the filesystem's minimum): choose --to %lluMiB or larger",
			      n, disk, ip_format_size(fi->min_size, b1, sizeof(b1)),
			      suggest_mib(out->start, fi->min_size, g.grain));
	return 0;
}

int partctl_shrink_plan(const char *disk, unsigned n, uint64_t new_size,
			struct partctl_resize_plan *out, ip_error *e)
{
	struct partctl_fsinfo fi;

	return partctl_shrink_plan_fs(disk, n, new_size, out, &fi, e);
}

static int grow_plan(const char *disk, unsigned n, unsigned gone, uint64_t new_size,
		     struct partctl_resize_plan *out, struct partctl_fsinfo *fi, ip_error *e)
{
	struct part_geom g;
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];
	int r;

	memset(out, 0, sizeof(*out));
	r = load_resizable(disk, n, gone, "grown", out, &g, fi, e);
	if (r < 0)
		return r;
	out->fs_min = fi->min_size;
	out->max_size = g.limit > out->start ? g.limit - out->start : 0;
	if (out->max_size < out->old_size)
		out->max_size = out->old_size;
	/* Rounded down: never past the free space. */
	out->new_size = new_size ? align_end(out->start, new_size, g.grain, false) : out->max_size;
	if (out->new_size < out->old_size) {
		if (new_size && new_size >= out->old_size)
			out->new_size = out->old_size; /* within one grain of now */
		else
			return ip_bad(e, -EINVAL,
				      "partition %u of %s is %s, --to %s would not grow it: use 'inplace part shrink' to make it smaller",
				      n, disk, ip_format_size(out->old_size, b1, sizeof(b1)),
				      ip_format_size(new_size, b2, sizeof(b2)));
	}
	if (out->new_size > out->max_size)
		return ip_bad(e, -ENOSPC,
			      "partition %u of %s can grow to %s at most (the free space after it): choose --to %lluMiB or less, or --max",
			      n, disk, ip_format_size(out->max_size, b1, sizeof(b1)),
			      (unsigned long long)(out->max_size >> 20));
	/* Nothing to do when the partition keeps its size and the
	 * filesystem already fills it (an interrupted grow has the table
	 * done and the filesystem not: that one is finished here). */
	out->nothing = !gone && out->new_size == out->old_size && fi->size &&
		       out->old_size - fi->size <= fi->block_size;
	return 0;
}

int partctl_grow_plan(const char *disk, unsigned n, uint64_t new_size,
		      struct partctl_resize_plan *out, ip_error *e)
{
	struct partctl_fsinfo fi;

	return grow_plan(disk, n, 0, new_size, out, &fi, e);
}

/* ---- shrink ----------------------------------------------------------------- */

int partctl_resize_table(const char *disk, unsigned n, uint64_t start, uint64_t size, ip_error *e)
{
	partctl_table *t = NULL;
	int r = partctl_table_open(disk, true, &t, e);

	if (r < 0)
		return r;
	r = partctl_table_set_range(t, n, start, size, e);
	if (r == 0)
		r = partctl_table_write(t, e);
	partctl_table_free(t);
	return r;
}

/* ---- grow ------------------------------------------------------------------- */

/* The one check policy on [start, start+size) of disk: a range the size of
 * the filesystem, since ntfsfix looks for the backup boot sector at the
 * device's end. */
static int fs_check(const char *disk, unsigned n, uint64_t start, uint64_t size, const char *fstype,
		    ip_error *e)
{
	struct partctl_tooldev td;
	int r = partctl_tooldev_get(disk, n, start, size, &td, e);

	if (r < 0)
		return r;
	r = partctl_is_ext(fstype) ? partctl_ext_fsck(td.path, disk, n, e) : partctl_ntfs_check(td.path, disk, n, e);
	partctl_tooldev_put(&td);
	return r;
}

/* Grow the (checked) filesystem of partition n, [start, start+size) of
 * disk, to fill it. */
static int fs_grow(const char *disk, unsigned n, uint64_t start, uint64_t size, const char *fstype,
		   ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	struct partctl_tooldev td;
	char line[256];
	int code = 0, r;

	r = partctl_tooldev_get(disk, n, start, size, &td, e);
	if (r < 0)
		return r;
	if (partctl_is_ext(fstype)) {
		const char *argv[] = { "resize2fs", td.path, NULL };

		r = partctl_tool_run(argv, &code, &err, e);
	} else {
		const char *argv[] = { "ntfsresize", "--force", "--no-progress-bar", td.path, NULL };

		r = partctl_tool_run(argv, &code, &err, e);
	}
	partctl_tooldev_put(&td);
	if (r < 0)
		return r;
	if (code != 0) {
		partctl_tool_last_line(err, line, sizeof(line));
		return ip_fail(e, -EIO, "the filesystem of partition %u of %s was not grown (%s): run 'inplace part grow %s %u' again",
			       n, disk, line, disk, n);
	}
	return partctl_tool_flush(disk, start, size, e);
}

/* The table step of a grow: partition gone (0: none) deleted and n's end
 * moved, in one write.  busy: parts of the disk may be in use, and the
 * write checks that this change is one allowed then (table.c). */
static int grow_table(const char *disk, unsigned n, unsigned gone, const struct partctl_resize_plan *rp, bool busy,
		      ip_error *e)
{
	partctl_table *t = NULL;
	int r = busy ? partctl_table_open_busy(disk, true, &t, e) : partctl_table_open(disk, true, &t, e);

	if (r == 0 && gone)
		r = partctl_table_delete(t, gone, e);
	if (r == 0 && rp->new_size != rp->old_size)
		r = partctl_table_set_range(t, n, rp->start, rp->new_size, e);
	if (r == 0)
		r = partctl_table_write(t, e);
	partctl_table_free(t);
	return r;
}

/* The end of a mounted ext2/3/4 filesystem's partition grows while it
 * stays mounted (the new system's root, when reclaim gives the store's
 * space back), as growpart does: the table through libfdisk, the kernel
 * told through BLKPG about the changed entries only (never BLKRRPART on a
 * disk in use), then resize2fs on the mounted partition, which grows it
 * online.  No e2fsck: it cannot run on a mounted filesystem. */
static int grow_online(const char *disk, unsigned n, unsigned gone, const struct partctl_resize_plan *rp,
		       const struct partctl_fsinfo *fi, const char *mnt, bool rw, const struct partctl_opts *o,
		       ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	struct stat st;
	char node[64], line[256];
	int code = 0, r;

	if (stat(disk, &st) < 0 || !S_ISBLK(st.st_mode))
		return ip_check_range_unmounted(disk, rp->start, rp->old_size, e);
	if (!partctl_is_ext(fi->type))
		return ip_bad(e, -EBUSY, "partition %u of %s is mounted on %s and %s does not grow online: unmount it first",
			      n, disk, mnt, fi->type);
	if (!rw)
		return ip_bad(e, -EROFS, "partition %u of %s is mounted read-only on %s: remount it read-write (or unmount it) to grow it",
			      n, disk, mnt);
	if (o && o->dry_run)
		return ip_check_range_unmounted(disk, rp->start + rp->old_size, rp->new_size - rp->old_size, e);
	if (gone || rp->new_size != rp->old_size) {
		partctl_report(o, "table", 1, 3);
		r = grow_table(disk, n, gone, rp, true, e);
		if (r < 0)
			return r;
	}
	/* resize2fs on anything but the mounted node (a loop device over the
	 * range) would resize offline under the mounted filesystem */
	r = ip_partition_node(disk, n, node, sizeof(node));
	if (r < 0 || !partctl_node_has_size(node, rp->new_size))
		return ip_fail(e, r < 0 ? r : -EIO,
			       "the kernel does not see partition %u of %s at its new size: reboot, then run 'inplace part grow %s %u' again",
			       n, disk, disk, n);
	partctl_report(o, "growing", 2, 3);
	{
		const char *argv[] = { "resize2fs", node, NULL };

		r = partctl_tool_run(argv, &code, &err, e);
	}
	if (r < 0)
		return r;
	if (code != 0) {
		partctl_tool_last_line(err, line, sizeof(line));
		/* the kernel's online resize needs CAP_SYS_RESOURCE, which a
		 * container may drop: the partition is grown, the filesystem
		 * grows offline as well */
		if (strstr(line, "Permission denied"))
			return ip_fail(e, -EPERM,
				       "the filesystem mounted on %s was not grown online (%s: the kernel wants CAP_SYS_RESOURCE): its partition is grown; unmount it and run 'inplace part grow %s %u'",
				       mnt, line, disk, n);
		return ip_fail(e, -EIO, "the filesystem mounted on %s was not grown online (%s): run 'inplace part grow %s %u' again",
			       mnt, line, disk, n);
	}
	r = partctl_tool_flush(node, 0, 0, e);
	if (r == 0)
		partctl_report(o, "done", 3, 3);
	return r;
}

static int grow_run(const char *disk, unsigned n, unsigned gone, uint64_t new_size, const struct partctl_opts *o,
		    struct partctl_resize_plan *rp, ip_error *e)
{
	struct partctl_fsinfo fi;
	char mnt[1024];
	bool rw = false;
	int r;

	r = grow_plan(disk, n, gone, new_size, rp, &fi, e);
	if (r < 0 || rp->nothing)
		return r;
	if (ip_range_mount(disk, rp->start, rp->old_size, mnt, sizeof(mnt), &rw) > 0)
		return grow_online(disk, n, gone, rp, &fi, mnt, rw, o, e);
	if (o && o->dry_run)
		return 0;
	r = ip_check_range_unmounted(disk, rp->start, rp->new_size, e);
	if (r < 0)
		return r;
	/* Check before anything changes: a damaged filesystem is refused
	 * with the table untouched. */
	partctl_report(o, "checking", 0, 3);
	r = fs_check(disk, n, rp->start, rp->old_size, fi.type, e);
	if (r < 0)
		return r;
	if (gone || rp->new_size != rp->old_size) {
		partctl_report(o, "table", 1, 3);
		r = grow_table(disk, n, gone, rp, false, e);
		if (r < 0)
			return r;
	}
	partctl_report(o, "growing", 2, 3);
	r = fs_grow(disk, n, rp->start, rp->new_size, fi.type, e);
	if (r == 0)
		partctl_report(o, "done", 3, 3);
	return r;
}

int partctl_part_grow(const char *disk, unsigned n, uint64_t new_size, const struct partctl_opts *o,
		      struct partctl_resize_plan *res, ip_error *e)
{
	struct partctl_resize_plan p;

	return grow_run(disk, n, 0, new_size, o, res ? res : &p, e);
}

int partctl_part_grow_over(const char *disk, unsigned n, unsigned gone, const struct partctl_opts *o,
			   struct partctl_resize_plan *res, ip_error *e)
{
	struct partctl_resize_plan p;

	return grow_run(disk, n, gone, 0, o, res ? res : &p, e);
}

int partctl_grow(const char *disk, unsigned n, uint64_t new_size, ip_error *e)
{
	return partctl_part_grow(disk, n, new_size, NULL, NULL, e);
}

int partctl_fs_grow(const char *disk, unsigned n, const struct partctl_opts *o,
		    struct partctl_resize_plan *res, ip_error *e)
{
	struct partctl_resize_plan p, *rp = res ? res : &p;
	struct partctl_fsinfo fi;
	struct part_geom g;
	int r;

	memset(rp, 0, sizeof(*rp));
	r = load_resizable(disk, n, 0, "grown", rp, &g, &fi, e);
	if (r < 0)
		return r;
	/* The partition keeps its size; old_size and new_size are the
	 * filesystem's. */
	rp->max_size = rp->old_size;
	rp->new_size = rp->old_size;
	rp->old_size = fi.size;
	rp->fs_min = fi.min_size;
	rp->nothing = fi.size && rp->new_size - fi.size <= fi.block_size;
	if (rp->nothing || (o && o->dry_run))
		return 0;
	r = ip_check_range_unmounted(disk, rp->start, rp->new_size, e);
	if (r < 0)
		return r;
	partctl_report(o, "growing", 0, 1);
	r = fs_check(disk, n, rp->start, fi.size && fi.size < rp->new_size ? fi.size : rp->new_size, fi.type, e);
	if (r == 0)
		r = fs_grow(disk, n, rp->start, rp->new_size, fi.type, e);
	if (r == 0)
		partctl_report(o, "done", 1, 1);
	return r;
}
