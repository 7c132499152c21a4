/* capture.c — partition → image: read only the used ranges, compress
 * fixed-size frames on every core, write them in order.
 *
 * Pipeline: one reader thread reads frames in order (a single sequential
 * stream: several readers interleaving defeat readahead, measured 1.6x
 * slower on a loop device), `threads` workers hash and compress, one writer
 * thread writes in frame order.  Memory is bounded by a fixed pool of
 * threads + 2 frame slots (input + compressed buffer each, about 8 MiB),
 * whatever the partition size. */
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
	pthread_cond_t turn;           /* any slot changed state */
	struct slot *slots;
	unsigned nslots;
	uint32_t next_write;
	bool stop;
	int err;
	ip_error e;
};

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ, SLOT_COMPRESSING, SLOT_DONE };

struct slot {
	enum slot_state state;
	uint32_t frame;
	uint32_t len;       /* uncompressed bytes */
	uint64_t used;      /* bytes of used data in it */
	size_t clen;        /* compressed bytes */
	uint8_t *in, *out;
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

/* Reads closer than this are merged into one (the gap read too, then
 * zeroed): one large sequential read beats many small ones, on disks and
 * for readahead shared by several workers. */
#define CAPTURE_MERGE_GAP ((uint64_t)1 << 20)

/* Fill buf with the frame at [fo, fo+len) of the partition: used ranges
 * from the disk, zeros elsewhere.  Returns bytes of used data. */
static int read_frame(struct cap *c, uint8_t *buf, uint64_t fo, uint32_t len, uint64_t *nused,
		      ip_error *e)
{
	uint64_t end = fo + len;
	size_t i;
	int r;

	*nused = 0;
	if (c->map)
		memset(buf, 0, len);   /* unused blocks are stored as zeros */
	if (!c->map) {
		r = ip_disk_read(c->src, buf, len, c->off + fo, e);
		if (r < 0)
			return r;
		ip_disk_drop_cache(c->src, c->off + fo, len);
		*nused = len;
		return 0;
	}
	i = first_extent(c->map, fo);
	while (i < c->map->n && c->map->ext[i].off < end) {
		/* a run of extents with small gaps: [a, b) */
		uint64_t a = c->map->ext[i].off > fo ? c->map->ext[i].off : fo, b, pos;
		size_t j = i;

		b = c->map->ext[j].off + c->map->ext[j].len;
		while (j + 1 < c->map->n && c->map->ext[j + 1].off < end &&
		       c->map->ext[j + 1].off - b < CAPTURE_MERGE_GAP) {
			j++;
			b = c->map->ext[j].off + c->map->ext[j].len;
		}
		if (b > end)
			b = end;
		r = ip_disk_read(c->src, buf + (a - fo), b - a, c->off + a, e);
		if (r < 0)
			return r;
		ip_disk_drop_cache(c->src, c->off + a, b - a);
		/* zero again the gaps the merged read filled */
		pos = a;
		for (size_t k = i; k <= j; k++) {
			uint64_t xo = c->map->ext[k].off > fo ? c->map->ext[k].off : fo;
			uint64_t xe = c->map->ext[k].off + c->map->ext[k].len < end ? c->map->ext[k].off + c->map->ext[k].len : end;

			if (xo > pos)
				memset(buf + (pos - fo), 0, xo - pos);
			if (xe > pos)
				pos = xe;
			*nused += xe > xo ? xe - xo : 0;
		}
		i = j + 1;
	}
	return 0;
}

/* Under the lock: wait for a slot in state st (for SLOT_DONE: the one of
 * frame next_write); NULL when stopping. */
static struct slot *wait_slot(struct cap *c, enum slot_state st)
{
	for (;;) {
		struct slot *best = NULL;

		if (c->stop)
			return NULL;
		for (unsigned i = 0; i < c->nslots; i++) {
			struct slot *s = &c->slots[i];

			if (s->state != st)
				continue;
			if (st == SLOT_DONE && s->frame != c->next_write)
				continue;
			if (!best || s->frame < best->frame)
				best = s;
		}
		if (best)
			return best;
		pthread_cond_wait(&c->turn, &c->lock);
	}
}

static void set_state(struct cap *c, struct slot *s, enum slot_state st)
{
	pthread_mutex_lock(&c->lock);
	s->state = st;
	pthread_cond_broadcast(&c->turn);
	pthread_mutex_unlock(&c->lock);
}

static void *cap_reader(void *arg)
{
	struct cap *c = arg;
	ip_error e = { 0 };
	int r = 0;

	for (uint32_t i = 0; i < c->nframes; i++) {
		struct slot *s;
		uint64_t fo = (uint64_t)i * IMAGER_FRAME_SIZE;

		pthread_mutex_lock(&c->lock);
		s = wait_slot(c, SLOT_FREE);
		if (s)
			s->state = SLOT_READING;
		pthread_mutex_unlock(&c->lock);
		if (!s)
			break;
		if (cancelled(c)) {
			r = ip_fail(&e, -EINTR, "interrupted: the partial image was removed");
			break;
		}
		s->frame = i;
		s->len = c->size - fo < IMAGER_FRAME_SIZE ? (uint32_t)(c->size - fo) : IMAGER_FRAME_SIZE;
		r = read_frame(c, s->in, fo, s->len, &s->used, &e);
		if (r < 0)
			break;
		set_state(c, s, SLOT_READ);
	}
	if (r < 0)
		cap_fail(c, r, &e);
	return NULL;
}

static void *cap_worker(void *arg)
{
	struct cap *c = arg;
	size_t bound = ZSTD_compressBound(IMAGER_FRAME_SIZE);
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	ip_error e = { 0 };
	int r = 0;

	if (!cctx) {
		r = ip_fail(&e, -ENOMEM, "out of memory for the compression buffers: use fewer --threads");
		goto out;
	}
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, c->o->level ? c->o->level : 3);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
	for (;;) {
		struct slot *s;
		size_t n;
		uint32_t i;

		pthread_mutex_lock(&c->lock);
		s = wait_slot(c, SLOT_READ);
		if (s)
			s->state = SLOT_COMPRESSING;
		pthread_mutex_unlock(&c->lock);
		if (!s)
			break;
		i = s->frame;
		/* an unused frame is all zeros: its hash is known */
		if (!s->used && s->len == IMAGER_FRAME_SIZE)
			memcpy(c->uhash[i], imager_zero_frame_hash(), IMAGER_HASH_LEN);
		else
			crypto_generichash(c->uhash[i], IMAGER_HASH_LEN, s->in, s->len, NULL, 0);
		n = ZSTD_compress2(cctx, s->out, bound, s->in, s->len);
		if (ZSTD_isError(n)) {
			r = ip_fail(&e, -EIO, "zstd cannot compress frame %u: %s", i, ZSTD_getErrorName(n));
			goto out;
		}
		crypto_generichash(c->chash[i], IMAGER_HASH_LEN, s->out, n, NULL, 0);
		c->csize[i] = (uint32_t)n;
		c->dsize[i] = s->len;
		s->clen = n;
		set_state(c, s, SLOT_DONE);
	}
out:
	if (r < 0)
		cap_fail(c, r, &e);
	ZSTD_freeCCtx(cctx);
	return NULL;
}

