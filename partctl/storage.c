/* storage.c — make room for the storage partition and make it, as one
 * library call: finish an interrupted operation, reuse an earlier run's
 * partition, plan, check everything the plan needs, carry it out, format.
 * The CLI (part plan / part make-storage) and the pipeline both call this.
 *
 * The promise to callers: a refusal (status 2) comes before the first
 * write, so the disk is unchanged; a failure after a step was carried out
 * is status 1 and names the steps done and how to go on. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "partctl/partctl.h"

static const struct partctl_opts no_opts;

static void short_advice(const char *disk, struct partctl_storage_result *res, ip_error *e);

/* A storage partition an earlier run made (one that may have been cut
 * short after it): 1 when found and large enough, bad input when too
 * small, 0 when there is none. */
static int find_existing(const char *disk, const struct partctl_plan_disk *d, const char *label, uint64_t need,
			 struct partctl_storage_result *res, ip_error *e)
{
	char b[IP_SIZE_BUFSZ];

	for (size_t i = 0; i < d->n; i++) {
		const struct partctl_plan_part *pp = &d->parts[i];

		if (strcmp(pp->fs.label, label) || strcmp(pp->fs.type, "ext4"))
			continue;
		if (pp->part.size < need)
			return ip_bad(e, -EEXIST,
				      "partition %u of %s is already labelled %s but holds only %s: delete it or choose another --label",
				      pp->part.n, disk, label, ip_format_size(pp->part.size, b, sizeof(b)));
		res->existing = true;
		res->partition = pp->part.n;
		res->start = pp->part.start;
		res->size = pp->part.size;
		res->logical = pp->part.logical;
		return 1;
	}
	return 0;
}

/* A 1 MiB-aligned MiB of the new partition's range that no step reads or
 * writes before the partition is made: outside every partition as it is
 * now and every place a move copies to.  By then the moves' journals are
 * cleared, and formatting overwrites it. */
static bool free_region(const struct partctl_plan_disk *d, const struct partctl_plan *p, uint64_t *at)
{
	const uint64_t mib = 1024 * 1024;

	for (uint64_t off = (p->start + mib - 1) / mib * mib; off + mib <= p->start + p->size; off += mib) {
		bool hit = false;

		for (size_t i = 0; i < d->n && !hit; i++) {
			const struct partctl_part *q = &d->parts[i].part;
			/* a logical partition's boot record lies in the grain
			 * before it, where it is and where a move takes it; the
			 * container itself holds nothing of its own */
			uint64_t size = q->size, ebr = q->logical ? d->grain : 0;

			if (q->extended)
				continue;
			hit = off < q->start + q->size && q->start - ebr < off + mib;
			/* where moves copy it to, at its size by then */
			for (size_t k = 0; k < p->n && !hit; k++) {
				const struct partctl_plan_step *s = &p->steps[k];

				if (s->partition != q->n)
					continue;
				if (s->op == PARTCTL_OP_SHRINK)
					size = s->to;
				if (s->op == PARTCTL_OP_MOVE)
					hit = off < s->to + size && s->to - ebr < off + mib;
			}
		}
		if (!hit) {
			*at = off;
			return true;
		}
	}
	return false;
}

/* Every step's table change, one after the other on a table in memory
 * (never written): the table's own rules (a logical partition's boot
 * record, the MBR's limits) are met by the whole plan before its first
 * step. */
static int table_dry_run(const char *disk, const struct partctl_plan *p, ip_error *e)
{
	partctl_table *t = NULL;
	int r;

	r = partctl_table_open(disk, false, &t, e);
	for (size_t i = 0; r == 0 && i < p->n; i++) {
		const struct partctl_plan_step *s = &p->steps[i];
		const struct partctl_part *q = partctl_table_find(t, s->partition);
		struct partctl_part spec = { .start = s->start, .size = s->size, .logical = s->logical,
					     .extended = s->op == PARTCTL_OP_CREATE_EXTENDED };

		switch (s->op) {
		case PARTCTL_OP_SHRINK:
		case PARTCTL_OP_GROW_EXTENDED:
			r = q ? partctl_table_set_range(t, s->partition, q->start, s->to, e) : -ENOENT;
			break;
		case PARTCTL_OP_MOVE:
			r = q ? partctl_table_set_range(t, s->partition, s->to, q->size, e) : -ENOENT;
			break;
		case PARTCTL_OP_CREATE_EXTENDED:
		case PARTCTL_OP_CREATE:
			snprintf(spec.type, sizeof(spec.type), "linux");
			r = partctl_table_add(t, &spec, NULL, e);
			break;
		}
		if (r == -ENOENT && !q)
			r = ip_fail(e, r, "partition %u of %s vanished", s->partition, disk);
		if (r < 0)
			ip_error_prefix(e, "step %zu (%s partition %u)", i + 1, partctl_plan_op_name(s->op), s->partition);
	}
	partctl_table_free(t);
	return r;
}

