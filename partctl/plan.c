/* plan.c — the planner: which steps give a new partition of a given size.
 * A pure function over a struct partctl_plan_disk, so that every branch is
 * tested without disks (tests/unit/test_plan.c).
 *
 * Order of preference, cheapest and least risky first:
 *   1. a free region that already fits (the smallest that does);
 *   2. shrink one filesystem (the one with the most reclaimable space that
 *      works), only as far as needed, never below its minimum plus headroom,
 *      and move the partitions after it towards it when the freed space is
 *      not next to enough free space;
 *   3. shrink several neighbouring top-level filesystems (the largest room
 *      first, the last one only as far as needed) and pack the partitions
 *      between them down, so that the freed space joins one region: the
 *      fewest shrinks, then the roomiest filesystems, then the fewest moves;
 *      then the same with the logical partitions inside the extended
 *      container, each packed behind the grain of its boot record (a moved
 *      logical partition takes its record along, move.c), the room joining
 *      at the container's end, which grows into free space after it.
 * When there is no way, the message names the shortfall, and
 * partctl_plan.shortfall holds it for a caller that looks for more room
 * (partctl_make_storage lists the system caches that could go).
 * On MBR the new partition is a primary when a slot is free (keeping one
 * slot: the last one becomes an extended container, as fdisk suggests), a
 * logical one inside the extended partition otherwise, growing the
 * container into free space right after it when needed.  Four primaries and
 * no extended partition: no way, and we say so. */
#include <errno.h>
#include <string.h>

#include "partctl/partctl.h"

#define MiB (1024ULL * 1024)

typedef const struct partctl_plan_part cpart;

struct ctx {
	const struct partctl_plan_disk *d;
	const char *disk;      /* for messages */
	uint64_t g, need;
	bool dos;
	cpart **top;           /* primaries and the extended container, by start */
	size_t ntop;
	cpart **log;           /* logical partitions, by start */
	size_t nlog;
	cpart *ext;
	unsigned free_slots;
	uint64_t largest_free; /* for messages */
};

static uint64_t align_up(uint64_t v, uint64_t g) { return (v + g - 1) / g * g; }
static uint64_t align_down(uint64_t v, uint64_t g) { return v / g * g; }
static uint64_t pend(cpart *p) { return p->part.start + p->part.size; }

uint64_t partctl_plan_keep(const struct partctl_fsinfo *fs, uint64_t grain)
{
	if (!fs->resizable || !fs->min_size)
		return 0;
	if (!grain)
		grain = MiB;
	return align_up(fs->min_size + fs->min_size / 20 + 64 * MiB, grain);
}

const char *partctl_plan_op_name(enum partctl_plan_op op)
{
	switch (op) {
	case PARTCTL_OP_SHRINK: return "shrink";
	case PARTCTL_OP_MOVE: return "move";
	case PARTCTL_OP_GROW_EXTENDED: return "grow-extended";
	case PARTCTL_OP_CREATE_EXTENDED: return "create-extended";
	case PARTCTL_OP_CREATE: return "create";
	}
	return "?";
}

static int by_start(const void *a, const void *b)
{
	cpart *x = *(cpart *const *)a, *y = *(cpart *const *)b;

	return x->part.start < y->part.start ? -1 : x->part.start > y->part.start;
}

static bool used(const struct partctl_plan_disk *d, unsigned n)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->parts[i].part.n == n)
			return true;
	return false;
}

static unsigned next_primary(const struct partctl_plan_disk *d, unsigned skip)
{
	unsigned max = !strcmp(d->label, "dos") ? 4 : d->max_parts;

	for (unsigned n = 1; n <= max; n++)
		if (!used(d, n) && n != skip)
			return n;
	return 0;
}

static unsigned next_logical(const struct ctx *c)
{
	unsigned n = 4;

	for (size_t i = 0; i < c->nlog; i++)
		if (c->log[i]->part.n > n)
			n = c->log[i]->part.n;
	return n + 1;
}

