/* move.c — crash-safe move of a partition's data to a new start, and the
 * resume that finishes an interrupted one.
 *
 * The copy.  The partition's bytes shift by D = |to - from| (a multiple of
 * the table's grain, so at least 1 MiB).  They are copied in batches of at
 * most D bytes, in the safe direction: moving to higher addresses, from the
 * end of the partition backwards; to lower addresses, from the start
 * forwards.  The destination of a batch then only overlaps source bytes of
 * batches already finished, so the source of the current batch and of every
 * later one is intact until it has been copied.  After each batch the data
 * is flushed (ip_disk_flush), then a progress record ("done" bytes, counted
 * from the end the copy started at) is written to the journal and flushed.
 * A crash at any instant therefore leaves: the batches the journal counts
 * as done, durably in place; the rest of the source intact.  Redoing the copy
 * from the journal's "done" is idempotent.  Within a batch the I/O is large
 * and sequential (chunks of up to 8 MiB of used blocks); only the blocks the
 * filesystem uses are read and written (partctl_fs_usedmap; an unknown
 * filesystem counts as fully used).  A resume copies every block of what is
 * left, used or not: the source filesystem's own bitmaps may already have
 * been overwritten, and copying a free block is harmless.
 *
 * The table entry changes only after the last batch is durable and the
 * journal says so (state DATA_DONE); the journal is cleared only after the
 * table is written and flushed.  So a resume finds the table either still
 * at "from" (finish the copy, then write the table) or already at "to"
 * (just clear the journal): both are handled.
 *
 * Where the journal lives.  By default on the disk itself, so that its
 * writes go through the same ip_disk as the data (ordering by the same
 * flushes, and the INPLACE_IOLOG power-cut recorder sees them): two 4 KiB
 * slots and then the coarsened used map in the last 128 KiB below 1 MiB,
 * the tail of the alignment gap between the partition table and the first
 * partition.  No partition may start below 1 MiB (the grain), so no move,
 * of any partition in either direction, writes there, and the table write
 * touches only the header and entries before it: the place survives the
 * move.  On BIOS/MBR disks GRUB's core.img fills the head of that gap from
 * sector 1 (tens of KiB, at most a few hundred): the tail is used when it
 * is zeros or ours and whatever lies before it ends 64 KiB earlier; nothing
 * is written in the head.  Otherwise the move refuses (before anything is
 * written) and asks for --journal FILE on another disk.  The table's own
 * sectors (the end of the GPT entry array) come from libfdisk.  After the
 * move the slots and the map are zeroed again.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "partctl/internal.h"

#define MOVE_CHUNK (8ULL << 20)               /* largest single read/write */
#define MOVE_BATCH_MAX (256ULL << 20)         /* most work redone after a crash */
#define MOVE_MERGE_GAP (256ULL << 10)         /* copy small holes rather than seek */
#define MOVE_READAHEAD (32ULL << 20)          /* asked of the kernel ahead of reading */

struct run {
	uint64_t lo, hi;     /* partition-relative bytes to copy */
};

struct move_ctx {
	ip_disk *d;
	ip_journal *j;
	struct move_rec rec;
	const partctl_usedmap *map;  /* NULL: copy every block */
	uint8_t *buf;
	ip_progress *prog;
	uint64_t copied;
	struct run *runs;    /* this batch's runs */
	size_t nruns, runcap;
	uint64_t map_off;    /* on-disk map area (0: none), up to MOVE_GAP_END */
	size_t ra_i;         /* readahead: next run to announce … */
	uint64_t ra_end;     /* … and where the announced bytes end */
};

static void prefetch(struct move_ctx *c, uint64_t pos);

static bool move_up(const struct move_rec *r) { return r->to > r->from; }
static uint64_t move_dist(const struct move_rec *r) { return move_up(r) ? r->to - r->from : r->from - r->to; }

/* ---- the journal's place ---------------------------------------------- */

/* Whatever lies before the journal's tail in the gap (GRUB's core.img)
 * must end MOVE_TAIL_MARGIN earlier. */
#define MOVE_TAIL_MARGIN (64ULL << 10)

/* What libfdisk knows about the table's own sectors: where they end (MBR:
 * sector 0; GPT: the last LBA of the entry array) and the disk's identity
 * (the checksum of the disk label id: GPT disk GUID or MBR signature). */
/* The identity older versions of inplace recorded: the label id's bytes as
 * they lie on disk (GPT: the GUID's first three fields little endian; MBR:
 * the 4-byte signature), so that their journals are still recognised. */
static void legacy_identity(const char *lid, uint8_t id[16])
{
	unsigned d1, b[8], sig;
	unsigned short d2, d3;

	memset(id, 0, 16);
	if (sscanf(lid, "%8x-%4hx-%4hx-%2x%2x-%2x%2x%2x%2x%2x%2x", &d1, &d2, &d3, &b[0], &b[1], &b[2], &b[3],
		   &b[4], &b[5], &b[6], &b[7]) == 11) {
		for (int i = 0; i < 4; i++)
			id[i] = (uint8_t)(d1 >> (8 * i));
		id[4] = (uint8_t)d2;
		id[5] = (uint8_t)(d2 >> 8);
		id[6] = (uint8_t)d3;
		id[7] = (uint8_t)(d3 >> 8);
		for (int i = 0; i < 8; i++)
			id[8 + i] = (uint8_t)b[i];
	} else if (sscanf(lid, "0x%x", &sig) == 1) {
		for (int i = 0; i < 4; i++)
			id[i] = (uint8_t)(sig >> (8 * i));
	}
}

static int table_facts(const partctl_table *t, uint64_t *end, uint8_t id[16], uint8_t legacy[16], ip_error *e)
{
	_cleanup_free_ char *lid = NULL;

	(void)e;
	/* the table handle already open: one libfdisk context per disk */
	*end = partctl_table_head_end(t);
	memset(id, 0, 16);
	memset(legacy, 0, 16);
	/* a label without an id is identified by size and sector size alone */
	if (partctl_table_label_id(t, &lid, NULL) == 0 && lid) {
		ip_checksum(lid, strlen(lid), id);
		legacy_identity(lid, legacy);
	}
	return 0;
}

