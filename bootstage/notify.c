/* notify.c — the notify phase: a broadcast to every login terminal, a desktop
 * notification on every user session bus, and the admin's prompt with a
 * countdown (install now, postpone, decline); a postpone re-arms the job
 * with a systemd timer. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <paths.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <utmpx.h>

#include "bootstage/notify.h"

#define DEFAULT_MESSAGE "This computer will be reimaged with a new system. Save your work " \
	"and log out; your files and settings are kept."
#define REARM_UNIT "inplace-postpone"
/* Longest message told to users: a screenful, not a document. */
#define MESSAGE_MAX 2000

static const unsigned postpone_choices[] = BOOTSTAGE_POSTPONE_CHOICES;

const char *bootstage_answer_name(enum bootstage_answer a)
{
	switch (a) {
	case BOOTSTAGE_INSTALL:
		return "install";
	case BOOTSTAGE_POSTPONE:
		return "postpone";
	case BOOTSTAGE_DECLINE:
		return "decline";
	}
	return "install";
}

/* ---- durations ---------------------------------------------------------- */

int bootstage_parse_duration(const char *s, unsigned *out, ip_error *e)
{
	unsigned long long v = 0, mult = 1;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*s))
		goto bad;
	while (isdigit((unsigned char)*p)) {
		v = v * 10 + (unsigned)(*p++ - '0');
		if (v > UINT_MAX)
			goto bad;
	}
	switch (*p) {
	case '\0':
		break;
	case 's':
		p++;
		break;
	case 'm':
		mult = 60, p++;
		break;
	case 'h':
		mult = 3600, p++;
		break;
	case 'd':
		mult = 86400, p++;
		break;
	default:
		goto bad;
	}
	if (*p || v * mult > UINT_MAX)
		goto bad;
	*out = (unsigned)(v * mult);
	return 0;
bad:
	return ip_bad(e, -EINVAL, "invalid duration '%s': give seconds, or a number with s, m, h "
		      "or d (90, 15m, 4h, 1d)", s ? s : "");
}

char *bootstage_format_duration(unsigned s, char *buf, size_t len)
{
	static const struct { unsigned secs; char unit; } parts[] = {
		{ 86400, 'd' }, { 3600, 'h' }, { 60, 'm' }, { 1, 's' },
	};
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < IP_ARRAY_SIZE(parts) && n < len; i++) {
		unsigned k = s / parts[i].secs;

		if (!k)
			continue;
		s -= k * parts[i].secs;
		n += (size_t)snprintf(buf + n, len - n, "%s%u%c", n ? " " : "", k, parts[i].unit);
	}
	if (!buf[0])
		snprintf(buf, len, "0s");
	return buf;
}

/* "0:57", "1:02:03": the countdown as people read a clock. */
static void format_clock(unsigned s, char *buf, size_t len)
{
	if (s >= 3600)
		snprintf(buf, len, "%u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%u:%02u", s / 60, s % 60);
}

/* ---- the prompt, as a state machine ------------------------------------ */

unsigned bootstage_postpone_left(const struct bootstage_notify_opts *o)
{
	if (!o->allow_postpone || o->max_postpone_s <= o->postponed_so_far_s)
		return 0;
	return o->max_postpone_s - o->postponed_so_far_s;
}

/* The "rest" choice is offered when what is left is none of the fixed
 * lengths: a job allowing 30 minutes in total must still be postponable. */
static bool rest_is_extra_choice(unsigned left)
{
	for (size_t i = 0; i < IP_ARRAY_SIZE(postpone_choices); i++)
		if (postpone_choices[i] == left)
			return false;
	return left > 0;
}

void bootstage_prompt_init(struct bootstage_prompt *p, const struct bootstage_notify_opts *o)
{
	memset(p, 0, sizeof(*p));
	p->o = o;
	p->left_s = o->countdown_s;
	p->mode = BOOTSTAGE_PROMPT_MAIN;
	p->answer = BOOTSTAGE_INSTALL;
}

static void prompt_finish(struct bootstage_prompt *p, enum bootstage_answer a, unsigned postpone_s)
{
	p->done = true;
	p->answered = true;
	p->answer = a;
	p->postpone_s = postpone_s;
}

