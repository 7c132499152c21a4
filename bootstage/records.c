/* records.c — the durable home of the state while staging shrinks the old
 * root: a contiguous file on that root, formatted ext4 (journaled), that staging
 * mounts through a loop device over the raw disk (stage.h explains why).
 *
 * The file is written whole with zeros (never fallocate: blocks the old
 * root marks unwritten read back as zeros through its filesystem, so what
 * staging wrote raw would vanish for the old OS), and mke2fs runs with
 * nodiscard (on a file, discard punches holes).  ext4 splits a file at
 * every block group holding a backup superblock or a flex group's tables
 * (one per 128 MiB group at worst), so FIEMAP looks for a run of the
 * area's length in the file, and, when the file has none, a file twice
 * that long is made, which does; the image is written at that run.  The
 * shrink moves only blocks beyond its new end, so a run wholly below it
 * stays where staging looks. */
#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "bootstage/internal.h"
#include "bootstage/stage.h"
#include "imager/imager.h"
#include "partctl/partctl.h"

#define RECORDS_BASE (16ULL << 20)  /* state, log, journals: room to spare */
#define RECORDS_DIR "var/lib/inplace"
#define RECORDS_FILE RECORDS_DIR "/" BS_RECORDS_NAME
#define RECORDS_LABEL "INPLACE-REC"

/* A physical run of len bytes in fd, contiguous on disk and in the
 * file: its file offset (*lpos) and disk offset (*phys, bytes on the
 * filesystem's device).  -EFBIG when the file has none, -EINVAL when an
 * extent is not plain data at a known place. */
static int find_run(int fd, uint64_t flen, uint64_t len, uint64_t *lpos, uint64_t *phys, ip_error *e)
{
	enum { N = 256 };
	_cleanup_free_ struct fiemap *fm = calloc(1, sizeof(*fm) + N * sizeof(struct fiemap_extent));
	const uint32_t bad = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED |
			     FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
			     FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_UNWRITTEN;
	uint64_t next = 0, rl = 0, rp = 0;   /* the run being followed: file and disk start */
	uint64_t best = 0;

	if (!fm)
		return ip_fail(e, -ENOMEM, "out of memory");
	fm->fm_length = flen;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = N;
	if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
		return ip_fail(e, -errno, "cannot map the records file's blocks (FIEMAP): %s", strerror(errno));
	/* the filesystem may report one run as several extents: they are
	 * one run when each starts where the last ended, on disk and in the file */
	for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
		const struct fiemap_extent *x = &fm->fm_extents[i];

		if (x->fe_flags & bad)
			return ip_fail(e, -EINVAL, "the records file has an extent the raw disk cannot be trusted for "
				       "(flags %#x)", x->fe_flags);
		if (i == 0 || x->fe_logical != next || x->fe_physical != rp + (x->fe_logical - rl)) {
			rl = x->fe_logical;
			rp = x->fe_physical;
		}
		next = x->fe_logical + x->fe_length;
		if (next - rl > best)
			best = next - rl;
		if (next - rl >= len) {
			*lpos = rl;
			*phys = rp;
			return 0;
		}
	}
	return ip_fail(e, -EFBIG, "the records file has no contiguous run of %llu MiB on disk (%u extents, the "
		       "longest run %llu MiB): free some space on the old root (or defragment it) and build again",
		       (unsigned long long)(len >> 20), fm->fm_mapped_extents, (unsigned long long)(best >> 20));
}

/* Fill fd with len bytes of zeros, written (not holes, not unwritten). */
static int zero_fill(int fd, uint64_t len, const char *path, ip_error *e)
{
	static const char zero[1 << 16];

	for (uint64_t o = 0; o < len; o += sizeof(zero))
		if (pwrite(fd, zero, sizeof(zero), (off_t)o) != (ssize_t)sizeof(zero))
			return ip_fail(e, -errno, "cannot write %s: %s", path, strerror(errno));
	if (fsync(fd) < 0)
		return ip_fail(e, -errno, "cannot flush %s: %s", path, strerror(errno));
	return 0;
}

/* Write the whole of src into fd at file offset at: every block written
 * with data, zeros too, over blocks zero_fill placed. */
