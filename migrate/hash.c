/* hash.c — the content and archive hashes of a profile store.
 *
 * A store is new by default with XXH3-128 (libxxhash): the hashes in a store
 * find damage — a flipped bit, a truncated archive, an edited file — on the
 * way from save to restore.  They cannot prove who wrote the store: whoever
 * can change an archive can rewrite manifest.json beside it, whatever the
 * hash.  XXH3 does that job at memory speed, where BLAKE2b costs a core's
 * second per GiB and made `profile save` slower than tar | zstd.  A spec
 * asks for BLAKE2b-512 (libsodium) with `hash = blake2b-512`, and stores
 * written before format_version 2 use it, so both are read.
 *
 * The digest is written as `xxh128sum` and `b2sum` print it, so a file's
 * hash in manifest.json can be checked with the stock tools. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate/internal.h"

static const char *const alg_names[] = {
	[MIG_HASH_XXH128] = "xxh3-128",
	[MIG_HASH_BLAKE2B] = "blake2b-512",
};

const char *mig_hash_name(enum mig_hash_alg alg)
{
	return alg_names[alg];
}

int mig_hash_parse(const char *name, enum mig_hash_alg *alg)
{
	for (size_t i = 0; i < IP_ARRAY_SIZE(alg_names); i++)
		if (!strcmp(name, alg_names[i])) {
			*alg = (enum mig_hash_alg)i;
			return 0;
		}
	return -EINVAL;
}

void mig_hash_init(struct mig_hash *h, enum mig_hash_alg alg)
{
	memset(h, 0, sizeof(*h));
	h->alg = alg;
	if (alg == MIG_HASH_XXH128)
		XXH3_128bits_reset(&h->u.xxh);
	else
		crypto_generichash_init(&h->u.b2, NULL, 0, MIG_HASH_LEN);
}

void mig_hash_update(struct mig_hash *h, const void *p, size_t n)
{
	if (h->alg == MIG_HASH_XXH128)
		XXH3_128bits_update(&h->u.xxh, p, n);
	else
		crypto_generichash_update(&h->u.b2, p, n);
}

static const uint8_t zero_buf[1 << 16];

void mig_hash_zeros(struct mig_hash *h, uint64_t n)
{
	while (n) {
		size_t k = n > sizeof(zero_buf) ? sizeof(zero_buf) : (size_t)n;
		mig_hash_update(h, zero_buf, k);
		n -= k;
	}
}

void mig_hash_hex(struct mig_hash *h, char hex[MIG_HASH_HEX])
{
	uint8_t sum[MIG_HASH_LEN];
	size_t n;

	if (h->alg == MIG_HASH_XXH128) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&h->u.xxh));
		n = sizeof(c.digest);
		memcpy(sum, c.digest, n);    /* big-endian, as xxh128sum prints it */
	} else {
		n = MIG_HASH_LEN;
		crypto_generichash_final(&h->u.b2, sum, n);
	}
	mig_hex(sum, n, hex);
}

void mig_hash_buf(enum mig_hash_alg alg, const void *p, size_t n, char hex[MIG_HASH_HEX])
{
	struct mig_hash h;

	mig_hash_init(&h, alg);
	mig_hash_update(&h, p, n);
	mig_hash_hex(&h, hex);
}

/* The logical content of fd; holes (SEEK_HOLE) are hashed as zeros instead
 * of being read through the kernel. */
int mig_hash_fd(int fd, enum mig_hash_alg alg, char hex[MIG_HASH_HEX])
{
	static __thread uint8_t buf[1 << 17];
	struct mig_hash h;
	struct stat sb;
	off_t off = 0, end;

	if (fstat(fd, &sb) < 0)
		return -errno;
	end = sb.st_size;
	mig_hash_init(&h, alg);
	while (off < end) {
		off_t data = lseek(fd, off, SEEK_DATA), hole;

		if (data < 0)
			data = errno == ENXIO ? end : off;  /* ENXIO: only a hole is left */
		if (data > end)
			data = end;
		mig_hash_zeros(&h, (uint64_t)(data - off));
		off = data;
		if (off >= end)
			break;
		hole = lseek(fd, off, SEEK_HOLE);
		if (hole < 0 || hole > end)
			hole = end;
		while (off < hole) {
			size_t want = (size_t)(hole - off) > sizeof(buf) ? sizeof(buf) : (size_t)(hole - off);
			ssize_t n = pread(fd, buf, want, off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (n == 0)
				return -EIO;   /* shrank while we read */
			mig_hash_update(&h, buf, (size_t)n);
			off += n;
		}
	}
	mig_hash_hex(&h, hex);
	return 0;
}

int mig_store_hash_alg(json_object *doc, const char *name, enum mig_hash_alg *alg, ip_error *e)
{
	json_object *v;
	int64_t version = 0;

	if (json_object_object_get_ex(doc, "format_version", &v))
		version = json_object_get_int64(v);
	/* format_version 1 (and a COMPLETE that predates the key) is BLAKE2b */
	if (version > MIG_FORMAT_VERSION)
		return ip_bad(e, -EPROTONOSUPPORT, "%s is of store format %lld, newer than this inplace reads (%d): restore with the inplace that saved it",
			       name, (long long)version, MIG_FORMAT_VERSION);
	if (!json_object_object_get_ex(doc, "hash", &v)) {
		if (version >= 2)
			return ip_fail(e, -EINVAL, "%s names no hash algorithm: the store is damaged", name);
		*alg = MIG_HASH_BLAKE2B;
		return 0;
	}
	if (!mig_json_str(v) || mig_hash_parse(mig_json_str(v), alg) < 0)
		return ip_bad(e, -EPROTONOSUPPORT, "%s uses the hash '%.40s', which this inplace does not know: restore with the inplace that saved it",
			       name, mig_json_str(v) ? mig_json_str(v) : "(not a name)");
	return 0;
}
