/* restore.c — put a store back into the root of a new OS: accounts by name
 * (with UID/GID remapping where the number is taken), homes, crontabs, mail
 * spools, machine state.
 *
 * Security: the archive is untrusted input.  Every path is checked
 * (relative, no "." or ".." component), every directory on the way is
 * opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) so that no
 * symlink — planted by the archive or already in the new root — is ever
 * followed, and owners, modes, xattrs, ACLs and times are set through the
 * file descriptor.  Files are written to a temporary name, checked against
 * the manifest's hash, and only then renamed into place.  Device nodes are
 * refused; a hardlink may only point at a file this archive restored.
 * setuid/setgid bits, file capabilities and trusted.* / security.* xattrs
 * are dropped, and the [system] paths (which may land anywhere in the new
 * root) skipped, unless the caller trusts the store (--trusted-store): a store
 * on a storage partition could have been altered by anyone with access to
 * the disk, and such bits turn file writes into privilege.
 * Idempotent: content, owners, modes, xattrs, ACLs and times already equal
 * are left untouched, so a second run changes nothing. */
#include <acl/libacl.h>
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "migrate/internal.h"

struct rctx {
	int rootfd;
	const struct migrate_restore_opts *o;
	enum mig_hash_alg alg;       /* the store's */
	struct mig_accounts acc;     /* the new root's, updated */
	bool acc_dirty[MIG_NDB];
	json_object *report_users;
	/* per user */
	const char *user;
	bool system;                 /* the "@system" archive: root/… entries */
	const char *prefix;          /* "home/" or "root/" (both 5 long) */
	uid_t uid;
	gid_t gid;
	struct mig_areader *ar;
	json_object *done;           /* restored regular files (for hardlinks) */
	json_object *dirtimes;       /* rel -> mtime, set after the children */
	uint64_t written, unchanged, refused, neutralised;
	char first_refusal[512];
};

static void refuse(struct rctx *c, const char *what, const char *why)
{
	c->refused++;
	if (!c->first_refusal[0])
		snprintf(c->first_refusal, sizeof(c->first_refusal), "'%.200s': %s", what, why);
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) ? mig_json_str(v) : NULL;
}

/* ---- accounts ---- */

static int set_field(struct mig_rec *r, unsigned i, const char *v)
{
	char *n = strdup(v);
	if (!n)
		return -ENOMEM;
	free(r->f[i]);
	r->f[i] = n;
	return 0;
}

static void report_remap(json_object *rm, const char *name, const char *kind, long from, long to)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "kind", json_object_new_string(kind));
	json_object_object_add(o, "from", json_object_new_int64(from));
	json_object_object_add(o, "to", json_object_new_int64(to));
	json_object_array_add(rm, o);
}

static int add_group(struct rctx *c, const struct mig_vgroup *g, long id, json_object *rg)
{
	struct mig_db *gr = &c->acc.db[MIG_GROUP], *gs = &c->acc.db[MIG_GSHADOW];
	char ids[16];

	snprintf(ids, sizeof(ids), "%ld", id);
	const char *nf[4] = { g->name, g->f[1], ids, "" };
	if (mig_db_add(gr, nf, 4) < 0)
		return -ENOMEM;
	c->acc_dirty[MIG_GROUP] = true;
	if (!mig_db_find(gs, g->name)) {
		const char *d[4] = { g->name, g->have_gshadow ? g->gsf[1] : "!", g->have_gshadow ? g->gsf[2] : "", "" };
		if (mig_db_add(gs, d, 4) < 0)
			return -ENOMEM;
		c->acc_dirty[MIG_GSHADOW] = true;
	}
	json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(g->name));
	json_object_object_add(o, "old_gid", json_object_new_int64(g->gid));
	json_object_object_add(o, "gid", json_object_new_int64(id));
	json_object_object_add(o, "created", json_object_new_boolean(1));
	json_object_array_add(rg, o);
	return 0;
}

/* Accounts in two passes, groups then users: first every id the new OS
 * does not use is kept, and only then are the taken ones given new ids
 * (from the ranges of the new OS's login.defs), so that one remap never
 * pushes another account off a number that was free. */
