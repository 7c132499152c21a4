/* shrink.c — shrink a partition and its filesystem, journaled, and the
 * resume of an interrupted shrink.
 *
 * Order: a shrink resizes the filesystem first and the table after it; a
 * grow the table first: at no instant is a filesystem larger than its
 * partition.  A shrink is journaled in the state directory
 * ($INPLACE_STATE_DIR, default /var/lib/inplace), one file per disk:
 *
 *   checked      e2fsck/ntfsfix passed; nothing is changed yet
 *   fs-resizing  the resizer runs; resize2fs writes an undo file first
 *                (-z), so an interrupted resize is rolled back with e2undo
 *   fs-resized   the filesystem has its new size; the table still the old
 *   table-written   the table has the new size; only cleanup is left
 *
 * partctl_resize_resume() reads it after kill -9 or a power cut: from
 * "fs-resizing" it rolls back and redoes the shrink, from "fs-resized" it
 * writes the table.  resize2fs -z corrupts filesystems of 1 KiB blocks;
 * for those, every metadata block is saved first instead (fs_ext_undo.c),
 * and the roll back writes them back.  ntfsresize has no undo: an NTFS
 * shrink interrupted inside ntfsresize is finished only if the volume is
 * whole and already small enough; otherwise resume says so and names
 * chkdsk. */
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

static inline void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

/* ---- the shrink journal ----------------------------------------------------- */


struct shrink_state {
	bool no_repair;        /* the caller's --no-repair */
	struct partctl_resize_plan *res; /* where e2fsck's repairs are told */
	char jpath[PATH_MAX];
	char undo[PATH_MAX];
	char meta[PATH_MAX];
	ip_journal *j;
};

/* partctl's names for the state directory of common/, which move.c uses. */
int partctl_state_file(const char *disk, const char *kind, const char *ext, char *out, size_t n,
		       ip_error *e)
{
	return ip_state_file(disk, kind, ext, out, n, e);
}

int partctl_state_mkdir(ip_error *e)
{
	return ip_state_mkdir(e);
}

static int state_open(const char *disk, struct shrink_state *s, bool create, ip_error *e)
{
	int r;

	memset(s, 0, sizeof(*s));
	if ((r = partctl_state_file(disk, "shrink", "journal", s->jpath, sizeof(s->jpath), e)) < 0 ||
	    (r = partctl_state_file(disk, "shrink", "e2undo", s->undo, sizeof(s->undo), e)) < 0 ||
	    (r = partctl_state_file(disk, "shrink", "metaundo", s->meta, sizeof(s->meta), e)) < 0)
		return r;
	if (!create && access(s->jpath, F_OK) != 0)
		return 0;
	r = partctl_state_mkdir(e);
	if (r < 0)
		return r;
	return ip_journal_open_file(s->jpath, &s->j, e);
}

static void state_close(struct shrink_state *s)
{
	ip_journal_free(s->j);
	s->j = NULL;
}

static int rec_write(struct shrink_state *s, struct shrink_rec *rec, const char *phase,
		     ip_error *e)
{
	char buf[IP_JOURNAL_PAYLOAD_MAX];
	int len;

	snprintf(rec->phase, sizeof(rec->phase), "%s", phase);
	len = snprintf(buf, sizeof(buf),
		       "op=shrink\ndisk=%s\nn=%u\nstart=%llu\nold=%llu\nnew=%llu\nbs=%llu\nfs=%s\nphase=%s\nundo=%s\nmeta=%s\ndev=%s\n",
		       rec->disk, rec->n, (unsigned long long)rec->start,
		       (unsigned long long)rec->old_size, (unsigned long long)rec->new_size,
		       (unsigned long long)rec->block_size, rec->fs, rec->phase, rec->undo, rec->meta, rec->dev);
	if (len < 0 || (size_t)len >= sizeof(buf))
		return ip_fail(e, -ENAMETOOLONG, "the shrink record for %s is too long", rec->disk);
	return ip_journal_write(s->j, buf, (size_t)len, e);
}

