/* geometry.c — where partitions may lie: the whole-table check every open
 * makes, the range check of a new or changed entry, the free regions, and
 * where the table's own head ends.  One place, from libfdisk's accessors,
 * so that show, create, the planner and the move agree on the rules for
 * GPT, MBR primaries, the extended container and its logical partitions. */
#include <errno.h>
#include <string.h>

#include <libfdisk.h>

#include "partctl/internal.h"

const struct partctl_part *partctl_geom_extended(const partctl_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->parts[i].extended)
			return &t->parts[i];
	return NULL;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

int partctl_geom_check_range(const partctl_table *t, unsigned n, uint64_t start, uint64_t size,
			     bool logical, bool extended, ip_error *e)
{
	const struct partctl_part *ext = partctl_geom_extended(t);
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];

	if (!size)
		return ip_bad(e, -EINVAL, "a partition cannot be empty: give a size");
	if (start % t->ssz || size % t->ssz)
		return ip_bad(e, -EINVAL, "start %llu and size %llu must be multiples of the sector size (%u bytes)",
			      (unsigned long long)start, (unsigned long long)size, t->ssz);
	if (start < t->first_usable)
		return ip_bad(e, -ERANGE, "start %s lies before the first usable byte of %s (%s): start at %s or later",
			      ip_format_size(start, b1, sizeof(b1)), t->path,
			      ip_format_size(t->first_usable, b2, sizeof(b2)), b2);
	if (start + size < start || start + size > t->end_usable)
		return ip_bad(e, -ERANGE, "a partition of %s at %llu does not fit on %s (usable space ends at byte %llu): choose a smaller size",
			      ip_format_size(size, b1, sizeof(b1)), (unsigned long long)start, t->path,
			      (unsigned long long)t->end_usable);
	if (logical) {
		if (!ext)
			return ip_bad(e, -EINVAL, "%s has no extended partition to hold a logical one: create an extended partition first",
				      t->path);
		if (start <= ext->start || start + size > ext->start + ext->size)
			return ip_bad(e, -ERANGE, "a logical partition must lie inside the extended partition %u (bytes %llu to %llu)",
				      ext->n, (unsigned long long)ext->start,
				      (unsigned long long)(ext->start + ext->size));
	}
	for (size_t i = 0; i < t->n; i++) {
		const struct partctl_part *p = &t->parts[i];

		if (p->n == n)
			continue;
		/* A logical partition lies inside the extended container. */
		if (p->extended && logical)
			continue;
		if (extended && p->logical && n && p->n != n)
			continue; /* resizing the container: checked below */
		if (!logical && !extended && p->logical)
			continue; /* the container stands for its logicals */
		if (overlaps(start, size, p->start, p->size))
			return ip_bad(e, -EEXIST, "the range %s at byte %llu overlaps partition %u: choose free space (see 'inplace part show')",
				      ip_format_size(size, b1, sizeof(b1)), (unsigned long long)start, p->n);
	}
	if (extended) {
		for (size_t i = 0; i < t->n; i++) {
			const struct partctl_part *p = &t->parts[i];

			if (p->logical && (p->start < start || p->start + p->size > start + size))
				return ip_bad(e, -ERANGE, "the extended partition must still hold logical partition %u", p->n);
		}
	}
	return 0;
}

/* The first thing wrong with the entries as they are on the disk, in
 * t->problem; "" when none.  Checked: every entry inside the usable area
 * (GPT) or past sector 0 (MBR, whose old layouts start at sector 63, before
 * libfdisk's first usable sector), no two top-level entries sharing a byte,
 * every logical inside the container and no two logicals sharing a byte. */
static void find_problem(partctl_table *t)
{
	const struct partctl_part *ext = partctl_geom_extended(t);
	bool gpt = !strcmp(t->label, "gpt");

	t->problem[0] = '\0';
	for (size_t i = 0; i < t->n; i++) {
		const struct partctl_part *p = &t->parts[i];
		uint64_t lo = gpt ? t->first_usable : t->ssz;

		if (p->start < lo || p->start + p->size < p->start || p->start + p->size > t->end_usable) {
			snprintf(t->problem, sizeof(t->problem),
				 "partition %u of %s (bytes %llu to %llu) lies outside the usable area (bytes %llu to %llu)",
				 p->n, t->path, (unsigned long long)p->start, (unsigned long long)(p->start + p->size),
				 (unsigned long long)lo, (unsigned long long)t->end_usable);
			return;
		}
		if (p->logical && (!ext || p->start <= ext->start || p->start + p->size > ext->start + ext->size)) {
			snprintf(t->problem, sizeof(t->problem),
				 "logical partition %u of %s lies outside its extended partition", p->n, t->path);
			return;
		}
		for (size_t j = i + 1; j < t->n; j++) {
			const struct partctl_part *q = &t->parts[j];
			uint64_t from, to;

			if (p->logical != q->logical)
				continue; /* a logical inside the container: checked above */
			if (!overlaps(p->start, p->size, q->start, q->size))
				continue;
			from = p->start > q->start ? p->start : q->start;
			to = p->start + p->size < q->start + q->size ? p->start + p->size : q->start + q->size;
			snprintf(t->problem, sizeof(t->problem), "partitions %u and %u of %s overlap (bytes %llu to %llu are in both)",
				 p->n, q->n, t->path, (unsigned long long)from, (unsigned long long)to);
			return;
		}
	}
}

