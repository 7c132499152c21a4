/* test_journal.c — the crash-safe journal: alternation, torn and corrupt
 * slots, clearing, and both back ends (disk region and file). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/common.h"

#define SLOT IP_JOURNAL_SLOT
#define JOFF 8192

struct fx {
	char dir[64];
	char img[96];
	char file[96];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/test_journal.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->img, sizeof(f->img), "%s/disk.img", f->dir);
	snprintf(f->file, sizeof(f->file), "%s/journal", f->dir);
	int fd = open(f->img, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		return -1;
	close(fd);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	unlink(f->img);
	unlink(f->file);
	rmdir(f->dir);
	free(f);
	return 0;
}

static ip_journal *open_disk(struct fx *f, ip_disk **d)
{
	ip_journal *j = NULL;
	ip_error e = { 0 };

	assert_int_equal(ip_disk_open(f->img, IP_DISK_RDWR, d, &e), 0);
	assert_int_equal(ip_journal_open_disk(*d, JOFF, &j, &e), 0);
	return j;
}

static void rec_fill(char *p, size_t len, int tag)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (char)(tag * 31 + (int)i);
}

/* Read the record and check it is the one written with tag. */
static void expect_rec(ip_journal *j, size_t len, int tag)
{
	char got[IP_JOURNAL_PAYLOAD_MAX], want[IP_JOURNAL_PAYLOAD_MAX];
	size_t n = sizeof(got);
	ip_error e = { 0 };

	assert_int_equal(ip_journal_read(j, got, &n, &e), 0);
	assert_int_equal(n, len);
	rec_fill(want, len, tag);
	assert_memory_equal(got, want, len);
}

static void test_empty(void **state)
{
	struct fx *f = *state;
	ip_disk *d;
	ip_journal *j = open_disk(f, &d);
	char buf[64];
	size_t n = sizeof(buf);

	assert_int_equal(ip_journal_read(j, buf, &n, NULL), -ENOENT);
	ip_journal_free(j);
	ip_disk_free(d);
}

static void test_alternates(void **state)
{
	struct fx *f = *state;
	ip_disk *d;
	ip_journal *j = open_disk(f, &d);
	char rec[200];
	ip_error e = { 0 };
	uint8_t s0[SLOT], s1[SLOT];

	for (int t = 1; t <= 5; t++) {
		rec_fill(rec, sizeof(rec), t);
		assert_int_equal(ip_journal_write(j, rec, sizeof(rec), &e), 0);
		expect_rec(j, sizeof(rec), t);
	}
	/* both slots hold a record: writes alternated */
	assert_int_equal(ip_disk_read(d, s0, SLOT, JOFF, &e), 0);
	assert_int_equal(ip_disk_read(d, s1, SLOT, JOFF + SLOT, &e), 0);
	assert_memory_equal(s0, "IPJRNL01", 8);
	assert_memory_equal(s1, "IPJRNL01", 8);
	ip_journal_free(j);
	/* a fresh handle (another process after a crash) sees the newest */
	assert_int_equal(ip_journal_open_disk(d, JOFF, &j, &e), 0);
	expect_rec(j, sizeof(rec), 5);
	rec_fill(rec, 10, 6);
	assert_int_equal(ip_journal_write(j, rec, 10, &e), 0);
	expect_rec(j, 10, 6);
	ip_journal_free(j);
	ip_disk_free(d);
}

/* Damage the slot holding the newest record in several ways: the previous
 * record must come back. */
