/* blockdev.c — what the kernel knows about a disk: mounts and swaps on it,
 * its partition nodes, telling it about a new table (BLKPG, as partx -u),
 * and loop devices that give one partition of an image file to a tool. */
#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <limits.h>
#include <linux/loop.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "common/common.h"

static inline void closedirp_(DIR **d)
{
	if (*d)
		closedir(*d);
}

/* sysfs directory name ("sda", "loop0p1") of a block device number. */
static int sysfs_name(dev_t dev, char *buf, size_t len)
{
	char link[64], target[PATH_MAX];
	ssize_t n;
	const char *slash;

	snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(dev), minor(dev));
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	slash = strrchr(target, '/');
	snprintf(buf, len, "%s", slash ? slash + 1 : target);
	return 0;
}

/* The whole disk a device number belongs to (itself when it is one). */
static dev_t whole_disk(dev_t dev)
{
	char path[128], buf[32];
	unsigned ma, mi;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/partition", major(dev), minor(dev));
	if (access(path, F_OK) != 0)
		return dev;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../dev", major(dev), minor(dev));
	f = fopen(path, "re");
	if (!f)
		return dev;
	if (fgets(buf, sizeof(buf), f) && sscanf(buf, "%u:%u", &ma, &mi) == 2)
		dev = makedev(ma, mi);
	fclose(f);
	return dev;
}

/* A block device that exposes bytes [base, base + len) of the path being
 * checked: the disk itself, or a loop device backed by the image file. */
struct exposer {
	dev_t dev;
	uint64_t base, len;
};

static uint64_t sysfs_u64(dev_t dev, const char *attr)
{
	char path[128], buf[32];
	uint64_t v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%s", major(dev), minor(dev), attr);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f))
		v = strtoull(buf, NULL, 10);
	fclose(f);
	return v;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	uint64_t aend = alen > UINT64_MAX - a ? UINT64_MAX : a + alen;
	uint64_t bend = blen > UINT64_MAX - b ? UINT64_MAX : b + blen;

	return a < bend && b < aend;
}

/* Does block device dev (a disk or a partition) hold any byte of
 * [off, off + len) of the checked path? */
static bool dev_touches(dev_t dev, const struct exposer *x, size_t nx, uint64_t off, uint64_t len)
{
	for (size_t i = 0; i < nx; i++) {
		if (dev == x[i].dev) {
			if (overlaps(x[i].base, x[i].len, off, len))
				return true;
		} else if (whole_disk(dev) == x[i].dev) {
			/* a partition: start and size are in 512-byte units in sysfs */
			uint64_t ps = x[i].base + sysfs_u64(dev, "start") * 512;

			if (overlaps(ps, sysfs_u64(dev, "size") * 512, off, len))
				return true;
		}
	}
	return false;
}

/* Undo the octal escapes of /proc/self/mountinfo (\040 for a space). */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
			*o++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* Find a mount or swap that uses any byte of [off, off + len).  mnt (may
 * be NULL): only mounts of a filesystem's root count, and mnt gets where,
 * *rw whether read-write. */
static int find_use(const struct exposer *x, size_t nx, uint64_t off, uint64_t len,
		    char *what, size_t wlen, char *mnt_out, size_t mlen, bool *rw)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	_cleanup_fclose_ FILE *sw = NULL;
	char line[4096];

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned ma, mi;
		char mnt[2048], src[2048] = "", root[2048], opts[256];
		char *dash;
		struct stat st;
		bool hit;

		if (sscanf(line, "%*u %*u %u:%u %2047s %2047s %255s", &ma, &mi, root, mnt, opts) != 5)
			continue;
		if (mnt_out && strcmp(root, "/"))
			continue;
		dash = strstr(line, " - ");
		if (dash)
			sscanf(dash + 3, "%*s %2047s", src);
		unescape(mnt);
		hit = dev_touches(makedev(ma, mi), x, nx, off, len);
		/* btrfs and friends report an anonymous 0:N; use the source. */
		if (!hit && src[0] == '/' && stat(src, &st) == 0 && S_ISBLK(st.st_mode))
			hit = dev_touches(st.st_rdev, x, nx, off, len);
		if (hit) {
			snprintf(what, wlen, "mounted on %s", mnt);
			if (mnt_out) {
				snprintf(mnt_out, mlen, "%s", mnt);
				*rw = !strncmp(opts, "rw", 2) && (opts[2] == ',' || !opts[2]);
			}
			return 1;
		}
	}
	if (mnt_out)
		return 0;
	sw = fopen("/proc/swaps", "re");
	while (sw && fgets(line, sizeof(line), sw)) {
		char name[2048];
		struct stat st;

		if (sscanf(line, "%2047s", name) != 1 || name[0] != '/')
			continue;
		unescape(name);
		if (stat(name, &st) == 0 && S_ISBLK(st.st_mode) &&
		    dev_touches(st.st_rdev, x, nx, off, len)) {
			snprintf(what, wlen, "in use as swap");
			return 1;
		}
	}
	return 0;
}