static int copy_whole(int fd, const char *src, uint64_t at, uint64_t len, const char *path, ip_error *e)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	static char buf[1 << 16];

	if (in < 0)
		return ip_fail(e, -errno, "cannot read %s: %s", src, strerror(errno));
	for (uint64_t o = 0; o < len; o += sizeof(buf)) {
		ssize_t n = pread(in, buf, sizeof(buf), (off_t)o);

		if (n < 0)
			return ip_fail(e, -errno, "cannot read %s: %s", src, strerror(errno));
		memset(buf + n, 0, sizeof(buf) - (size_t)n);
		if (pwrite(fd, buf, sizeof(buf), (off_t)(at + o)) != (ssize_t)sizeof(buf))
			return ip_fail(e, -errno, "cannot write %s: %s", path, strerror(errno));
	}
	if (fsync(fd) < 0)
		return ip_fail(e, -errno, "cannot flush %s: %s", path, strerror(errno));
	return 0;
}

/* What of state_dir the records hold, copied into pop: all but the image
 * staged beside the state (staged-image/, hundreds of MiB: the records
 * are sized for the state and one undo) and the records files themselves
 * (this one, or a try kept aside). */
static int records_content(const char *state_dir, const char *pop, ip_error *e)
{
	DIR *d = opendir(state_dir);
	const char *skip = strrchr(BS_ROOT_IMAGE_DIR, '/') + 1;
	char src[PATH_MAX];
	struct dirent *de;
	int r = 0;

	if (!d)
		return ip_fail(e, -errno, "cannot read %s: %s", state_dir, strerror(errno));
	while (r == 0 && (de = readdir(d))) {
		const char *cp[] = { "cp", "-a", "--", src, pop, NULL };

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, skip) ||
		    !strncmp(de->d_name, "staging-records", strlen("staging-records")))
			continue;
		snprintf(src, sizeof(src), "%s/%s", state_dir, de->d_name);
		r = ip_spawn(cp, NULL, e);
	}
	closedir(d);
	return r;
}

/* The ext4 image of state_dir, made in a file of its own (mke2fs zeroes
 * with fallocate, which would leave unwritten extents in place). */
static int make_image(const char *img, const char *state_dir, uint64_t bytes, ip_error *e)
{
	char size[32], pop[] = "/tmp/inplace-records-content.XXXXXX";
	/* ext4 with a journal: staging may be cut at any instant, and an
	 * ext2 cut while its bitmaps were in RAM would run out of space or
	 * hand one block out twice on the next boot; few inodes (a state
	 * directory and journals), so that its space goes to the undo */
	const char *argv[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-J", "size=4", "-N", "4096", "-E",
			       "nodiscard,root_owner=0:0", "-L", RECORDS_LABEL, "-d", pop, img, size, NULL };
	int r;

	snprintf(size, sizeof(size), "%lluk", (unsigned long long)(bytes >> 10));
	unlink(img);
	if (!mkdtemp(pop))
		return ip_fail(e, -errno, "cannot make a temporary directory: %s", strerror(errno));
	if ((r = records_content(state_dir, pop, e)) == 0 && (r = ip_spawn(argv, NULL, e)) < 0)
		ip_error_prefix(e, "cannot format the staging records: ");
	bs_rm_tree(pop, NULL);
	return r;
}

/* The UUID of the filesystem in [off, off+len) of path, or "" */
static void probe_uuid(const char *path, uint64_t off, uint64_t len, char *uuid, size_t n)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	blkid_probe pr = fd < 0 ? NULL : blkid_new_probe();
	const char *v;

	*uuid = '\0';
	if (!pr)
		return;
	/* a probe of our own fd: set_device closes a probe's private one */
	if (blkid_probe_set_device(pr, fd, (blkid_loff_t)off, (blkid_loff_t)len) == 0) {
		blkid_probe_enable_superblocks(pr, 1);
		blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE);
		if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0)
			snprintf(uuid, n, "%s", v);
	}
	blkid_free_probe(pr);
}

/* Room for partctl's metadata undo of the shrink, which lives here too
 * (fs_ext_undo.c counts it exactly), once: a shrink begun again after a
 * cut first rolls back with the old undo and removes it, and the next
 * save removes a half-written one first (partctl/shrink.c), so two never
 * sit side by side; with a sixteenth more for what the old OS still
 * writes before its reboot. */
