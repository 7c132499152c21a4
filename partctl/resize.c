/* resize.c — shrink and grow a partition together with its filesystem,
 * through the filesystem's own resizer (resize2fs, ntfsresize).
 *
 * Order: a shrink resizes the filesystem first and the table after it; a
 * grow the table first: at no instant is a filesystem larger than its
 * partition.  A shrink is journaled in the state directory
 * ($INPLACE_STATE_DIR, default /var/lib/inplace), one file per disk:
 *
 *   checked      e2fsck/ntfsfix passed; nothing is changed yet
 *   fs-resizing  the resizer runs; resize2fs writes an undo file first
 *                (-z), so an interrupted resize is rolled back with e2undo
 *   fs-resized   the filesystem has its new size; the table still the old
 *   table-written   the table has the new size; only cleanup is left
 *
 * partctl_resize_resume() reads it after kill -9 or a power cut: from
 * "fs-resizing" it rolls back and redoes the shrink, from "fs-resized" it
 * writes the table.  resize2fs -z corrupts filesystems of 1 KiB blocks;
 * for those, every metadata block is saved first instead (fs_ext_undo.c),
 * and the roll back writes them back.  ntfsresize has no undo: an NTFS
 * shrink interrupted inside ntfsresize is finished only if the volume is
 * whole and already small enough; otherwise resume says so and names
 * chkdsk. */
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

#define STATE_DIR_DEFAULT "/var/lib/inplace"

static inline void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

static bool is_ext(const char *t)
{
	return !strcmp(t, "ext2") || !strcmp(t, "ext3") || !strcmp(t, "ext4");
}

/* INPLACE_TEST_NO_MIN=1 (tests only) lets a shrink below the minimum
 * reach resize2fs, so that its failure and the roll back are tested. */
static bool test_no_min(void)
{
	const char *v = getenv("INPLACE_TEST_NO_MIN");

	return v && !strcmp(v, "1");
}

static uint64_t round_up(uint64_t v, uint64_t g)
{
	return (v + g - 1) / g * g;
}

static uint64_t round_down(uint64_t v, uint64_t g)
{
	return v / g * g;
}

/* Tell a caller that logs events how far an operation got. */
static void report(const struct partctl_opts *o, const char *what, uint64_t done, uint64_t total)
{
	if (o && o->progress)
		o->progress(o->progress_data, what, done, total);
}

/* ---- running the tools ---------------------------------------------------- */

/* Run a tool and hand back its exit code; fails only when it could not run
 * or died of a signal. */
static int run_code(const char *const argv[], int *code, char **err_out, ip_error *e)
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

static void last_line(const char *s, char *buf, size_t len)
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
static void tool_line(const char *s, const char *prefix, char *buf, size_t len)
{
	const char *p = s ? strstr(s, prefix) : NULL;

	if (!p || (p != s && p[-1] != '\n')) {
		last_line(s, buf, len);
		return;
	}
	p += strlen(prefix);
	snprintf(buf, len, "%.*s", (int)strcspn(p, "\n"), p);
}

/* The device the tools work on: the kernel's partition node of a block
 * device when it has the right size, else a loop device over the range. */
struct tooldev {
	char path[64];
	bool loop;
};

static bool node_has_size(const char *node, uint64_t size)
{
	_cleanup_close_ int fd = open(node, O_RDONLY | O_CLOEXEC);
	uint64_t s = 0;

	return fd >= 0 && ioctl(fd, BLKGETSIZE64, &s) == 0 && s == size;
}

static int tooldev_get(const char *disk, unsigned n, uint64_t start, uint64_t size,
		       struct tooldev *td, ip_error *e)
{
	struct stat st;

	td->loop = false;
	if (stat(disk, &st) == 0 && S_ISBLK(st.st_mode) &&
	    ip_partition_node(disk, n, td->path, sizeof(td->path)) == 0 &&
	    node_has_size(td->path, size))
		return 0;
	if (ip_loop_attach(disk, start, size, false, td->path, sizeof(td->path), e) < 0)
		return -EIO;
	td->loop = true;
	return 0;
}

static void tooldev_put(struct tooldev *td)
{
	if (td->loop)
		ip_loop_detach(td->path, NULL);
	td->loop = false;
}

/* Make what the tools wrote through the page cache durable.  Under
 * INPLACE_IOLOG (the power-cut test mode) the range the tool may have
 * written is then recorded as external writes, in 16 MiB pieces. */
static int flush_disk(const char *disk, uint64_t off, uint64_t len, ip_error *e)
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

static int ext_fsck(const char *dev, const char *disk, unsigned n, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	const char *argv[] = { "e2fsck", "-f", "-y", dev, NULL };
	char line[256];
	int code, r;

	r = run_code(argv, &code, &err, e);
	if (r < 0)
		return r;
	/* 0: clean, 1: errors corrected, 2: corrected, reboot (root only). */
	if (code >= 4) {
		last_line(err, line, sizeof(line));
		return ip_fail(e, -EUCLEAN,
			       "the filesystem on partition %u of %s has errors e2fsck could not repair (exit %d%s%s): repair it with e2fsck -f first",
			       n, disk, code, *line ? ": " : "", line);
	}
	return 0;
}

static int ext_min_dev(const char *dev, uint64_t bs, uint64_t *min, ip_error *e)
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

static int ntfs_check(const char *dev, const char *disk, unsigned n, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	const char *argv[] = { "ntfsfix", "-n", dev, NULL };
	char line[256];
	int code, r;

	r = run_code(argv, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		last_line(err, line, sizeof(line));
		return ip_fail(e, -EUCLEAN,
			       "the NTFS filesystem on partition %u of %s is inconsistent%s%s: run chkdsk /f on it in Windows first",
			       n, disk, *line ? ": " : "", line);
	}
	return 0;
}

/* ---- the plan -------------------------------------------------------------- */

