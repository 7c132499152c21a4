/* fileio.c — durable file replacement and whole-file reads. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"

int ip_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ip_fsync_dir(const char *dir, ip_error *e)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return ip_fail(e, -errno, "cannot open directory %s: %s", dir, strerror(errno));
	if (fsync(fd) < 0)
		return ip_fail(e, -errno, "cannot sync directory %s: %s", dir, strerror(errno));
	return 0;
}

int ip_fsync_parent(const char *path, ip_error *e)
{
	_cleanup_free_ char *copy = strdup(path);

	if (!copy)
		return ip_fail(e, -ENOMEM, "out of memory");
	return ip_fsync_dir(dirname(copy), e);
}

int ip_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, ip_error *e)
{
	_cleanup_free_ char *tmp = NULL;
	int fd, r;

	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return ip_fail(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
	r = ip_write_all(fd, data, len);
	if (r == 0 && fchmod(fd, mode) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return ip_fail(e, r, "cannot write %s: %s", path, strerror(-r));
	}
	return ip_fsync_parent(path, e);
}

static const char *file_kind(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFIFO: return "a FIFO";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	case S_IFDIR: return "a directory";
	case S_IFSOCK: return "a socket";
	default: return "not a regular file";
	}
}

int ip_open_input(const char *path, int *fdp, ip_error *e)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	int fl;

	*fdp = -1;
	/* O_NONBLOCK: open() of a FIFO without a writer, or of some devices,
	 * would wait forever; fstat on what was opened (no race with a swap
	 * of the name) decides */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return ip_bad(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0)
		return ip_fail(e, -errno, "cannot read %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return ip_bad(e, -EINVAL, "%s is %s, not a file: give a regular file", path, file_kind(st.st_mode));
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return ip_fail(e, -errno, "cannot read %s: %s", path, strerror(errno));
	*fdp = TAKE_FD(fd);
	return 0;
}

int ip_read_file(const char *path, size_t max, char **data, size_t *len, ip_error *e)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t n = 0, cap = 0;
	int r = ip_open_input(path, &fd, e);

	if (r < 0)
		return r;
	for (;;) {
		ssize_t k;

		if (n + 1 >= cap) {
			char *nb;

			cap = cap ? cap * 2 : 8192;
			if (cap > max + 2)
				cap = max + 2;
			nb = realloc(buf, cap);
			if (!nb)
				return ip_fail(e, -ENOMEM, "out of memory reading %s", path);
			buf = nb;
		}
		k = read(fd, buf + n, cap - n - 1);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return ip_fail(e, -errno, "cannot read %s: %s", path, strerror(errno));
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > max)
			return ip_bad(e, -EFBIG, "%s is larger than %zu bytes", path, max);
	}
	if (!buf && !(buf = malloc(1)))
		return ip_fail(e, -ENOMEM, "out of memory");
	buf[n] = '\0';
	*data = TAKE_PTR(buf);
	if (len)
		*len = n;
	return 0;
}

int ip_mkdir_p(const char *path, mode_t mode, ip_error *e)
{
	_cleanup_free_ char *p = strdup(path);

	if (!p)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;

			*s = '\0';
			if (mkdir(p, mode) < 0 && errno != EEXIST)
				return ip_fail(e, -errno, "cannot create directory %s: %s", p, strerror(errno));
			*s = c;
			if (!c)
				break;
		}
	}
	return 0;
}
