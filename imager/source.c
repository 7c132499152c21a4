/* source.c — images from http:// and https:// (libcurl): download into a
 * local cache file with Range resume after a cut connection, several mirrors
 * tried in order, an optional rate limit.
 *
 * Trust: a resumed download keeps only bytes it has hashed.  When the file
 * is complete, every frame is checked against the metadata's hash; from the
 * first bad frame on, the file is cut back and fetched again (from the next
 * mirror).  With a key the signature then covers every byte. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "common/http.h"
#include "imager/imager_int.h"

#define FETCH_ROUNDS 6        /* passes over the mirror list (about 8 s of waits) before giving up */
/* What a download leaves free on the filesystem it writes to: the state
 * directory's filesystem also holds journals and the machine's own logs. */
#define FREE_MARGIN ((uint64_t)64 << 20)
#define SPACE_CHECK_EVERY ((uint64_t)8 << 20)

bool imager_is_url(const char *s)
{
	return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8);
}

struct dl {
	int fd;
	uint64_t have;
	uint64_t limit;        /* the file never grows past this (0: no cap) */
	uint64_t next_check;   /* have at which free space is looked at again */
	ip_progress *prog;
	imager_cancel_flag *cancel;
	int werr;
	bool over;             /* the server sent more than limit */
	bool low;              /* the filesystem written to ran low */
};

/* Bytes free to an unprivileged writer on the filesystem of fd. */
static int free_bytes(int fd, uint64_t *avail)
{
	struct statvfs vfs;

	if (fstatvfs(fd, &vfs) < 0)
		return -errno;
	*avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	return 0;
}

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
	struct dl *d = arg;
	size_t len = sz * n;
	uint64_t avail = UINT64_MAX;

	if (d->cancel && *d->cancel)
		return 0;
	/* Content-Length and HEAD are the server's word: an endless body
	 * (chunked, or a connection that never closes) is cut here. */
	if (d->limit && (d->have > d->limit || len > d->limit - d->have)) {
		d->over = true;
		return 0;
	}
	if (d->have + len >= d->next_check) {
		if (free_bytes(d->fd, &avail) == 0 && avail < FREE_MARGIN + len) {
			d->low = true;
			return 0;
		}
		d->next_check = d->have + len + SPACE_CHECK_EVERY;
	}
	if (ip_write_all(d->fd, p, len) < 0) {
		d->werr = errno;
		return 0;
	}
	d->have += len;
	ip_progress_set(d->prog, d->have);
	return len;
}

static CURL *easy_new(const char *url, const struct imager_fetch_opts *o, char *errbuf)
{
	CURL *c = ip_http_new(url, o->ca_file, 15L, errbuf);

	if (!c)
		return NULL;
	/* A stalled transfer (under 1 KiB/s for 30 s) counts as cut. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
	if (o->max_rate)
		curl_easy_setopt(c, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)o->max_rate);
	return c;
}

/* Size of the file at url (HEAD); -ENOENT style errors in *why. */
/* A failure no retry mends: the server's certificate is not trusted. */
static bool tls_trust_error(CURLcode rc)
{
	return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
	       rc == CURLE_SSL_ISSUER_ERROR;
}

static int remote_size(const char *url, const struct imager_fetch_opts *o, uint64_t *size, char *why, size_t wlen)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *c = easy_new(url, o, errbuf);
	curl_off_t len = -1;
	CURLcode rc;

	if (!c)
		return -ENOMEM;
	curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
	curl_easy_cleanup(c);
	if (rc != CURLE_OK) {
		snprintf(why, wlen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		return tls_trust_error(rc) ? -EPERM : -EIO;
	}
	if (len < 0) {
		snprintf(why, wlen, "the server does not say how large the image is");
		return -EIO;
	}
	*size = (uint64_t)len;
	return 0;
}

/* GET url into d from byte from on (0: all of it), until d holds d->limit
 * bytes (0: no cap); -EIO with the reason in why when the transfer fails,
 * -EFBIG when the server sends more, -ENOSPC when the filesystem runs low. */
static int get_into(const char *url, const struct imager_fetch_opts *o, struct dl *d, uint64_t from,
		    char *why, size_t wlen)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *c = easy_new(url, o, errbuf);
	CURLcode rc;

	if (!c)
		return -ENOMEM;
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, d);
	if (from)
		curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)from);
	/* a Content-Length past the cap is refused before the body */
	if (d->limit)
		curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(d->limit - from));
	rc = curl_easy_perform(c);
	curl_easy_cleanup(c);
	if (d->over || rc == CURLE_FILESIZE_EXCEEDED) {
		d->over = true;
		snprintf(why, wlen, "%s sent more than the %llu bytes it announced", url,
			 (unsigned long long)d->limit);
		return -EFBIG;
	}
	if (d->low)
		return -ENOSPC;
	if (rc != CURLE_OK) {
		snprintf(why, wlen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		return -EIO;
	}
	return 0;
}