static void prompt_postpone(struct bootstage_prompt *p, unsigned want)
{
	unsigned left = bootstage_postpone_left(p->o);
	char w[32], l[32], m[32];

	if (want > left) {
		snprintf(p->notice, sizeof(p->notice),
			 "cannot postpone for %s: only %s of the %s allowed is left",
			 bootstage_format_duration(want, w, sizeof(w)),
			 bootstage_format_duration(left, l, sizeof(l)),
			 bootstage_format_duration(p->o->max_postpone_s, m, sizeof(m)));
		return;
	}
	prompt_finish(p, BOOTSTAGE_POSTPONE, want);
}

void bootstage_prompt_key(struct bootstage_prompt *p, int key)
{
	unsigned left = bootstage_postpone_left(p->o);
	char m[32];

	if (p->done)
		return;
	p->notice[0] = '\0';
	key = tolower(key);
	if (p->mode == BOOTSTAGE_PROMPT_POSTPONE) {
		if (key >= '1' && key < '1' + (int)IP_ARRAY_SIZE(postpone_choices))
			prompt_postpone(p, postpone_choices[key - '1']);
		else if (key == 'r' && rest_is_extra_choice(left))
			prompt_postpone(p, left);
		else if (key == 'c' || key == 27 || key == 127 || key == '\b')
			p->mode = BOOTSTAGE_PROMPT_MAIN;
		return;
	}
	switch (key) {
	case 'i':
		prompt_finish(p, BOOTSTAGE_INSTALL, 0);
		break;
	case 'p':
		if (!p->o->allow_postpone)
			snprintf(p->notice, sizeof(p->notice), "postponing is not allowed by this job");
		else if (!left)
			snprintf(p->notice, sizeof(p->notice),
				 "no postponement left: the %s allowed is used up",
				 bootstage_format_duration(p->o->max_postpone_s, m, sizeof(m)));
		else
			p->mode = BOOTSTAGE_PROMPT_POSTPONE;
		break;
	case 'd':
		if (p->o->allow_decline)
			prompt_finish(p, BOOTSTAGE_DECLINE, 0);
		else
			snprintf(p->notice, sizeof(p->notice), "declining is not allowed by this job");
		break;
	}
}

void bootstage_prompt_tick(struct bootstage_prompt *p, unsigned left_s)
{
	if (p->done)
		return;
	p->left_s = left_s;
	if (left_s == 0) {
		/* No answer in time means install: the job was meant to run. */
		p->done = true;
		p->answered = false;
		p->answer = BOOTSTAGE_INSTALL;
	}
}

void bootstage_prompt_line(const struct bootstage_prompt *p, char *buf, size_t len)
{
	unsigned left = bootstage_postpone_left(p->o);
	char clock[32], d[32];
	size_t n;

	format_clock(p->left_s, clock, sizeof(clock));
	n = (size_t)snprintf(buf, len, "Reimaging starts in %s - ", clock);
	if (n >= len)
		return;
	if (p->mode == BOOTSTAGE_PROMPT_POSTPONE) {
		n += (size_t)snprintf(buf + n, len - n, "postpone for");
		for (size_t i = 0; i < IP_ARRAY_SIZE(postpone_choices) && n < len; i++)
			n += (size_t)snprintf(buf + n, len - n, " [%zu] %s,", i + 1,
					      bootstage_format_duration(postpone_choices[i], d, sizeof(d)));
		bootstage_format_duration(left, d, sizeof(d));
		if (rest_is_extra_choice(left) && n < len)
			snprintf(buf + n, len - n, " [r] the %s left, [c]ancel", d);
		else if (n < len)
			snprintf(buf + n, len - n, " [c]ancel (%s left)", d);
		return;
	}
	n += (size_t)snprintf(buf + n, len - n, "[i]nstall now");
	if (left && n < len)
		n += (size_t)snprintf(buf + n, len - n, ", [p]ostpone (%s left)",
				      bootstage_format_duration(left, d, sizeof(d)));
	if (p->o->allow_decline && n < len)
		snprintf(buf + n, len - n, ", [d]ecline");
}

