/* test_notify.c — unit tests of bootstage/notify.c: durations, the prompt's
 * state machine, the prompt on a pseudo-terminal, the message on a login
 * terminal listed in a utmp file. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <utmpx.h>

#include <cmocka.h>

#include "bootstage/notify.h"

static void test_durations(void **state)
{
	unsigned v = 0;
	char b[32];
	const char *bad[] = { "", "x", "-1", "1x", "1hh", "5000000000", "4294967296", "49711d", " 1" };

	(void)state;
	assert_int_equal(bootstage_parse_duration("90", &v, NULL), 0);
	assert_int_equal(v, 90);
	assert_int_equal(bootstage_parse_duration("90s", &v, NULL), 0);
	assert_int_equal(v, 90);
	assert_int_equal(bootstage_parse_duration("15m", &v, NULL), 0);
	assert_int_equal(v, 900);
	assert_int_equal(bootstage_parse_duration("4h", &v, NULL), 0);
	assert_int_equal(v, 14400);
	assert_int_equal(bootstage_parse_duration("1d", &v, NULL), 0);
	assert_int_equal(v, 86400);
	for (size_t i = 0; i < IP_ARRAY_SIZE(bad); i++) {
		ip_error e = { 0 };

		assert_true(bootstage_parse_duration(bad[i], &v, &e) < 0);
		assert_int_equal(e.status, IP_EXIT_BADINPUT);
	}
	assert_string_equal(bootstage_format_duration(0, b, sizeof(b)), "0s");
	assert_string_equal(bootstage_format_duration(45, b, sizeof(b)), "45s");
	assert_string_equal(bootstage_format_duration(5400, b, sizeof(b)), "1h 30m");
	assert_string_equal(bootstage_format_duration(86400 + 7200, b, sizeof(b)), "1d 2h");
}

static void test_postpone_left(void **state)
{
	struct bootstage_notify_opts o = { .allow_postpone = true, .max_postpone_s = 7200,
					   .postponed_so_far_s = 1800 };

	(void)state;
	assert_int_equal(bootstage_postpone_left(&o), 5400);
	o.postponed_so_far_s = 9000; /* more than allowed: none left, no wrap */
	assert_int_equal(bootstage_postpone_left(&o), 0);
	o.postponed_so_far_s = 0;
	o.allow_postpone = false;
	assert_int_equal(bootstage_postpone_left(&o), 0);
}

static void test_prompt_answers(void **state)
{
	struct bootstage_notify_opts o = { .countdown_s = 60, .allow_postpone = true,
					   .max_postpone_s = 7200, .postponed_so_far_s = 1800 };
	struct bootstage_prompt p;
	char line[512];

	(void)state;
	bootstage_prompt_init(&p, &o);
	bootstage_prompt_line(&p, line, sizeof(line));
	assert_non_null(strstr(line, "1:00"));
	assert_non_null(strstr(line, "[p]ostpone (1h 30m left)"));
	assert_null(strstr(line, "[d]ecline"));

	/* decline not allowed: refused, said, still undecided */
	bootstage_prompt_key(&p, 'd');
	assert_false(p.done);
	assert_non_null(strstr(p.notice, "not allowed"));

	/* 4h is beyond the 1h 30m left: refused with what is left */
	bootstage_prompt_key(&p, 'P');
	assert_int_equal(p.mode, BOOTSTAGE_PROMPT_POSTPONE);
	bootstage_prompt_line(&p, line, sizeof(line));
	assert_non_null(strstr(line, "[r] the 1h 30m left"));
	bootstage_prompt_key(&p, '2');
	assert_false(p.done);
	assert_non_null(strstr(p.notice, "only 1h 30m of the 2h allowed is left"));
	/* cancel returns to the main choice; then 1h is taken */
	bootstage_prompt_key(&p, 27);
	assert_int_equal(p.mode, BOOTSTAGE_PROMPT_MAIN);
	bootstage_prompt_key(&p, 'p');
	bootstage_prompt_key(&p, '1');
	assert_true(p.done);
	assert_true(p.answered);
	assert_int_equal(p.answer, BOOTSTAGE_POSTPONE);
	assert_int_equal(p.postpone_s, 3600);
	/* a decided prompt takes no more keys nor ticks */
	bootstage_prompt_key(&p, 'i');
	bootstage_prompt_tick(&p, 0);
	assert_int_equal(p.answer, BOOTSTAGE_POSTPONE);
	assert_true(p.answered);

	/* the rest of the allowance */
	bootstage_prompt_init(&p, &o);
	bootstage_prompt_key(&p, 'p');
	bootstage_prompt_key(&p, 'r');
	assert_int_equal(p.answer, BOOTSTAGE_POSTPONE);
	assert_int_equal(p.postpone_s, 5400);

	/* decline allowed */
	o.allow_decline = true;
	bootstage_prompt_init(&p, &o);
	bootstage_prompt_key(&p, 'd');
	assert_true(p.done);
	assert_int_equal(p.answer, BOOTSTAGE_DECLINE);

	/* postponing used up */
	o.postponed_so_far_s = 7200;
	bootstage_prompt_init(&p, &o);
	bootstage_prompt_line(&p, line, sizeof(line));
	assert_null(strstr(line, "[p]ostpone"));
	bootstage_prompt_key(&p, 'p');
	assert_int_equal(p.mode, BOOTSTAGE_PROMPT_MAIN);
	assert_non_null(strstr(p.notice, "no postponement left"));
}

