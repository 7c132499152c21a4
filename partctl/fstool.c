/* fstool.c — the filesystem tools partctl runs (e2fsck, resize2fs,
 * e2undo, ntfsfix, ntfsresize), with ONE check policy per filesystem, on
 * the kernel's partition node or a loop device over the range. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "partctl/internal.h"

/* ---- running the tools ---------------------------------------------------- */

/* Run a tool and hand back its exit code; fails only when it could not run
 * or died of a signal. */
int partctl_tool_run(const char *const argv[], int *code, char **err_out, ip_error *e)
{
	ip_proc p = { .argv = argv };
	int r;

	*code = -1;
	r = ip_proc_run(&p, e);

	if (r == 0) {
		*code = p.exit_code;
		if (err_out)
			*err_out = TAKE_PTR(p.err);
	}
	ip_proc_clear(&p);
	return r;
}

void partctl_tool_last_line(const char *s, char *buf, size_t len)
{
	const char *end, *start;

	buf[0] = '\0';
	if (!s)
		return;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		end--;
	start = end;
	while (start > s && start[-1] != '\n')
		start--;
	snprintf(buf, len, "%.*s", (int)(end - start), start);
}

/* The line of a tool's stderr that starts with prefix (its error), else
 * the last one. */
void partctl_tool_line(const char *s, const char *prefix, char *buf, size_t len)
{
	const char *p = s ? strstr(s, prefix) : NULL;

	if (!p || (p != s && p[-1] != '\n')) {
		partctl_tool_last_line(s, buf, len);
		return;
	}
	p += strlen(prefix);
	snprintf(buf, len, "%.*s", (int)strcspn(p, "\n"), p);
}

bool partctl_node_has_size(const char *node, uint64_t size)
{
	_cleanup_close_ int fd = open(node, O_RDONLY | O_CLOEXEC);
	uint64_t s = 0;

	return fd >= 0 && ioctl(fd, BLKGETSIZE64, &s) == 0 && s == size;
}

int partctl_tooldev_get(const char *disk, unsigned n, uint64_t start, uint64_t size,
		       struct partctl_tooldev *td, ip_error *e)
{
	struct stat st;

	td->loop = false;
	if (stat(disk, &st) == 0 && S_ISBLK(st.st_mode) &&
	    ip_partition_node(disk, n, td->path, sizeof(td->path)) == 0 &&
	    partctl_node_has_size(td->path, size))
		return 0;
	if (ip_loop_attach(disk, start, size, false, td->path, sizeof(td->path), e) < 0)
		return -EIO;
	td->loop = true;
	return 0;
}

void partctl_tooldev_put(struct partctl_tooldev *td)
{
	if (td->loop)
		ip_loop_detach(td->path, NULL);
	td->loop = false;
}

/* Make what the tools wrote through the page cache durable.  Under
 * INPLACE_IOLOG (the power-cut test mode) the range the tool may have
 * written is then recorded as external writes, in 16 MiB pieces. */
int partctl_tool_flush(const char *disk, uint64_t off, uint64_t len, ip_error *e)
{
	_cleanup_close_ int fd = open(disk, O_RDONLY | O_CLOEXEC);
	ip_disk *d = NULL;
	int r = 0;

	if (fd < 0 || fsync(fd) < 0)
		return ip_fail(e, -errno, "cannot flush %s: %s", disk, strerror(errno));
	if (!getenv("INPLACE_IOLOG") || !len)
		return 0;
	r = ip_disk_open_range(disk, IP_DISK_RDWR, off, len, &d, e);
	for (uint64_t o = 0; r == 0 && o < len; o += 16 << 20)
		r = ip_disk_log_external(d, off + o, len - o < (16 << 20) ? len - o : 16 << 20, e);
	ip_disk_free(d);
	return r;
}

/* Append one finding to buf ("; " between them), as much as fits. */
static void add_finding(char *buf, size_t len, const char *s, size_t n)
{
	size_t have = strlen(buf);

	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	while (n && isspace((unsigned char)*s))
		s++, n--;
	if (!n || have + 3 >= len)
		return;
	snprintf(buf + have, len - have, "%s%.*s", have ? "; " : "", (int)n, s);
}

unsigned partctl_fsck_findings(const char *out, char *buf, size_t len)
{
	const char *line = out, *prev = NULL;
	size_t prevlen = 0;
	unsigned count = 0;

	if (len)
		buf[0] = '\0';
	for (; line && *line; line += strcspn(line, "\n") + (line[strcspn(line, "\n")] == '\n')) {
		size_t l = strcspn(line, "\n"), w;
		const char *q;

		/* e2fsck states a problem, then asks "Fix? yes" (or Clear?,
		 * Salvage?, …) on its own line or at the end of the same one */
		if (l >= 4 && (!strncmp(line + l - 4, "? no", 4) || (l >= 5 && !strncmp(line + l - 5, "? yes", 5)))) {
			q = memchr(line, '?', l);
			w = (size_t)(q - line);
			while (w && !isspace((unsigned char)line[w - 1]))
				w--; /* the prompt's word */
			count++;
			if (w && line[strspn(line, " \t")] != line[w])
				add_finding(buf, len, line, w);
			else if (prev)
				add_finding(buf, len, prev, prevlen);
			prev = NULL;
			continue;
		}
		if (l && strncmp(line, "Pass ", 5) && line[strspn(line, " \t")] != '\0') {
			prev = line;
			prevlen = l;
		}
	}
	return count;
}