/* The two places of an on-disk journal: tail, where moves write it, and
 * head, the first 4 KiB boundary after the table (where older versions of
 * inplace wrote it: only read, to finish such a move). */
static int gap_places(const partctl_table *t, uint64_t *head, uint64_t *tail, ip_error *e)
{
	const char *disk = partctl_table_path(t);
	uint8_t id[16], legacy[16];
	uint64_t end;
	int r;

	r = table_facts(t, &end, id, legacy, e);
	if (r < 0)
		return r;
	*head = (end + 4095) / 4096 * 4096;
	*tail = MOVE_GAP_END - MOVE_TAIL_LEN;
	if (*head + 2 * IP_JOURNAL_SLOT > *tail)
		return ip_bad(e, -ENOSPC, "%s has no room for the move journal below 1 MiB: give --journal FILE on another disk",
			      disk);
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *p = partctl_table_at(t, i);

		if (p->start < MOVE_GAP_END && p->start + p->size > *head)
			return ip_bad(e, -ENOSPC, "partition %u of %s starts below 1 MiB, where the move journal would live: give --journal FILE on another disk",
				      p->n, disk);
	}
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static bool slot_ours(const uint8_t *p)
{
	return !memcmp(p, "IPJRNL01", 8) || !memcmp(p + IP_JOURNAL_SLOT, "IPJRNL01", 8);
}

/* The gap may hold a boot loader (GRUB's core.img on BIOS/MBR disks, from
 * sector 1 on, tens of KiB): the tail is ours when it is zeros or holds our
 * journal or map, and whatever lies before it ends MOVE_TAIL_MARGIN before
 * it.  Nothing is ever written in the head. */
static int gap_check_free(ip_disk *d, uint64_t head, uint64_t tail, ip_error *e)
{
	_cleanup_free_ uint8_t *buf = malloc(MOVE_GAP_END - head);
	const uint8_t *tl;
	uint64_t last = 0;
	int r;

	if (!buf)
		return ip_fail(e, -ENOMEM, "out of memory");
	r = ip_disk_read(d, buf, MOVE_GAP_END - head, head, e);
	if (r < 0)
		return r;
	tl = buf + (tail - head);
	if (!slot_ours(tl) && memcmp(tl + 2 * IP_JOURNAL_SLOT, MAP_MAGIC, 8) && !all_zero(tl, MOVE_TAIL_LEN))
		return ip_bad(e, -EBUSY, "the last %llu KiB below 1 MiB of %s hold data that is not inplace's, where the move journal would live: give --journal FILE on another disk",
			      (unsigned long long)(MOVE_TAIL_LEN >> 10), ip_disk_path(d));
	for (uint64_t i = tail - head; i > 0; i--)
		if (buf[i - 1]) {
			last = head + i;
			break;
		}
	if (last && last + MOVE_TAIL_MARGIN > tail)
		return ip_bad(e, -EBUSY, "the gap before the first partition of %s holds data up to byte %llu (a boot loader such as GRUB's core.img?), too close to where the move journal would live (bytes %llu-%llu): give --journal FILE on another disk",
			      ip_disk_path(d), (unsigned long long)last, (unsigned long long)tail,
			      (unsigned long long)(MOVE_GAP_END - 1));
	return 0;
}

/* Is the map area free for us (zeros, or a map of ours)? */
static bool map_area_free(ip_disk *d, uint64_t off)
{
	const size_t len = MOVE_TAIL_LEN - 2 * IP_JOURNAL_SLOT;
	_cleanup_free_ uint8_t *buf = malloc(len);

	if (!buf || ip_disk_read(d, buf, len, off, NULL) < 0)
		return false;
	return !memcmp(buf, MAP_MAGIC, 8) || all_zero(buf, len);
}

int partctl_move_disk_identity(const partctl_table *t, uint8_t id[16], uint8_t legacy[16], ip_error *e)
{
	uint64_t end;

	return table_facts(t, &end, id, legacy, e);
}

/* Open the journal: in file, or on the disk at byte at (a free region
 * the caller chose, see partctl_move_opts), or in the gap.  fresh: for a
 * new move (the gap is checked free, its tail is used); else for a resume
 * or the last step of a move: the tail, or the head when only the head
 * holds a journal (a move by an older version). */
static int journal_open(ip_disk *d, const partctl_table *t, const char *file, uint64_t at, bool fresh,
			ip_journal **j, uint64_t *map_off, char *where, size_t wlen, ip_error *e)
{
	uint64_t head, tail, off;
	uint8_t slots[2 * IP_JOURNAL_SLOT];
	int r;

	*map_off = 0;
	if (file) {
		/* a journal written over the disk itself (its path again, a link
		 * to it, one of its partitions) would wipe the table it guards */
		r = ip_check_distinct(file, ip_disk_path(d), e);
		if (r < 0)
			return r;
		snprintf(where, wlen, "%s", file);
		return ip_journal_open_file(file, j, e);
	}
	if (at) {
		snprintf(where, wlen, "%s bytes %llu-%llu (free space)", ip_disk_path(d), (unsigned long long)at,
			 (unsigned long long)(at + 2 * IP_JOURNAL_SLOT - 1));
		*map_off = at + 2 * IP_JOURNAL_SLOT;
		return ip_journal_open_disk(d, at, j, e);
	}
	r = gap_places(t, &head, &tail, e);
	if (r < 0)
		return r;
	off = tail;
	if (fresh) {
		r = gap_check_free(d, head, tail, e);
		if (r < 0)
			return r;
	} else if (ip_disk_read(d, slots, sizeof(slots), tail, NULL) == 0 && !slot_ours(slots) &&
		   ip_disk_read(d, slots, sizeof(slots), head, NULL) == 0 && slot_ours(slots)) {
		off = head;
	}
	snprintf(where, wlen, "%s bytes %llu-%llu", ip_disk_path(d), (unsigned long long)off,
		 (unsigned long long)(off + 2 * IP_JOURNAL_SLOT - 1));
	/* the rest of the gap up to 1 MiB holds the used map, when it is free
	 * too */
	*map_off = off + 2 * IP_JOURNAL_SLOT;
	if (fresh && !map_area_free(d, *map_off))
		*map_off = 0;
	return ip_journal_open_disk(d, off, j, e);
}

