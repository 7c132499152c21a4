/* path.c — resolving paths under a root without ever leaving it, durable
 * writes beneath a directory fd, hashing, and the store's own files. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "migrate/internal.h"

static int openat2_how(int dirfd, const char *rel, int flags, mode_t mode, uint64_t resolve)
{
	struct open_how how = { 0 };
	long r;

	how.flags = (uint64_t)(flags | O_CLOEXEC);
	how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
	how.resolve = resolve;
	do
		r = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	while (r < 0 && errno == EAGAIN);
	return r < 0 ? -errno : (int)r;
}

int mig_openat_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
	return openat2_how(dirfd, rel, flags, mode,
			   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

int mig_openat_inroot(int rootfd, const char *rel, int flags)
{
	return openat2_how(rootfd, rel, flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

int mig_read_inroot(int rootfd, const char *rel, size_t max, char **data, size_t *len)
{
	_cleanup_close_ int fd = mig_openat_inroot(rootfd, rel, O_RDONLY);
	char path[64];
	ip_error e;
	int r;

	if (fd < 0)
		return fd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	r = ip_read_file(path, max, data, len, &e);
	return r;
}

bool mig_path_safe(const char *rel)
{
	const char *p = rel;

	if (!*rel || *rel == '/')
		return false;
	while (*p) {
		const char *s = strchr(p, '/');
		size_t l = s ? (size_t)(s - p) : strlen(p);

		if (l == 0 || (l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (!s)
			break;
		p = s + 1;
		if (!*p)  /* trailing slash */
			return false;
	}
	return true;
}

int mig_mkdirs_beneath(int dirfd, const char *rel, mode_t mode, uid_t uid, gid_t gid, bool *created)
{
	_cleanup_free_ char *copy = strdup(rel);
	int fd, r;

	if (!copy)
		return -ENOMEM;
	if (created)
		*created = false;
	if (!*rel || !strcmp(rel, "."))
		return openat2_how(dirfd, ".", O_RDONLY | O_DIRECTORY, 0, RESOLVE_BENEATH);
	if (!mig_path_safe(rel))
		return -EINVAL;
	fd = dup(dirfd);
	if (fd < 0)
		return -errno;
	char *save = NULL;
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int nfd = mig_openat_beneath(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);

		if (nfd == -ENOENT) {
			if (mkdirat(fd, c, mode) < 0 && errno != EEXIST) {
				r = -errno;
				close(fd);
				return r;
			}
			nfd = mig_openat_beneath(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
			if (nfd >= 0) {
				if (created)
					*created = true;
				if (uid != (uid_t)-1 && fchown(nfd, uid, gid) < 0) {
					r = -errno;
					close(nfd);
					close(fd);
					return r;
				}
				fchmod(nfd, mode);
			}
		}
		close(fd);
		if (nfd < 0)
			return nfd;
		fd = nfd;
	}
	return fd;
}

int mig_write_beneath(int rootfd, const char *rel, const void *data, size_t len, mode_t mode,
		      uid_t uid, gid_t gid, bool durable, ip_error *e)
{
	_cleanup_free_ char *dir = strdup(rel);
	_cleanup_close_ int dfd = -1;
	_cleanup_close_ int fd = -1;
	char tmp[300];
	const char *base;
	char *slash;
	int r;

	if (!dir)
		return ip_fail(e, -ENOMEM, "out of memory");
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		base = slash + 1;
		dfd = mig_mkdirs_beneath(rootfd, dir, 0755, (uid_t)-1, (gid_t)-1, NULL);
	} else {
		base = rel;
		dfd = dup(rootfd);
		if (dfd < 0)
			dfd = -errno;
	}
	if (dfd < 0)
		return ip_fail(e, dfd, "cannot open the directory of %s in the new root: %s%s", rel,
			       strerror(-dfd), dfd == -ELOOP ? " (a symlink on the way; refused)" : "");
	snprintf(tmp, sizeof(tmp), ".%.200s.inplace-tmp", base);
	unlinkat(dfd, tmp, 0);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return ip_fail(e, -errno, "cannot create %s in the new root: %s", rel, strerror(errno));
	r = ip_write_all(fd, data, len);
	if (!r && uid != (uid_t)-1 && fchown(fd, uid, gid) < 0)
		r = -errno;
	if (!r && fchmod(fd, mode) < 0)
		r = -errno;
	if (!r && durable && fsync(fd) < 0)
		r = -errno;
	if (!r && renameat(dfd, tmp, dfd, base) < 0)
		r = -errno;
	if (!r && durable && fsync(dfd) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dfd, tmp, 0);
		return ip_fail(e, r, "cannot write %s in the new root: %s", rel, strerror(-r));
	}
	return 0;
}