static int plan_accounts(struct rctx *c, const struct mig_trust_plan *p, json_object *report, ip_error *e)
{
	json_object *rg = json_object_new_array(), *ru = json_object_new_array(), *rm = json_object_new_array();
	struct mig_db *pw = &c->acc.db[MIG_PASSWD], *sp = &c->acc.db[MIG_SHADOW];
	struct mig_db *gr = &c->acc.db[MIG_GROUP], *gs = &c->acc.db[MIG_GSHADOW];
	const struct mig_logindefs *d = &p->defs;
	_cleanup_free_ bool *gdone = calloc(p->ngroups + 1, sizeof(bool)), *udone = calloc(p->nusers + 1, sizeof(bool));

	json_object_object_add(report, "groups", rg);
	json_object_object_add(report, "accounts", ru);
	json_object_object_add(report, "remapped", rm);
	json_object_object_add(report, "withheld", json_object_get(p->withheld));
	if (!gdone || !udone)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < p->ngroups; i++) {
			const struct mig_vgroup *g = &p->groups[i];
			long lo = g->system ? 100 : d->gid_min, hi = g->system ? d->sys_gid_max : d->gid_max, id;

			if (!g->needed || gdone[i] || mig_db_find(gr, g->name))
				continue;
			if (pass == 0) {
				if (g->gid < lo || g->gid > hi || mig_db_find_id(gr, (unsigned long)g->gid))
					continue;
				id = g->gid;
			} else if ((id = mig_db_free_id(gr, NULL, -1, lo, hi)) < 0) {
				return ip_fail(e, -ENOSPC, "no free group id for '%s' in the new root: remove unused groups", g->name);
			}
			if (add_group(c, g, id, rg) < 0)
				return ip_fail(e, -ENOMEM, "out of memory");
			gdone[i] = true;
			if (id != g->gid)
				report_remap(rm, g->name, "group", g->gid, id);
		}
	for (int pass = 0; pass < 2; pass++)
		for (size_t j = 0; j < p->nusers; j++) {
			const struct mig_vuser *u = &p->users[j];
			struct mig_rec *cur = mig_db_find(pw, u->name);
			long id;

			if (!u->selected || udone[j])
				continue;
			if (!cur && pass == 0 && (u->uid < d->uid_min || u->uid > d->uid_max || mig_db_find_id(pw, (unsigned long)u->uid)))
				continue;
			udone[j] = true;
			json_object *o = json_object_new_object();
			json_object_object_add(o, "name", json_object_new_string(u->name));
			json_object_object_add(o, "old_uid", json_object_new_int64(u->uid));
			if (cur) {
				id = mig_rec_id(cur);
				json_object_object_add(o, "created", json_object_new_boolean(0));
			} else if (u->root) {
				json_object_put(o);
				return ip_fail(e, -ENOENT, "the new root has no root account: is --root the root of an installed system?");
			} else {
				char ids[16], gids[16];
				struct mig_rec *pg = u->primary ? mig_db_find(gr, u->primary) : mig_db_find(gr, "users");
				id = pass == 0 ? u->uid : mig_db_free_id(pw, NULL, -1, d->uid_min, d->uid_max);
				if (id < 0) {
					json_object_put(o);
					return ip_fail(e, -ENOSPC, "no free user id for '%s' in the new root", u->name);
				}
				snprintf(ids, sizeof(ids), "%ld", id);
				snprintf(gids, sizeof(gids), "%ld", pg ? mig_rec_id(pg) : 100L);
				const char *nf[7] = { u->name, u->have_shadow ? "x" : u->pw[1], ids, gids, u->pw[4], u->pw[5], u->pw[6] };
				if (mig_db_add(pw, nf, 7) < 0) {
					json_object_put(o);
					return ip_fail(e, -ENOMEM, "out of memory");
				}
				c->acc_dirty[MIG_PASSWD] = true;
				json_object_object_add(o, "created", json_object_new_boolean(1));
			}
			if (id != u->uid)
				report_remap(rm, u->name, "user", u->uid, id);
			json_object_object_add(o, "uid", json_object_new_int64(id));
			json_object_array_add(ru, o);
			/* the password hash comes along whether the account is new or not */
			if (u->have_shadow) {
				struct mig_rec *cs = mig_db_find(sp, u->name);
				if (!cs) {
					if (mig_db_add(sp, u->sp, 9) < 0)
						return ip_fail(e, -ENOMEM, "out of memory");
					c->acc_dirty[MIG_SHADOW] = true;
				} else if (strcmp(cs->f[1], u->sp[1])) {
					if (set_field(cs, 1, u->sp[1]) < 0 || set_field(cs, 2, u->sp[2]) < 0)
						return ip_fail(e, -ENOMEM, "out of memory");
					c->acc_dirty[MIG_SHADOW] = true;
				}
			}
			/* supplementary groups: only those the trust check let through */
			for (size_t k = 0; k < u->ngroups; k++) {
				struct mig_rec *g = mig_db_find(gr, u->groups[k]), *gsr = mig_db_find(gs, u->groups[k]);
				if (g && !mig_group_has_member(g, u->name)) {
					if (mig_group_add_member(g, 3, u->name) < 0)
						return ip_fail(e, -ENOMEM, "out of memory");
					c->acc_dirty[MIG_GROUP] = true;
				}
				if (gsr && !mig_group_has_member(gsr, u->name)) {
					if (mig_group_add_member(gsr, 3, u->name) < 0)
						return ip_fail(e, -ENOMEM, "out of memory");
					c->acc_dirty[MIG_GSHADOW] = true;
				}
			}
		}
	return 0;
}

/* shadow before passwd and gshadow before group: an account becomes visible
 * only once its secret half is durable. */