static void test_prompt_countdown(void **state)
{
	struct bootstage_notify_opts o = { .countdown_s = 3700, .allow_decline = true };
	struct bootstage_prompt p;
	char line[512];

	(void)state;
	bootstage_prompt_init(&p, &o);
	bootstage_prompt_line(&p, line, sizeof(line));
	assert_non_null(strstr(line, "1:01:40"));
	bootstage_prompt_key(&p, 'x'); /* unknown keys change nothing */
	assert_false(p.done);
	assert_string_equal(p.notice, "");
	bootstage_prompt_tick(&p, 57);
	bootstage_prompt_line(&p, line, sizeof(line));
	assert_non_null(strstr(line, "0:57"));
	bootstage_prompt_tick(&p, 0);
	assert_true(p.done);
	assert_false(p.answered);
	assert_int_equal(p.answer, BOOTSTAGE_INSTALL);
}

static void test_noninteractive(void **state)
{
	struct bootstage_notify_opts o = { .countdown_s = 0, .allow_decline = true, .quiet_users = true };
	struct bootstage_notify_result r;
	ip_error e = { 0 };

	(void)state;
	assert_int_equal(bootstage_notify(&o, &r, &e), 0);
	assert_int_equal(r.answer, BOOTSTAGE_INSTALL);
	assert_false(r.prompted);
	assert_false(r.answered);
	o.message = "";
	assert_true(bootstage_notify(&o, &r, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
}

/* ---- on a pseudo-terminal ------------------------------------------------ */

struct pty {
	int master, slave;
	char name[64];
};

static void pty_open(struct pty *t)
{
	t->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	assert_true(t->master >= 0);
	assert_int_equal(grantpt(t->master), 0);
	assert_int_equal(unlockpt(t->master), 0);
	assert_int_equal(ptsname_r(t->master, t->name, sizeof(t->name)), 0);
	t->slave = open(t->name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	assert_true(t->slave >= 0);
}

static void pty_close(struct pty *t)
{
	close(t->slave);
	close(t->master);
}

/* Read the master side until text shows up (bounded). */
static bool pty_wait(int master, const char *text)
{
	static char seen[65536];
	static size_t n;

	if (!text) {
		n = 0;
		return true;
	}
	for (int i = 0; i < 100; i++) {
		struct pollfd pfd = { .fd = master, .events = POLLIN };
		ssize_t r;

		seen[n] = '\0';
		if (strstr(seen, text))
			return true;
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		r = read(master, seen + n, sizeof(seen) - 1 - n);
		if (r > 0)
			n += (size_t)r;
	}
	return false;
}

/* The admin: a script of (text to wait for, key to press) pairs; each key
 * waits for its question, since the prompt drops keys typed before it
 * showed. */
struct step {
	const char *wait, *key;
};
struct keys_arg {
	int master;
	const struct step *steps;
	bool ok;
};

static void *admin(void *arg)
{
	struct keys_arg *k = arg;

	k->ok = true;
	for (const struct step *s = k->steps; s->wait && k->ok; s++)
		k->ok = pty_wait(k->master, s->wait) && write(k->master, s->key, 1) == 1;
	return NULL;
}

/* Run bootstage_notify with the prompt on a fresh pty, keys from steps;
 * checks the terminal comes back as it was.  Returns bootstage_notify's. */
static int notify_on_pty(struct bootstage_notify_opts *o, const struct step *steps,
			 struct bootstage_notify_result *r, ip_error *e)
{
	struct termios before, after;
	struct keys_arg k = { .steps = steps };
	struct pty t;
	pthread_t th;
	int ret;

	pty_open(&t);
	pty_wait(0, NULL);
	o->interactive = true;
	o->quiet_users = true;
	o->prompt_in = o->prompt_out = t.slave;
	assert_int_equal(tcgetattr(t.slave, &before), 0);
	k.master = t.master;
	assert_int_equal(pthread_create(&th, NULL, admin, &k), 0);
	ret = bootstage_notify(o, r, e);
	pthread_join(th, NULL);
	assert_true(k.ok);
	assert_int_equal(tcgetattr(t.slave, &after), 0);
	assert_int_equal(before.c_lflag, after.c_lflag);
	assert_int_equal(before.c_iflag, after.c_iflag);
	assert_memory_equal(before.c_cc, after.c_cc, sizeof(before.c_cc));
	pty_close(&t);
	return ret;
}

static const struct step postpone_1d_refused_then_1h[] = {
	{ "[p]ostpone", "p" }, { "postpone for", "3" }, { "allowed is left", "1" }, { NULL, NULL },
};

static void test_prompt_on_pty(void **state)
{
	struct bootstage_notify_opts o = { .countdown_s = 30, .allow_postpone = true,
					   .max_postpone_s = 7200 };
	const char *rearm[] = { "true", NULL };
	struct bootstage_notify_result r;
	ip_error e = { 0 };
	time_t now = time(NULL);

	(void)state;
	o.rearm_argv = rearm;
	setenv("INPLACE_SYSTEMD_BOOTED", "0", 1);
	assert_int_equal(notify_on_pty(&o, postpone_1d_refused_then_1h, &r, &e), 0);
	unsetenv("INPLACE_SYSTEMD_BOOTED");
	assert_true(r.prompted);
	assert_true(r.answered);
	assert_int_equal(r.answer, BOOTSTAGE_POSTPONE);
	assert_int_equal(r.postpone_s, 3600);
	assert_true(r.rerun_at >= now + 3600 && r.rerun_at <= now + 3600 + 60);
	/* no systemd: the caller gets rerun_at, no timer */
	assert_false(r.rearmed);
}

/* A terminal nobody reads (a stalled ssh connection): its output buffer is
 * full before the prompt starts.  The countdown must still end; a blocking
 * write or a drain would hang here, and the alarm fails the test. */
static void test_prompt_stalled_terminal(void **state)
{
	struct bootstage_notify_opts o = { .countdown_s = 2, .interactive = true, .quiet_users = true };
	struct bootstage_notify_result r;
	ip_error e = { 0 };
	char junk[4096];
	struct pty t;
	int fill;

	(void)state;
	pty_open(&t);
	memset(junk, 'x', sizeof(junk));
	fill = open(t.name, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	assert_true(fill >= 0);
	while (write(fill, junk, sizeof(junk)) > 0)
		;
	close(fill);
	o.prompt_in = o.prompt_out = t.slave;
	alarm(20);
	assert_int_equal(bootstage_notify(&o, &r, &e), 0);
	alarm(0);
	assert_true(r.prompted);
	assert_false(r.answered);
	assert_int_equal(r.answer, BOOTSTAGE_INSTALL);
	pty_close(&t);
}

/* path holds want (whole: exactly; else somewhere). */
static void assert_file(const char *path, const char *want, bool whole)
{
	char *data = NULL;

	assert_int_equal(ip_read_file(path, 65536, &data, NULL, NULL), 0);
	if (whole)
		assert_string_equal(data, want);
	else
		assert_non_null(strstr(data, want));
	free(data);
}

static void write_script(const char *path, const char *body)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(body, f);
	fclose(f);
	assert_int_equal(chmod(path, 0755), 0);
}

/* With systemd, the postpone becomes a timer whose unit files run the job's
 * argv: unit files go to a scratch INPLACE_UNIT_DIR, and a stand-in
 * systemctl on PATH records what it was asked. */
static void test_rearm(void **state)
{
	char dir[] = "/tmp/test_notify_bin.XXXXXX", p[256], calls[256], script[512], path[4096],
	     want[2048], at[64];
	const char *rearm[] = { "inplace", "run", "/etc/inplace/job 100%.ini", NULL };
	struct bootstage_notify_opts o = { .countdown_s = 30, .allow_postpone = true,
					   .max_postpone_s = 7200, .rearm_argv = rearm };
	struct bootstage_notify_result r;
	char *old_path = getenv("PATH");
	ip_error e = { 0 };
	struct tm tm;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(calls, sizeof(calls), "%s/calls", dir);
	snprintf(p, sizeof(p), "%s/systemctl", dir);
	snprintf(script, sizeof(script), "#!/bin/sh\necho \"$*\" >> %s\nexec test ! -e %s/fail\n",
		 calls, dir);
	write_script(p, script);
	snprintf(p, sizeof(p), "%s/inplace", dir);
	write_script(p, "#!/bin/sh\n");
	old_path = strdup(old_path ? old_path : "/usr/bin:/bin");
	snprintf(path, sizeof(path), "%s:%s", dir, old_path);
	setenv("PATH", path, 1);
	setenv("INPLACE_SYSTEMD_BOOTED", "1", 1);
	setenv("INPLACE_UNIT_DIR", dir, 1);

	assert_int_equal(notify_on_pty(&o, postpone_1d_refused_then_1h, &r, &e), 0);
	assert_true(r.rearmed);
	assert_string_equal(r.rearm_unit, "inplace-postpone.timer");
	snprintf(p, sizeof(p), "%s/inplace-postpone.service", dir);
	/* the program by its full path, % doubled for systemd */
	snprintf(want, sizeof(want), "ExecStart=\"%s/inplace\" \"run\" \"/etc/inplace/job 100%%%%.ini\"\n", dir);
	assert_file(p, want, false);
	snprintf(p, sizeof(p), "%s/inplace-postpone.timer", dir);
	strftime(at, sizeof(at), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&r.rerun_at, &tm));
	/* the timer is the file make install ships plus the due time */
	{
		char *shipped = NULL;

		assert_int_equal(ip_read_file("contrib/systemd/inplace-postpone.timer", 65536, &shipped, NULL,
					      NULL), 0);
		snprintf(want, sizeof(want), "%sOnCalendar=%s\n", shipped, at);
		free(shipped);
	}
	assert_file(p, want, true);
	assert_file(calls, "daemon-reload\nenable inplace-postpone.timer\nrestart inplace-postpone.timer\n", true);

	/* disarm: disabled, stopped, files gone; a second time is a no-op */
	unlink(calls);
	assert_int_equal(bootstage_notify_disarm(NULL, &e), 0);
	assert_int_equal(access(p, F_OK), -1);
	assert_file(calls, "disable inplace-postpone.timer\n--no-block stop inplace-postpone.timer\n"
		    "daemon-reload\n", true);
	unlink(calls);
	assert_int_equal(bootstage_notify_disarm(NULL, &e), 0);
	assert_int_equal(access(calls, F_OK), -1);

	/* a timer that cannot be made is an error: the postpone would be lost */
	snprintf(p, sizeof(p), "%s/fail", dir);
	write_script(p, "");
	assert_true(notify_on_pty(&o, postpone_1d_refused_then_1h, &r, &e) < 0);
	assert_non_null(strstr(e.msg, "cannot re-arm the postponed job"));

	setenv("PATH", old_path, 1);
	unsetenv("INPLACE_SYSTEMD_BOOTED");
	unsetenv("INPLACE_UNIT_DIR");
	free(old_path);
	unlink(p);
	unlink(calls);
	const char *left[] = { "systemctl", "inplace", "inplace-postpone.service", "inplace-postpone.timer" };
	for (size_t i = 0; i < IP_ARRAY_SIZE(left); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, left[i]);
		unlink(p);
	}
	assert_int_equal(rmdir(dir), 0);
}

static void test_tell_tty_from_utmp(void **state)
{
	char utmp[] = "/tmp/test_notify_utmp.XXXXXX", rundir[] = "/tmp/test_notify_run.XXXXXX";
	struct bootstage_notify_opts o = { 0 };
	struct bootstage_notify_result r = { 0 };
	struct utmpx u = { .ut_type = USER_PROCESS, .ut_pid = 1 };
	struct pty t;
	int fd;

	(void)state;
	pty_open(&t);
	pty_wait(0, NULL);
	fd = mkstemp(utmp);
	assert_true(fd >= 0);
	close(fd);
	assert_non_null(mkdtemp(rundir));
	snprintf(u.ut_line, sizeof(u.ut_line), "%s", t.name + strlen("/dev/"));
	snprintf(u.ut_user, sizeof(u.ut_user), "alice");
	snprintf(u.ut_id, sizeof(u.ut_id), "tn1");
	assert_int_equal(utmpxname(utmp), 0);
	setutxent();
	assert_non_null(pututxline(&u));
	/* a second login on the same terminal is told once */
	snprintf(u.ut_id, sizeof(u.ut_id), "tn2");
	assert_non_null(pututxline(&u));
	endutxent();

	o.utmp_path = utmp;
	o.run_user_dir = rundir;
	bootstage_notify_users(&o, "save your work\033[2J now", &r);
	assert_int_equal(r.ttys_found, 1);
	assert_int_equal(r.ttys_told, 1);
	assert_int_equal(r.buses_found, 0);
	/* the escape sequence arrives defused */
	assert_true(pty_wait(t.master, "save your work?[2J now"));
	assert_true(pty_wait(t.master, "Broadcast message from inplace@"));
	unlink(utmp);
	rmdir(rundir);
	pty_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_postpone_left),
		cmocka_unit_test(test_prompt_answers),
		cmocka_unit_test(test_prompt_countdown),
		cmocka_unit_test(test_noninteractive),
		cmocka_unit_test(test_prompt_on_pty),
		cmocka_unit_test(test_rearm),
		cmocka_unit_test(test_prompt_stalled_terminal),
		cmocka_unit_test(test_tell_tty_from_utmp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
