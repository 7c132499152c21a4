/* part.c — where the imager meets partitions: find partition n, refuse a
 * read-write mount, and ask partctl which blocks the filesystem uses (the
 * imager never reads bitmaps itself). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "imager/imager_int.h"

/* Is the block device dev mounted read-write somewhere?  (A read-only
 * mount is fine for capture: nothing changes under us.) */
static int mounted_rw(dev_t dev, char *where, size_t len)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned ma, mi;
		char mnt[2048], opts[512];

		if (sscanf(line, "%*u %*u %u:%u %*s %2047s %511s", &ma, &mi, mnt, opts) != 4)
			continue;
		if (makedev(ma, mi) != dev)
			continue;
		if (!strncmp(opts, "rw", 2) && (opts[2] == ',' || opts[2] == '\0')) {
			snprintf(where, len, "%s", mnt);
			return 1;
		}
	}
	return 0;
}

int imager_part_check_capture(const char *disk, unsigned n, ip_error *e)
{
	char node[256], where[2048];
	struct stat sb;
	int r;

	if (stat(disk, &sb) < 0)
		return ip_bad(e, -errno, "cannot open %s: %s", disk, strerror(errno));
	if (!S_ISBLK(sb.st_mode)) {
		/* An image file: a mount through a loop device of any part of
		 * the partition's range is refused, other partitions may be in use. */
		uint64_t off, size;

		r = partctl_part_range(disk, n, &off, &size, e);
		return r < 0 ? r : ip_check_range_unmounted(disk, off, size, e);
	}
	if (ip_partition_node(disk, n, node, sizeof(node)) < 0 || stat(node, &sb) < 0)
		return 0; /* no node: the kernel cannot have it mounted */
	r = mounted_rw(sb.st_rdev, where, sizeof(where));
	if (r < 0)
		return ip_fail(e, r, "cannot read /proc/self/mountinfo: %s", strerror(-r));
	if (r > 0)
		return ip_bad(e, -EBUSY, "%s is mounted read-write on %s: unmount it or remount it read-only (mount -o remount,ro %s) first",
			      node, where, where);
	return 0;
}

/* Every byte of the partition, as one extent. */
static int whole_map(uint64_t size, partctl_usedmap **out, ip_error *e)
{
	partctl_usedmap *m = calloc(1, sizeof(*m));

	if (m)
		m->ext = calloc(1, sizeof(*m->ext));
	if (!m || !m->ext) {
		partctl_usedmap_free(m);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	m->block_size = 512;
	m->size = m->used = size;
	m->n = 1;
	m->ext[0] = (partctl_extent){ .off = 0, .len = size };
	m->exact = false;
	*out = m;
	return 0;
}

int imager_capture_part(const char *disk, unsigned n, const char *out,
			const struct imager_capture_opts *o, struct imager_capture_result *res,
			bool *warn_all, ip_error *e)
{
	uint64_t off, size;
	ip_disk *d = NULL;
	partctl_usedmap *map = NULL;
	struct partctl_fsinfo fi;
	struct imager_capture_opts oo = *o;
	int r;

	*warn_all = false;
	r = partctl_part_range(disk, n, &off, &size, e);
	if (r < 0)
		return r;
	r = imager_part_check_capture(disk, n, e);
	if (r < 0)
		return r;
	r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e);
	if (r < 0)
		return r;
	r = partctl_fs_probe(d, off, size, &fi, e);
	if (r < 0)
		goto out;
	/* a map clipped to the partition would be an image that loses data */
	r = partctl_fs_check_fits(&fi, size, disk, n, e);
	if (r < 0)
		goto out;
	if (o->raw) {
		r = whole_map(size, &map, e);
		if (r < 0)
			goto out;
	} else {
		/* a damaged bitmap would silently drop blocks in use */
		r = partctl_fs_check_clean(d, off, &fi, disk, n, e);
		if (r < 0)
			goto out;
		r = partctl_fs_usedmap(d, off, size, &map, e);
		if (r < 0)
			goto out;
		*warn_all = !map->exact;
	}
	if (!oo.fs_type)
		oo.fs_type = fi.type;
	r = imager_capture(d, off, size, map, out, &oo, res, e);
out:
	partctl_usedmap_free(map);
	ip_disk_free(d);
	return r;
}