static int write_accounts(struct rctx *c, ip_error *e)
{
	static const enum mig_db_kind order[] = { MIG_GSHADOW, MIG_GROUP, MIG_SHADOW, MIG_PASSWD };

	for (size_t i = 0; i < IP_ARRAY_SIZE(order); i++) {
		enum mig_db_kind k = order[i];
		_cleanup_free_ char *text = NULL;
		struct stat st;
		mode_t mode = (k == MIG_SHADOW || k == MIG_GSHADOW) ? 0640 : 0644;
		uid_t uid = 0;
		gid_t gid = 0;
		int fd;

		if (!c->acc_dirty[k])
			continue;
		fd = mig_openat_beneath(c->rootfd, mig_db_path[k], O_RDONLY, 0);
		if (fd >= 0 && fstat(fd, &st) == 0) {
			mode = st.st_mode & 07777;
			uid = st.st_uid;
			gid = st.st_gid;
		}
		if (fd >= 0)
			close(fd);
		if (!(text = mig_db_format(&c->acc.db[k])))
			return ip_fail(e, -ENOMEM, "out of memory");
		int r = mig_write_beneath(c->rootfd, mig_db_path[k], text, strlen(text), mode, uid, gid, true, e);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- metadata through the fd ---- */

static uid_t map_uid(struct rctx *c, const char *name)
{
	struct mig_rec *r = name && *name ? mig_db_find(&c->acc.db[MIG_PASSWD], name) : NULL;
	return r ? (uid_t)mig_rec_id(r) : c->uid;
}

static gid_t map_gid(struct rctx *c, const char *name)
{
	struct mig_rec *r = name && *name ? mig_db_find(&c->acc.db[MIG_GROUP], name) : NULL;
	return r ? (gid_t)mig_rec_id(r) : c->gid;
}

static bool xattr_allowed(struct rctx *c, const char *name)
{
	if (!strncmp(name, "system.posix_acl_", 17))
		return false;   /* carried as ACLs */
	if (!strncmp(name, "user.", 5))
		return true;
	return c->o->trusted;  /* security.capability, trusted.*, security.* */
}

static acl_t build_acl(struct rctx *c, struct archive_entry *en, int type)
{
	int n = archive_entry_acl_reset(en, type);
	acl_t acl;
	int t, perm, tag, qual;
	const char *name;

	bool has_mask = false;

	if (n <= 0)
		return NULL;
	acl = acl_init(n);
	while (acl && archive_entry_acl_next(en, type, &t, &perm, &tag, &qual, &name) == ARCHIVE_OK) {
		acl_entry_t ent;
		acl_permset_t ps;
		acl_tag_t at;
		id_t id = 0;

		switch (tag) {
		case ARCHIVE_ENTRY_ACL_USER_OBJ: at = ACL_USER_OBJ; break;
		case ARCHIVE_ENTRY_ACL_GROUP_OBJ: at = ACL_GROUP_OBJ; break;
		case ARCHIVE_ENTRY_ACL_MASK: at = ACL_MASK; has_mask = true; break;
		case ARCHIVE_ENTRY_ACL_OTHER: at = ACL_OTHER; break;
		case ARCHIVE_ENTRY_ACL_USER:
			at = ACL_USER;
			if (!name || !mig_db_find(&c->acc.db[MIG_PASSWD], name))
				continue;   /* nobody by that name in the new OS */
			id = map_uid(c, name);
			break;
		case ARCHIVE_ENTRY_ACL_GROUP:
			at = ACL_GROUP;
			if (!name || !mig_db_find(&c->acc.db[MIG_GROUP], name))
				continue;
			id = map_gid(c, name);
			break;
		default:
			continue;
		}
		if (acl_create_entry(&acl, &ent) < 0 || acl_set_tag_type(ent, at) < 0)
			break;
		if ((at == ACL_USER || at == ACL_GROUP) && acl_set_qualifier(ent, &id) < 0)
			break;
		acl_get_permset(ent, &ps);
		acl_clear_perms(ps);
		if (perm & ARCHIVE_ENTRY_ACL_READ)
			acl_add_perm(ps, ACL_READ);
		if (perm & ARCHIVE_ENTRY_ACL_WRITE)
			acl_add_perm(ps, ACL_WRITE);
		if (perm & ARCHIVE_ENTRY_ACL_EXECUTE)
			acl_add_perm(ps, ACL_EXECUTE);
		acl_set_permset(ent, ps);
	}
	/* keep the saved mask: recomputing it would widen the group bits */
	if (acl && (has_mask || acl_calc_mask(&acl) == 0) && acl_valid(acl) == 0)
		return acl;
	acl_free(acl);
	return NULL;
}

/* Owner, mode, xattrs, ACLs, times of an open file or directory; returns
 * true when something changed. */
static int apply_meta(struct rctx *c, int fd, struct archive_entry *en, bool *changed, const char *what, ip_error *e)
{
	struct stat st;
	uid_t uid = map_uid(c, archive_entry_uname(en));
	gid_t gid = map_gid(c, archive_entry_gname(en));
	mode_t mode = archive_entry_mode(en) & 07777;
	const char *xn;
	const void *xv;
	size_t xl;

	if (fstat(fd, &st) < 0)
		return ip_fail(e, -errno, "cannot stat %s: %s", what, strerror(errno));
	/* With an extended ACL the group bits of the mode are the ACL's mask
	 * (libarchive reports the group entry there instead). */
	if (archive_entry_acl_reset(en, ARCHIVE_ENTRY_ACL_TYPE_ACCESS) > 0) {
		int t, perm, tag, qual;
		const char *nm;
		while (archive_entry_acl_next(en, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, &t, &perm, &tag, &qual, &nm) == ARCHIVE_OK)
			if (tag == ARCHIVE_ENTRY_ACL_MASK)
				mode = (mode & ~(mode_t)070) | (mode_t)((perm & 7) << 3);
	}
	if (!c->o->trusted) {
		mode_t strip = S_ISDIR(st.st_mode) ? S_ISUID : (S_ISUID | S_ISGID);
		if (mode & strip) {
			mode &= ~strip;
			c->neutralised++;
		}
	}
	if (st.st_uid != uid || st.st_gid != gid) {
		if (fchown(fd, uid, gid) < 0)
			return ip_fail(e, -errno, "cannot set the owner of %s: %s", what, strerror(errno));
		*changed = true;
		fstat(fd, &st);
	}
	if ((st.st_mode & 07777) != mode) {
		if (fchmod(fd, mode) < 0)
			return ip_fail(e, -errno, "cannot set the mode of %s: %s", what, strerror(errno));
		*changed = true;
	}
	archive_entry_xattr_reset(en);
	while (archive_entry_xattr_next(en, &xn, &xv, &xl) == ARCHIVE_OK) {
		char cur[65536];
		ssize_t n;

		if (!xattr_allowed(c, xn)) {
			if (!strncmp(xn, "security.capability", 19) || !strncmp(xn, "trusted.", 8))
				c->neutralised++;
			continue;
		}
		n = fgetxattr(fd, xn, cur, sizeof(cur));
		if (n == (ssize_t)xl && !memcmp(cur, xv, xl))
			continue;
		if (fsetxattr(fd, xn, xv, xl, 0) < 0)
			return ip_fail(e, -errno, "cannot set the extended attribute %s of %s: %s", xn, what, strerror(errno));
		*changed = true;
	}
	acl_t acl = build_acl(c, en, ARCHIVE_ENTRY_ACL_TYPE_ACCESS);
	if (acl) {
		acl_t curacl = acl_get_fd(fd);
		if (!curacl || acl_cmp(curacl, acl) != 0) {
			if (acl_set_fd(fd, acl) < 0) {
				int err = errno;
				acl_free(acl);
				acl_free(curacl);
				return ip_fail(e, -err, "cannot set the ACL of %s: %s", what, strerror(err));
			}
			*changed = true;
		}
		acl_free(curacl);
		acl_free(acl);
	}
	else if (acl_extended_fd(fd) == 1) {
		/* inherited from a parent's default ACL, not saved: back to the mode */
		acl_t plain = acl_from_mode(mode);
		if (plain && acl_set_fd(fd, plain) == 0)
			*changed = true;
		acl_free(plain);
	}
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	if (S_ISDIR(st.st_mode) && !(acl = build_acl(c, en, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT))) {
		acl_t curdef = acl_get_file(p, ACL_TYPE_DEFAULT);
		if (curdef && acl_entries(curdef) > 0 && acl_delete_def_file(p) == 0)
			*changed = true;
		acl_free(curdef);
	} else if (S_ISDIR(st.st_mode)) {
		acl_t curacl = acl_get_file(p, ACL_TYPE_DEFAULT);
		if (!curacl || acl_cmp(curacl, acl) != 0) {
			if (acl_set_file(p, ACL_TYPE_DEFAULT, acl) < 0) {
				int err = errno;
				acl_free(acl);
				acl_free(curacl);
				return ip_fail(e, -err, "cannot set the default ACL of %s: %s", what, strerror(err));
			}
			*changed = true;
		}
		acl_free(curacl);
		acl_free(acl);
	}
	if (!S_ISDIR(st.st_mode) && archive_entry_mtime_is_set(en)) {
		fstat(fd, &st);
		if (st.st_mtim.tv_sec != archive_entry_mtime(en) || st.st_mtim.tv_nsec != archive_entry_mtime_nsec(en)) {
			struct timespec ts[2] = {
				{ archive_entry_atime(en), archive_entry_atime_nsec(en) },
				{ archive_entry_mtime(en), archive_entry_mtime_nsec(en) },
			};
			if (!archive_entry_atime_is_set(en))
				ts[0].tv_nsec = UTIME_OMIT;
			if (futimens(fd, ts) < 0)
				return ip_fail(e, -errno, "cannot set the times of %s: %s", what, strerror(errno));
			*changed = true;
		}
	}
	return 0;
}

/* ---- entries ---- */

static int hash_fd_eq(int fd, enum mig_hash_alg alg, json_object *ment)
{
	char hex[MIG_HASH_HEX];

	if (mig_hash_fd(fd, alg, hex) < 0)
		return 0;
	return jstr(ment, "hash") && !strcmp(jstr(ment, "hash"), hex);
}

/* A trailing hole leaves the file short: only then is ftruncate needed. */
static bool pos_written(int fd, int64_t size)
{
	struct stat st;
	return fstat(fd, &st) < 0 || st.st_size != size;
}

/* Write the entry's data into fd (sparse), checking the manifest hash. */
static int write_data(struct rctx *c, int fd, struct archive_entry *en, json_object *ment, const char *what, ip_error *e)
{
	struct mig_hash st;
	char hex[MIG_HASH_HEX];
	int64_t pos = 0, size = archive_entry_size(en);

	mig_hash_init(&st, c->alg);
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int k = archive_read_data_block(c->ar->a, &buf, &len, &off);
		if (k == ARCHIVE_EOF)
			break;
		if (k < ARCHIVE_WARN)
			return ip_fail(e, -EBADMSG, "%s is damaged or truncated (%s): the store cannot be restored",
				       c->ar->file, archive_error_string(c->ar->a));
		if (off < pos || off + (int64_t)len > size)
			return ip_fail(e, -EBADMSG, "%s holds data outside a file's size: the store is damaged or hostile", c->ar->file);
		mig_hash_zeros(&st, (uint64_t)(off - pos));
		mig_hash_update(&st, buf, len);
		for (size_t done = 0; done < len;) {
			ssize_t n = pwrite(fd, (const char *)buf + done, len - done, off + (off_t)done);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return ip_fail(e, -errno, "cannot write %s: %s", what, strerror(errno));
			}
			done += (size_t)n;
		}
		pos = off + (int64_t)len;
	}
	mig_hash_zeros(&st, (uint64_t)(size - pos));
	if (pos_written(fd, size) && ftruncate(fd, size) < 0)
		return ip_fail(e, -errno, "cannot write %s: %s", what, strerror(errno));
	mig_hash_hex(&st, hex);
	return mig_areader_check_hash(c->ar, ment, hex, e);
}