/* Loop devices whose backing file is the file with st, with the part of
 * the file each exposes. */
static size_t loops_backed_by(const struct stat *st, struct exposer *x, size_t max)
{
	_cleanup_(closedirp_) DIR *dir = NULL;
	struct dirent *de;
	size_t n = 0;

	dir = opendir("/sys/block");
	if (!dir)
		return 0;
	while ((de = readdir(dir)) && n < max) {
		char node[300];
		struct loop_info64 li;
		struct stat ls;
		int fd;

		if (strncmp(de->d_name, "loop", 4))
			continue;
		snprintf(node, sizeof(node), "/dev/%s", de->d_name);
		fd = open(node, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (ioctl(fd, LOOP_GET_STATUS64, &li) == 0 && li.lo_inode == st->st_ino &&
		    li.lo_device == st->st_dev && fstat(fd, &ls) == 0)
			x[n++] = (struct exposer){ ls.st_rdev, li.lo_offset,
						   li.lo_sizelimit ? li.lo_sizelimit : UINT64_MAX };
		close(fd);
	}
	return n;
}

/* The devices that expose path: itself (a block device) or the loop
 * devices over it (an image file).  -errno when path cannot be found. */
static int exposers(const char *path, struct exposer *x, size_t max, size_t *n)
{
	struct stat st;

	*n = 0;
	if (stat(path, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode))
		x[(*n)++] = (struct exposer){ st.st_rdev, 0, UINT64_MAX };
	else if (S_ISREG(st.st_mode))
		*n = loops_backed_by(&st, x, max);
	return 0;
}

int ip_check_range_unmounted(const char *path, uint64_t off, uint64_t len, ip_error *e)
{
	struct exposer x[64];
	size_t n = 0;
	char what[2100];
	int r;

	r = exposers(path, x, IP_ARRAY_SIZE(x), &n);
	if (r < 0)
		return ip_bad(e, r, "cannot open %s: %s", path, strerror(-r));
	if (!n)
		return 0;
	r = find_use(x, n, off, len, what, sizeof(what), NULL, 0, NULL);
	if (r < 0)
		return ip_fail(e, r, "cannot read /proc/self/mountinfo: %s", strerror(-r));
	if (r > 0) {
		if (off == 0 && len == UINT64_MAX)
			return ip_bad(e, -EBUSY, "%s is %s: unmount it (or swapoff) first", path, what);
		return ip_bad(e, -EBUSY, "the target range of %s is %s: unmount it (or swapoff) first",
			      path, what);
	}
	return 0;
}

int ip_range_mount(const char *path, uint64_t off, uint64_t len, char *mnt, size_t mlen, bool *rw)
{
	struct exposer x[64];
	size_t n = 0;
	char what[2100];
	int r;

	r = exposers(path, x, IP_ARRAY_SIZE(x), &n);
	if (r < 0 || !n)
		return r;
	return find_use(x, n, off, len, what, sizeof(what), mnt, mlen, rw);
}

int ip_check_unmounted(const char *path, ip_error *e)
{
	return ip_check_range_unmounted(path, 0, UINT64_MAX, e);
}

int ip_partition_node(const char *disk, unsigned n, char *buf, size_t len)
{
	_cleanup_(closedirp_) DIR *dir = NULL;
	struct stat st;
	char name[256], sys[300];
	struct dirent *de;
	int r;

	if (stat(disk, &st) < 0)
		return -errno;
	if (!S_ISBLK(st.st_mode))
		return -ENOTBLK;
	r = sysfs_name(st.st_rdev, name, sizeof(name));
	if (r < 0)
		return r;
	snprintf(sys, sizeof(sys), "/sys/block/%s", name);
	dir = opendir(sys);
	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		char p[600], v[32];
		FILE *f;
		unsigned num = 0;

		if (strncmp(de->d_name, name, strlen(name)))
			continue;
		snprintf(p, sizeof(p), "%s/%s/partition", sys, de->d_name);
		f = fopen(p, "re");
		if (!f)
			continue;
		if (fgets(v, sizeof(v), f))
			num = (unsigned)strtoul(v, NULL, 10);
		fclose(f);
		if (num == n) {
			snprintf(buf, len, "/dev/%s", de->d_name);
			return 0;
		}
	}
	return -ENOENT;
}

