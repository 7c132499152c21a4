/* log.c — status.log: one JSON line per event, from every phase and every
 * boot, so that the admin reads one story from the first check to done.
 * Appended with O_APPEND under an flock (two writers never interleave or
 * reuse a sequence number) and fsynced before the call returns.  The log
 * is also the report spool: report.c sends it from a durable cursor. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "bootstage/internal.h"

/* After a failed report, events are only spooled for this long before
 * the next try, so that an unreachable server does not slow every step. */
#define REPORT_RETRY_SECONDS 30

struct bootstage_log {
	char *dir;
	int fd;
	char host[256];
	char boot_id[40];
	/* reporting */
	char *url, *ca_cert;
	bool spool;
	time_t retry_at;   /* no report attempt before this (monotonic seconds) */
};

static time_t mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

int bootstage_log_open(const char *dir, const struct bootstage_report_cfg *report,
		       bootstage_log **out, ip_error *e)
{
	_cleanup_free_ char *boot = NULL;
	bootstage_log *l;
	char path[4096];
	int r;

	if (bs_path(path, sizeof(path), dir, BOOTSTAGE_LOG_FILE) < 0)
		return ip_bad(e, -ENAMETOOLONG, "state directory path too long: %s", dir);
	if ((r = ip_mkdir_p(dir, 0700, e)) < 0)
		return r;
	if (!(l = calloc(1, sizeof(*l))) || !(l->dir = strdup(dir))) {
		free(l);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	l->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (l->fd < 0) {
		r = ip_fail(e, -errno, "cannot open %s: %s", path, strerror(errno));
		bootstage_log_free(l);
		return r;
	}
	if (gethostname(l->host, sizeof(l->host)) < 0)
		snprintf(l->host, sizeof(l->host), "unknown");
	/* the boot tells the admin which of the boots of a run said what */
	if (ip_read_file("/proc/sys/kernel/random/boot_id", 64, &boot, NULL, NULL) == 0) {
		boot[strcspn(boot, "\n")] = '\0';
		snprintf(l->boot_id, sizeof(l->boot_id), "%s", boot);
	}
	if (report && report->url) {
		l->spool = report->spool;
		if (!(l->url = strdup(report->url)) || (report->ca_cert && !(l->ca_cert = strdup(report->ca_cert)))) {
			bootstage_log_free(l);
			return ip_fail(e, -ENOMEM, "out of memory");
		}
	}
	*out = l;
	return 0;
}

static void report_now(bootstage_log *l)
{
	struct bootstage_report_cfg cfg = { .url = l->url, .ca_cert = l->ca_cert, .spool = l->spool };

	if (bootstage_report_flush(l->dir, &cfg, NULL, NULL) < 0)
		l->retry_at = mono_now() + REPORT_RETRY_SECONDS;
	else
		l->retry_at = 0;
}

void bootstage_log_free(bootstage_log *l)
{
	if (!l)
		return;
	/* a last try, so that a short run's events leave with it */
	if (l->url && l->fd >= 0)
		report_now(l);
	if (l->fd >= 0)
		close(l->fd);
	free(l->dir);
	free(l->url);
	free(l->ca_cert);
	free(l);
}

/* The seq of the last whole event in the file, and whether the file ends
 * in the middle of a line (a writer killed while writing). */
static int64_t last_seq(int fd, bool *torn)
{
	char buf[65536];
	struct stat st;
	ssize_t n;
	off_t from;
	int64_t seq = 0;

	*torn = false;
	if (fstat(fd, &st) < 0 || st.st_size == 0)
		return 0;
	from = st.st_size > (off_t)sizeof(buf) - 1 ? st.st_size - (off_t)sizeof(buf) + 1 : 0;
	n = pread(fd, buf, sizeof(buf) - 1, from);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	*torn = buf[n - 1] != '\n';
	/* the whole lines of the tail (the first may be cut by the window);
	 * the last that parses wins */
	for (char *p = buf, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		json_object *o, *v;

		*nl = '\0';
		if ((p > buf || from == 0) && (o = json_tokener_parse(p))) {
			if (json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "seq", &v))
				seq = json_object_get_int64(v);
			json_object_put(o);
		}
	}
	return seq;
}

int bootstage_log_event(bootstage_log *l, const char *phase, const char *step,
			enum bootstage_level level, double progress, ip_error *e,
			const char *fmt, ...)
{
	static const char *const levels[] = { "info", "warning", "error" };
	_cleanup_json_ json_object *o = json_object_new_object();
	char msg[1024], now[32];
	const char *s;
	va_list ap;
	bool torn;
	int r = 0;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bs_now(now, sizeof(now));
	if (flock(l->fd, LOCK_EX) < 0)
		return ip_fail(e, -errno, "cannot lock %s/%s: %s", l->dir, BOOTSTAGE_LOG_FILE, strerror(errno));
	json_object_object_add(o, "seq", json_object_new_int64(last_seq(l->fd, &torn) + 1));
	json_object_object_add(o, "time", json_object_new_string(now));
	json_object_object_add(o, "host", json_object_new_string(l->host));
	json_object_object_add(o, "boot_id", json_object_new_string(l->boot_id));
	json_object_object_add(o, "phase", phase ? json_object_new_string(phase) : NULL);
	json_object_object_add(o, "step", step && *step ? json_object_new_string(step) : NULL);
	json_object_object_add(o, "level", json_object_new_string(levels[level <= BOOTSTAGE_ERROR ? level : 0]));
	json_object_object_add(o, "message", json_object_new_string(msg));
	json_object_object_add(o, "progress", progress >= 0 && isfinite(progress)
			       ? json_object_new_double(progress) : NULL);
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	/* a torn line left by a kill stays a line of its own, which readers
	 * skip, instead of swallowing this event */
	if ((torn && ip_write_all(l->fd, "\n", 1) < 0) || ip_write_all(l->fd, s, strlen(s)) < 0 ||
	    ip_write_all(l->fd, "\n", 1) < 0 || fsync(l->fd) < 0)
		r = ip_fail(e, -errno, "cannot append to %s/%s: %s", l->dir, BOOTSTAGE_LOG_FILE, strerror(errno));
	flock(l->fd, LOCK_UN);
	if (r == 0 && l->url && (!l->retry_at || mono_now() >= l->retry_at))
		report_now(l);
	return r;
}

int bootstage_log_tail(const char *dir, size_t n, json_object **out, ip_error *e)
{
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *line = NULL;
	json_object **ring = NULL;
	char path[4096];
	size_t cap = 0, seen = 0;

	if (bs_path(path, sizeof(path), dir, BOOTSTAGE_LOG_FILE) < 0)
		return ip_bad(e, -ENAMETOOLONG, "state directory path too long: %s", dir);
	if (!(*out = json_object_new_array()))
		return ip_fail(e, -ENOMEM, "out of memory");
	if (!n || !(f = fopen(path, "re")))
		return 0;
	if (!(ring = calloc(n, sizeof(*ring)))) {
		json_object_put(*out);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	while (getline(&line, &cap, f) > 0) {
		json_object *o;

		if (!strchr(line, '\n'))
			break;   /* a line still being written, or torn */
		o = json_tokener_parse(line);
		if (!o || !json_object_is_type(o, json_type_object)) {
			json_object_put(o);
			continue;
		}
		json_object_put(ring[seen % n]);
		ring[seen++ % n] = o;
	}
	for (size_t i = seen > n ? seen - n : 0; i < seen; i++)
		json_object_array_add(*out, ring[i % n]);
	free(ring);
	return 0;
}
