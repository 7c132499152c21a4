/* kept.c — homes that stay on their own filesystem (a separate /home
 * partition) through the reimaging: restore re-owns their files for the
 * accounts it had to give new numbers, with the same map as for the homes
 * it extracts.
 *
 * Two passes so that one remap never lands on another's old number (bob
 * 1001→1002 while carol leaves 1002): first every old id to a temporary
 * id no account uses, then the temporary ids to the new ones.  A marker
 * at the top of the directory (.inplace-reown.json) holds the map and the
 * pass, written durably before each pass, each pass made durable (syncfs)
 * before the marker moves on: after a kill, the rerun picks up the
 * recorded pass with the recorded map, so no file is mapped twice.
 * Hardlinks are seen once per name; a second visit finds the id already
 * moved on, which no pass maps again.  Named entries of POSIX ACLs (u:bob,
 * g:project) move with the same map. */
#include <acl/libacl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "migrate/internal.h"

#define KEPT_MARKER ".inplace-reown.json"
/* Temporary ids: far above any account (login.defs stops at 60000, the
 * 32-bit ids of ext4 go to 2^32 - 2). */
#define KEPT_TEMP_BASE 0xF0000000UL

struct idmaps {
	struct mig_idmap *u, *g;   /* from → to, as used in this pass */
	size_t nu, ng;
};

/* nftw has no user pointer: the walk of this thread */
static __thread struct {
	const struct idmaps *m;
	bool dry_run;
	uint64_t changed;
	int err;
	char err_path[512];
} walk;

static long lookup(const struct mig_idmap *m, size_t n, long id)
{
	for (size_t i = 0; i < n; i++)
		if (m[i].from == id)
			return m[i].to;
	return -1;
}

/* The named user and group entries of one ACL of path, mapped; 0 or -errno. */
static int remap_acl(const char *path, acl_type_t type, const char *xname)
{
	acl_t a;
	acl_entry_t en;
	bool changed = false;
	int r = 0, k;

	/* most files have no extended ACL: one getxattr says so */
	if (lgetxattr(path, xname, NULL, 0) <= 0)
		return 0;
	if (!(a = acl_get_file(path, type)))
		return errno == ENOTSUP || errno == ENODATA ? 0 : -errno;
	for (k = acl_get_entry(a, ACL_FIRST_ENTRY, &en); k == 1; k = acl_get_entry(a, ACL_NEXT_ENTRY, &en)) {
		acl_tag_t tag;
		void *q;
		long to;

		if (acl_get_tag_type(en, &tag) < 0 || (tag != ACL_USER && tag != ACL_GROUP))
			continue;
		if (!(q = acl_get_qualifier(en)))
			continue;
		to = tag == ACL_USER ? lookup(walk.m->u, walk.m->nu, (long)*(uid_t *)q)
				     : lookup(walk.m->g, walk.m->ng, (long)*(gid_t *)q);
		if (to >= 0) {
			uid_t id = (uid_t)to;   /* uid_t and gid_t are both 32-bit */

			if (acl_set_qualifier(en, &id) < 0)
				r = -errno;
			changed = true;
		}
		acl_free(q);
	}
	walk.changed += changed;
	if (r == 0 && changed && !walk.dry_run && acl_set_file(path, type, a) < 0)
		r = -errno;
	acl_free(a);
	return r;
}

static int visit(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	long nu = lookup(walk.m->u, walk.m->nu, (long)st->st_uid);
	long ng = lookup(walk.m->g, walk.m->ng, (long)st->st_gid);
	int r = 0;

	if (flag == FTW_NS || flag == FTW_DNR) {
		/* a file not re-owned would keep another account's number */
		walk.err = -EACCES;
		snprintf(walk.err_path, sizeof(walk.err_path), "%s", path);
		return 1;
	}
	if (f->level == 1 && !strcmp(path + f->base, KEPT_MARKER))
		return 0;
	if (!S_ISLNK(st->st_mode)) {
		r = remap_acl(path, ACL_TYPE_ACCESS, "system.posix_acl_access");
		if (r == 0 && S_ISDIR(st->st_mode))
			r = remap_acl(path, ACL_TYPE_DEFAULT, "system.posix_acl_default");
		if (r < 0) {
			walk.err = r;
			snprintf(walk.err_path, sizeof(walk.err_path), "%s", path);
			return 1;
		}
	}
	if (nu < 0 && ng < 0)
		return 0;
	walk.changed++;
	if (walk.dry_run)
		return 0;
	if (lchown(path, nu < 0 ? (uid_t)-1 : (uid_t)nu, ng < 0 ? (gid_t)-1 : (gid_t)ng) < 0 ||
	    /* chown drops setuid and setgid: the file keeps its mode */
	    (S_ISREG(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) && chmod(path, st->st_mode & 07777) < 0)) {
		walk.err = -errno;
		snprintf(walk.err_path, sizeof(walk.err_path), "%s", path);
		return 1;
	}
	return 0;
}