int partctl_move_journal_check(const char *disk, const char *file, char *where, size_t wlen, ip_error *e)
{
	partctl_table *t = NULL;
	ip_disk *d = NULL;
	ip_journal *j = NULL;
	uint64_t map_off;
	struct move_rec old;
	size_t oldlen = sizeof(old);
	int r;

	if (file) {
		_cleanup_free_ char *dir = strdup(file);
		char *slash;

		if (!dir)
			return ip_fail(e, -ENOMEM, "out of memory");
		slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
		r = ip_check_distinct(file, disk, e);
		if (r < 0)
			return r;
		if (access(file, F_OK) == 0 ? access(file, R_OK | W_OK) : access(slash ? dir : ".", W_OK | X_OK))
			return ip_bad(e, -errno, "cannot write the move journal %s: %s: give --journal FILE in a writable directory on another disk",
				      file, strerror(errno));
		snprintf(where, wlen, "%s", file);
		return 0;
	}
	r = partctl_table_open(disk, false, &t, e);
	if (r == 0)
		r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e);
	if (r == 0)
		r = journal_open(d, t, NULL, 0, true, &j, &map_off, where, wlen, e);
	if (r == 0 && ip_journal_read(j, &old, &oldlen, NULL) == 0)
		r = ip_bad(e, -EINPROGRESS, "an interrupted operation is recorded in the journal (%s): run 'inplace part resume %s' first",
			   where, disk);
	ip_journal_free(j);
	ip_disk_free(d);
	partctl_table_free(t);
	return r;
}

/* ---- the copy ------------------------------------------------------------ */

/* The copy buffer: no read is longer than the partition (a small one
 * needs no 8 MiB buffer). */
static size_t chunk_len(const struct move_rec *r)
{
	return (size_t)(r->size < MOVE_CHUNK ? r->size : MOVE_CHUNK);
}

/* Copy partition-relative bytes [lo, hi) from the old place to the new. */
static int copy_span(struct move_ctx *c, uint64_t lo, uint64_t hi, ip_error *e)
{
	int fd = ip_disk_fd(c->d);
	int r;

	while (lo < hi) {
		size_t n = (size_t)(hi - lo < MOVE_CHUNK ? hi - lo : MOVE_CHUNK);

		prefetch(c, lo + n);
		r = ip_disk_read(c->d, c->buf, n, c->rec.from + lo, e);
		if (r == 0)
			r = ip_disk_write(c->d, c->buf, n, c->rec.to + lo, e);
		if (r < 0)
			return r;
		/* start writeback now, so that the flush at the end of the batch
		 * finds little left to do and reading never waits for it */
		(void)sync_file_range(fd, (off64_t)(c->rec.to + lo), (off64_t)n, SYNC_FILE_RANGE_WRITE);
		lo += n;
		c->copied += n;
		ip_progress_add(c->prog, n);
	}
	return 0;
}

/* Ask the kernel to read ahead the next MOVE_READAHEAD bytes of the batch's
 * runs after partition-relative position pos (asynchronously: the reads of
 * scattered extents then overlap our writes). */
static void prefetch(struct move_ctx *c, uint64_t pos)
{
	int fd = ip_disk_fd(c->d);

	if (c->ra_end < pos)
		c->ra_end = pos;
	while (c->ra_i < c->nruns && c->ra_end < pos + MOVE_READAHEAD) {
		struct run *u = &c->runs[c->ra_i];
		uint64_t s = c->ra_end > u->lo ? c->ra_end : u->lo;
		uint64_t len;

		if (s >= u->hi) {
			c->ra_i++;
			continue;
		}
		len = u->hi - s < MOVE_CHUNK ? u->hi - s : MOVE_CHUNK;
		(void)posix_fadvise(fd, (off_t)(c->rec.from + s), (off_t)len, POSIX_FADV_WILLNEED);
		c->ra_end = s + len;
	}
}

/* The runs to copy in [lo, hi): used extents, sector-aligned, clipped, and
 * merged across holes smaller than MOVE_MERGE_GAP. */
static int batch_runs(struct move_ctx *c, uint64_t lo, uint64_t hi, ip_error *e)
{
	const partctl_usedmap *m = c->map;
	unsigned ss = ip_disk_sector_size(c->d);
	size_t a = 0, b;

	c->nruns = 0;
	c->ra_i = 0;
	c->ra_end = lo;
	if (!m) {
		if (!c->runcap && !(c->runs = malloc(sizeof(*c->runs) * (c->runcap = 16))))
			return ip_fail(e, -ENOMEM, "out of memory");
		c->runs[c->nruns++] = (struct run){ lo, hi };
		return 0;
	}
	/* first extent ending after lo */
	b = m->n;
	while (a < b) {
		size_t mid = a + (b - a) / 2;

		if (m->ext[mid].off + m->ext[mid].len <= lo)
			a = mid + 1;
		else
			b = mid;
	}
	for (; a < m->n && m->ext[a].off < hi; a++) {
		uint64_t s = m->ext[a].off / ss * ss;
		uint64_t t = (m->ext[a].off + m->ext[a].len + ss - 1) / ss * ss;

		if (s < lo)
			s = lo;
		if (t > hi)
			t = hi;
		if (c->nruns && s <= c->runs[c->nruns - 1].hi + MOVE_MERGE_GAP) {
			if (t > c->runs[c->nruns - 1].hi)
				c->runs[c->nruns - 1].hi = t;
			continue;
		}
		if (c->nruns == c->runcap) {
			size_t cap = c->runcap ? 2 * c->runcap : 256;
			struct run *nr = realloc(c->runs, cap * sizeof(*nr));

			if (!nr)
				return ip_fail(e, -ENOMEM, "out of memory");
			c->runs = nr;
			c->runcap = cap;
		}
		c->runs[c->nruns++] = (struct run){ s, t };
	}
	return 0;
}

