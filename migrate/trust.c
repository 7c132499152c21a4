/* trust.c — the one place that decides what a store may do to the accounts
 * of a new OS.  A store is untrusted input: accounts.json is read once,
 * checked whole, and turned into a plan of users and groups that restore
 * then follows; restore never reads accounts.json itself.
 *
 * The rules (README, "what restore trusts"):
 *  - only accounts the spec selected at save time come back: regular users
 *    listed in the manifest, named validly, once;
 *  - a store user never becomes or changes a system account of the new OS
 *    (root, daemon, nobody, anything with a UID below its UID_MIN), and
 *    root itself comes back only when the save asked for it (include_root)
 *    and the caller trusts the store;
 *  - homes lie under /home or /var/home, for accounts that already exist in
 *    the new OS too;
 *  - UIDs and GIDs are decimal numbers below 2^32-1 and not nobody's
 *    (65534, 65535);
 *  - membership of a system group (GID up to the new OS's SYS_GID_MAX) or
 *    of an admin group, and a primary group of GID 0, come back only with
 *    --trusted-store; otherwise they are withheld and reported. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "migrate/internal.h"

/* Groups that hand out root in all but name, whatever their number. */
static const char *const admin_groups[] = {
	"root", "wheel", "sudo", "admin", "adm", "shadow", "disk", "kmem", "tty", "docker", "lxd",
	"libvirt", "systemd-journal", "staff", "src", "utmp", "video", "input", "lpadmin", NULL,
};

/* Names a store may never create or change, whatever the new OS holds. */
static const char *const system_names[] = {
	"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
	"proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup", "sshd",
	"systemd-network", "systemd-resolve", "messagebus", "polkitd", NULL,
};

static bool in_list(const char *const *l, const char *n)
{
	for (; *l; l++)
		if (!strcmp(*l, n))
			return true;
	return false;
}

bool mig_id_parse(const char *s, long *out)
{
	unsigned long v = 0;

	if (!s || !*s || strlen(s) > 10)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	/* (uid_t)-1 means "no change" to chown; 65534/65535 are nobody's */
	if (v >= 0xffffffffUL || v == 65534 || v == 65535)
		return false;
	*out = (long)v;
	return true;
}

/* login.defs: KEY VALUE lines; the defaults are shadow-utils' own. */
void mig_logindefs_load(int rootfd, struct mig_logindefs *d)
{
	_cleanup_free_ char *text = NULL;
	long sys_uid_max = -1, sys_gid_max = -1;

	d->uid_min = d->gid_min = 1000;
	d->uid_max = d->gid_max = 60000;
	if (mig_read_inroot(rootfd, "etc/login.defs", 1 << 20, &text, NULL) == 0) {
		char *save = NULL;
		for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			char key[32], val[32];
			long v;
			if (sscanf(l, " %31s %31s", key, val) != 2 || key[0] == '#' || !mig_id_parse(val, &v))
				continue;
			if (!strcmp(key, "UID_MIN"))
				d->uid_min = v;
			else if (!strcmp(key, "UID_MAX"))
				d->uid_max = v;
			else if (!strcmp(key, "GID_MIN"))
				d->gid_min = v;
			else if (!strcmp(key, "GID_MAX"))
				d->gid_max = v;
			else if (!strcmp(key, "SYS_UID_MAX"))
				sys_uid_max = v;
			else if (!strcmp(key, "SYS_GID_MAX"))
				sys_gid_max = v;
		}
	}
	/* a nonsensical file must not open the system range to the store */
	if (d->uid_min < 1000)
		d->uid_min = 1000;
	if (d->gid_min < 1000)
		d->gid_min = 1000;
	if (d->uid_max <= d->uid_min || d->uid_max > 60000)
		d->uid_max = 60000;
	if (d->gid_max <= d->gid_min || d->gid_max > 60000)
		d->gid_max = 60000;
	d->sys_uid_max = sys_uid_max >= d->uid_min - 1 ? sys_uid_max : d->uid_min - 1;
	d->sys_gid_max = sys_gid_max >= d->gid_min - 1 ? sys_gid_max : d->gid_min - 1;
}

