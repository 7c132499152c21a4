/* format.c — the image format: zstd's seek table (written from the spec in
 * zstd's contrib/seekable_format, which no Debian package ships), the JSON
 * metadata frame, and opening an image with every size checked. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "imager/imager_int.h"

void imager_hex(const uint8_t *b, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int imager_unhex(const char *s, uint8_t *b, size_t n)
{
	if (strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

unsigned imager_threads(unsigned want)
{
	long n;

	if (want)
		return want > 256 ? 256 : want;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
}

static uint8_t zero_hash[IMAGER_HASH_LEN];

static void zero_hash_init(void)
{
	uint8_t *z = calloc(1, IMAGER_FRAME_SIZE);

	if (z) {
		crypto_generichash(zero_hash, IMAGER_HASH_LEN, z, IMAGER_FRAME_SIZE, NULL, 0);
		free(z);
	}
}

void imager_content_hash(const uint8_t (*uh)[IMAGER_HASH_LEN], uint32_t n, uint8_t out[IMAGER_HASH_LEN])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, IMAGER_HASH_LEN);
	for (uint32_t i = 0; i < n; i++)
		crypto_generichash_update(&st, uh[i], IMAGER_HASH_LEN);
	crypto_generichash_final(&st, out, IMAGER_HASH_LEN);
}

const uint8_t *imager_zero_frame_hash(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, zero_hash_init);
	return zero_hash;
}

/* ---- seek table -------------------------------------------------------- */

int imager_footer_parse(const uint8_t *buf, size_t len, uint32_t *nframes, uint64_t *table_size,
			bool *checksums)
{
	const uint8_t *f;
	uint8_t desc;

	if (len < IMAGER_SEEK_FOOTER)
		return -EINVAL;
	f = buf + len - IMAGER_SEEK_FOOTER;
	if (imager_get32(f + 5) != IMAGER_SEEKABLE_MAGIC)
		return -EINVAL;
	desc = f[4];
	/* Reserved_Bits (6-2) must be zero; Unused_Bits (1-0) are ignored. */
	if (desc & 0x7c)
		return -EINVAL;
	*checksums = desc & 0x80;
	*nframes = imager_get32(f);
	*table_size = 8 + (uint64_t)*nframes * (*checksums ? 12 : 8) + IMAGER_SEEK_FOOTER;
	return 0;
}

void imager_seektable_clear(struct imager_seektable *st)
{
	free(st->f);
	memset(st, 0, sizeof(*st));
}

int imager_seektable_parse(const uint8_t *buf, size_t len, struct imager_seektable *st,
			   ip_error *e)
{
	uint32_t n;
	uint64_t tsize, coff = 0, doff = 0;
	bool ck;
	size_t esz;

	memset(st, 0, sizeof(*st));
	if (imager_footer_parse(buf, len, &n, &tsize, &ck) < 0)
		return ip_bad(e, -EINVAL, "no seek table at the end (wrong magic, or the image is truncated): capture or download it again");
	if (n > IMAGER_MAX_FRAMES || tsize != len)
		return ip_bad(e, -EINVAL, "the seek table's size does not match its %u frames (truncated image?): capture or download it again", n);
	if (imager_get32(buf) != IMAGER_SEEK_MAGIC || imager_get32(buf + 4) != len - 8)
		return ip_bad(e, -EINVAL, "the seek table's frame header is wrong (bad magic or size): capture or download it again");
	esz = ck ? 12 : 8;
	st->f = calloc(n ? n : 1, sizeof(*st->f));
	if (!st->f)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *p = buf + 8 + (size_t)i * esz;

		st->f[i].csize = imager_get32(p);
		st->f[i].dsize = imager_get32(p + 4);
		/* readers size a buffer per thread from these: bound them first */
		if (st->f[i].csize > IMAGER_MAX_CSIZE || st->f[i].dsize > IMAGER_FRAME_SIZE) {
			imager_seektable_clear(st);
			return ip_bad(e, -EINVAL, "the seek table claims a frame %u of %u bytes (%u uncompressed), more than the format allows (%u): capture or download it again",
				      i, imager_get32(p), imager_get32(p + 4), IMAGER_MAX_CSIZE);
		}
		st->f[i].coff = coff;
		st->f[i].doff = doff;
		coff += st->f[i].csize;
		doff += st->f[i].dsize;
	}
	st->n = n;
	st->checksums = ck;
	st->csum = coff;
	st->dsum = doff;
	st->table_size = tsize;
	return 0;
}