/* Copy the used parts of [lo, hi).  Any order is safe inside a batch: its
 * destination lies wholly beyond its source in the direction of the move. */
static int copy_batch(struct move_ctx *c, uint64_t lo, uint64_t hi, ip_error *e)
{
	int r = batch_runs(c, lo, hi, e);

	for (size_t i = 0; r == 0 && i < c->nruns; i++)
		r = copy_span(c, c->runs[i].lo, c->runs[i].hi, e);
	return r;
}

/* Copy from rec.done to the end, batch by batch, each made durable and then
 * recorded.  On return 0 the journal says MOVE_DATA_DONE. */
static int copy_all(struct move_ctx *c, ip_error *e)
{
	struct move_rec *rec = &c->rec;
	int r;

	while (rec->done < rec->size) {
		uint64_t len = rec->size - rec->done < rec->batch ? rec->size - rec->done : rec->batch;
		uint64_t lo = move_up(rec) ? rec->size - rec->done - len : rec->done;

		r = copy_batch(c, lo, lo + len, e);
		if (r == 0)
			r = ip_disk_flush(c->d, e);
		if (r < 0)
			return r;
		rec->done += len;
		if (rec->done == rec->size)
			rec->state = MOVE_DATA_DONE;
		r = ip_journal_write(c->j, rec, sizeof(*rec), e);
		if (r < 0)
			return r;
		/* keep the page cache for the filesystem's users, not for us */
		ip_disk_drop_cache(c->d, rec->from + lo, len);
	}
	if (rec->state != MOVE_DATA_DONE) {
		rec->state = MOVE_DATA_DONE;
		return ip_journal_write(c->j, rec, sizeof(*rec), e);
	}
	return 0;
}

/* ---- the stored used map ------------------------------------------------ */

/* The map fills the journal's area after the slots: MOVE_TAIL_LEN in all. */
static size_t map_cap(uint64_t map_off)
{
	return map_off ? (size_t)((MOVE_TAIL_LEN - 2 * IP_JOURNAL_SLOT - MAP_HDR) / 16) : 0;
}

/* Coarsen the filesystem's map (merge holes, wider and wider) until it fits
 * cap extents; the result covers every used byte, sector-aligned. */
static partctl_usedmap *map_coarse(const partctl_usedmap *m, uint64_t size, unsigned ss, size_t cap)
{
	partctl_usedmap *out = calloc(1, sizeof(*out));
	uint64_t gap = MOVE_MERGE_GAP;

	if (!out || !(out->ext = malloc((m->n ? m->n : 1) * sizeof(*out->ext)))) {
		partctl_usedmap_free(out);
		return NULL;
	}
	out->block_size = ss;
	out->size = size;
	out->exact = m->exact;
	for (;;) {
		out->n = 0;
		out->used = 0;
		for (size_t i = 0; i < m->n; i++) {
			uint64_t s = m->ext[i].off / ss * ss;
			uint64_t t = (m->ext[i].off + m->ext[i].len + ss - 1) / ss * ss;

			if (t > size)
				t = size;
			if (out->n && s <= out->ext[out->n - 1].off + out->ext[out->n - 1].len + gap) {
				partctl_extent *x = &out->ext[out->n - 1];

				if (t > x->off + x->len)
					x->len = t - x->off;
				continue;
			}
			out->ext[out->n++] = (partctl_extent){ s, t - s };
		}
		if (out->n <= cap || !cap)
			break;
		gap *= 4;
	}
	for (size_t i = 0; i < out->n; i++)
		out->used += out->ext[i].len;
	return out;
}

static void map_encode(const partctl_usedmap *m, uint8_t *buf, uint8_t sum[16])
{
	uint64_t n = m->n;

	memset(buf, 0, MAP_HDR);
	memcpy(buf, MAP_MAGIC, 8);
	memcpy(buf + 8, &n, 8);
	for (size_t i = 0; i < m->n; i++) {
		memcpy(buf + MAP_HDR + 16 * i, &m->ext[i].off, 8);
		memcpy(buf + MAP_HDR + 16 * i + 8, &m->ext[i].len, 8);
	}
	ip_checksum(buf, MAP_HDR + 16 * m->n, sum);
}

/* Write the map durably before the record that names it. */
static int map_store(struct move_ctx *c, ip_error *e)
{
	size_t len = MAP_HDR + 16 * c->map->n;
	_cleanup_free_ uint8_t *buf = malloc(len);
	int r;

	if (!buf)
		return ip_fail(e, -ENOMEM, "out of memory");
	map_encode(c->map, buf, c->rec.map_sum);
	c->rec.map_n = c->map->n;
	r = ip_disk_write(c->d, buf, len, c->map_off, e);
	if (r == 0)
		r = ip_disk_flush(c->d, e);
	return r;
}