struct kpart {
	unsigned n;
	uint64_t start, size; /* bytes */
};

/* The kernel's current view of the partitions of disk `name`. */
static size_t kernel_parts(const char *name, struct kpart *out, size_t max)
{
	_cleanup_(closedirp_) DIR *dir = NULL;
	char sys[300];
	struct dirent *de;
	size_t k = 0;

	snprintf(sys, sizeof(sys), "/sys/block/%s", name);
	dir = opendir(sys);
	if (!dir)
		return 0;
	while ((de = readdir(dir)) && k < max) {
		unsigned long long v[3];
		const char *files[3] = { "partition", "start", "size" };
		bool ok = true;

		if (strncmp(de->d_name, name, strlen(name)))
			continue;
		for (int i = 0; i < 3 && ok; i++) {
			char p[600], s[64];
			FILE *f;

			snprintf(p, sizeof(p), "%s/%s/%s", sys, de->d_name, files[i]);
			f = fopen(p, "re");
			ok = f && fgets(s, sizeof(s), f);
			if (ok)
				v[i] = strtoull(s, NULL, 10);
			if (f)
				fclose(f);
		}
		if (ok)
			out[k++] = (struct kpart){ (unsigned)v[0], v[1] * 512, v[2] * 512 };
	}
	return k;
}

static int blkpg(int fd, int op, unsigned n, uint64_t start, uint64_t size)
{
	struct blkpg_partition p = { .start = (long long)start, .length = (long long)size, .pno = (int)n };
	struct blkpg_ioctl_arg a = { .op = op, .datalen = sizeof(p), .data = &p };
	int r = 0;

	/* a partition being deleted may be held for a moment by udev's probe
	 * of the change our write caused: EBUSY, retried for up to 2 s (as
	 * parted does) */
	for (int i = 0; i < 20; i++) {
		r = ioctl(fd, BLKPG, &a) < 0 ? -errno : 0;
		if (r != -EBUSY || op != BLKPG_DEL_PARTITION)
			break;
		usleep(100 * 1000);
	}
	return r;
}

