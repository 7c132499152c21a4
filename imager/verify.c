/* verify.c — check an image end to end: the signature, then every frame
 * (its hash, that it decompresses, zstd's own checksum) on every core, then
 * the content hash built from the frames' uncompressed hashes. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <zstd.h>

#include "imager/imager_int.h"

struct ver {
	imager_image *img;
	uint8_t (*uhash)[IMAGER_HASH_LEN];
	ip_progress *prog;
	pthread_mutex_t lock;
	uint32_t next;
	uint32_t bad_frame;     /* lowest failing frame, UINT32_MAX: none */
	bool hash_only;         /* check the compressed hashes, do not decompress */
	int err;
	ip_error e;
};

/* All zeros?  Much faster than hashing (unused frames are zeros). */
static bool is_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

static void *ver_worker(void *arg)
{
	struct ver *v = arg;
	uint32_t maxc = 0;
	uint8_t *cbuf, *dbuf = malloc(IMAGER_FRAME_SIZE);
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	ip_error e = { 0 };
	int r = 0;

	for (uint32_t i = 0; i < v->img->st.n; i++)
		if (v->img->st.f[i].csize > maxc)
			maxc = v->img->st.f[i].csize;
	cbuf = malloc(maxc ? maxc : 1);
	if (!cbuf || !dbuf || !dctx) {
		pthread_mutex_lock(&v->lock);
		if (!v->err) {
			v->err = ip_fail(&v->e, -ENOMEM, "out of memory: use fewer --threads");
			v->bad_frame = 0;
		}
		pthread_mutex_unlock(&v->lock);
		goto out;
	}
	for (;;) {
		uint32_t i;

		pthread_mutex_lock(&v->lock);
		i = v->next++;
		/* Frames past a known failure need not be checked. */
		if (i >= v->img->st.n || i > v->bad_frame) {
			pthread_mutex_unlock(&v->lock);
			break;
		}
		pthread_mutex_unlock(&v->lock);
		r = imager_read_frame(v->img, i, cbuf, &e);
		if (r >= 0 && v->hash_only) {
			ip_progress_add(v->prog, v->img->st.f[i].csize);
			continue;
		}
		if (r >= 0)
			r = imager_decompress_frame(v->img, i, dctx, cbuf, dbuf, &e);
		if (r < 0) {
			pthread_mutex_lock(&v->lock);
			if (i < v->bad_frame) {
				v->bad_frame = i;
				v->err = r;
				v->e = e;
			}
			pthread_mutex_unlock(&v->lock);
			continue;
		}
		if (v->img->st.f[i].dsize == IMAGER_FRAME_SIZE && is_zero(dbuf, IMAGER_FRAME_SIZE))
			memcpy(v->uhash[i], imager_zero_frame_hash(), IMAGER_HASH_LEN);
		else
			crypto_generichash(v->uhash[i], IMAGER_HASH_LEN, dbuf, v->img->st.f[i].dsize, NULL, 0);
		ip_progress_add(v->prog, v->img->st.f[i].csize);
	}
out:
	ZSTD_freeDCtx(dctx);
	free(cbuf);
	free(dbuf);
	return NULL;
}

/* Check every frame of an opened image; shared with deploy's preflight. */
int imager_verify_frames(imager_image *img, unsigned threads, bool hash_only, ip_error *e)
{
	struct ver v = { .img = img, .bad_frame = UINT32_MAX, .hash_only = hash_only };
	unsigned nt = imager_threads(threads), started = 0;
	pthread_t th[256];
	uint8_t content[IMAGER_HASH_LEN];

	v.uhash = calloc(img->st.n + 1, IMAGER_HASH_LEN);
	if (!v.uhash)
		return ip_fail(e, -ENOMEM, "out of memory");
	pthread_mutex_init(&v.lock, NULL);
	v.prog = ip_progress_new(hash_only ? "check" : "verify", img->st.csum);
	for (; started < nt; started++)
		if (pthread_create(&th[started], NULL, ver_worker, &v) != 0)
			break;
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	ip_progress_free(v.prog);
	if (!started) {
		free(v.uhash);
		return ip_fail(e, -EAGAIN, "cannot start a verification thread");
	}
	if (v.err) {
		free(v.uhash);
		*e = v.e;
		return v.err;
	}
	if (hash_only) {
		free(v.uhash);
		return 0;
	}
	imager_content_hash((const uint8_t(*)[IMAGER_HASH_LEN])v.uhash, img->st.n, content);
	free(v.uhash);
	if (sodium_memcmp(content, img->meta.content_hash, IMAGER_HASH_LEN))
		return ip_bad(e, -EBADMSG, "%s is damaged: its content hash does not match its frames: capture or download it again",
			      img->path);
	return 0;
}

int imager_verify(const char *path, const struct imager_verify_opts *o, ip_error *e)
{
	_cleanup_(imager_freep) imager_image *img = NULL;
	_cleanup_free_ char *sig = NULL;
	int r;

	if (sodium_init() < 0)
		return ip_fail(e, -EIO, "libsodium cannot initialise");
	r = imager_open(path, &img, e);
	if (r < 0)
		return r;
	if (o->pubkey) {
		if (asprintf(&sig, "%s.minisig", path) < 0)
			return ip_fail(e, -ENOMEM, "out of memory");
		r = imager_verify_sig(path, sig, o->pubkey, e);
		if (r < 0)
			return r;
	}
	return imager_verify_frames(img, o->threads, false, e);
}