static void test_torn_and_corrupt(void **state)
{
	struct fx *f = *state;
	ip_disk *d;
	ip_journal *j = open_disk(f, &d);
	char rec[1000];
	ip_error e = { 0 };
	uint8_t slot[SLOT], saved[SLOT];

	rec_fill(rec, sizeof(rec), 1);
	assert_int_equal(ip_journal_write(j, rec, sizeof(rec), &e), 0); /* slot 0 */
	rec_fill(rec, sizeof(rec), 2);
	assert_int_equal(ip_journal_write(j, rec, sizeof(rec), &e), 0); /* slot 1 */
	expect_rec(j, sizeof(rec), 2);
	assert_int_equal(ip_disk_read(d, saved, SLOT, JOFF + SLOT, &e), 0);

	/* torn: only the first 512-byte sector of the newer slot reached the disk */
	memset(slot, 0, sizeof(slot));
	memcpy(slot, saved, 512);
	assert_int_equal(ip_disk_write(d, slot, SLOT, JOFF + SLOT, &e), 0);
	expect_rec(j, sizeof(rec), 1);

	/* a flipped payload bit */
	memcpy(slot, saved, SLOT);
	slot[128 + 500] ^= 0x10;
	assert_int_equal(ip_disk_write(d, slot, SLOT, JOFF + SLOT, &e), 0);
	expect_rec(j, sizeof(rec), 1);

	/* a corrupt length field */
	memcpy(slot, saved, SLOT);
	slot[13] = 0x7f;
	assert_int_equal(ip_disk_write(d, slot, SLOT, JOFF + SLOT, &e), 0);
	expect_rec(j, sizeof(rec), 1);

	/* an unknown version */
	memcpy(slot, saved, SLOT);
	slot[8] = 9;
	assert_int_equal(ip_disk_write(d, slot, SLOT, JOFF + SLOT, &e), 0);
	expect_rec(j, sizeof(rec), 1);

	/* back intact: the newer wins again */
	assert_int_equal(ip_disk_write(d, saved, SLOT, JOFF + SLOT, &e), 0);
	expect_rec(j, sizeof(rec), 2);

	/* after a read that fell back to slot 0, the next write must go to the
	 * damaged slot 1, never over the surviving record */
	memset(slot, 0xa5, sizeof(slot));
	assert_int_equal(ip_disk_write(d, slot, SLOT, JOFF + SLOT, &e), 0);
	expect_rec(j, sizeof(rec), 1);
	rec_fill(rec, 50, 3);
	assert_int_equal(ip_journal_write(j, rec, 50, &e), 0);
	assert_int_equal(ip_disk_read(d, slot, SLOT, JOFF, &e), 0);
	assert_int_equal(slot[128], (uint8_t)(1 * 31)); /* slot 0 still record 1 */
	expect_rec(j, 50, 3);

	/* both damaged: nothing */
	memset(slot, 0xff, sizeof(slot));
	assert_int_equal(ip_disk_write(d, slot, SLOT, JOFF, &e), 0);
	assert_int_equal(ip_disk_write(d, slot, SLOT, JOFF + SLOT, &e), 0);
	size_t n = sizeof(rec);
	assert_int_equal(ip_journal_read(j, rec, &n, NULL), -ENOENT);
	ip_journal_free(j);
	ip_disk_free(d);
}

static void test_clear(void **state)
{
	struct fx *f = *state;
	ip_disk *d;
	ip_journal *j = open_disk(f, &d);
	char rec[16] = "progress";
	ip_error e = { 0 };
	size_t n = sizeof(rec);
	uint8_t buf[2 * SLOT], zero[2 * SLOT];

	assert_int_equal(ip_journal_write(j, rec, sizeof(rec), &e), 0);
	assert_int_equal(ip_journal_write(j, rec, sizeof(rec), &e), 0);
	assert_int_equal(ip_journal_clear(j, &e), 0);
	assert_int_equal(ip_journal_read(j, rec, &n, NULL), -ENOENT);
	memset(zero, 0, sizeof(zero));
	assert_int_equal(ip_disk_read(d, buf, sizeof(buf), JOFF, &e), 0);
	assert_memory_equal(buf, zero, sizeof(buf));
	/* usable again after clearing */
	assert_int_equal(ip_journal_write(j, rec, sizeof(rec), &e), 0);
	n = sizeof(rec);
	assert_int_equal(ip_journal_read(j, rec, &n, &e), 0);
	ip_journal_free(j);
	ip_disk_free(d);
}

static void test_file_backend(void **state)
{
	struct fx *f = *state;
	ip_journal *j = NULL;
	ip_error e = { 0 };
	char rec[IP_JOURNAL_PAYLOAD_MAX];
	size_t n = sizeof(rec);
	struct stat st;

	assert_int_equal(ip_journal_open_file(f->file, &j, &e), 0);
	assert_int_equal(ip_journal_read(j, rec, &n, NULL), -ENOENT);
	for (int t = 1; t <= 3; t++) {
		rec_fill(rec, sizeof(rec), t);
		assert_int_equal(ip_journal_write(j, rec, sizeof(rec), &e), 0);
	}
	ip_journal_free(j);
	assert_int_equal(stat(f->file, &st), 0);
	assert_int_equal(st.st_size, 2 * SLOT);
	assert_int_equal(ip_journal_open_file(f->file, &j, &e), 0);
	expect_rec(j, sizeof(rec), 3);
	/* too large a record is refused, the old one stays */
	assert_true(ip_journal_write(j, rec, IP_JOURNAL_PAYLOAD_MAX + 1, &e) < 0);
	expect_rec(j, sizeof(rec), 3);
	/* a caller buffer too small for the record is an error, not an overflow */
	n = 10;
	assert_int_equal(ip_journal_read(j, rec, &n, &e), -EOVERFLOW);
	/* a file cut short inside slot 1 (record 2): record 3 in slot 0 stays */
	assert_int_equal(truncate(f->file, SLOT + 100), 0);
	expect_rec(j, sizeof(rec), 3);
	ip_journal_free(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alternates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_and_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_backend, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