static void add_step(struct partctl_plan *p, enum partctl_plan_op op, unsigned n, uint64_t from,
		     uint64_t to, uint64_t start, uint64_t size, bool logical)
{
	if (p->n < PARTCTL_PLAN_MAX_STEPS)
		p->steps[p->n++] = (struct partctl_plan_step){ op, n, from, to, start, size, logical };
}

static void finish(const struct ctx *c, struct partctl_plan *p, unsigned n, uint64_t start, bool logical)
{
	add_step(p, PARTCTL_OP_CREATE, n, 0, 0, start, c->need, logical);
	p->partition = n;
	p->start = start;
	p->size = c->need;
	p->logical = logical;
}

/* Extra room a new top-level partition needs in a region: on MBR with one
 * slot left and no container, an extended partition around a logical one
 * (its EBR takes a grain).  UINT64_MAX: impossible. */
static uint64_t top_overhead(const struct ctx *c)
{
	if (!c->dos)
		return c->free_slots ? 0 : UINT64_MAX;
	if (c->free_slots >= 2 || (c->free_slots == 1 && c->ext))
		return 0;
	if (c->free_slots == 1)
		return c->g;
	return UINT64_MAX;
}

/* Put the new partition at the start of top-level region s (aligned). */
static void place_top(const struct ctx *c, struct partctl_plan *p, uint64_t s)
{
	if (top_overhead(c) == 0) {
		finish(c, p, next_primary(c->d, 0), s, false);
		return;
	}
	add_step(p, PARTCTL_OP_CREATE_EXTENDED, next_primary(c->d, 0), 0, 0, s, c->g + c->need, false);
	finish(c, p, 5, s + c->g, true);
}

/* Start of a new logical partition after the last one (or in an empty
 * container): its EBR lies in the grain before it. */
static uint64_t logical_tail_start(const struct ctx *c)
{
	uint64_t last = 0;

	for (size_t i = 0; i < c->nlog; i++)
		if (pend(c->log[i]) > last)
			last = pend(c->log[i]);
	if (!c->nlog)
		return align_up(c->ext->part.start + c->g, c->g);
	return align_up(last + c->g, c->g);
}

/* End of the top-level free region right after the extended container
 * (its own end when none follows). */
static uint64_t after_ext_end(const struct ctx *c)
{
	for (size_t i = 0; i < c->ntop; i++)
		if (c->top[i]->part.start >= pend(c->ext))
			return c->top[i]->part.start;
	return c->d->end_usable;
}

/* 1. Free space that already fits: a free region of the table (its own
 * alignment and boot-record rules, partctl_table_free_regions), the
 * smallest that does. */
static bool try_free(struct ctx *c, struct partctl_plan *p)
{
	uint64_t best_s = 0, best_len = UINT64_MAX, ovh = top_overhead(c);
	bool best_inside = false;

	for (size_t i = 0; i < c->d->nregions; i++) {
		const struct partctl_region *r = &c->d->regions[i];
		uint64_t want = r->inside ? c->need : ovh == UINT64_MAX ? UINT64_MAX : c->need + ovh;

		if (r->inside && !c->ext)
			continue;
		if (align_down(r->size, c->g) > c->largest_free)
			c->largest_free = align_down(r->size, c->g);
		/* top level first: a primary where a slot is free */
		if (want != UINT64_MAX && r->size >= want &&
		    (best_len == UINT64_MAX || (best_inside && !r->inside) ||
		     (best_inside == r->inside && r->size < best_len))) {
			best_len = r->size;
			best_s = r->start;
			best_inside = r->inside;
		}
	}
	if (best_len != UINT64_MAX) {
		if (best_inside)
			finish(c, p, next_logical(c), best_s, true);
		else
			place_top(c, p, best_s);
		return true;
	}
	if (!c->ext)
		return false;
	/* grow the container into free space right after it */
	{
		uint64_t s = logical_tail_start(c), e = after_ext_end(c);

		if (e > s && e - s >= c->need) {
			add_step(p, PARTCTL_OP_GROW_EXTENDED, c->ext->part.n, c->ext->part.size,
				 s + c->need - c->ext->part.start, 0, 0, false);
			finish(c, p, next_logical(c), s, true);
			return true;
		}
	}
	return false;
}