int partctl_shrink_rec_parse(char *buf, const char *jpath, struct shrink_rec *rec, ip_error *e)
{
	char *line, *save = NULL;

	memset(rec, 0, sizeof(*rec));
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *v = strchr(line, '=');
		unsigned long long x;

		if (!v)
			continue;
		*v++ = '\0';
		x = strtoull(v, NULL, 10);
		if (!strcmp(line, "op") && strcmp(v, "shrink"))
			return ip_fail(e, -EINVAL, "%s holds a '%.64s' record, not a shrink: remove it if no operation is pending",
				       jpath, v);
		else if (!strcmp(line, "disk"))
			snprintf(rec->disk, sizeof(rec->disk), "%s", v);
		else if (!strcmp(line, "n"))
			rec->n = (unsigned)x;
		else if (!strcmp(line, "start"))
			rec->start = x;
		else if (!strcmp(line, "old"))
			rec->old_size = x;
		else if (!strcmp(line, "new"))
			rec->new_size = x;
		else if (!strcmp(line, "bs"))
			rec->block_size = x;
		else if (!strcmp(line, "fs"))
			snprintf(rec->fs, sizeof(rec->fs), "%s", v);
		else if (!strcmp(line, "phase"))
			snprintf(rec->phase, sizeof(rec->phase), "%s", v);
		else if (!strcmp(line, "undo"))
			snprintf(rec->undo, sizeof(rec->undo), "%s", v);
		else if (!strcmp(line, "meta"))
			snprintf(rec->meta, sizeof(rec->meta), "%s", v);
		else if (!strcmp(line, "dev"))
			snprintf(rec->dev, sizeof(rec->dev), "%s", v);
	}
	if (!rec->n || !rec->new_size || !rec->old_size || !*rec->phase)
		return ip_fail(e, -EINVAL, "the shrink record %s is incomplete: remove it if no shrink is pending",
			       jpath);
	return 0;
}

static int rec_read(struct shrink_state *s, struct shrink_rec *rec, ip_error *e)
{
	char buf[IP_JOURNAL_PAYLOAD_MAX + 1];
	size_t len = sizeof(buf) - 1;
	int r;

	memset(rec, 0, sizeof(*rec));
	r = ip_journal_read(s->j, buf, &len, e);
	if (r < 0)
		return r;
	buf[len] = '\0';
	return partctl_shrink_rec_parse(buf, s->jpath, rec, e);
}

/* The operation is over: forget it, durably. */
static int rec_done(struct shrink_state *s, const struct shrink_rec *rec, ip_error *e)
{
	int r;

	if (rec->undo[0])
		unlink(rec->undo);
	if (rec->meta[0])
		unlink(rec->meta);
	r = ip_journal_clear(s->j, e);
	if (r < 0)
		return r;
	state_close(s);
	unlink(s->jpath);
	return ip_fsync_parent(s->jpath, NULL) < 0 ? 0 : 0;
}

/* The filesystem has its new size: the table follows, then cleanup. */
static int shrink_finish(struct shrink_state *s, struct shrink_rec *rec, ip_error *e)
{
	int r = partctl_resize_table(rec->disk, rec->n, rec->start, rec->new_size, e);

	if (r < 0) {
		ip_error_prefix(e, "the filesystem of partition %u is shrunk but the table is not (run 'inplace part resume %s' once fixed)",
				rec->n, rec->disk);
		return r;
	}
	r = rec_write(s, rec, "table-written", e);
	if (r < 0)
		return r;
	return rec_done(s, rec, e);
}

/* Write the saved metadata back onto dev (the filesystem as it was before
 * resize2fs began), then let e2fsck clear the "being resized" marks. */
static int meta_roll_back(const struct shrink_rec *rec, const char *dev, ip_error *e)
{
	ip_disk *d = NULL;
	int r = ip_disk_open(dev, IP_DISK_RDWR, &d, e);

	if (r == 0)
		r = partctl_ext_meta_restore(d, 0, rec->meta, e);
	ip_disk_free(d);
	if (r < 0) {
		ip_error_prefix(e, "cannot roll back the interrupted resize of partition %u of %s (keep %s)",
				rec->n, rec->disk, rec->meta);
		return r;
	}
	return partctl_ext_fsck(dev, rec->disk, rec->n, e);
}