static void *cap_writer(void *arg)
{
	struct cap *c = arg;
	ip_error e = { 0 };
	int r = 0;

	while (c->next_write < c->nframes) {
		struct slot *s;

		pthread_mutex_lock(&c->lock);
		s = wait_slot(c, SLOT_DONE);
		pthread_mutex_unlock(&c->lock);
		if (!s)
			break;
		if (ip_write_all(c->out_fd, s->out, s->clen) < 0) {
			r = ip_fail(&e, -errno, "cannot write the image: %s", strerror(errno));
			break;
		}
		if (c->o->sign_key) /* minisign's prehash, only when signing */
			crypto_generichash_update(&c->file_hash, s->out, s->clen);
		c->written += s->clen;
		ip_progress_add(c->prog, s->len);
		pthread_mutex_lock(&c->lock);
		s->state = SLOT_FREE;
		c->next_write++;
		pthread_cond_broadcast(&c->turn);
		pthread_mutex_unlock(&c->lock);
	}
	if (r < 0)
		cap_fail(c, r, &e);
	/* wake the workers: nothing more will come */
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->turn);
	pthread_mutex_unlock(&c->lock);
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
	if (c->o->sign_key) {
		crypto_generichash_update(&c->file_hash, hdr, sizeof(hdr));
		crypto_generichash_update(&c->file_hash, (const uint8_t *)json, jlen);
		crypto_generichash_update(&c->file_hash, tab, tlen);
	}
	c->written += sizeof(hdr) + jlen + tlen;
	return 0;
}