int imager_seektable_encode(const uint32_t *csize, const uint32_t *dsize, uint32_t n,
			    uint8_t **out, size_t *len)
{
	size_t sz = 8 + (size_t)n * 8 + IMAGER_SEEK_FOOTER;
	uint8_t *b = malloc(sz), *p;

	if (!b)
		return -ENOMEM;
	imager_put32(b, IMAGER_SEEK_MAGIC);
	imager_put32(b + 4, (uint32_t)(sz - 8));
	p = b + 8;
	for (uint32_t i = 0; i < n; i++, p += 8) {
		imager_put32(p, csize[i]);
		imager_put32(p + 4, dsize[i]);
	}
	imager_put32(p, n);
	p[4] = 0; /* no checksums: zstd's own frame checksum and our hashes cover it */
	imager_put32(p + 5, IMAGER_SEEKABLE_MAGIC);
	*out = b;
	*len = sz;
	return 0;
}

uint64_t imager_max_file_size(uint64_t part_size)
{
	uint64_t frames = (part_size + IMAGER_FRAME_SIZE - 1) / IMAGER_FRAME_SIZE;

	return frames * IMAGER_MAX_CSIZE + 8 + IMAGER_META_MAX + 8 + frames * 12 + IMAGER_SEEK_FOOTER;
}

/* ---- metadata ---------------------------------------------------------- */

void imager_meta_clear(struct imager_meta *m)
{
	free(m->used);
	free(m->frame_hash);
	memset(m, 0, sizeof(*m));
}

json_object *imager_meta_to_json(const struct imager_meta *m, bool with_hashes)
{
	json_object *o = json_object_new_object(), *used = json_object_new_array();
	char hex[2 * IMAGER_HASH_LEN + 1];

	json_object_object_add(o, "format", json_object_new_string("inplace-image"));
	json_object_object_add(o, "format_version", json_object_new_int(m->version));
	json_object_object_add(o, "name", json_object_new_string(m->name));
	json_object_object_add(o, "fs_type", json_object_new_string(m->fs_type));
	json_object_object_add(o, "partition_size", ip_json_u64(m->part_size));
	json_object_object_add(o, "block_size", ip_json_u64(m->block_size));
	json_object_object_add(o, "frame_size", ip_json_u64(m->frame_size));
	json_object_object_add(o, "frames", ip_json_u64(m->frames));
	json_object_object_add(o, "used_bytes", ip_json_u64(m->used_bytes));
	json_object_object_add(o, "created", json_object_new_string(m->created));
	json_object_object_add(o, "tool_version", json_object_new_string(m->tool_version));
	json_object_object_add(o, "hash", json_object_new_string("blake2b-256"));
	imager_hex(m->content_hash, IMAGER_HASH_LEN, hex);
	json_object_object_add(o, "content_hash", json_object_new_string(hex));
	json_object_object_add(o, "used_ranges", ip_json_u64(m->nused));
	for (size_t i = 0; i < m->nused; i++) {
		json_object *r = json_object_new_array();

		json_object_array_add(r, ip_json_u64(m->used[i].off));
		json_object_array_add(r, ip_json_u64(m->used[i].len));
		json_object_array_add(used, r);
	}
	json_object_object_add(o, "used", used);
	if (!with_hashes)
		return o;
	json_object *fh = json_object_new_array();
	for (uint32_t i = 0; i < m->frames; i++) {
		imager_hex(m->frame_hash[i], IMAGER_HASH_LEN, hex);
		json_object_array_add(fh, json_object_new_string(hex));
	}
	json_object_object_add(o, "frame_hashes", fh);
	return o;
}

char *imager_meta_json(const struct imager_meta *m)
{
	json_object *o = imager_meta_to_json(m, true);
	char *s;

	if (!o)
		return NULL;
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static int get_u64(json_object *o, const char *key, uint64_t *v)
{
	json_object *x;

	if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_int))
		return -EINVAL;
	errno = 0;
	int64_t i = json_object_get_int64(x);
	if (i < 0 || errno)
		return -EINVAL;
	*v = (uint64_t)i;
	return 0;
}