/* The minimum of the (checked) ext filesystem on dev and its floor: our
 * count, or resize2fs -P's estimate for a layout the count does not
 * describe. */
static int ext_min_checked(const char *dev, uint64_t bs, uint64_t *min, uint64_t *floor, ip_error *e)
{
	ip_disk *d = NULL;
	int r = ip_disk_open(dev, IP_DISK_RDONLY, &d, e);

	if (r == 0)
		r = partctl_ext_min(d, 0, min, floor, e);
	ip_disk_free(d);
	if (r == -EOPNOTSUPP) {
		r = partctl_ext_estimate(dev, bs, min, e);
		*floor = *min;
	}
	return r;
}

/* resize2fs failed and the filesystem is back as it was: say so, with the
 * smallest size known to work (resize2fs -P's, which it always reaches). */
static int shrink_failed(const struct shrink_rec *rec, const char *dev, const char *why, ip_error *e)
{
	char b[IP_SIZE_BUFSZ];
	uint64_t est = 0;

	if (partctl_ext_estimate(dev, rec->block_size, &est, NULL) < 0 || est >= rec->old_size)
		return ip_fail(e, -ENOSPC,
			       "resize2fs could not shrink partition %u of %s to %s (%s); the filesystem was rolled back unchanged and cannot be shrunk now: free some space in it first",
			       rec->n, rec->disk, ip_format_size(rec->new_size, b, sizeof(b)), why);
	return ip_fail(e, -ENOSPC,
		       "resize2fs could not shrink partition %u of %s to %s (%s); the filesystem was rolled back unchanged: choose --to %lluMiB or larger (resize2fs -P's minimum)",
		       rec->n, rec->disk, ip_format_size(rec->new_size, b, sizeof(b)), why,
		       (unsigned long long)(partctl_round_up(est, 1 << 20) >> 20) + 1);
}

