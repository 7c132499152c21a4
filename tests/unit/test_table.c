/* test_table.c — the partition-table API on real image files made by sfdisk:
 * reading, adding, resizing and deleting on GPT and MBR (with extended and
 * logical partitions), and the refusals that protect a disk. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "partctl/internal.h"

#define MiB (1024ULL * 1024)

static char dir[] = "/tmp/test_table.XXXXXX";
/* keep: set TEST_TABLE_KEEP=1 to inspect images */

static void make_image(const char *path, uint64_t size, const char *script)
{
	char spath[600];
	FILE *f;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
	if (!script)
		return;
	snprintf(spath, sizeof(spath), "%s.sfdisk", path);
	f = fopen(spath, "we");
	assert_non_null(f);
	fputs(script, f);
	fclose(f);
	{
		const char *argv[] = { "sfdisk", "-q", "--no-reread", "--no-tell-kernel", path, NULL };
		ip_proc p = { .argv = argv, .stdin_path = spath };
		ip_error e = { 0 };

		assert_int_equal(ip_proc_run(&p, &e), 0);
		if (p.exit_code)
			fail_msg("sfdisk: %s", p.err);
		ip_proc_clear(&p);
	}
}

static char *img(const char *name)
{
	static char buf[600];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	const char *argv[] = { "rm", "-rf", dir, NULL };

	(void)state;
	if (getenv("TEST_TABLE_KEEP"))
		return 0;
	return ip_spawn(argv, NULL, NULL);
}