int partctl_e2fsck(const char *dev, bool repair, int *code, char *found, size_t flen, unsigned *count,
		   char *errline, size_t elen, ip_error *e)
{
	const char *argv[] = { "e2fsck", "-f", repair ? "-y" : "-n", dev, NULL };
	ip_proc p = { .argv = argv };
	int r = ip_proc_run(&p, e);

	if (r == 0) {
		*code = p.exit_code;
		*count = partctl_fsck_findings(p.out, found, flen);
		partctl_tool_last_line(p.err, errline, elen);
	}
	ip_proc_clear(&p);
	return r;
}

int partctl_ext_fsck_repair(const char *dev, const char *disk, unsigned n, bool may_repair, char *found,
			    size_t flen, unsigned *count, ip_error *e)
{
	char line[256], fbuf[512];
	unsigned cnt = 0;
	int code, r;

	if (!found) {
		found = fbuf;
		flen = sizeof(fbuf);
	}
	*found = '\0';
	if (!may_repair) {
		/* look first, repair nothing: any finding is a refusal */
		r = partctl_e2fsck(dev, false, &code, found, flen, &cnt, line, sizeof(line), e);
		if (r < 0)
			return r;
		if (code != 0)
			return ip_bad(e, -EUCLEAN,
				      "the filesystem on partition %u of %s needs repairs (e2fsck -fn: %s) and --no-repair was given: repair it with e2fsck -f, or shrink without --no-repair",
				      n, disk, *found ? found : *line ? line : "exit status 4");
		if (count)
			*count = 0;
		return 0;
	}
	r = partctl_e2fsck(dev, true, &code, found, flen, &cnt, line, sizeof(line), e);
	if (r < 0)
		return r;
	/* 0: clean, 1: errors corrected, 2: corrected, reboot (root only). */
	if (code >= 4)
		return ip_fail(e, -EUCLEAN,
			       "the filesystem on partition %u of %s has errors e2fsck could not repair (exit %d%s%s): repair it with e2fsck -f first",
			       n, disk, code, *line ? ": " : "", line);
	if (code == 0)
		*found = '\0', cnt = 0; /* what it "fixed" on a clean fs is bookkeeping */
	else if (!cnt)
		cnt = 1;
	if (count)
		*count = cnt;
	return 0;
}

int partctl_ext_fsck(const char *dev, const char *disk, unsigned n, ip_error *e)
{
	return partctl_ext_fsck_repair(dev, disk, n, true, NULL, 0, NULL, e);
}

int partctl_ext_estimate(const char *dev, uint64_t bs, uint64_t *min, ip_error *e)
{
	_cleanup_free_ char *out = NULL;
	const char *argv[] = { "resize2fs", "-P", dev, NULL };
	const char *p;
	unsigned long long blocks;
	int r = ip_spawn(argv, &out, e);

	if (r < 0)
		return r;
	p = out ? strstr(out, "minimum size of the filesystem:") : NULL;
	if (!p || sscanf(strchr(p, ':') + 1, "%llu", &blocks) != 1)
		return ip_fail(e, -EIO, "resize2fs -P printed no minimum size for %s", dev);
	*min = blocks * bs;
	return 0;
}

int partctl_ntfs_check(const char *dev, const char *disk, unsigned n, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	const char *argv[] = { "ntfsfix", "-n", dev, NULL };
	char line[256];
	int code, r;

	r = partctl_tool_run(argv, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		partctl_tool_last_line(err, line, sizeof(line));
		return ip_fail(e, -EUCLEAN,
			       "the NTFS filesystem on partition %u of %s is inconsistent%s%s: run chkdsk /f on it in Windows first",
			       n, disk, *line ? ": " : "", line);
	}
	return 0;
}

/* Did resize2fs get as far as writing its undo header?  undo_io writes and
 * flushes the header (with its magic) before the first block it lets reach
 * the filesystem, so an undo file without one means nothing was written. */
bool partctl_e2undo_has_header(const char *undo)
{
	_cleanup_close_ int fd = open(undo, O_RDONLY | O_CLOEXEC);
	char magic[8];

	return fd >= 0 && pread(fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
	       memcmp(magic, "E2UNDO02", sizeof(magic)) == 0;
}

int partctl_e2undo_run(const char *undo, const char *dev, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	const char *argv[] = { "e2undo", undo, dev, NULL };
	/* -f: an interrupted resize2fs leaves an undo file that is not marked
	 * finished and a superblock newer than the one it recorded. */
	const char *argv_f[] = { "e2undo", "-f", undo, dev, NULL };
	int code, r;

	r = partctl_tool_run(argv, &code, NULL, e);
	if (r < 0)
		return r;
	if (code == 0)
		return 0;
	r = partctl_tool_run(argv_f, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		char line[256];

		partctl_tool_last_line(err, line, sizeof(line));
		return ip_fail(e, -EIO, "e2undo could not roll back the interrupted resize of %s (%s): keep %s and run e2fsck -f",
			       dev, line, undo);
	}
	return 0;
}