static int records_bytes(const char *disk, uint64_t off, uint64_t *bytes, ip_error *e)
{
	ip_disk *d = NULL;
	uint64_t meta = 0;
	int r;

	if ((r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e)) < 0)
		return r;
	r = partctl_ext_meta_bytes(d, off, &meta, e);
	ip_disk_free(d);
	if (r < 0)
		return r;
	meta += meta / 16 + (1 << 20);
	*bytes = (RECORDS_BASE + meta + (1 << 20) - 1) & ~((uint64_t)(1 << 20) - 1);
	return 0;
}

/* Where the plan that makes the store leaves partition part: its new end
 * (bytes on the disk), or an error when the plan moves it. */
static int planned_end(const char *disk, unsigned part, uint64_t part_off, uint64_t part_size,
		       uint64_t store_bytes, uint64_t *end, ip_error *e)
{
	struct partctl_storage_result sr = { 0 };
	struct partctl_opts po = { .dry_run = true };
	int r;

	*end = part_off + part_size;
	if (!store_bytes)
		return 0;
	r = partctl_plan_storage(disk, store_bytes, &po, &sr, e);
	if (r < 0)
		return r;
	if (sr.existing)
		return 0;
	for (size_t i = 0; i < sr.plan.n; i++) {
		const struct partctl_plan_step *s = &sr.plan.steps[i];

		if (s->partition != part || s->op == PARTCTL_OP_CREATE || s->op == PARTCTL_OP_CREATE_EXTENDED)
			continue;
		if (s->op == PARTCTL_OP_MOVE)
			return ip_bad(e, -EINVAL, "the plan moves partition %u of %s, which holds the staging records: "
				      "they would not stay where staging looks; use a store directory ([job] store)",
				      part, disk);
		if (s->op == PARTCTL_OP_SHRINK && part_off + s->to < *end)
			*end = part_off + s->to;
	}
	return 0;
}

#define RECORDS_TRIES 4

/* Remove the spare files make_file kept while it looked for a run. */
static void drop_spares(const char *path, int n)
{
	char spare[4300];

	for (int i = 0; i < n; i++) {
		snprintf(spare, sizeof(spare), "%s.spare%d", path, i);
		unlink(spare);
	}
}

/* Write the area into the filesystem mounted at root: *phys is where its
 * image begins on the filesystem's device.  A file without a run of the
 * area's length is kept aside (renamed) while the next is written, so
 * that ext4 places that one elsewhere, and removed at the end. */
static int make_file(const char *root, const char *state_dir, const char *tmpl, struct bs_records *rec,
		     uint64_t *phys, ip_error *e)
{
	char path[4200], dir[4200], img[4200], spare[4300];
	uint64_t at = 0, flen = rec->size, again, pagain;
	int r, spares = 0;

	snprintf(dir, sizeof(dir), "%s/%s", root, RECORDS_DIR);
	snprintf(path, sizeof(path), "%s/%s", root, RECORDS_FILE);
	if ((r = ip_mkdir_p(dir, 0700, e)) < 0)
		return r;
	drop_spares(path, RECORDS_TRIES);
	for (int tries = 0;; tries++) {
		_cleanup_close_ int fd = -1;

		/* made anew: blocks of an older one may lie anywhere */
		if (unlink(path) < 0 && errno != ENOENT) {
			r = ip_fail(e, -errno, "cannot remove the old %s: %s", path, strerror(errno));
			break;
		}
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			r = ip_fail(e, -errno, "cannot create %s: %s", path, strerror(errno));
			break;
		}
		if ((r = zero_fill(fd, flen, path, e)) < 0)
			break;
		r = find_run(fd, flen, rec->size, &at, phys, e);
		if (r == -EFBIG && tries + 1 < RECORDS_TRIES) {
			/* twice the length and a little: a whole one lies
			 * between any two splits farther apart than that */
			ip_error_clear(e);
			if (tries > 0) {
				snprintf(spare, sizeof(spare), "%s.spare%d", path, spares);
				if (rename(path, spare) == 0)
					spares++;
			}
			flen = 2 * rec->size + (16 << 20);
			continue;
		}
		if (r < 0)
			break;
		snprintf(img, sizeof(img), "%s.new", tmpl);
		r = make_image(img, state_dir, rec->size, e);
		if (r == 0)
			r = copy_whole(fd, img, at, rec->size, path, e);
		unlink(img);
		/* an overwrite stays where it was: proven, not assumed */
		if (r == 0 && (r = find_run(fd, flen, rec->size, &again, &pagain, e)) == 0 &&
		    (again != at || pagain != *phys))
			r = ip_fail(e, -EIO, "the records image moved on disk while it was written (%s)", path);
		break;
	}
	drop_spares(path, spares);
	if (r < 0)
		return r;
	if ((r = ip_fsync_parent(path, e)) < 0)
		return r;
	snprintf(rec->path, sizeof(rec->path), "/%s", RECORDS_FILE);
	probe_uuid(path, at, rec->size, rec->uuid, sizeof(rec->uuid));
	if (!*rec->uuid)
		return ip_fail(e, -EIO, "the staging records %s show no filesystem after mke2fs", path);
	return 0;
}

