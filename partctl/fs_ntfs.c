/* fs_ntfs.c — NTFS through libntfs-3g.  The volume is read through our own
 * device operations (pread at the partition's offset on the disk's fd), so
 * a partition inside an image file needs no loop device; only the minimum
 * size, which only ntfsresize knows, goes through a read-only loop. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <ntfs-3g/types.h>
#include <ntfs-3g/attrib.h>
#include <ntfs-3g/device.h>
#include <ntfs-3g/logging.h>
#include <ntfs-3g/volume.h>

#include "partctl/internal.h"

/* The partition as libntfs-3g sees it: a window [off, off+size) of fd. */
struct ntfs_win {
	int fd;
	uint64_t off;
	uint64_t size;
	int64_t pos;
};

static int win_open(struct ntfs_device *dev, int flags)
{
	if ((flags & O_ACCMODE) != O_RDONLY) {
		errno = EROFS;
		return -1;
	}
	NDevSetOpen(dev);
	NDevSetReadOnly(dev);
	return 0;
}

static int win_close(struct ntfs_device *dev)
{
	NDevClearOpen(dev);
	return 0;
}

static s64 win_pread(struct ntfs_device *dev, void *buf, s64 count, s64 offset)
{
	struct ntfs_win *w = dev->d_private;
	s64 done = 0;

	if (offset < 0 || count < 0) {
		errno = EINVAL;
		return -1;
	}
	if ((uint64_t)offset >= w->size)
		return 0;
	if ((uint64_t)count > w->size - (uint64_t)offset)
		count = (s64)(w->size - (uint64_t)offset);
	while (done < count) {
		ssize_t n = pread(w->fd, (char *)buf + done, (size_t)(count - done),
				  (off_t)(w->off + (uint64_t)offset + (uint64_t)done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return done ? done : -1;
		}
		if (n == 0)
			break;
		done += n;
	}
	return done;
}

static s64 win_seek(struct ntfs_device *dev, s64 offset, int whence)
{
	struct ntfs_win *w = dev->d_private;
	s64 base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? w->pos : (s64)w->size;

	if (base + offset < 0) {
		errno = EINVAL;
		return -1;
	}
	w->pos = base + offset;
	return w->pos;
}

static s64 win_read(struct ntfs_device *dev, void *buf, s64 count)
{
	struct ntfs_win *w = dev->d_private;
	s64 n = win_pread(dev, buf, count, w->pos);

	if (n > 0)
		w->pos += n;
	return n;
}

static s64 win_write(struct ntfs_device *dev, const void *buf, s64 count)
{
	(void)dev, (void)buf, (void)count;
	errno = EROFS;
	return -1;
}

static s64 win_pwrite(struct ntfs_device *dev, const void *buf, s64 count, s64 offset)
{
	(void)dev, (void)buf, (void)count, (void)offset;
	errno = EROFS;
	return -1;
}

static int win_sync(struct ntfs_device *dev)
{
	(void)dev;
	return 0;
}

static int win_stat(struct ntfs_device *dev, struct stat *st)
{
	struct ntfs_win *w = dev->d_private;

	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | 0400;
	st->st_size = (off_t)w->size;
	return 0;
}

static int win_ioctl(struct ntfs_device *dev, unsigned long request, void *argp)
{
	(void)dev, (void)request, (void)argp;
	errno = ENOTTY;
	return -1;
}

static struct ntfs_device_operations win_ops = {
	.open = win_open,
	.close = win_close,
	.seek = win_seek,
	.read = win_read,
	.write = win_write,
	.pread = win_pread,
	.pwrite = win_pwrite,
	.sync = win_sync,
	.stat = win_stat,
	.ioctl = win_ioctl,
};

static int ntfs_open_ro(ip_disk *d, uint64_t off, uint64_t size, struct ntfs_win *w,
			ntfs_volume **vol, ip_error *e)
{
	struct ntfs_device *dev;
	char name[64];

	/* The library must not print: errors come back through ip_error. */
	ntfs_log_set_handler(ntfs_log_handler_null);
	*w = (struct ntfs_win){ .fd = ip_disk_fd(d), .off = off, .size = size };
	snprintf(name, sizeof(name), "%s@%llu", "ntfs", (unsigned long long)off);
	dev = ntfs_device_alloc(name, 0, &win_ops, w);
	if (!dev)
		return ip_fail(e, -ENOMEM, "out of memory opening NTFS");
	*vol = ntfs_device_mount(dev, NTFS_MNT_RDONLY);
	if (!*vol) {
		int err = errno ? errno : EIO;

		ntfs_device_free(dev);
		return ip_fail(e, -err,
			       "cannot read the NTFS filesystem at offset %llu of %s (%s): run chkdsk /f on it in Windows, or ntfsfix",
			       (unsigned long long)off, ip_disk_path(d), strerror(err));
	}
	return 0;
}

/* Sectors the boot sector says the volume has (the backup boot sector sits
 * in the sector right after them), and the sector size. */
static int ntfs_boot_geometry(ip_disk *d, uint64_t off, uint64_t *nsect, unsigned *ssz,
			      ip_error *e)
{
	uint8_t bs[512];
	int r = ip_disk_read(d, bs, sizeof(bs), off, e);

	if (r < 0)
		return r;
	*ssz = (unsigned)bs[11] | (unsigned)bs[12] << 8;
	*nsect = 0;
	for (int i = 7; i >= 0; i--)
		*nsect = *nsect << 8 | bs[0x28 + i];
	return 0;
}

/* Walk the cluster bitmap, adding used runs to b (when not NULL) and
 * counting used clusters. */
static int ntfs_scan_bitmap(ntfs_volume *vol, struct partctl_map_builder *b, uint64_t *used,
			    ip_error *e)
{
	enum { CHUNK = 64 * 1024 };
	_cleanup_free_ uint8_t *buf = malloc(CHUNK);
	uint64_t cs = vol->cluster_size, nclu = (uint64_t)vol->nr_clusters;
	uint64_t lcn = 0, run = 0, count = 0;
	bool in = false;
	int r;

	if (!buf)
		return ip_fail(e, -ENOMEM, "out of memory reading the NTFS bitmap");
	for (uint64_t pos = 0; lcn < nclu; pos += CHUNK) {
		s64 n = ntfs_attr_pread(vol->lcnbmp_na, (s64)pos, CHUNK, buf);

		if (n <= 0)
			return ip_fail(e, -EIO, "cannot read the NTFS cluster bitmap ($Bitmap): run chkdsk /f on it");
		for (s64 i = 0; i < n && lcn < nclu; i++) {
			uint8_t byte = buf[i];

			/* Whole bytes at once when they continue the current run. */
			if (lcn + 8 <= nclu && ((byte == 0xff && in) || (byte == 0 && !in))) {
				if (in)
					count += 8;
				lcn += 8;
				continue;
			}
			for (int bit = 0; bit < 8 && lcn < nclu; bit++, lcn++) {
				bool set = byte >> bit & 1;

				if (set)
					count++;
				if (set && !in) {
					run = lcn;
					in = true;
				} else if (!set && in) {
					in = false;
					if (b && (r = partctl_map_add(b, run * cs, (lcn - run) * cs)) < 0)
						return ip_fail(e, r, "out of memory building the used-block map");
				}
			}
		}
	}
	if (in && b && (r = partctl_map_add(b, run * cs, (lcn - run) * cs)) < 0)
		return ip_fail(e, r, "out of memory building the used-block map");
	*used = count * cs;
	return 0;
}

int partctl_ntfs_info(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *fi,
		      ip_error *e)
{
	struct ntfs_win w;
	ntfs_volume *vol;
	uint64_t nsect = 0, used = 0;
	unsigned ssz = 512;
	int r;

	r = ntfs_open_ro(d, off, size, &w, &vol, e);
	if (r < 0)
		return r;
	fi->block_size = vol->cluster_size;
	r = ntfs_scan_bitmap(vol, NULL, &used, e);
	ntfs_umount(vol, FALSE);
	if (r < 0)
		return r;
	fi->used = used;
	/* What a partition must hold: the volume plus its backup boot sector. */
	if (ntfs_boot_geometry(d, off, &nsect, &ssz, NULL) == 0 && ssz)
		fi->size = (nsect + 1) * ssz;
	return 0;
}

int partctl_ntfs_usedmap(ip_disk *d, uint64_t off, uint64_t size, partctl_usedmap **out,
			 ip_error *e)
{
	struct partctl_map_builder b = { 0 };
	struct ntfs_win w;
	ntfs_volume *vol;
	uint64_t nsect, used;
	unsigned ssz;
	int r;

	*out = NULL;
	r = ntfs_boot_geometry(d, off, &nsect, &ssz, e);
	if (r < 0)
		return r;
	r = ntfs_open_ro(d, off, size, &w, &vol, e);
	if (r < 0)
		return r;
	r = partctl_map_begin(&b, size, vol->cluster_size);
	if (r < 0) {
		ntfs_umount(vol, FALSE);
		return ip_fail(e, r, "out of memory building the used-block map");
	}
	r = ntfs_scan_bitmap(vol, &b, &used, e);
	ntfs_umount(vol, FALSE);
	/* The backup boot sector follows the last cluster and is in no
	 * bitmap; a copy of the volume without it fails ntfsfix and chkdsk.
	 * This one extent is sector-, not cluster-sized. */
	if (r == 0 && ssz && (r = partctl_map_add(&b, nsect * ssz, ssz)) < 0)
		r = ip_fail(e, r, "out of memory building the used-block map");
	if (r < 0) {
		partctl_map_abort(&b);
		return r;
	}
	*out = partctl_map_end(&b);
	return 0;
}

int partctl_ntfs_min_size(ip_disk *d, uint64_t off, uint64_t size, uint64_t *min,
			  ip_error *e)
{
	_cleanup_free_ char *out = NULL;
	char loop[64];
	const char *p;
	unsigned long long bytes;
	ip_error e2 = { 0 };
	int r;

	*min = 0;
	r = ip_loop_attach(ip_disk_path(d), off, size, true, loop, sizeof(loop), e);
	if (r < 0)
		return r;
	const char *argv[] = { "ntfsresize", "--info", "--force", "--no-progress-bar", loop, NULL };
	r = ip_spawn(argv, &out, e);
	ip_loop_detach(loop, &e2);
	if (r < 0)
		return r;
	p = out ? strstr(out, "You might resize at ") : NULL;
	if (!p || sscanf(p + strlen("You might resize at "), "%llu", &bytes) != 1)
		return ip_fail(e, -EIO, "ntfsresize --info printed no minimum size for offset %llu of %s",
			       (unsigned long long)off, ip_disk_path(d));
	/* ntfsresize keeps one sector of the size it is given for the backup
	 * boot sector; the partition must hold both. */
	*min = bytes + 512;
	return 0;
}