int ip_kernel_sync_partitions(const char *disk, ip_error *e)
{
	struct kpart want[256], have[256];
	size_t nw = 0, nh;
	blkid_probe pr;
	blkid_partlist pl;
	struct stat st;
	char name[256];
	_cleanup_close_ int fd = -1;
	int r, ssz = 512;

	if (stat(disk, &st) < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", disk, strerror(errno));
	if (!S_ISBLK(st.st_mode))
		return 0;
	r = sysfs_name(st.st_rdev, name, sizeof(name));
	if (r < 0)
		return ip_fail(e, r, "cannot find %s in /sys: %s", disk, strerror(-r));
	fd = open(disk, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", disk, strerror(errno));
	ioctl(fd, BLKSSZGET, &ssz);

	pr = blkid_new_probe();
	if (!pr || blkid_probe_set_device(pr, fd, 0, 0) < 0) {
		blkid_free_probe(pr);
		return ip_fail(e, -ENOMEM, "cannot probe %s", disk);
	}
	blkid_probe_enable_superblocks(pr, 0);
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
	if (blkid_do_safeprobe(pr) >= 0 && (pl = blkid_probe_get_partitions(pr))) {
		int cnt = blkid_partlist_numof_partitions(pl);

		for (int i = 0; i < cnt && nw < IP_ARRAY_SIZE(want); i++) {
			blkid_partition par = blkid_partlist_get_partition(pl, i);
			uint64_t start = (uint64_t)blkid_partition_get_start(par) * 512;
			uint64_t size = (uint64_t)blkid_partition_get_size(par) * 512;

			/* The kernel maps only the first sector(s) of an extended
			 * partition, as fs/partitions/msdos.c does. */
			if (blkid_partition_is_extended(par))
				size = ssz > 1024 ? (uint64_t)ssz : 1024;
			want[nw++] = (struct kpart){ (unsigned)blkid_partition_get_partno(par), start, size };
		}
	}
	blkid_free_probe(pr);

	nh = kernel_parts(name, have, IP_ARRAY_SIZE(have));
	/* Delete what changed place or vanished, then resize what only changed
	 * size: a partition grown over one that vanished (the store deleted,
	 * the root grown) overlaps it until it is gone, and the kernel refuses
	 * an overlapping resize with EBUSY. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < nh; i++) {
			const struct kpart *w = NULL;

			for (size_t j = 0; j < nw; j++)
				if (want[j].n == have[i].n)
					w = &want[j];
			if (w && w->start == have[i].start) {
				if (pass == 1 && w->size != have[i].size) {
					r = blkpg(fd, BLKPG_RESIZE_PARTITION, w->n, w->start, w->size);
					if (r < 0)
						return ip_fail(e, r, "cannot tell the kernel partition %u of %s changed size: %s",
							       w->n, disk, strerror(-r));
				}
				continue;
			}
			if (pass == 1)
				continue;
			r = blkpg(fd, BLKPG_DEL_PARTITION, have[i].n, 0, 0);
			if (r < 0)
				return ip_fail(e, r, "cannot remove partition %u of %s from the kernel (%s): is it in use?",
					       have[i].n, disk, strerror(-r));
		}
	}
	/* Add what the kernel does not have now. */
	nh = kernel_parts(name, have, IP_ARRAY_SIZE(have));
	for (size_t j = 0; j < nw; j++) {
		bool present = false;

		for (size_t i = 0; i < nh; i++)
			present |= have[i].n == want[j].n;
		if (present)
			continue;
		r = blkpg(fd, BLKPG_ADD_PARTITION, want[j].n, want[j].start, want[j].size);
		if (r < 0)
			return ip_fail(e, r, "cannot tell the kernel about partition %u of %s: %s",
				       want[j].n, disk, strerror(-r));
	}
	return 0;
}

int ip_loop_attach(const char *path, uint64_t offset, uint64_t size, bool rdonly,
		   char *dev, size_t devlen, ip_error *e)
{
	_cleanup_close_ int ctl = -1, backing = -1;
	int r = 0;

	backing = open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (backing < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", path, strerror(errno));
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return ip_fail(e, -errno, "cannot open /dev/loop-control (%s): loop devices are needed for this step",
			       strerror(errno));
	for (int attempt = 0; attempt < 16; attempt++) {
		struct loop_config cfg = { .fd = (unsigned)backing };
		int nr = ioctl(ctl, LOOP_CTL_GET_FREE), fd;

		if (nr < 0)
			return ip_fail(e, -errno, "no free loop device: %s", strerror(errno));
		snprintf(dev, devlen, "/dev/loop%d", nr);
		fd = open(dev, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		cfg.info.lo_offset = offset;
		cfg.info.lo_sizelimit = size;
		cfg.info.lo_flags = rdonly ? LO_FLAGS_READ_ONLY : 0;
		snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", path);
		r = ioctl(fd, LOOP_CONFIGURE, &cfg) < 0 ? -errno : 0;
		close(fd);
		if (r == 0)
			return 0;
		if (r != -EBUSY)
			break; /* a race with another attach gives EBUSY: retry */
	}
	return ip_fail(e, r, "cannot attach %s to a loop device: %s", path, strerror(-r));
}

int ip_loop_detach(const char *dev, ip_error *e)
{
	_cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", dev, strerror(errno));
	if (ioctl(fd, LOOP_CLR_FD, 0) < 0)
		return ip_fail(e, -errno, "cannot detach %s: %s", dev, strerror(errno));
	return 0;
}
