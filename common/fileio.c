/* fileio.c — durable file replacement and whole-file reads. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/loop.h>
#include <string.h>
#include <sys/ioctl.h>
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

int ip_rename_durable(const char *tmp, const char *path, ip_error *e)
{
	if (rename(tmp, path) < 0)
		return ip_fail(e, -errno, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
	/* the rename itself is durable only once the directory is */
	return ip_fsync_parent(path, e);
}

int ip_outfile_open(const char *path, const char *in, mode_t mode, ip_outfile *of, ip_error *e)
{
	int r;

	memset(of, 0, sizeof(*of));
	of->fd = -1;
	if (in) {
		r = ip_check_distinct(path, in, e);
		if (r < 0)
			return r;
	}
	if (snprintf(of->path, sizeof(of->path), "%s", path) >= (int)sizeof(of->path) ||
	    snprintf(of->tmp, sizeof(of->tmp), "%s.tmp-%d-XXXXXX", path, (int)getpid()) >= (int)sizeof(of->tmp))
		return ip_bad(e, -ENAMETOOLONG, "the output name %s is too long: choose a shorter one", path);
	/* in the output's directory, so that the rename cannot cross
	 * filesystems */
	of->fd = mkostemp(of->tmp, O_CLOEXEC);
	if (of->fd < 0) {
		r = -errno;
		of->tmp[0] = '\0';
		return ip_fail(e, r, "cannot create a file next to %s: %s", path, strerror(-r));
	}
	if (fchmod(of->fd, mode) < 0) {
		r = -errno;
		ip_outfile_abort(of);
		return ip_fail(e, r, "cannot create a file next to %s: %s", path, strerror(-r));
	}
	return 0;
}

int ip_outfile_commit(ip_outfile *of, ip_error *e)
{
	int r = 0;

	if (of->fd < 0)
		return ip_fail(e, -EBADF, "internal error: %s is not open", of->path);
	if (fsync(of->fd) < 0)
		r = -errno;
	if (close(of->fd) < 0 && r == 0)
		r = -errno;
	of->fd = -1;
	if (r < 0) {
		ip_outfile_abort(of);
		return ip_fail(e, r, "cannot write %s to disk: %s", of->path, strerror(-r));
	}
	r = ip_rename_durable(of->tmp, of->path, e);
	if (r < 0) {
		ip_outfile_abort(of); /* a no-op once the rename was done */
		return r;
	}
	of->tmp[0] = '\0';
	return 0;
}

void ip_outfile_abort(ip_outfile *of)
{
	/* only close() and unlink(): async-signal-safe */
	if (of->fd >= 0)
		close(of->fd);
	of->fd = -1;
	if (of->tmp[0])
		unlink(of->tmp);
	of->tmp[0] = '\0';
}

int ip_check_distinct(const char *out, const char *in, ip_error *e)
{
	struct stat so, si;
	_cleanup_free_ char *rin = NULL, *rdir = NULL, *copy = NULL;
	size_t l;

	if (stat(in, &si) < 0)
		return 0;
	if (stat(out, &so) == 0) {
		/* an output replaces what is there: never a disk, partition or
		 * loop device (a device node would be renamed over), never a
		 * name of the input itself (a link, a symlink, the same path) */
		if (!S_ISREG(so.st_mode))
			return ip_bad(e, -EEXIST, "the output %s is %s, not a file: give the output a file name", out,
				      file_kind(so.st_mode));
		if (so.st_dev == si.st_dev && so.st_ino == si.st_ino)
			return ip_bad(e, -EEXIST, "the output %s is the input %s: give the output another name", out, in);
		if (S_ISBLK(si.st_mode)) {
			/* a loop device: its backing file is the disk too */
			_cleanup_close_ int fd = open(in, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
			struct loop_info64 li;

			if (fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &li) == 0 && li.lo_inode == so.st_ino &&
			    li.lo_device == so.st_dev)
				return ip_bad(e, -EEXIST, "the output %s is the file behind the input %s: give the output another name",
					      out, in);
		}
	}
	if (!S_ISDIR(si.st_mode))
		return 0;
	/* a directory read as input (a root tree): the output may not be
	 * written inside it, where the reader would pick it up */
	copy = strdup(out);
	if (!copy)
		return ip_fail(e, -ENOMEM, "out of memory");
	rin = realpath(in, NULL);
	rdir = realpath(dirname(copy), NULL);
	if (!rin || !rdir)
		return 0;
	l = strlen(rin);
	if (!strncmp(rdir, rin, l) && (rdir[l] == '/' || rdir[l] == '\0' || l == 1))
		return ip_bad(e, -EEXIST, "the output %s lies inside the input %s: write it somewhere else", out, in);
	return 0;
}

int ip_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, ip_error *e)
{
	ip_outfile of;
	int r = ip_outfile_open(path, NULL, mode, &of, e);

	if (r < 0)
		return r;
	r = ip_write_all(of.fd, data, len);
	if (r < 0) {
		ip_outfile_abort(&of);
		return ip_fail(e, r, "cannot write %s: %s", path, strerror(-r));
	}
	return ip_outfile_commit(&of, e);
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