static int shrink_ext(struct shrink_state *s, struct shrink_rec *rec, const char *dev, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	char blocks[32], b[IP_SIZE_BUFSZ];
	uint64_t min = 0, floor = 0, bs = rec->block_size;
	int code, r;

	r = s->res ? partctl_ext_fsck_repair(dev, rec->disk, rec->n, !s->no_repair, s->res->repaired,
					     sizeof(s->res->repaired), &s->res->repairs, e)
		   : partctl_ext_fsck(dev, rec->disk, rec->n, e);
	if (r < 0)
		return r;
	/* After the check, the count is of a consistent filesystem. */
	/* The plan checked the size against the minimum part show reports;
	 * e2fsck may since have corrected a few blocks (mke2fs -d leaves
	 * some to fix), which the margin absorbs: refuse only below the
	 * floor, where resize2fs cannot succeed. */
	r = ext_min_checked(dev, bs, &min, &floor, e);
	if (r < 0)
		return r;
	if (partctl_round_down(rec->new_size, bs) < floor && !partctl_test_no_min())
		return ip_bad(e, -ENOSPC,
			      "cannot shrink partition %u of %s below %s (the filesystem's minimum): choose --to %lluMiB or larger",
			      rec->n, rec->disk, ip_format_size(min, b, sizeof(b)),
			      (unsigned long long)(partctl_round_up(min, 1 << 20) >> 20) + 1);
	/* Our undo of the metadata, complete and durable before resize2fs
	 * starts, for every block size: resize2fs -z records every block it
	 * writes, the moved data too (1.5 GiB, 5x the time of the shrink, on
	 * a 4 GiB filesystem 60% full), while the data lands in blocks free
	 * before the shrink and needs no undo; and with -z, resize2fs 1.47.0
	 * corrupts filesystems of 1 KiB blocks ("Resize inode is corrupt").
	 * Records with an e2undo file (older shrinks) still resume. */
	rec->undo[0] = rec->meta[0] = '\0';
	unlink(s->undo);
	unlink(s->meta);
	r = rec_write(s, rec, "checked", e);
	if (r < 0)
		return r;
	if (!rec->undo[0]) {
		ip_disk *d = NULL;
		uint64_t saved;

		r = ip_disk_open(dev, IP_DISK_RDONLY, &d, e);
		if (r == 0)
			r = partctl_ext_meta_save(d, 0, s->meta, &saved, e);
		ip_disk_free(d);
		if (r < 0)
			return r;
		snprintf(rec->meta, sizeof(rec->meta), "%s", s->meta);
	}
	r = rec_write(s, rec, "fs-resizing", e);
	if (r < 0)
		return r;
	snprintf(blocks, sizeof(blocks), "%llu", (unsigned long long)(rec->new_size / bs));
	/* -f: below resize2fs -P's estimate, which is far above what the
	 * filesystem needs; our own count above stands guard, and a failure
	 * is rolled back below. */
	const char *argv_undo[] = { "resize2fs", "-f", "-z", rec->undo, dev, blocks, NULL };
	const char *argv_plain[] = { "resize2fs", "-f", dev, blocks, NULL };
	r = partctl_tool_run(rec->undo[0] ? argv_undo : argv_plain, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		char line[256];
		ip_error e2 = { 0 };

		partctl_tool_line(err, "resize2fs: ", line, sizeof(line));
		/* Put back whatever it changed, then forget the shrink. */
		if (rec->meta[0])
			r = meta_roll_back(rec, dev, &e2);
		else if (rec->undo[0] && partctl_e2undo_has_header(rec->undo))
			r = partctl_e2undo_run(rec->undo, dev, &e2) < 0 ? -EIO : partctl_ext_fsck(dev, rec->disk, rec->n, &e2);
		else
			r = partctl_ext_fsck(dev, rec->disk, rec->n, &e2);
		if (r < 0)
			return ip_fail(e, -EIO, "resize2fs failed on partition %u of %s (%s) and %s",
				       rec->n, rec->disk, line, e2.msg);
		r = partctl_tool_flush(rec->disk, rec->start, rec->old_size, &e2);
		rec_done(s, rec, NULL);
		if (r < 0)
			return ip_fail(e, r, "resize2fs failed on partition %u of %s (%s) and %s",
				       rec->n, rec->disk, line, e2.msg);
		return shrink_failed(rec, dev, line, e);
	}
	return 0;
}

static int shrink_ntfs(struct shrink_state *s, struct shrink_rec *rec, const char *dev, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	char size[32], line[256];
	int code, r;

	r = partctl_ntfs_check(dev, rec->disk, rec->n, e);
	if (r < 0)
		return r;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)rec->new_size);
	/* ntfsresize's own dry run: its checks, nothing written. */
	const char *dry[] = { "ntfsresize", "--no-action", "--force", "--no-progress-bar", "--size", size, dev, NULL };
	r = partctl_tool_run(dry, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		partctl_tool_last_line(err, line, sizeof(line));
		return ip_bad(e, -EINVAL, "ntfsresize refuses to shrink partition %u of %s to %s bytes (%s): choose a larger --to or run chkdsk /f in Windows",
			      rec->n, rec->disk, size, line);
	}
	free(TAKE_PTR(err));
	rec->undo[0] = '\0';
	r = rec_write(s, rec, "checked", e);
	if (r < 0)
		return r;
	r = rec_write(s, rec, "fs-resizing", e);
	if (r < 0)
		return r;
	const char *argv[] = { "ntfsresize", "--force", "--no-progress-bar", "--size", size, dev, NULL };
	r = partctl_tool_run(argv, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		partctl_tool_last_line(err, line, sizeof(line));
		rec_done(s, rec, NULL);
		return ip_fail(e, -EIO, "ntfsresize failed on partition %u of %s (%s): run chkdsk /f on it in Windows before trying again",
			       rec->n, rec->disk, line);
	}
	return 0;
}