/* What useradd accepts: never a path, never a field. */
bool mig_name_valid(const char *n)
{
	size_t l = n ? strlen(n) : 0;

	if (!l || l > 32 || n[0] == '-' || n[0] == '.' || (n[0] >= '0' && n[0] <= '9'))
		return false;
	for (size_t i = 0; i < l; i++) {
		char c = n[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.' || (c == '$' && i == l - 1)))
			return false;
	}
	return true;
}

bool mig_home_plausible(const char *home)
{
	const char *rest = !home ? NULL : !strncmp(home, "/home/", 6) ? home + 6 : !strncmp(home, "/var/home/", 10) ? home + 10 : NULL;

	return rest && *rest && !strchr(rest, '/') && mig_path_safe(home + 1);
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) ? mig_json_str(v) : NULL;
}

static bool fields(json_object *arr, unsigned nf, const char **f)
{
	if (!arr || !json_object_is_type(arr, json_type_array) || json_object_array_length(arr) != nf)
		return false;
	for (unsigned i = 0; i < nf; i++) {
		f[i] = mig_json_str(json_object_array_get_idx(arr, i));
		if (!f[i] || strchr(f[i], ':') || strchr(f[i], '\n'))
			return false;
	}
	return true;
}

static struct mig_vgroup *plan_group(struct mig_trust_plan *p, const char *name)
{
	for (size_t i = 0; i < p->ngroups; i++)
		if (!strcmp(p->groups[i].name, name))
			return &p->groups[i];
	return NULL;
}

/* A group is privileged by its name, or by its number in the new OS (its
 * number in the store when the new OS has no group of that name). */
static bool group_privileged(const struct mig_trust_plan *p, const struct mig_accounts *now, const struct mig_vgroup *g)
{
	struct mig_rec *cur = mig_db_find(&now->db[MIG_GROUP], g->name);
	long gid = cur ? mig_rec_id(cur) : g->gid;

	return in_list(admin_groups, g->name) || gid <= p->defs.sys_gid_max;
}

static void withhold(struct mig_trust_plan *p, const char *user, const char *group, const char *kind)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "user", json_object_new_string(user));
	json_object_object_add(o, "group", json_object_new_string(group));
	json_object_object_add(o, "kind", json_object_new_string(kind));
	json_object_array_add(p->withheld, o);
}

void mig_trust_plan_clear(struct mig_trust_plan *p)
{
	for (size_t i = 0; i < p->nusers; i++)
		free(p->users[i].groups);
	free(p->users);
	free(p->groups);
	if (p->withheld)
		json_object_put(p->withheld);
	memset(p, 0, sizeof(*p));
}

#define HOSTILE ": the store is damaged or hostile"

