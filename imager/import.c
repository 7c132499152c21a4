/* import.c — images from elsewhere: a raw partition image, plain or
 * .gz/.xz/.zst compressed (libarchive's raw reader and its filters), and a
 * directory tree turned into an ext2/3/4 filesystem with mke2fs -d.  Both
 * end in a file holding one filesystem, captured like a partition. */
#include <archive.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "imager/imager_int.h"

/* Capture the whole of file (one filesystem) into out. */
static int capture_file(const char *file, const char *out, const struct imager_capture_opts *o,
			struct imager_capture_result *res, bool *warn_all, ip_error *e)
{
	ip_disk *d = NULL;
	partctl_usedmap *map = NULL;
	struct partctl_fsinfo fi;
	struct imager_capture_opts oo = *o;
	int r;

	r = ip_disk_open(file, IP_DISK_RDONLY, &d, e);
	if (r < 0)
		return r;
	r = partctl_fs_probe(d, 0, ip_disk_size(d), &fi, e);
	if (r >= 0)
		r = partctl_fs_usedmap(d, 0, ip_disk_size(d), &map, e);
	if (r >= 0) {
		*warn_all = !map->exact;
		if (!oo.fs_type)
			oo.fs_type = fi.type;
		r = imager_capture(d, 0, ip_disk_size(d), map, out, &oo, res, e);
	}
	partctl_usedmap_free(map);
	ip_disk_free(d);
	return r;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);

	return a >= b && !strcmp(s + a - b, suf);
}

/* Decompress src into the file dst, leaving holes where the data is zero
 * (a raw image is mostly empty space). */
static int decompress_to(const char *src, const char *dst, imager_cancel_flag *cancel, ip_error *e)
{
	struct archive *a = archive_read_new();
	struct archive_entry *ent;
	_cleanup_close_ int fd = -1;
	static uint8_t zero[65536];
	uint64_t pos = 0;
	int r = 0;

	if (!a)
		return ip_fail(e, -ENOMEM, "out of memory");
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	if (archive_read_open_filename(a, src, 1 << 20) != ARCHIVE_OK) {
		r = ip_bad(e, -EINVAL, "cannot read %s: %s", src, archive_error_string(a));
		goto out;
	}
	if (archive_read_next_header(a, &ent) != ARCHIVE_OK) {
		r = ip_bad(e, -EINVAL, "cannot read %s: %s", src, archive_error_string(a));
		goto out;
	}
	fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = ip_fail(e, -errno, "cannot create %s: %s", dst, strerror(errno));
		goto out;
	}
	for (;;) {
		const void *buf;
		size_t len;
		int64_t off;
		int k = archive_read_data_block(a, &buf, &len, &off);

		if (k == ARCHIVE_EOF)
			break;
		if (k != ARCHIVE_OK) {
			r = ip_bad(e, -EINVAL, "%s is damaged: %s", src, archive_error_string(a));
			goto out;
		}
		if (cancel && *cancel) {
			r = ip_fail(e, -EINTR, "interrupted");
			goto out;
		}
		/* write in 64 KiB pieces, skipping the all-zero ones */
		for (size_t p = 0; p < len;) {
			size_t n = len - p < sizeof(zero) ? len - p : sizeof(zero);

			if (memcmp((const uint8_t *)buf + p, zero, n) &&
			    pwrite(fd, (const uint8_t *)buf + p, n, (off_t)(pos + p)) != (ssize_t)n) {
				r = ip_fail(e, -errno, "cannot write %s: %s", dst, strerror(errno));
				goto out;
			}
			p += n;
		}
		pos += len;
	}
	if (ftruncate(fd, (off_t)pos) < 0) {
		r = ip_fail(e, -errno, "cannot write %s: %s", dst, strerror(errno));
		goto out;
	}
	if (pos == 0)
		r = ip_bad(e, -EINVAL, "%s is empty: give a raw partition image", src);
out:
	archive_read_free(a);
	return r;
}

int imager_import(const char *raw, const char *out, const struct imager_capture_opts *o,
		  struct imager_capture_result *res, bool *warn_all, ip_error *e)
{
	_cleanup_free_ char *tmp = NULL;
	struct stat sb;
	int r;

	if (stat(raw, &sb) < 0)
		return ip_bad(e, -errno, "cannot open %s: %s", raw, strerror(errno));
	if (!S_ISREG(sb.st_mode) && !S_ISBLK(sb.st_mode))
		return ip_bad(e, -EINVAL, "%s is not a file: give a raw partition image", raw);
	/* before decompressing: -o RAW would replace the input */
	r = ip_check_distinct(out, raw, e);
	if (r < 0)
		return r;
	if (!has_suffix(raw, ".gz") && !has_suffix(raw, ".xz") && !has_suffix(raw, ".zst") &&
	    !has_suffix(raw, ".bz2"))
		return capture_file(raw, out, o, res, warn_all, e);
	/* the temporary raw file lives next to the output: same filesystem */
	if (asprintf(&tmp, "%s.raw-%d", out, (int)getpid()) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	r = decompress_to(raw, tmp, o->cancel, e);
	if (r >= 0)
		r = capture_file(tmp, out, o, res, warn_all, e);
	unlink(tmp);
	return r;
}

int imager_build(const char *rootfs, const char *fs, uint64_t size, const char *out,
		 const struct imager_capture_opts *o, struct imager_capture_result *res, ip_error *e)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	char kib[32];
	bool warn_all;
	struct stat sb;
	int r;

	if (strcmp(fs, "ext2") && strcmp(fs, "ext3") && strcmp(fs, "ext4"))
		return ip_bad(e, -EINVAL, "cannot build a %s image from a directory: use --fs ext4 (or ext2, ext3)", fs);
	if (stat(rootfs, &sb) < 0 || !S_ISDIR(sb.st_mode))
		return ip_bad(e, -ENOTDIR, "%s is not a directory: give the root of the tree (a debootstrap target or an unpacked rootfs)", rootfs);
	if (size < (8u << 20))
		return ip_bad(e, -EINVAL, "--size must be at least 8 MiB");
	/* an output inside the tree would be read into the filesystem */
	r = ip_check_distinct(out, rootfs, e);
	if (r < 0)
		return r;
	if (asprintf(&tmp, "%s.fs-%d", out, (int)getpid()) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return ip_fail(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
	if (ftruncate(fd, (off_t)size) < 0) {
		r = ip_fail(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	snprintf(kib, sizeof(kib), "%lluk", (unsigned long long)(size / 1024));
	{
		const char *argv[] = { "mke2fs", "-q", "-F", "-t", fs, "-d", rootfs, tmp, kib, NULL };

		r = ip_spawn(argv, NULL, e);
		if (r < 0) {
			/* mke2fs fails on the input (a tree too large, unreadable
			 * files): nothing was made, bad input */
			e->status = IP_EXIT_BADINPUT;
			ip_error_prefix(e, "cannot build the filesystem (is --size large enough for %s?)", rootfs);
			goto out;
		}
	}
	{
		struct imager_capture_opts oo = *o;

		oo.fs_type = fs;
		r = capture_file(tmp, out, &oo, res, &warn_all, e);
	}
out:
	unlink(tmp);
	return r;
}