static int get_str(json_object *o, const char *key, char *buf, size_t len, bool required)
{
	json_object *x;

	if (!json_object_object_get_ex(o, key, &x)) {
		buf[0] = '\0';
		return required ? -EINVAL : 0;
	}
	if (!json_object_is_type(x, json_type_string))
		return -EINVAL;
	snprintf(buf, len, "%s", json_object_get_string(x));
	return 0;
}

#define META_BAD(e, what) \
	ip_bad((e), -EINVAL, "the image's metadata is damaged (%s): capture or download it again", (what))

int imager_meta_parse(const char *json, size_t len, const struct imager_seektable *st,
		      struct imager_meta *m, ip_error *e)
{
	_cleanup_json_ json_object *o = NULL;
	json_tokener *tok;
	json_object *x, *arr;
	char fmt[32];
	uint64_t v, end = 0, sum = 0;
	int r;

	memset(m, 0, sizeof(*m));
	if (len > IMAGER_META_MAX)
		return META_BAD(e, "too large");
	tok = json_tokener_new();
	if (!tok)
		return ip_fail(e, -ENOMEM, "out of memory");
	o = json_tokener_parse_ex(tok, json, (int)len);
	r = json_tokener_get_error(tok) == json_tokener_success && o &&
	    json_tokener_get_parse_end(tok) == len;
	json_tokener_free(tok);
	if (!r || !json_object_is_type(o, json_type_object))
		return META_BAD(e, "not a JSON object");
	if (get_str(o, "format", fmt, sizeof(fmt), true) < 0 || strcmp(fmt, "inplace-image"))
		return ip_bad(e, -EINVAL, "not an inplace image (its metadata names another format): give an image made by 'inplace image capture'");
	if (get_u64(o, "format_version", &v) < 0)
		return META_BAD(e, "no format_version");
	if (v != IMAGER_FORMAT_VERSION)
		return ip_bad(e, -EPROTONOSUPPORT, "the image has format version %llu, this inplace reads version %d: use a newer inplace",
			      (unsigned long long)v, IMAGER_FORMAT_VERSION);
	m->version = (int)v;
	if (get_str(o, "fs_type", m->fs_type, sizeof(m->fs_type), true) < 0 ||
	    get_str(o, "name", m->name, sizeof(m->name), false) < 0 ||
	    get_str(o, "created", m->created, sizeof(m->created), false) < 0 ||
	    get_str(o, "tool_version", m->tool_version, sizeof(m->tool_version), false) < 0)
		return META_BAD(e, "bad text field");
	if (get_u64(o, "partition_size", &m->part_size) < 0 || get_u64(o, "block_size", &m->block_size) < 0 ||
	    get_u64(o, "used_bytes", &m->used_bytes) < 0)
		return META_BAD(e, "bad size field");
	if (get_u64(o, "frame_size", &v) < 0 || v != IMAGER_FRAME_SIZE)
		return META_BAD(e, "unsupported frame size");
	m->frame_size = (uint32_t)v;
	if (get_u64(o, "frames", &v) < 0 || v > IMAGER_MAX_FRAMES ||
	    v != (m->part_size + IMAGER_FRAME_SIZE - 1) / IMAGER_FRAME_SIZE)
		return META_BAD(e, "frame count does not match the partition size");
	m->frames = (uint32_t)v;
	if (st) {
		if (st->n != m->frames || st->dsum != m->part_size)
			return META_BAD(e, "the seek table does not match the metadata");
		for (uint32_t i = 0; i < st->n; i++)
			if (st->f[i].dsize != (i + 1 < st->n ? IMAGER_FRAME_SIZE : m->part_size - (uint64_t)i * IMAGER_FRAME_SIZE))
				return META_BAD(e, "a frame of the seek table has the wrong size");
	}

