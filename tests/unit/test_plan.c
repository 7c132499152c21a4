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

static void test_free_tail(void **state)
{
	struct partctl_plan_disk d = disk("gpt", 4 * GiB, 1);
	struct partctl_plan p;
	ip_error e = { 0 };

	(void)state;
	part(0, 1, MiB, GiB, 100 * MiB);
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
		cmocka_unit_test(test_no_shrinkable),
		cmocka_unit_test(test_keep),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
