/* capture.c — partition → image: read only the used ranges, compress
 * fixed-size frames on every core, write them in order.
 *
 * Memory is bounded: each worker owns one input and one output buffer and
 * holds its compressed frame until the writer's turn comes to it, so at most
 * `threads` frames are in flight whatever the partition size. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zstd.h>

#include "imager/imager_int.h"

struct cap {
	ip_disk *src;
	uint64_t off, size;
	const partctl_usedmap *map;
	const struct imager_capture_opts *o;
	int out_fd;
	uint32_t nframes;
	uint32_t *csize, *dsize;
	uint8_t (*chash)[IMAGER_HASH_LEN], (*uhash)[IMAGER_HASH_LEN];
	crypto_generichash_state file_hash;   /* BLAKE2b-512 of the output, for minisign */
	uint64_t written;
	ip_progress *prog;

	pthread_mutex_t lock;
	pthread_cond_t turn;
	uint32_t next_claim, next_write;
	bool stop;
	int err;
	ip_error e;
};

static bool cancelled(const struct cap *c)
{
	return c->o->cancel && *c->o->cancel;
}

static void cap_fail(struct cap *c, int r, const ip_error *e)
{
	pthread_mutex_lock(&c->lock);
	if (!c->err) {
		c->err = r;
		c->e = *e;
	}
	c->stop = true;
	pthread_cond_broadcast(&c->turn);
	pthread_mutex_unlock(&c->lock);
}

/* First extent of the map that ends after pos. */
static size_t first_extent(const partctl_usedmap *m, uint64_t pos)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (m->ext[mid].off + m->ext[mid].len <= pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Fill buf with the frame at [fo, fo+len) of the partition: used ranges
 * from the disk, zeros elsewhere.  Returns bytes read from the disk. */
static int read_frame(struct cap *c, uint8_t *buf, uint64_t fo, uint32_t len, uint64_t *nread,
		      ip_error *e)
{
	int r;

	*nread = 0;
	if (!c->map) {
		r = ip_disk_read(c->src, buf, len, c->off + fo, e);
		if (r < 0)
			return r;
		ip_disk_drop_cache(c->src, c->off + fo, len);
		*nread = len;
		return 0;
	}
	memset(buf, 0, len);
	for (size_t i = first_extent(c->map, fo); i < c->map->n; i++) {
		const partctl_extent *x = &c->map->ext[i];
		uint64_t a = x->off > fo ? x->off : fo;
		uint64_t b = x->off + x->len < fo + len ? x->off + x->len : fo + len;

		if (x->off >= fo + len)
			break;
		if (b <= a)
			continue;
		r = ip_disk_read(c->src, buf + (a - fo), b - a, c->off + a, e);
		if (r < 0)
			return r;
		ip_disk_drop_cache(c->src, c->off + a, b - a);
		*nread += b - a;
	}
	return 0;
}

static void *cap_worker(void *arg)
{
	struct cap *c = arg;
	size_t bound = ZSTD_compressBound(IMAGER_FRAME_SIZE);
	uint8_t *in = malloc(IMAGER_FRAME_SIZE), *out = malloc(bound);
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	ip_error e = { 0 };
	int r = 0;

	if (!in || !out || !cctx) {
		r = ip_fail(&e, -ENOMEM, "out of memory for the compression buffers: use fewer --threads");
		goto out;
	}
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, c->o->level ? c->o->level : 3);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
	for (;;) {
		uint32_t i, len;
		uint64_t fo, nread;
		size_t n;

		pthread_mutex_lock(&c->lock);
		if (c->stop || c->next_claim >= c->nframes) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		i = c->next_claim++;
		pthread_mutex_unlock(&c->lock);

		fo = (uint64_t)i * IMAGER_FRAME_SIZE;
		len = c->size - fo < IMAGER_FRAME_SIZE ? (uint32_t)(c->size - fo) : IMAGER_FRAME_SIZE;
		r = read_frame(c, in, fo, len, &nread, &e);
		if (r < 0)
			goto out;
		crypto_generichash(c->uhash[i], IMAGER_HASH_LEN, in, len, NULL, 0);
		n = ZSTD_compress2(cctx, out, bound, in, len);
		if (ZSTD_isError(n)) {
			r = ip_fail(&e, -EIO, "zstd cannot compress frame %u: %s", i, ZSTD_getErrorName(n));
			goto out;
		}
		crypto_generichash(c->chash[i], IMAGER_HASH_LEN, out, n, NULL, 0);
		c->csize[i] = (uint32_t)n;
		c->dsize[i] = len;

		/* Ordered writer: wait for our turn. */
		pthread_mutex_lock(&c->lock);
		while (!c->stop && c->next_write != i)
			pthread_cond_wait(&c->turn, &c->lock);
		if (c->stop) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		pthread_mutex_unlock(&c->lock);
		/* Only the frame whose turn it is gets here: no lock needed. */
		if (cancelled(c)) {
			r = ip_fail(&e, -EINTR, "interrupted: the partial image was removed");
			goto out;
		}
		if (ip_write_all(c->out_fd, out, n) < 0) {
			r = ip_fail(&e, -errno, "cannot write the image: %s", strerror(errno));
			goto out;
		}
		crypto_generichash_update(&c->file_hash, out, n);
		c->written += n;
		ip_progress_add(c->prog, len);
		pthread_mutex_lock(&c->lock);
		c->next_write++;
		pthread_cond_broadcast(&c->turn);
		pthread_mutex_unlock(&c->lock);
	}
out:
	if (r < 0)
		cap_fail(c, r, &e);
	ZSTD_freeCCtx(cctx);
	free(in);
	free(out);
	return NULL;
}

