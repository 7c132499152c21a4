/* save.c — choose the users of a root, walk their homes, and write one pax
 * archive per user (users in parallel, zstd on every core), then the
 * manifest, accounts and machine state, and the COMPLETE marker last.
 * Nothing is ever written under the root: it may be mounted read-only. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "migrate/internal.h"

struct mig_user {
	const char *name;       /* points into the accounts */
	uid_t uid;
	gid_t gid;
	const char *home;       /* absolute in the root: "/home/alice" */
	const struct mig_user_rule *rule;
	bool system;            /* the [system] paths, archived as "@system" */
	const struct migrate_kept *kept; /* the home stays on its own filesystem */
	/* results */
	uint64_t files, bytes, allocated, archive_bytes;
	uint64_t data;          /* estimate: bytes the archive will hold (no holes) */
	uint64_t manifest_bytes;/* estimate: this user's share of manifest.json */
	uint64_t est_archive;   /* estimate: the archive's compressed size */
	struct mig_sampler sm;
	char archive_hash[MIG_HASH_HEX];
	json_object *entries;
	ip_error err;
	int r;
};

struct save_ctx {
	int rootfd, storefd;
	const char *root;
	const char *store;      /* its path: ip_outfile names the files by it */
	const migrate_spec *spec;
	const struct migrate_kept *kept;  /* directories whose homes stay */
	size_t nkept;
	struct mig_accounts acc;
	struct mig_user *users;
	size_t nusers;
	bool write;             /* save; false: estimate */
	bool sample;            /* estimate: measure data and compression */
	json_object *skipped;   /* users whose home is unsafe: [{name, home, reason}] */
	unsigned zthreads;
	atomic_int stop;
	/* libarchive's disk reader changes the process's working directory
	 * (fchdir) and reads a directory's default ACL, and what a symlink
	 * carries, by a path relative to it; the walkers of several users
	 * share one working directory, so every reader call that may change
	 * it or rely on it runs under this lock.  File data is read through
	 * openat() and needs no lock. */
	pthread_mutex_t cwd_lock;
};

/* The libarchive disk-reader calls that use the working directory. */
static int rd_open(struct save_ctx *c, struct archive *rd, const char *top)
{
	pthread_mutex_lock(&c->cwd_lock);
	int r = archive_read_disk_open(rd, top);
	pthread_mutex_unlock(&c->cwd_lock);
	return r;
}

static int rd_next(struct save_ctx *c, struct archive *rd, struct archive_entry *en)
{
	pthread_mutex_lock(&c->cwd_lock);
	int r = archive_read_next_header2(rd, en);
	pthread_mutex_unlock(&c->cwd_lock);
	return r;
}

static void rd_free(struct save_ctx *c, struct archive *rd)
{
	pthread_mutex_lock(&c->cwd_lock);
	archive_read_close(rd);
	archive_read_free(rd);
	pthread_mutex_unlock(&c->cwd_lock);
}

/* Why a passwd home cannot be saved, NULL when it can.  *unsafe: a home
 * that would lead the walker out of /home (a symlink, /etc): refused with
 * a warning, never silently; a missing home is simply not a profile. */
static const char *home_refusal(int rootfd, const char *home, bool root, bool *unsafe)
{
	int fd;

	*unsafe = false;
	if (!home || home[0] != '/' || !home[1] || !strcmp(home, "/nonexistent"))
		return "no home directory";
	if (!mig_home_plausible(home) && !(root && !strcmp(home, "/root"))) {
		*unsafe = true;
		return "the home lies outside /home and /var/home";
	}
	/* beneath the root, no symlink anywhere: /home/mallory -> ../etc is
	 * not mallory's home */
	fd = mig_openat_beneath(rootfd, home + 1, O_RDONLY | O_DIRECTORY, 0);
	if (fd == -ELOOP || fd == -EXDEV) {
		*unsafe = true;
		return "the home is a symlink or lies behind one";
	}
	if (fd < 0)
		return "no home directory";
	close(fd);
	return NULL;
}

static void note_skipped(struct save_ctx *c, const char *name, const char *home, const char *why)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "home", json_object_new_string(home));
	json_object_object_add(o, "reason", json_object_new_string(why));
	json_object_array_add(c->skipped, o);
}

/* The kept directory home lies in (home itself or below it), or NULL. */
static const struct migrate_kept *kept_for(const struct save_ctx *c, const char *home)
{
	for (size_t i = 0; home && i < c->nkept; i++) {
		size_t l = strlen(c->kept[i].dir);

		if (!strncmp(home, c->kept[i].dir, l) && (!home[l] || home[l] == '/'))
			return &c->kept[i];
	}
	return NULL;
}