/* Everything the plan's steps need that the planner could not see, read
 * only: where each move keeps its journal, and each shrink's own checks
 * (the filesystem's minimum, alignment).  For `part plan` a journal place
 * that cannot be used is a warning; for make-storage a refusal. */
static int preflight(const char *disk, const struct partctl_plan_disk *d, const struct partctl_plan *p,
		     const struct partctl_opts *o, struct partctl_storage_result *res, bool warn_only, ip_error *e)
{
	bool moves = false;
	int r;

	r = table_dry_run(disk, p, e);
	if (r < 0) {
		if (!warn_only)
			return r;
		snprintf(res->warning, sizeof(res->warning), "%s", e->msg);
		ip_error_clear(e);
	}
	for (size_t i = 0; i < p->n; i++) {
		const struct partctl_plan_step *s = &p->steps[i];
		struct partctl_resize_plan rp;

		if (s->op == PARTCTL_OP_MOVE)
			moves = true;
		if (s->op != PARTCTL_OP_SHRINK)
			continue;
		r = partctl_shrink_plan(disk, s->partition, s->to, &rp, e);
		if (r < 0) {
			ip_error_prefix(e, "step %zu (shrink partition %u)", i + 1, s->partition);
			if (!warn_only)
				return r;
			/* e.g. a mounted root, planned in the running OS */
			if (!res->warning[0])
				snprintf(res->warning, sizeof(res->warning), "%s", e->msg);
			ip_error_clear(e);
		}
	}
	if (!moves)
		return 0;
	r = partctl_move_journal_check(disk, o->journal, res->journal, sizeof(res->journal), e);
	if ((r == -EBUSY || r == -ENOSPC) && !o->journal && free_region(d, p, &res->journal_off)) {
		/* no room in the gap (a large boot loader): the free space the
		 * plan creates and no step touches */
		ip_error_clear(e);
		snprintf(res->journal, sizeof(res->journal), "%s bytes %llu-%llu (free space no step touches)", disk,
			 (unsigned long long)res->journal_off, (unsigned long long)(res->journal_off + 8191));
		return 0;
	}
	if (r == -EBUSY || r == -ENOSPC)
		ip_error_prefix(e, "the plan frees no region that no step touches for the move journal either");
	if (r < 0 && warn_only) {
		if (!res->warning[0])
			snprintf(res->warning, sizeof(res->warning), "%s", e->msg);
		ip_error_clear(e);
		return 0;
	}
	return r;
}

static int plan_on(const char *disk, const struct partctl_plan_disk *d, uint64_t need, const struct partctl_opts *o,
		   struct partctl_storage_result *res, bool warn_only, ip_error *e)
{
	int r;

	r = partctl_plan_compute(d, need, &res->plan, e);
	if (r == -ENOSPC)
		short_advice(disk, res, e);
	if (r < 0)
		return r;
	res->partition = res->plan.partition;
	res->start = res->plan.start;
	res->size = res->plan.size;
	res->logical = res->plan.logical;
	return preflight(disk, d, &res->plan, o, res, warn_only, e);
}

int partctl_plan_storage(const char *disk, uint64_t need, const struct partctl_opts *o,
			 struct partctl_storage_result *res, ip_error *e)
{
	struct partctl_plan_disk *d = NULL;
	int r;

