/* deploy.c — image → partition: check everything first, then decompress
 * frames on every core and write only the used ranges.
 *
 * Resume: frames finish out of order, so progress is the "watermark", the
 * first frame not yet written.  Every few frames the disk is flushed and
 * then the watermark goes to a journal file (ip_journal, two checksummed
 * slots): what the journal says is on the disk is on the disk.  After kill
 * -9 a new run starts at the watermark; frames written after it are simply
 * written again (same bytes), so the result is bit-identical. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <zstd.h>

#include "imager/imager_int.h"

/* Flush and record progress every this many frames (16 MiB): a kill loses
 * at most that much work, and one fdatasync per 16 MiB costs little. */
#define DEPLOY_COMMIT_FRAMES 4

#define DEPLOY_MAGIC "IPDEPLY1"
struct deploy_record {
	char magic[8];                        /* DEPLOY_MAGIC */
	uint8_t content_hash[IMAGER_HASH_LEN];/* which image is being written */
	uint64_t part_off, part_size;         /* where it is being written */
	uint32_t frames;                      /* frames of the image */
	uint32_t next;                        /* every frame below is on the disk */
};

struct dep {
	imager_image *img;
	ip_disk *d;
	uint64_t base;            /* byte offset of the partition in d */
	const struct imager_deploy_opts *o;
	bool prechecked;          /* every frame's hash was checked before writing */
	ip_progress *prog;
	uint8_t *done;            /* per frame */
	uint64_t written;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t next_claim, running;
	bool stop;
	int err;
	ip_error e;
};