/* Resize the filesystem of an open record, from "checked" on. */
static int shrink_fs(struct shrink_state *s, struct shrink_rec *rec, ip_error *e)
{
	struct partctl_tooldev td;
	int r;

	/* Recorded before the loop device exists, so that resume can find
	 * and detach one a kill leaves behind. */
	r = rec_write(s, rec, "checking", e);
	if (r < 0)
		return r;
	r = partctl_tooldev_get(rec->disk, rec->n, rec->start, rec->old_size, &td, e);
	if (r < 0)
		return r;
	snprintf(rec->dev, sizeof(rec->dev), "%s", td.path);
	r = partctl_is_ext(rec->fs) ? shrink_ext(s, rec, td.path, e) : shrink_ntfs(s, rec, td.path, e);
	partctl_tooldev_put(&td);
	if (r < 0)
		return r;
	r = partctl_tool_flush(rec->disk, rec->start, rec->old_size, e);
	if (r < 0)
		return r;
	return rec_write(s, rec, "fs-resized", e);
}

int partctl_part_shrink(const char *disk, unsigned n, uint64_t new_size, const struct partctl_opts *o,
			struct partctl_resize_plan *res, ip_error *e)
{
	struct partctl_resize_plan pp, *rp = res ? res : &pp;
	struct partctl_fsinfo fi;
	struct shrink_state s;
	struct shrink_rec rec = { 0 };
	char real[PATH_MAX];
	int r;

	r = partctl_shrink_plan_fs(disk, n, new_size, rp, &fi, e);
	if (r < 0 || rp->nothing || (o && o->dry_run))
		return r;
	r = ip_check_range_unmounted(disk, rp->start, rp->old_size, e);
	if (r < 0)
		return r;
	r = state_open(disk, &s, true, e);
	if (r < 0)
		return r;
	s.no_repair = o && o->no_repair;
	s.res = rp;
	r = rec_read(&s, &rec, NULL);
	if (r == 0) {
		state_close(&s);
		return ip_bad(e, -EBUSY, "a shrink of partition %u of %s was interrupted (%s): run 'inplace part resume %s' first",
			      rec.n, disk, rec.phase, disk);
	}
	if (!realpath(disk, real))
		snprintf(real, sizeof(real), "%s", disk);
	memset(&rec, 0, sizeof(rec));
	snprintf(rec.disk, sizeof(rec.disk), "%s", real);
	snprintf(rec.fs, sizeof(rec.fs), "%s", fi.type);
	rec.n = n;
	rec.start = rp->start;
	rec.old_size = rp->old_size;
	rec.new_size = rp->new_size;
	rec.block_size = fi.block_size;
	partctl_report(o, "shrinking", 0, 2);
	r = shrink_fs(&s, &rec, e);
	if (r == 0) {
		partctl_report(o, "table", 1, 2);
		r = shrink_finish(&s, &rec, e);
		if (r == 0)
			partctl_report(o, "done", 2, 2);
	} else if (!strcmp(rec.phase, "") || !strcmp(rec.phase, "checking") ||
		 !strcmp(rec.phase, "checked"))
		rec_done(&s, &rec, NULL); /* nothing changed: nothing to resume */
	state_close(&s);
	return r;
}

int partctl_shrink(const char *disk, unsigned n, uint64_t new_size, ip_error *e)
{
	return partctl_part_shrink(disk, n, new_size, NULL, NULL, e);
}

/* ---- resume ----------------------------------------------------------------- */

/* Read /proc/PID/NAME into buf (NUL-terminated); its length, or -1. */
static ssize_t read_proc(const char *pid, const char *name, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%s/%s", pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return n;
}

/* A resizer (or checker) of a killed shrink still at work on dev: its pid,
 * or 0.  kill -9 of inplace alone leaves its child running, and even a
 * killed process takes a moment to exit while its I/O drains. */