int imager_capture(ip_disk *src, uint64_t off, uint64_t size, const partctl_usedmap *map,
		   const char *out, const struct imager_capture_opts *o,
		   struct imager_capture_result *res, ip_error *e)
{
	struct cap c = { 0 };
	_cleanup_free_ char *sig = NULL;
	ip_outfile of = { .fd = -1 };
	unsigned nt = imager_threads(o->threads);
	pthread_t *th = NULL, reader, writer;
	unsigned started = 0;
	bool have_reader = false, have_writer = false;
	size_t bound = ZSTD_compressBound(IMAGER_FRAME_SIZE);
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
	c.nslots = nt + 2;
	c.slots = calloc(c.nslots, sizeof(*c.slots));
	for (unsigned i = 0; c.slots && i < c.nslots; i++) {
		c.slots[i].in = malloc(IMAGER_FRAME_SIZE);
		c.slots[i].out = malloc(bound);
		if (!c.slots[i].in || !c.slots[i].out) {
			r = ip_fail(e, -ENOMEM, "out of memory for %u frame buffers: use fewer --threads", c.nslots);
			goto out_free;
		}
	}
	if (!c.csize || !c.dsize || !c.chash || !c.uhash || !th) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out_free;
	}
	/* refuses an output that is the disk being read (-o DISK) */
	r = ip_outfile_open(out, ip_disk_path(src), 0644, &of, e);
	if (r < 0)
		goto out_free;
	c.out_fd = of.fd;
	crypto_generichash_init(&c.file_hash, NULL, 0, sizeof(fhash));
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.turn, NULL);
	c.prog = ip_progress_new("capture", size);
	for (; started < nt; started++)
		if (pthread_create(&th[started], NULL, cap_worker, &c) != 0)
			break;
	have_reader = started && pthread_create(&reader, NULL, cap_reader, &c) == 0;
	have_writer = have_reader && pthread_create(&writer, NULL, cap_writer, &c) == 0;
	if (!have_writer) {
		pthread_mutex_lock(&c.lock);
		c.stop = true;
		pthread_cond_broadcast(&c.turn);
		pthread_mutex_unlock(&c.lock);
	}
	if (have_writer)
		pthread_join(writer, NULL);
	if (have_reader)
		pthread_join(reader, NULL);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	ip_progress_free(c.prog);
	if (!have_writer) {
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
	r = ip_outfile_commit(&of, e);
	c.out_fd = -1;
	if (r < 0) {
		if (sig)
			unlink(sig);
		goto out_free;
	}
	res->part_size = size;
	res->used = map ? map->used : size;
	res->out_size = c.written;
	res->frames = c.nframes;
	goto out_free;

out_unlink:
	ip_outfile_abort(&of);
	c.out_fd = -1;
out_free:
	for (unsigned i = 0; c.slots && i < c.nslots; i++) {
		free(c.slots[i].in);
		free(c.slots[i].out);
	}
	free(c.slots);
	free(th);
	free(c.csize);
	free(c.dsize);
	free(c.chash);
	free(c.uhash);
	return r;
}