/* Lay out: p ends at end, the k top-level partitions after it packed behind
 * it.  Returns the free region [*s, *e) behind them; starts[] the new ones. */
static void layout(const struct ctx *c, size_t idx, size_t k, uint64_t end, uint64_t *starts,
		   uint64_t *s, uint64_t *e)
{
	uint64_t cur = end;

	for (size_t j = 1; j <= k; j++) {
		cpart *q = c->top[idx + j];
		uint64_t qs = align_up(cur, c->g);

		if (qs > q->part.start)
			qs = q->part.start; /* an unaligned start: leave it */
		starts[j] = qs;
		cur = qs + q->part.size;
	}
	*s = align_up(cur, c->g);
	*e = idx + k + 1 < c->ntop ? c->top[idx + k + 1]->part.start : c->d->end_usable;
	if (*e < *s)
		*e = *s;
}

/* 2. Shrink top-level partition top[idx], moving up to all partitions after
 * it.  *best: the largest region this could make. */
static bool try_shrink_top(struct ctx *c, size_t idx, uint64_t keep, struct partctl_plan *p, uint64_t *best)
{
	cpart *pp = c->top[idx];
	uint64_t ovh = top_overhead(c), want, minend = align_up(pp->part.start + keep, c->g);
	uint64_t *starts;
	bool ok = false;

	if (ovh == UINT64_MAX)
		return false;
	want = c->need + ovh;
	if (minend > pend(pp))
		minend = pend(pp);
	starts = calloc(c->ntop + 1, sizeof(*starts));
	if (!starts)
		return false;
	for (size_t k = 0; idx + k < c->ntop && !ok; k++) {
		uint64_t s, e, end;

		if (k && c->top[idx + k]->part.extended)
			break; /* the extended container does not move */
		layout(c, idx, k, minend, starts, &s, &e);
		if (e - s >= ovh && e - s - ovh > *best)
			*best = e - s - ovh;
		if (e - s < want)
			continue;
		/* shrink no further than needed */
		end = minend + align_down(e - s - want, c->g);
		if (end > pend(pp))
			end = pend(pp);
		for (;;) {
			layout(c, idx, k, end, starts, &s, &e);
			if (e - s >= want || end <= minend)
				break;
			end = end - c->g < minend ? minend : end - c->g;
		}
		if (e - s < want)
			layout(c, idx, k, end = minend, starts, &s, &e);
		if (end < pend(pp))
			add_step(p, PARTCTL_OP_SHRINK, pp->part.n, pp->part.size, end - pp->part.start, 0, 0, false);
		for (size_t j = 1; j <= k; j++) {
			cpart *q = c->top[idx + j];

			if (starts[j] != q->part.start)
				add_step(p, PARTCTL_OP_MOVE, q->part.n, q->part.start, starts[j], 0, 0, false);
		}
		place_top(c, p, s);
		ok = true;
	}
	free(starts);
	return ok;
}

/* 2'. Shrink a logical partition; the room goes to a new logical one right
 * after it (logical partitions are not moved: their EBRs sit before them). */
