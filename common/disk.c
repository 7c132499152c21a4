/* disk.c — the disk handle: a block device or a disk-image file, opened
 * carefully (O_CLOEXEC; O_EXCL and a mount check before writing). */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "common/common.h"

struct ip_disk {
	char *path;
	int fd;
	int log_fd;        /* INPLACE_IOLOG, or -1 */
	uint64_t size;
	uint64_t wr_off, wr_len;  /* writes allowed only here (ip_disk_open_range) */
	unsigned sector_size;
	bool blockdev;
	bool writable;
};

static int disk_open(const char *path, unsigned flags, uint64_t wr_off, uint64_t wr_len,
		     ip_disk **out, ip_error *e)
{
	bool whole = wr_off == 0 && wr_len == UINT64_MAX;
	ip_disk *d;
	struct stat st;
	int oflags = O_CLOEXEC | ((flags & IP_DISK_RDWR) ? O_RDWR : O_RDONLY);
	int r;

	*out = NULL;
	if (stat(path, &st) < 0)
		return ip_bad(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return ip_bad(e, -ENOTBLK, "%s is not a disk: give a block device or a disk-image file", path);
	if (flags & IP_DISK_RDWR) {
		r = ip_check_range_unmounted(path, wr_off, wr_len, e);
		if (r < 0)
			return r;
		if (S_ISBLK(st.st_mode) && whole)
			oflags |= O_EXCL;
	}
	if (flags & IP_DISK_DIRECT)
		oflags |= O_DIRECT;

	d = calloc(1, sizeof(*d));
	if (!d || !(d->path = strdup(path))) {
		free(d);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	d->log_fd = -1;
	d->wr_off = wr_off;
	d->wr_len = wr_len;
	d->blockdev = S_ISBLK(st.st_mode);
	d->writable = flags & IP_DISK_RDWR;
	d->fd = open(path, oflags);
	if (d->fd < 0) {
		r = -errno;
		ip_disk_free(d);
		if (r == -EBUSY)
			return ip_bad(e, r, "%s is in use by another program or a mounted filesystem: stop it first", path);
		return ip_fail(e, r, "cannot open %s: %s", path, strerror(-r));
	}
	if (d->blockdev) {
		int ssz = 512;

		/* A disk and its partitions are separate block devices, each
		 * with its own page cache: what deploy wrote through /dev/vda1
		 * is not seen through /dev/vda while that node's cache (kept
		 * alive by any other holder, a loop device over the disk) still
		 * has the old blocks.  Drop this node's clean cache so what we
		 * read is what is on the disk (BLKFLSBUF writes dirty pages back
		 * first and keeps pages in use). */
		(void)ioctl(d->fd, BLKFLSBUF, 0);

		if (ioctl(d->fd, BLKGETSIZE64, &d->size) < 0) {
			r = -errno;
			ip_disk_free(d);
			return ip_fail(e, r, "cannot read the size of %s: %s", path, strerror(-r));
		}
		if (ioctl(d->fd, BLKSSZGET, &ssz) == 0 && ssz > 0)
			d->sector_size = (unsigned)ssz;
		else
			d->sector_size = 512;
	} else {
		d->size = (uint64_t)st.st_size;
		d->sector_size = ip_gpt_sector_size(d->fd) == 4096 ? 4096 : 512;
	}
	if (d->writable) {
		const char *log = getenv("INPLACE_IOLOG");

		if (log && *log) {
			struct stat ls;

			d->log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			if (d->log_fd < 0) {
				r = -errno;
				ip_disk_free(d);
				return ip_fail(e, r, "cannot open the I/O log %s: %s", log, strerror(-r));
			}
			if (fstat(d->log_fd, &ls) == 0 && ls.st_size == 0)
				(void)ip_write_all(d->log_fd, IP_IOLOG_MAGIC, 8);
		}
	}
	*out = d;
	return 0;
}

int ip_disk_open(const char *path, unsigned flags, ip_disk **out, ip_error *e)
{
	return disk_open(path, flags, 0, UINT64_MAX, out, e);
}

int ip_disk_open_range(const char *path, unsigned flags, uint64_t off, uint64_t len,
		       ip_disk **out, ip_error *e)
{
	return disk_open(path, flags, off, len, out, e);
}

void ip_disk_free(ip_disk *d)
{
	if (!d)
		return;
	if (d->fd >= 0)
		close(d->fd);
	if (d->log_fd >= 0)
		close(d->log_fd);
	free(d->path);
	free(d);
}

const char *ip_disk_path(const ip_disk *d) { return d->path; }
int ip_disk_fd(const ip_disk *d) { return d->fd; }
uint64_t ip_disk_size(const ip_disk *d) { return d->size; }
unsigned ip_disk_sector_size(const ip_disk *d) { return d->sector_size; }

unsigned ip_gpt_sector_size(int fd)
{
	static const unsigned sizes[] = { 512, 4096 };
	char sig[8];

	for (size_t i = 0; i < IP_ARRAY_SIZE(sizes); i++)
		if (pread(fd, sig, sizeof(sig), sizes[i]) == (ssize_t)sizeof(sig) && !memcmp(sig, "EFI PART", 8))
			return sizes[i];
	return 0;
}
bool ip_disk_is_blockdev(const ip_disk *d) { return d->blockdev; }
bool ip_disk_writable(const ip_disk *d) { return d->writable; }

int ip_disk_read(ip_disk *d, void *buf, size_t len, uint64_t off, ip_error *e)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(d->fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ip_fail(e, -errno, "cannot read %s at byte %llu: %s", d->path,
				       (unsigned long long)off, strerror(errno));
		}
		if (n == 0)
			return ip_fail(e, -EIO, "cannot read %s at byte %llu: past the end of the disk",
				       d->path, (unsigned long long)off);
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int log_record(ip_disk *d, uint32_t type, uint64_t off, const void *buf, uint64_t len)
{
	struct ip_iolog_rec rec = { .type = type, .pid = (uint32_t)getpid(), .off = off, .len = len };
	int r;

	r = ip_write_all(d->log_fd, &rec, sizeof(rec));
	if (r == 0 && len)
		r = ip_write_all(d->log_fd, buf, (size_t)len);
	return r;
}

int ip_disk_write(ip_disk *d, const void *buf, size_t len, uint64_t off, ip_error *e)
{
	const char *p = buf;
	uint64_t o = off;
	size_t left = len;

	if (!d->writable)
		return ip_fail(e, -EBADF, "internal error: %s was opened read-only", d->path);
	if (off < d->wr_off || len > d->wr_len || off - d->wr_off > d->wr_len - len)
		return ip_fail(e, -EPERM, "internal error: write to %s at byte %llu is outside the range opened for writing",
			       d->path, (unsigned long long)off);
	if (off + len > d->size && d->blockdev)
		return ip_fail(e, -ENOSPC, "cannot write %s at byte %llu: past the end of the disk",
			       d->path, (unsigned long long)off);
	while (left) {
		ssize_t n = pwrite(d->fd, p, left, (off_t)o);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ip_fail(e, -errno, "cannot write %s at byte %llu: %s", d->path,
				       (unsigned long long)o, strerror(errno));
		}
		p += n;
		o += (uint64_t)n;
		left -= (size_t)n;
	}
	if (d->log_fd >= 0 && log_record(d, IP_IOLOG_WRITE, off, buf, len) < 0)
		return ip_fail(e, -EIO, "cannot append to the I/O log");
	return 0;
}

int ip_disk_flush(ip_disk *d, ip_error *e)
{
	if (fdatasync(d->fd) < 0)
		return ip_fail(e, -errno, "cannot flush %s: %s", d->path, strerror(errno));
	if (d->log_fd >= 0 && log_record(d, IP_IOLOG_FLUSH, 0, NULL, 0) < 0)
		return ip_fail(e, -EIO, "cannot append to the I/O log");
	return 0;
}

int ip_disk_log_external(ip_disk *d, uint64_t off, uint64_t len, ip_error *e)
{
	_cleanup_free_ char *buf = NULL;
	int r;

	if (d->log_fd < 0)
		return 0;
	buf = malloc(len ? len : 1);
	if (!buf)
		return ip_fail(e, -ENOMEM, "out of memory");
	r = ip_disk_read(d, buf, len, off, e);
	if (r < 0)
		return r;
	if (log_record(d, IP_IOLOG_WRITE, off, buf, len) < 0 ||
	    log_record(d, IP_IOLOG_FLUSH, 0, NULL, 0) < 0)
		return ip_fail(e, -EIO, "cannot append to the I/O log");
	return 0;
}

void ip_disk_drop_cache(ip_disk *d, uint64_t off, uint64_t len)
{
	(void)posix_fadvise(d->fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
}