static int unsupported(const char *fstype, const char *what, const char *disk, unsigned n,
		       ip_error *e)
{
	if (!*fstype)
		return ip_bad(e, -EOPNOTSUPP,
			      "partition %u of %s holds no filesystem inplace recognises, so it cannot be %s: inplace resizes ext2/3/4 and NTFS",
			      n, disk, what);
	if (!strcmp(fstype, "swap"))
		return ip_bad(e, -EOPNOTSUPP,
			      "swap cannot be %s (partition %u of %s): delete it and create a new swap partition with mkswap instead",
			      what, n, disk);
	return ip_bad(e, -EOPNOTSUPP, "%s cannot be %s by inplace (partition %u of %s): inplace resizes ext2/3/4 and NTFS only",
		      fstype, what, n, disk);
}

struct part_geom {
	uint64_t grain;
	uint64_t limit;   /* where the partition may end at most (grow) */
	bool logical;
};

static int load_part(const char *disk, unsigned n, struct partctl_resize_plan *p,
		     struct part_geom *g, ip_error *e)
{
	partctl_table *t = NULL;
	const struct partctl_part *pp, *ext = NULL;
	uint64_t end;
	unsigned ssz;
	int r;

	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	pp = partctl_table_find(t, n);
	if (!pp) {
		partctl_table_free(t);
		return ip_bad(e, -ENOENT, "%s has no partition %u: see 'inplace part show %s'", disk, n, disk);
	}
	if (pp->extended) {
		partctl_table_free(t);
		return ip_bad(e, -EINVAL,
			      "partition %u of %s is an extended container, not a filesystem: shrink or grow the logical partitions inside it",
			      n, disk);
	}
	p->n = n;
	p->start = pp->start;
	p->old_size = pp->size;
	g->logical = pp->logical;
	g->grain = partctl_table_grain(t);
	if (!g->grain)
		g->grain = 1 << 20;
	ssz = partctl_table_sector_size(t);
	end = partctl_table_disk_size(t);
	/* GPT keeps a backup header and entry array (16 KiB) in the last
	 * sectors of the disk. */
	if (!strcmp(partctl_table_label(t), "gpt"))
		end -= ssz + round_up(16384, ssz);
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *q = partctl_table_at(t, i);

		if (q->extended)
			ext = q;
	}
	if (pp->logical && ext && ext->start + ext->size < end)
		end = ext->start + ext->size;
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *q = partctl_table_at(t, i);
		uint64_t qend;

		if (q->n == n || q->start <= pp->start)
			continue;
		if (pp->logical && q->extended)
			continue;
		if (!pp->logical && q->logical)
			continue; /* the container bounds them */
		/* a following logical partition's boot record lies in the
		 * grain before it */
		qend = q->logical ? (q->start > g->grain ? q->start - g->grain : 0) : q->start;
		if (qend < end)
			end = qend;
	}
	g->limit = round_down(end, g->grain);
	partctl_table_free(t);
	return 0;
}

static int probe_part(const char *disk, const struct partctl_resize_plan *p,
		      struct partctl_fsinfo *fi, ip_error *e)
{
	ip_disk *d = NULL;
	int r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e);

	if (r < 0)
		return r;
	r = partctl_fs_probe(d, p->start, p->old_size, fi, e);
	ip_disk_free(d);
	return r;
}

/* Size such that start + size lies on the grain. */
static uint64_t align_end(uint64_t start, uint64_t size, uint64_t grain, bool up)
{
	uint64_t end = start + size;

	end = up ? round_up(end, grain) : round_down(end, grain);
	return end > start ? end - start : 0;
}

/* The partition size the message suggests for a filesystem minimum. */
static unsigned long long suggest_mib(uint64_t start, uint64_t min, uint64_t grain)
{
	return (unsigned long long)(round_up(align_end(start, min, grain, true), 1 << 20) >> 20);
}

static bool fs_fits(const struct partctl_fsinfo *fi, uint64_t size)
{
	if (is_ext(fi->type))
		return round_down(size, fi->block_size) >= fi->min_size;
	return size >= fi->min_size;
}

/* The partition, its filesystem, and a refusal when inplace cannot resize
 * that filesystem (verb: "shrunk" or "grown", for the message). */
static int load_resizable(const char *disk, unsigned n, const char *verb,
			  struct partctl_resize_plan *out, struct part_geom *g,
			  struct partctl_fsinfo *fi, ip_error *e)
{
	int r = load_part(disk, n, out, g, e);

	if (r < 0)
		return r;
	r = probe_part(disk, out, fi, e);
	if (r < 0)
		return r;
	snprintf(out->fstype, sizeof(out->fstype), "%s", fi->type);
	if (!fi->resizable)
		return unsupported(fi->type, verb, disk, n, e);
	return 0;
}

static int shrink_plan(const char *disk, unsigned n, uint64_t new_size,
		       struct partctl_resize_plan *out, struct partctl_fsinfo *fi, ip_error *e)
{
	struct part_geom g;
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];
	int r;

	memset(out, 0, sizeof(*out));
	if (new_size == 0)
		return ip_bad(e, -EINVAL, "a partition cannot be shrunk to 0 bytes: give --to SIZE");
	r = load_resizable(disk, n, "shrunk", out, &g, fi, e);
	if (r < 0)
		return r;
	/* Rounded up: never smaller than asked, so never below a minimum the
	 * user chose with care. */
	out->new_size = align_end(out->start, new_size, g.grain, true);
	out->fs_min = fi->min_size;
	if (out->new_size > out->old_size)
		return ip_bad(e, -EINVAL,
			      "partition %u of %s is %s, --to %s would not shrink it: use 'inplace part grow' to make it larger",
			      n, disk, ip_format_size(out->old_size, b1, sizeof(b1)),
			      ip_format_size(out->new_size, b2, sizeof(b2)));
	if (out->new_size == out->old_size) {
		out->nothing = true;
		return 0;
	}
	if (fi->min_size == 0)
		return ip_fail(e, -EUCLEAN,
			       "cannot learn the minimum size of the %s filesystem on partition %u of %s: check it with %s",
			       fi->type, n, disk, is_ext(fi->type) ? "e2fsck -f" : "chkdsk /f (Windows) or ntfsfix -n");
	if (!fs_fits(fi, out->new_size) && !test_no_min())
		return ip_bad(e, -ENOSPC,
			      "cannot shrink partition %u of %s below %s (the filesystem's minimum): choose --to %lluMiB or larger",
			      n, disk, ip_format_size(fi->min_size, b1, sizeof(b1)),
			      suggest_mib(out->start, fi->min_size, g.grain));
	return 0;
}

