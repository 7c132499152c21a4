/* fs.c — what is on a partition: type, label and UUID through libblkid, and
 * for the filesystems inplace can resize (ext2/3/4, NTFS) their size, usage,
 * minimum and used-block map, all read at a byte offset of a disk or image
 * file so that no loop device is needed. */
#include <blkid.h>
#include <errno.h>
#include <string.h>

#include "partctl/internal.h"

/* ---- used-map builder ---------------------------------------------------- */

int partctl_map_begin(struct partctl_map_builder *b, uint64_t size, uint64_t block_size)
{
	b->cap = 0;
	b->m = calloc(1, sizeof(*b->m));
	if (!b->m)
		return -ENOMEM;
	b->m->size = size;
	b->m->block_size = block_size;
	b->m->exact = true;
	return 0;
}

int partctl_map_add(struct partctl_map_builder *b, uint64_t off, uint64_t len)
{
	partctl_usedmap *m = b->m;
	partctl_extent *last;

	/* Clip to the partition: a filesystem may claim more than it has. */
	if (off >= m->size || len == 0)
		return 0;
	if (len > m->size - off)
		len = m->size - off;
	last = m->n ? &m->ext[m->n - 1] : NULL;
	if (last && off <= last->off + last->len) {
		if (off + len > last->off + last->len)
			last->len = off + len - last->off;
		return 0;
	}
	if (m->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		partctl_extent *n = realloc(m->ext, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		m->ext = n;
		b->cap = cap;
	}
	m->ext[m->n++] = (partctl_extent){ .off = off, .len = len };
	return 0;
}

partctl_usedmap *partctl_map_end(struct partctl_map_builder *b)
{
	partctl_usedmap *m = TAKE_PTR(b->m);

	m->used = 0;
	for (size_t i = 0; i < m->n; i++)
		m->used += m->ext[i].len;
	return m;
}

void partctl_map_abort(struct partctl_map_builder *b)
{
	partctl_usedmap_free(TAKE_PTR(b->m));
}

void partctl_usedmap_free(partctl_usedmap *m)
{
	if (!m)
		return;
	free(m->ext);
	free(m);
}

/* ---- probing ------------------------------------------------------------- */

static int check_range(ip_disk *d, uint64_t off, uint64_t size, ip_error *e)
{
	if (size == 0 || off > ip_disk_size(d) || size > ip_disk_size(d) - off)
		return ip_bad(e, -EINVAL, "range %llu+%llu lies outside %s (%llu bytes): check the partition table",
			      (unsigned long long)off, (unsigned long long)size, ip_disk_path(d),
			      (unsigned long long)ip_disk_size(d));
	return 0;
}

static void copy_tag(blkid_probe pr, const char *name, char *dst, size_t len)
{
	const char *v = NULL;

	if (blkid_probe_lookup_value(pr, name, &v, NULL) == 0 && v)
		snprintf(dst, len, "%s", v);
}

/* Type, label and UUID only. */
static int probe_type(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *out,
		      ip_error *e)
{
	blkid_probe pr;
	int r;

	memset(out, 0, sizeof(*out));
	r = check_range(d, off, size, e);
	if (r < 0)
		return r;
	pr = blkid_new_probe();
	if (!pr)
		return ip_fail(e, -ENOMEM, "out of memory probing %s", ip_disk_path(d));
	if (blkid_probe_set_device(pr, ip_disk_fd(d), (blkid_loff_t)off, (blkid_loff_t)size) < 0) {
		blkid_free_probe(pr);
		return ip_fail(e, -EIO, "cannot probe %s at offset %llu: check that it is readable",
			       ip_disk_path(d), (unsigned long long)off);
	}
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID);
	blkid_probe_enable_partitions(pr, 0);
	r = blkid_do_safeprobe(pr);
	if (r == 0) {
		copy_tag(pr, "TYPE", out->type, sizeof(out->type));
		copy_tag(pr, "LABEL", out->label, sizeof(out->label));
		copy_tag(pr, "UUID", out->uuid, sizeof(out->uuid));
	} else if (r == -2) {
		/* Two signatures (a stale one under a new fs): report none
		 * rather than guess; the user wipes the stale one. */
		out->type[0] = '\0';
	}
	blkid_free_probe(pr);
	if (r == -1)
		return ip_fail(e, -EIO, "cannot probe %s at offset %llu: read error", ip_disk_path(d),
			       (unsigned long long)off);
	return 0;
}

/* Keep the first reason a number is unknown. */
static void set_unknown(struct partctl_fsinfo *fi, const char *why)
{
	if (!fi->unknown[0])
		snprintf(fi->unknown, sizeof(fi->unknown), "%s", why && *why ? why : "unreadable");
}

