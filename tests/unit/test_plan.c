/* test_plan.c — the planner on described disks, no disks needed: free
 * space, shrinking the best candidate, moving to join free regions, MBR
 * primaries / extended / logical rules, and the refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "partctl/partctl.h"

#define MiB (1024ULL * 1024)
#define GiB (1024ULL * MiB)

static struct partctl_plan_part parts[8];
static struct partctl_region regs[4];

/* A free region [start, end) as partctl_table_free_regions reports it
 * (aligned; inside: in the container, a boot record's grain left out). */
static void region(struct partctl_plan_disk *d, uint64_t start, uint64_t end, bool inside)
{
	regs[d->nregions++] = (struct partctl_region){ start, end - start, inside };
	d->regions = regs;
}

static struct partctl_plan_disk disk(const char *label, uint64_t size, size_t n)
{
	struct partctl_plan_disk d = {
		.path = "disk.img",
		.sector_size = 512,
		.size = size,
		.grain = MiB,
		.first_usable = MiB,
		.end_usable = !strcmp(label, "gpt") ? size - 33 * 512 : size,
		.max_parts = !strcmp(label, "gpt") ? 128 : 4,
		.n = n,
		.parts = parts,
	};

	snprintf(d.label, sizeof(d.label), "%s", label);
	return d;
}

/* Partition i: number n at [start, start+size) with an fs of min size min
 * (0: no filesystem inplace can shrink). */
static void part(size_t i, unsigned n, uint64_t start, uint64_t size, uint64_t min)
{
	memset(&parts[i], 0, sizeof(parts[i]));
	parts[i].part.n = n;
	parts[i].part.start = start;
	parts[i].part.size = size;
	parts[i].part.logical = n >= 5;
	if (min) {
		snprintf(parts[i].fs.type, sizeof(parts[i].fs.type), "ext4");
		parts[i].fs.size = size;
		parts[i].fs.min_size = min;
		parts[i].fs.used = min;
		parts[i].fs.resizable = true;
	}
}

static void extended(size_t i, unsigned n, uint64_t start, uint64_t size)
{
	part(i, n, start, size, 0);
	parts[i].part.extended = true;
}

/* Every step list must leave partitions inside the disk and apart. */
static void check_sane(const struct partctl_plan_disk *d, const struct partctl_plan *p)
{
	assert_true(p->n > 0);
	assert_int_equal(p->steps[p->n - 1].op, PARTCTL_OP_CREATE);
	assert_int_equal(p->start % d->grain, 0);
	assert_true(p->size >= p->need);
	assert_true(p->start + p->size <= d->end_usable);
	for (size_t i = 0; i < d->n; i++) {
		uint64_t s = d->parts[i].part.start, z = d->parts[i].part.size;

		if (d->parts[i].part.extended)
			continue;
		for (size_t k = 0; k < p->n; k++) {
			if (p->steps[k].partition != d->parts[i].part.n)
				continue;
			if (p->steps[k].op == PARTCTL_OP_SHRINK) {
				z = p->steps[k].to;
				assert_true(z >= partctl_plan_keep(&d->parts[i].fs, MiB));
			}
			if (p->steps[k].op == PARTCTL_OP_MOVE)
				s = p->steps[k].to;
		}
		if (!p->logical || d->parts[i].part.logical)
			assert_true(s + z <= p->start || p->start + p->size <= s);
	}
}

/* Carry the steps out on paper, in order: after every step no two
 * top-level partitions overlap, none leaves the usable area, and a move only
 * goes down (the planner packs; the move journal handles both, but a plan
 * that moves up would be a bug here). */