/* The old root, partition sys_part of disk, read-write for the time of a
 * call: where it is mounted read-write already (the running root), else
 * mounted at tmp (a mkdtemp template) into m; off and size: its range. */
static int root_open(const char *disk, unsigned sys_part, char *mnt, size_t n, char *tmp, struct ip_mount *m,
		     uint64_t *off, uint64_t *size, ip_error *e)
{
	struct partctl_fsinfo fi;
	ip_disk *d = NULL;
	bool rw = false;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = partctl_part_range(disk, sys_part, off, size, e)) < 0 ||
	    (r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e)) < 0)
		return r;
	r = partctl_fs_probe(d, *off, *size, &fi, e);
	ip_disk_free(d);
	if (r < 0)
		return r;
	if (strncmp(fi.type, "ext", 3))
		return ip_bad(e, -EOPNOTSUPP, "partition %u of %s holds %s, not ext2/3/4: the staging records "
			      "need a Linux root", sys_part, disk, *fi.type ? fi.type : "no filesystem");
	r = ip_range_mount(disk, *off, *size, mnt, n, &rw);
	if (r < 0)
		return ip_fail(e, r, "cannot read /proc/self/mountinfo: %s", strerror(-r));
	if (r > 0 && !rw)
		return ip_bad(e, -EROFS, "partition %u of %s is mounted read-only at %s: the staging records "
			      "need it read-write", sys_part, disk, mnt);
	if (r > 0)
		return 0;
	if (!mkdtemp(tmp))
		return ip_fail(e, -errno, "cannot make a mount point: %s", strerror(errno));
	r = ip_mount_part(disk, sys_part, *off, *size, fi.type, 0, tmp, m, e);
	if (r < 0) {
		rmdir(tmp);
		return r;
	}
	snprintf(mnt, n, "%s", tmp);
	return 0;
}

/* Undo root_open; r is the caller's result so far (an unmount error
 * counts only when the rest went well). */
static int root_close(struct ip_mount *m, const char *tmp, int r, ip_error *e)
{
	int rr;

	if (!m->mounted)
		return r;
	rr = ip_umount(m, r < 0 ? NULL : e);
	rmdir(tmp);
	return r < 0 ? r : rr;
}

int bs_records_create(const char *disk, unsigned sys_part, const char *state_dir, uint64_t store_bytes,
		      struct bs_records *rec, ip_error *e)
{
	struct ip_mount m = { 0 };
	char mnt[4096] = "", tmp[] = "/tmp/inplace-records.XXXXXX";
	uint64_t off, size, phys = 0, end;
	int r;