static int select_users(struct save_ctx *c, ip_error *e)
{
	const struct mig_db *pw = &c->acc.db[MIG_PASSWD];
	const migrate_spec *s = c->spec;

	c->users = calloc(pw->n + 1, sizeof(*c->users));
	if (!c->users)
		return ip_fail(e, -ENOMEM, "out of memory");
	if (!s->all_users)
		for (size_t i = 0; i < s->users.n; i++)
			if (!mig_db_find(pw, s->users.v[i]))
				return ip_bad(e, -ENOENT, "unknown user '%s' in the spec: %s/etc/passwd has no such account",
					      s->users.v[i], c->root);
	for (size_t i = 0; i < pw->n; i++) {
		const struct mig_rec *r = &pw->r[i];
		long uid = mig_rec_id(r);
		bool want;

		if (!r->f)
			continue;
		bool unsafe;
		const char *why;
		/* a home on a filesystem that stays is not in the root (its
		 * partition is not mounted there): only the account travels */
		const struct migrate_kept *kept = mig_home_plausible(r->f[5]) ? kept_for(c, r->f[5]) : NULL;
		if (s->all_users) {
			want = (uid >= (long)s->min_uid && uid != 65534) || (uid == 0 && s->include_root);
			if (want && !kept && (why = home_refusal(c->rootfd, r->f[5], uid == 0, &unsafe))) {
				if (unsafe)
					note_skipped(c, r->f[0], r->f[5], why);
				want = false;
			}
		} else {
			want = false;
			for (size_t j = 0; j < s->users.n; j++)
				want |= !strcmp(s->users.v[j], r->f[0]);
			if (want && !kept && (why = home_refusal(c->rootfd, r->f[5], uid == 0, &unsafe)))
				return ip_bad(e, unsafe ? -EPERM : -ENOENT, "user '%s' cannot be saved: %s (%s in %s): remove it from the spec",
					      r->f[0], why, r->f[5], c->root);
		}
		if (!want)
			continue;
		for (size_t j = 0; j < c->nusers; j++)
			if (!strcmp(c->users[j].name, r->f[0]))
				want = false;
		if (!want)
			continue;
		struct mig_user *u = &c->users[c->nusers++];
		u->name = r->f[0];
		u->uid = (uid_t)uid;
		u->gid = (gid_t)strtoul(r->f[3], NULL, 10);
		u->home = r->f[5];
		u->kept = kept;
		u->rule = mig_spec_rule(s, u->name);
	}
	if (s->sys_include.n) {
		struct mig_user *u = &c->users[c->nusers++];
		u->name = MIG_SYSTEM_USER;
		u->home = "/";
		u->system = true;
	}
	return 0;
}

/* Could a [system] include glob match something below directory rel?
 * Compare rel with as many leading components of each pattern. */
static bool sys_may_contain(const struct mig_globs *g, const char *rel)
{
	size_t depth = 1;

	for (const char *c = rel; *c; c++)
		depth += *c == '/';
	for (size_t i = 0; i < g->n; i++) {
		char pre[4096];
		const char *p = g->v[i];
		size_t k = 0, n = 0;

		while (p[n] && k < depth) {
			if (p[n] == '/' && ++k == depth)
				break;
			n++;
		}
		if (k < depth - 1 || n >= sizeof(pre))
			continue;   /* the pattern is shallower than rel */
		memcpy(pre, p, n);
		pre[n] = '\0';
		if (fnmatch(pre, rel, FNM_PATHNAME) == 0)
			return true;
	}
	return false;
}

static const char *uname_cb(void *data, la_int64_t id)
{
	return mig_uid_name(data, (uid_t)id);
}

static const char *gname_cb(void *data, la_int64_t id)
{
	return mig_gid_name(data, (gid_t)id);
}

/* ---- archive output: write + hash of the compressed stream ---- */
struct out {
	int fd;
	struct mig_hash st;
	uint64_t bytes;
	int err;
};

static la_ssize_t out_write(struct archive *a, void *data, const void *buf, size_t len)
{
	struct out *o = data;
	int r = ip_write_all(o->fd, buf, len);

	if (r < 0) {
		o->err = r;
		archive_set_error(a, -r, "%s", strerror(-r));
		return -1;
	}
	mig_hash_update(&o->st, buf, len);
	o->bytes += len;
	return (la_ssize_t)len;
}

static const char *type_name(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG: return "file";
	case S_IFDIR: return "dir";
	case S_IFLNK: return "symlink";
	case S_IFIFO: return "fifo";
	case S_IFCHR: return "chardev";
	case S_IFBLK: return "blockdev";
	case S_IFSOCK: return "socket";
	}
	return "unknown";
}

static json_object *manifest_entry(struct archive_entry *en)
{
	json_object *o = json_object_new_object();
	const char *hl = archive_entry_hardlink(en);
	mode_t m = archive_entry_mode(en);

	json_object_object_add(o, "path", json_object_new_string(archive_entry_pathname(en)));
	json_object_object_add(o, "type", json_object_new_string(hl ? "hardlink" : type_name(m)));
	json_object_object_add(o, "size", json_object_new_int64(hl || !S_ISREG(m) ? 0 : archive_entry_size(en)));
	json_object_object_add(o, "mode", json_object_new_int((int)(m & 07777)));
	json_object_object_add(o, "owner", json_object_new_string(archive_entry_uname(en) ? archive_entry_uname(en) : ""));
	json_object_object_add(o, "group", json_object_new_string(archive_entry_gname(en) ? archive_entry_gname(en) : ""));
	json_object_object_add(o, "mtime", json_object_new_int64(archive_entry_mtime(en)));
	if (hl)
		json_object_object_add(o, "link", json_object_new_string(hl));
	else if (S_ISLNK(m))
		json_object_object_add(o, "link", json_object_new_string(archive_entry_symlink(en) ? archive_entry_symlink(en) : ""));
	return o;
}

static const uint8_t zeros[1 << 20];

/* A hole: hashed as zeros, and handed to the pax writer as zeros, which it
 * drops because the entry's sparse map marks the range as a hole (the pax
 * writer has no block interface; bsdtar does the same). */
static int put_zeros(struct mig_hash *st, struct archive *aw, uint64_t n)
{
	mig_hash_zeros(st, n);
	while (aw && n) {
		size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;
		if (archive_write_data(aw, zeros, k) < 0)
			return -EIO;
		n -= k;
	}
	return 0;
}

/* Copy the current file's data from the disk reader (sparse-aware blocks)
 * into the archive, hashing the logical content (holes as zeros). */
