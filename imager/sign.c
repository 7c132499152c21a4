/* sign.c — detached signatures in minisign's format (ed25519 through
 * libsodium), so that `minisign -V` checks our images and `minisign -S`
 * can sign them.  Written from minisign's documented format:
 *
 *   public key   "untrusted comment: …\n" base64("Ed" keynum[8] pk[32])
 *   secret key   "untrusted comment: …\n" base64("Ed" kdf[2] "B2" salt[32]
 *                ops[8] mem[8] keynum[8] sk[64] chk[32]); kdf "\0\0" means
 *                unencrypted (minisign -W); chk = BLAKE2b-256("Ed" keynum sk),
 *                left zero by minisign -W
 *   signature    "untrusted comment: …\n" base64(alg[2] keynum[8] sig[64]) "\n"
 *                "trusted comment: TEXT\n" base64(global[64]) "\n"
 *                alg "ED": sig over BLAKE2b-512(file); legacy "Ed": over the
 *                file; global = ed25519(sig[64] || TEXT)
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "imager/imager_int.h"

#define KEYNUM 8
#define PK_BLOB (2 + KEYNUM + crypto_sign_PUBLICKEYBYTES)
#define SK_BLOB (2 + 2 + 2 + 32 + 8 + 8 + KEYNUM + crypto_sign_SECRETKEYBYTES + 32)
#define SIG_BLOB (2 + KEYNUM + crypto_sign_BYTES)

/* The base64 payload on line `want` (0-based) of a minisign file. */
static int b64_line(const char *text, int want, uint8_t *out, size_t len, size_t *got, char *line,
		    size_t linelen)
{
	const char *p = text;
	size_t n;

	for (int i = 0; i < want && p; i++) {
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	if (!p || !*p)
		return -EINVAL;
	n = strcspn(p, "\r\n");
	if (line) {
		if (n >= linelen)
			return -EINVAL;
		memcpy(line, p, n);
		line[n] = '\0';
		return 0;
	}
	if (sodium_base642bin(out, len, p, n, NULL, got, NULL, sodium_base64_VARIANT_ORIGINAL) < 0)
		return -EINVAL;
	return 0;
}

static int load_pubkey(const char *path, uint8_t keynum[KEYNUM], uint8_t pk[32], ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	uint8_t blob[PK_BLOB];
	size_t len, got;
	int r = ip_read_file(path, 4096, &text, &len, e);

	if (r < 0)
		return ip_bad(e, r, "cannot read the public key %s: %s", path, strerror(-r));
	/* A file may hold only the base64 line (minisign -P style). */
	if (b64_line(text, strncmp(text, "untrusted comment:", 18) ? 0 : 1, blob, sizeof(blob), &got, NULL, 0) < 0 ||
	    got != PK_BLOB || memcmp(blob, "Ed", 2))
		return ip_bad(e, -EINVAL, "%s is not a minisign public key: give the .pub file minisign -G wrote", path);
	memcpy(keynum, blob + 2, KEYNUM);
	memcpy(pk, blob + 2 + KEYNUM, 32);
	return 0;
}

static int load_seckey(const char *path, uint8_t keynum[KEYNUM], uint8_t sk[64], ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	uint8_t blob[SK_BLOB], chk[32];
	size_t len, got;
	crypto_generichash_state st;
	int r = ip_read_file(path, 8192, &text, &len, e);
	const uint8_t *kn, *key, *ck;

	if (r < 0)
		return ip_bad(e, r, "cannot read the secret key %s: %s", path, strerror(-r));
	if (b64_line(text, 1, blob, sizeof(blob), &got, NULL, 0) < 0 || got != SK_BLOB ||
	    memcmp(blob, "Ed", 2) || memcmp(blob + 4, "B2", 2)) {
		sodium_memzero(blob, sizeof(blob));
		return ip_bad(e, -EINVAL, "%s is not a minisign secret key: give the .key file minisign -G wrote", path);
	}
	if (blob[2] || blob[3]) {
		sodium_memzero(blob, sizeof(blob));
		return ip_bad(e, -EINVAL, "the secret key %s is password-protected: remove the password with 'minisign -C -W -s %s' or sign with minisign -S",
			      path, path);
	}
	kn = blob + 2 + 2 + 2 + 32 + 8 + 8;
	key = kn + KEYNUM;
	ck = key + 64;
	crypto_generichash_init(&st, NULL, 0, sizeof(chk));
	crypto_generichash_update(&st, blob, 2);
	crypto_generichash_update(&st, kn, KEYNUM);
	crypto_generichash_update(&st, key, 64);
	crypto_generichash_final(&st, chk, sizeof(chk));
	/* minisign -W (0.11) leaves chk zero in an unencrypted key. */
	if (!sodium_is_zero(ck, sizeof(chk)) && sodium_memcmp(chk, ck, sizeof(chk))) {
		sodium_memzero(blob, sizeof(blob));
		return ip_bad(e, -EINVAL, "the secret key %s is damaged (checksum mismatch): use another copy", path);
	}
	memcpy(keynum, kn, KEYNUM);
	memcpy(sk, key, 64);
	sodium_memzero(blob, sizeof(blob));
	return 0;
}

static int hash_file(const char *path, uint8_t out[64], ip_error *e)
{
	_cleanup_close_ int fd = -1;
	crypto_generichash_state st;
	_cleanup_free_ uint8_t *buf = malloc(1 << 20);
	ssize_t n;
	int r = ip_open_input(path, &fd, e);

	if (r < 0)
		return r;
	if (!buf)
		return ip_fail(e, -ENOMEM, "out of memory");
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	crypto_generichash_init(&st, NULL, 0, 64);
	while ((n = read(fd, buf, 1 << 20)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ip_fail(e, -errno, "cannot read %s: %s", path, strerror(errno));
		crypto_generichash_update(&st, buf, (size_t)n);
	}
	crypto_generichash_final(&st, out, 64);
	return 0;
}

int imager_sign_prehashed(const uint8_t hash[64], const char *file, const char *seckey,
			  const char *sig_path, ip_error *e)
{
	uint8_t keynum[KEYNUM] = { 0 }, sk[64] = { 0 }, blob[SIG_BLOB], global[64];
	char b64a[sodium_base64_ENCODED_LEN(SIG_BLOB, sodium_base64_VARIANT_ORIGINAL)];
	char b64b[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)];
	char trusted[512], kid[17];
	_cleanup_free_ char *text = NULL;
	_cleanup_free_ uint8_t *gmsg = NULL;
	const char *base = strrchr(file, '/');
	size_t tlen;
	int r, len;

	if (sodium_init() < 0)
		return ip_fail(e, -EIO, "libsodium cannot initialise");
	r = load_seckey(seckey, keynum, sk, e);
	if (r < 0)
		return r;
	memcpy(blob, "ED", 2);
	memcpy(blob + 2, keynum, KEYNUM);
	crypto_sign_detached(blob + 2 + KEYNUM, NULL, hash, 64, sk);
	snprintf(trusted, sizeof(trusted), "timestamp:%lld\tfile:%s\tprehashed", (long long)time(NULL),
		 base ? base + 1 : file);
	tlen = strlen(trusted);
	gmsg = malloc(crypto_sign_BYTES + tlen);
	if (!gmsg) {
		sodium_memzero(sk, sizeof(sk));
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	memcpy(gmsg, blob + 2 + KEYNUM, crypto_sign_BYTES);
	memcpy(gmsg + crypto_sign_BYTES, trusted, tlen);
	crypto_sign_detached(global, NULL, gmsg, crypto_sign_BYTES + tlen, sk);
	sodium_memzero(sk, sizeof(sk));
	sodium_bin2base64(b64a, sizeof(b64a), blob, sizeof(blob), sodium_base64_VARIANT_ORIGINAL);
	sodium_bin2base64(b64b, sizeof(b64b), global, sizeof(global), sodium_base64_VARIANT_ORIGINAL);
	/* minisign prints the key id as a little-endian 64-bit hex number. */
	for (int i = 0; i < KEYNUM; i++)
		snprintf(kid + 2 * i, 3, "%02X", keynum[KEYNUM - 1 - i]);
	len = asprintf(&text, "untrusted comment: signature from inplace secret key %s\n%s\ntrusted comment: %s\n%s\n",
		       kid, b64a, trusted, b64b);
	if (len < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	return ip_write_file_atomic(sig_path, text, (size_t)len, 0644, e);
}

int imager_sign_file(const char *file, const char *seckey, const char *sig_path, ip_error *e)
{
	uint8_t h[64];
	int r;

	if (sodium_init() < 0)
		return ip_fail(e, -EIO, "libsodium cannot initialise");
	r = hash_file(file, h, e);
	if (r < 0)
		return r;
	return imager_sign_prehashed(h, file, seckey, sig_path, e);
}

int imager_verify_sig(const char *file, const char *sig_path, const char *pubkey, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_free_ uint8_t *gmsg = NULL;
	uint8_t keynum[KEYNUM], pk[32], blob[SIG_BLOB], global[64];
	char trusted[8192];
	size_t len, got;
	int r;

	if (sodium_init() < 0)
		return ip_fail(e, -EIO, "libsodium cannot initialise");
	r = load_pubkey(pubkey, keynum, pk, e);
	if (r < 0)
		return r;
	r = ip_read_file(sig_path, 16384, &text, &len, e);
	if (r < 0)
		return ip_bad(e, r, "%s has no signature (%s: %s): sign it (inplace image capture --sign, or minisign -S)",
			      file, sig_path, strerror(-r));
	if (b64_line(text, 1, blob, sizeof(blob), &got, NULL, 0) < 0 || got != SIG_BLOB ||
	    b64_line(text, 2, NULL, 0, NULL, trusted, sizeof(trusted)) < 0 ||
	    strncmp(trusted, "trusted comment: ", 17) ||
	    b64_line(text, 3, global, sizeof(global), &got, NULL, 0) < 0 || got != 64)
		return ip_bad(e, -EINVAL, "%s is not a minisign signature: sign the image again", sig_path);
	if (memcmp(blob + 2, keynum, KEYNUM))
		return ip_bad(e, -EKEYREJECTED, "%s was signed with another key than %s: use the matching public key",
			      file, pubkey);
	if (!memcmp(blob, "ED", 2)) {
		uint8_t h[64];

		r = hash_file(file, h, e);
		if (r < 0)
			return r;
		r = crypto_sign_verify_detached(blob + 2 + KEYNUM, h, 64, pk);
	} else if (!memcmp(blob, "Ed", 2)) {
		_cleanup_close_ int fd = -1;
		struct stat sb;
		void *map;

		r = ip_open_input(file, &fd, e);
		if (r < 0)
			return r;
		if (fstat(fd, &sb) < 0)
			return ip_fail(e, -errno, "cannot read %s: %s", file, strerror(errno));
		map = sb.st_size ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : (void *)"";
		if (map == MAP_FAILED)
			return ip_fail(e, -errno, "cannot map %s: %s", file, strerror(errno));
		r = crypto_sign_verify_detached(blob + 2 + KEYNUM, map, (size_t)sb.st_size, pk);
		if (sb.st_size)
			munmap(map, (size_t)sb.st_size);
	} else {
		return ip_bad(e, -EINVAL, "%s uses an unknown signature algorithm: sign the image again", sig_path);
	}
	if (r != 0)
		return ip_bad(e, -EKEYREJECTED, "the signature of %s does not verify with %s: the image was changed or signed by someone else",
			      file, pubkey);
	len = strlen(trusted + 17);
	gmsg = malloc(64 + len);
	if (!gmsg)
		return ip_fail(e, -ENOMEM, "out of memory");
	memcpy(gmsg, blob + 2 + KEYNUM, 64);
	memcpy(gmsg + 64, trusted + 17, len);
	if (crypto_sign_verify_detached(global, gmsg, 64 + len, pk) != 0)
		return ip_bad(e, -EKEYREJECTED, "the trusted comment of %s does not verify with %s: the signature file was tampered with",
			      sig_path, pubkey);
	return 0;
}