int partctl_shrink_plan(const char *disk, unsigned n, uint64_t new_size,
			struct partctl_resize_plan *out, ip_error *e)
{
	struct partctl_fsinfo fi;

	return shrink_plan(disk, n, new_size, out, &fi, e);
}

static int grow_plan(const char *disk, unsigned n, uint64_t new_size,
		     struct partctl_resize_plan *out, struct partctl_fsinfo *fi, ip_error *e)
{
	struct part_geom g;
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ];
	int r;

	memset(out, 0, sizeof(*out));
	r = load_resizable(disk, n, "grown", out, &g, fi, e);
	if (r < 0)
		return r;
	out->fs_min = fi->min_size;
	out->max_size = g.limit > out->start ? g.limit - out->start : 0;
	if (out->max_size < out->old_size)
		out->max_size = out->old_size;
	/* Rounded down: never past the free space. */
	out->new_size = new_size ? align_end(out->start, new_size, g.grain, false) : out->max_size;
	if (out->new_size < out->old_size) {
		if (new_size && new_size >= out->old_size)
			out->new_size = out->old_size; /* within one grain of now */
		else
			return ip_bad(e, -EINVAL,
				      "partition %u of %s is %s, --to %s would not grow it: use 'inplace part shrink' to make it smaller",
				      n, disk, ip_format_size(out->old_size, b1, sizeof(b1)),
				      ip_format_size(new_size, b2, sizeof(b2)));
	}
	if (out->new_size > out->max_size)
		return ip_bad(e, -ENOSPC,
			      "partition %u of %s can grow to %s at most (the free space after it): choose --to %lluMiB or less, or --max",
			      n, disk, ip_format_size(out->max_size, b1, sizeof(b1)),
			      (unsigned long long)(out->max_size >> 20));
	/* Nothing to do when the partition keeps its size and the
	 * filesystem already fills it (an interrupted grow has the table
	 * done and the filesystem not: that one is finished here). */
	out->nothing = out->new_size == out->old_size && fi->size &&
		       out->old_size - fi->size <= fi->block_size;
	return 0;
}

int partctl_grow_plan(const char *disk, unsigned n, uint64_t new_size,
		      struct partctl_resize_plan *out, ip_error *e)
{
	struct partctl_fsinfo fi;

	return grow_plan(disk, n, new_size, out, &fi, e);
}

/* ---- the shrink journal ----------------------------------------------------- */

/* One record: what the shrink is and how far it got. */
struct shrink_rec {
	char disk[PATH_MAX];
	unsigned n;
	uint64_t start, old_size, new_size, block_size;
	char fs[16];
	char phase[24];
	char undo[PATH_MAX];
	char meta[PATH_MAX];   /* the metadata undo of an ext fs of 1 KiB blocks */
	char dev[64];          /* the device the resizer runs on */
};

struct shrink_state {
	char jpath[PATH_MAX];
	char undo[PATH_MAX];
	char meta[PATH_MAX];
	ip_journal *j;
};

static const char *state_dir(void)
{
	const char *d = getenv("INPLACE_STATE_DIR");

	return d && *d ? d : STATE_DIR_DEFAULT;
}

/* Files are keyed by the disk's canonical path and size, so that another
 * disk that later takes the same name is not mistaken for this one. */
int partctl_state_file(const char *disk, const char *kind, const char *ext, char *out, size_t n,
		       ip_error *e)
{
	char real[PATH_MAX], key[PATH_MAX];
	ip_disk *d = NULL;
	uint64_t size;
	size_t k = 0;
	int r;

	if (!realpath(disk, real))
		return ip_bad(e, -errno, "cannot find %s: %s", disk, strerror(errno));
	r = ip_disk_open(real, IP_DISK_RDONLY, &d, e);
	if (r < 0)
		return r;
	size = ip_disk_size(d);
	ip_disk_free(d);
	for (const char *c = real; *c && k < sizeof(key) - 1; c++)
		key[k++] = isalnum((unsigned char)*c) || *c == '.' || *c == '-' ? *c : '_';
	key[k] = '\0';
	if ((size_t)snprintf(out, n, "%s/%s%s-%llu.%s", state_dir(), kind, key, (unsigned long long)size, ext) >= n)
		return ip_bad(e, -ENAMETOOLONG, "the state file name for %s is too long", disk);
	return 0;
}

int partctl_state_mkdir(ip_error *e)
{
	return ip_mkdir_p(state_dir(), 0700, e);
}

static int state_open(const char *disk, struct shrink_state *s, bool create, ip_error *e)
{
	int r;

	memset(s, 0, sizeof(*s));
	if ((r = partctl_state_file(disk, "shrink", "journal", s->jpath, sizeof(s->jpath), e)) < 0 ||
	    (r = partctl_state_file(disk, "shrink", "e2undo", s->undo, sizeof(s->undo), e)) < 0 ||
	    (r = partctl_state_file(disk, "shrink", "metaundo", s->meta, sizeof(s->meta), e)) < 0)
		return r;
	if (!create && access(s->jpath, F_OK) != 0)
		return 0;
	r = partctl_state_mkdir(e);
	if (r < 0)
		return r;
	return ip_journal_open_file(s->jpath, &s->j, e);
}

static void state_close(struct shrink_state *s)
{
	ip_journal_free(s->j);
	s->j = NULL;
}