static int copy_data(struct archive *rd, struct archive *aw, enum mig_hash_alg alg, int64_t size,
		     char hex[MIG_HASH_HEX], const char *what, ip_error *e)
{
	struct mig_hash st;
	int64_t pos = 0;

	mig_hash_init(&st, alg);
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = archive_read_data_block(rd, &buf, &len, &off);

		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return ip_fail(e, -EIO, "cannot read %s: %s", what, archive_error_string(rd));
		if (off > pos && put_zeros(&st, aw, (uint64_t)(off - pos)) < 0)
			return ip_fail(e, -EIO, "cannot write the archive of %s: %s", what, archive_error_string(aw));
		mig_hash_update(&st, buf, len);
		if (aw && archive_write_data(aw, buf, len) < 0)
			return ip_fail(e, -EIO, "cannot write the archive of %s: %s", what, archive_error_string(aw));
		pos = off + (int64_t)len;
	}
	if (size > pos && put_zeros(&st, aw, (uint64_t)(size - pos)) < 0)
		return ip_fail(e, -EIO, "cannot write the archive of %s: %s", what, archive_error_string(aw));
	mig_hash_hex(&st, hex);
	return 0;
}

static bool want_path(const struct save_ctx *c, const struct mig_user *u, const char *rel, bool isdir, bool *descend)
{
	const struct mig_globs *inc_u = u->rule ? &u->rule->include : NULL;
	bool has_inc = c->spec->include.n || (inc_u && inc_u->n);

	*descend = isdir;
	if (u->system) {
		const migrate_spec *sp = c->spec;
		if (!*rel)
			return false;   /* the root directory itself is the new OS's */
		if (mig_globs_match(&sp->sys_exclude, rel)) {
			*descend = false;
			return false;
		}
		bool in = mig_globs_match(&sp->sys_include, rel);
		*descend = isdir && (in || sys_may_contain(&sp->sys_include, rel));
		return in;
	}
	if (!*rel)
		return true;
	if (mig_globs_match(&c->spec->exclude, rel) || (u->rule && mig_globs_match(&u->rule->exclude, rel))) {
		*descend = false;
		return false;
	}
	if (!has_inc)
		return true;
	return mig_globs_match(&c->spec->include, rel) || (inc_u && mig_globs_match(inc_u, rel));
}

/* Estimate: the blocks a file really holds (libarchive's entry carries no
 * block count) and a sample of its data for the compression ratio. */
static void sample_file(struct save_ctx *c, struct mig_user *u, int dirfd, const char *rel)
{
	_cleanup_close_ int fd = *rel ? mig_openat_beneath(dirfd, rel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0) : -1;
	struct stat st;

	(void)c;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	u->allocated += (uint64_t)st.st_blocks * 512;
	mig_sampler_add(&u->sm, fd, &st);
}

/* Walk one home; with aw, archive it. */
static int walk_home(struct save_ctx *c, struct mig_user *u, struct archive *aw, struct archive_entry_linkresolver *lr,
		     ip_error *e)
{
	_cleanup_close_ int hfd = u->system ? mig_openat_inroot(c->rootfd, ".", O_RDONLY | O_DIRECTORY)
					    : mig_openat_beneath(c->rootfd, u->home + 1, O_RDONLY | O_DIRECTORY, 0);
	struct archive *rd = archive_read_disk_new();
	struct archive_entry *en = NULL;
	char top[64];
	size_t toplen;
	int r = 0;

	if (u->kept) {
		/* stays on its filesystem: nothing of it goes into the store */
		archive_read_free(rd);
		return 0;
	}
	if (!rd)
		return ip_fail(e, -ENOMEM, "out of memory");
	if (hfd < 0) {
		archive_read_free(rd);
		return ip_fail(e, hfd, "cannot open the home %s of %s: %s", u->home, u->name, strerror(-hfd));
	}
	snprintf(top, sizeof(top), "/proc/self/fd/%d", hfd);
	toplen = strlen(top);
	archive_read_disk_set_symlink_hybrid(rd);
	archive_read_disk_set_uname_lookup(rd, &c->acc, uname_cb, NULL);
	archive_read_disk_set_gname_lookup(rd, &c->acc, gname_cb, NULL);
	archive_read_disk_set_behavior(rd, aw ? 0 : ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL | ARCHIVE_READDISK_NO_FFLAGS);
	if (rd_open(c, rd, top) != ARCHIVE_OK) {
		r = ip_fail(e, -EIO, "cannot read the home %s of %s: %s", u->home, u->name, archive_error_string(rd));
		goto out;
	}
	en = archive_entry_new();
	for (;;) {
		const char *p;
		char rel[4200], name[4300];
		bool descend, keep;
		int k;

		if (atomic_load(&c->stop))
			break;
		archive_entry_clear(en);
		k = rd_next(c, rd, en);
		if (k == ARCHIVE_EOF)
			break;
		if (k < ARCHIVE_WARN) {
			r = ip_fail(e, -EIO, "cannot read the home of %s: %s", u->name, archive_error_string(rd));
			goto out;
		}
		p = archive_entry_pathname(en);
		if (strncmp(p, top, toplen) || (p[toplen] && p[toplen] != '/'))
			continue;
		snprintf(rel, sizeof(rel), "%s", p[toplen] ? p + toplen + 1 : "");
		keep = want_path(c, u, rel, archive_entry_filetype(en) == AE_IFDIR, &descend);
		if (descend)
			archive_read_disk_descend(rd);
		if (!keep)
			continue;
		if (archive_entry_filetype(en) == AE_IFSOCK)
			continue;  /* sockets are not data and cannot be archived */
		snprintf(name, sizeof(name), "%s%s%s", u->system ? "root" : "home", *rel ? "/" : "", rel);
		archive_entry_copy_pathname(en, name);
		if (!archive_entry_uname(en))
			archive_entry_copy_uname(en, u->system ? "root" : u->name);   /* unknown uid: give it to the user */
		if (!archive_entry_gname(en)) {
			const char *g = mig_gid_name(&c->acc, u->gid);
			archive_entry_copy_gname(en, g ? g : u->system ? "root" : u->name);
		}
		u->files++;
		u->manifest_bytes += 160 + 2 * strlen(name) + (c->spec->hash == MIG_HASH_BLAKE2B ? 128 : 32);
		if (archive_entry_filetype(en) == AE_IFREG) {
			u->bytes += (uint64_t)archive_entry_size(en);
			if (c->sample && !archive_entry_hardlink(en))
				sample_file(c, u, hfd, rel);
		}
		if (!aw)
			continue;
		struct archive_entry *spare = NULL, *w = en;
		archive_entry_linkify(lr, &w, &spare);
		json_object *m = manifest_entry(en);
		if (archive_write_header(aw, en) < ARCHIVE_WARN) {
			json_object_put(m);
			r = ip_fail(e, -EIO, "cannot write the archive of %s: %s", u->name, archive_error_string(aw));
			goto out;
		}
		if (archive_entry_filetype(en) == AE_IFREG && !archive_entry_hardlink(en)) {
			char hex[MIG_HASH_HEX];
			if ((r = copy_data(rd, aw, c->spec->hash, archive_entry_size(en), hex, p, e)) < 0) {
				json_object_put(m);
				goto out;
			}
			json_object_object_add(m, "hash", json_object_new_string(hex));
		}
		json_object_array_add(u->entries, m);
	}
out:
	archive_entry_free(en);
	rd_free(c, rd);
	return r;
}