static bool try_shrink_logical(struct ctx *c, size_t li, uint64_t keep, struct partctl_plan *p, uint64_t *best)
{
	cpart *pp = c->log[li];
	uint64_t minend = align_up(pp->part.start + keep, c->g), s, e, end;
	bool last = li + 1 == c->nlog;

	if (minend > pend(pp))
		minend = pend(pp);
	e = last ? after_ext_end(c) : c->log[li + 1]->part.start - c->g;
	s = align_up(minend + c->g, c->g);
	if (e > s && e - s > *best)
		*best = e - s;
	if (e <= s || e - s < c->need)
		return false;
	end = minend + align_down(e - s - c->need, c->g);
	if (end > pend(pp))
		end = pend(pp);
	s = align_up(end + c->g, c->g);
	if (end < pend(pp))
		add_step(p, PARTCTL_OP_SHRINK, pp->part.n, pp->part.size, end - pp->part.start, 0, 0, false);
	if (s + c->need > pend(c->ext))
		add_step(p, PARTCTL_OP_GROW_EXTENDED, c->ext->part.n, c->ext->part.size,
			 s + c->need - c->ext->part.start, 0, 0, false);
	finish(c, p, next_logical(c), s, true);
	return true;
}

struct cand {
	cpart *p;
	uint64_t keep, reclaim;
};

/* A row of partitions that pack down one behind the other: the top level
 * (primaries and the extended container, nothing between them), or the
 * logical partitions inside the container (each after the grain that holds
 * its boot record; a moved one takes its record along, move.c). */
struct row {
	cpart **v;             /* by start */
	size_t n;
	uint64_t ebr;          /* room each start leaves before it: 0 or the grain */
	uint64_t end;          /* where the free region after the last one ends */
	bool logical;
};

static struct row top_row(const struct ctx *c)
{
	return (struct row){ c->top, c->ntop, 0, c->d->end_usable, false };
}

/* The logicals' free region at the end runs on past the container into
 * the free space after it (the container grows). */
static struct row logical_row(const struct ctx *c)
{
	return (struct row){ c->log, c->nlog, c->g, after_ext_end(c), true };
}

/* Layout of v[first..last] with new sizes sz[] (indexed like v): v[first]
 * keeps its start, the others pack down behind it (never up).  starts[]
 * gets the new starts; [*s, *e) is the free region after v[last], up to
 * the next partition (its boot record) or the row's end. */
static void pack(const struct ctx *c, const struct row *w, size_t first, size_t last, const uint64_t *sz,
		 uint64_t *starts, uint64_t *s, uint64_t *e)
{
	uint64_t cur = w->v[first]->part.start;

	for (size_t j = first; j <= last; j++) {
		uint64_t qs = j == first ? cur : align_up(cur + w->ebr, c->g);

		if (qs > w->v[j]->part.start)
			qs = w->v[j]->part.start; /* an unaligned start: leave it */
		starts[j] = qs;
		cur = qs + sz[j];
	}
	*s = align_up(cur + w->ebr, c->g);
	*e = last + 1 < w->n ? w->v[last + 1]->part.start - w->ebr : w->end;
	if (*e < *s)
		*e = *s;
}

struct multi {
	size_t first, last, nshrink, nmove;
	uint64_t ranks;        /* bit k: cands[k] shrinks (fewer, lower: more room) */
	uint64_t *sz, *starts;
};

/* 2''. Shrink several filesystems of v[lo..last] of a row, the largest
 * room first, each to its minimum plus headroom (the last one only as far
 * as needed), and pack the partitions between them down so that the freed
 * space joins the free region after v[last].  false when even all of them
 * do not make want bytes there; *most: the largest region they could make. */