static int rec_write(struct shrink_state *s, struct shrink_rec *rec, const char *phase,
		     ip_error *e)
{
	char buf[IP_JOURNAL_PAYLOAD_MAX];
	int len;

	snprintf(rec->phase, sizeof(rec->phase), "%s", phase);
	len = snprintf(buf, sizeof(buf),
		       "op=shrink\ndisk=%s\nn=%u\nstart=%llu\nold=%llu\nnew=%llu\nbs=%llu\nfs=%s\nphase=%s\nundo=%s\nmeta=%s\ndev=%s\n",
		       rec->disk, rec->n, (unsigned long long)rec->start,
		       (unsigned long long)rec->old_size, (unsigned long long)rec->new_size,
		       (unsigned long long)rec->block_size, rec->fs, rec->phase, rec->undo, rec->meta, rec->dev);
	if (len < 0 || (size_t)len >= sizeof(buf))
		return ip_fail(e, -ENAMETOOLONG, "the shrink record for %s is too long", rec->disk);
	return ip_journal_write(s->j, buf, (size_t)len, e);
}

static int rec_read(struct shrink_state *s, struct shrink_rec *rec, ip_error *e)
{
	char buf[IP_JOURNAL_PAYLOAD_MAX + 1];
	size_t len = sizeof(buf) - 1;
	char *line, *save = NULL;
	int r;

	memset(rec, 0, sizeof(*rec));
	r = ip_journal_read(s->j, buf, &len, e);
	if (r < 0)
		return r;
	buf[len] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *v = strchr(line, '=');
		unsigned long long x;

		if (!v)
			continue;
		*v++ = '\0';
		x = strtoull(v, NULL, 10);
		if (!strcmp(line, "op") && strcmp(v, "shrink"))
			return ip_fail(e, -EINVAL, "%s holds a '%s' record, not a shrink: remove it if no operation is pending",
				       s->jpath, v);
		else if (!strcmp(line, "disk"))
			snprintf(rec->disk, sizeof(rec->disk), "%s", v);
		else if (!strcmp(line, "n"))
			rec->n = (unsigned)x;
		else if (!strcmp(line, "start"))
			rec->start = x;
		else if (!strcmp(line, "old"))
			rec->old_size = x;
		else if (!strcmp(line, "new"))
			rec->new_size = x;
		else if (!strcmp(line, "bs"))
			rec->block_size = x;
		else if (!strcmp(line, "fs"))
			snprintf(rec->fs, sizeof(rec->fs), "%s", v);
		else if (!strcmp(line, "phase"))
			snprintf(rec->phase, sizeof(rec->phase), "%s", v);
		else if (!strcmp(line, "undo"))
			snprintf(rec->undo, sizeof(rec->undo), "%s", v);
		else if (!strcmp(line, "meta"))
			snprintf(rec->meta, sizeof(rec->meta), "%s", v);
		else if (!strcmp(line, "dev"))
			snprintf(rec->dev, sizeof(rec->dev), "%s", v);
	}
	if (!rec->n || !rec->new_size || !rec->old_size || !*rec->phase)
		return ip_fail(e, -EINVAL, "the shrink record %s is incomplete: remove it if no shrink is pending",
			       s->jpath);
	return 0;
}

/* The operation is over: forget it, durably. */
static int rec_done(struct shrink_state *s, const struct shrink_rec *rec, ip_error *e)
{
	int r;

	if (rec->undo[0])
		unlink(rec->undo);
	if (rec->meta[0])
		unlink(rec->meta);
	r = ip_journal_clear(s->j, e);
	if (r < 0)
		return r;
	state_close(s);
	unlink(s->jpath);
	return ip_fsync_parent(s->jpath, NULL) < 0 ? 0 : 0;
}

/* ---- shrink ----------------------------------------------------------------- */

static int table_resize(const char *disk, unsigned n, uint64_t start, uint64_t size, ip_error *e)
{
	partctl_table *t = NULL;
	int r = partctl_table_open(disk, true, &t, e);

	if (r < 0)
		return r;
	r = partctl_table_set_range(t, n, start, size, e);
	if (r == 0)
		r = partctl_table_write(t, e);
	partctl_table_free(t);
	return r;
}

/* The filesystem has its new size: the table follows, then cleanup. */
static int shrink_finish(struct shrink_state *s, struct shrink_rec *rec, ip_error *e)
{
	int r = table_resize(rec->disk, rec->n, rec->start, rec->new_size, e);

	if (r < 0) {
		ip_error_prefix(e, "the filesystem of partition %u is shrunk but the table is not (run 'inplace part resume %s' once fixed)",
				rec->n, rec->disk);
		return r;
	}
	r = rec_write(s, rec, "table-written", e);
	if (r < 0)
		return r;
	return rec_done(s, rec, e);
}

/* Did resize2fs get as far as writing its undo header?  undo_io writes and
 * flushes the header (with its magic) before the first block it lets reach
 * the filesystem, so an undo file without one means nothing was written. */
