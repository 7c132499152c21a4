/* test_common.c — unit tests of common/: sizes, spawning, durable files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/common.h"

/* A name quoted from a store or a job file cannot break an error into
 * several lines or send escape sequences to the admin's terminal. */
static void test_error_one_line(void **state)
{
	ip_error e = { 0 };

	(void)state;
	assert_int_equal(ip_bad(&e, -EINVAL, "group '%s' is unknown", "ev\nil\x1b[2J\x7f"), -EINVAL);
	assert_string_equal(e.msg, "group 'ev?il?[2J?' is unknown");
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	ip_error_prefix(&e, "store %s", "a\rb");
	assert_string_equal(e.msg, "store a?b: group 'ev?il?[2J?' is unknown");
	/* UTF-8 names stay as they are */
	ip_bad(&e, -EINVAL, "user '%s'", "J\xc3\xbcrgen");
	assert_string_equal(e.msg, "user 'J\xc3\xbcrgen'");
}

static void test_parse_size(void **state)
{
	uint64_t v = 0;
	ip_error e = { 0 };

	(void)state;
	assert_int_equal(ip_parse_size("512MiB", 512, &v, &e), 0);
	assert_int_equal(v, 512ULL << 20);
	assert_int_equal(ip_parse_size("8G", 512, &v, &e), 0);
	assert_int_equal(v, 8ULL << 30);
	assert_int_equal(ip_parse_size("8GB", 512, &v, &e), 0);
	assert_int_equal(v, 8000000000ULL);
	assert_int_equal(ip_parse_size("2048s", 512, &v, &e), 0);
	assert_int_equal(v, 1048576);
	assert_int_equal(ip_parse_size("2048s", 4096, &v, &e), 0);
	assert_int_equal(v, 8388608);
	assert_int_equal(ip_parse_size("1.5G", 512, &v, &e), 0);
	assert_int_equal(v, 3ULL << 29);
	assert_int_equal(ip_parse_size("12345", 512, &v, &e), 0);
	assert_int_equal(v, 12345);
}

static void test_parse_size_rejects(void **state)
{
	const char *bad[] = { "", "G", "-1G", "12Q", "99999999999999999999", "1.5s", "0x10", "16EiB" };
	uint64_t v;

	(void)state;
	for (size_t i = 0; i < IP_ARRAY_SIZE(bad); i++) {
		ip_error e = { 0 };

		assert_true(ip_parse_size(bad[i], 512, &v, &e) < 0);
		assert_int_equal(e.status, IP_EXIT_BADINPUT);
		assert_true(strlen(e.msg) > 0);
	}
	assert_true(ip_parse_size("17179869184G", 512, &v, NULL) < 0); /* overflow */
}

static void test_format_size(void **state)
{
	char b[IP_SIZE_BUFSZ];

	(void)state;
	assert_string_equal(ip_format_size(100, b, sizeof(b)), "100 B");
	assert_string_equal(ip_format_size(3ULL << 30, b, sizeof(b)), "3.0 GiB");
	assert_string_equal(ip_format_size(1536ULL << 20, b, sizeof(b)), "1.5 GiB");
}

static void test_spawn_captures(void **state)
{
	const char *argv[] = { "sh", "-c", "echo out; echo first >&2; echo 'the cause' >&2; exit 3", NULL };
	const char *ok[] = { "sh", "-c", "printf hello", NULL };
	ip_error e = { 0 };
	char *out = NULL;

	(void)state;
	assert_int_equal(ip_spawn(ok, &out, &e), 0);
	assert_string_equal(out, "hello");
	free(out);
	assert_true(ip_spawn(argv, &out, &e) < 0);
	assert_null(out);
	assert_non_null(strstr(e.msg, "exited with status 3"));
	assert_non_null(strstr(e.msg, "the cause"));
}

static void test_spawn_not_found(void **state)
{
	const char *argv[] = { "inplace-no-such-tool", NULL };
	ip_error e = { 0 };

	(void)state;
	assert_int_equal(ip_spawn(argv, NULL, &e), -ENOENT);
	assert_non_null(strstr(e.msg, "cannot run inplace-no-such-tool"));
}

static void test_spawn_no_fd_leak(void **state)
{
	/* An fd we hold open must not reach the child: only 0, 1, 2 (and the
	 * directory fd ls opens for /proc/self/fd) are listed. */
	const char *argv[] = { "sh", "-c", "ls /proc/self/fd | wc -l", NULL };
	int fd = open("/dev/null", O_RDONLY); /* deliberately not CLOEXEC */
	char *out = NULL;

	(void)state;
	assert_true(fd > 2);
	assert_int_equal(ip_spawn(argv, &out, NULL), 0);
	assert_int_equal(atoi(out), 4);
	free(out);
	close(fd);
}

static void test_spawn_signal(void **state)
{
	const char *argv[] = { "sh", "-c", "kill -9 $$", NULL };
	ip_error e = { 0 };

	(void)state;
	assert_true(ip_spawn(argv, NULL, &e) < 0);
	assert_non_null(strstr(e.msg, "killed by signal"));
}