/* ---- telling users ------------------------------------------------------ */

/* What reaches a terminal: control characters other than newline and tab
 * become '?' (a job file must not drive other people's terminals), and
 * newlines become CR LF, since a terminal may be in raw mode. */
static char *tty_text(const char *banner, const char *text)
{
	size_t cap = 2 * (strlen(banner) + strlen(text)) + 16, n = 0;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	out[n++] = '\a';
	for (int pass = 0; pass < 2; pass++) {
		for (const unsigned char *s = (const unsigned char *)(pass ? text : banner); *s; s++) {
			if (*s == '\n') {
				out[n++] = '\r';
				out[n++] = '\n';
			} else {
				out[n++] = (*s < 0x20 && *s != '\t') || *s == 0x7f ? '?' : (char)*s;
			}
		}
	}
	out[n++] = '\r';
	out[n++] = '\n';
	out[n] = '\0';
	return out;
}

/* Write to one terminal without ever blocking on it: a user's stopped
 * terminal must not hold up the reimaging (wall does the same). */
static bool tell_tty(const char *line, const char *text)
{
	char path[64];
	struct stat st;
	size_t len = strlen(text), off = 0;
	int fd;

	if (!*line || strstr(line, "..") || line[0] == '/')
		return false;
	snprintf(path, sizeof(path), "/dev/%s", line);
	fd = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || !isatty(fd)) {
		close(fd);
		return false;
	}
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	close(fd);
	return off == len;
}

static void tell_ttys(const char *utmp, const char *text, bool dry_run,
		      struct bootstage_notify_result *res)
{
	char seen[64][sizeof(((struct utmpx *)0)->ut_line) + 1];
	size_t nseen = 0;
	struct utmpx *u;

	if (utmpxname(utmp) < 0)
		return;
	setutxent();
	while ((u = getutxent())) {
		char line[sizeof(u->ut_line) + 1];
		bool dup = false;

		if (u->ut_type != USER_PROCESS || !u->ut_line[0])
			continue;
		snprintf(line, sizeof(line), "%.*s", (int)sizeof(u->ut_line), u->ut_line);
		for (size_t i = 0; i < nseen && !dup; i++)
			dup = !strcmp(seen[i], line);
		if (dup)
			continue;
		if (nseen < IP_ARRAY_SIZE(seen))
			memcpy(seen[nseen++], line, sizeof(line));
		res->ttys_found++;
		if (!dry_run && tell_tty(line, text))
			res->ttys_told++;
	}
	endutxent();
	utmpxname(_PATH_UTMPX); /* later readers in this process get the system's */
}

/* A GVariant text literal of s, so that gdbus never reads a message that
 * happens to look like a number or a list as one. */