	memset(rec, 0, sizeof(*rec));
	if ((r = root_open(disk, sys_part, mnt, sizeof(mnt), tmp, &m, &off, &size, e)) < 0)
		return r;
	r = records_bytes(disk, off, &rec->size, e);
	if (r == 0)
		r = make_file(mnt, state_dir, tmp, rec, &phys, e);
	if ((r = root_close(&m, tmp, r, e)) < 0)
		return r;
	rec->off = off + phys;
	/* planned with the area in place: it is part of what the shrink keeps */
	if ((r = planned_end(disk, sys_part, off, size, store_bytes, &end, e)) < 0)
		return r;
	if (rec->off + rec->size > end)
		return ip_fail(e, -ENOSPC, "the staging records landed at %llu MiB of partition %u, beyond the "
			       "%llu MiB the shrink keeps: free space low on the old root and build again",
			       (unsigned long long)(phys >> 20), sys_part,
			       (unsigned long long)((end - off) >> 20));
	return 0;
}

int bs_records_mount(const char *disk, const struct bs_records *rec, const char *dir, char *dev, size_t devlen,
		     ip_error *e)
{
	char uuid[40];
	int r;

	/* deploy overwrites the area: a filesystem there that is not ours
	 * must never be mounted read-write */
	probe_uuid(disk, rec->off, rec->size, uuid, sizeof(uuid));
	if (strcmp(uuid, rec->uuid))
		return -ENOENT;
	if ((r = ip_mkdir_p(dir, 0700, e)) < 0 ||
	    (r = ip_loop_attach(disk, rec->off, rec->size, false, dev, devlen, e)) < 0)
		return r;
	/* a cut staging boot left it unclean: the journal is replayed by
	 * the mount, and e2fsck -p mends what a journal does not cover */
	{
		const char *argv[] = { "e2fsck", "-p", dev, NULL };
		ip_proc p = { .argv = argv };

		if (ip_proc_run(&p, NULL) == 0 && p.exit_code >= 4) {
			ip_proc_clear(&p);
			ip_loop_detach(dev, NULL);
			return ip_fail(e, -EUCLEAN, "the staging records (byte %llu of %s) are damaged beyond e2fsck -p",
				       (unsigned long long)rec->off, disk);
		}
		ip_proc_clear(&p);
	}
	if (mount(dev, dir, "ext4", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		r = -errno;
		ip_loop_detach(dev, NULL);
		return ip_fail(e, r, "cannot mount the staging records (%s at byte %llu of %s): %s", dev,
			       (unsigned long long)rec->off, disk, strerror(-r));
	}
	return 0;
}

json_object *bs_records_json(const struct bs_records *rec)
{
	json_object *o;

	if (!rec || !(o = json_object_new_object()))
		return NULL;
	json_object_object_add(o, "path", json_object_new_string(rec->path));
	json_object_object_add(o, "offset", ip_json_u64(rec->off));
	json_object_object_add(o, "size", ip_json_u64(rec->size));
	json_object_object_add(o, "uuid", json_object_new_string(rec->uuid));
	return o;
}

int bs_records_umount(const char *dir, const char *dev, ip_error *e)
{
	sync();
	if (umount2(dir, 0) < 0 && errno != EINVAL && errno != ENOENT)
		return ip_fail(e, -errno, "cannot unmount the staging records at %s: %s", dir, strerror(errno));
	if (dev && *dev)
		return ip_loop_detach(dev, e);
	return 0;
}

/* ---- the image on the old root -------------------------------------------- */

/* Is the copy in dir complete and of this source?  A file source must
 * still have the size and time it had when copied. */
static bool root_image_current(const char *dir, const char *image, bool url, uint64_t *bytes)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_json_ json_object *doc = NULL;
	char path[4300];
	json_object *v;
	struct stat st, src;
	size_t len;

	snprintf(path, sizeof(path), "%s/%s", dir, BS_ROOT_IMAGE_MANIFEST);
	if (ip_read_file(path, 1 << 16, &text, &len, NULL) < 0 || !(doc = json_tokener_parse(text)) ||
	    !json_object_object_get_ex(doc, "source", &v) || strcmp(json_object_get_string(v), image) ||
	    !json_object_object_get_ex(doc, "bytes", &v))
		return false;
	*bytes = (uint64_t)json_object_get_int64(v);
	snprintf(path, sizeof(path), "%s/%s", dir, BS_ROOT_IMAGE_FILE);
	if (stat(path, &st) < 0 || (uint64_t)st.st_size != *bytes)
		return false;
	if (url)
		return true;
	return stat(image, &src) == 0 && (uint64_t)src.st_size == *bytes &&
	       json_object_object_get_ex(doc, "source_mtime", &v) && json_object_get_int64(v) == (int64_t)src.st_mtime;
}