/* crontab and mail spool: files outside the home that belong to the user. */
static int add_extra(struct save_ctx *c, struct mig_user *u, struct archive *aw, const char *dir,
		     const char *name, ip_error *e)
{
	char rel[512], top[64];
	_cleanup_close_ int fd = -1;
	struct archive *rd;
	struct archive_entry *en;
	struct stat st;
	int r = 0;

	snprintf(rel, sizeof(rel), "%s/%s", dir, u->name);
	fd = mig_openat_inroot(c->rootfd, rel, O_RDONLY | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return 0;
	u->files++;
	u->bytes += (uint64_t)st.st_size;
	u->manifest_bytes += 200 + (c->spec->hash == MIG_HASH_BLAKE2B ? 128 : 32);
	if (c->sample) {
		u->allocated += (uint64_t)st.st_blocks * 512;
		mig_sampler_add(&u->sm, fd, &st);
	}
	if (!aw)
		return 0;
	/* open through the disk reader so xattrs/ACLs come along */
	rd = archive_read_disk_new();
	en = archive_entry_new();
	if (!rd || !en) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	archive_read_disk_set_uname_lookup(rd, &c->acc, uname_cb, NULL);
	archive_read_disk_set_gname_lookup(rd, &c->acc, gname_cb, NULL);
	archive_read_disk_set_symlink_hybrid(rd);
	snprintf(top, sizeof(top), "/proc/self/fd/%d", fd);
	if (rd_open(c, rd, top) != ARCHIVE_OK || rd_next(c, rd, en) < ARCHIVE_WARN) {
		r = ip_fail(e, -EIO, "cannot read /%s: %s", rel, archive_error_string(rd));
		goto out;
	}
	archive_entry_copy_pathname(en, name);
	if (!archive_entry_uname(en))
		archive_entry_copy_uname(en, u->name);
	if (!archive_entry_gname(en))
		archive_entry_copy_gname(en, u->name);
	json_object *m = manifest_entry(en);
	char hex[MIG_HASH_HEX];
	if (archive_write_header(aw, en) < ARCHIVE_WARN) {
		json_object_put(m);
		r = ip_fail(e, -EIO, "cannot write the archive of %s: %s", u->name, archive_error_string(aw));
		goto out;
	}
	if ((r = copy_data(rd, aw, c->spec->hash, archive_entry_size(en), hex, rel, e)) < 0) {
		json_object_put(m);
		goto out;
	}
	json_object_object_add(m, "hash", json_object_new_string(hex));
	json_object_array_add(u->entries, m);
out:
	archive_entry_free(en);
	if (rd) {
		rd_free(c, rd);
	}
	return r;
}

static int archive_user(struct save_ctx *c, struct mig_user *u, ip_error *e)
{
	char final[4400], opt[16];
	ip_outfile of = { .fd = -1 };
	struct out o = { .fd = -1 };
	struct archive *aw = NULL;
	struct archive_entry_linkresolver *lr = NULL;
	int r;

	u->entries = json_object_new_array();
	if (!c->write) {
		if (c->sample && mig_sampler_init(&u->sm, c->spec->level) < 0)
			return ip_fail(e, -ENOMEM, "out of memory");
		if ((r = walk_home(c, u, NULL, NULL, e)) == 0 && !u->system) {
			add_extra(c, u, NULL, "var/spool/cron/crontabs", "extra/crontab", e);
			add_extra(c, u, NULL, "var/mail", "extra/mail", e);
		}
		if (c->sample) {
			u->est_archive = mig_estimate_archive(mig_sampler_finish(&u->sm), u->files);
			u->data = u->sm.data;
		}
		mig_sampler_free(&u->sm);
		return r;
	}
	snprintf(final, sizeof(final), "%s/%s" MIG_ARCHIVE_EXT, c->store, u->name);
	/* whole or not at all: a temporary file beside it, renamed once
	 * complete and synced (a cut save leaves only a .tmp- name, which
	 * the next save's store_prepare removes) */
	if ((r = ip_outfile_open(final, NULL, 0600, &of, e)) < 0)
		return r;
	o.fd = of.fd;
	mig_hash_init(&o.st, c->spec->hash);
	aw = archive_write_new();
	lr = archive_entry_linkresolver_new();
	if (!aw || !lr) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	archive_entry_linkresolver_set_strategy(lr, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
	archive_write_set_format_pax_restricted(aw);
	archive_write_add_filter_zstd(aw);
	snprintf(opt, sizeof(opt), "%u", c->spec->level);
	archive_write_set_filter_option(aw, "zstd", "compression-level", opt);
	snprintf(opt, sizeof(opt), "%u", c->zthreads);
	archive_write_set_filter_option(aw, "zstd", "threads", opt);  /* older libarchive: single thread */
	archive_write_set_bytes_per_block(aw, 1 << 16);
	archive_write_set_bytes_in_last_block(aw, 1);
	if (archive_write_open2(aw, &o, NULL, out_write, NULL, NULL) != ARCHIVE_OK) {
		r = ip_fail(e, -EIO, "cannot start the archive of %s: %s", u->name, archive_error_string(aw));
		goto out;
	}
	if ((r = walk_home(c, u, aw, lr, e)) < 0 ||
	    (!u->system && (r = add_extra(c, u, aw, "var/spool/cron/crontabs", "extra/crontab", e)) < 0) ||
	    (!u->system && (r = add_extra(c, u, aw, "var/mail", "extra/mail", e)) < 0))
		goto out;
	if (atomic_load(&c->stop)) {
		r = -ECANCELED;
		goto out;
	}
	if (archive_write_close(aw) != ARCHIVE_OK) {
		r = ip_fail(e, o.err ? o.err : -EIO, "cannot write the archive of %s: %s", u->name, archive_error_string(aw));
		goto out;
	}
	o.fd = -1;   /* the outfile's: commit closes it */
	if ((r = ip_outfile_commit(&of, e)) < 0)
		goto out;
	mig_hash_hex(&o.st, u->archive_hash);
	u->archive_bytes = o.bytes;
	r = 0;
out:
	if (aw)
		archive_write_free(aw);
	archive_entry_linkresolver_free(lr);
	if (r < 0)
		ip_outfile_abort(&of);
	return r;
}

static int user_job(void *arg, size_t i)
{
	struct save_ctx *c = arg;

	return c->users[i].r = archive_user(c, &c->users[i], &c->users[i].err);
}

static int run_users(struct save_ctx *c, ip_error *e)
{
	size_t ncpu = mig_ncpu();

	c->zthreads = c->spec->threads ? c->spec->threads : (unsigned)ncpu;
	/* where the working directory was: libarchive's readers leave it in
	 * whichever directory the last one to close found at its open */
	int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/* users in parallel, at most one walker per core; an estimate walks
	 * one user at a time */
	mig_parallel(c->nusers, c->write ? ncpu : 1, &c->stop, user_job, c);
	if (cwd >= 0) {
		int k = fchdir(cwd);   /* on failure: nothing after this opens a relative path */
		(void)k;
		close(cwd);
	}
	for (size_t i = 0; i < c->nusers; i++)
		if (c->users[i].r < 0 && c->users[i].r != -ECANCELED) {
			*e = c->users[i].err;
			return c->users[i].r;
		}
	return 0;
}

static void ctx_clear(struct save_ctx *c)
{
	for (size_t i = 0; i < c->nusers; i++)
		if (c->users[i].entries)
			json_object_put(c->users[i].entries);
	free(c->users);
	if (c->skipped)
		json_object_put(c->skipped);
	mig_accounts_clear(&c->acc);
	if (c->rootfd >= 0)
		close(c->rootfd);
	if (c->storefd >= 0)
		close(c->storefd);
}

static int ctx_init(struct save_ctx *c, const char *root, const migrate_spec *spec,
		    const struct migrate_kept *kept, size_t nkept, ip_error *e)
{
	memset(c, 0, sizeof(*c));
	c->kept = kept;
	c->nkept = nkept;
	c->cwd_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
	c->storefd = -1;
	c->root = root;
	c->spec = spec;
	c->skipped = json_object_new_array();
	c->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->rootfd < 0)
		return ip_bad(e, -errno, "cannot open the root %s: %s", root, strerror(errno));
	int r = mig_accounts_load(c->rootfd, &c->acc, e);
	if (r < 0)
		return r;
	return select_users(c, e);
}

static json_object *estimate_doc(struct save_ctx *c, const char *command)
{
	json_object *doc = ip_json_doc(command), *arr = json_object_new_array(), *tot = json_object_new_object();
	uint64_t files = 0, bytes = 0, alloc = 0, data = 0, archives = 0, manifest = 4096, sampled = 0, sampled_c = 0, store;

	for (size_t i = 0; i < c->nusers; i++) {
		struct mig_user *u = &c->users[i];
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(u->name));
		json_object_object_add(o, "uid", json_object_new_int64(u->uid));
		json_object_object_add(o, "home", json_object_new_string(u->home));
		json_object_object_add(o, "files", ip_json_u64(u->files));
		json_object_object_add(o, "bytes", ip_json_u64(u->bytes));
		if (c->sample) {
			json_object_object_add(o, "allocated", ip_json_u64(u->allocated));
			json_object_object_add(o, "data_bytes", ip_json_u64(u->data));
			json_object_object_add(o, "sampled_bytes", ip_json_u64(u->sm.sampled));
			json_object_object_add(o, "compression_ratio", json_object_new_double(u->sm.ratio));
			json_object_object_add(o, "estimated_archive_bytes", ip_json_u64(u->est_archive));
			json_object_object_add(o, "estimated_store_bytes",
					       ip_json_u64(mig_estimate_store(u->est_archive, u->manifest_bytes, 1)));
		}
		if (c->write) {
			json_object_object_add(o, "archive", json_object_new_string(""));
			json_object_object_add(o, "archive_bytes", ip_json_u64(u->archive_bytes));
		}
		json_object_array_add(arr, o);
		files += u->files;
		bytes += u->bytes;
		alloc += u->allocated;
		data += u->data;
		archives += u->est_archive;
		manifest += u->manifest_bytes;
		sampled += u->sm.sampled;
		sampled_c += u->sm.compressed;
	}
	store = mig_estimate_store(archives, manifest, c->nusers);
	json_object_object_add(doc, "root", json_object_new_string(c->root));
	json_object_object_add(doc, "users", arr);
	json_object_object_add(doc, "skipped", json_object_get(c->skipped));
	json_object_object_add(tot, "files", ip_json_u64(files));
	json_object_object_add(tot, "bytes", ip_json_u64(bytes));
	if (c->sample) {
		json_object *how = json_object_new_object();
		json_object_object_add(tot, "allocated", ip_json_u64(alloc));
		json_object_object_add(tot, "data_bytes", ip_json_u64(data));
		json_object_object_add(tot, "estimated_store_bytes", ip_json_u64(store));
		json_object_object_add(doc, "estimated_store_bytes", ip_json_u64(store));
		json_object_object_add(doc, "store_bytes", ip_json_u64(store));   /* older name */
		json_object_object_add(how, "method", json_object_new_string("sampled-zstd"));
		json_object_object_add(how, "data", json_object_new_string("file sizes less holes (st_blocks)"));
		json_object_object_add(how, "level", json_object_new_int((int)c->spec->level));
		json_object_object_add(how, "sampled_bytes", ip_json_u64(sampled));
		json_object_object_add(how, "sample_compressed_bytes", ip_json_u64(sampled_c));
		json_object_object_add(how, "headers_per_file", json_object_new_int(MIG_PAX_OVERHEAD / 3));
		json_object_object_add(how, "margin_percent", json_object_new_int(10));
		json_object_object_add(doc, "estimate", how);
	}
	json_object_object_add(doc, "total", tot);
	return doc;
}