static void test_atomic_write(void **state)
{
	char dir[] = "/tmp/inplace-ut.XXXXXX", path[64];
	char *data = NULL;
	size_t len = 0;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state.json", dir);
	assert_int_equal(ip_write_file_atomic(path, "one", 3, 0600, NULL), 0);
	assert_int_equal(ip_write_file_atomic(path, "second", 6, 0600, NULL), 0);
	assert_int_equal(ip_read_file(path, 1024, &data, &len, NULL), 0);
	assert_int_equal(len, 6);
	assert_string_equal(data, "second");
	free(data);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(ip_read_file(path, 3, &data, &len, NULL) == -EFBIG);
	unlink(path);
	rmdir(dir);
}

/* Inputs: a FIFO (no writer) is refused at once instead of blocking in
 * open(); so are devices and directories; a file opens blocking. */
static void test_open_input(void **state)
{
	char dir[] = "/tmp/test_common.XXXXXX", path[600];
	ip_error e = { 0 };
	int fd = -1;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(ip_open_input(path, &fd, &e), -EINVAL);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "FIFO"));
	assert_int_equal(fd, -1);
	assert_int_equal(ip_read_file(path, 100, &(char *){ NULL }, NULL, &e), -EINVAL);
	unlink(path);
	assert_int_equal(ip_open_input("/dev/null", &fd, &e), -EINVAL);
	assert_int_equal(ip_open_input(dir, &fd, &e), -EINVAL);
	assert_int_equal(ip_open_input("/nonexistent/x", &fd, &e), -ENOENT);
	snprintf(path, sizeof(path), "%s/file", dir);
	assert_int_equal(ip_write_file_atomic(path, "x", 1, 0600, &e), 0);
	assert_int_equal(ip_open_input(path, &fd, &e), 0);
	assert_true(fd >= 0);
	assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	unlink(path);
	rmdir(dir);
}

/* Durable outputs: nothing at the final name before commit, the content
 * after it, nothing left by abort; outputs that would destroy their input
 * are refused before any file is made. */
static void test_outfile(void **state)
{
	char dir[] = "/tmp/test_outfile.XXXXXX", out[600], in[600], lnk[600], sub[600];
	ip_outfile of;
	ip_error e = { 0 };
	char *data = NULL;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(out, sizeof(out), "%s/out.img", dir);
	assert_int_equal(ip_outfile_open(out, NULL, 0640, &of, &e), 0);
	assert_int_equal(ip_write_all(of.fd, "hello", 5), 0);
	assert_int_equal(stat(out, &st), -1);
	assert_int_equal(ip_outfile_commit(&of, &e), 0);
	assert_int_equal(of.fd, -1);
	assert_int_equal(ip_read_file(out, 100, &data, NULL, &e), 0);
	assert_string_equal(data, "hello");
	free(data);
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	ip_outfile_abort(&of); /* after commit: a no-op */
	assert_int_equal(stat(out, &st), 0);

	/* abort: the old file stays, the temporary goes */
	assert_int_equal(ip_outfile_open(out, NULL, 0600, &of, &e), 0);
	assert_int_equal(ip_write_all(of.fd, "bye", 3), 0);
	assert_int_equal(stat(of.tmp, &st), 0);
	snprintf(sub, sizeof(sub), "%s", of.tmp);
	ip_outfile_abort(&of);
	ip_outfile_abort(&of);
	assert_int_equal(stat(sub, &st), -1);
	assert_int_equal(ip_read_file(out, 100, &data, NULL, &e), 0);
	assert_string_equal(data, "hello");
	free(data);

	/* the input itself, by name, hardlink and symlink; a device; a
	 * directory tree being read */
	snprintf(in, sizeof(in), "%s/disk.img", dir);
	assert_int_equal(ip_write_file_atomic(in, "disk", 4, 0600, &e), 0);
	assert_int_equal(ip_outfile_open(in, in, 0644, &of, &e), -EEXIST);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	snprintf(lnk, sizeof(lnk), "%s/hard.img", dir);
	assert_int_equal(link(in, lnk), 0);
	assert_int_equal(ip_check_distinct(lnk, in, &e), -EEXIST);
	unlink(lnk);
	assert_int_equal(symlink("disk.img", lnk), 0);
	assert_int_equal(ip_check_distinct(lnk, in, &e), -EEXIST);
	unlink(lnk);
	assert_int_equal(ip_check_distinct("/dev/null", in, &e), -EEXIST);
	assert_int_equal(ip_check_distinct(out, in, &e), 0);
	snprintf(sub, sizeof(sub), "%s/tree", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(lnk, sizeof(lnk), "%s/tree/x.img", dir);
	assert_int_equal(ip_check_distinct(lnk, sub, &e), -EEXIST);
	assert_int_equal(ip_check_distinct(out, sub, &e), 0);
	rmdir(sub);
	unlink(in);
	unlink(out);
	assert_int_equal(rmdir(dir), 0); /* nothing else was left behind */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_one_line),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_size_rejects),
		cmocka_unit_test(test_format_size),
		cmocka_unit_test(test_spawn_captures),
		cmocka_unit_test(test_spawn_not_found),
		cmocka_unit_test(test_spawn_no_fd_leak),
		cmocka_unit_test(test_spawn_signal),
		cmocka_unit_test(test_atomic_write),
		cmocka_unit_test(test_open_input),
		cmocka_unit_test(test_outfile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