static bool undo_has_header(const char *undo)
{
	_cleanup_close_ int fd = open(undo, O_RDONLY | O_CLOEXEC);
	char magic[8];

	return fd >= 0 && pread(fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
	       memcmp(magic, "E2UNDO02", sizeof(magic)) == 0;
}

static int e2undo_run(const char *undo, const char *dev, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	const char *argv[] = { "e2undo", undo, dev, NULL };
	/* -f: an interrupted resize2fs leaves an undo file that is not marked
	 * finished and a superblock newer than the one it recorded. */
	const char *argv_f[] = { "e2undo", "-f", undo, dev, NULL };
	int code, r;

	r = run_code(argv, &code, NULL, e);
	if (r < 0)
		return r;
	if (code == 0)
		return 0;
	r = run_code(argv_f, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		char line[256];

		last_line(err, line, sizeof(line));
		return ip_fail(e, -EIO, "e2undo could not roll back the interrupted resize of %s (%s): keep %s and run e2fsck -f",
			       dev, line, undo);
	}
	return 0;
}

/* Write the saved metadata back onto dev (the filesystem as it was before
 * resize2fs began), then let e2fsck clear the "being resized" marks. */
static int meta_roll_back(const struct shrink_rec *rec, const char *dev, ip_error *e)
{
	ip_disk *d = NULL;
	int r = ip_disk_open(dev, IP_DISK_RDWR, &d, e);

	if (r == 0)
		r = partctl_ext_meta_restore(d, 0, rec->meta, e);
	ip_disk_free(d);
	if (r < 0) {
		ip_error_prefix(e, "cannot roll back the interrupted resize of partition %u of %s (keep %s)",
				rec->n, rec->disk, rec->meta);
		return r;
	}
	return ext_fsck(dev, rec->disk, rec->n, e);
}

/* The minimum of the (checked) ext filesystem on dev: our count, or
 * resize2fs -P's estimate for a layout the count does not describe. */
static int ext_min_checked(const char *dev, uint64_t bs, uint64_t *min, ip_error *e)
{
	ip_disk *d = NULL;
	int r = ip_disk_open(dev, IP_DISK_RDONLY, &d, e);

	if (r == 0)
		r = partctl_ext_min(d, 0, min, e);
	ip_disk_free(d);
	if (r == -EOPNOTSUPP)
		return ext_min_dev(dev, bs, min, e);
	return r;
}

/* resize2fs failed and the filesystem is back as it was: say so, with the
 * smallest size known to work (resize2fs -P's, which it always reaches). */
static int shrink_failed(const struct shrink_rec *rec, const char *dev, const char *why, ip_error *e)
{
	char b[IP_SIZE_BUFSZ];
	uint64_t est = 0;

	if (ext_min_dev(dev, rec->block_size, &est, NULL) < 0 || est >= rec->old_size)
		return ip_fail(e, -ENOSPC,
			       "resize2fs could not shrink partition %u of %s to %s (%s); the filesystem was rolled back unchanged and cannot be shrunk now: free some space in it first",
			       rec->n, rec->disk, ip_format_size(rec->new_size, b, sizeof(b)), why);
	return ip_fail(e, -ENOSPC,
		       "resize2fs could not shrink partition %u of %s to %s (%s); the filesystem was rolled back unchanged: choose --to %lluMiB or larger (resize2fs -P's minimum)",
		       rec->n, rec->disk, ip_format_size(rec->new_size, b, sizeof(b)), why,
		       (unsigned long long)(round_up(est, 1 << 20) >> 20) + 1);
}

static int shrink_ext(struct shrink_state *s, struct shrink_rec *rec, const char *dev, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	char blocks[32], b[IP_SIZE_BUFSZ];
	uint64_t min = 0, bs = rec->block_size;
	int code, r;

	r = ext_fsck(dev, rec->disk, rec->n, e);
	if (r < 0)
		return r;
	/* After the check, the count is of a consistent filesystem. */
	r = ext_min_checked(dev, bs, &min, e);
	if (r < 0)
		return r;
	if (round_down(rec->new_size, bs) < min && !test_no_min())
		return ip_bad(e, -ENOSPC,
			      "cannot shrink partition %u of %s below %s (the filesystem's minimum): choose --to %lluMiB or larger",
			      rec->n, rec->disk, ip_format_size(min, b, sizeof(b)),
			      (unsigned long long)(round_up(min, 1 << 20) >> 20) + 1);
	/* resize2fs 1.47.0 with -z corrupts filesystems of 1 KiB blocks
	 * ("Resize inode is corrupt"); those (mke2fs makes them only below
	 * 512 MiB) get our own undo of their metadata instead, complete and
	 * durable before resize2fs starts. */
	rec->undo[0] = rec->meta[0] = '\0';
	if (bs >= 4096)
		snprintf(rec->undo, sizeof(rec->undo), "%s", s->undo);
	unlink(s->undo);
	unlink(s->meta);
	r = rec_write(s, rec, "checked", e);
	if (r < 0)
		return r;
	if (!rec->undo[0]) {
		ip_disk *d = NULL;
		uint64_t saved;

		r = ip_disk_open(dev, IP_DISK_RDONLY, &d, e);
		if (r == 0)
			r = partctl_ext_meta_save(d, 0, s->meta, &saved, e);
		ip_disk_free(d);
		if (r < 0)
			return r;
		snprintf(rec->meta, sizeof(rec->meta), "%s", s->meta);
	}
	r = rec_write(s, rec, "fs-resizing", e);
	if (r < 0)
		return r;
	snprintf(blocks, sizeof(blocks), "%llu", (unsigned long long)(rec->new_size / bs));
	/* -f: below resize2fs -P's estimate, which is far above what the
	 * filesystem needs; our own count above stands guard, and a failure
	 * is rolled back below. */
	const char *argv_undo[] = { "resize2fs", "-f", "-z", rec->undo, dev, blocks, NULL };
	const char *argv_plain[] = { "resize2fs", "-f", dev, blocks, NULL };
	r = run_code(rec->undo[0] ? argv_undo : argv_plain, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		char line[256];
		ip_error e2 = { 0 };

		tool_line(err, "resize2fs: ", line, sizeof(line));
		/* Put back whatever it changed, then forget the shrink. */
		if (rec->meta[0])
			r = meta_roll_back(rec, dev, &e2);
		else if (rec->undo[0] && undo_has_header(rec->undo))
			r = e2undo_run(rec->undo, dev, &e2) < 0 ? -EIO : ext_fsck(dev, rec->disk, rec->n, &e2);
		else
			r = ext_fsck(dev, rec->disk, rec->n, &e2);
		if (r < 0)
			return ip_fail(e, -EIO, "resize2fs failed on partition %u of %s (%s) and %s",
				       rec->n, rec->disk, line, e2.msg);
		r = flush_disk(rec->disk, rec->start, rec->old_size, &e2);
		rec_done(s, rec, NULL);
		if (r < 0)
			return ip_fail(e, r, "resize2fs failed on partition %u of %s (%s) and %s",
				       rec->n, rec->disk, line, e2.msg);
		return shrink_failed(rec, dev, line, e);
	}
	return 0;
}

static int shrink_ntfs(struct shrink_state *s, struct shrink_rec *rec, const char *dev, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	char size[32], line[256];
	int code, r;

	r = ntfs_check(dev, rec->disk, rec->n, e);
	if (r < 0)
		return r;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)rec->new_size);
	/* ntfsresize's own dry run: its checks, nothing written. */
	const char *dry[] = { "ntfsresize", "--no-action", "--force", "--no-progress-bar", "--size", size, dev, NULL };
	r = run_code(dry, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		last_line(err, line, sizeof(line));
		return ip_bad(e, -EINVAL, "ntfsresize refuses to shrink partition %u of %s to %s bytes (%s): choose a larger --to or run chkdsk /f in Windows",
			      rec->n, rec->disk, size, line);
	}
	free(TAKE_PTR(err));
	rec->undo[0] = '\0';
	r = rec_write(s, rec, "checked", e);
	if (r < 0)
		return r;
	r = rec_write(s, rec, "fs-resizing", e);
	if (r < 0)
		return r;
	const char *argv[] = { "ntfsresize", "--force", "--no-progress-bar", "--size", size, dev, NULL };
	r = run_code(argv, &code, &err, e);
	if (r < 0)
		return r;
	if (code != 0) {
		last_line(err, line, sizeof(line));
		rec_done(s, rec, NULL);
		return ip_fail(e, -EIO, "ntfsresize failed on partition %u of %s (%s): run chkdsk /f on it in Windows before trying again",
			       rec->n, rec->disk, line);
	}
	return 0;
}