/* One entry into directory pfd under the name base (rel for messages). */
static int put_entry(struct rctx *c, int pfd, const char *base, const char *rel, struct archive_entry *en,
		     json_object *ment, int homefd, ip_error *e)
{
	mode_t type = archive_entry_filetype(en);
	const char *hl = archive_entry_hardlink(en);
	struct stat cur;
	bool have = fstatat(pfd, base, &cur, AT_SYMLINK_NOFOLLOW) == 0;
	bool changed = false;
	char tmp[300];
	int r;

	snprintf(tmp, sizeof(tmp), ".%.200s.inplace-tmp", base);
	if (have && S_ISDIR(cur.st_mode) && (hl || type != AE_IFDIR)) {
		refuse(c, rel, "a directory is in the way");
		return 0;
	}
	if (hl) {
		struct stat ts;
		_cleanup_free_ char *tdir = NULL;
		const char *tb;
		if (strncmp(hl, c->prefix, 5) || !mig_path_safe(hl + 5) || !json_object_object_get_ex(c->done, hl, NULL)) {
			refuse(c, rel, "hardlink to a file this archive did not restore");
			return 0;
		}
		tdir = strdup(hl + 5);
		char *sl = strrchr(tdir, '/');
		tb = sl ? sl + 1 : tdir;
		if (sl)
			*sl = '\0';
		_cleanup_close_ int tfd = sl ? mig_openat_beneath(homefd, tdir, O_RDONLY | O_DIRECTORY, 0) : dup(homefd);
		if (tfd < 0 || fstatat(tfd, tb, &ts, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(ts.st_mode)) {
			refuse(c, rel, "hardlink target is not a restored regular file");
			return 0;
		}
		if (have && cur.st_ino == ts.st_ino && cur.st_dev == ts.st_dev) {
			c->unchanged++;
			return 0;
		}
		if (c->o->dry_run) {
			c->written++;
			return 0;
		}
		unlinkat(pfd, tmp, 0);
		if (linkat(tfd, tb, pfd, tmp, 0) < 0 || renameat(pfd, tmp, pfd, base) < 0)
			return ip_fail(e, -errno, "cannot link %s: %s", rel, strerror(errno));
		c->written++;
		return 0;
	}
	switch (type) {
	case AE_IFREG: {
		_cleanup_close_ int fd = -1;
		if (have && S_ISREG(cur.st_mode) && cur.st_size == archive_entry_size(en)) {
			fd = mig_openat_beneath(pfd, base, O_RDONLY | O_NOFOLLOW, 0);
			if (fd >= 0 && hash_fd_eq(fd, c->alg, ment)) {
				if (!c->o->dry_run && (r = apply_meta(c, fd, en, &changed, rel, e)) < 0)
					return r;
				json_object_object_add(c->done, archive_entry_pathname(en), NULL);
				if (changed)
					c->written++;
				else
					c->unchanged++;
				return 0;
			}
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
		if (c->o->dry_run) {
			c->written++;
			json_object_object_add(c->done, archive_entry_pathname(en), NULL);
			return 0;
		}
		/* Nothing there: create the file under its own name (O_EXCL, so
		 * never through a planted link) and remove it if the content
		 * disagrees with the manifest.  Something there: write a temporary
		 * and rename it over, so the old file stays whole until the new
		 * one is checked. */
		const char *wname = have ? tmp : base;
		fd = openat(pfd, wname, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST && have) {
			unlinkat(pfd, tmp, 0);
			fd = openat(pfd, wname, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		}
		if (fd < 0)
			return ip_fail(e, -errno, "cannot create %s: %s", rel, strerror(errno));
		if ((r = write_data(c, fd, en, ment, rel, e)) < 0 || (r = apply_meta(c, fd, en, &changed, rel, e)) < 0) {
			unlinkat(pfd, wname, 0);
			return r;
		}
		if (have && renameat(pfd, tmp, pfd, base) < 0) {
			r = -errno;
			unlinkat(pfd, tmp, 0);
			return ip_fail(e, r, "cannot put %s in place: %s", rel, strerror(-r));
		}
		json_object_object_add(c->done, archive_entry_pathname(en), NULL);
		c->written++;
		return 0;
	}
	case AE_IFDIR: {
		if (c->o->dry_run) {
			(have ? c->unchanged++ : c->written++);
			return 0;
		}
		if (!have && mkdirat(pfd, base, 0700) < 0 && errno != EEXIST)
			return ip_fail(e, -errno, "cannot create %s: %s", rel, strerror(errno));
		_cleanup_close_ int fd = mig_openat_beneath(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
		if (fd < 0) {
			refuse(c, rel, "not a directory in the new root (a symlink or file is in the way)");
			return 0;
		}
		if ((r = apply_meta(c, fd, en, &changed, rel, e)) < 0)
			return r;
		if (archive_entry_mtime_is_set(en))
			json_object_object_add(c->dirtimes, archive_entry_pathname(en),
					       json_object_new_int64(archive_entry_mtime(en)));
		(changed || !have ? c->written++ : c->unchanged++);
		return 0;
	}
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(en);
		char buf[4096];
		ssize_t n;
		uid_t uid = map_uid(c, archive_entry_uname(en));
		gid_t gid = map_gid(c, archive_entry_gname(en));
		if (!target || !*target) {
			refuse(c, rel, "symlink without a target");
			return 0;
		}
		bool same = have && S_ISLNK(cur.st_mode) &&
			    (n = readlinkat(pfd, base, buf, sizeof(buf) - 1)) >= 0 && (buf[n] = '\0', !strcmp(buf, target));
		if (same && cur.st_uid == uid && cur.st_gid == gid) {
			c->unchanged++;
			return 0;
		}
		if (c->o->dry_run) {
			c->written++;
			return 0;
		}
		const char *name = same ? base : tmp;
		if (!same) {
			unlinkat(pfd, tmp, 0);
			if (symlinkat(target, pfd, tmp) < 0)
				return ip_fail(e, -errno, "cannot create the symlink %s: %s", rel, strerror(errno));
		}
		if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			return ip_fail(e, -errno, "cannot set the owner of %s: %s", rel, strerror(errno));
		struct timespec ts[2] = { { 0, UTIME_OMIT }, { archive_entry_mtime(en), archive_entry_mtime_nsec(en) } };
		utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW);
		if (!same && renameat(pfd, tmp, pfd, base) < 0)
			return ip_fail(e, -errno, "cannot put the symlink %s in place: %s", rel, strerror(errno));
		c->written++;
		return 0;
	}
	case AE_IFIFO: {
		if (have && S_ISFIFO(cur.st_mode)) {
			c->unchanged++;
			return 0;
		}
		if (c->o->dry_run) {
			c->written++;
			return 0;
		}
		unlinkat(pfd, tmp, 0);
		if (mkfifoat(pfd, tmp, 0600) < 0)
			return ip_fail(e, -errno, "cannot create the fifo %s: %s", rel, strerror(errno));
		_cleanup_close_ int fd = mig_openat_beneath(pfd, tmp, O_RDONLY | O_NONBLOCK | O_NOFOLLOW, 0);
		if (fd < 0 || (r = apply_meta(c, fd, en, &changed, rel, e)) < 0 || renameat(pfd, tmp, pfd, base) < 0) {
			unlinkat(pfd, tmp, 0);
			return ip_fail(e, -EIO, "cannot create the fifo %s", rel);
		}
		c->written++;
		return 0;
	}
	default:
		refuse(c, rel, "device nodes and sockets are never restored");
		return 0;
	}
}

static int set_dir_times(struct rctx *c, int homefd)
{
	json_object_object_foreach(c->dirtimes, path, v) {
		struct timespec ts[2] = { { 0, UTIME_OMIT }, { json_object_get_int64(v), 0 } };
		const char *rel = strlen(path) > 5 ? path + 5 : ".";
		int fd = strcmp(rel, ".") ? mig_openat_beneath(homefd, rel, O_RDONLY | O_DIRECTORY, 0) : dup(homefd);
		struct stat st;
		if (fd < 0)
			continue;
		if (fstat(fd, &st) == 0 && st.st_mtim.tv_sec != ts[1].tv_sec)
			futimens(fd, ts);
		close(fd);
	}
	return 0;
}

static int restore_user(struct rctx *c, int storefd, json_object *mu, json_object *accounts, ip_error *e)
{
	const char *name = jstr(mu, "name"), *home = NULL;
	struct mig_rec *pw = mig_db_find(&c->acc.db[MIG_PASSWD], name);
	struct mig_areader ar;
	struct archive_entry *en;
	json_object *m;
	_cleanup_close_ int homefd = -1;
	int r;

	(void)accounts;
	c->system = !strcmp(name, MIG_SYSTEM_USER);
	c->prefix = c->system ? "root/" : "home/";
	if (c->system && !c->o->trusted) {
		/* [system] paths may land anywhere in the new OS: only from a
		 * store the caller vouches for */
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "skipped", json_object_new_string("system paths need --trusted-store"));
		json_object_array_add(c->report_users, o);
		return 0;
	}
	if (c->system)
		home = "/";
	else if (!pw && !c->o->dry_run)
		return ip_fail(e, -ENOENT, "user %s was not created in the new root", name);
	if (!c->system)
		home = pw ? pw->f[5] : jstr(mu, "home");
	if (!home || home[0] != '/' || (!c->system && !mig_path_safe(home + 1)))
		return ip_fail(e, -EINVAL, "the home directory of %s is not a safe absolute path: the store is damaged or hostile", name);
	c->user = name;
	c->uid = pw ? (uid_t)mig_rec_id(pw) : 0;
	c->gid = pw ? (gid_t)strtoul(pw->f[3], NULL, 10) : 0;
	c->written = c->unchanged = c->refused = c->neutralised = 0;
	c->first_refusal[0] = '\0';
	c->done = json_object_new_object();
	c->dirtimes = json_object_new_object();
	if (c->system && !c->o->dry_run) {
		if ((homefd = dup(c->rootfd)) < 0) {
			r = ip_fail(e, -errno, "out of file descriptors");
			goto out_free;
		}
	} else if (!c->o->dry_run) {
		bool created;
		homefd = mig_mkdirs_beneath(c->rootfd, home + 1, 0755, (uid_t)-1, (gid_t)-1, &created);
		if (homefd < 0) {
			r = ip_fail(e, homefd, "cannot create the home %s of %s in the new root: %s%s", home, name,
				    strerror(-homefd), homefd == -ELOOP ? " (a symlink on the way; refused)" : "");
			goto out_free;
		}
		if (created && (fchown(homefd, c->uid, c->gid) < 0 || fchmod(homefd, 0700) < 0)) {
			r = ip_fail(e, -errno, "cannot set the owner of %s: %s", home, strerror(errno));
			goto out_free;
		}
	}
	char *cdir = NULL;
	int cfd = -1;
	c->ar = &ar;
	r = mig_areader_open(&ar, storefd, mu, c->alg, e);
	while (r == 0 && (r = mig_areader_next(&ar, &en, &m, e)) == 0) {
		const char *p = archive_entry_pathname(en);
		_cleanup_close_ int pfd = -1;
		_cleanup_free_ char *dir = NULL;
		const char *base;

		if (c->o->dry_run) {
			if (S_ISREG(archive_entry_mode(en)))
				archive_read_data_skip(ar.a);
			if (strcmp(p, "home") && (strncmp(p, c->prefix, 5) || !mig_path_safe(p + 5)) &&
			    strcmp(p, "extra/crontab") && strcmp(p, "extra/mail"))
				refuse(c, p, "path outside the home");
			else
				c->written++;
			continue;
		}
		if (!strcmp(p, "home") && !c->system) {
			bool changed = false;
			if (archive_entry_filetype(en) != AE_IFDIR) {
				refuse(c, p, "the home is not a directory");
				continue;
			}
			if ((r = apply_meta(c, homefd, en, &changed, home, e)) < 0)
				break;
			if (archive_entry_mtime_is_set(en))
				json_object_object_add(c->dirtimes, "home", json_object_new_int64(archive_entry_mtime(en)));
			continue;
		}
		if (!c->system && (!strcmp(p, "extra/crontab") || !strcmp(p, "extra/mail"))) {
			bool cron = !strcmp(p, "extra/crontab");
			if (archive_entry_filetype(en) != AE_IFREG) {
				refuse(c, p, "not a regular file");
				continue;
			}
			pfd = mig_mkdirs_beneath(c->rootfd, cron ? "var/spool/cron/crontabs" : "var/mail", cron ? 01730 : 02775,
						 0, (gid_t)map_gid(c, cron ? "crontab" : "mail"), NULL);
			if (pfd < 0) {
				refuse(c, p, "its directory in the new root cannot be opened safely");
				continue;
			}
			if ((r = put_entry(c, pfd, name, p, en, m, homefd, e)) < 0)
				break;
			continue;
		}
		if (strncmp(p, c->prefix, 5) || !mig_path_safe(p + 5)) {
			refuse(c, p, "path outside the home (absolute, '..' or empty component)");
			continue;
		}
		if (!(dir = strdup(p + 5))) {
			r = ip_fail(e, -ENOMEM, "out of memory");
			break;
		}
		char *sl = strrchr(dir, '/');
		if (sl) {
			*sl = '\0';
			base = sl + 1;
			/* entries come directory by directory: keep the last one open */
			if (cdir && !strcmp(cdir, dir)) {
				pfd = dup(cfd);
			} else {
				pfd = mig_mkdirs_beneath(homefd, dir, c->system ? 0755 : 0700, c->uid, c->gid, NULL);
				if (pfd >= 0) {
					if (cfd >= 0)
						close(cfd);
					free(cdir);
					cfd = dup(pfd);
					cdir = strdup(dir);
				}
			}
		} else {
			base = p + 5;
			pfd = dup(homefd);
		}
		if (pfd < 0) {
			refuse(c, p, pfd == -ELOOP ? "a symlink on the way" : "its directory cannot be opened safely");
			continue;
		}
		if ((r = put_entry(c, pfd, base, p, en, m, homefd, e)) < 0)
			break;
	}
	if (cfd >= 0)
		close(cfd);
	free(cdir);
	if (r == 1)
		r = mig_areader_finish(&ar, e);
	mig_areader_close(&ar);
	if (r == 0 && !c->o->dry_run)
		set_dir_times(c, homefd);
	if (r == 0) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "home", json_object_new_string(home));
		json_object_object_add(o, "uid", json_object_new_int64(c->uid));
		json_object_object_add(o, "written", ip_json_u64(c->written));
		json_object_object_add(o, "unchanged", ip_json_u64(c->unchanged));
		json_object_object_add(o, "refused", ip_json_u64(c->refused));
		json_object_object_add(o, "neutralised", ip_json_u64(c->neutralised));
		json_object_array_add(c->report_users, o);
		if (c->refused)
			r = ip_fail(e, -EPERM, "refused %llu entries of %s (first %s): the store is damaged or hostile; nothing was written outside the root",
				    (unsigned long long)c->refused, ar.file, c->first_refusal);
	}