static size_t first_used(const struct imager_meta *m, uint64_t pos)
{
	size_t lo = 0, hi = m->nused;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (m->used[mid].off + m->used[mid].len <= pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool frame_has_used(const struct imager_meta *m, uint64_t fo, uint64_t len)
{
	size_t i = first_used(m, fo);

	return i < m->nused && m->used[i].off < fo + len;
}

static int write_frame(struct dep *c, uint32_t i, const uint8_t *buf, uint64_t *nw, ip_error *e)
{
	const struct imager_meta *m = &c->img->meta;
	uint64_t fo = c->img->st.f[i].doff, len = c->img->st.f[i].dsize;
	int r;

	*nw = 0;
	for (size_t k = first_used(m, fo); k < m->nused && m->used[k].off < fo + len; k++) {
		uint64_t a = m->used[k].off > fo ? m->used[k].off : fo;
		uint64_t b = m->used[k].off + m->used[k].len < fo + len ? m->used[k].off + m->used[k].len : fo + len;

		if (b <= a)
			continue;
		r = ip_disk_write(c->d, buf + (a - fo), b - a, c->base + a, e);
		if (r < 0)
			return r;
		*nw += b - a;
	}
	return 0;
}

static void *dep_worker(void *arg)
{
	struct dep *c = arg;
	uint32_t maxc = 1;
	uint8_t *cbuf = NULL, *dbuf = malloc(IMAGER_FRAME_SIZE);
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	ip_error e = { 0 };
	int r = 0;

	for (uint32_t i = 0; i < c->img->st.n; i++)
		if (c->img->st.f[i].csize > maxc)
			maxc = c->img->st.f[i].csize;
	cbuf = malloc(maxc);
	if (!cbuf || !dbuf || !dctx) {
		r = ip_fail(&e, -ENOMEM, "out of memory: use fewer --threads");
		goto out;
	}
	for (;;) {
		uint32_t i;
		uint64_t nw = 0;

		pthread_mutex_lock(&c->lock);
		if (c->stop || c->next_claim >= c->img->st.n || (c->o->cancel && *c->o->cancel)) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		i = c->next_claim++;
		pthread_mutex_unlock(&c->lock);
		/* A frame without used blocks is never read. */
		if (frame_has_used(&c->img->meta, c->img->st.f[i].doff, c->img->st.f[i].dsize)) {
			r = c->prechecked ? imager_read_frame_unchecked(c->img, i, cbuf, &e)
					  : imager_read_frame(c->img, i, cbuf, &e);
			if (r >= 0)
				r = imager_decompress_frame(c->img, i, dctx, cbuf, dbuf, &e);
			if (r >= 0)
				r = write_frame(c, i, dbuf, &nw, &e);
			if (r < 0)
				goto out;
		}
		ip_progress_add(c->prog, c->img->st.f[i].dsize);
		pthread_mutex_lock(&c->lock);
		c->done[i] = 1;
		c->written += nw;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
out:
	pthread_mutex_lock(&c->lock);
	if (r < 0 && !c->err) {
		c->err = r;
		c->e = e;
		c->stop = true;
	}
	c->running--;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	ZSTD_freeDCtx(dctx);
	free(cbuf);
	free(dbuf);
	return NULL;
}

static const char *state_dir(const struct imager_deploy_opts *o)
{
	const char *dir = o->state_dir ? o->state_dir : getenv("INPLACE_STATE_DIR");

	return dir && *dir ? dir : "/var/lib/inplace";
}

/* Where a downloaded image is kept until the deploy has finished. */
static int cache_path(const struct imager_deploy_opts *o, const char *url, char **out, ip_error *e)
{
	char hex[33];
	uint8_t h[16];
	_cleanup_free_ char *dir = NULL;
	int r;

	crypto_generichash(h, sizeof(h), (const uint8_t *)url, strlen(url), NULL, 0);
	imager_hex(h, sizeof(h), hex);
	if (asprintf(&dir, "%s/images", state_dir(o)) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	r = ip_mkdir_p(dir, 0700, e);
	if (r < 0)
		return r;
	if (asprintf(out, "%s/%s.img", dir, hex) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	return 0;
}

static int state_path(const struct imager_deploy_opts *o, const char *disk, unsigned n, char **out,
		      ip_error *e)
{
	const char *dir = state_dir(o);
	char rp[PATH_MAX], key[256], hex[33];
	uint8_t h[16];
	int r;

	if (!realpath(disk, rp))
		snprintf(rp, sizeof(rp), "%s", disk);
	snprintf(key, sizeof(key), "%s:%u", rp, n);
	crypto_generichash(h, sizeof(h), (const uint8_t *)key, strlen(key), NULL, 0);
	imager_hex(h, sizeof(h), hex);
	r = ip_mkdir_p(dir, 0700, e);
	if (r < 0)
		return r;
	if (asprintf(out, "%s/deploy-%s.journal", dir, hex) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	return 0;
}

static int commit(struct dep *c, ip_journal *j, struct deploy_record *rec, uint32_t from, uint32_t next,
		  ip_error *e)
{
	int r = ip_disk_flush(c->d, e);

	if (r < 0)
		return r;
	/* written and durable: the page cache need not keep it (a deploy
	 * streams gigabytes nobody reads back) */
	if (next > from)
		ip_disk_drop_cache(c->d, c->base + c->img->st.f[from].doff,
				   c->img->st.f[next - 1].doff + c->img->st.f[next - 1].dsize - c->img->st.f[from].doff);
	rec->next = next;
	return ip_journal_write(j, rec, sizeof(*rec), e);
}

/* Give the unused ranges back: BLKDISCARD on a device, holes in a file. */
static void discard_unused(struct dep *c)
{
	const struct imager_meta *m = &c->img->meta;
	int fd = ip_disk_fd(c->d);
	uint64_t pos = 0;

	for (size_t k = 0; k <= m->nused; k++) {
		uint64_t end = k < m->nused ? m->used[k].off : m->part_size;

		if (end > pos) {
			if (ip_disk_is_blockdev(c->d)) {
				uint64_t range[2] = { c->base + pos, end - pos };

				ioctl(fd, BLKDISCARD, range);
			} else {
				fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					  (off_t)(c->base + pos), (off_t)(end - pos));
			}
		}
		if (k < m->nused)
			pos = m->used[k].off + m->used[k].len;
	}
}

int imager_deploy(const char *image, const char *disk, unsigned n,
		  const struct imager_deploy_opts *o, struct imager_deploy_result *res,
		  ip_error *e)
{
	_cleanup_(imager_freep) imager_image *img = NULL;
	_cleanup_free_ char *sig = NULL, *jpath = NULL, *cached = NULL;
	char node[256], sz1[IP_SIZE_BUFSZ], sz2[IP_SIZE_BUFSZ];
	const char *target = disk;
	struct dep c = { 0 };
	struct deploy_record rec = { 0 }, old;
	ip_journal *j = NULL;
	uint64_t off, size;
	uint32_t wm, durable;
	unsigned nt = imager_threads(o->threads), started = 0;
	pthread_t th[256];
	struct stat sb;
	size_t len = sizeof(old);
	int r;

	memset(res, 0, sizeof(*res));
	if (sodium_init() < 0)
		return ip_fail(e, -EIO, "libsodium cannot initialise");
	/* ---- a URL is downloaded first (resumable), then deployed ---- */
	if (imager_is_url(image)) {
		struct imager_fetch_opts fo = { .mirrors = o->mirrors, .max_rate = o->max_rate, .ca_file = o->ca_file,
						.threads = o->threads, .want_sig = o->pubkey != NULL,
						.cancel = o->cancel };

		r = cache_path(o, image, &cached, e);
		if (r < 0)
			return r;
		/* no image of this partition is larger: a server that says
		 * otherwise is refused before a byte is stored */
		r = partctl_part_range(disk, n, &off, &size, e);
		if (r < 0)
			return r;
		fo.max_bytes = imager_max_file_size(size);
		if (access(cached, F_OK) != 0) {
			r = imager_fetch(image, &fo, cached, e);
			if (r < 0)
				return r;
		}
		image = cached;
	}
	/* ---- checks: nothing is written before all of them pass ---- */
	r = imager_open(image, &img, e);
	if (r < 0)
		return r;
	if (o->pubkey) {
		if (asprintf(&sig, "%s.minisig", image) < 0)
			return ip_fail(e, -ENOMEM, "out of memory");
		r = imager_verify_sig(image, sig, o->pubkey, e);
		if (r < 0)
			return r;
	}
	r = partctl_part_range(disk, n, &off, &size, e);
	if (r < 0)
		return r;
	res->part_off = off;
	res->part_size = size;
	res->frames = img->st.n;
	if (img->meta.part_size > size)
		return ip_bad(e, -ENOSPC, "the image needs %s but partition %u of %s has %s: grow the partition or choose a larger one",
			      ip_format_size(img->meta.part_size, sz1, sizeof(sz1)), n, disk,
			      ip_format_size(size, sz2, sizeof(sz2)));
	if (o->grow && strncmp(img->meta.fs_type, "ext", 3) && strcmp(img->meta.fs_type, "ntfs"))
		return ip_bad(e, -EOPNOTSUPP, "cannot grow a %s filesystem: deploy without --grow",
			      *img->meta.fs_type ? img->meta.fs_type : "unknown");
	/* On a block device write through the partition node: O_EXCL on the
	 * whole disk would fail while another of its partitions is mounted. */
	c.base = off;
	if (stat(disk, &sb) == 0 && S_ISBLK(sb.st_mode) && ip_partition_node(disk, n, node, sizeof(node)) == 0) {
		target = node;
		c.base = 0;
	}
	/* Only the target partition must be unmounted: the storage partition
	 * of the same disk is normally mounted while the system is deployed. */
	r = c.base ? ip_check_range_unmounted(target, off, size, e) : ip_check_unmounted(target, e);
	if (r < 0)
		return r;
	/* A signature covers every byte of the file; without one, check every
	 * frame's hash now, so that a damaged image changes nothing. */
	if (!o->pubkey) {
		r = imager_verify_frames(img, o->threads, true, e);
		if (r < 0)
			return r;
		c.prechecked = true;
	}
	if (o->dry_run)
		return 0;
	r = c.base ? ip_disk_open_range(target, IP_DISK_RDWR, off, size, &c.d, e)
		   : ip_disk_open(target, IP_DISK_RDWR, &c.d, e);
	if (r < 0)
		return r;

	/* ---- resume record ---- */
	r = state_path(o, disk, n, &jpath, e);
	if (r >= 0)
		r = ip_journal_open_file(jpath, &j, e);
	if (r < 0)
		goto out;
	memcpy(rec.magic, DEPLOY_MAGIC, 8);
	memcpy(rec.content_hash, img->meta.content_hash, IMAGER_HASH_LEN);
	rec.part_off = off;
	rec.part_size = img->meta.part_size;
	rec.frames = img->st.n;
	r = ip_journal_read(j, &old, &len, e);
	if (r < 0 && r != -ENOENT)
		goto out;
	if (r == 0 && len == sizeof(old) && !memcmp(old.magic, DEPLOY_MAGIC, 8) &&
	    !memcmp(old.content_hash, rec.content_hash, IMAGER_HASH_LEN) && old.part_off == rec.part_off &&
	    old.part_size == rec.part_size && old.frames == rec.frames && old.next <= rec.frames)
		res->resumed_at = old.next;
	r = 0;

	/* ---- write ---- */
	c.img = img;
	c.o = o;
	c.done = calloc(img->st.n + 1, 1);
	if (!c.done) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	memset(c.done, 1, res->resumed_at);
	c.next_claim = res->resumed_at;
	wm = durable = res->resumed_at;
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.cond, NULL);
	c.prog = ip_progress_new("deploy", img->meta.part_size);
	ip_progress_set(c.prog, res->resumed_at < img->st.n ? img->st.f[res->resumed_at].doff : img->meta.part_size);
	c.running = nt;
	for (; started < nt; started++)
		if (pthread_create(&th[started], NULL, dep_worker, &c) != 0)
			break;
	pthread_mutex_lock(&c.lock);
	c.running -= nt - started;
	for (;;) {
		while (wm < img->st.n && c.done[wm])
			wm++;
		if (c.err || (c.o->cancel && *c.o->cancel))
			break;
		if (wm - durable >= DEPLOY_COMMIT_FRAMES || (wm == img->st.n && durable < wm)) {
			uint32_t target_wm = wm;

			pthread_mutex_unlock(&c.lock);
			r = commit(&c, j, &rec, durable, target_wm, e);
			pthread_mutex_lock(&c.lock);
			if (r < 0) {
				c.stop = true;
				break;
			}
			durable = target_wm;
			continue;
		}
		if (!c.running)
			break;
		pthread_cond_wait(&c.cond, &c.lock);
	}
	c.stop = true;
	pthread_mutex_unlock(&c.lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	ip_progress_free(c.prog);
	res->written = c.written;
	if (r < 0)
		goto out;
	if (c.err) {
		*e = c.e;
		r = c.err;
		goto out;
	}
	if (o->cancel && *o->cancel) {
		r = ip_fail(e, -EINTR, "interrupted after frame %u of %u: run the same deploy again to continue",
			    durable, img->st.n);
		goto out;
	}
	if (!started || durable != img->st.n) {
		r = ip_fail(e, -EIO, "the deploy stopped after frame %u of %u: run it again to continue", durable, img->st.n);
		goto out;
	}
	if (o->discard) {
		discard_unused(&c);
		r = ip_disk_flush(c.d, e);
		if (r < 0)
			goto out;
	}
	ip_disk_free(c.d);
	c.d = NULL;
	if (o->grow && size > img->meta.part_size) {
		/* partctl's one check-and-grow policy, as `part grow` uses. */
		r = partctl_fs_grow(disk, n, NULL, NULL, e);
		if (r < 0) {
			ip_error_prefix(e, "the image was written but growing its filesystem failed");
			goto out;
		}
		res->grown = true;
	}
	r = ip_journal_clear(j, e);
	if (r == 0)
		unlink(jpath);
	if (r == 0 && cached) {
		unlink(cached);
		if (sig)
			unlink(sig);
	}
out:
	ip_journal_free(j);
	ip_disk_free(c.d);
	free(c.done);
	return r;
}