static void check_steps_in_order(const struct partctl_plan_disk *d, const struct partctl_plan *p)
{
	uint64_t st[8], sz[8];

	for (size_t i = 0; i < d->n; i++) {
		st[i] = d->parts[i].part.start;
		sz[i] = d->parts[i].part.size;
	}
	for (size_t k = 0; k < p->n; k++) {
		const struct partctl_plan_step *s = &p->steps[k];

		for (size_t i = 0; i < d->n; i++) {
			if (d->parts[i].part.n != s->partition)
				continue;
			if (s->op == PARTCTL_OP_SHRINK) {
				assert_true(s->to < sz[i]);
				sz[i] = s->to;
			} else if (s->op == PARTCTL_OP_MOVE) {
				assert_int_equal(s->from, st[i]);
				assert_true(s->to < st[i]);
				assert_int_equal(s->to % d->grain, 0);
				st[i] = s->to;
			}
		}
		for (size_t i = 0; i < d->n; i++) {
			if (d->parts[i].part.logical)
				continue;
			assert_true(st[i] >= d->first_usable && st[i] + sz[i] <= d->end_usable);
			for (size_t j = i + 1; j < d->n; j++)
				if (!d->parts[j].part.logical && !d->parts[j].part.extended && !d->parts[i].part.extended)
					assert_true(st[i] + sz[i] <= st[j] || st[j] + sz[j] <= st[i]);
		}
	}
}

static void test_free_tail(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 4 * GiB, 1);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, GiB, 100 * MiB);
	region(&d, GiB + MiB, d.end_usable, false);
	assert_int_equal(partctl_plan_compute(&d, 1000 * MiB, &p, &e), 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.partition, 2);
	assert_int_equal(p.start, GiB + MiB);
	assert_int_equal(p.size, 1000 * MiB);
	check_sane(&d, &p);
}

static void test_shrink_last(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 4 * GiB, 2);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, GiB, 900 * MiB);
	part(1, 2, GiB + MiB, 3 * GiB - 2 * MiB, 500 * MiB);
	assert_int_equal(partctl_plan_compute(&d, GiB, &p, &e), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.steps[0].op, PARTCTL_OP_SHRINK);
	assert_int_equal(p.steps[0].partition, 2);
	/* only as far as needed: the new partition ends at the usable end */
	assert_true(d.end_usable - (p.start + p.size) < MiB);
	assert_int_equal(p.partition, 3);
	check_sane(&d, &p);
}

static void test_shrink_middle_and_move(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 4 * GiB, 3);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	/* 1 can give 750 MiB, 2 cannot shrink, 512 MiB free after 2: only
	 * moving 2 towards 1 joins the two */
	part(0, 1, MiB, GiB, 200 * MiB);
	part(1, 2, GiB + MiB, 512 * MiB, 450 * MiB);
	part(2, 3, 2 * GiB + MiB, 2 * GiB - 2 * MiB, 0); /* unknown fs */
	assert_int_equal(partctl_plan_compute(&d, GiB, &p, &e), 0);
	assert_int_equal(p.n, 3);
	assert_int_equal(p.steps[0].op, PARTCTL_OP_SHRINK);
	assert_int_equal(p.steps[0].partition, 1);
	assert_int_equal(p.steps[1].op, PARTCTL_OP_MOVE);
	assert_int_equal(p.steps[1].partition, 2);
	assert_true(p.steps[1].to < p.steps[1].from);
	assert_int_equal(p.partition, 4);
	check_sane(&d, &p);
}

static void test_too_full(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 2 * GiB, 1);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 2 * GiB - 2 * MiB, 1945 * MiB); /* 95% full */
	assert_int_equal(partctl_plan_compute(&d, 512 * MiB, &p, &e), -ENOSPC);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "short"));
	assert_non_null(strstr(e.msg, "partition 1"));
}

static void test_mbr_four_primaries(void **state)
{
	struct partctl_plan_disk d = disk("dos", 4 * GiB, 4);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 512 * MiB, 10 * MiB);
	part(1, 2, 513 * MiB, 512 * MiB, 10 * MiB);
	part(2, 3, 1025 * MiB, 512 * MiB, 10 * MiB);
	part(3, 4, 1537 * MiB, 512 * MiB, 10 * MiB); /* 2 GiB free after it */
	region(&d, 2049 * MiB, d.end_usable, false);
	assert_int_equal(partctl_plan_compute(&d, 256 * MiB, &p, &e), -ENOSPC);
	assert_non_null(strstr(e.msg, "four primary"));
}