/* The map the record names, or NULL (none, or not the one: copy all). */
static partctl_usedmap *map_load(ip_disk *d, uint64_t map_off, const struct move_rec *rec)
{
	partctl_usedmap *m;
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	uint64_t n;

	if (!map_off || !rec->map_n || rec->map_n > map_cap(map_off))
		return NULL;
	len = MAP_HDR + 16 * rec->map_n;
	buf = malloc(len);
	if (!buf || ip_disk_read(d, buf, len, map_off, NULL) < 0)
		return NULL;
	memcpy(&n, buf + 8, 8);
	if (memcmp(buf, MAP_MAGIC, 8) || n != rec->map_n || !ip_checksum_ok(buf, len, rec->map_sum))
		return NULL;
	m = calloc(1, sizeof(*m));
	if (!m || !(m->ext = malloc(n * sizeof(*m->ext)))) {
		free(m);
		return NULL;
	}
	m->n = n;
	m->size = rec->size;
	m->exact = true;
	for (size_t i = 0; i < n; i++) {
		partctl_extent *x = &m->ext[i];

		memcpy(&x->off, buf + MAP_HDR + 16 * i, 8);
		memcpy(&x->len, buf + MAP_HDR + 16 * i + 8, 8);
		/* the copy looks extents up in order: a map out of order, or
		 * reaching past the partition, is not one a move wrote */
		if (!x->len || x->off + x->len < x->off || x->off + x->len > rec->size ||
		    (i && x->off < m->ext[i - 1].off + m->ext[i - 1].len)) {
			partctl_usedmap_free(m);
			return NULL;
		}
		m->used += x->len;
	}
	return m;
}

/* Zero the map area (before the slots: while a slot is valid, the record
 * tells how much of the area is ours). */
static int map_clear(ip_disk *d, uint64_t map_off, uint64_t map_n, ip_error *e)
{
	size_t len = MAP_HDR + 16 * map_n;
	_cleanup_free_ uint8_t *zero = NULL;
	int r;

	if (!map_off || !map_n || map_n > map_cap(map_off))
		return 0;
	zero = calloc(1, len);
	if (!zero)
		return ip_fail(e, -ENOMEM, "out of memory");
	r = ip_disk_write(d, zero, len, map_off, e);
	if (r == 0)
		r = ip_disk_flush(d, e);
	return r;
}

/* The last step: the table, then the journal. */
static int finish(const char *disk, ip_disk **d, ip_journal **j, const struct partctl_move_opts *o,
		  uint64_t map_off, const struct move_rec *rec, bool table_done, ip_error *e)
{
	partctl_table *t = NULL;
	char where[512];
	int r;

	if (!table_done) {
		/* the table is written through libfdisk's own descriptor; ours is
		 * closed meanwhile so that no exclusive claim stands in the way */
		ip_journal_free(*j);
		*j = NULL;
		ip_disk_free(*d);
		*d = NULL;
		r = partctl_table_open(disk, true, &t, e);
		if (r == 0)
			r = partctl_table_set_range(t, rec->n, rec->to, rec->size, e);
		if (r == 0)
			r = partctl_table_write(t, e);
		if (r < 0) {
			ip_error_prefix(e, "the data of partition %u is in place but the table was not updated ('inplace part resume %s' retries)",
					rec->n, disk);
			partctl_table_free(t);
			return r;
		}
		r = ip_disk_open(disk, IP_DISK_RDWR, d, e);
		if (r == 0)
			r = journal_open(*d, t, o->journal, o->journal_off, false, j, &map_off, where, sizeof(where), e);
		partctl_table_free(t);
		if (r < 0)
			return r;
	}
	r = map_clear(*d, map_off, rec->map_n, e);
	if (r < 0)
		return r;
	return ip_journal_clear(*j, e);
}

/* ---- validation ---------------------------------------------------------- */

static int check_dest(const partctl_table *t, const struct partctl_part *p, uint64_t to,
		      ip_error *e)
{
	const char *disk = partctl_table_path(t);
	uint64_t grain = partctl_table_grain(t);
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];

	if (p->extended)
		return ip_bad(e, -EINVAL, "partition %u of %s is an extended container: move its logical partitions instead",
			      p->n, disk);
	if (to == p->start)
		return ip_bad(e, -EINVAL, "partition %u of %s already starts at byte %llu: give another --to",
			      p->n, disk, (unsigned long long)to);
	if (to % grain)
		return ip_bad(e, -EINVAL, "start %llu is not aligned to %s: choose a multiple of %llu bytes, e.g. %llu",
			      (unsigned long long)to, ip_format_size(grain, b1, sizeof(b1)),
			      (unsigned long long)grain, (unsigned long long)((to + grain / 2) / grain * grain));
	if (to < MOVE_GAP_END || to < partctl_table_first_usable(t))
		return ip_bad(e, -ERANGE, "start %llu lies in the area reserved for the partition table and the move journal: start at %llu or later",
			      (unsigned long long)to,
			      (unsigned long long)(partctl_table_first_usable(t) > MOVE_GAP_END
							   ? partctl_table_first_usable(t) : MOVE_GAP_END));
	if (to + p->size < to || to + p->size > partctl_table_end_usable(t))
		return ip_bad(e, -ERANGE, "partition %u (%s) at byte %llu would end past the usable end of %s (byte %llu): choose a start of at most %llu",
			      p->n, ip_format_size(p->size, b2, sizeof(b2)), (unsigned long long)to, disk,
			      (unsigned long long)partctl_table_end_usable(t),
			      (unsigned long long)((partctl_table_end_usable(t) - p->size) / grain * grain));
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *q = partctl_table_at(t, i);
		uint64_t qs = q->start, qe = q->start + q->size;

		if (q->n == p->n)
			continue;
		if (q->extended) {
			if (p->logical) {
				if (to <= qs || to + p->size > qe)
					return ip_bad(e, -ERANGE, "logical partition %u must stay inside extended partition %u (bytes %llu to %llu)",
						      p->n, q->n, (unsigned long long)qs, (unsigned long long)qe);
				continue;
			}
		} else if (q->logical) {
			if (!p->logical)
				continue; /* the container stands for them */
			/* its boot record lies in the grain before it, and so
			 * will p's */
			qs = qs > grain ? qs - grain : 0;
			if (to - grain < qe && qs < to + p->size)
				return ip_bad(e, -EEXIST, "logical partition %u at byte %llu and its boot record would overlap logical partition %u (bytes %llu to %llu): choose free space (see 'inplace part show %s')",
					      p->n, (unsigned long long)to, q->n, (unsigned long long)q->start,
					      (unsigned long long)(q->start + q->size), disk);
			continue;
		}
		if (to < qe && qs < to + p->size)
			return ip_bad(e, -EEXIST, "partition %u at byte %llu would overlap partition %u (bytes %llu to %llu): choose free space (see 'inplace part show %s')",
				      p->n, (unsigned long long)to, q->n, (unsigned long long)q->start,
				      (unsigned long long)(q->start + q->size), disk);
	}
	return 0;
}