int migrate_estimate(const char *root, const migrate_spec *spec, json_object **out, ip_error *e)
{
	struct save_ctx c;
	int r;

	if ((r = ctx_init(&c, root, spec, NULL, 0, e)) < 0) {
		ctx_clear(&c);
		return r;
	}
	c.sample = true;
	if ((r = run_users(&c, e)) < 0) {
		ctx_clear(&c);
		return r;
	}
	*out = estimate_doc(&c, "profile estimate");
	ctx_clear(&c);
	return 0;
}

/* Our files in a store: everything else (lost+found …) is left alone.
 * Temporary files of a cut save: NAME.tmp-PID-XXXXXX (ip_outfile) of one
 * of ours, and the older .NAME.tmp. */
static bool store_owned_name(const char *n)
{
	size_t l = strlen(n), el = strlen(MIG_ARCHIVE_EXT);
	const char *t = strstr(n, ".tmp-");

	if (t && t > n) {
		char base[256];

		snprintf(base, sizeof(base), "%.*s", (int)(t - n), n);
		return !strstr(base, ".tmp-") && store_owned_name(base);
	}
	return !strcmp(n, "manifest.json") || !strcmp(n, "accounts.json") || !strcmp(n, "machine.json") ||
	       !strcmp(n, "COMPLETE") || (l > el && !strcmp(n + l - el, MIG_ARCHIVE_EXT)) ||
	       (n[0] == '.' && l > 4 && (!strcmp(n + l - 4, ".tmp") || strstr(n, ".inplace-tmp")));
}