/* Append [have, size) of url to fd.  0 when the file is complete. */
static int fetch_range(const char *url, int fd, uint64_t size, const struct imager_fetch_opts *o,
		       ip_progress *prog, char *why, size_t wlen)
{
	struct stat sb;
	struct dl d = { .fd = fd, .prog = prog, .cancel = o->cancel, .limit = size };
	int r;

	if (fstat(fd, &sb) < 0)
		return -errno;
	d.have = (uint64_t)sb.st_size;
	if (d.have == size)
		return 0;
	if (lseek(fd, 0, SEEK_END) < 0)
		return -errno;
	r = get_into(url, o, &d, d.have, why, wlen);
	if (d.werr)
		return -d.werr;
	if (o->cancel && *o->cancel)
		return -EINTR;
	if (r == -EFBIG && ftruncate(fd, sb.st_size) < 0)
		return -errno; /* nothing of a lying answer is kept */
	if (r < 0)
		return r;
	return d.have == size ? 0 : -EAGAIN;
}

static int fetch_small(const char *url, const char *path, const struct imager_fetch_opts *o, char *why,
		       size_t wlen)
{
	ip_outfile of;
	ip_error e = { 0 };
	struct dl d = { .cancel = o->cancel, .limit = 65536 };
	int r = ip_outfile_open(path, NULL, 0644, &of, &e);

	if (r < 0)
		return r;
	d.fd = of.fd;
	r = get_into(url, o, &d, 0, why, wlen);
	if (r < 0) {
		ip_outfile_abort(&of);
		return r;
	}
	r = ip_outfile_commit(&of, &e);
	if (r < 0)
		snprintf(why, wlen, "%s", e.msg);
	return r;
}

/* The file is complete: keep what hashes right, cut from the first bad
 * frame (or everything when the layout itself is bad).  1: all good. */
static int keep_hashed(const char *path, int fd, unsigned threads)
{
	imager_image *img = NULL;
	ip_error e = { 0 };
	uint64_t keep = 0;
	int r;

	if (imager_open(path, &img, &e) == 0) {
		r = imager_verify_frames(img, threads, true, &e);
		if (r == 0) {
			imager_free(img);
			return 1;
		}
		/* the message names the frame; find the first bad one again */
		for (uint32_t i = 0; i < img->st.n; i++) {
			uint8_t *buf = malloc(img->st.f[i].csize + 1);
			bool good = buf && imager_read_frame(img, i, buf, NULL) == 0;

			free(buf);
			if (!good)
				break;
			keep = img->st.f[i].coff + img->st.f[i].csize;
		}
		imager_free(img);
	}
	if (ftruncate(fd, (off_t)keep) < 0)
		return -errno;
	return 0;
}

/* Whether the filesystem of fd has room for the rest of a file of size
 * bytes and FREE_MARGIN besides; -ENOSPC with the reason in e. */