/* *changed: the entries this pass re-owned (or would) */
static int walk_tree(const char *path, const struct idmaps *m, bool dry_run, uint64_t *changed, ip_error *e)
{
	int r;

	walk.m = m;
	walk.dry_run = dry_run;
	walk.changed = 0;
	walk.err = 0;
	/* FTW_PHYS: a symlink is re-owned itself, never followed; FTW_MOUNT:
	 * the kept filesystem only */
	r = nftw(path, visit, 32, FTW_PHYS | FTW_MOUNT);
	*changed = walk.changed;
	if (r < 0)
		return ip_fail(e, -errno, "cannot walk %s to re-own its files: %s", path, strerror(errno));
	if (walk.err)
		return ip_fail(e, walk.err, "cannot re-own %s: %s", walk.err_path, strerror(-walk.err));
	return 0;
}

static json_object *map_json(const struct mig_idmap *m, size_t n)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < n; i++) {
		json_object *p = json_object_new_array();

		json_object_array_add(p, json_object_new_int64(m[i].from));
		json_object_array_add(p, json_object_new_int64(m[i].to));
		json_object_array_add(a, p);
	}
	return a;
}

/* The map a marker recorded; false when it is damaged. */
static bool map_parse(json_object *a, struct mig_idmap **m, size_t *n)
{
	size_t len;

	if (!json_object_is_type(a, json_type_array))
		return false;
	len = json_object_array_length(a);
	*m = calloc(len + 1, sizeof(**m));
	*n = 0;
	if (!*m)
		return false;
	for (size_t i = 0; i < len; i++) {
		json_object *p = json_object_array_get_idx(a, i);

		if (!json_object_is_type(p, json_type_array) || json_object_array_length(p) != 2)
			return false;
		(*m)[i].from = json_object_get_int64(json_object_array_get_idx(p, 0));
		(*m)[i].to = json_object_get_int64(json_object_array_get_idx(p, 1));
		if ((*m)[i].from < 0 || (*m)[i].to < 0 || (*m)[i].from >= (long)KEPT_TEMP_BASE ||
		    (*m)[i].to >= (long)KEPT_TEMP_BASE)
			return false;
		(*n)++;
	}
	return true;
}

static int marker_write(int dfd, int pass, const struct idmaps *m, ip_error *e)
{
	_cleanup_json_ json_object *o = json_object_new_object();
	const char *s;

	json_object_object_add(o, "pass", json_object_new_int(pass));
	json_object_object_add(o, "users", map_json(m->u, m->nu));
	json_object_object_add(o, "groups", map_json(m->g, m->ng));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	return mig_write_beneath(dfd, KEPT_MARKER, s, strlen(s), 0600, 0, 0, true, e);
}

/* The map of one pass: pass 1 old → temporary, pass 2 temporary → new. */
static int pass_maps(const struct idmaps *full, int pass, struct idmaps *out)
{
	out->u = calloc(full->nu + 1, sizeof(*out->u));
	out->g = calloc(full->ng + 1, sizeof(*out->g));
	out->nu = full->nu;
	out->ng = full->ng;
	if (!out->u || !out->g)
		return -ENOMEM;
	for (size_t i = 0; i < full->nu; i++)
		out->u[i] = pass == 1 ? (struct mig_idmap){ full->u[i].from, (long)(KEPT_TEMP_BASE + i) }
				      : (struct mig_idmap){ (long)(KEPT_TEMP_BASE + i), full->u[i].to };
	for (size_t i = 0; i < full->ng; i++)
		out->g[i] = pass == 1 ? (struct mig_idmap){ full->g[i].from, (long)(KEPT_TEMP_BASE + i) }
				      : (struct mig_idmap){ (long)(KEPT_TEMP_BASE + i), full->g[i].to };
	return 0;
}