out_free:
	json_object_put(c->done);
	json_object_put(c->dirtimes);
	c->done = c->dirtimes = NULL;
	return r;
}

static bool user_selected(json_object *sel, const char *name);

/* Homes are independent once the accounts are written: restore them in
 * parallel, one thread per user, at most two per core. */
struct rjob {
	struct rctx c;
	int storefd;
	json_object *mu;
	ip_error e;
	int r;
};

static int home_job(void *arg, size_t i)
{
	struct rjob *j = (struct rjob *)arg + i;

	return j->r = restore_user(&j->c, j->storefd, j->mu, NULL, &j->e);
}

static int restore_homes(struct rctx *c, int storefd, json_object *users, json_object *sel, ip_error *e)
{
	size_t n = 0, total = json_object_array_length(users);
	struct rjob *jobs = calloc(total + 1, sizeof(*jobs));
	atomic_int stop = 0;
	int r = 0;

	if (!jobs)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (size_t i = 0; i < total; i++) {
		json_object *mu = json_object_array_get_idx(users, i);
		if (!user_selected(sel, jstr(mu, "name")))
			continue;
		struct rjob *j = &jobs[n++];
		j->c = *c;
		j->c.report_users = json_object_new_array();
		j->storefd = storefd;
		j->mu = mu;
	}
	/* restoring waits on the disk as much as on the CPU: two per core */
	mig_parallel(n, mig_ncpu() * 2, &stop, home_job, jobs);
	for (size_t i = 0; i < n; i++) {
		struct rjob *j = &jobs[i];
		if (j->r < 0 && !r) {
			*e = j->e;
			r = j->r;
		}
		for (size_t k = 0; k < json_object_array_length(j->c.report_users); k++)
			json_object_array_add(c->report_users, json_object_get(json_object_array_get_idx(j->c.report_users, k)));
		json_object_put(j->c.report_users);
	}
	free(jobs);
	return r;
}