static void test_mbr_last_slot_makes_extended(void **state)
{
	struct partctl_plan_disk d = disk("dos", 4 * GiB, 3);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 512 * MiB, 10 * MiB);
	part(1, 2, 513 * MiB, 512 * MiB, 10 * MiB);
	part(2, 3, 1025 * MiB, 512 * MiB, 10 * MiB);
	region(&d, 1537 * MiB, d.end_usable, false);
	assert_int_equal(partctl_plan_compute(&d, GiB, &p, &e), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.steps[0].op, PARTCTL_OP_CREATE_EXTENDED);
	assert_int_equal(p.steps[0].partition, 4);
	assert_true(p.logical);
	assert_int_equal(p.partition, 5);
	assert_true(p.start > p.steps[0].start);
	assert_true(p.start + p.size <= p.steps[0].start + p.steps[0].size);
	check_sane(&d, &p);
}

static void test_mbr_logical_in_extended(void **state)
{
	struct partctl_plan_disk d = disk("dos", 4 * GiB, 6);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 512 * MiB, 10 * MiB);
	part(1, 2, 513 * MiB, 512 * MiB, 10 * MiB);
	part(2, 3, 1025 * MiB, 512 * MiB, 10 * MiB);
	extended(3, 4, 1537 * MiB, 4 * GiB - 1537 * MiB);
	part(4, 5, 1538 * MiB, 512 * MiB, 500 * MiB);
	part(5, 6, 2051 * MiB, 256 * MiB, 250 * MiB);
	region(&d, 2308 * MiB, d.end_usable, true);
	/* free inside the container after logical 6 */
	assert_int_equal(partctl_plan_compute(&d, GiB, &p, &e), 0);
	assert_int_equal(p.n, 1);
	assert_true(p.logical);
	assert_int_equal(p.partition, 7);
	assert_true(p.start >= 2051 * MiB + 256 * MiB + MiB);
	check_sane(&d, &p);
}

static void test_mbr_grow_extended(void **state)
{
	struct partctl_plan_disk d = disk("dos", 4 * GiB, 6);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 512 * MiB, 10 * MiB);
	part(1, 2, 513 * MiB, 512 * MiB, 10 * MiB);
	part(2, 3, 1025 * MiB, 512 * MiB, 10 * MiB);
	extended(3, 4, 1537 * MiB, 1024 * MiB);
	part(4, 5, 1538 * MiB, 1000 * MiB, 990 * MiB);
	part(5, 6, 2539 * MiB, 21 * MiB, 0);
	region(&d, 2561 * MiB, d.end_usable, false);
	assert_int_equal(partctl_plan_compute(&d, GiB, &p, &e), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.steps[0].op, PARTCTL_OP_GROW_EXTENDED);
	assert_int_equal(p.steps[0].partition, 4);
	assert_true(1537 * MiB + p.steps[0].to >= p.start + p.size);
	assert_true(p.logical);
	check_sane(&d, &p);
}

static void test_mbr_shrink_logical(void **state)
{
	struct partctl_plan_disk d = disk("dos", 4 * GiB, 5);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 512 * MiB, 500 * MiB);
	part(1, 2, 513 * MiB, 512 * MiB, 500 * MiB);
	part(2, 3, 1025 * MiB, 512 * MiB, 500 * MiB);
	extended(3, 4, 1537 * MiB, 4 * GiB - 1537 * MiB);
	part(4, 5, 1538 * MiB, 4 * GiB - 1538 * MiB, 300 * MiB);
	assert_int_equal(partctl_plan_compute(&d, GiB, &p, &e), 0);
	assert_int_equal(p.steps[0].op, PARTCTL_OP_SHRINK);
	assert_int_equal(p.steps[0].partition, 5);
	assert_true(p.logical);
	assert_int_equal(p.partition, 6);
	check_sane(&d, &p);
}

/* Three logical partitions filling the container, none with enough room
 * alone: the two roomiest shrink and the last one moves down behind its
 * shrunk neighbour (its boot record along), so the room joins at the end
 * of the container, where the new logical partition goes. */