static int reown_dir(int rootfd, const char *root, const char *dir, const struct idmaps *want, bool dry_run,
		     json_object *o, ip_error *e)
{
	_cleanup_close_ int dfd = mig_openat_beneath(rootfd, dir + 1, O_RDONLY | O_DIRECTORY, 0);
	_cleanup_free_ char *mtext = NULL;
	_cleanup_json_ json_object *mk = NULL;
	struct idmaps rec = { 0 }, pm = { 0 };
	const struct idmaps *m = want;
	struct stat rst, dst;
	char path[4200];
	uint64_t changed = 0;
	int pass = 1, r = 0;

	json_object_object_add(o, "dir", json_object_new_string(dir));
	if (dfd < 0 || fstat(dfd, &dst) < 0 || fstat(rootfd, &rst) < 0 || dst.st_dev == rst.st_dev) {
		/* not mounted in the new root: nothing of the old files is here */
		json_object_object_add(o, "mounted", json_object_new_boolean(0));
		return 0;
	}
	json_object_object_add(o, "mounted", json_object_new_boolean(1));
	snprintf(path, sizeof(path), "%s%s", root, dir);
	{
		_cleanup_close_ int fd = mig_openat_beneath(dfd, KEPT_MARKER, O_RDONLY, 0);
		char p[64];
		size_t len;

		if (fd >= 0) {
			snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
			if (ip_read_file(p, 1 << 20, &mtext, &len, NULL) < 0 || !(mk = json_tokener_parse(mtext)))
				return ip_fail(e, -EINVAL, "%s/" KEPT_MARKER " is damaged: re-owning cannot resume safely", path);
			pass = json_object_get_int(json_object_object_get(mk, "pass"));
			if ((pass != 1 && pass != 2) || !map_parse(json_object_object_get(mk, "users"), &rec.u, &rec.nu) ||
			    !map_parse(json_object_object_get(mk, "groups"), &rec.g, &rec.ng)) {
				r = ip_fail(e, -EINVAL, "%s/" KEPT_MARKER " is damaged: re-owning cannot resume safely", path);
				goto out;
			}
			/* a cut run's map, not this one's: the files are halfway there */
			m = &rec;
		}
	}
	if (!m->nu && !m->ng)
		goto out;
	if (!dry_run && !mk && (r = marker_write(dfd, 1, m, e)) < 0)
		goto out;
	for (; pass <= 2 && r == 0; pass++) {
		free(pm.u);
		free(pm.g);
		if (pass_maps(m, pass, &pm) < 0) {
			r = ip_fail(e, -ENOMEM, "out of memory");
			break;
		}
		r = walk_tree(path, &pm, dry_run, &changed, e);
		if (r < 0 || dry_run)
			break;
		if (syncfs(dfd) < 0)
			r = ip_fail(e, -errno, "cannot sync %s: %s", path, strerror(errno));
		else if (pass == 1)
			r = marker_write(dfd, 2, m, e);
	}
	if (r == 0 && !dry_run && (unlinkat(dfd, KEPT_MARKER, 0) < 0 || fsync(dfd) < 0) && errno != ENOENT)
		r = ip_fail(e, -errno, "cannot remove %s/" KEPT_MARKER ": %s", path, strerror(errno));
out:
	/* pass 2 moves exactly what pass 1 moved: its count is the files' */
	json_object_object_add(o, "reowned", ip_json_u64(changed));
	free(pm.u);
	free(pm.g);
	free(rec.u);
	free(rec.g);
	return r;
}

int mig_kept_check(json_object *manifest, ip_error *e)
{
	json_object *kept;

	if (!json_object_object_get_ex(manifest, "kept", &kept))
		return 0;
	if (!json_object_is_type(kept, json_type_array))
		return ip_fail(e, -EINVAL, "manifest.json holds a damaged kept list: the store is damaged");
	for (size_t i = 0; i < json_object_array_length(kept); i++)
		if (!mig_kept_dir_valid(mig_json_str(json_object_object_get(json_object_array_get_idx(kept, i), "dir"))))
			return ip_fail(e, -EINVAL, "manifest.json names a kept directory that is not a home directory: the store is damaged or hostile");
	return 0;
}

int mig_kept_reown(int rootfd, const char *root, json_object *manifest, const struct mig_idmap *users, size_t nu,
		   const struct mig_idmap *groups, size_t ng, bool dry_run, json_object *report, ip_error *e)
{
	struct idmaps want = { (struct mig_idmap *)users, (struct mig_idmap *)groups, nu, ng };
	json_object *kept, *out = json_object_new_array();
	int r = 0;

	json_object_object_add(report, "kept", out);
	if (!json_object_object_get_ex(manifest, "kept", &kept) || !json_object_is_type(kept, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(kept) && r == 0; i++) {
		const char *dir = mig_json_str(json_object_object_get(json_object_array_get_idx(kept, i), "dir"));
		json_object *o;

		if (!mig_kept_dir_valid(dir))
			return ip_fail(e, -EINVAL, "manifest.json names a kept directory that is not a home directory: the store is damaged or hostile");
		o = json_object_new_object();
		json_object_array_add(out, o);
		r = reown_dir(rootfd, root, dir, &want, dry_run, o, e);
	}
	return r;
}