	if (!json_object_object_get_ex(o, "used", &arr) || !json_object_is_type(arr, json_type_array))
		return META_BAD(e, "no used-range map");
	m->nused = json_object_array_length(arr);
	m->used = calloc(m->nused ? m->nused : 1, sizeof(*m->used));
	if (!m->used)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (size_t i = 0; i < m->nused; i++) {
		json_object *r2 = json_object_array_get_idx(arr, i), *a, *b;
		int64_t off, l;

		if (!json_object_is_type(r2, json_type_array) || json_object_array_length(r2) != 2)
			return META_BAD(e, "bad used range");
		a = json_object_array_get_idx(r2, 0);
		b = json_object_array_get_idx(r2, 1);
		if (!json_object_is_type(a, json_type_int) || !json_object_is_type(b, json_type_int))
			return META_BAD(e, "bad used range");
		off = json_object_get_int64(a);
		l = json_object_get_int64(b);
		/* sorted, non-overlapping, non-empty, inside the partition */
		if (off < 0 || l <= 0 || (uint64_t)off < end || (uint64_t)l > m->part_size ||
		    (uint64_t)off > m->part_size - (uint64_t)l)
			return META_BAD(e, "used ranges out of order or outside the partition");
		m->used[i].off = (uint64_t)off;
		m->used[i].len = (uint64_t)l;
		end = (uint64_t)off + (uint64_t)l;
		sum += (uint64_t)l;
	}
	if (sum != m->used_bytes)
		return META_BAD(e, "used_bytes does not match the used ranges");

	if (get_str(o, "hash", fmt, sizeof(fmt), true) < 0 || strcmp(fmt, "blake2b-256"))
		return META_BAD(e, "unknown hash");
	if (!json_object_object_get_ex(o, "content_hash", &x) || !json_object_is_type(x, json_type_string) ||
	    imager_unhex(json_object_get_string(x), m->content_hash, IMAGER_HASH_LEN) < 0)
		return META_BAD(e, "bad content_hash");
	if (!json_object_object_get_ex(o, "frame_hashes", &arr) || !json_object_is_type(arr, json_type_array) ||
	    json_object_array_length(arr) != m->frames)
		return META_BAD(e, "frame_hashes does not list every frame");
	m->frame_hash = calloc(m->frames ? m->frames : 1, IMAGER_HASH_LEN);
	if (!m->frame_hash)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < m->frames; i++) {
		x = json_object_array_get_idx(arr, i);
		if (!json_object_is_type(x, json_type_string) ||
		    imager_unhex(json_object_get_string(x), m->frame_hash[i], IMAGER_HASH_LEN) < 0)
			return META_BAD(e, "bad frame hash");
	}
	return 0;
}

/* ---- opening an image -------------------------------------------------- */

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

void imager_free(imager_image *img)
{
	if (!img)
		return;
	if (img->fd >= 0)
		close(img->fd);
	imager_seektable_clear(&img->st);
	imager_meta_clear(&img->meta);
	free(img->path);
	free(img);
}