static char *gvariant_string(const char *s)
{
	size_t n = 0;
	char *out = malloc(2 * strlen(s) + 3);

	if (!out)
		return NULL;
	out[n++] = '\'';
	for (; *s; s++) {
		if (*s == '\'' || *s == '\\') {
			out[n++] = '\\';
			out[n++] = *s;
		} else if (*s == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else {
			out[n++] = (unsigned char)*s < 0x20 ? ' ' : *s;
		}
	}
	out[n++] = '\'';
	out[n] = '\0';
	return out;
}

/* One desktop notification through the session bus of uid, sent as that
 * user (a session bus accepts only its owner).  The standard
 * org.freedesktop.Notifications call, critical urgency so that it stays. */
static bool tell_bus(const char *dir, uid_t uid, gid_t gid, const char *body)
{
	char bus_env[PATH_MAX + 40], rt_env[PATH_MAX + 20], reuid[32], regid[32];
	_cleanup_free_ char *gv = gvariant_string(body);
	const char *env[] = { bus_env, rt_env, NULL };
	const char *argv[] = {
		"setpriv", reuid, regid, "--clear-groups",
		"gdbus", "call", "--session", "--timeout", "5",
		"--dest", "org.freedesktop.Notifications",
		"--object-path", "/org/freedesktop/Notifications",
		"--method", "org.freedesktop.Notifications.Notify",
		"'inplace'", "uint32 0", "'system-software-update'", "'Reimaging'", gv,
		"@as []", "{'urgency': <byte 2>}", "int32 0", NULL,
	};
	const char *const *run = argv;
	ip_proc p = { .env = env };
	bool ok;

	if (!gv)
		return false;
	snprintf(bus_env, sizeof(bus_env), "DBUS_SESSION_BUS_ADDRESS=unix:path=%s/bus", dir);
	snprintf(rt_env, sizeof(rt_env), "XDG_RUNTIME_DIR=%s", dir);
	snprintf(reuid, sizeof(reuid), "--reuid=%u", (unsigned)uid);
	snprintf(regid, sizeof(regid), "--regid=%u", (unsigned)gid);
	if (geteuid() != 0) {
		if (uid != geteuid())
			return false;
		run = argv + 4; /* our own bus: no change of user needed */
	}
	p.argv = run;
	ok = ip_proc_run(&p, NULL) == 0 && p.exit_code == 0;
	ip_proc_clear(&p);
	return ok;
}

static void tell_buses(const char *root, const char *text, bool dry_run,
		       struct bootstage_notify_result *res)
{
	DIR *d = opendir(root);
	struct dirent *de;

	if (!d)
		return; /* no /run/user: no desktop sessions, not an error */
	while ((de = readdir(d))) {
		char dir[PATH_MAX], bus[PATH_MAX + 8];
		struct stat st, bst;
		char *end;
		unsigned long uid;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		errno = 0;
		uid = strtoul(de->d_name, &end, 10);
		if (*end || errno || uid > UINT_MAX)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", root, de->d_name);
		snprintf(bus, sizeof(bus), "%s/bus", dir);
		/* The runtime directory must belong to the user it is named
		 * after: the notification is sent as that user. */
		if (stat(dir, &st) < 0 || st.st_uid != (uid_t)uid || lstat(bus, &bst) < 0 ||
		    !S_ISSOCK(bst.st_mode))
			continue;
		res->buses_found++;
		if (!dry_run && tell_bus(dir, (uid_t)uid, st.st_gid, text))
			res->buses_told++;
	}
	closedir(d);
}

void bootstage_notify_users(const struct bootstage_notify_opts *o, const char *text,
			    struct bootstage_notify_result *res)
{
	const char *utmp = o->utmp_path ? o->utmp_path : getenv("INPLACE_UTMP");
	const char *run_user = o->run_user_dir ? o->run_user_dir : getenv("INPLACE_RUN_USER_DIR");
	char host[256] = "localhost", banner[512], when[64];
	_cleanup_free_ char *tty = NULL;
	time_t now = time(NULL);
	struct tm tm;

	if (o->quiet_users)
		return;
	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	strftime(when, sizeof(when), "%a %b %d %H:%M:%S %Y", localtime_r(&now, &tm));
	snprintf(banner, sizeof(banner), "\nBroadcast message from inplace@%s (%s):\n\n", host, when);
	tty = tty_text(banner, text);
	if (tty)
		tell_ttys(utmp && *utmp ? utmp : _PATH_UTMPX, tty, o->dry_run, res);
	tell_buses(run_user && *run_user ? run_user : "/run/user", text, o->dry_run, res);
}

/* "at 14:05 (Sun 29 Nov)": a local time users can read. */
static void format_at(time_t t, char *buf, size_t len)
{
	struct tm tm;

	strftime(buf, len, "%H:%M %Z (%a %d %b)", localtime_r(&t, &tm));
}

/* ---- the prompt at a terminal ------------------------------------------- */

static volatile sig_atomic_t prompt_signal;

static void on_prompt_signal(int sig)
{
	prompt_signal = sig;
}

static const int prompt_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

static void draw(int fd, const char *a, const char *b, const char *c)
{
	/* The prompt is a courtesy: a terminal that went away does not stop
	 * the job, so write errors are ignored. */
	(void)!ip_write_all(fd, a, strlen(a));
	(void)!ip_write_all(fd, b, strlen(b));
	(void)!ip_write_all(fd, c, strlen(c));
}

/* A line that wrapped could not be redrawn in place (\r goes back to the
 * start of its last row only): cut it to the terminal's width.  The line
 * is ASCII, one column a byte. */
static void fit_width(int fd, char *line)
{
	struct winsize ws;

	if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && strlen(line) >= ws.ws_col)
		line[ws.ws_col - 2] = '\0';
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void outcome_line(const struct bootstage_prompt *p, char *buf, size_t len)
{
	char d[32];

	if (!p->answered)
		snprintf(buf, len, "No answer: reimaging starts now");
	else if (p->answer == BOOTSTAGE_INSTALL)
		snprintf(buf, len, "Installing now");
	else if (p->answer == BOOTSTAGE_POSTPONE)
		snprintf(buf, len, "Postponed for %s",
			 bootstage_format_duration(p->postpone_s, d, sizeof(d)));
	else
		snprintf(buf, len, "Declined: the job stops");
}

/* The prompt's own open file description of its terminal, non-blocking: a
 * stalled ssh connection fills the terminal's buffer, and a blocked write
 * must not stop the countdown (a line lost is redrawn a second later).
 * Opening anew leaves the flags of the caller's descriptor alone. */
static int own_nonblocking(int fd)
{
	char name[PATH_MAX];
	int r = -1;

	if (ttyname_r(fd, name, sizeof(name)) == 0)
		r = open(name, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	return r >= 0 ? r : fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

/* Returns 0 with p done, 1 when prompt_in is no terminal (the caller waits
 * without asking), or -EINTR after a signal; the terminal is restored on
 * every path. */
static int prompt_at_terminal(const struct bootstage_notify_opts *o, uint64_t deadline,
			      struct bootstage_prompt *p, ip_error *e)
{
	struct sigaction sa = { .sa_handler = on_prompt_signal }, old_sa[IP_ARRAY_SIZE(prompt_signals)];
	struct termios old, raw;
	int in = o->prompt_in, sig;
	_cleanup_close_ int out = own_nonblocking(o->prompt_out);
	char line[512];
	pid_t fg;

	/* Only the foreground job may ask: a background one would be stopped
	 * by SIGTTOU as soon as it set the terminal up.  (A terminal that is
	 * not our controlling one has no foreground for us: -1.) */
	if (tcgetattr(in, &old) < 0)
		return 1;
	fg = tcgetpgrp(in);
	if (fg >= 0 && fg != getpgrp())
		return 1;
	/* No SA_RESTART: the signal must wake poll() so that the terminal
	 * is restored before the process goes. */
	sigemptyset(&sa.sa_mask);
	prompt_signal = 0;
	for (size_t i = 0; i < IP_ARRAY_SIZE(prompt_signals); i++)
		sigaction(prompt_signals[i], &sa, &old_sa[i]);
	raw = old;
	/* Single keys without echo; ISIG stays so that Ctrl-C interrupts,
	 * but Ctrl-Z would leave a stopped job holding the terminal raw. */
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	/* Ctrl-S would stop our output, and a blocked write would stop the
	 * countdown with it: flow control is off while asking. */
	raw.c_iflag &= ~(tcflag_t)IXON;
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	raw.c_cc[VSUSP] = _POSIX_VDISABLE;
	/* Drop keys typed before the question was shown.  (Not TCSAFLUSH:
	 * it first waits for pending output to drain, forever on a stalled
	 * connection.) */
	tcsetattr(in, TCSANOW, &raw);
	tcflush(in, TCIFLUSH);

	bootstage_prompt_init(p, o);
	while (!prompt_signal) {
		uint64_t now = now_ms(), rem = deadline > now ? deadline - now : 0;
		struct pollfd pfd = { .fd = in, .events = POLLIN };
		int timeout;

		bootstage_prompt_tick(p, (unsigned)((rem + 999) / 1000));
		if (p->done)
			break;
		if (p->notice[0]) {
			draw(out, "\r\033[K", p->notice, "\r\n");
			p->notice[0] = '\0';
		}
		bootstage_prompt_line(p, line, sizeof(line));
		fit_width(out, line);
		draw(out, "\r\033[K", line, " ");
		/* Wake at the next whole second of the countdown. */
		timeout = (int)(rem % 1000 ? rem % 1000 : 1000);
		if (in < 0)
			pfd.fd = -1;
		if (poll(&pfd, 1, timeout) <= 0)
			continue;
		if (pfd.revents & POLLIN) {
			unsigned char keys[16];
			ssize_t n = read(in, keys, sizeof(keys));

			for (ssize_t i = 0; i < n && !p->done; i++)
				bootstage_prompt_key(p, keys[i]);
			if (n == 0)
				in = -1; /* end of input: wait out the countdown */
		} else if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) {
			in = -1;
		}
	}
	sig = prompt_signal;
	tcsetattr(o->prompt_in, TCSANOW, &old);
	for (size_t i = 0; i < IP_ARRAY_SIZE(prompt_signals); i++)
		sigaction(prompt_signals[i], &old_sa[i], NULL);
	if (sig) {
		draw(out, "\r\033[K", "Interrupted", "\r\n");
		return ip_fail(e, -EINTR, "interrupted at the prompt by %s: nothing was started; "
			       "run it again to be asked again", strsignal(sig));
	}
	outcome_line(p, line, sizeof(line));
	draw(out, "\r\033[K", line, "\r\n");
	return 0;
}

/* Without a terminal nobody can answer: users get their countdown, then the
 * job goes on (fleet runs). */
static void wait_until(uint64_t deadline)
{
	struct timespec until = { .tv_sec = (time_t)(deadline / 1000),
				  .tv_nsec = (long)(deadline % 1000) * 1000000 };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
		;
}

/* ---- re-arming a postponed job ------------------------------------------ */

/* sd_booted()'s test.  INPLACE_SYSTEMD_BOOTED=1|0 overrides it, so that
 * tests on machines without systemd reach the re-arm with a stand-in
 * systemctl on PATH. */
static bool systemd_booted(void)
{
	const char *force = getenv("INPLACE_SYSTEMD_BOOTED");

	if (force && *force)
		return *force == '1';
	return access("/run/systemd/system", F_OK) == 0;
}

/* An ExecStart= word: double-quoted, with systemd's C-style escapes, and
 * % and $ doubled so that systemd expands neither specifiers nor variables
 * in a job path. */
static int unit_quote(FILE *f, const char *arg)
{
	fputc('"', f);
	for (const char *c = arg; *c; c++) {
		if (*c == '\n' || *c == '\r')
			return -EINVAL;
		if (*c == '"' || *c == '\\')
			fputc('\\', f);
		else if (*c == '%' || *c == '$')
			fputc(*c, f);
		fputc(*c, f);
	}
	fputc('"', f);
	return 0;
}

/* argv[0] as an absolute path: ExecStart= does not search PATH. */
static int resolve_program(const char *name, char *buf, size_t len, ip_error *e)
{
	const char *path = getenv("PATH");

	if (strchr(name, '/')) {
		if (name[0] == '/') {
			snprintf(buf, len, "%s", name);
			return 0;
		}
		if (!realpath(name, buf))
			return ip_fail(e, -errno, "cannot find %s to re-run the job: %s", name,
				       strerror(errno));
		return 0;
	}
	for (const char *p = path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"; *p;) {
		size_t n = strcspn(p, ":");

		if (n && (size_t)snprintf(buf, len, "%.*s/%s", (int)n, p, name) < len &&
		    buf[0] == '/' && access(buf, X_OK) == 0)
			return 0;
		p += n + (p[n] == ':');
	}
	return ip_fail(e, -ENOENT, "cannot find %s in PATH to re-run the job: give its full path",
		       name);
}

static int systemctl(const char *a, const char *b, ip_error *e)
{
	const char *argv[] = { "systemctl", a, b, NULL };

	return ip_spawn(argv, NULL, e);
}

static const char *unit_dir(const struct bootstage_notify_opts *o)
{
	const char *d = o && o->unit_dir ? o->unit_dir : getenv("INPLACE_UNIT_DIR");

	return d && *d ? d : "/etc/systemd/system";
}

/* contrib/systemd/inplace-postpone.{service,timer}, embedded at build time
 * (Makefile, units_blob.o) and shipped by make install: rearm adds only the
 * ExecStart= and OnCalendar= lines, each file ending in that section. */
extern const char bs_unit_inplace_postpone_service_start[], bs_unit_inplace_postpone_service_end[];
extern const char bs_unit_inplace_postpone_timer_start[], bs_unit_inplace_postpone_timer_end[];

/* The postponed job comes back through a timer whose unit files are on
 * disk, so a reboot in the meantime does not lose it: OnCalendar= at the
 * due time with Persistent=true runs it at the next boot when the machine
 * was off then.  Service first, timer second (the timer names the
 * service); each file replaced atomically, so a re-postpone or a rerun
 * after kill -9 just writes them again. */
static int rearm(const struct bootstage_notify_opts *o, struct bootstage_notify_result *res,
		 ip_error *e)
{
	const char *dir = unit_dir(o);
	char exe[PATH_MAX], path[PATH_MAX], when[64];
	_cleanup_free_ char *svc = NULL, *tmr = NULL;
	size_t svc_len = 0, tmr_len = 0;
	FILE *f;
	struct tm tm;
	int r = 0;

	if (!o->rearm_argv || !o->rearm_argv[0] || !systemd_booted())
		return 0;
	r = resolve_program(o->rearm_argv[0], exe, sizeof(exe), e);
	if (r < 0)
		return r;
	f = open_memstream(&svc, &svc_len);
	if (!f)
		return ip_fail(e, -ENOMEM, "out of memory");
	fwrite(bs_unit_inplace_postpone_service_start, 1,
	       (size_t)(bs_unit_inplace_postpone_service_end - bs_unit_inplace_postpone_service_start), f);
	fputs("ExecStart=", f);
	r = unit_quote(f, exe);
	for (size_t i = 1; o->rearm_argv[i] && !r; i++) {
		fputc(' ', f);
		r = unit_quote(f, o->rearm_argv[i]);
	}
	fputc('\n', f);
	if (fclose(f) != 0 || r < 0)
		return r < 0 ? ip_bad(e, r, "cannot re-arm the job: a line break in its command line")
			     : ip_fail(e, -ENOMEM, "out of memory");
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&res->rerun_at, &tm));
	r = asprintf(&tmr, "%.*sOnCalendar=%s\n",
		     (int)(bs_unit_inplace_postpone_timer_end - bs_unit_inplace_postpone_timer_start),
		     bs_unit_inplace_postpone_timer_start, when);
	if (r < 0) {
		tmr = NULL;
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	tmr_len = (size_t)r;

	snprintf(path, sizeof(path), "%s/%s.service", dir, REARM_UNIT);
	r = ip_write_file_atomic(path, svc, svc_len, 0644, e);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/%s.timer", dir, REARM_UNIT);
	r = ip_write_file_atomic(path, tmr, tmr_len, 0644, e);
	if (r < 0)
		return r;
	/* restart, not start: a timer already running from an earlier
	 * postpone must take the new due time */
	if ((r = systemctl("daemon-reload", NULL, e)) < 0 ||
	    (r = systemctl("enable", REARM_UNIT ".timer", e)) < 0 ||
	    (r = systemctl("restart", REARM_UNIT ".timer", e)) < 0) {
		ip_error_prefix(e, "cannot re-arm the postponed job");
		return r;
	}
	res->rearmed = true;
	snprintf(res->rearm_unit, sizeof(res->rearm_unit), "%s.timer", REARM_UNIT);
	return 0;
}

int bootstage_notify_disarm(const struct bootstage_notify_opts *o, ip_error *e)
{
	const char *stop[] = { "systemctl", "--no-block", "stop", REARM_UNIT ".timer", NULL };
	const char *dir = unit_dir(o);
	char svc[PATH_MAX], tmr[PATH_MAX];
	bool had;
	int r;

	snprintf(svc, sizeof(svc), "%s/%s.service", dir, REARM_UNIT);
	snprintf(tmr, sizeof(tmr), "%s/%s.timer", dir, REARM_UNIT);
	had = access(tmr, F_OK) == 0 || access(svc, F_OK) == 0;
	if (!had)
		return 0;
	/* Disable before the files go: systemctl needs the unit to find the
	 * timers.target.wants link it made.  Without systemd running there is
	 * nothing to stop, only files to remove. */
	if (systemd_booted()) {
		r = systemctl("disable", REARM_UNIT ".timer", e);
		if (r < 0)
			return r;
		/* --no-block: stopping may wait on the service, which may be
		 * the very job that calls this (the timer started it). */
		r = ip_spawn(stop, NULL, e);
		if (r < 0)
			return r;
	}
	if ((unlink(tmr) < 0 && errno != ENOENT) || (unlink(svc) < 0 && errno != ENOENT))
		return ip_fail(e, -errno, "cannot remove the postpone timer from %s: %s", dir,
			       strerror(errno));
	r = ip_fsync_dir(dir, e);
	if (r < 0)
		return r;
	if (systemd_booted())
		return systemctl("daemon-reload", NULL, e);
	return 0;
}

/* ---- the phase ---------------------------------------------------------- */

static int check_opts(const struct bootstage_notify_opts *o, ip_error *e)
{
	if (o->message && strlen(o->message) > MESSAGE_MAX)
		return ip_bad(e, -EINVAL, "the notify message is %zu bytes long: keep it under %d",
			      strlen(o->message), MESSAGE_MAX);
	if (o->message && !*o->message)
		return ip_bad(e, -EINVAL, "the notify message is empty: give a sentence or leave it out");
	return 0;
}

int bootstage_notify(const struct bootstage_notify_opts *o, struct bootstage_notify_result *res,
		     ip_error *e)
{
	const char *msg = o->message ? o->message : DEFAULT_MESSAGE;
	struct bootstage_notify_result later = { 0 };
	struct bootstage_prompt p;
	char text[MESSAGE_MAX + 256], d[32], at[64];
	uint64_t deadline;
	int r;

	memset(res, 0, sizeof(*res));
	r = check_opts(o, e);
	if (r < 0)
		return r;
	/* The countdown users are told about starts now, however long telling
	 * them takes (a session whose notification server hangs costs 5s). */
	deadline = now_ms() + (uint64_t)o->countdown_s * 1000;
	if (o->countdown_s) {
		format_at(time(NULL) + o->countdown_s, at, sizeof(at));
		snprintf(text, sizeof(text), "%s\nReimaging starts in %s, at %s.", msg,
			 bootstage_format_duration(o->countdown_s, d, sizeof(d)), at);
	} else {
		snprintf(text, sizeof(text), "%s\nReimaging starts now.", msg);
	}
	bootstage_notify_users(o, text, res);
	if (o->dry_run)
		return 0; /* res->answer is install */

	r = o->interactive ? prompt_at_terminal(o, deadline, &p, e) : 1;
	if (r < 0)
		return r;
	if (r > 0) {
		wait_until(deadline);
		bootstage_prompt_init(&p, o);
		bootstage_prompt_tick(&p, 0);
	} else {
		res->prompted = true;
	}
	res->answer = p.answer;
	res->answered = p.answered;
	res->postpone_s = p.postpone_s;
	if (p.answer == BOOTSTAGE_POSTPONE)
		res->rerun_at = time(NULL) + p.postpone_s;

	/* Users were given a time; an answer that changes it is told too. */
	if (p.answered) {
		if (p.answer == BOOTSTAGE_POSTPONE) {
			format_at(res->rerun_at, at, sizeof(at));
			snprintf(text, sizeof(text), "Reimaging is postponed by %s: it starts at %s.",
				 bootstage_format_duration(p.postpone_s, d, sizeof(d)), at);
		} else if (p.answer == BOOTSTAGE_DECLINE) {
			snprintf(text, sizeof(text), "Reimaging is cancelled.");
		} else {
			snprintf(text, sizeof(text), "Reimaging starts now.");
		}
		bootstage_notify_users(o, text, &later);
	}
	if (p.answer == BOOTSTAGE_POSTPONE)
		return rearm(o, res, e);
	return 0;
}
