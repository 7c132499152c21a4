/* report.c — every event of status.log POSTed as JSON to the job's
 * [report] url, in order.  status.log itself is the spool: report.cursor
 * holds, durably, the byte offset up to which the server took the events,
 * so that events logged while the network was down (or by another boot)
 * leave in order when it returns.  Each event carries its seq, so a server
 * can drop the one duplicate a crash between its answer and the cursor
 * write could cause. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "bootstage/internal.h"
#include "common/http.h"

static void read_cursor(const char *path, uint64_t *off)
{
	_cleanup_free_ char *data = NULL;

	*off = 0;
	/* none yet: nothing was sent */
	if (ip_read_file(path, 64, &data, NULL, NULL) == 0)
		*off = strtoull(data, NULL, 10);
}

static int write_cursor(const char *path, uint64_t off, ip_error *e)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", off);

	return ip_write_file_atomic(path, buf, (size_t)n, 0600, e);
}

static size_t discard_body(char *p, size_t size, size_t n, void *data)
{
	(void)p;
	(void)data;
	return size * n;
}

CURL *bs_curl_new(const char *url, const char *ca_cert, char *errbuf)
{
	CURL *c = ip_http_new(url, ca_cert, 5L, errbuf);

	/* a check or a report must not hold the pipeline up: a server that
	 * does not answer soon is down */
	if (c)
		curl_easy_setopt(c, CURLOPT_TIMEOUT, 15L);
	return c;
}

static CURL *post_handle(const struct bootstage_report_cfg *cfg, struct curl_slist **hdr, char *errbuf)
{
	CURL *c = bs_curl_new(cfg->url, cfg->ca_cert, errbuf);

	if (!c)
		return NULL;
	*hdr = curl_slist_append(NULL, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
	return c;
}

int bootstage_report_flush(const char *dir, const struct bootstage_report_cfg *cfg,
			   unsigned *sent, ip_error *e)
{
	char logp[4096], curp[4096], lockp[4096], errbuf[CURL_ERROR_SIZE] = "";
	_cleanup_close_ int lock = -1;
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *line = NULL;
	struct curl_slist *hdr = NULL;
	struct stat st;
	CURL *c = NULL;
	uint64_t off;
	size_t cap = 0;
	ssize_t n;
	unsigned count = 0;
	int r = 0;

	if (sent)
		*sent = 0;
	if (!cfg || !cfg->url)
		return 0;
	if (bs_path(logp, sizeof(logp), dir, BOOTSTAGE_LOG_FILE) < 0 ||
	    bs_path(curp, sizeof(curp), dir, BOOTSTAGE_CURSOR_FILE) < 0 ||
	    bs_path(lockp, sizeof(lockp), dir, "report.lock") < 0)
		return ip_bad(e, -ENAMETOOLONG, "state directory path too long: %s", dir);
	/* one sender at a time, or two processes would send the same events */
	lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX) < 0)
		return ip_fail(e, -errno, "cannot lock %s: %s", lockp, strerror(errno));
	if (!(f = fopen(logp, "re")))
		return errno == ENOENT ? 0 : ip_fail(e, -errno, "cannot read %s: %s", logp, strerror(errno));
	read_cursor(curp, &off);
	/* a cursor past the end belongs to a log that was replaced: send the
	 * new one from its start (seq lets the server drop what it has) */
	if (fstat(fileno(f), &st) == 0 && off > (uint64_t)st.st_size)
		off = 0;
	if (fseeko(f, (off_t)off, SEEK_SET) < 0)
		return ip_fail(e, -errno, "cannot seek in %s: %s", logp, strerror(errno));
	while ((n = getline(&line, &cap, f)) > 0) {
		json_object *o;
		CURLcode rc;

		if (line[n - 1] != '\n')
			break;   /* being written: it goes with the next flush */
		line[n - 1] = '\0';
		o = json_tokener_parse(line);
		if (o && json_object_is_type(o, json_type_object)) {
			if (!c && !(c = post_handle(cfg, &hdr, errbuf))) {
				json_object_put(o);
				r = ip_fail(e, -ENOMEM, "out of memory");
				break;
			}
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, line);
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(n - 1));
			rc = curl_easy_perform(c);
			if (rc != CURLE_OK && cfg->spool) {
				json_object_put(o);
				r = ip_fail(e, -EIO, "cannot report to %s: %s: the events wait in %s", cfg->url,
					    errbuf[0] ? errbuf : curl_easy_strerror(rc), logp);
				break;
			}
			/* without spool an event the server did not take is dropped */
			if (rc == CURLE_OK)
				count++;
		}
		/* torn or damaged lines are skipped, never sent */
		json_object_put(o);
		off += (uint64_t)n;
		if ((r = write_cursor(curp, off, e)) < 0)
			break;
	}
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(hdr);
	if (sent)
		*sent = count;
	return r;
}