int partctl_table_check(partctl_table *t, ip_error *e)
{
	find_problem(t);
	if (t->problem[0])
		return ip_bad(e, -EUCLEAN, "the partition table is damaged: %s: repair it (gdisk, fdisk) before inplace uses this disk",
			      t->problem);
	return 0;
}

const char *partctl_table_problem(const partctl_table *t)
{
	return t->problem;
}

static int add_region(struct partctl_region **v, size_t *n, size_t *cap, uint64_t start, uint64_t size,
		      bool inside)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		struct partctl_region *nv = realloc(*v, nc * sizeof(**v));

		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = (struct partctl_region){ start, size, inside };
	return 0;
}

static int cmp_region(const void *a, const void *b)
{
	const struct partctl_region *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

int partctl_table_free_regions(const partctl_table *t, struct partctl_region **out, size_t *nout, ip_error *e)
{
	struct fdisk_table *tb = NULL;
	struct fdisk_iter *it = NULL;
	struct fdisk_partition *pa;
	struct partctl_region *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t fd_end = ((uint64_t)fdisk_get_last_lba(t->cxt) + 1) * t->ssz, top_end = t->first_usable;
	bool at_end = false;
	int r;

	*out = NULL;
	*nout = 0;
	r = fdisk_get_freespaces(t->cxt, &tb);
	if (r < 0)
		return ip_fail(e, r, "cannot find the free space of %s: %s", t->path, strerror(-r));
	it = fdisk_new_iter(FDISK_ITER_FORWARD);
	if (!it) {
		fdisk_unref_table(tb);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	/* libfdisk aligns each region's start to the grain and leaves room for
	 * the EBR before a new logical partition. */
	while (r >= 0 && tb && fdisk_table_next_partition(tb, it, &pa) == 0) {
		uint64_t s, end;
		bool inside = fdisk_partition_is_nested(pa);

		if (!fdisk_partition_has_start(pa) || !fdisk_partition_has_size(pa))
			continue;
		s = (uint64_t)fdisk_partition_get_start(pa) * t->ssz;
		end = s + (uint64_t)fdisk_partition_get_size(pa) * t->ssz;
		/* read-only, libfdisk does not see that a GPT disk grew: the
		 * space up to the new backup is free too (table.c) */
		if (!inside && end >= fd_end) {
			end = t->end_usable;
			at_end = true;
		}
		/* libfdisk's region before a logical partition runs up to (or a
		 * sector into) its start, over its boot record: the region ends
		 * before the record of every logical partition after its start
		 * (none left when a record lies at or before the start) */
		for (size_t i = 0; inside && i < t->n; i++) {
			const struct partctl_part *q = &t->parts[i];
			uint64_t ebr;

			if (!q->logical || q->start < s)
				continue;
			if (partctl_table_ebr(t, q->n, &ebr, NULL) < 0 || ebr > q->start)
				ebr = q->start;
			if (ebr < end)
				end = ebr / t->grain * t->grain;
		}
		if (end > s && end - s >= t->grain)
			r = add_region(&v, &n, &cap, s, end - s, inside);
	}
	fdisk_free_iter(it);
	fdisk_unref_table(tb);
	for (size_t i = 0; i < t->n && r >= 0; i++)
		if (!t->parts[i].logical && t->parts[i].start + t->parts[i].size > top_end)
			top_end = t->parts[i].start + t->parts[i].size;
	if (r >= 0 && !at_end && t->end_usable > fd_end) {
		uint64_t s = (top_end + t->grain - 1) / t->grain * t->grain;

		if (t->end_usable > s && t->end_usable - s >= t->grain)
			r = add_region(&v, &n, &cap, s, t->end_usable - s, false);
	}
	if (r < 0) {
		free(v);
		return ip_fail(e, r, "out of memory");
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_region);
	*out = v;
	*nout = n;
	return 0;
}

uint64_t partctl_table_head_end(const partctl_table *t)
{
	struct fdisk_labelitem *item;
	uint64_t last = 0;

	if (strcmp(t->label, "gpt"))
		return t->ssz; /* the MBR sector */
	item = fdisk_new_labelitem();
	if (item && fdisk_get_disklabel_item(t->cxt, GPT_LABELITEM_ENTRIESLASTLBA, item) == 0)
		fdisk_labelitem_get_data_u64(item, &last);
	fdisk_unref_labelitem(item);
	/* the usual 128 entries of 128 bytes end at LBA 33 */
	return last ? (last + 1) * t->ssz : t->first_usable;
}

int partctl_table_label_id(const partctl_table *t, char **id, ip_error *e)
{
	int r = fdisk_get_disklabel_id(t->cxt, id);

	if (r < 0)
		return ip_fail(e, r, "cannot read the disk label id of %s: %s", t->path, strerror(-r));
	return 0;
}