/* Resize the filesystem of an open record, from "checked" on. */
static int shrink_fs(struct shrink_state *s, struct shrink_rec *rec, ip_error *e)
{
	struct tooldev td;
	int r;

	/* Recorded before the loop device exists, so that resume can find
	 * and detach one a kill leaves behind. */
	r = rec_write(s, rec, "checking", e);
	if (r < 0)
		return r;
	r = tooldev_get(rec->disk, rec->n, rec->start, rec->old_size, &td, e);
	if (r < 0)
		return r;
	snprintf(rec->dev, sizeof(rec->dev), "%s", td.path);
	r = is_ext(rec->fs) ? shrink_ext(s, rec, td.path, e) : shrink_ntfs(s, rec, td.path, e);
	tooldev_put(&td);
	if (r < 0)
		return r;
	r = flush_disk(rec->disk, rec->start, rec->old_size, e);
	if (r < 0)
		return r;
	return rec_write(s, rec, "fs-resized", e);
}

int partctl_part_shrink(const char *disk, unsigned n, uint64_t new_size, const struct partctl_opts *o,
			struct partctl_resize_plan *res, ip_error *e)
{
	struct partctl_resize_plan pp, *rp = res ? res : &pp;
	struct partctl_fsinfo fi;
	struct shrink_state s;
	struct shrink_rec rec = { 0 };
	char real[PATH_MAX];
	int r;

	r = shrink_plan(disk, n, new_size, rp, &fi, e);
	if (r < 0 || rp->nothing || (o && o->dry_run))
		return r;
	r = ip_check_range_unmounted(disk, rp->start, rp->old_size, e);
	if (r < 0)
		return r;
	r = state_open(disk, &s, true, e);
	if (r < 0)
		return r;
	r = rec_read(&s, &rec, NULL);
	if (r == 0) {
		state_close(&s);
		return ip_bad(e, -EBUSY, "a shrink of partition %u of %s was interrupted (%s): run 'inplace part resume %s' first",
			      rec.n, disk, rec.phase, disk);
	}
	if (!realpath(disk, real))
		snprintf(real, sizeof(real), "%s", disk);
	memset(&rec, 0, sizeof(rec));
	snprintf(rec.disk, sizeof(rec.disk), "%s", real);
	snprintf(rec.fs, sizeof(rec.fs), "%s", fi.type);
	rec.n = n;
	rec.start = rp->start;
	rec.old_size = rp->old_size;
	rec.new_size = rp->new_size;
	rec.block_size = fi.block_size;
	report(o, "shrinking", 0, 2);
	r = shrink_fs(&s, &rec, e);
	if (r == 0) {
		report(o, "table", 1, 2);
		r = shrink_finish(&s, &rec, e);
		if (r == 0)
			report(o, "done", 2, 2);
	} else if (!strcmp(rec.phase, "") || !strcmp(rec.phase, "checking") ||
		 !strcmp(rec.phase, "checked"))
		rec_done(&s, &rec, NULL); /* nothing changed: nothing to resume */
	state_close(&s);
	return r;
}

int partctl_shrink(const char *disk, unsigned n, uint64_t new_size, ip_error *e)
{
	return partctl_part_shrink(disk, n, new_size, NULL, NULL, e);
}

/* ---- grow ------------------------------------------------------------------- */

/* Grow the filesystem of partition n, [start, start+size) of disk, to fill
 * it; check: run the one check policy first (a caller that has just
 * checked it on the old range says false). */
static int fs_grow(const char *disk, unsigned n, uint64_t start, uint64_t size, const char *fstype,
		   bool check, ip_error *e)
{
	_cleanup_free_ char *err = NULL;
	struct tooldev td;
	char line[256];
	int code = 0, r;

	r = tooldev_get(disk, n, start, size, &td, e);
	if (r < 0)
		return r;
	if (check)
		r = is_ext(fstype) ? ext_fsck(td.path, disk, n, e) : ntfs_check(td.path, disk, n, e);
	if (r == 0 && is_ext(fstype)) {
		const char *argv[] = { "resize2fs", td.path, NULL };

		r = run_code(argv, &code, &err, e);
	} else if (r == 0) {
		const char *argv[] = { "ntfsresize", "--force", "--no-progress-bar", td.path, NULL };

		r = run_code(argv, &code, &err, e);
	}
	tooldev_put(&td);
	if (r < 0)
		return r;
	if (code != 0) {
		last_line(err, line, sizeof(line));
		return ip_fail(e, -EIO, "the filesystem of partition %u of %s was not grown (%s): run 'inplace part grow %s %u' again",
			       n, disk, line, disk, n);
	}
	return flush_disk(disk, start, size, e);
}