static void now_iso(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Write the metadata and seek-table frames after the data frames. */
static int write_tail(struct cap *c, ip_error *e)
{
	struct imager_meta m = { 0 };
	partctl_extent whole = { 0, c->size };
	_cleanup_free_ char *json = NULL;
	_cleanup_free_ uint8_t *tab = NULL;
	uint8_t hdr[16];
	size_t jlen, tlen;

	m.version = IMAGER_FORMAT_VERSION;
	snprintf(m.fs_type, sizeof(m.fs_type), "%s", c->o->fs_type ? c->o->fs_type : "");
	snprintf(m.name, sizeof(m.name), "%s", c->o->name ? c->o->name : "");
	snprintf(m.tool_version, sizeof(m.tool_version), "%s", IP_TOOL_VERSION);
	now_iso(m.created, sizeof(m.created));
	m.part_size = c->size;
	m.block_size = c->map ? c->map->block_size : 4096;
	m.frame_size = IMAGER_FRAME_SIZE;
	m.frames = c->nframes;
	if (c->map) {
		m.nused = c->map->n;
		m.used = c->map->ext;
		m.used_bytes = c->map->used;
	} else if (c->size) {
		m.nused = 1;
		m.used = &whole;
		m.used_bytes = c->size;
	}
	m.frame_hash = c->chash;
	imager_content_hash((const uint8_t(*)[IMAGER_HASH_LEN])c->uhash, c->nframes, m.content_hash);
	json = imager_meta_json(&m);
	if (!json)
		return ip_fail(e, -ENOMEM, "out of memory");
	jlen = strlen(json);
	if (jlen + 8 > IMAGER_META_MAX)
		return ip_fail(e, -EFBIG, "the metadata would be too large (%zu used ranges): the filesystem is too fragmented", m.nused);
	imager_put32(hdr, IMAGER_META_MAGIC);
	imager_put32(hdr + 4, (uint32_t)(jlen + 8));
	memcpy(hdr + 8, IMAGER_META_TAG, 8);
	if (imager_seektable_encode(c->csize, c->dsize, c->nframes, &tab, &tlen) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	if (ip_write_all(c->out_fd, hdr, sizeof(hdr)) < 0 || ip_write_all(c->out_fd, json, jlen) < 0 ||
	    ip_write_all(c->out_fd, tab, tlen) < 0)
		return ip_fail(e, -errno, "cannot write the image: %s", strerror(errno));
	crypto_generichash_update(&c->file_hash, hdr, sizeof(hdr));
	crypto_generichash_update(&c->file_hash, (const uint8_t *)json, jlen);
	crypto_generichash_update(&c->file_hash, tab, tlen);
	c->written += sizeof(hdr) + jlen + tlen;
	return 0;
}

int imager_capture(ip_disk *src, uint64_t off, uint64_t size, const partctl_usedmap *map,
		   const char *out, const struct imager_capture_opts *o,
		   struct imager_capture_result *res, ip_error *e)
{
	struct cap c = { 0 };
	_cleanup_free_ char *tmp = NULL, *sig = NULL;
	unsigned nt = imager_threads(o->threads);
	pthread_t *th = NULL;
	unsigned started = 0;
	uint8_t fhash[64];
	int r = 0;

	memset(res, 0, sizeof(*res));
	if (sodium_init() < 0)
		return ip_fail(e, -EIO, "libsodium cannot initialise");
	if (o->level < 0 || o->level > ZSTD_maxCLevel())
		return ip_bad(e, -EINVAL, "compression level %d is out of range: choose 1 to %d", o->level, ZSTD_maxCLevel());
	if (map && (map->size != size))
		return ip_fail(e, -EINVAL, "the used-block map covers %llu bytes, the partition %llu: probe the filesystem again",
			       (unsigned long long)map->size, (unsigned long long)size);
	if ((size + IMAGER_FRAME_SIZE - 1) / IMAGER_FRAME_SIZE > IMAGER_MAX_FRAMES)
		return ip_bad(e, -EFBIG, "the partition is too large for one image");
	c.src = src;
	c.off = off;
	c.size = size;
	c.map = map;
	c.o = o;
	c.nframes = (uint32_t)((size + IMAGER_FRAME_SIZE - 1) / IMAGER_FRAME_SIZE);
	c.csize = calloc(c.nframes + 1, sizeof(*c.csize));
	c.dsize = calloc(c.nframes + 1, sizeof(*c.dsize));
	c.chash = calloc(c.nframes + 1, IMAGER_HASH_LEN);
	c.uhash = calloc(c.nframes + 1, IMAGER_HASH_LEN);
	th = calloc(nt, sizeof(*th));
	if (asprintf(&tmp, "%s.tmp-%d", out, (int)getpid()) < 0)
		tmp = NULL;
	if (!c.csize || !c.dsize || !c.chash || !c.uhash || !th || !tmp) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out_free;
	}
	c.out_fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (c.out_fd < 0) {
		r = ip_fail(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
		goto out_free;
	}
	crypto_generichash_init(&c.file_hash, NULL, 0, sizeof(fhash));
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.turn, NULL);
	c.prog = ip_progress_new("capture", size);
	for (; started < nt; started++)
		if (pthread_create(&th[started], NULL, cap_worker, &c) != 0)
			break;
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	ip_progress_free(c.prog);
	if (!started) {
		r = ip_fail(e, -EAGAIN, "cannot start a compression thread");
		goto out_unlink;
	}
	if (c.err) {
		*e = c.e;
		r = c.err;
		goto out_unlink;
	}
	if (cancelled(&c)) {
		r = ip_fail(e, -EINTR, "interrupted: the partial image was removed");
		goto out_unlink;
	}
	r = write_tail(&c, e);
	if (r < 0)
		goto out_unlink;
	if (fsync(c.out_fd) < 0) {
		r = ip_fail(e, -errno, "cannot write %s to disk: %s", tmp, strerror(errno));
		goto out_unlink;
	}
	crypto_generichash_final(&c.file_hash, fhash, sizeof(fhash));
	if (o->sign_key) {
		if (asprintf(&sig, "%s.minisig", out) < 0) {
			r = ip_fail(e, -ENOMEM, "out of memory");
			goto out_unlink;
		}
		r = imager_sign_prehashed(fhash, out, o->sign_key, sig, e);
		if (r < 0)
			goto out_unlink;
		res->signed_ = true;
	}
	if (rename(tmp, out) < 0) {
		r = ip_fail(e, -errno, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
		goto out_unlink;
	}
	ip_fsync_parent(out, NULL);
	res->part_size = size;
	res->used = map ? map->used : size;
	res->out_size = c.written;
	res->frames = c.nframes;
	close(c.out_fd);
	c.out_fd = -1;
	goto out_free;

out_unlink:
	unlink(tmp);
	if (c.out_fd >= 0)
		close(c.out_fd);
	c.out_fd = -1;
out_free:
	free(th);
	free(c.csize);
	free(c.dsize);
	free(c.chash);
	free(c.uhash);
	return r;
}