static bool multi_window(const struct ctx *c, const struct row *w, size_t lo, size_t last,
			 const struct cand *cands, size_t nc, uint64_t want, struct multi *m, uint64_t *most)
{
	uint64_t s, e;
	size_t first = SIZE_MAX, k;

	for (size_t j = 0; j < w->n; j++)
		m->sz[j] = w->v[j]->part.size;
	/* cands are sorted by room, largest first */
	for (k = 0; k < nc; k++) {
		size_t j;

		for (j = lo; j <= last && w->v[j] != cands[k].p; j++)
			;
		if (j > last)
			continue;
		m->sz[j] = align_up(w->v[j]->part.start + cands[k].keep, c->g) - w->v[j]->part.start;
		if (j < first)
			first = j;
		pack(c, w, first, last, m->sz, m->starts, &s, &e);
		if (e - s > *most)
			*most = e - s;
		if (e - s < want)
			continue;
		/* give back what is not needed, to the one shrunk last */
		{
			uint64_t full = w->v[j]->part.size, slack = align_down(e - s - want, c->g);

			m->sz[j] = m->sz[j] + slack > full ? full : m->sz[j] + slack;
			for (;;) {
				pack(c, w, first, last, m->sz, m->starts, &s, &e);
				if (e - s >= want || m->sz[j] <= c->g)
					break;
				m->sz[j] -= c->g;
			}
		}
		m->first = first;
		m->last = last;
		m->nshrink = m->nmove = 0;
		m->ranks = 0;
		for (size_t r = 0; r <= k && r < 64; r++)
			for (size_t q = first; q <= last; q++)
				if (w->v[q] == cands[r].p && m->sz[q] != w->v[q]->part.size)
					m->ranks |= 1ULL << r;
		for (size_t q = first; q <= last; q++) {
			m->nshrink += m->sz[q] != w->v[q]->part.size;
			m->nmove += m->starts[q] != w->v[q]->part.start;
		}
		return true;
	}
	return false;
}

/* The new partition in the region at s that a row's packing made: a
 * top-level one, or a logical one (growing the container when the region
 * runs past its end). */
static void place_row(const struct ctx *c, const struct row *w, struct partctl_plan *p, uint64_t s)
{
	if (!w->logical) {
		place_top(c, p, s);
		return;
	}
	if (s + c->need > pend(c->ext))
		add_step(p, PARTCTL_OP_GROW_EXTENDED, c->ext->part.n, c->ext->part.size,
			 s + c->need - c->ext->part.start, 0, 0, false);
	finish(c, p, next_logical(c), s, true);
}

static bool try_multi(const struct ctx *c, const struct row *w, const struct cand *cands, size_t nc,
		      struct partctl_plan *p, uint64_t *most)
{
	uint64_t ovh = w->logical ? 0 : top_overhead(c), want, s, e, region = 0;
	struct multi cur = { 0 }, best = { 0 };
	bool found = false;

	if (ovh == UINT64_MAX || !w->n)
		return false;
	want = c->need + ovh;
	cur.sz = calloc(w->n, sizeof(uint64_t));
	cur.starts = calloc(w->n, sizeof(uint64_t));
	best.sz = calloc(w->n, sizeof(uint64_t));
	best.starts = calloc(w->n, sizeof(uint64_t));
	if (!cur.sz || !cur.starts || !best.sz || !best.starts)
		goto out;
	/* every window of neighbours the extended container does not cut (it
	 * does not move); the fewest shrinks win, then those with the most
	 * room (largest room first), then the fewest moves */
	for (size_t last = 0; last < w->n; last++) {
		for (size_t lo = last + 1; lo-- > 0;) {
			if (w->v[lo]->part.extended)
				break;
			if (!multi_window(c, w, lo, last, cands, nc, want, &cur, &region) ||
			    cur.nshrink + cur.nmove + 3 > PARTCTL_PLAN_MAX_STEPS)
				continue;
			if (!found || cur.nshrink < best.nshrink ||
			    (cur.nshrink == best.nshrink && cur.ranks < best.ranks) ||
			    (cur.nshrink == best.nshrink && cur.ranks == best.ranks && cur.nmove < best.nmove)) {
				best.ranks = cur.ranks;
				best.first = cur.first;
				best.last = cur.last;
				best.nshrink = cur.nshrink;
				best.nmove = cur.nmove;
				memcpy(best.sz, cur.sz, w->n * sizeof(uint64_t));
				memcpy(best.starts, cur.starts, w->n * sizeof(uint64_t));
				found = true;
			}
		}
	}
	if (!found)
		goto out;
	/* in disk order: a partition shrinks where it is, then moves down into
	 * the room its lower neighbour has just left */
	for (size_t j = best.first; j <= best.last; j++) {
		cpart *q = w->v[j];

		if (best.sz[j] != q->part.size)
			add_step(p, PARTCTL_OP_SHRINK, q->part.n, q->part.size, best.sz[j], 0, 0, false);
		if (best.starts[j] != q->part.start)
			add_step(p, PARTCTL_OP_MOVE, q->part.n, q->part.start, best.starts[j], 0, 0, false);
	}
	pack(c, w, best.first, best.last, best.sz, best.starts, &s, &e);
	place_row(c, w, p, s);
out:
	/* multi_window counts the whole region; the new partition gets it less
	 * the overhead */
	if (region > ovh && region - ovh > *most)
		*most = region - ovh;
	free(cur.sz);
	free(cur.starts);
	free(best.sz);
	free(best.starts);
	return found;
}