static void test_mbr_pack_logicals(void **state)
{
	struct partctl_plan_disk d = disk("dos", 2048 * MiB, 5);
	uint64_t st[5], sz[5];
	unsigned shrunk = 0, moved = 0;
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 300 * MiB, 280 * MiB);
	extended(1, 2, 301 * MiB, 1747 * MiB);
	part(2, 5, 302 * MiB, 500 * MiB, 300 * MiB);
	part(3, 6, 803 * MiB, 500 * MiB, 250 * MiB);
	part(4, 7, 1304 * MiB, 744 * MiB, 300 * MiB);
	assert_int_equal(partctl_plan_compute(&d, 500 * MiB, &p, &e), 0);
	for (size_t i = 0; i < d.n; i++) {
		st[i] = parts[i].part.start;
		sz[i] = parts[i].part.size;
	}
	for (size_t k = 0; k < p.n; k++) {
		const struct partctl_plan_step *s = &p.steps[k];
		size_t i = s->partition == 5 ? 2 : s->partition == 6 ? 3 : s->partition == 7 ? 4 : 0;

		if (s->op == PARTCTL_OP_SHRINK) {
			shrunk |= 1u << s->partition;
			sz[i] = s->to;
		} else if (s->op == PARTCTL_OP_MOVE) {
			moved |= 1u << s->partition;
			assert_true(s->to < st[i]);
			st[i] = s->to;
		} else {
			continue;
		}
		/* after every step: each logical keeps the grain before it for
		 * its boot record, clear of its lower neighbour */
		for (size_t j = 3; j < 5; j++)
			assert_true(st[j - 1] + sz[j - 1] <= st[j] - MiB);
	}
	assert_int_equal(shrunk, (1u << 6) | (1u << 7));
	assert_int_equal(moved, 1u << 7);
	assert_true(p.logical);
	assert_int_equal(p.partition, 8);
	assert_true(st[4] + sz[4] <= p.start - MiB);
	assert_true(p.start + p.size <= 2048 * MiB);
	check_sane(&d, &p);
	/* asked for more than all three give: refused, naming the shortfall */
	assert_int_equal(partctl_plan_compute(&d, 900 * MiB, &p, &e), -ENOSPC);
	assert_non_null(strstr(e.msg, "short"));
}

static void test_no_shrinkable(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 2 * GiB, 1);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 2 * GiB - 2 * MiB, 0);
	assert_int_equal(partctl_plan_compute(&d, 512 * MiB, &p, &e), -ENOSPC);
	assert_non_null(strstr(e.msg, "no partition can shrink"));
	assert_int_equal(partctl_plan_compute(&d, 0, &p, &e), -EINVAL);
}

/* The MBR disk: three primaries 300M/1.2G/547M, each about half
 * full, no free space, 400M asked.  No single filesystem gives 400M (plus
 * the grain of the extended container the last slot becomes), two do. */
static void test_mbr_three_primaries_two_shrinks(void **state)
{
	struct partctl_plan_disk d = disk("dos", 2077 * MiB, 3);
	struct partctl_plan p;
	unsigned shrunk = 0;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, 300 * MiB, 150 * MiB);
	part(1, 2, 301 * MiB, 1229 * MiB, 800 * MiB);
	part(2, 3, 1530 * MiB, 547 * MiB, 273 * MiB);
	assert_int_equal(partctl_plan_compute(&d, 400 * MiB, &p, &e), 0);
	for (size_t k = 0; k < p.n; k++)
		if (p.steps[k].op == PARTCTL_OP_SHRINK)
			shrunk |= 1u << p.steps[k].partition;
	/* the two with the most room, 2 and 3; 1 untouched */
	assert_int_equal(shrunk, (1u << 2) | (1u << 3));
	assert_true(p.logical);
	assert_int_equal(p.steps[p.n - 2].op, PARTCTL_OP_CREATE_EXTENDED);
	assert_int_equal(p.steps[p.n - 2].partition, 4);
	assert_int_equal(p.partition, 5);
	check_sane(&d, &p);
	check_steps_in_order(&d, &p);
	/* without 3's room, 2 and 1 together fall short */
	part(0, 1, MiB, 300 * MiB, 200 * MiB);
	part(2, 3, 1530 * MiB, 547 * MiB, 500 * MiB);
	assert_int_equal(partctl_plan_compute(&d, 400 * MiB, &p, &e), -ENOSPC);
	assert_non_null(strstr(e.msg, "short"));
}