/* src at dst: a hard link when both are on the old root (the running
 * root holds the image already: no second copy, no time spent), else a
 * durable copy. */
static int root_image_link(const char *src, const char *dst, ip_error *e)
{
	if (link(src, dst) == 0)
		return ip_fsync_parent(dst, e);
	return bs_copy_durable(src, dst, e);
}

static int root_image_fill(const char *dir, const char *image, const char *const *mirrors, const char *key,
			   uint64_t max_bytes, struct bs_root_image *out, ip_error *e)
{
	char img[4300], sig[4400], path[4300], have[IP_SIZE_BUFSZ], need[IP_SIZE_BUFSZ];
	_cleanup_json_ json_object *doc = json_object_new_object();
	bool url = imager_is_url(image);
	struct statvfs vfs;
	struct stat st = { 0 }, dst;
	const char *t;
	int r;

	snprintf(img, sizeof(img), "%s/%s", dir, BS_ROOT_IMAGE_FILE);
	snprintf(sig, sizeof(sig), "%s.minisig", img);
	/* a copy of this source kept, when its signature still holds (one
	 * that does not is made again) */
	if (root_image_current(dir, image, url, &out->bytes) && (!key || imager_verify_sig(img, sig, key, NULL) == 0)) {
		out->kept = true;
		out->signature = key != NULL;
		return 0;
	}
	/* the manifest goes first: a copy cut short is never taken for one */
	snprintf(path, sizeof(path), "%s/%s", dir, BS_ROOT_IMAGE_MANIFEST);
	if (unlink(path) < 0 && errno != ENOENT)
		return ip_fail(e, -errno, "cannot remove %s: %s", path, strerror(errno));
	unlink(img);
	unlink(sig);
	if (url) {
		/* no image of the system partition is larger (a server that says
		 * otherwise is refused before a byte lands on the old root); only
		 * bytes that match their frame hash are kept */
		struct imager_fetch_opts fo = { .mirrors = mirrors, .want_sig = key != NULL, .max_bytes = max_bytes };

		r = imager_fetch(image, &fo, img, e);
	} else {
		if (stat(image, &st) < 0)
			return ip_bad(e, -errno, "image %s: %s: fix image in the job", image, strerror(errno));
		/* room for a copy (a link, on the same filesystem, takes none) */
		if (stat(dir, &dst) == 0 && dst.st_dev != st.st_dev && statvfs(dir, &vfs) == 0 &&
		    (uint64_t)vfs.f_bavail * vfs.f_frsize < (uint64_t)st.st_size + (16 << 20))
			return ip_bad(e, -ENOSPC, "the old root has %s free, the image needs %s there until the staging "
				      "boot copies it into the store: free space on the old root",
				      ip_format_size((uint64_t)vfs.f_bavail * vfs.f_frsize, have, sizeof(have)),
				      ip_format_size((uint64_t)st.st_size, need, sizeof(need)));
		snprintf(path, sizeof(path), "%s.minisig", image);
		r = root_image_link(image, img, e);
		if (r == 0 && key)
			r = root_image_link(path, sig, e);
	}
	if (r < 0)
		return r;
	if (stat(img, &st) < 0)
		return ip_fail(e, -errno, "cannot read %s: %s", img, strerror(errno));
	out->bytes = (uint64_t)st.st_size;
	/* as deploy would: the copy staging takes is the one signed */
	if (key && (r = imager_verify_sig(img, sig, key, e)) < 0)
		return r;
	out->signature = key != NULL;
	json_object_object_add(doc, "source", json_object_new_string(image));
	json_object_object_add(doc, "bytes", ip_json_u64(out->bytes));
	json_object_object_add(doc, "signed", json_object_new_boolean(out->signature));
	if (!url && stat(image, &st) == 0)
		json_object_object_add(doc, "source_mtime", json_object_new_int64((int64_t)st.st_mtime));
	t = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN);
	snprintf(path, sizeof(path), "%s/%s", dir, BS_ROOT_IMAGE_MANIFEST);
	return ip_write_file_atomic(path, t, strlen(t), 0600, e);
}