/* Is dir (or, when it does not exist yet, its nearest existing parent)
 * beneath the root on the root's own filesystem?  Walked up by "..", so
 * links and bind mounts of the root are seen through.  A separate
 * filesystem mounted under the root (a storage partition under "/") is
 * not the root's. */
static bool store_under_root(int rootfd, const char *store)
{
	_cleanup_free_ char *path = strdup(store);
	struct stat rst, st;
	int fd = -1;

	if (!path || fstat(rootfd, &rst) < 0)
		return false;
	while ((fd = open(*path ? path : ".", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		char *sl = strrchr(path, '/');
		if (!sl)
			*path = '\0';           /* relative: the working directory */
		else if (sl == path)
			path[1] = '\0';         /* "/" */
		else
			*sl = '\0';
	}
	if (fstat(fd, &st) < 0 || st.st_dev != rst.st_dev) {
		close(fd);
		return false;
	}
	for (int depth = 0; depth < 4096; depth++) {
		struct stat pst;
		int up;
		if (st.st_dev == rst.st_dev && st.st_ino == rst.st_ino) {
			close(fd);
			return true;
		}
		up = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		if (up < 0 || fstat(up, &pst) < 0) {
			if (up >= 0)
				close(up);
			return false;
		}
		if (pst.st_dev == st.st_dev && pst.st_ino == st.st_ino) {
			close(up);
			return false;           /* "/" */
		}
		fd = up;
		st = pst;
	}
	close(fd);
	return false;
}

static int store_prepare(struct save_ctx *c, const char *store, ip_error *e)
{
	if (store_under_root(c->rootfd, store))
		return ip_bad(e, -EINVAL, "the store %s lies under the root %s, which save never writes to: choose a store on another filesystem",
			      store, c->root);
	DIR *d;
	struct dirent *de;
	int fd, r;

	if (mkdir(store, 0700) < 0 && errno != EEXIST)
		return ip_fail(e, -errno, "cannot create the store %s: %s: choose a writable directory", store, strerror(errno));
	c->storefd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (c->storefd < 0)
		return ip_fail(e, -errno, "cannot open the store %s: %s", store, strerror(errno));
	if (fchmod(c->storefd, 0700) < 0 || faccessat(c->storefd, ".", W_OK, AT_EACCESS) < 0)
		return ip_fail(e, -errno, "the store %s is not writable: %s: choose a writable directory", store, strerror(errno));
	fd = mig_openat_beneath(c->storefd, "COMPLETE", O_PATH, 0);
	if (fd >= 0) {
		close(fd);
		return ip_bad(e, -EEXIST, "%s already holds a complete profile: choose an empty store or remove it first", store);
	}
	/* A store without COMPLETE is an interrupted save: start clean. */
	if ((fd = dup(c->storefd)) < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return ip_fail(e, -errno, "cannot list the store %s: %s", store, strerror(errno));
	}
	while ((de = readdir(d)))
		if (store_owned_name(de->d_name) && unlinkat(c->storefd, de->d_name, 0) < 0 && errno != ENOENT) {
			r = -errno;
			closedir(d);
			return ip_fail(e, r, "cannot clean the store %s: %s", store, strerror(-r));
		}
	closedir(d);
	if (fsync(c->storefd) < 0)
		return ip_fail(e, -errno, "cannot sync the store %s: %s", store, strerror(errno));
	return 0;
}

static int put_json(struct save_ctx *c, const char *name, json_object *o, json_object *complete, ip_error *e)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	char hex[MIG_HASH_HEX], path[4400];
	ip_outfile of;
	int r;

	snprintf(path, sizeof(path), "%s/%s", c->store, name);
	r = ip_outfile_open(path, NULL, 0600, &of, e);
	if (r < 0)
		return r;
	if ((r = ip_write_all(of.fd, s, strlen(s))) < 0) {
		ip_outfile_abort(&of);
		return ip_fail(e, r, "cannot write %s: %s", path, strerror(-r));
	}
	r = ip_outfile_commit(&of, e);
	if (r < 0)
		return r;
	mig_hash_buf(c->spec->hash, s, strlen(s), hex);
	if (complete)
		json_object_object_add(complete, name, json_object_new_string(hex));
	return 0;
}

static json_object *rec_json(const struct mig_rec *r)
{
	json_object *a = json_object_new_array();
	for (unsigned i = 0; i < r->nf; i++)
		json_object_array_add(a, json_object_new_string(r->f[i]));
	return a;
}

static json_object *accounts_doc(struct save_ctx *c)
{
	json_object *doc = json_object_new_object(), *users = json_object_new_array(), *groups = json_object_new_array();
	const struct mig_db *gr = &c->acc.db[MIG_GROUP];

	json_object_object_add(doc, "format_version", json_object_new_int(MIG_FORMAT_VERSION));
	/* what the spec selected: restore accepts no account outside it */
	json_object_object_add(doc, "min_uid", json_object_new_int64(c->spec->min_uid));
	json_object_object_add(doc, "include_root", json_object_new_boolean(c->spec->include_root));
	for (size_t i = 0; i < c->nusers; i++) {
		struct mig_user *u = &c->users[i];
		if (u->system)
			continue;
		json_object *o = json_object_new_object(), *sup = json_object_new_array();
		struct mig_rec *pw = mig_db_find(&c->acc.db[MIG_PASSWD], u->name);
		struct mig_rec *sp = mig_db_find(&c->acc.db[MIG_SHADOW], u->name);
		const char *pg = mig_gid_name(&c->acc, u->gid);

		json_object_object_add(o, "name", json_object_new_string(u->name));
		json_object_object_add(o, "passwd", rec_json(pw));
		if (sp)
			json_object_object_add(o, "shadow", rec_json(sp));
		json_object_object_add(o, "primary_group", json_object_new_string(pg ? pg : ""));
		for (size_t j = 0; j < gr->n; j++)
			if (gr->r[j].f && mig_group_has_member(&gr->r[j], u->name))
				json_object_array_add(sup, json_object_new_string(gr->r[j].f[0]));
		json_object_object_add(o, "groups", sup);
		json_object_array_add(users, o);
	}
	/* every group a saved user belongs to, primary or supplementary */
	for (size_t j = 0; j < gr->n; j++) {
		const struct mig_rec *g = &gr->r[j];
		bool need = false;

		if (!g->f)
			continue;
		for (size_t i = 0; i < c->nusers && !need; i++)
			need = !c->users[i].system &&
			       (mig_rec_id(g) == (long)c->users[i].gid || mig_group_has_member(g, c->users[i].name));
		if (!need)
			continue;
		json_object *o = json_object_new_object();
		struct mig_rec *gs = mig_db_find(&c->acc.db[MIG_GSHADOW], g->f[0]);
		json_object_object_add(o, "name", json_object_new_string(g->f[0]));
		json_object_object_add(o, "group", rec_json(g));
		if (gs)
			json_object_object_add(o, "gshadow", rec_json(gs));
		json_object_array_add(groups, o);
	}
	json_object_object_add(doc, "users", users);
	json_object_object_add(doc, "groups", groups);
	return doc;
}

int migrate_save(const char *root, const char *store, const migrate_spec *spec, json_object **out, ip_error *e)
{
	return migrate_save_keeping(root, store, spec, NULL, 0, out, e);
}

/* A kept directory the manifest may name: /home, /var/home or one home. */
bool mig_kept_dir_valid(const char *dir)
{
	return dir && (!strcmp(dir, "/home") || !strcmp(dir, "/var/home") || mig_home_plausible(dir));
}

int migrate_save_keeping(const char *root, const char *store, const migrate_spec *spec,
			 const struct migrate_kept *kept, size_t nkept, json_object **out, ip_error *e)
{
	_cleanup_json_ json_object *accounts = NULL, *machine = NULL, *manifest = NULL, *complete = NULL;
	struct save_ctx c;
	json_object *musers, *mkept;
	int r;

	for (size_t i = 0; i < nkept; i++)
		if (!mig_kept_dir_valid(kept[i].dir))
			return ip_bad(e, -EINVAL, "cannot keep %s in place: only /home, /var/home or one home directory can stay on its own filesystem",
				      kept[i].dir ? kept[i].dir : "(none)");
	if ((r = ctx_init(&c, root, spec, kept, nkept, e)) < 0)
		goto out;
	if (spec->max_size) {
		c.write = false;
		if ((r = run_users(&c, e)) < 0)
			goto out;
		uint64_t tot = 0;
		for (size_t i = 0; i < c.nusers; i++) {
			tot += c.users[i].bytes;
			c.users[i].files = c.users[i].bytes = c.users[i].allocated = 0;
			json_object_put(c.users[i].entries);
			c.users[i].entries = NULL;
		}
		if (tot > spec->max_size) {
			char a[IP_SIZE_BUFSZ], b[IP_SIZE_BUFSZ];
			r = ip_bad(e, -EFBIG, "the profile holds %s, above the spec's max_size of %s: raise max_size or exclude more",
				   ip_format_size(tot, a, sizeof(a)), ip_format_size(spec->max_size, b, sizeof(b)));
			goto out;
		}
	}
	c.store = store;
	if ((r = store_prepare(&c, store, e)) < 0)
		goto out;
	if (spec->machine && (r = mig_machine_collect(c.rootfd, &machine, e)) < 0)
		goto out;
	if (!machine)
		machine = json_object_new_object();
	c.write = true;
	if ((r = run_users(&c, e)) < 0)
		goto out;
	accounts = accounts_doc(&c);
	manifest = json_object_new_object();
	complete = json_object_new_object();
	json_object_object_add(manifest, "format", json_object_new_string(MIG_FORMAT));
	json_object_object_add(manifest, "format_version", json_object_new_int(MIG_FORMAT_VERSION));
	json_object_object_add(manifest, "tool_version", json_object_new_string(IP_TOOL_VERSION));
	json_object_object_add(manifest, "hash", json_object_new_string(mig_hash_name(spec->hash)));
	json_object_object_add(manifest, "created", json_object_new_int64((int64_t)time(NULL)));
	musers = json_object_new_array();
	for (size_t i = 0; i < c.nusers; i++) {
		struct mig_user *u = &c.users[i];
		json_object *o = json_object_new_object();
		char an[300];
		snprintf(an, sizeof(an), "%s" MIG_ARCHIVE_EXT, u->name);
		json_object_object_add(o, "name", json_object_new_string(u->name));
		json_object_object_add(o, "uid", json_object_new_int64(u->uid));
		json_object_object_add(o, "home", json_object_new_string(u->home));
		json_object_object_add(o, "archive", json_object_new_string(an));
		json_object_object_add(o, "archive_bytes", ip_json_u64(u->archive_bytes));
		json_object_object_add(o, "archive_hash", json_object_new_string(u->archive_hash));
		json_object_object_add(o, "files", ip_json_u64(u->files));
		json_object_object_add(o, "bytes", ip_json_u64(u->bytes));
		if (u->system)
			json_object_object_add(o, "system", json_object_new_boolean(1));
		if (u->kept)
			json_object_object_add(o, "home_kept", json_object_new_string(u->kept->uuid ? u->kept->uuid : ""));
		json_object_object_add(o, "entries", json_object_get(u->entries));
		json_object_array_add(musers, o);
	}
	json_object_object_add(manifest, "users", musers);
	mkept = json_object_new_array();
	for (size_t i = 0; i < nkept; i++) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "dir", json_object_new_string(kept[i].dir));
		json_object_object_add(o, "uuid", json_object_new_string(kept[i].uuid ? kept[i].uuid : ""));
		json_object_array_add(mkept, o);
	}
	json_object_object_add(manifest, "kept", mkept);
	if ((r = put_json(&c, "accounts.json", accounts, complete, e)) < 0 ||
	    (r = put_json(&c, "machine.json", machine, complete, e)) < 0 ||
	    (r = put_json(&c, "manifest.json", manifest, complete, e)) < 0)
		goto out;
	/* Every archive and JSON file is fsynced and renamed; the directory
	 * sync makes the renames durable before the marker can exist. */
	if (fsync(c.storefd) < 0) {
		r = ip_fail(e, -errno, "cannot sync the store %s: %s", store, strerror(errno));
		goto out;
	}
	json_object_object_add(complete, "format", json_object_new_string(MIG_FORMAT));
	json_object_object_add(complete, "format_version", json_object_new_int(MIG_FORMAT_VERSION));
	json_object_object_add(complete, "hash", json_object_new_string(mig_hash_name(spec->hash)));
	if ((r = put_json(&c, "COMPLETE", complete, NULL, e)) < 0)
		goto out;
	*out = estimate_doc(&c, "profile save");
	json_object_object_add(*out, "store", json_object_new_string(store));
	for (size_t i = 0; i < c.nusers; i++) {
		json_object *uo = json_object_array_get_idx(json_object_object_get(*out, "users"), i);
		char an[300];
		snprintf(an, sizeof(an), "%s" MIG_ARCHIVE_EXT, c.users[i].name);
		json_object_object_add(uo, "archive", json_object_new_string(an));
	}
	r = 0;
out:
	ctx_clear(&c);
	return r;
}