	memset(res, 0, sizeof(*res));
	res->dry_run = true;
	if (!o)
		o = &no_opts;
	r = partctl_plan_describe(disk, &d, e);
	if (r == 0)
		r = plan_on(disk, d, need, o, res, true, e);
	partctl_plan_disk_free(d);
	return r;
}

/* What to tell after a step failed: which steps were done, and how to go
 * on.  Status 1: the disk was changed. */
static void failed_after(const char *disk, const struct partctl_plan *p, size_t done, ip_error *e)
{
	char steps[256] = "";
	size_t len = 0;

	for (size_t i = 0; i < done && len < sizeof(steps); i++) {
		snprintf(steps + len, sizeof(steps) - len, "%s%s partition %u", i ? ", " : "",
			 partctl_plan_op_name(p->steps[i].op), p->steps[i].partition);
		len = strlen(steps);
	}
	ip_error_prefix(e, "after %zu of %zu steps were done (%s)", done, p->n, steps);
	/* the fix goes last, after the step's own message */
	len = strlen(e->msg);
	snprintf(e->msg + len, sizeof(e->msg) - len,
		 "; 'inplace part resume %s' finishes an interrupted step, then 'inplace part make-storage %s' again carries out the rest",
		 disk, disk);
	e->status = IP_EXIT_FAILED;
}

int partctl_make_storage(const char *disk, uint64_t need, const char *label, const struct partctl_opts *o,
			 struct partctl_storage_result *res, ip_error *e)
{
	struct partctl_plan_disk *d = NULL;
	struct partctl_move_opts mo = { 0 };
	int r;

	memset(res, 0, sizeof(*res));
	if (!o)
		o = &no_opts;
	res->dry_run = o->dry_run;
	if (!label || !*label)
		return ip_bad(e, -EINVAL, "the storage partition needs a label: give --label");
	mo.journal = o->journal;
	if (!o->dry_run) {
		r = ip_check_unmounted(disk, e);
		/* a move or shrink cut short by a crash is finished first, so
		 * that the plan starts from a consistent disk */
		if (r == 0)
			r = partctl_resume_ex(disk, &mo, &res->resumed, NULL, e);
		if (r < 0)
			return r;
	}
	r = partctl_plan_describe(disk, &d, e);
	if (r < 0)
		return r;
	/* Idempotent: a storage partition made by an earlier run is the
	 * result, not a reason to make a second one. */
	r = find_existing(disk, d, label, need, res, e);
	if (r != 0) {
		partctl_plan_disk_free(d);
		return r < 0 ? r : 0;
	}
	r = plan_on(disk, d, need, o, res, false, e);
	partctl_plan_disk_free(d);
	if (r < 0 || o->dry_run)
		return r;
	mo.journal_off = res->journal_off;
	r = partctl_plan_execute(disk, &res->plan, "ext4", label, o, &mo, &res->done, &res->partition, e);
	if (r < 0 && res->done > 0)
		failed_after(disk, &res->plan, res->done, e);
	return r;
}

/* ---- system caches that may go ---------------------------------------------
 *
 * When the room is short on a disk whose system root is mounted read-write
 * in the running OS (the old OS, before the pipeline reboots), the caches a
 * distribution rebuilds by itself can go: the package managers' downloaded
 * packages, the systemd journal's archived files above a limit, /var/tmp and
 * core dumps.  Only regular files under those directories, never following
 * a symlink or crossing into another filesystem; never a user's file. */

#define CACHE_JOURNAL_KEEP (64ULL << 20) /* the journal keeps its newest 64 MiB */

struct cache_def {
	const char *what;      /* for people; entries with one name add up */
	const char *dir;       /* relative to the filesystem's root */
	const char *suffix;    /* only files ending so (NULL: every file) */
	bool journal;          /* archived journal files, oldest first, above the limit */
};

static const struct cache_def cache_defs[] = {
	{ "apt package cache", "var/cache/apt/archives", ".deb", false },
	{ "apt package cache", "var/cache/apt", ".bin", false },
	{ "dnf/yum package cache", "var/cache/dnf", NULL, false },
	{ "dnf/yum package cache", "var/cache/yum", NULL, false },
	{ "systemd journal above 64 MiB", "var/log/journal", ".journal", true },
	{ "/var/tmp", "var/tmp", NULL, false },
	{ "core dumps", "var/lib/systemd/coredump", NULL, false },
	{ "core dumps", "var/crash", NULL, false },
};