static int check_room(int fd, const char *part, uint64_t size, ip_error *e)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ], b3[IP_SIZE_BUFSZ];
	struct stat sb;
	uint64_t avail = 0, need;

	if (fstat(fd, &sb) < 0 || free_bytes(fd, &avail) < 0)
		return ip_fail(e, -errno, "cannot stat %s: %s", part, strerror(errno));
	need = size > (uint64_t)sb.st_size ? size - (uint64_t)sb.st_size : 0;
	if (avail >= need + FREE_MARGIN)
		return 0;
	return ip_fail(e, -ENOSPC, "the filesystem holding %s has %s free, the download needs %s and keeps %s spare: free space there and run again",
		       part, ip_format_size(avail, b1, sizeof(b1)), ip_format_size(need, b2, sizeof(b2)),
		       ip_format_size(FREE_MARGIN, b3, sizeof(b3)));
}

/* A download that got nothing leaves no empty .part behind. */
static void drop_empty(int fd, const char *part)
{
	struct stat sb;

	if (fstat(fd, &sb) == 0 && sb.st_size == 0)
		unlink(part);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int imager_fetch(const char *url, const struct imager_fetch_opts *o, const char *dest, ip_error *e)
{
	const char *srcs[64];
	size_t ns = 0;
	_cleanup_free_ char *part = NULL;
	_cleanup_close_ int fd = -1;
	char why[CURL_ERROR_SIZE + 64] = "no source answered";
	static bool curl_ready;
	ip_progress *prog = NULL;
	const char *untrusted = NULL;
	bool lying[IP_ARRAY_SIZE(srcs)] = { false };
	uint64_t size = 0;
	int r;

	/* a download without a cap could fill the disk it is stored on */
	if (!o->max_bytes)
		return ip_fail(e, -EINVAL, "internal error: download of %s without a size limit", url);
	if (o->ca_file && access(o->ca_file, R_OK) != 0)
		return ip_bad(e, -errno, "cannot read the CA certificate %s: %s", o->ca_file, strerror(errno));
	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
			return ip_fail(e, -EIO, "libcurl cannot initialise");
		curl_ready = true;
	}
	srcs[ns++] = url;
	for (size_t i = 0; o->mirrors && o->mirrors[i] && ns < IP_ARRAY_SIZE(srcs); i++)
		srcs[ns++] = o->mirrors[i];
	if (asprintf(&part, "%s.part", dest) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	/* .part survives a kill: the next run resumes it (after hashing). */
	fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return ip_fail(e, -errno, "cannot create %s: %s", part, strerror(errno));

	for (int round = 0; round < FETCH_ROUNDS; round++) {
		size_t nuntrusted = 0, nlying = 0;

		for (size_t s = 0; s < ns; s++) {
			uint64_t sz;

			if (o->cancel && *o->cancel)
				return ip_fail(e, -EINTR, "interrupted: run again to resume the download");
			/* a server that sent more than it announced is not asked again */
			if (lying[s]) {
				nlying++;
				continue;
			}
			r = remote_size(srcs[s], o, &sz, why, sizeof(why));
			if (r == -EPERM) {
				untrusted = srcs[s];
				nuntrusted++;
			}
			if (r < 0) {
				char w2[sizeof(why)];

				snprintf(w2, sizeof(w2), "%s: %s", srcs[s], why);
				snprintf(why, sizeof(why), "%s", w2);
				continue;
			}
			if (o->max_bytes && sz > o->max_bytes) {
				char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];

				snprintf(why, sizeof(why), "%s announces %s, more than an image of the target can be (%s)",
					 srcs[s], ip_format_size(sz, b1, sizeof(b1)), ip_format_size(o->max_bytes, b2, sizeof(b2)));
				lying[s] = true;
				nlying++;
				continue;
			}
			if (size && sz != size) {
				/* A mirror with another file: start over from it. */
				if (ftruncate(fd, 0) < 0)
					return ip_fail(e, -errno, "cannot truncate %s: %s", part, strerror(errno));
			}
			size = sz;
			{
				struct stat sb;

				if (fstat(fd, &sb) == 0 && (uint64_t)sb.st_size > size && ftruncate(fd, 0) < 0)
					return ip_fail(e, -errno, "cannot truncate %s: %s", part, strerror(errno));
			}
			r = check_room(fd, part, size, e);
			if (r < 0) {
				ip_progress_free(prog);
				drop_empty(fd, part);
				return r;
			}
			if (!prog)
				prog = ip_progress_new("download", size);
			/* keep pulling from this source while it makes progress */
			for (int tries = 0; tries < 1000; tries++) {
				struct stat before, after;

				fstat(fd, &before);
				r = fetch_range(srcs[s], fd, size, o, prog, why, sizeof(why));
				if (r == 0)
					break;
				if (r == -EINTR) {
					ip_progress_free(prog);
					return ip_fail(e, r, "interrupted: run again to resume the download");
				}
				if (r == -ENOSPC) {
					ip_progress_free(prog);
					return check_room(fd, part, size, e) < 0 ? r :
					       ip_fail(e, r, "the filesystem holding %s ran low on space during the download: free space there and run again", part);
				}
				if (r == -EFBIG) {
					lying[s] = true;
					nlying++;
					break;
				}
				if (r != -EIO && r != -EAGAIN) {
					ip_progress_free(prog);
					return ip_fail(e, r, "cannot write %s: %s", part, strerror(-r));
				}
				fstat(fd, &after);
				if (after.st_size == before.st_size)
					break; /* no progress: next source */
			}
			if (r != 0)
				continue;
			if (fsync(fd) < 0) {
				ip_progress_free(prog);
				return ip_fail(e, -errno, "cannot write %s: %s", part, strerror(errno));
			}
			r = keep_hashed(part, fd, o->threads);
			if (r < 0) {
				ip_progress_free(prog);
				return ip_fail(e, r, "cannot truncate %s: %s", part, strerror(-r));
			}
			if (r == 0) {
				snprintf(why, sizeof(why), "%s sent bytes that do not match the image's hashes", srcs[s]);
				continue;
			}
			ip_progress_free(prog);
			prog = NULL;
			if (o->want_sig) {
				_cleanup_free_ char *su = NULL, *sp = NULL;

				if (asprintf(&su, "%s.minisig", srcs[s]) < 0 || asprintf(&sp, "%s.minisig", dest) < 0)
					return ip_fail(e, -ENOMEM, "out of memory");
				if (fetch_small(su, sp, o, why, sizeof(why)) < 0) {
					unlink(sp);
					/* verification will say the signature is missing */
				}
			}
			return ip_rename_durable(part, dest, e);
		}
		/* a certificate nobody trusts stays untrusted, a server that
		 * sends endless bytes keeps sending them: say so now */
		if (nuntrusted + nlying == ns)
			break;
		/* every source failed this round: wait a little (a restarting
		 * server, a network coming back), then try them all again */
		sleep_ms(250L << (round < 4 ? round : 4));
	}
	ip_progress_free(prog);
	drop_empty(fd, part);
	if (untrusted && !size)
		return ip_fail(e, -EPERM, "cannot download %s: the certificate of %s is not trusted (%s): pass its CA with --ca-cert FILE, or add the CA to the system's store",
			       url, untrusted, why);
	return ip_fail(e, -EHOSTUNREACH, "cannot download %s (%s): check the URL and --mirror, or download it by hand",
		       url, why);
}

int imager_probe_url(const char *url, const struct imager_fetch_opts *o, uint64_t *size, ip_error *e)
{
	char why[CURL_ERROR_SIZE + 64] = "";
	int r = remote_size(url, o, size, why, sizeof(why));

	for (size_t i = 0; r < 0 && r != -ENOMEM && o->mirrors && o->mirrors[i]; i++)
		r = remote_size(o->mirrors[i], o, size, why, sizeof(why));
	if (r == -ENOMEM)
		return ip_fail(e, r, "out of memory");
	if (r < 0)
		return ip_fail(e, r, "image %s is unreachable (%s)%s: check the URL and the network", url, why,
			       o->mirrors && o->mirrors[0] ? ", and so are its mirrors" : "");
	return 0;
}