/* GPT root + /home + swap, no free space: /home has the most room, root
 * the rest; /home moves down behind root. */
static void test_gpt_root_home_swap(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 3584 * MiB + MiB, 3);
	struct partctl_plan p;
	unsigned shrunk = 0, moved = 0;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, GiB, 500 * MiB);
	part(1, 2, GiB + MiB, 2 * GiB, 1200 * MiB);
	part(2, 3, 3 * GiB + MiB, 512 * MiB - 33 * 512, 0);
	snprintf(parts[2].fs.type, sizeof(parts[2].fs.type), "swap");
	assert_int_equal(partctl_plan_compute(&d, 900 * MiB, &p, &e), 0);
	for (size_t k = 0; k < p.n; k++) {
		if (p.steps[k].op == PARTCTL_OP_SHRINK)
			shrunk |= 1u << p.steps[k].partition;
		if (p.steps[k].op == PARTCTL_OP_MOVE)
			moved |= 1u << p.steps[k].partition;
	}
	assert_int_equal(shrunk, (1u << 1) | (1u << 2));
	/* the new partition takes the room before swap: only /home moves */
	assert_int_equal(moved, 1u << 2);
	assert_int_equal(p.partition, 4);
	assert_false(p.logical);
	/* only as far as needed: little more than asked is left over */
	assert_true(parts[2].part.start - (p.start + p.size) < 2 * MiB);
	check_sane(&d, &p);
	check_steps_in_order(&d, &p);
}

/* Used + asked really exceeds the disk: one line naming the shortfall and
 * the filesystems counted. */
static void test_multi_too_full(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 3584 * MiB + MiB, 3);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, GiB, 500 * MiB);
	part(1, 2, GiB + MiB, 2 * GiB, 1200 * MiB);
	part(2, 3, 3 * GiB + MiB, 512 * MiB - 33 * 512, 0);
	assert_int_equal(partctl_plan_compute(&d, 1400 * MiB, &p, &e), -ENOSPC);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "short"));
	assert_non_null(strstr(e.msg, "partitions 2 and 1"));
	assert_null(strchr(e.msg, '\n'));
	/* most: 2 keeps 1324M, 1 keeps 589M: 435 + 724 = 1159M freed */
	assert_int_equal(p.shortfall, 1400 * MiB - 1159 * MiB);
}

static void test_keep(void **state)
{
	struct partctl_fsinfo fs = { .resizable = true, .min_size = 1000 * MiB };

	(void)state;
	assert_int_equal(partctl_plan_keep(&fs, MiB), 1114 * MiB);
	fs.resizable = false;
	assert_int_equal(partctl_plan_keep(&fs, MiB), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_free_tail),
		cmocka_unit_test(test_shrink_last),
		cmocka_unit_test(test_shrink_middle_and_move),
		cmocka_unit_test(test_too_full),
		cmocka_unit_test(test_mbr_four_primaries),
		cmocka_unit_test(test_mbr_last_slot_makes_extended),
		cmocka_unit_test(test_mbr_logical_in_extended),
		cmocka_unit_test(test_mbr_grow_extended),
		cmocka_unit_test(test_mbr_shrink_logical),
		cmocka_unit_test(test_mbr_pack_logicals),
		cmocka_unit_test(test_no_shrinkable),
		cmocka_unit_test(test_mbr_three_primaries_two_shrinks),
		cmocka_unit_test(test_gpt_root_home_swap),
		cmocka_unit_test(test_multi_too_full),
		cmocka_unit_test(test_keep),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