static int by_reclaim(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	if (x->reclaim != y->reclaim)
		return x->reclaim > y->reclaim ? -1 : 1;
	return x->p->part.n < y->p->part.n ? -1 : 1;
}

static int compute(struct ctx *c, struct partctl_plan *out, ip_error *e)
{
	const struct partctl_plan_disk *d = c->d;
	struct cand *cands;
	size_t nc = 0;
	uint64_t best = 0;
	cpart *bestp = NULL;
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ], b3[IP_SIZE_BUFSZ], b4[IP_SIZE_BUFSZ];
	char names[96] = "";

	if (c->dos && c->free_slots == 0 && !c->ext)
		return ip_bad(e, -ENOSPC,
			      "all four primary partitions of %s are used and none is an extended partition: an MBR holds no fifth partition; free a primary slot or convert the disk to GPT",
			      c->disk);
	if (!c->dos && c->free_slots == 0)
		return ip_bad(e, -ENOSPC, "every entry of the partition table of %s is used: delete a partition first", c->disk);
	if (try_free(c, out))
		return 0;

	cands = calloc(d->n + 1, sizeof(*cands));
	if (!cands)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (size_t i = 0; i < d->n; i++) {
		cpart *p = &d->parts[i];
		uint64_t keep = partctl_plan_keep(&p->fs, c->g);
		uint64_t minend = align_up(p->part.start + keep, c->g);

		if (p->part.extended || !keep || minend >= pend(p)) {
			/* a full filesystem: named when nothing else can help */
			if (keep && !p->part.extended && !bestp)
				bestp = p;
			continue;
		}
		cands[nc++] = (struct cand){ p, keep, pend(p) - minend };
	}
	qsort(cands, nc, sizeof(*cands), by_reclaim);
	for (size_t i = 0; i < nc; i++) {
		struct partctl_plan trial = { .need = c->need };
		uint64_t b = 0;
		bool ok = false;

		if (cands[i].p->part.logical) {
			for (size_t j = 0; j < c->nlog; j++)
				if (c->log[j] == cands[i].p)
					ok = try_shrink_logical(c, j, cands[i].keep, &trial, &b);
		} else {
			for (size_t j = 0; j < c->ntop; j++)
				if (c->top[j] == cands[i].p)
					ok = try_shrink_top(c, j, cands[i].keep, &trial, &b);
		}
		if (ok) {
			*out = trial;
			free(cands);
			return 0;
		}
		if (b > best || i == 0) {
			best = b > best ? b : best;
			bestp = cands[i].p;
		}
	}
	/* several filesystems together: top-level ones, then logical ones
	 * packed inside the container */
	for (int k = 0; k < 2; k++) {
		struct partctl_plan trial = { .need = c->need };
		struct row w = k ? (c->ext ? logical_row(c) : (struct row){ 0 }) : top_row(c);
		uint64_t b = 0;

		if (try_multi(c, &w, cands, nc, &trial, &b)) {
			*out = trial;
			free(cands);
			return 0;
		}
		if (b > best)
			best = b;
	}
	/* which filesystems the most was counted with, for the message */
	for (size_t i = 0, k = 0; i < nc; i++) {
		size_t len = strlen(names);

		if (k++ && len < sizeof(names))
			snprintf(names + len, sizeof(names) - len, i + 1 == nc ? " and " : ", ");
		len = strlen(names);
		if (len < sizeof(names))
			snprintf(names + len, sizeof(names) - len, "%u", cands[i].p->part.n);
	}
	free(cands);
	if (best < c->largest_free)
		best = c->largest_free;
	out->shortfall = c->need > best ? c->need - best : 0;
	ip_format_size(c->need, b1, sizeof(b1));
	ip_format_size(best, b2, sizeof(b2));
	ip_format_size(c->need > best ? c->need - best : 0, b3, sizeof(b3));
	if (!bestp) {
		char why[160] = "";

		/* name a filesystem that cannot shrink, so the user knows why */
		for (size_t i = 0; i < d->n && !why[0]; i++)
			if (d->parts[i].fs.type[0] && !d->parts[i].fs.resizable)
				snprintf(why, sizeof(why), "; partition %u holds %s, which inplace cannot shrink%s",
					 d->parts[i].part.n, d->parts[i].fs.type,
					 !strcmp(d->parts[i].fs.type, "xfs") ? " (xfs cannot shrink at all)" : "");
		return ip_bad(e, -ENOSPC,
			      "no room for %s on %s: the largest free region is %s and no partition can shrink (inplace shrinks ext2/3/4 and NTFS)%s: free space or ask for less",
			      b1, c->disk, b2, why);
	}
	ip_format_size(bestp->fs.min_size, b4, sizeof(b4));
	if (nc > 1)
		return ip_bad(e, -ENOSPC,
			      "no room for %s on %s: %s short; the most that shrinking partitions %s to their filesystems' minimums plus headroom and moving can free is %s: delete files or ask for less",
			      b1, c->disk, b3, names, b2);
	return ip_bad(e, -ENOSPC,
		      "no room for %s on %s: %s short; the most that shrinking (partition %u to its filesystem's minimum %s plus headroom) and moving can free is %s: delete files or ask for less",
		      b1, c->disk, b3, bestp->part.n, b4, b2);
}