int bs_root_image_put(const char *disk, unsigned sys_part, const char *image, const char *const *mirrors,
		      const char *key, struct bs_root_image *out, ip_error *e)
{
	struct ip_mount m = { 0 };
	char mnt[4096] = "", tmp[] = "/tmp/inplace-image.XXXXXX", dir[4200];
	uint64_t off, size;
	int r;

	memset(out, 0, sizeof(*out));
	if (!image)
		return ip_bad(e, -EINVAL, "the job names no image");
	if ((r = root_open(disk, sys_part, mnt, sizeof(mnt), tmp, &m, &off, &size, e)) < 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/%s", mnt, BS_ROOT_IMAGE_DIR);
	r = ip_mkdir_p(dir, 0700, e);
	if (r == 0)
		r = root_image_fill(dir, image, mirrors, key, imager_max_file_size(size), out, e);
	/* on disk before the reboot, whatever the old OS does next */
	if (r == 0)
		sync();
	snprintf(out->path, sizeof(out->path), "/%s/%s", BS_ROOT_IMAGE_DIR, BS_ROOT_IMAGE_FILE);
	return root_close(&m, tmp, r, e);
}

json_object *bs_root_image_json(const struct bs_root_image *ri)
{
	json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	json_object_object_add(o, "path", json_object_new_string(ri->path));
	json_object_object_add(o, "bytes", ip_json_u64(ri->bytes));
	json_object_object_add(o, "signed", json_object_new_boolean(ri->signature));
	json_object_object_add(o, "kept", json_object_new_boolean(ri->kept));
	return o;
}

/* ---- status on the old OS: what a staging boot left in the area ---------- */

/* Copy file name of the records filesystem fs into dir; a missing one is
 * not an error (status.log may not exist yet). */
static int records_copy_out(ext2_filsys fs, const char *name, const char *dir, ip_error *e)
{
	char out[4200];
	ext2_ino_t ino;
	ext2_file_t f;
	struct ext2_inode inode;
	_cleanup_free_ char *buf = NULL;
	unsigned int got = 0;
	errcode_t err;
	uint64_t size;

	if (ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, name, &ino) || ext2fs_read_inode(fs, ino, &inode))
		return 0;
	size = EXT2_I_SIZE(&inode);
	if (size > (64u << 20))
		return ip_fail(e, -EFBIG, "%s in the staging records is %llu bytes: not a state this inplace wrote",
			       name, (unsigned long long)size);
	if (!(buf = malloc(size + 1)))
		return ip_fail(e, -ENOMEM, "out of memory");
	if ((err = ext2fs_file_open(fs, ino, 0, &f)))
		return ip_fail(e, -EIO, "cannot open %s in the staging records: %s", name, error_message(err));
	err = ext2fs_file_read(f, buf, (unsigned int)size, &got);
	ext2fs_file_close(f);
	if (err || got != size)
		return ip_fail(e, -EIO, "cannot read %s in the staging records: %s", name,
			       err ? error_message(err) : "short read");
	snprintf(out, sizeof(out), "%s/%s", dir, name);
	return ip_write_file_atomic(out, buf, size, 0600, e);
}

int bs_records_read(const char *img, const char *dir, bool *unclean, ip_error *e)
{
	ext2_filsys fs = NULL;
	errcode_t err;
	int r;

	*unclean = false;
	if (access(img, R_OK) < 0)
		return errno == ENOENT ? -ENOENT : ip_fail(e, -errno, "cannot read %s: %s", img, strerror(errno));
	/* read-only, never replayed here: the area is the old OS's record of
	 * a staging boot, and status changes nothing */
	err = ext2fs_open2(img, NULL, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
	if (err)
		return ip_fail(e, -EIO, "cannot read the staging records %s: %s: it holds no ext4 the staging boot "
			       "wrote (mount -o loop,ro it to look)", img, error_message(err));
	/* a cut staging boot: its last changes may sit in the journal only */
	*unclean = ext2fs_has_feature_journal_needs_recovery(fs->super);
	r = records_copy_out(fs, "state.json", dir, e);
	if (r == 0)
		r = records_copy_out(fs, "status.log", dir, e);
	ext2fs_close_free(&fs);
	return r;
}