int partctl_part_grow(const char *disk, unsigned n, uint64_t new_size, const struct partctl_opts *o,
		      struct partctl_resize_plan *res, ip_error *e)
{
	struct partctl_resize_plan p, *rp = res ? res : &p;
	struct partctl_fsinfo fi;
	struct tooldev td;
	int r;

	r = grow_plan(disk, n, new_size, rp, &fi, e);
	if (r < 0 || rp->nothing || (o && o->dry_run))
		return r;
	r = ip_check_range_unmounted(disk, rp->start, rp->new_size, e);
	if (r < 0)
		return r;
	/* Check before anything changes: a damaged filesystem is refused
	 * with the table untouched. */
	report(o, "checking", 0, 3);
	r = tooldev_get(disk, n, rp->start, rp->old_size, &td, e);
	if (r < 0)
		return r;
	r = is_ext(fi.type) ? ext_fsck(td.path, disk, n, e) : ntfs_check(td.path, disk, n, e);
	tooldev_put(&td);
	if (r < 0)
		return r;
	if (rp->new_size != rp->old_size) {
		report(o, "table", 1, 3);
		r = table_resize(disk, n, rp->start, rp->new_size, e);
		if (r < 0)
			return r;
	}
	report(o, "growing", 2, 3);
	r = fs_grow(disk, n, rp->start, rp->new_size, fi.type, false, e);
	if (r == 0)
		report(o, "done", 3, 3);
	return r;
}

int partctl_grow(const char *disk, unsigned n, uint64_t new_size, ip_error *e)
{
	return partctl_part_grow(disk, n, new_size, NULL, NULL, e);
}

int partctl_fs_grow(const char *disk, unsigned n, const struct partctl_opts *o,
		    struct partctl_resize_plan *res, ip_error *e)
{
	struct partctl_resize_plan p, *rp = res ? res : &p;
	struct partctl_fsinfo fi;
	struct part_geom g;
	int r;

	memset(rp, 0, sizeof(*rp));
	r = load_resizable(disk, n, "grown", rp, &g, &fi, e);
	if (r < 0)
		return r;
	/* The partition keeps its size; old_size and new_size are the
	 * filesystem's. */
	rp->max_size = rp->old_size;
	rp->new_size = rp->old_size;
	rp->old_size = fi.size;
	rp->fs_min = fi.min_size;
	rp->nothing = fi.size && rp->new_size - fi.size <= fi.block_size;
	if (rp->nothing || (o && o->dry_run))
		return 0;
	r = ip_check_range_unmounted(disk, rp->start, rp->new_size, e);
	if (r < 0)
		return r;
	report(o, "growing", 0, 1);
	r = fs_grow(disk, n, rp->start, rp->new_size, fi.type, true, e);
	if (r == 0)
		report(o, "done", 1, 1);
	return r;
}

/* ---- resume ----------------------------------------------------------------- */

/* Read /proc/PID/NAME into buf (NUL-terminated); its length, or -1. */
static ssize_t read_proc(const char *pid, const char *name, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%s/%s", pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return n;
}

/* A resizer (or checker) of a killed shrink still at work on dev: its pid,
 * or 0.  kill -9 of inplace alone leaves its child running, and even a
 * killed process takes a moment to exit while its I/O drains. */
static pid_t tool_running(const char *dev, const char *undo)
{
	static const char *const tools[] = { "resize2fs", "ntfsresize", "e2fsck", "e2undo", "ntfsfix" };
	_cleanup_(closedirp) DIR *dir = opendir("/proc");
	struct dirent *de;

	while (dir && (de = readdir(dir))) {
		char buf[4096];
		bool known = false;
		ssize_t n;

		if (!isdigit((unsigned char)de->d_name[0]) || (pid_t)atoi(de->d_name) == getpid())
			continue;
		if (read_proc(de->d_name, "comm", buf, sizeof(buf)) < 0)
			continue;
		buf[strcspn(buf, "\n")] = '\0';
		for (size_t i = 0; i < IP_ARRAY_SIZE(tools); i++)
			known |= !strcmp(buf, tools[i]);
		if (!known || (n = read_proc(de->d_name, "cmdline", buf, sizeof(buf))) < 0)
			continue;
		for (char *a = buf; a < buf + n; a += strlen(a) + 1)
			if ((*dev && !strcmp(a, dev)) || (*undo && !strcmp(a, undo)))
				return (pid_t)atoi(de->d_name);
	}
	return 0;
}

/* Loop devices a killed shrink left attached over [start, …) of disk. */
static void detach_stale_loops(const char *disk, uint64_t start)
{
	_cleanup_(closedirp) DIR *dir = opendir("/sys/block");
	struct dirent *de;

	while (dir && (de = readdir(dir))) {
		char path[PATH_MAX], back[PATH_MAX], dev[300];
		unsigned long long off = 0;
		FILE *f;
		bool match = false;

		if (strncmp(de->d_name, "loop", 4))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(back, sizeof(back), f)) {
			back[strcspn(back, "\n")] = '\0';
			match = !strcmp(back, disk);
		}
		fclose(f);
		if (!match)
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/loop/offset", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		match = fscanf(f, "%llu", &off) == 1 && off == start;
		fclose(f);
		if (!match)
			continue;
		snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
		ip_loop_detach(dev, NULL);
	}
}

