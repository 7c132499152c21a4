/* records.c — the durable home of the state while staging shrinks the old
 * root: a contiguous file on that root, formatted ext2, that staging
 * mounts through a loop device over the raw disk (stage.h explains why).
 *
 * The file is written whole with zeros before mke2fs (never fallocate:
 * blocks the old root marks unwritten read back as zeros through its
 * filesystem, so what staging wrote raw would vanish for the old OS), and
 * mke2fs runs with nodiscard (on a file, discard punches holes).  FIEMAP
 * then proves one physical extent; the shrink moves only blocks beyond its
 * new end, so an extent wholly below it stays where staging looks. */
#include <blkid.h>
#include <et/com_err.h>
#include <ext2fs/ext2fs.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bootstage/stage.h"
#include "partctl/partctl.h"

#define RECORDS_BASE (16ULL << 20)  /* state, log, journals: room to spare */
#define RECORDS_DIR "var/lib/inplace"
#define RECORDS_FILE RECORDS_DIR "/staging-records.img"
#define RECORDS_LABEL "INPLACE-REC"

/* The one physical extent of fd (bytes on the filesystem's device):
 * -EFBIG when the file is in pieces, -EINVAL when an extent is not plain
 * data at a known place. */
static int one_extent(int fd, uint64_t len, uint64_t *phys, ip_error *e)
{
	enum { N = 32 };
	_cleanup_free_ struct fiemap *fm = calloc(1, sizeof(*fm) + N * sizeof(struct fiemap_extent));
	const uint32_t bad = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED |
			     FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
			     FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_UNWRITTEN;
	uint64_t next = 0;

	if (!fm)
		return ip_fail(e, -ENOMEM, "out of memory");
	fm->fm_length = len;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = N;
	if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
		return ip_fail(e, -errno, "cannot map the records file's blocks (FIEMAP): %s", strerror(errno));
	/* the filesystem may report one run as several extents: they count
	 * as one when each starts where the last ended, on disk and in the file */
	for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
		const struct fiemap_extent *x = &fm->fm_extents[i];

		if (x->fe_flags & bad)
			return ip_fail(e, -EINVAL, "the records file has an extent the raw disk cannot be trusted for "
				       "(flags %#x)", x->fe_flags);
		if (i == 0)
			*phys = x->fe_physical;
		else if (x->fe_physical != *phys + x->fe_logical || x->fe_logical != next)
			return ip_fail(e, -EFBIG, "the records file is not contiguous on disk: free some space on "
				       "the old root (or defragment it) and build again");
		next = x->fe_logical + x->fe_length;
	}
	if (!fm->fm_mapped_extents || next < len)
		return ip_fail(e, -EFBIG, "the records file is not wholly mapped (%llu of %llu bytes)",
			       (unsigned long long)next, (unsigned long long)len);
	return 0;
}

/* Write the whole of src into fd: every block written with data, zeros
 * too, so that the old root holds none of it as a hole or unwritten. */
static int copy_whole(int fd, const char *src, uint64_t len, const char *path, ip_error *e)
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
		if (pwrite(fd, buf, sizeof(buf), (off_t)o) != (ssize_t)sizeof(buf))
			return ip_fail(e, -errno, "cannot write %s: %s", path, strerror(errno));
	}
	if (fsync(fd) < 0)
		return ip_fail(e, -errno, "cannot flush %s: %s", path, strerror(errno));
	return 0;
}

/* The ext2 image of state_dir, made in a file of its own (mke2fs zeroes
 * with fallocate, which would leave unwritten extents in place). */