static bool user_selected(json_object *sel, const char *name)
{
	return name && json_object_object_get_ex(sel, name, NULL);
}

/* Every archive that will be restored, read whole before anything is
 * written: a store refused here leaves the new root as it was.  Archives
 * are independent: read them in parallel, one per core. */
struct cjob {
	int storefd;
	enum mig_hash_alg alg;
	json_object *mu;
	ip_error e;
	int r;
};

static int check_job(void *arg, size_t i)
{
	struct cjob *j = (struct cjob *)arg + i;

	return j->r = mig_archive_check(j->storefd, j->mu, j->alg, NULL, NULL, &j->e);
}

static int check_archives(struct rctx *c, int storefd, json_object *users, json_object *sel, ip_error *e)
{
	size_t n = 0, total = json_object_array_length(users);
	struct cjob *jobs = calloc(total + 1, sizeof(*jobs));
	atomic_int stop = 0;
	int r = 0;

	if (!jobs)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (size_t i = 0; i < total; i++) {
		json_object *mu = json_object_array_get_idx(users, i);
		const char *name = jstr(mu, "name");
		if (user_selected(sel, name) && (strcmp(name, MIG_SYSTEM_USER) || c->o->trusted))
			jobs[n++] = (struct cjob){ .storefd = storefd, .alg = c->alg, .mu = mu };
	}
	mig_parallel(n, mig_ncpu(), &stop, check_job, jobs);
	for (size_t i = 0; i < n && !r; i++)
		if (jobs[i].r < 0) {
			*e = jobs[i].e;
			r = jobs[i].r;
		}
	free(jobs);
	return r;
}