struct cache_file {
	char *path;            /* absolute, through the mount point */
	uint64_t bytes;        /* allocated */
	time_t mtime;
	bool archived;         /* journal: not the file journald writes now */
};

struct cache_list {
	struct cache_file *v;
	size_t n, cap;
};

static void cache_list_free(struct cache_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].path);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcmp(s + a - b, suffix);
}

/* Regular files under the directory dfd (path: its absolute name), on the
 * device dev, into l.  Unreadable corners are skipped: they are caches. */
static int cache_walk(int dfd, const char *path, dev_t dev, const struct cache_def *def, struct cache_list *l,
		      unsigned depth)
{
	DIR *dir = fdopendir(dfd);
	struct dirent *de;
	int r = 0;

	if (!dir) {
		close(dfd);
		return 0;
	}
	while (r == 0 && (de = readdir(dir))) {
		struct stat st;
		char *sub;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
			continue;
		if (asprintf(&sub, "%s/%s", path, de->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		if (S_ISDIR(st.st_mode) && depth < 16) {
			int sfd = openat(dirfd(dir), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sfd >= 0)
				r = cache_walk(sfd, sub, dev, def, l, depth + 1);
			free(sub);
			continue;
		}
		if (!S_ISREG(st.st_mode) || (def->suffix && !ends_with(de->d_name, def->suffix) &&
					     !(def->journal && ends_with(de->d_name, ".journal~")))) {
			free(sub);
			continue;
		}
		if (l->n == l->cap) {
			size_t cap = l->cap ? 2 * l->cap : 64;
			struct cache_file *nv = realloc(l->v, cap * sizeof(*nv));

			if (!nv) {
				free(sub);
				r = -ENOMEM;
				break;
			}
			l->v = nv;
			l->cap = cap;
		}
		l->v[l->n++] = (struct cache_file){ sub, (uint64_t)st.st_blocks * 512, st.st_mtime,
						    strchr(de->d_name, '@') || ends_with(de->d_name, ".journal~") };
	}
	closedir(dir);
	return r;
}

static int by_mtime(const void *a, const void *b)
{
	const struct cache_file *x = a, *y = b;

	return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* The files of one cache that may go.  The journal: archived files,
 * oldest first, while what stays is above the limit. */
static int cache_collect(const char *mnt, dev_t dev, const struct cache_def *def, struct cache_list *l)
{
	char *path;
	int fd, r;
	uint64_t total = 0;
	size_t k = 0;

	if (asprintf(&path, "%s/%s", strcmp(mnt, "/") ? mnt : "", def->dir) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	r = fd < 0 ? 0 : cache_walk(fd, path, dev, def, l, 0);
	free(path);
	if (r < 0 || !def->journal)
		return r;
	for (size_t i = 0; i < l->n; i++)
		total += l->v[i].bytes;
	qsort(l->v, l->n, sizeof(*l->v), by_mtime);
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i].archived && total > CACHE_JOURNAL_KEEP) {
			total -= l->v[i].bytes;
			l->v[k++] = l->v[i];
		} else {
			free(l->v[i].path);
		}
	}
	l->n = k;
	return 0;
}

/* Make the freed blocks visible to a reader of the device, so that
 * planning again sees them: syncfs commits the filesystem's journal, and a
 * freeze and thaw writes the journaled metadata home (where libext2fs and
 * resize2fs read it).  A filesystem that cannot freeze is left synced. */
static int fs_settle(const char *mnt, ip_error *e)
{
	int fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0 || syncfs(fd) < 0)
		r = ip_fail(e, -errno, "cannot flush %s: %s", mnt, strerror(errno));
	else if (ioctl(fd, FIFREEZE, 0) == 0 && ioctl(fd, FITHAW, 0) < 0)
		r = ip_fail(e, -errno, "cannot thaw %s after flushing it: %s: run 'fsfreeze -u %s'", mnt,
			    strerror(errno), mnt);
	if (fd >= 0)
		close(fd);
	return r;
}

/* Walk (and with del, delete) the caches of every system root of disk
 * mounted read-write here. */