static void test_gpt_roundtrip(void **state)
{
	partctl_table *t = NULL;
	ip_error e = { 0 };
	struct partctl_part spec = { .start = 40 * MiB, .size = 8 * MiB, .type = "ntfs", .name = "data" };
	unsigned n = 0;
	uint64_t off, size;
	const char *path = img("gpt.img");

	(void)state;
	make_image(path, 64 * MiB, "label: gpt\nstart=2048, size=20480, type=linux\nstart=22528, size=20480\n");
	assert_int_equal(partctl_table_open(path, true, &t, &e), 0);
	assert_string_equal(partctl_table_label(t), "gpt");
	assert_int_equal(partctl_table_sector_size(t), 512);
	assert_int_equal(partctl_table_disk_size(t), 64 * MiB);
	assert_int_equal(partctl_table_grain(t), MiB);
	assert_int_equal(partctl_table_count(t), 2);
	assert_int_equal(partctl_table_at(t, 0)->start, MiB);
	assert_int_equal(partctl_table_at(t, 1)->size, 10 * MiB);
	assert_string_equal(partctl_table_find(t, 1)->type, "linux");
	assert_null(partctl_table_find(t, 3));

	assert_int_equal(partctl_table_add(t, &spec, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_int_equal(partctl_table_set_range(t, 2, 11 * MiB, 5 * MiB, &e), 0);
	assert_int_equal(partctl_table_write(t, &e), 0);
	partctl_table_free(t);

	assert_int_equal(partctl_part_range(path, 3, &off, &size, &e), 0);
	assert_int_equal(off, 40 * MiB);
	assert_int_equal(size, 8 * MiB);
	assert_int_equal(partctl_part_range(path, 2, &off, &size, &e), 0);
	assert_int_equal(size, 5 * MiB);
	assert_int_equal(partctl_part_range(path, 9, &off, &size, &e), -ENOENT);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);

	assert_int_equal(partctl_table_open(path, false, &t, &e), 0);
	assert_string_equal(partctl_table_find(t, 3)->type, "ntfs");
	assert_string_equal(partctl_table_find(t, 3)->name, "data");
	partctl_table_free(t);

	assert_int_equal(partctl_table_open(path, true, &t, &e), 0);
	assert_int_equal(partctl_table_delete(t, 1, &e), 0);
	assert_int_equal(partctl_table_write(t, &e), 0);
	partctl_table_free(t);
	assert_int_equal(partctl_part_range(path, 1, &off, &size, &e), -ENOENT);
}

static void test_refusals(void **state)
{
	partctl_table *t = NULL;
	ip_error e = { 0 };
	struct partctl_part spec = { .start = 5 * MiB, .size = 8 * MiB };
	const char *path = img("refuse.img");

	(void)state;
	make_image(path, 64 * MiB, "label: gpt\nstart=2048, size=20480\n");
	assert_int_equal(partctl_table_open(path, true, &t, &e), 0);
	/* overlapping */
	assert_true(partctl_table_add(t, &spec, NULL, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	/* unaligned */
	spec.start = 20 * MiB + 512;
	assert_true(partctl_table_add(t, &spec, NULL, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	/* beyond the disk */
	spec.start = 60 * MiB;
	assert_true(partctl_table_add(t, &spec, NULL, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	/* no such partition */
	assert_int_equal(partctl_table_delete(t, 7, &e), -ENOENT);
	assert_true(partctl_table_set_range(t, 1, MiB, 100 * MiB, &e) < 0);
	partctl_table_free(t);

	memset(&e, 0, sizeof(e));
	assert_true(partctl_table_open(img("missing.img"), false, &t, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_true(partctl_table_open(dir, false, &t, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_true(partctl_table_open("/dev/null", false, &t, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	make_image(img("blank.img"), 16 * MiB, NULL);
	assert_true(partctl_table_open(img("blank.img"), false, &t, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
}

static void test_mbr_extended(void **state)
{
	partctl_table *t = NULL;
	ip_error e = { 0 };
	struct partctl_part ext = { .start = 32 * MiB, .size = 24 * MiB, .extended = true };
	struct partctl_part l1 = { .start = 33 * MiB, .size = 8 * MiB, .logical = true };
	struct partctl_part l2 = { .start = 43 * MiB, .size = 8 * MiB, .logical = true, .type = "ntfs" };
	struct partctl_part p = { .start = 58 * MiB, .size = 4 * MiB };
	unsigned n = 0;
	const char *path = img("mbr.img");

	(void)state;
	make_image(path, 64 * MiB, "label: dos\nstart=2048, size=20480\nstart=22528, size=20480\n");
	assert_int_equal(partctl_table_open(path, true, &t, &e), 0);
	assert_string_equal(partctl_table_label(t), "dos");
	/* the extended partition may not overlap partition 2 (11-21 MiB) */
	ext.start = 20 * MiB;
	assert_true(partctl_table_add(t, &ext, NULL, &e) < 0);
	ext.start = 32 * MiB;
	assert_int_equal(partctl_table_add(t, &ext, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_true(partctl_table_find(t, 3)->extended);
	assert_int_equal(partctl_table_add(t, &l1, &n, &e), 0);
	assert_int_equal(n, 5);
	assert_int_equal(partctl_table_add(t, &l2, &n, &e), 0);
	assert_int_equal(n, 6);
	assert_true(partctl_table_find(t, 6)->logical);
	assert_int_equal(partctl_table_add(t, &p, &n, &e), 0);
	assert_int_equal(n, 4);
	/* four slots used: no more primaries */
	p.start = 22 * MiB;
	assert_int_equal(partctl_table_add(t, &p, &n, &e), -ENOSPC);
	assert_int_equal(partctl_table_write(t, &e), 0);
	partctl_table_free(t);

	assert_int_equal(partctl_table_open(path, true, &t, &e), 0);
	assert_int_equal(partctl_table_count(t), 6);
	assert_string_equal(partctl_table_find(t, 6)->type, "ntfs");
	/* the container cannot go while it holds logicals */
	assert_int_equal(partctl_table_delete(t, 3, &e), -EBUSY);
	/* the container cannot shrink below its logicals; it can grow */
	assert_true(partctl_table_set_range(t, 3, 32 * MiB, 16 * MiB, &e) < 0);
	assert_int_equal(partctl_table_delete(t, 4, &e), 0);
	assert_int_equal(partctl_table_set_range(t, 3, 32 * MiB, 31 * MiB, &e), 0);
	/* a logical partition may shrink in place */
	assert_int_equal(partctl_table_set_range(t, 6, 43 * MiB, 4 * MiB, &e), 0);
	assert_int_equal(partctl_table_write(t, &e), 0);
	partctl_table_free(t);

	assert_int_equal(partctl_table_open(path, false, &t, &e), 0);
	assert_int_equal(partctl_table_find(t, 3)->size, 31 * MiB);
	assert_int_equal(partctl_table_find(t, 6)->size, 4 * MiB);
	assert_null(partctl_table_find(t, 4));
	partctl_table_free(t);
}

/* Free regions come from libfdisk: aligned starts, the EBR left out before
 * a new logical, and the tail of a GPT disk that grew after it was made. */
static void test_free_regions(void **state)
{
	partctl_table *t = NULL;
	struct partctl_region *r = NULL;
	ip_error e = { 0 };
	size_t n = 0;
	int fd;

	(void)state;
	make_image(img("free-mbr.img"), 256 * MiB,
		   "label: dos\nstart=1MiB, size=64MiB, type=83\nstart=100MiB, size=100MiB, type=5\nstart=101MiB, size=20MiB, type=83\n");
	assert_int_equal(partctl_table_open(img("free-mbr.img"), false, &t, &e), 0);
	assert_int_equal(partctl_table_head_end(t), 512);
	assert_int_equal(partctl_table_free_regions(t, &r, &n, &e), 0);
	assert_int_equal(n, 3);
	/* between 1 and the container, inside it after 5 and its next EBR's
	 * grain, after the container */
	assert_int_equal(r[0].start, 65 * MiB);
	assert_int_equal(r[0].size, 35 * MiB);
	assert_false(r[0].inside);
	assert_int_equal(r[1].start, 122 * MiB);
	assert_int_equal(r[1].start + r[1].size, 200 * MiB);
	assert_true(r[1].inside);
	assert_int_equal(r[2].start, 200 * MiB);
	assert_false(r[2].inside);
	free(r);
	partctl_table_free(t);

	make_image(img("free-gpt.img"), 64 * MiB, "label: gpt\nstart=1MiB, size=10MiB\n");
	fd = open(img("free-gpt.img"), O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(128 * MiB)), 0); /* the disk grew */
	close(fd);
	assert_int_equal(partctl_table_open(img("free-gpt.img"), false, &t, &e), 0);
	assert_int_equal(partctl_table_head_end(t), 34 * 512);
	assert_int_equal(partctl_table_free_regions(t, &r, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].start, 11 * MiB);
	assert_int_equal(r[0].start + r[0].size, partctl_table_end_usable(t));
	assert_true(partctl_table_end_usable(t) > 127 * MiB);
	free(r);
	partctl_table_free(t);
}

/* A logical partition going down: the free region between two logicals
 * ends before the next one's boot record, and the record moves to the
 * grain before the new start (partition and number unchanged) before the
 * move, after which the start can follow. */
static void test_logical_ebr(void **state)
{
	partctl_table *t = NULL;
	struct partctl_region *r = NULL;
	ip_disk *d = NULL;
	ip_error e = { 0 };
	uint64_t ebr;
	size_t n = 0;
	char sd[600];

	(void)state;
	snprintf(sd, sizeof(sd), "%s/state", dir);
	setenv("INPLACE_STATE_DIR", sd, 1);
	make_image(img("ebr.img"), 256 * MiB,
		   "label: dos\nstart=1MiB, size=64MiB, type=83\nstart=100MiB, size=100MiB, type=5\n"
		   "start=101MiB, size=20MiB, type=83\nstart=150MiB, size=20MiB, type=83\n");
	assert_int_equal(partctl_table_open(img("ebr.img"), false, &t, &e), 0);
	assert_int_equal(partctl_table_free_regions(t, &r, &n, &e), 0);
	assert_true(n >= 2);
	assert_int_equal(r[1].start, 122 * MiB);
	assert_int_equal(r[1].start + r[1].size, 149 * MiB);
	assert_true(r[1].inside);
	free(r);
	assert_int_equal(partctl_table_ebr(t, 6, &ebr, &e), 0);
	assert_int_equal(ebr, 149 * MiB);
	partctl_table_free(t);

	assert_int_equal(ip_disk_open(img("ebr.img"), IP_DISK_RDWR, &d, &e), 0);
	assert_int_equal(partctl_table_ebr_before(d, 6, 130 * MiB, &e), 0);
	assert_int_equal(partctl_table_ebr_before(d, 6, 130 * MiB, &e), 0); /* idempotent */
	ip_disk_free(d);
	assert_int_equal(partctl_table_open(img("ebr.img"), true, &t, &e), 0);
	assert_int_equal(partctl_table_ebr(t, 6, &ebr, &e), 0);
	assert_int_equal(ebr, 129 * MiB);
	assert_int_equal(partctl_table_find(t, 6)->start, 150 * MiB);
	assert_int_equal(partctl_table_find(t, 5)->start, 101 * MiB);
	/* the start follows; its record stays */
	assert_int_equal(partctl_table_set_range(t, 6, 130 * MiB, 20 * MiB, &e), 0);
	assert_int_equal(partctl_table_write(t, &e), 0);
	partctl_table_free(t);
	assert_int_equal(partctl_table_open(img("ebr.img"), false, &t, &e), 0);
	assert_int_equal(partctl_table_find(t, 6)->start, 130 * MiB);
	assert_int_equal(partctl_table_ebr(t, 6, &ebr, &e), 0);
	assert_int_equal(ebr, 129 * MiB);
	/* the first logical's record is the container's first sector */
	assert_int_equal(partctl_table_move_ebr(t, 5, 100 * MiB + MiB / 2, &e), -EINVAL);
	partctl_table_free(t);
	unsetenv("INPLACE_STATE_DIR");
}

/* partctl_create/partctl_delete: the rules before any write, dry runs
 * that write nothing, the number of the new partition. */
static void test_create_delete(void **state)
{
	struct partctl_create_spec s = { .start = 70 * MiB, .size = 8 * MiB };
	struct partctl_create_result res;
	struct partctl_delete_result dres;
	struct partctl_opts dry = { .dry_run = true };
	ip_error e = { 0 };
	uint64_t off, size;

	(void)state;
	make_image(img("create.img"), 128 * MiB, "label: gpt\nstart=1MiB, size=64MiB\n");
	assert_int_equal(partctl_create(img("create.img"), &s, &dry, &res, &e), 0);
	assert_int_equal(res.part.n, 2);
	assert_string_equal(res.fs, "none");
	assert_int_equal(partctl_part_range(img("create.img"), 2, &off, &size, &e), -ENOENT);
	assert_int_equal(partctl_create(img("create.img"), &s, NULL, &res, &e), 0);
	assert_int_equal(partctl_part_range(img("create.img"), 2, &off, &size, &e), 0);
	assert_int_equal(off, 70 * MiB);
	assert_int_equal(size, 8 * MiB);

	/* refusals: exit-2 bad input */
	s.type = "extended";
	assert_int_equal(partctl_create(img("create.img"), &s, NULL, &res, &e), -EINVAL);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	s.type = NULL;
	s.fs = "xfs";
	assert_int_equal(partctl_create(img("create.img"), &s, NULL, &res, &e), -EINVAL);
	s.fs = "ext4";
	s.label = "a-label-longer-than-16";
	assert_int_equal(partctl_create(img("create.img"), &s, NULL, &res, &e), -EINVAL);
	s.label = NULL;
	s.fs = NULL;
	s.start = 4 * MiB; /* inside partition 1 */
	assert_int_equal(partctl_create(img("create.img"), &s, NULL, &res, &e), -EEXIST);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);

	assert_int_equal(partctl_delete(img("create.img"), 2, &dry, &dres, &e), 0);
	assert_int_equal(dres.part.start, 70 * MiB);
	assert_int_equal(partctl_part_range(img("create.img"), 2, &off, &size, &e), 0);
	assert_int_equal(partctl_delete(img("create.img"), 2, NULL, &dres, &e), 0);
	assert_int_equal(partctl_part_range(img("create.img"), 2, &off, &size, &e), -ENOENT);
	assert_int_equal(partctl_delete(img("create.img"), 2, NULL, &dres, &e), -ENOENT);
}

/* Write MBR entry i (0-3) by hand: sfdisk refuses overlapping entries. */
static void mbr_entry(const char *path, int i, uint8_t type, uint32_t lba, uint32_t sectors)
{
	uint8_t ent[16] = { 0 }, sig[2] = { 0x55, 0xaa };
	int fd = open(path, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	ent[4] = type;
	memcpy(ent + 8, &lba, 4);     /* little endian on x86 */
	memcpy(ent + 12, &sectors, 4);
	assert_int_equal(pwrite(fd, ent, 16, 446 + 16 * i), 16);
	assert_int_equal(pwrite(fd, sig, 2, 510), 2);
	close(fd);
}

/* A damaged table is refused by every open, before any write, and shown
 * by partctl_table_inspect with the fault named. */
static void test_damaged_refused(void **state)
{
	partctl_table *t = NULL;
	ip_error e = { 0 };
	struct partctl_create_spec s = { .start = 100 * MiB, .size = 8 * MiB };

	(void)state;
	make_image(img("overlap.img"), 128 * MiB, NULL);
	mbr_entry(img("overlap.img"), 0, 0x83, 2048, 40960);   /* 1 MiB + 20 MiB */
	mbr_entry(img("overlap.img"), 1, 0x83, 20480, 40960);  /* 10 MiB + 20 MiB */
	assert_int_equal(partctl_table_open(img("overlap.img"), false, &t, &e), -EUCLEAN);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "partitions 1 and 2"));
	assert_int_equal(partctl_table_open(img("overlap.img"), true, &t, &e), -EUCLEAN);
	assert_int_equal(partctl_create(img("overlap.img"), &s, NULL, NULL, &e), -EUCLEAN);
	assert_int_equal(partctl_table_inspect(img("overlap.img"), &t, &e), 0);
	assert_non_null(strstr(partctl_table_problem(t), "overlap"));
	partctl_table_free(t);

	/* a logical outside its container cannot be written by sfdisk either;
	 * an entry past the end of the disk can be */
	make_image(img("past-end.img"), 64 * MiB, NULL);
	mbr_entry(img("past-end.img"), 0, 0x83, 2048, 262144); /* 128 MiB on a 64 MiB disk */
	assert_int_equal(partctl_table_open(img("past-end.img"), false, &t, &e), -EUCLEAN);
	assert_non_null(strstr(e.msg, "outside the usable area"));
}

/* ---- the verdict on a table written while the disk is in use ------------- */

/* [busy_off, busy_off + busy_len): what a fake mount uses */
struct fake_use {
	uint64_t off, len;
};

static bool fake_in_use(void *arg, uint64_t off, uint64_t len, char *what, size_t wlen)
{
	const struct fake_use *u = arg;
	uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;

	snprintf(what, wlen, "mounted on /");
	return u->len && off < u->off + u->len && u->off < end;
}

static struct partctl_part part(unsigned n, uint64_t start, uint64_t size)
{
	return (struct partctl_part){ .n = n, .start = start * MiB, .size = size * MiB };
}

static void test_busy_verdict(void **state)
{
	/* 1 the running root, 2 the store after it, 3 another partition */
	const struct partctl_part old[] = { part(1, 1, 100), part(2, 101, 50), part(3, 151, 50) };
	struct fake_use root = { 1 * MiB, 100 * MiB }, none = { 0, 0 }, store = { 101 * MiB, 50 * MiB };
	struct partctl_part now[3];
	ip_error e = { 0 };

	(void)state;
	/* unchanged */
	assert_int_equal(partctl_busy_verdict("d", old, 3, old, 3, fake_in_use, &root, &e), 0);
	/* the store deleted, the root's end grown over it: reclaim */
	now[0] = part(1, 1, 150);
	now[1] = old[2];
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 2, fake_in_use, &root, &e), 0);
	/* … but not while the store is mounted */
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 2, fake_in_use, &store, &e), -EBUSY);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "partition 2 of d cannot be deleted while it is mounted on /"));
	/* the mounted root deleted */
	assert_int_equal(partctl_busy_verdict("d", old, 3, old + 1, 2, fake_in_use, &root, &e), -EBUSY);
	assert_non_null(strstr(e.msg, "partition 1 of d cannot be deleted"));
	/* the mounted root shrunk, moved, its start changed while its end grows */
	now[0] = part(1, 1, 90);
	now[1] = old[1];
	now[2] = old[2];
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 3, fake_in_use, &root, &e), -EBUSY);
	assert_non_null(strstr(e.msg, "partition 1 of d cannot be shrunk"));
	now[0] = part(1, 2, 100);
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 3, fake_in_use, &root, &e), -EBUSY);
	assert_non_null(strstr(e.msg, "cannot be moved"));
	now[0] = part(1, 0, 150);
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 3, fake_in_use, &root, &e), -EBUSY);
	/* an unmounted partition moved while the disk is in use: refused too */
	now[0] = old[0];
	now[2] = part(3, 160, 40);
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 3, fake_in_use, &root, &e), -EBUSY);
	assert_non_null(strstr(e.msg, "partition 3 of d cannot be moved"));
	/* an entry added, or a grow over space in use (the store mounted) */
	now[2] = part(4, 201, 10);
	assert_int_equal(partctl_busy_verdict("d", old, 2, now, 3, fake_in_use, &root, &e), -EBUSY);
	assert_non_null(strstr(e.msg, "cannot be added"));
	now[0] = part(1, 1, 120);
	assert_int_equal(partctl_busy_verdict("d", old, 2, now, 2, fake_in_use, &store, &e), -EBUSY);
	assert_non_null(strstr(e.msg, "cannot grow over space that is mounted on /"));
	/* a renumbered partition (a logical after a deleted one) is a move */
	now[0] = old[0];
	now[1] = part(2, 151, 50);
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 2, fake_in_use, &root, &e), -EBUSY);
	/* with nothing in use every change is allowed */
	assert_int_equal(partctl_busy_verdict("d", old, 3, now, 2, fake_in_use, &none, &e), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gpt_roundtrip),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_mbr_extended),
		cmocka_unit_test(test_free_regions),
		cmocka_unit_test(test_logical_ebr),
		cmocka_unit_test(test_create_delete),
		cmocka_unit_test(test_damaged_refused),
		cmocka_unit_test(test_busy_verdict),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