int partctl_resize_resume(const char *disk, bool *did, ip_error *e)
{
	struct shrink_state s;
	struct shrink_rec rec;
	struct tooldev td;
	pid_t pid;
	int r;

	*did = false;
	r = state_open(disk, &s, false, e);
	if (r < 0 || !s.j)
		return r;
	r = rec_read(&s, &rec, e);
	if (r == -ENOENT) {
		state_close(&s);
		unlink(s.jpath);
		return 0;
	}
	if (r < 0)
		goto out;
	*did = true;
	for (int i = 0; i < 100 && (pid = tool_running(rec.dev, rec.undo)) > 0; i++)
		usleep(100 * 1000);
	if (pid > 0) {
		r = ip_fail(e, -EBUSY,
			    "a resizer from the interrupted shrink of partition %u of %s is still running (pid %d): let it finish, then run 'inplace part resume %s' again",
			    rec.n, disk, (int)pid, disk);
		goto out;
	}
	detach_stale_loops(rec.disk, rec.start);
	if (!strcmp(rec.phase, "checking") || !strcmp(rec.phase, "checked")) {
		/* Only the check ran: start over.  An e2fsck killed half way
		 * leaves the filesystem marked as not clean, and resize2fs -P
		 * (the minimum the new attempt needs) refuses such a
		 * filesystem, so let e2fsck finish its repair first. */
		if (is_ext(rec.fs)) {
			r = tooldev_get(rec.disk, rec.n, rec.start, rec.old_size, &td, e);
			if (r < 0)
				goto out;
			r = ext_fsck(td.path, rec.disk, rec.n, e);
			tooldev_put(&td);
			if (r < 0)
				goto out;
		}
		rec_done(&s, &rec, NULL);
		state_close(&s);
		return partctl_shrink(rec.disk, rec.n, rec.new_size, e);
	}
	if (!strcmp(rec.phase, "fs-resizing") && (rec.meta[0] || rec.undo[0])) {
		/* Put the filesystem back as it was (our metadata undo, or
		 * resize2fs's own through e2undo), then shrink again. */
		r = tooldev_get(rec.disk, rec.n, rec.start, rec.old_size, &td, e);
		if (r < 0)
			goto out;
		if (rec.meta[0]) {
			r = meta_roll_back(&rec, td.path, e);
		} else {
			if (undo_has_header(rec.undo))
				r = e2undo_run(rec.undo, td.path, e);
			if (r == 0)
				r = ext_fsck(td.path, rec.disk, rec.n, e);
		}
		tooldev_put(&td);
		if (r == 0)
			r = flush_disk(rec.disk, rec.start, rec.old_size, e);
		if (r < 0)
			goto out;
		r = rec_done(&s, &rec, e);
		if (r < 0)
			goto out;
		state_close(&s);
		return partctl_shrink(rec.disk, rec.n, rec.new_size, e);
	}
	if (!strcmp(rec.phase, "fs-resizing")) {
		/* No undo (NTFS, and ext shrinks recorded before the metadata
		 * undo existed).  If the filesystem is
		 * whole and already fits, the resizer finished: go on with the
		 * table; if it is whole and as large as before, it had not
		 * begun: start over.  Anything else needs a repair tool. */
		ip_disk *d = NULL;
		struct partctl_fsinfo fi = { 0 };
		const char *fix = is_ext(rec.fs) ? "e2fsck -fy on it" : "chkdsk /f on it in Windows";

		r = ip_disk_open(rec.disk, IP_DISK_RDONLY, &d, e);
		if (r == 0)
			r = is_ext(rec.fs) ? partctl_ext_info(d, rec.start, rec.old_size, &fi, e)
					   : partctl_ntfs_info(d, rec.start, rec.old_size, &fi, e);
		ip_disk_free(d);
		/* Check it on a device of the size it now has: ntfsfix wants
		 * the backup boot sector at the end of the device. */
		if (r == 0)
			r = tooldev_get(rec.disk, rec.n, rec.start,
					fi.size && fi.size <= rec.new_size ? rec.new_size : rec.old_size,
					&td, e);
		if (r == 0 && is_ext(rec.fs)) {
			_cleanup_free_ char *err = NULL;
			const char *argv[] = { "e2fsck", "-f", "-n", td.path, NULL };
			int code;

			r = run_code(argv, &code, &err, e);
			if (r == 0 && code != 0)
				r = ip_fail(e, -EUCLEAN, "e2fsck finds it damaged");
			/* Whole, but resize2fs marks the filesystem "with errors"
			 * while it works, and resize2fs -P, which the next
			 * attempt needs, refuses it until e2fsck has run. */
			if (r == 0)
				r = ext_fsck(td.path, rec.disk, rec.n, e);
			tooldev_put(&td);
		} else if (r == 0) {
			r = ntfs_check(td.path, rec.disk, rec.n, e);
			tooldev_put(&td);
		}
		if (r < 0) {
			r = ip_fail(e, -EUCLEAN,
				    "%s was interrupted on partition %u of %s and left it inconsistent (this resizer has no undo): run %s, then 'inplace part resume %s'",
				    is_ext(rec.fs) ? "resize2fs" : "ntfsresize", rec.n, disk, fix, disk);
			goto out;
		}
		if (fi.size > rec.new_size) {
			rec_done(&s, &rec, NULL);
			state_close(&s);
			return partctl_shrink(rec.disk, rec.n, rec.new_size, e);
		}
		r = rec_write(&s, &rec, "fs-resized", e);
		if (r < 0)
			goto out;
	}
	if (!strcmp(rec.phase, "fs-resized")) {
		r = shrink_finish(&s, &rec, e);
		goto out;
	}
	if (!strcmp(rec.phase, "table-written")) {
		r = rec_done(&s, &rec, e);
		goto out;
	}
	r = ip_fail(e, -EINVAL, "the shrink record %s has an unknown phase '%s': remove it if no shrink is pending",
		    s.jpath, rec.phase);
out:
	state_close(&s);
	return r;
}