int imager_open(const char *path, imager_image **out, ip_error *e)
{
	imager_image *img;
	struct stat sb;
	uint8_t foot[IMAGER_SEEK_FOOTER], hdr[8 + sizeof(IMAGER_META_TAG) - 1];
	_cleanup_free_ uint8_t *tab = NULL;
	_cleanup_free_ char *json = NULL;
	uint32_t n;
	uint64_t tsize, msize;
	bool ck;
	int r;

	*out = NULL;
	img = calloc(1, sizeof(*img));
	if (!img || !(img->path = strdup(path))) {
		free(img);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	r = ip_open_input(path, &img->fd, e);
	if (r < 0) {
		imager_free(img);
		return r;
	}
	if (fstat(img->fd, &sb) < 0) {
		r = -errno;
		imager_free(img);
		return ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
	}
	img->file_size = (uint64_t)sb.st_size;
	if (img->file_size < 8 + IMAGER_SEEK_FOOTER ||
	    pread_all(img->fd, foot, sizeof(foot), img->file_size - sizeof(foot)) < 0 ||
	    imager_footer_parse(foot, sizeof(foot), &n, &tsize, &ck) < 0) {
		imager_free(img);
		return ip_bad(e, -EINVAL, "%s is not an inplace image (no zstd seek table at its end; truncated?): capture or download it again", path);
	}
	if (tsize > img->file_size || n > IMAGER_MAX_FRAMES) {
		imager_free(img);
		return ip_bad(e, -EINVAL, "%s is truncated or damaged (its seek table is larger than the file): capture or download it again", path);
	}
	tab = malloc(tsize);
	if (!tab) {
		imager_free(img);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	r = pread_all(img->fd, tab, tsize, img->file_size - tsize);
	if (r < 0) {
		imager_free(img);
		return ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
	}
	r = imager_seektable_parse(tab, tsize, &img->st, e);
	if (r < 0)
		goto fail;
	/* The metadata frame fills exactly the gap between the frames and the
	 * seek table. */
	if (img->st.csum + sizeof(hdr) + tsize > img->file_size) {
		r = ip_bad(e, -EINVAL, "%s is truncated or damaged (frames and seek table do not add up to its size): capture or download it again", path);
		goto fail;
	}
	r = pread_all(img->fd, hdr, sizeof(hdr), img->st.csum);
	if (r < 0) {
		r = ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
		goto fail;
	}
	msize = imager_get32(hdr + 4);
	if (imager_get32(hdr) != IMAGER_META_MAGIC || memcmp(hdr + 8, IMAGER_META_TAG, 8) ||
	    img->st.csum + 8 + msize + tsize != img->file_size || msize > IMAGER_META_MAX) {
		r = ip_bad(e, -EINVAL, "%s is not an inplace image or is damaged (no metadata frame where the seek table says): capture or download it again", path);
		goto fail;
	}
	json = malloc(msize - 8 + 1);
	if (!json) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto fail;
	}
	r = pread_all(img->fd, json, msize - 8, img->st.csum + sizeof(hdr));
	if (r < 0) {
		r = ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
		goto fail;
	}
	r = imager_meta_parse(json, msize - 8, &img->st, &img->meta, e);
	if (r < 0)
		goto fail;
	*out = img;
	return 0;
fail:
	ip_error_prefix(e, "%s", path);
	imager_free(img);
	return r;
}

const char *imager_fs_type(const imager_image *img) { return img->meta.fs_type; }
const char *imager_name(const imager_image *img) { return img->meta.name; }
uint64_t imager_part_size(const imager_image *img) { return img->meta.part_size; }
uint64_t imager_used_bytes(const imager_image *img) { return img->meta.used_bytes; }
uint64_t imager_file_size(const imager_image *img) { return img->file_size; }
unsigned imager_frames(const imager_image *img) { return img->meta.frames; }

json_object *imager_info_json(const imager_image *img)
{
	json_object *o = imager_meta_to_json(&img->meta, false);

	json_object_object_add(o, "file_size", ip_json_u64(img->file_size));
	return o;
}

/* ---- frames ------------------------------------------------------------ */

int imager_read_frame_unchecked(imager_image *img, uint32_t i, void *buf, ip_error *e)
{
	const struct imager_frame *f = &img->st.f[i];
	int r = pread_all(img->fd, buf, f->csize, f->coff);

	if (r < 0)
		return ip_fail(e, r, "cannot read frame %u of %s: %s", i, img->path, strerror(-r));
	return 0;
}

int imager_read_frame(imager_image *img, uint32_t i, void *buf, ip_error *e)
{
	const struct imager_frame *f = &img->st.f[i];
	uint8_t h[IMAGER_HASH_LEN];
	int r = pread_all(img->fd, buf, f->csize, f->coff);

	if (r < 0)
		return ip_fail(e, r, "cannot read frame %u of %s: %s", i, img->path, strerror(-r));
	crypto_generichash(h, sizeof(h), buf, f->csize, NULL, 0);
	if (sodium_memcmp(h, img->meta.frame_hash[i], sizeof(h)))
		return ip_bad(e, -EBADMSG, "%s is damaged: frame %u at byte offset %llu does not match its hash: capture or download it again",
			      img->path, i, (unsigned long long)f->coff);
	return 0;
}

int imager_decompress_frame(const imager_image *img, uint32_t i, void *dctx, const void *cbuf,
			    void *dbuf, ip_error *e)
{
	const struct imager_frame *f = &img->st.f[i];
	size_t n = ZSTD_decompressDCtx(dctx, dbuf, f->dsize, cbuf, f->csize);

	if (ZSTD_isError(n) || n != f->dsize)
		return ip_bad(e, -EBADMSG, "%s is damaged: frame %u at byte offset %llu does not decompress (%s): capture or download it again",
			      img->path, i, (unsigned long long)f->coff,
			      ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size");
	return 0;
}
