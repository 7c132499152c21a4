/* imager_int.h — internals of imager/: the on-disk layout, shared by
 * format.c, capture.c, verify.c, deploy.c and the unit and fuzz tests. */
#ifndef INPLACE_IMAGER_INT_H
#define INPLACE_IMAGER_INT_H

#include <sodium.h>
#include <zstd.h>

#include "imager/imager.h"

/* Image layout (all integers little endian):
 *
 *   frame 0 … frame N-1    zstd frames, each of IMAGER_FRAME_SIZE bytes of
 *                          the partition (the last one may be shorter),
 *                          with zstd's content checksum and content size
 *   metadata frame         skippable frame, magic IMAGER_META_MAGIC, payload
 *                          IMAGER_META_TAG then the metadata JSON
 *   seek table             skippable frame, zstd's seekable format
 *                          (contrib/seekable_format), no checksums
 *
 * The metadata frame is not listed in the seek table: the cumulative
 * Compressed_Size of the N entries is exactly where it starts, so a reader
 * of the seekable format finds every data frame where the spec says, and
 * ours finds the metadata between the last frame and the seek table.
 *
 * Frame size: independent frames cost ratio (measured at level 3: 1 MiB
 * +4.6%, 4 MiB +1.0%, 16 MiB +0.1%), while memory is (threads x 2 x frame)
 * and resume granularity is one frame.  4 MiB keeps the cost near 1% with
 * 16 MiB per thread in flight and a redo of at most a few MiB after a kill. */
#define IMAGER_FRAME_SIZE ((uint32_t)4 << 20)
#define IMAGER_SEEK_MAGIC 0x184D2A5Eu       /* skippable magic of the seek table */
#define IMAGER_SEEKABLE_MAGIC 0x8F92EAB1u   /* last 4 bytes of the file */
#define IMAGER_SEEK_FOOTER 9                /* Number_Of_Frames, descriptor, magic */
#define IMAGER_META_MAGIC 0x184D2A5Bu       /* our skippable frame (any of 0x184D2A5?) */
#define IMAGER_META_TAG "INPLMETA"          /* 8 bytes opening the metadata payload */
#define IMAGER_META_MAX (64u << 20)         /* larger metadata is refused */
#define IMAGER_HASH_LEN 32                  /* BLAKE2b-256 */
#define IMAGER_MAX_FRAMES (1u << 26)        /* 256 TiB of 4 MiB frames */
/* The largest compressed frame: zstd's bound for a frame of IMAGER_FRAME_SIZE
 * bytes (incompressible data grows a little).  A seek table claiming more is
 * damaged or hostile, and is refused before any buffer is sized from it. */
#define IMAGER_MAX_CSIZE ((uint32_t)ZSTD_COMPRESSBOUND(IMAGER_FRAME_SIZE))

struct imager_frame {
	uint64_t coff;        /* byte offset of the compressed frame in the file */
	uint32_t csize;       /* Compressed_Size */
	uint32_t dsize;       /* Decompressed_Size */
	uint64_t doff;        /* offset of its content in the partition */
};

struct imager_seektable {
	uint32_t n;                 /* Number_Of_Frames */
	bool checksums;             /* Checksum_Flag (we never write it; we accept it) */
	struct imager_frame *f;     /* n entries, offsets computed */
	uint64_t csum;              /* sum of Compressed_Size: where the metadata starts */
	uint64_t dsum;              /* sum of Decompressed_Size */
	uint64_t table_size;        /* bytes of the seek-table frame, header included */
};

struct imager_meta {
	int version;                /* format_version */
	char fs_type[32];
	char name[256];
	char created[40];
	char tool_version[32];
	uint64_t part_size;
	uint64_t block_size;
	uint32_t frame_size;
	uint32_t frames;
	uint64_t used_bytes;
	size_t nused;
	partctl_extent *used;       /* sorted, non-overlapping, inside part_size */
	uint8_t (*frame_hash)[IMAGER_HASH_LEN];   /* BLAKE2b-256 of each compressed frame */
	uint8_t content_hash[IMAGER_HASH_LEN];    /* see imager_content_hash */
};

static inline void imager_freep(imager_image **p) { imager_free(*p); }

struct imager_image {
	char *path;
	int fd;
	uint64_t file_size;
	struct imager_seektable st;
	struct imager_meta meta;
};

/* Parse the footer (last 9 bytes of the file): frame count and the size of
 * the seek-table frame.  -EINVAL when it is not a seekable footer. */
int imager_footer_parse(const uint8_t *buf, size_t len, uint32_t *nframes, uint64_t *table_size,
			bool *checksums);
/* Parse a whole seek-table frame (header to magic) into st. */
int imager_seektable_parse(const uint8_t *buf, size_t len, struct imager_seektable *st,
			   ip_error *e);
void imager_seektable_clear(struct imager_seektable *st);
/* Encode the seek-table frame for n frames of csize/dsize; *out malloc'ed. */
int imager_seektable_encode(const uint32_t *csize, const uint32_t *dsize, uint32_t n,
			    uint8_t **out, size_t *len);

/* Parse the metadata JSON (not NUL-terminated) and check it for itself and
 * against the seek table st (may be NULL). */
int imager_meta_parse(const char *json, size_t len, const struct imager_seektable *st,
		      struct imager_meta *m, ip_error *e);
void imager_meta_clear(struct imager_meta *m);
/* The metadata as JSON text (plain, one line); malloc'ed. */
char *imager_meta_json(const struct imager_meta *m);
json_object *imager_meta_to_json(const struct imager_meta *m, bool with_hashes);

/* The content hash: BLAKE2b-256 over the concatenated BLAKE2b-256 of each
 * frame's uncompressed content, so that frames can be hashed in parallel. */
void imager_content_hash(const uint8_t (*frame_uhash)[IMAGER_HASH_LEN], uint32_t n,
			 uint8_t out[IMAGER_HASH_LEN]);

/* BLAKE2b-256 of IMAGER_FRAME_SIZE zero bytes (computed once). */
const uint8_t *imager_zero_frame_hash(void);
void imager_hex(const uint8_t *b, size_t n, char *out);
int imager_unhex(const char *s, uint8_t *b, size_t n);
unsigned imager_threads(unsigned want);
static inline void imager_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t imager_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read the compressed frame i into buf (csize bytes) and check its hash;
 * bad input naming the frame and offset on a mismatch. */
int imager_read_frame(imager_image *img, uint32_t i, void *buf, ip_error *e);
/* The same without the hash (deploy checked every hash just before; zstd's
 * frame checksum still guards the decompression). */
int imager_read_frame_unchecked(imager_image *img, uint32_t i, void *buf, ip_error *e);
/* Decompress frame i (cbuf → dbuf of dsize); names the frame on error. */
int imager_decompress_frame(const imager_image *img, uint32_t i, void *dctx, const void *cbuf,
			    void *dbuf, ip_error *e);

/* Sign with a BLAKE2b-512 of the file already computed (capture hashes
 * what it writes). */
int imager_sign_prehashed(const uint8_t hash[64], const char *file, const char *seckey,
			  const char *sig_path, ip_error *e);

/* verify.c: check every frame and the content hash of an opened image;
 * hash_only: only each compressed frame's hash (what deploy checks before
 * writing anything when no signature covers the file). */
int imager_verify_frames(imager_image *img, unsigned threads, bool hash_only, ip_error *e);

#endif