int partctl_plan_compute(const struct partctl_plan_disk *d, uint64_t need, struct partctl_plan *out,
			 ip_error *e)
{
	struct ctx c = { .d = d, .disk = d->path ? d->path : "the disk" };
	int r;

	memset(out, 0, sizeof(*out));
	c.g = d->grain ? d->grain : MiB;
	if (!need)
		return ip_bad(e, -EINVAL, "the storage partition cannot be empty: give --need");
	c.need = align_up(need, c.g);
	out->need = c.need;
	c.dos = !strcmp(d->label, "dos");
	c.top = calloc(d->n + 1, sizeof(*c.top));
	c.log = calloc(d->n + 1, sizeof(*c.log));
	if (!c.top || !c.log) {
		free(c.top);
		free(c.log);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < d->n; i++) {
		cpart *p = &d->parts[i];

		if (p->part.logical)
			c.log[c.nlog++] = p;
		else
			c.top[c.ntop++] = p;
		if (p->part.extended)
			c.ext = p;
	}
	qsort(c.top, c.ntop, sizeof(*c.top), by_start);
	qsort(c.log, c.nlog, sizeof(*c.log), by_start);
	if (c.dos)
		c.free_slots = c.ntop >= 4 ? 0 : 4 - (unsigned)c.ntop;
	else
		c.free_slots = d->max_parts > d->n ? d->max_parts - (unsigned)d->n : 0;
	r = compute(&c, out, e);
	free(c.top);
	free(c.log);
	return r;
}