/* A journal in a free region: 4 KiB aligned, above the gap, on the disk,
 * and nowhere this move reads or writes. */
static int check_region(const partctl_table *t, uint64_t at, const struct move_rec *rec, ip_error *e)
{
	uint64_t end = at + MOVE_TAIL_LEN;

	if (at % 4096 || at < MOVE_GAP_END || end > partctl_table_disk_size(t) ||
	    (at < rec->from + rec->size && rec->from < end) || (at < rec->to + rec->size && rec->to < end))
		return ip_bad(e, -EINVAL, "the move journal cannot live at byte %llu of %s: it must be 4 KiB aligned, above 1 MiB and outside the partition's old and new place",
			      (unsigned long long)at, partctl_table_path(t));
	return 0;
}

static void info_fill(struct partctl_move_info *info, const struct move_rec *rec, uint64_t used,
		      const char *where)
{
	if (!info)
		return;
	info->n = rec->n;
	info->from = rec->from;
	info->to = rec->to;
	info->size = rec->size;
	info->used = used;
	info->batch = rec->batch;
	snprintf(info->journal, sizeof(info->journal), "%s", where);
}

/* ---- a journal kept in a file: where to find it again --------------------- */

/* A move with --journal FILE leaves the path of FILE in the state directory,
 * durable before the first byte moves, so that a plain 'part resume DISK'
 * after a power cut finds the interrupted move instead of reporting nothing
 * to do.  The pointer goes when the move is finished. */
static int pointer_path(const char *disk, char *out, size_t n, ip_error *e)
{
	return partctl_state_file(disk, "move", "journal-path", out, n, e);
}

/* The pointer holds the journal file's absolute path, or "offset:N" for
 * an on-disk journal at byte N of a free region. */
static int pointer_write(const char *disk, const struct partctl_move_opts *o, ip_error *e)
{
	char pp[PATH_MAX], real[PATH_MAX];
	int r;

	if (o->journal && !realpath(o->journal, real))
		return ip_fail(e, -errno, "cannot find the journal %s: %s", o->journal, strerror(errno));
	if (!o->journal)
		snprintf(real, sizeof(real), "offset:%llu", (unsigned long long)o->journal_off);
	if ((r = pointer_path(disk, pp, sizeof(pp), e)) < 0 || (r = partctl_state_mkdir(e)) < 0)
		return r;
	return ip_write_file_atomic(pp, real, strlen(real), 0600, e);
}

static void pointer_remove(const char *disk)
{
	char pp[PATH_MAX];

	if (pointer_path(disk, pp, sizeof(pp), NULL) == 0 && unlink(pp) == 0)
		ip_fsync_parent(pp, NULL);
}

/* The journal file an interrupted move recorded for disk: 1 and *jfile
 * (malloc'd) when there is a pointer, 0 when there is none. */
static int pointer_read(const char *disk, char **jfile, ip_error *e)
{
	char pp[PATH_MAX];
	size_t len;
	int r;

	*jfile = NULL;
	if ((r = pointer_path(disk, pp, sizeof(pp), e)) < 0)
		return r;
	if (access(pp, F_OK) != 0)
		return 0;
	if ((r = ip_read_file(pp, PATH_MAX, jfile, &len, e)) < 0)
		return r;
	if (!len || ((*jfile)[0] != '/' && strncmp(*jfile, "offset:", 7))) {
		free(*jfile);
		*jfile = NULL;
		return ip_fail(e, -EINVAL, "%s is damaged: give 'inplace part resume %s --journal FILE' with the journal of the interrupted move",
			       pp, disk);
	}
	return 1;
}

/* ---- the verbs ----------------------------------------------------------- */