int mig_trust_check(int rootfd, const struct mig_accounts *now, json_object *accounts, json_object *musers,
		    json_object *sel, bool trusted, struct mig_trust_plan *p, ip_error *e)
{
	json_object *users, *groups, *v;
	size_t nu, ng;
	bool include_root = false;
	long min_uid = 1000;

	memset(p, 0, sizeof(*p));
	p->withheld = json_object_new_array();
	mig_logindefs_load(rootfd, &p->defs);
	if (!json_object_object_get_ex(accounts, "users", &users) || !json_object_is_type(users, json_type_array) ||
	    !json_object_object_get_ex(accounts, "groups", &groups) || !json_object_is_type(groups, json_type_array))
		return ip_fail(e, -EINVAL, "accounts.json is damaged: save the profile again");
	/* what the spec selected at save time (absent in older stores: the defaults) */
	if (json_object_object_get_ex(accounts, "include_root", &v))
		include_root = json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
	if (json_object_object_get_ex(accounts, "min_uid", &v) && json_object_is_type(v, json_type_int))
		min_uid = json_object_get_int64(v);
	if (min_uid < 1)
		min_uid = 1;   /* uid 0 is never "regular": root goes by include_root */
	nu = json_object_array_length(users);
	ng = json_object_array_length(groups);
	p->users = calloc(nu + 1, sizeof(*p->users));
	p->groups = calloc(ng + 1, sizeof(*p->groups));
	if (!p->users || !p->groups)
		return ip_fail(e, -ENOMEM, "out of memory");

	for (size_t i = 0; i < ng; i++) {
		json_object *g = json_object_array_get_idx(groups, i);
		struct mig_vgroup *vg = &p->groups[p->ngroups];
		const char *gsf[4];

		if (!fields(json_object_object_get(g, "group"), 4, vg->f) || !mig_name_valid(vg->f[0]) ||
		    (jstr(g, "name") && strcmp(jstr(g, "name"), vg->f[0])))
			return ip_fail(e, -EINVAL, "accounts.json holds a damaged group (entry %zu)" HOSTILE, i);
		vg->name = vg->f[0];
		if (!mig_id_parse(vg->f[2], &vg->gid))
			return ip_fail(e, -ERANGE, "accounts.json gives group '%s' the id '%s', out of range" HOSTILE, vg->name, vg->f[2]);
		if (plan_group(p, vg->name))
			return ip_fail(e, -EINVAL, "accounts.json lists group '%s' twice" HOSTILE, vg->name);
		if (fields(json_object_object_get(g, "gshadow"), 4, gsf) && !strcmp(gsf[0], vg->name)) {
			memcpy(vg->gsf, gsf, sizeof(gsf));
			vg->have_gshadow = true;
		}
		p->ngroups++;
	}

	for (size_t i = 0; i < nu; i++) {
		json_object *u = json_object_array_get_idx(users, i), *sg;
		const char *name = jstr(u, "name");
		struct mig_vuser *vu = &p->users[p->nusers];
		bool listed = false, selected;
		long gid;

		if (!mig_name_valid(name) || !fields(json_object_object_get(u, "passwd"), 7, vu->pw) || strcmp(vu->pw[0], name))
			return ip_fail(e, -EINVAL, "accounts.json holds a damaged user (entry %zu)" HOSTILE, i);
		for (size_t k = 0; k < p->nusers; k++)
			if (!strcmp(p->users[k].name, name))
				return ip_fail(e, -EINVAL, "accounts.json lists user '%s' twice" HOSTILE, name);
		for (size_t k = 0; k < json_object_array_length(musers); k++)
			listed |= !strcmp(jstr(json_object_array_get_idx(musers, k), "name") ?: "", name);
		if (!listed)
			return ip_fail(e, -EINVAL, "accounts.json holds user '%s', whose profile the manifest does not list" HOSTILE, name);
		vu->name = name;
		if (!mig_id_parse(vu->pw[2], &vu->uid) || !mig_id_parse(vu->pw[3], &gid))
			return ip_fail(e, -ERANGE, "accounts.json gives '%s' the ids %s:%s, out of range" HOSTILE,
				       name, vu->pw[2], vu->pw[3]);
		if (fields(json_object_object_get(u, "shadow"), 9, vu->sp) && !strcmp(vu->sp[0], name))
			vu->have_shadow = true;
		selected = json_object_object_get_ex(sel, name, NULL);
		p->nusers++;
		if (!selected)
			continue;
		vu->selected = true;

		/* root: only as the save asked, and only from a trusted store */
		if (vu->uid == 0 || !strcmp(name, "root")) {
			if (!(vu->uid == 0 && !strcmp(name, "root") && include_root))
				return ip_fail(e, -EPERM, "the store would make '%s' (uid %ld) root's account" HOSTILE, name, vu->uid);
			if (!trusted)
				return ip_fail(e, -EPERM, "the store holds root's account (saved with include_root): restore it only with --trusted-store, or leave it out with --users");
			vu->root = true;
			continue;
		}
		struct mig_rec *cur = mig_db_find(&now->db[MIG_PASSWD], name);
		long curid = cur ? mig_rec_id(cur) : -1;
		if (in_list(system_names, name) || (cur && (curid < p->defs.uid_min || curid == 65534)))
			return ip_fail(e, -EPERM, "the store holds '%s', a system account of the new OS: refused" HOSTILE, name);
		if (vu->uid < min_uid)
			return ip_fail(e, -EPERM, "the store holds '%s' with uid %ld, below its own min_uid %ld: not a user the save selected" HOSTILE,
				       name, vu->uid, min_uid);
		if (!mig_home_plausible(vu->pw[5]))
			return ip_fail(e, -EPERM, "accounts.json gives %s the home %s, outside /home and /var/home" HOSTILE,
				       name, vu->pw[5]);
		if (cur && !mig_home_plausible(cur->f[5]) && !trusted)
			return ip_fail(e, -EPERM, "'%s' exists in the new OS with the home %s, outside /home and /var/home: restore it only with --trusted-store",
				       name, cur->f[5]);

		/* groups: the primary one, then the supplementary ones */
		const char *pg = jstr(u, "primary_group");
		struct mig_vgroup *g = pg && *pg ? plan_group(p, pg) : NULL;
		if (pg && *pg && !g && !mig_db_find(&now->db[MIG_GROUP], pg))
			return ip_fail(e, -EINVAL, "accounts.json gives '%s' the primary group '%s', which it does not hold" HOSTILE, name, pg);
		vu->primary = pg && *pg ? pg : NULL;
		if (vu->primary) {
			struct mig_vgroup tmp = { .name = pg, .gid = g ? g->gid : 0 };
			struct mig_rec *gcur = mig_db_find(&now->db[MIG_GROUP], pg);
			if (gcur)
				tmp.gid = mig_rec_id(gcur);
			bool priv = !strcmp(pg, "root") || tmp.gid == 0 || group_privileged(p, now, g ? g : &tmp);
			/* "users" is what a withheld primary group falls back to */
			if (priv && !trusted && strcmp(pg, "users")) {
				withhold(p, name, pg, "primary");
				vu->primary = NULL;   /* restore gives the new OS's "users" */
			} else if (g) {
				g->needed = true;
			}
		}
		if (json_object_object_get_ex(u, "groups", &sg) && json_object_is_type(sg, json_type_array)) {
			size_t n = json_object_array_length(sg);
			if (!(vu->groups = calloc(n + 1, sizeof(char *))))
				return ip_fail(e, -ENOMEM, "out of memory");
			for (size_t k = 0; k < n; k++) {
				const char *gn = mig_json_str(json_object_array_get_idx(sg, k));
				struct mig_vgroup *sgp;
				if (!mig_name_valid(gn))
					return ip_fail(e, -EINVAL, "accounts.json gives '%s' a damaged group name" HOSTILE, name);
				sgp = plan_group(p, gn);
				struct mig_rec *gcur = mig_db_find(&now->db[MIG_GROUP], gn);
				struct mig_vgroup tmp = { .name = gn, .gid = gcur ? mig_rec_id(gcur) : 0 };
				if (!sgp && !gcur)
					continue;   /* nothing to join */
				if (group_privileged(p, now, sgp ? sgp : &tmp) && !trusted) {
					withhold(p, name, gn, "supplementary");
					continue;
				}
				if (sgp)
					sgp->needed = true;
				vu->groups[vu->ngroups++] = gn;
			}
		}
	}
	/* a user the caller selected must have an account in the store */
	json_object_object_foreach(sel, sname, sv) {
		bool found = !strcmp(sname, MIG_SYSTEM_USER);
		(void)sv;
		for (size_t k = 0; k < p->nusers && !found; k++)
			found = !strcmp(p->users[k].name, sname);
		if (!found)
			return ip_fail(e, -EINVAL, "the manifest lists '%s', for whom accounts.json holds no account" HOSTILE, sname);
	}
	/* a store's privileged group is created only from a trusted store */
	for (size_t i = 0; i < p->ngroups; i++)
		if (p->groups[i].needed && group_privileged(p, now, &p->groups[i]))
			p->groups[i].system = true;
	return 0;
}