/* Homes that stayed on their own filesystem: their files carry the old
 * numbers, moved to the new ones of the same names (the map of
 * plan_accounts, read back from the accounts so a rerun finds it too). */
static int reown_kept(struct rctx *c, const struct mig_trust_plan *p, const char *root, json_object *manifest,
		      json_object *report, ip_error *e)
{
	_cleanup_free_ struct mig_idmap *um = calloc(p->nusers + 1, sizeof(*um)), *gm = calloc(p->ngroups + 1, sizeof(*gm));
	size_t nu = 0, ng = 0;

	if (!um || !gm)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->nusers; i++) {
		struct mig_rec *r = p->users[i].selected ? mig_db_find(&c->acc.db[MIG_PASSWD], p->users[i].name) : NULL;

		if (r && mig_rec_id(r) >= 0 && mig_rec_id(r) != p->users[i].uid)
			um[nu++] = (struct mig_idmap){ p->users[i].uid, mig_rec_id(r) };
	}
	for (size_t i = 0; i < p->ngroups; i++) {
		struct mig_rec *r = p->groups[i].needed ? mig_db_find(&c->acc.db[MIG_GROUP], p->groups[i].name) : NULL;

		if (r && mig_rec_id(r) >= 0 && mig_rec_id(r) != p->groups[i].gid)
			gm[ng++] = (struct mig_idmap){ p->groups[i].gid, mig_rec_id(r) };
	}
	return mig_kept_reown(c->rootfd, root, manifest, um, nu, gm, ng, c->o->dry_run, report, e);
}