int partctl_move_ex(const char *disk, unsigned n, uint64_t new_start,
		    const struct partctl_move_opts *o, struct partctl_move_info *info, ip_error *e)
{
	static const struct partctl_move_opts none = { 0 };
	partctl_table *t = NULL;
	ip_disk *d = NULL;
	ip_journal *j = NULL;
	partctl_usedmap *map = NULL, *fsmap = NULL;
	struct move_ctx c = { 0 };
	const struct partctl_part *p;
	char where[512], label[64];
	uint64_t from, size;
	struct move_rec old;
	size_t oldlen = sizeof(old);
	uint8_t legacy_id[16];
	int r;

	if (!o)
		o = &none;
	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	p = partctl_table_find(t, n);
	if (!p) {
		r = ip_bad(e, -ENOENT, "%s has no partition %u: see 'inplace part show %s'", disk, n, disk);
		goto out;
	}
	r = check_dest(t, p, new_start, e);
	if (r < 0)
		goto out;
	from = p->start;
	size = p->size;
	/* the table's own rules too (logicals, limits), in memory only */
	r = partctl_table_set_range(t, n, new_start, p->size, e);
	if (r < 0)
		goto out;
	r = ip_disk_open(disk, o->dry_run ? IP_DISK_RDONLY : IP_DISK_RDWR, &d, e);
	if (r == 0 && o->dry_run)
		r = ip_check_unmounted(disk, e);
	if (r < 0)
		goto out;

	memset(&c.rec, 0, sizeof(c.rec));
	memcpy(c.rec.kind, MOVE_KIND, 8);
	c.rec.state = MOVE_COPYING;
	c.rec.n = n;
	c.rec.disk_size = ip_disk_size(d);
	c.rec.sector_size = partctl_table_sector_size(t);
	c.rec.from = from;
	c.rec.size = size;
	r = partctl_move_disk_identity(t, c.rec.disk_id, legacy_id, e);
	if (r < 0)
		goto out;
	c.rec.to = new_start;
	c.rec.batch = move_dist(&c.rec) < MOVE_BATCH_MAX ? move_dist(&c.rec) : MOVE_BATCH_MAX;

	{
		_cleanup_free_ char *pending = NULL;
		r = pointer_read(disk, &pending, e);
		if (r > 0)
			r = ip_bad(e, -EBUSY, "an interrupted move of %s keeps its journal in %s: run 'inplace part resume %s' first",
				   disk, pending, disk);
		if (r < 0)
			goto out;
	}
	if (o->dry_run && o->journal && access(o->journal, F_OK) < 0) {
		/* a dry run creates no journal file */
		snprintf(where, sizeof(where), "%s", o->journal);
	} else {
		/* a dry run checks the place too (reading only) */
		r = o->journal_off ? check_region(t, o->journal_off, &c.rec, e) : 0;
		if (r == 0)
			r = journal_open(d, t, o->journal, o->journal_off, true, &j, &c.map_off, where, sizeof(where), e);
		if (r < 0)
			goto out;
	}
	if (j && ip_journal_read(j, &old, &oldlen, NULL) == 0) {
		r = ip_bad(e, -EBUSY, "an interrupted operation is recorded in the journal (%s): run 'inplace part resume %s%s%s' first",
			   where, disk, o->journal ? " --journal " : "", o->journal ? o->journal : "");
		goto out;
	}
	r = partctl_fs_usedmap(d, c.rec.from, c.rec.size, &fsmap, e);
	if (r < 0)
		goto out;
	/* what is stored is what is copied, now and by a resume */
	map = map_coarse(fsmap, c.rec.size, ip_disk_sector_size(d), map_cap(c.map_off));
	if (!map) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	info_fill(info, &c.rec, map->used, where);
	if (o->dry_run)
		goto out;

	c.d = d;
	c.j = j;
	c.map = map;
	c.buf = malloc(chunk_len(&c.rec));
	if (!c.buf) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	/* where the journal is, the map, then the intent: durable before the
	 * first byte moves */
	if ((o->journal || o->journal_off) && (r = pointer_write(disk, o, e)) < 0)
		goto out;
	if (c.map_off && map->n <= map_cap(c.map_off)) {
		r = map_store(&c, e);
		if (r < 0)
			goto out;
	}
	r = ip_journal_write(j, &c.rec, sizeof(c.rec), e);
	if (r < 0)
		goto out;
	/* a logical partition going down takes its boot record along first:
	 * the copy may overwrite the old one */
	if (new_start < from && (r = partctl_table_ebr_before(d, n, new_start, e)) < 0) {
		ip_error_prefix(e, "move of partition %u interrupted ('inplace part resume %s' finishes it)", n, disk);
		goto out;
	}
	snprintf(label, sizeof(label), "moving partition %u", n);
	c.prog = ip_progress_new(label, map->used);
	r = copy_all(&c, e);
	ip_progress_free(c.prog);
	if (r < 0) {
		ip_error_prefix(e, "move of partition %u interrupted ('inplace part resume %s' finishes it)", n, disk);
		goto out;
	}
	partctl_table_free(t);
	t = NULL;
	r = finish(disk, &d, &j, o, c.map_off, &c.rec, false, e);
	if (r == 0 && (o->journal || o->journal_off))
		pointer_remove(disk);
out:
	free(c.buf);
	free(c.runs);
	partctl_usedmap_free(map);
	partctl_usedmap_free(fsmap);
	ip_journal_free(j);
	ip_disk_free(d);
	partctl_table_free(t);
	return r;
}

int partctl_move(const char *disk, unsigned n, uint64_t new_start, ip_error *e)
{
	return partctl_move_ex(disk, n, new_start, NULL, NULL, e);
}

/* A record whose checksum holds can still be wrong (a bug of the version
 * that wrote it, or written on purpose): before resume trusts it with the
 * disk, everything the copy computes with must be what a move writes.  p
 * is the partition where the table shows it (at from, or at to when
 * table_done). */
static int rec_check(const partctl_table *t, const struct partctl_part *p, const struct move_rec *rec,
		     bool table_done, const char *where, ip_error *e)
{
	uint64_t ss = rec->sector_size, dist = move_dist(rec);
	int r;

	if ((rec->state != MOVE_COPYING && rec->state != MOVE_DATA_DONE) || !ss || !rec->size ||
	    !dist || rec->from % ss || rec->to % ss || rec->size % ss ||
	    !rec->batch || rec->batch > dist || rec->batch % ss || rec->done > rec->size ||
	    (rec->done != rec->size && rec->done % rec->batch))
		return ip_fail(e, -EPROTO, "the journal (%s) holds a move record that no move writes (state %u, batch %llu of %llu bytes, %llu done): check the disk by hand, then clear the journal",
			       where, rec->state, (unsigned long long)rec->batch, (unsigned long long)rec->size,
			       (unsigned long long)rec->done);
	if (table_done)
		return 0;   /* nothing left to copy: the journal is only cleared */
	/* the destination passes what the move checked before it started */
	r = check_dest(t, p, rec->to, e);
	if (r < 0)
		ip_error_prefix(e, "the journal (%s) records a move of partition %u to byte %llu that no move makes",
				where, rec->n, (unsigned long long)rec->to);
	return r;
}

/* Finish an interrupted move recorded in the journal; *did = false when
 * there is none. */