static int make_image(const char *img, const char *state_dir, uint64_t bytes, ip_error *e)
{
	char size[32];
	const char *argv[] = { "mke2fs", "-q", "-F", "-t", "ext2", "-b", "4096", "-m", "0", "-E",
			       "nodiscard,root_owner=0:0", "-L", RECORDS_LABEL, "-d", state_dir, img, size, NULL };
	int r;

	snprintf(size, sizeof(size), "%lluk", (unsigned long long)(bytes >> 10));
	unlink(img);
	if ((r = ip_spawn(argv, NULL, e)) < 0)
		ip_error_prefix(e, "cannot format the staging records: ");
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

/* Room for partctl's metadata undo of the shrink (fs_ext_undo.c: every
 * inode table, bitmap, descriptor and journal block, and the blocks of
 * directories and extent trees), which lives here too: counted from the
 * filesystem's geometry, with the used bytes' share of tree blocks
 * guessed generously, plus the base. */
static int records_bytes(const char *disk, uint64_t off, uint64_t *bytes, ip_error *e)
{
	ext2_filsys fs = NULL;
	struct ext2_inode ino;
	char opts[64];
	uint64_t bs, groups, meta, used;
	errcode_t err;

	snprintf(opts, sizeof(opts), "offset=%llu", (unsigned long long)off);
	err = ext2fs_open2(disk, opts, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
	if (err)
		return ip_fail(e, -EIO, "cannot open the old root's filesystem on %s: %s", disk, error_message(err));
	bs = fs->blocksize;
	groups = fs->group_desc_count;
	meta = groups * fs->inode_blocks_per_group * bs            /* inode tables */
	     + groups * 2 * bs                                      /* bitmaps */
	     + groups * (fs->desc_blocks + fs->super->s_reserved_gdt_blocks + 1) * bs;
	if (fs->super->s_journal_inum && ext2fs_read_inode(fs, fs->super->s_journal_inum, &ino) == 0)
		meta += EXT2_I_SIZE(&ino);
	used = (ext2fs_blocks_count(fs->super) - ext2fs_free_blocks_count(fs->super)) * bs;
	meta += used / 32;
	ext2fs_close_free(&fs);
	*bytes = (RECORDS_BASE + meta + meta / 8 + (1 << 20) - 1) & ~((uint64_t)(1 << 20) - 1);
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

/* Write the area into the filesystem mounted at root. */
static int make_file(const char *root, const char *state_dir, const char *tmpl, struct bs_records *rec,
		     uint64_t *phys, ip_error *e)
{
	char path[4200], dir[4200], img[4200];
	_cleanup_close_ int fd = -1;
	int r;

	snprintf(dir, sizeof(dir), "%s/%s", root, RECORDS_DIR);
	snprintf(path, sizeof(path), "%s/%s", root, RECORDS_FILE);
	if ((r = ip_mkdir_p(dir, 0700, e)) < 0)
		return r;
	/* made anew: blocks of an older one may lie anywhere */
	if (unlink(path) < 0 && errno != ENOENT)
		return ip_fail(e, -errno, "cannot remove the old %s: %s", path, strerror(errno));
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return ip_fail(e, -errno, "cannot create %s: %s", path, strerror(errno));
	snprintf(img, sizeof(img), "%s.new", tmpl);
	r = make_image(img, state_dir, rec->size, e);
	if (r == 0)
		r = copy_whole(fd, img, rec->size, path, e);
	unlink(img);
	if (r < 0)
		return r;
	if (fsync(fd) < 0)
		return ip_fail(e, -errno, "cannot flush %s: %s", path, strerror(errno));
	if ((r = ip_fsync_parent(path, e)) < 0 || (r = one_extent(fd, rec->size, phys, e)) < 0)
		return r;
	snprintf(rec->path, sizeof(rec->path), "/%s", RECORDS_FILE);
	probe_uuid(path, 0, rec->size, rec->uuid, sizeof(rec->uuid));
	if (!*rec->uuid)
		return ip_fail(e, -EIO, "the staging records %s show no filesystem after mke2fs", path);
	return 0;
}

int bs_records_create(const char *disk, unsigned sys_part, const char *state_dir, uint64_t store_bytes,
		      struct bs_records *rec, ip_error *e)
{
	struct partctl_fsinfo fi;
	struct ip_mount m = { 0 };
	char mnt[4096] = "", tmp[] = "/tmp/inplace-records.XXXXXX";
	uint64_t off, size, phys = 0, end;
	ip_disk *d = NULL;
	bool rw = false;
	int r, rr;

	memset(rec, 0, sizeof(*rec));
	if ((r = partctl_part_range(disk, sys_part, &off, &size, e)) < 0 ||
	    (r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e)) < 0)
		return r;
	r = partctl_fs_probe(d, off, size, &fi, e);
	ip_disk_free(d);
	if (r < 0)
		return r;
	if (strncmp(fi.type, "ext", 3))
		return ip_bad(e, -EOPNOTSUPP, "partition %u of %s holds %s, not ext2/3/4: the staging records "
			      "need a Linux root", sys_part, disk, *fi.type ? fi.type : "no filesystem");
	if ((r = records_bytes(disk, off, &rec->size, e)) < 0)
		return r;
	r = ip_range_mount(disk, off, size, mnt, sizeof(mnt), &rw);
	if (r < 0)
		return ip_fail(e, r, "cannot read /proc/self/mountinfo: %s", strerror(-r));
	if (r > 0 && !rw)
		return ip_bad(e, -EROFS, "partition %u of %s is mounted read-only at %s: the staging records "
			      "need it read-write", sys_part, disk, mnt);
	if (r == 0) {
		if (!mkdtemp(tmp))
			return ip_fail(e, -errno, "cannot make a mount point: %s", strerror(errno));
		r = ip_mount_part(disk, sys_part, off, size, fi.type, 0, tmp, &m, e);
		if (r < 0) {
			rmdir(tmp);
			return r;
		}
		snprintf(mnt, sizeof(mnt), "%s", tmp);
	}
	r = make_file(mnt, state_dir, tmp, rec, &phys, e);
	if (m.mounted) {
		rr = ip_umount(&m, r < 0 ? NULL : e);
		rmdir(tmp);
		if (r == 0 && rr < 0)
			return rr;
	}
	if (r < 0)
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
	if (mount(dev, dir, "ext2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
	    mount(dev, dir, "ext4", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
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