static pid_t tool_running(const char *dev, const char *undo)
{
	static const char *const tools[] = { "resize2fs", "ntfsresize", "e2fsck", "e2undo", "ntfsfix" };
	_cleanup_(closedirp) DIR *dir = opendir("/proc");
	struct dirent *de;

	while (dir && (de = readdir(dir))) {
		char buf[4096];
		bool known = false;
		ssize_t n;

		if (!isdigit((unsigned char)de->d_name[0]) || (pid_t)atoi(de->d_name) == getpid())
			continue;
		if (read_proc(de->d_name, "comm", buf, sizeof(buf)) < 0)
			continue;
		buf[strcspn(buf, "\n")] = '\0';
		for (size_t i = 0; i < IP_ARRAY_SIZE(tools); i++)
			known |= !strcmp(buf, tools[i]);
		if (!known || (n = read_proc(de->d_name, "cmdline", buf, sizeof(buf))) < 0)
			continue;
		for (char *a = buf; a < buf + n; a += strlen(a) + 1)
			if ((*dev && !strcmp(a, dev)) || (*undo && !strcmp(a, undo)))
				return (pid_t)atoi(de->d_name);
	}
	return 0;
}

/* Loop devices a killed shrink left attached over [start, …) of disk. */
static void detach_stale_loops(const char *disk, uint64_t start)
{
	_cleanup_(closedirp) DIR *dir = opendir("/sys/block");
	struct dirent *de;

	while (dir && (de = readdir(dir))) {
		char path[PATH_MAX], back[PATH_MAX], dev[300];
		unsigned long long off = 0;
		FILE *f;
		bool match = false;

		if (strncmp(de->d_name, "loop", 4))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(back, sizeof(back), f)) {
			back[strcspn(back, "\n")] = '\0';
			match = !strcmp(back, disk);
		}
		fclose(f);
		if (!match)
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/loop/offset", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		match = fscanf(f, "%llu", &off) == 1 && off == start;
		fclose(f);
		if (!match)
			continue;
		snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
		ip_loop_detach(dev, NULL);
	}
}