void mig_hex(const uint8_t *h, size_t n, char *out)
{
	sodium_bin2hex(out, n * 2 + 1, h, n);
}

int mig_store_open(const char *store, int *fd, ip_error *e)
{
	*fd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0)
		return ip_bad(e, -errno, "cannot open the store %s: %s", store, strerror(errno));
	return 0;
}

int mig_store_open_file(int storefd, const char *name, ip_error *e)
{
	struct stat st;
	int fd = mig_openat_beneath(storefd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);

	/* O_NONBLOCK: a FIFO planted in the store must not hang open() */
	if (fd < 0)
		return ip_fail(e, fd, "cannot open %s of the store: %s", name, strerror(-fd));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return ip_fail(e, -EINVAL, "%s of the store is not a regular file: the store is damaged or hostile", name);
	}
	return fd;
}

int mig_store_parse_json(const char *text, const char *name, json_object **out, ip_error *e)
{
	json_tokener *tok = json_tokener_new_ex(64);

	if (!tok)
		return ip_fail(e, -ENOMEM, "out of memory");
	*out = json_tokener_parse_ex(tok, text, -1);
	if (!*out || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(*out, json_type_object)) {
		json_tokener_free(tok);
		if (*out)
			json_object_put(*out);
		*out = NULL;
		return ip_fail(e, -EINVAL, "%s of the store is damaged (not a JSON object): save the profile again", name);
	}
	json_tokener_free(tok);
	return 0;
}

int mig_store_read_json(int storefd, const char *name, json_object **out, ip_error *e)
{
	_cleanup_close_ int fd = mig_store_open_file(storefd, name, e);
	_cleanup_free_ char *text = NULL;
	char path[64];
	int r;

	if (fd < 0)
		return fd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if ((r = ip_read_file(path, 1UL << 31, &text, NULL, e)) < 0)
		return r;
	return mig_store_parse_json(text, name, out, e);
}

int mig_store_check_complete(int storefd, const char *store, enum mig_hash_alg *alg, ip_error *e)
{
	_cleanup_json_ json_object *c = NULL;
	static const char *const files[] = { "manifest.json", "accounts.json", "machine.json" };
	int fd = mig_openat_beneath(storefd, "COMPLETE", O_PATH, 0);

	if (fd < 0)
		return ip_bad(e, -ENOENT, "%s has no COMPLETE marker (an unfinished or interrupted save): run 'inplace profile save' again", store);
	close(fd);
	if (mig_store_read_json(storefd, "COMPLETE", &c, e) < 0)
		return ip_error_set(e, IP_EXIT_BADINPUT, -EINVAL, "the COMPLETE marker of %s is damaged: save the profile again", store);
	int r = mig_store_hash_alg(c, "the COMPLETE marker", alg, e);
	if (r < 0)
		return r;
	for (size_t i = 0; i < IP_ARRAY_SIZE(files); i++) {
		json_object *h;
		_cleanup_close_ int ffd = mig_store_open_file(storefd, files[i], e);
		char hex[MIG_HASH_HEX];

		if (ffd < 0 && ffd != -ENOENT)
			return ffd;
		if (ffd < 0)
			return ip_fail(e, ffd, "%s/%s is missing: the store is damaged", store, files[i]);
		if (!json_object_object_get_ex(c, files[i], &h) || mig_hash_fd(ffd, *alg, hex) < 0)
			return ip_fail(e, -EINVAL, "the COMPLETE marker of %s does not cover %s: the store is damaged", store, files[i]);
		if (!mig_json_str(h) || strcmp(hex, mig_json_str(h)))
			return ip_fail(e, -EBADMSG, "%s/%s was altered after the save (hash mismatch): the store cannot be trusted", store, files[i]);
	}
	return 0;
}

int mig_store_load(int storefd, const char *store, enum mig_hash_alg *alg, json_object **manifest, ip_error *e)
{
	json_object *v;
	enum mig_hash_alg malg;
	int r;

	if ((r = mig_store_check_complete(storefd, store, alg, e)) < 0 ||
	    (r = mig_store_read_json(storefd, "manifest.json", manifest, e)) < 0)
		return r;
	/* COMPLETE covers manifest.json, so the two can only disagree if the
	 * saver was broken; still, never read hashes of one kind as another */
	if (json_object_object_get_ex(*manifest, "hash", &v) &&
	    (!mig_json_str(v) || mig_hash_parse(mig_json_str(v), &malg) < 0 ||
	     malg != *alg))
		return ip_fail(e, -EBADMSG, "manifest.json of %s names another hash algorithm than COMPLETE: the store is damaged", store);
	return 0;
}