int partctl_fs_probe(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *out,
		     ip_error *e)
{
	ip_error why = { 0 };
	int r = probe_type(d, off, size, out, e);

	if (r < 0)
		return r;
	/* Size, usage and minimum are best effort: a damaged filesystem still
	 * reports its type, with the numbers unknown (and why), never 0. */
	if (partctl_is_ext(out->type)) {
		out->resizable = true;
		if (partctl_ext_info(d, off, size, out, &why) == 0) {
			out->used_known = true;
			partctl_ext_min_size(d, off, out->block_size, &out->min_estimate, &why);
			/* A layout the count does not know keeps the estimate. */
			if (partctl_ext_min(d, off, &out->min_size, NULL, NULL) < 0)
				out->min_size = out->min_estimate;
			out->min_known = out->min_size > 0;
			if (!out->min_known)
				set_unknown(out, why.msg);
		} else {
			set_unknown(out, why.msg);
		}
	} else if (!strcmp(out->type, "ntfs")) {
		out->resizable = true;
		if (partctl_ntfs_info(d, off, size, out, &why) == 0) {
			out->used_known = true;
			if (partctl_ntfs_min_size(d, off, size, &out->min_size, &why) == 0 && out->min_size)
				out->min_known = true;
			else
				set_unknown(out, why.msg);
			out->min_estimate = out->min_size;
		} else {
			set_unknown(out, why.msg);
		}
	} else if (out->type[0]) {
		snprintf(out->unknown, sizeof(out->unknown), "inplace reads the usage of ext2/3/4 and NTFS only");
	}
	return 0;
}

int partctl_fs_check_clean(ip_disk *d, uint64_t off, const struct partctl_fsinfo *fi, const char *disk,
			   unsigned n, ip_error *e)
{
	_cleanup_free_ char *dev = NULL;
	char why[512], line[256];
	unsigned count = 0;
	int code, r;

	if (!partctl_is_ext(fi->type))
		return 0;
	r = partctl_ext_sb_errors(d, off, why, sizeof(why), e);
	if (r < 0)
		return r;
	if (!why[0]) {
		/* e2fsprogs opens "IMAGE?offset=N" at that byte */
		if (asprintf(&dev, "%s?offset=%llu", ip_disk_path(d), (unsigned long long)off) < 0) {
			dev = NULL;
			return ip_fail(e, -ENOMEM, "out of memory");
		}
		r = partctl_e2fsck(dev, false, &code, why, sizeof(why), &count, line, sizeof(line), e);
		if (r < 0)
			return r;
		if (code == 0)
			return 0;
		if (code >= 8)
			return ip_fail(e, -EIO, "e2fsck -fn could not check the %s filesystem on partition %u of %s (exit %d%s%s)",
				       fi->type, n, disk, code, *line ? ": " : "", line);
		if (!why[0])
			snprintf(why, sizeof(why), "%s", *line ? line : "errors found");
	}
	return ip_bad(e, -EUCLEAN,
		      "the %s filesystem on partition %u of %s is damaged (e2fsck -fn: %s): its block bitmap cannot be trusted; repair it with e2fsck -f, or capture every block with --raw",
		      fi->type, n, disk, why);
}

int partctl_fs_check_fits(const struct partctl_fsinfo *fi, uint64_t part_size, const char *disk,
			  unsigned n, ip_error *e)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];

	if (fi->size <= part_size)
		return 0;
	return ip_bad(e, -EFBIG,
		      "the %s filesystem on partition %u of %s is %s (%llu bytes), larger than its partition of %s (%llu bytes): its end is cut off; fix the table (the partition that held it) or check the filesystem with %s first",
		      fi->type, n, disk, ip_format_size(fi->size, b1, sizeof(b1)), (unsigned long long)fi->size,
		      ip_format_size(part_size, b2, sizeof(b2)), (unsigned long long)part_size,
		      partctl_is_ext(fi->type) ? "e2fsck -f" : "ntfsfix -n");
}

int partctl_fs_usedmap(ip_disk *d, uint64_t off, uint64_t size, partctl_usedmap **out,
		       ip_error *e)
{
	struct partctl_fsinfo fi;
	struct partctl_map_builder b;
	int r;

	*out = NULL;
	r = probe_type(d, off, size, &fi, e);
	if (r < 0)
		return r;
	if (partctl_is_ext(fi.type))
		return partctl_ext_usedmap(d, off, size, out, e);
	if (!strcmp(fi.type, "ntfs"))
		return partctl_ntfs_usedmap(d, off, size, out, e);
	/* Unknown: everything counts as used. */
	r = partctl_map_begin(&b, size, 512);
	if (r == 0)
		r = partctl_map_add(&b, 0, size);
	if (r < 0) {
		partctl_map_abort(&b);
		return ip_fail(e, r, "out of memory building the used-block map");
	}
	*out = partctl_map_end(&b);
	(*out)->exact = false;
	return 0;
}