int migrate_restore(const char *store, const char *root, const struct migrate_restore_opts *o,
		    json_object **out, ip_error *e)
{
	_cleanup_close_ int sfd = -1;
	_cleanup_json_ json_object *manifest = NULL, *accounts = NULL, *machine = NULL, *sel = NULL, *doc = NULL;
	json_object *users;
	struct rctx c = { .rootfd = -1, .o = o };
	struct mig_trust_plan plan = { 0 };
	int r;

	if ((r = mig_store_open(store, &sfd, e)) < 0 || (r = mig_store_load(sfd, store, &c.alg, &manifest, e)) < 0 ||
	    (r = mig_store_read_json(sfd, "accounts.json", &accounts, e)) < 0 ||
	    (r = mig_store_read_json(sfd, "machine.json", &machine, e)) < 0)
		return r;
	if (!json_object_object_get_ex(manifest, "users", &users) || !json_object_is_type(users, json_type_array))
		return ip_fail(e, -EINVAL, "manifest.json of %s lists no users: the store is damaged", store);
	sel = json_object_new_object();
	for (size_t i = 0; i < json_object_array_length(users); i++) {
		const char *n = jstr(json_object_array_get_idx(users, i), "name");
		if (!n || (strcmp(n, MIG_SYSTEM_USER) && !mig_name_valid(n)))
			return ip_fail(e, -EINVAL, "manifest.json names a user that is not a valid account name: the store is damaged or hostile");
		/* one user twice would have two workers race over one home */
		for (size_t k = 0; k < i; k++)
			if (!strcmp(n, jstr(json_object_array_get_idx(users, k), "name")))
				return ip_fail(e, -EINVAL, "manifest.json lists user '%s' twice: the store is damaged or hostile", n);
	}
	if (o->users) {
		_cleanup_free_ char *list = strdup(o->users);
		char *save = NULL;
		if (!list)
			return ip_fail(e, -ENOMEM, "out of memory");
		for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			bool found = false;
			for (size_t i = 0; i < json_object_array_length(users); i++)
				found |= !strcmp(jstr(json_object_array_get_idx(users, i), "name"), t);
			if (!found)
				return ip_bad(e, -ENOENT, "unknown user '%s' in --users: the store holds no profile of that name (see 'inplace profile list')", t);
			json_object_object_add(sel, t, NULL);
		}
	} else {
		for (size_t i = 0; i < json_object_array_length(users); i++)
			json_object_object_add(sel, jstr(json_object_array_get_idx(users, i), "name"), NULL);
	}
	c.rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c.rootfd < 0)
		return ip_bad(e, -errno, "cannot open the root %s: %s", root, strerror(errno));
	doc = ip_json_doc("profile restore");
	json_object_object_add(doc, "store", json_object_new_string(store));
	json_object_object_add(doc, "root", json_object_new_string(root));
	json_object_object_add(doc, "dry_run", json_object_new_boolean(o->dry_run));
	c.report_users = json_object_new_array();
	json_object_object_add(doc, "users", c.report_users);
	/* Check everything first: the accounts (trust.c), every archive that
	 * will be restored, the machine state; then write accounts; then homes. */
	if ((r = mig_accounts_load(c.rootfd, &c.acc, e)) < 0 ||
	    (r = mig_trust_check(c.rootfd, &c.acc, accounts, users, sel, o->trusted, &plan, e)) < 0 ||
	    (r = check_archives(&c, sfd, users, sel, e)) < 0 ||
	    (!o->no_machine && (r = mig_machine_check(machine, e)) < 0) ||
	    (r = mig_kept_check(manifest, e)) < 0 ||
	    (r = plan_accounts(&c, &plan, doc, e)) < 0)
		goto out;
	bool acc_changed = false;
	for (int k = 0; k < MIG_NDB; k++)
		acc_changed |= c.acc_dirty[k];
	json_object_object_add(doc, "accounts_changed", json_object_new_boolean(acc_changed));
	if (!o->dry_run && (r = write_accounts(&c, e)) < 0)
		goto out;
	if ((r = restore_homes(&c, sfd, users, sel, e)) < 0 || (r = reown_kept(&c, &plan, root, manifest, doc, e)) < 0)
		goto out;
	if (!o->no_machine && (r = mig_machine_apply(c.rootfd, &c.acc, machine, o->dry_run, o->machine_skip, doc, e)) < 0)
		goto out;
	/* one sync for the whole tree instead of one per file */
	if (!o->dry_run && syncfs(c.rootfd) < 0) {
		r = ip_fail(e, -errno, "cannot sync the new root %s: %s", root, strerror(errno));
		goto out;
	}
	*out = TAKE_PTR(doc);
	r = 0;
out:
	mig_trust_plan_clear(&plan);
	mig_accounts_clear(&c.acc);
	if (c.rootfd >= 0)
		close(c.rootfd);
	return r;
}