static int caches_walk(const char *disk, bool del, struct partctl_caches *out, ip_error *e)
{
	partctl_table *t = NULL;
	int r;

	memset(out, 0, sizeof(*out));
	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	for (size_t i = 0; i < partctl_table_count(t) && r == 0; i++) {
		const struct partctl_part *p = partctl_table_at(t, i);
		char mnt[1024], probe[1100];
		struct stat st;
		bool rw = false;

		if (p->extended || ip_range_mount(disk, p->start, p->size, mnt, sizeof(mnt), &rw) != 1 || !rw)
			continue;
		/* a system root: caches there are the distribution's */
		snprintf(probe, sizeof(probe), "%s/etc/os-release", strcmp(mnt, "/") ? mnt : "");
		if (stat(mnt, &st) < 0 || access(probe, F_OK) < 0)
			continue;
		for (size_t d = 0; d < IP_ARRAY_SIZE(cache_defs) && r == 0; d++) {
			struct cache_list l = { 0 };
			struct partctl_cache *c = NULL;

			r = cache_collect(mnt, st.st_dev, &cache_defs[d], &l);
			for (size_t k = 0; k < out->n; k++)
				if (out->v[k].partition == p->n && !strcmp(out->v[k].what, cache_defs[d].what))
					c = &out->v[k];
			if (r == 0 && l.n && !c && out->n < IP_ARRAY_SIZE(out->v)) {
				c = &out->v[out->n++];
				c->partition = p->n;
				snprintf(c->what, sizeof(c->what), "%s", cache_defs[d].what);
				snprintf(c->mnt, sizeof(c->mnt), "%s", mnt);
			}
			for (size_t k = 0; r == 0 && c && k < l.n; k++) {
				if (del && unlink(l.v[k].path) < 0 && errno != ENOENT) {
					r = ip_fail(e, -errno, "cannot delete %s: %s", l.v[k].path, strerror(errno));
					break;
				}
				c->bytes += l.v[k].bytes;
				c->files++;
				out->total += l.v[k].bytes;
			}
			cache_list_free(&l);
			if (r == -ENOMEM)
				r = ip_fail(e, r, "out of memory");
		}
		if (r == 0 && del)
			r = fs_settle(mnt, e);
		if (r == 0 && del) {
			/* the filesystem wrote through the partition's device;
			 * what the disk's own device cached of it is stale */
			ip_disk *d = NULL;

			if (ip_disk_open(disk, IP_DISK_RDONLY, &d, NULL) == 0)
				ip_disk_drop_cache(d, p->start, p->size);
			ip_disk_free(d);
		}
	}
	partctl_table_free(t);
	out->cleaned = del && r == 0;
	return r;
}

int partctl_caches_find(const char *disk, struct partctl_caches *out, ip_error *e)
{
	return caches_walk(disk, false, out, e);
}

int partctl_caches_clean(const char *disk, const struct partctl_opts *o, struct partctl_caches *out, ip_error *e)
{
	return caches_walk(disk, !(o && o->dry_run), out, e);
}

/* Say in the refusal what the caches would free. */
static void short_advice(const char *disk, struct partctl_storage_result *res, ip_error *e)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ], list[400] = "";
	size_t len;

	if (partctl_caches_find(disk, &res->caches, NULL) < 0 || !res->caches.total)
		return;
	for (size_t i = 0; i < res->caches.n; i++) {
		len = strlen(list);
		snprintf(list + len, sizeof(list) - len, "%s%s %s", i ? ", " : "", res->caches.v[i].what,
			 ip_format_size(res->caches.v[i].bytes, b1, sizeof(b1)));
	}
	len = strlen(e->msg);
	snprintf(e->msg + len, sizeof(e->msg) - len,
		 "; system caches on partition %u (mounted on %s) hold %s (%s)%s: 'inplace part plan --clean-caches %s' deletes them and plans again",
		 res->caches.v[0].partition, res->caches.v[0].mnt, ip_format_size(res->caches.total, b2, sizeof(b2)),
		 list, res->plan.shortfall && res->caches.total < res->plan.shortfall ? ", not enough alone" : "",
		 disk);
}