int partctl_resize_resume(const char *disk, bool *did, ip_error *e)
{
	struct shrink_state s;
	struct shrink_rec rec;
	struct partctl_tooldev td;
	pid_t pid;
	int r;

	*did = false;
	r = state_open(disk, &s, false, e);
	if (r < 0 || !s.j)
		return r;
	r = rec_read(&s, &rec, e);
	if (r == -ENOENT) {
		state_close(&s);
		unlink(s.jpath);
		return 0;
	}
	if (r < 0)
		goto out;
	*did = true;
	for (int i = 0; i < 100 && (pid = tool_running(rec.dev, rec.undo)) > 0; i++)
		usleep(100 * 1000);
	if (pid > 0) {
		r = ip_fail(e, -EBUSY,
			    "a resizer from the interrupted shrink of partition %u of %s is still running (pid %d): let it finish, then run 'inplace part resume %s' again",
			    rec.n, disk, (int)pid, disk);
		goto out;
	}
	detach_stale_loops(rec.disk, rec.start);
	if (!strcmp(rec.phase, "checking") || !strcmp(rec.phase, "checked")) {
		/* Only the check ran: start over.  An e2fsck killed half way
		 * leaves the filesystem marked as not clean, and resize2fs -P
		 * (the minimum the new attempt needs) refuses such a
		 * filesystem, so let e2fsck finish its repair first. */
		if (partctl_is_ext(rec.fs)) {
			r = partctl_tooldev_get(rec.disk, rec.n, rec.start, rec.old_size, &td, e);
			if (r < 0)
				goto out;
			r = partctl_ext_fsck(td.path, rec.disk, rec.n, e);
			partctl_tooldev_put(&td);
			if (r < 0)
				goto out;
		}
		rec_done(&s, &rec, NULL);
		state_close(&s);
		return partctl_shrink(rec.disk, rec.n, rec.new_size, e);
	}
	if (!strcmp(rec.phase, "fs-resizing") && (rec.meta[0] || rec.undo[0])) {
		/* Put the filesystem back as it was (our metadata undo, or
		 * resize2fs's own through e2undo), then shrink again. */
		r = partctl_tooldev_get(rec.disk, rec.n, rec.start, rec.old_size, &td, e);
		if (r < 0)
			goto out;
		if (rec.meta[0]) {
			r = meta_roll_back(&rec, td.path, e);
		} else {
			if (partctl_e2undo_has_header(rec.undo))
				r = partctl_e2undo_run(rec.undo, td.path, e);
			if (r == 0)
				r = partctl_ext_fsck(td.path, rec.disk, rec.n, e);
		}
		partctl_tooldev_put(&td);
		if (r == 0)
			r = partctl_tool_flush(rec.disk, rec.start, rec.old_size, e);
		if (r < 0)
			goto out;
		r = rec_done(&s, &rec, e);
		if (r < 0)
			goto out;
		state_close(&s);
		return partctl_shrink(rec.disk, rec.n, rec.new_size, e);
	}
	if (!strcmp(rec.phase, "fs-resizing")) {
		/* No undo (NTFS, and ext shrinks recorded before the metadata
		 * undo existed).  If the filesystem is
		 * whole and already fits, the resizer finished: go on with the
		 * table; if it is whole and as large as before, it had not
		 * begun: start over.  Anything else needs a repair tool. */
		ip_disk *d = NULL;
		struct partctl_fsinfo fi = { 0 };
		const char *fix = partctl_is_ext(rec.fs) ? "e2fsck -fy on it" : "chkdsk /f on it in Windows";

		r = ip_disk_open(rec.disk, IP_DISK_RDONLY, &d, e);
		if (r == 0)
			r = partctl_is_ext(rec.fs) ? partctl_ext_info(d, rec.start, rec.old_size, &fi, e)
					   : partctl_ntfs_info(d, rec.start, rec.old_size, &fi, e);
		ip_disk_free(d);
		/* Check it on a device of the size it now has: ntfsfix wants
		 * the backup boot sector at the end of the device. */
		if (r == 0)
			r = partctl_tooldev_get(rec.disk, rec.n, rec.start,
					fi.size && fi.size <= rec.new_size ? rec.new_size : rec.old_size,
					&td, e);
		if (r == 0 && partctl_is_ext(rec.fs)) {
			_cleanup_free_ char *err = NULL;
			const char *argv[] = { "e2fsck", "-f", "-n", td.path, NULL };
			int code;

			r = partctl_tool_run(argv, &code, &err, e);
			if (r == 0 && code != 0)
				r = ip_fail(e, -EUCLEAN, "e2fsck finds it damaged");
			/* Whole, but resize2fs marks the filesystem "with errors"
			 * while it works, and resize2fs -P, which the next
			 * attempt needs, refuses it until e2fsck has run. */
			if (r == 0)
				r = partctl_ext_fsck(td.path, rec.disk, rec.n, e);
			partctl_tooldev_put(&td);
		} else if (r == 0) {
			r = partctl_ntfs_check(td.path, rec.disk, rec.n, e);
			partctl_tooldev_put(&td);
		}
		if (r < 0) {
			r = ip_fail(e, -EUCLEAN,
				    "%s was interrupted on partition %u of %s and left it inconsistent (this resizer has no undo): run %s, then 'inplace part resume %s'",
				    partctl_is_ext(rec.fs) ? "resize2fs" : "ntfsresize", rec.n, disk, fix, disk);
			goto out;
		}
		if (fi.size > rec.new_size) {
			rec_done(&s, &rec, NULL);
			state_close(&s);
			return partctl_shrink(rec.disk, rec.n, rec.new_size, e);
		}
		r = rec_write(&s, &rec, "fs-resized", e);
		if (r < 0)
			goto out;
	}
	if (!strcmp(rec.phase, "fs-resized")) {
		r = shrink_finish(&s, &rec, e);
		goto out;
	}
	if (!strcmp(rec.phase, "table-written")) {
		r = rec_done(&s, &rec, e);
		goto out;
	}
	r = ip_fail(e, -EINVAL, "the shrink record %s has an unknown phase '%s': remove it if no shrink is pending",
		    s.jpath, rec.phase);
out:
	state_close(&s);
	return r;
}
