/* test_move.c — partctl_move and partctl_resume on a small GPT image whose
 * partition holds a sector-numbered pattern (no filesystem: every block is
 * copied): both directions, overlapping or not, 1 MiB shifts, a child killed
 * mid-move and resumed, bad input leaving the image unchanged. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "common/common.h"
#include "partctl/partctl.h"

#define MiB (1024ULL * 1024)
#define PSIZE (8 * MiB)
#define JOFF 20480 /* GPT with 128 entries: see partctl/move.c */

struct fx {
	char dir[64];
	char img[96];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char script[128];
	int fd;

	strcpy(f->dir, "/tmp/test_move.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->img, sizeof(f->img), "%s/disk.img", f->dir);
	snprintf(script, sizeof(script), "%s/script", f->dir);
	fd = open(f->img, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)(48 * MiB)) < 0)
		return -1;
	close(fd);
	const char *s = "label: gpt\nstart=1MiB, size=8MiB, type=linux\nstart=30MiB, size=4MiB, type=linux\n";
	if (ip_write_file_atomic(script, s, strlen(s), 0600, NULL) < 0)
		return -1;
	const char *argv[] = { "sfdisk", "-q", "--no-reread", "--no-tell-kernel", f->img, NULL };
	ip_proc p = { .argv = argv, .stdin_path = script };
	if (ip_proc_run(&p, NULL) < 0 || p.exit_code != 0)
		return -1;
	ip_proc_clear(&p);
	unlink(script);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	unlink(f->img);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Sector i of the partition holds i and a salt in every 8 bytes. */
static void pattern(uint8_t *buf, uint64_t sector)
{
	for (int i = 0; i < 512; i += 8) {
		uint64_t v = sector * 0x9E3779B97F4A7C15ULL + (uint64_t)i;
		memcpy(buf + i, &v, 8);
	}
}

static void fill(struct fx *f, uint64_t start)
{
	ip_disk *d;
	uint8_t *buf = malloc(PSIZE);

	for (uint64_t s = 0; s < PSIZE / 512; s++)
		pattern(buf + s * 512, s);
	assert_int_equal(ip_disk_open(f->img, IP_DISK_RDWR, &d, NULL), 0);
	assert_int_equal(ip_disk_write(d, buf, PSIZE, start, NULL), 0);
	ip_disk_free(d);
	free(buf);
}

static void expect_at(struct fx *f, uint64_t start)
{
	uint64_t off = 0, size = 0;
	uint8_t want[512], *buf = malloc(PSIZE), *gap = malloc(MiB - JOFF), *zero = calloc(1, MiB - JOFF);
	ip_disk *d;
	ip_error e = { 0 };

	assert_int_equal(partctl_part_range(f->img, 1, &off, &size, &e), 0);
	assert_int_equal(off, start);
	assert_int_equal(size, PSIZE);
	assert_int_equal(ip_disk_open(f->img, IP_DISK_RDONLY, &d, NULL), 0);
	assert_int_equal(ip_disk_read(d, buf, PSIZE, start, NULL), 0);
	for (uint64_t s = 0; s < PSIZE / 512; s++) {
		pattern(want, s);
		assert_memory_equal(buf + s * 512, want, 512);
	}
	/* the journal and the stored map are cleared once the move is done */
	assert_int_equal(ip_disk_read(d, gap, MiB - JOFF, JOFF, NULL), 0);
	assert_memory_equal(gap, zero, MiB - JOFF);
	free(gap);
	free(zero);
	ip_disk_free(d);
	free(buf);
}

static void do_move(struct fx *f, uint64_t to)
{
	ip_error e = { 0 };

	if (partctl_move(f->img, 1, to, &e) < 0)
		fail_msg("move to %llu: %s", (unsigned long long)to, e.msg);
	expect_at(f, to);
}

static void test_moves(void **state)
{
	struct fx *f = *state;
	bool did = true;

	fill(f, MiB);
	do_move(f, 2 * MiB);   /* forward by 1 MiB */
	do_move(f, 12 * MiB);  /* forward, not overlapping */
	do_move(f, 5 * MiB);   /* backward, overlapping */
	do_move(f, 4 * MiB);   /* backward by 1 MiB */
	do_move(f, 36 * MiB);  /* past partition 2 */
	assert_int_equal(partctl_resume(f->img, &did, NULL), 0);
	assert_false(did);
}

static void test_bad_input(void **state)
{
	struct fx *f = *state;
	const uint64_t bad[] = { MiB + 512, 28 * MiB, 44 * MiB, 0, MiB };
	struct stat before, after;
	char *c0 = NULL, *c1 = NULL;
	size_t l0, l1;

	fill(f, MiB);
	assert_int_equal(ip_read_file(f->img, 64 * MiB, &c0, &l0, NULL), 0);
	assert_int_equal(stat(f->img, &before), 0);
	for (size_t i = 0; i < IP_ARRAY_SIZE(bad); i++) {
		ip_error e = { 0 };

		assert_true(partctl_move(f->img, 1, bad[i], &e) < 0);
		assert_int_equal(e.status, IP_EXIT_BADINPUT);
		assert_non_null(e.msg[0] ? e.msg : NULL);
		assert_null(strchr(e.msg, '\n'));
	}
	ip_error e = { 0 };
	assert_true(partctl_move(f->img, 7, 20 * MiB, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_int_equal(stat(f->img, &after), 0);
	assert_int_equal(ip_read_file(f->img, 64 * MiB, &c1, &l1, NULL), 0);
	assert_int_equal(l0, l1);
	assert_memory_equal(c0, c1, l0);
	free(c0);
	free(c1);
}

/* Kill a child in the middle of a move (once the journal shows progress),
 * then resume. */
static void test_killed_and_resumed(void **state)
{
	struct fx *f = *state;
	bool did = false;
	ip_error e = { 0 };

	for (int round = 0; round < 4; round++) {
		uint64_t from = round % 2 ? 2 * MiB : MiB, to = round % 2 ? MiB : 2 * MiB;
		pid_t pid;
		int status;

		fill(f, from);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(partctl_move(f->img, 1, to, NULL) < 0 ? 1 : 0);
		/* wait for the first progress record, then at most a little more */
		for (int i = 0; i < 200000; i++) {
			ip_disk *d;
			ip_journal *j;
			char rec[512];
			size_t n = sizeof(rec);
			bool seen = false;

			if (ip_disk_open(f->img, IP_DISK_RDONLY, &d, NULL) == 0) {
				if (ip_journal_open_disk(d, JOFF, &j, NULL) == 0) {
					seen = ip_journal_read(j, rec, &n, NULL) == 0;
					ip_journal_free(j);
				}
				ip_disk_free(d);
			}
			if (seen || waitpid(pid, &status, WNOHANG) == pid)
				break;
		}
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		if (partctl_resume(f->img, &did, &e) < 0)
			fail_msg("resume: %s", e.msg);
		{
			uint64_t off = 0, size;

			assert_int_equal(partctl_part_range(f->img, 1, &off, &size, NULL), 0);
			assert_true(off == from || off == to);
			if (off == from) /* killed before the intent was recorded */
				do_move(f, to);
			expect_at(f, to);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_moves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_killed_and_resumed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