static int move_resume(const char *disk, const struct partctl_move_opts *o, bool *did,
		       struct partctl_move_info *info, ip_error *e)
{
	struct partctl_move_opts po = *o;
	_cleanup_free_ char *recorded = NULL;
	partctl_table *t = NULL;
	ip_disk *d = NULL;
	ip_journal *j = NULL;
	partctl_usedmap *map = NULL;
	struct move_ctx c = { 0 };
	const struct partctl_part *p;
	char where[512], label[64];
	size_t len = sizeof(c.rec);
	uint8_t id[16], legacy[16];
	bool table_done;
	int r;

	*did = false;
	/* a move that kept its journal in a file left its path behind */
	if (!o->journal) {
		r = pointer_read(disk, &recorded, e);
		if (r < 0)
			return r;
		if (r > 0 && !strncmp(recorded, "offset:", 7)) {
			po.journal_off = strtoull(recorded + 7, NULL, 10);
			o = &po;
			r = 0;
		}
		if (r > 0 && access(recorded, R_OK | W_OK) != 0)
			return ip_bad(e, -errno, "an interrupted move of %s keeps its journal in %s, which cannot be opened (%s): mount what holds it and run resume again, or give --journal FILE",
				      disk, recorded, strerror(errno));
		if (r > 0) {
			po.journal = recorded;
			o = &po;
		}
	}
	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	r = ip_disk_open(disk, IP_DISK_RDWR, &d, e);
	if (r == 0)
		r = journal_open(d, t, o->journal, o->journal_off, false, &j, &c.map_off, where, sizeof(where), e);
	if (r < 0) {
		/* no place for an on-disk journal: then there is none to finish */
		if (!o->journal && r == -ENOSPC) {
			ip_error_clear(e);
			r = 0;
		}
		goto out;
	}
	r = ip_journal_read(j, &c.rec, &len, e);
	if (r == -ENOENT) {
		ip_error_clear(e);
		if (recorded)
			pointer_remove(disk);  /* the move had finished; only the pointer was left */
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	if (len != sizeof(c.rec) || memcmp(c.rec.kind, MOVE_KIND, 8)) {
		r = ip_fail(e, -EPROTO, "the journal (%s) holds a record inplace does not know: finish it with the version of inplace that wrote it",
			    where);
		goto out;
	}
	r = partctl_move_disk_identity(t, id, legacy, e);
	if (r < 0)
		goto out;
	if (c.rec.disk_size != ip_disk_size(d) || c.rec.sector_size != partctl_table_sector_size(t) ||
	    (memcmp(id, c.rec.disk_id, sizeof(id)) && memcmp(legacy, c.rec.disk_id, sizeof(legacy)))) {
		r = ip_bad(e, -EINVAL, "the journal (%s) was written for another disk than %s: give the disk it belongs to",
			   where, disk);
		goto out;
	}
	p = partctl_table_find(t, c.rec.n);
	if (p && p->start == c.rec.to && p->size == c.rec.size)
		table_done = true;
	else if (p && p->start == c.rec.from && p->size == c.rec.size)
		table_done = false;
	else {
		r = ip_fail(e, -EINVAL, "the journal (%s) records a move of partition %u from byte %llu to %llu (%llu bytes) but the table does not show that partition at either place: restore the table as it was before the move, then resume",
			    where, c.rec.n, (unsigned long long)c.rec.from,
			    (unsigned long long)c.rec.to, (unsigned long long)c.rec.size);
		goto out;
	}
	r = rec_check(t, p, &c.rec, table_done, where, e);
	if (r < 0)
		goto out;
	if (table_done && c.rec.state != MOVE_DATA_DONE) {
		r = ip_fail(e, -EINVAL, "the table shows partition %u already moved but the journal (%s) says its data is not all copied: check the disk by hand",
			    c.rec.n, where);
		goto out;
	}
	*did = true;
	if (!table_done && c.rec.state != MOVE_DATA_DONE) {
		/* the boot record first, as the move did (done already, unless
		 * the move stopped before its first batch) */
		if (c.rec.to < c.rec.from && (r = partctl_table_ebr_before(d, c.rec.n, c.rec.to, e)) < 0)
			goto out;
		c.d = d;
		c.j = j;
		c.map = map = map_load(d, c.map_off, &c.rec);
		c.buf = malloc(chunk_len(&c.rec));
		if (!c.buf) {
			r = ip_fail(e, -ENOMEM, "out of memory");
			goto out;
		}
		snprintf(label, sizeof(label), "finishing the move of partition %u", c.rec.n);
		c.prog = ip_progress_new(label, map ? map->used : c.rec.size - c.rec.done);
		r = copy_all(&c, e);
		ip_progress_free(c.prog);
		free(c.buf);
		free(c.runs);
		if (r < 0)
			goto out;
	}
	partctl_table_free(t);
	t = NULL;
	info_fill(info, &c.rec, c.copied, where);
	r = finish(disk, &d, &j, o, c.map_off, &c.rec, table_done, e);
	if (r == 0 && (o->journal || o->journal_off))
		pointer_remove(disk);
out:
	partctl_usedmap_free(map);
	ip_journal_free(j);
	ip_disk_free(d);
	partctl_table_free(t);
	return r;
}

int partctl_resume_ex(const char *disk, const struct partctl_move_opts *o, bool *did,
		      struct partctl_move_info *info, ip_error *e)
{
	static const struct partctl_move_opts none = { 0 };
	bool did_resize = false, did_move = false;
	int r;

	if (!o)
		o = &none;
	*did = false;
	/* an interrupted shrink first (partctl/resize.c): a move never starts
	 * while a shrink is unfinished, so at most one of them has work */
	r = partctl_resize_resume(disk, &did_resize, e);
	if (r < 0)
		return r;
	r = move_resume(disk, o, &did_move, info, e);
	if (info)
		info->resized = did_resize;
	*did = did_resize || did_move;
	return r;
}

int partctl_resume(const char *disk, bool *did, ip_error *e)
{
	return partctl_resume_ex(disk, NULL, did, NULL, e);
}
