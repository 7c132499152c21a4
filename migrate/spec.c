/* spec.c — the profile spec: an INI file (libinih) saying which users and
 * which files to save.  Every key is optional; an unknown one is bad input
 * so that a typo never silently saves less than intended. */
#include <errno.h>
#include <fnmatch.h>
#include <ini.h>
#include <string.h>
#include <strings.h>

#include "migrate/internal.h"

/* Caches and the trash are rebuilt by programs; everything else is data. */
static const char default_exclude[] = ".cache/*,.local/share/Trash/*";

void mig_globs_clear(struct mig_globs *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->v[i]);
	free(g->v);
	g->v = NULL;
	g->n = 0;
}

int mig_globs_add_list(struct mig_globs *g, const char *list)
{
	_cleanup_free_ char *copy = strdup(list);
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char **nv;
		size_t l;

		while (*t == ' ' || *t == '\t')
			t++;
		l = strlen(t);
		while (l && (t[l - 1] == ' ' || t[l - 1] == '\t'))
			t[--l] = '\0';
		while (l > 1 && t[l - 1] == '/')  /* "dir/" means the directory */
			t[--l] = '\0';
		if (!*t)
			continue;
		nv = realloc(g->v, (g->n + 1) * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		g->v = nv;
		if (!(g->v[g->n] = strdup(t)))
			return -ENOMEM;
		g->n++;
	}
	return 0;
}

bool mig_globs_match(const struct mig_globs *g, const char *rel)
{
	char buf[4096];
	size_t l = strlen(rel);

	if (!g->n || l >= sizeof(buf))
		return false;
	memcpy(buf, rel, l + 1);
	/* the path itself, then each parent: excluding a directory excludes
	 * what is inside it */
	for (;;) {
		for (size_t i = 0; i < g->n; i++)
			if (fnmatch(g->v[i], buf, FNM_PERIOD) == 0 || fnmatch(g->v[i], buf, 0) == 0)
				return true;
		char *slash = strrchr(buf, '/');
		if (!slash)
			return false;
		*slash = '\0';
	}
}

const struct mig_user_rule *mig_spec_rule(const migrate_spec *s, const char *user)
{
	for (size_t i = 0; i < s->nrules; i++)
		if (!strcmp(s->rules[i].name, user))
			return &s->rules[i];
	return NULL;
}

struct parse_ctx {
	migrate_spec *s;
	bool set_exclude;      /* [profile] exclude given: it replaces the defaults */
	char bad[256];
	int err;
};

static int parse_ulong(const char *v, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(v, &end, 10);
	if (!*v || *end || errno || *out > max || *v == '-')
		return -EINVAL;
	return 0;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_ctx *c = user;
	migrate_spec *s = c->s;
	unsigned long n;
	int r = 0;

	if (!strcmp(section, "profile")) {
		if (!strcmp(key, "users")) {
			if (!strcasecmp(value, "all")) {
				s->all_users = true;
			} else {
				s->all_users = false;
				r = mig_globs_add_list(&s->users, value);
			}
		} else if (!strcmp(key, "include_root")) {
			r = ip_parse_bool(value, &s->include_root);
		} else if (!strcmp(key, "machine")) {
			r = ip_parse_bool(value, &s->machine);
		} else if (!strcmp(key, "min_uid")) {
			if (!(r = parse_ulong(value, 0xfffffffeUL, &n)))
				s->min_uid = (uid_t)n;
		} else if (!strcmp(key, "level")) {
			if (!(r = parse_ulong(value, 19, &n)) && n >= 1)
				s->level = (unsigned)n;
			else
				r = -EINVAL;
		} else if (!strcmp(key, "threads")) {
			if (!(r = parse_ulong(value, 256, &n)))
				s->threads = (unsigned)n;
		} else if (!strcmp(key, "hash")) {
			r = mig_hash_parse(value, &s->hash);
		} else if (!strcmp(key, "max_size")) {
			ip_error e = { 0 };
			r = strcmp(value, "0") ? ip_parse_size(value, 512, &s->max_size, &e) : (s->max_size = 0, 0);
		} else if (!strcmp(key, "exclude")) {
			c->set_exclude = true;
			r = mig_globs_add_list(&s->exclude, value);
		} else if (!strcmp(key, "include")) {
			r = mig_globs_add_list(&s->include, value);
		} else {
			snprintf(c->bad, sizeof(c->bad), "unknown key '%s' in [profile]", key);
			return 0;
		}
	} else if (!strcmp(section, "system")) {
		if (!strcmp(key, "include"))
			r = mig_globs_add_list(&s->sys_include, value);
		else if (!strcmp(key, "exclude"))
			r = mig_globs_add_list(&s->sys_exclude, value);
		else {
			snprintf(c->bad, sizeof(c->bad), "unknown key '%s' in [system]", key);
			return 0;
		}
	} else if (!strncmp(section, "user ", 5) && section[5]) {
		const char *name = section + 5;
		struct mig_user_rule *u = (struct mig_user_rule *)mig_spec_rule(s, name);

		if (strcmp(key, "include") && strcmp(key, "exclude")) {
			snprintf(c->bad, sizeof(c->bad), "unknown key '%s' in [%s]", key, section);
			return 0;
		}
		if (!u) {
			struct mig_user_rule *nr = realloc(s->rules, (s->nrules + 1) * sizeof(*nr));
			if (!nr)
				return c->err = -ENOMEM, 0;
			s->rules = nr;
			u = &s->rules[s->nrules];
			memset(u, 0, sizeof(*u));
			if (!(u->name = strdup(name)))
				return c->err = -ENOMEM, 0;
			s->nrules++;
		}
		r = mig_globs_add_list(!strcmp(key, "include") ? &u->include : &u->exclude, value);
	} else {
		snprintf(c->bad, sizeof(c->bad), "unknown section [%s]", section);
		return 0;
	}
	if (r == -ENOMEM)
		return c->err = r, 0;
	if (r < 0) {
		snprintf(c->bad, sizeof(c->bad), "invalid value '%.60s' for key '%s' in [%s]", value, key, section);
		return 0;
	}
	return 1;
}

static migrate_spec *spec_defaults(void)
{
	migrate_spec *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->all_users = true;
	s->min_uid = 1000;
	s->machine = true;
	s->level = 3;
	s->hash = MIG_HASH_XXH128;
	if (mig_globs_add_list(&s->exclude, default_exclude) < 0) {
		migrate_spec_free(s);
		return NULL;
	}
	return s;
}

int migrate_spec_parse(const char *text, const char *name, migrate_spec **out, ip_error *e)
{
	struct parse_ctx c = { 0 };
	int line;

	if (!(c.s = spec_defaults()))
		return ip_fail(e, -ENOMEM, "out of memory");
	/* A spec that names excludes replaces the defaults, so one is able to
	 * save caches too; remember whether the file set any. */
	mig_globs_clear(&c.s->exclude);
	line = ini_parse_string(text, handler, &c);
	if (c.err) {
		migrate_spec_free(c.s);
		return ip_fail(e, c.err, "out of memory");
	}
	if (line != 0) {
		migrate_spec_free(c.s);
		if (c.bad[0])
			return ip_bad(e, -EINVAL, "%s at %s line %d: fix or remove it", c.bad, name, line);
		return ip_bad(e, -EINVAL, "syntax error at %s line %d: expected [section] or key = value", name, line);
	}
	if (!c.set_exclude && mig_globs_add_list(&c.s->exclude, default_exclude) < 0) {
		migrate_spec_free(c.s);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	if (!c.s->all_users && !c.s->users.n) {
		migrate_spec_free(c.s);
		return ip_bad(e, -EINVAL, "%s names no users: set users = all or a list of names", name);
	}
	*out = c.s;
	return 0;
}

int migrate_spec_load(const char *path, migrate_spec **out, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	int r;

	if (!path) {
		if (!(*out = spec_defaults()))
			return ip_fail(e, -ENOMEM, "out of memory");
		return 0;
	}
	r = ip_read_file(path, 1 << 20, &text, NULL, e);
	if (r < 0) {
		if (e)
			e->status = IP_EXIT_BADINPUT;
		return r;
	}
	return migrate_spec_parse(text, path, out, e);
}

void migrate_spec_free(migrate_spec *s)
{
	if (!s)
		return;
	mig_globs_clear(&s->users);
	mig_globs_clear(&s->include);
	mig_globs_clear(&s->exclude);
	mig_globs_clear(&s->sys_include);
	mig_globs_clear(&s->sys_exclude);
	for (size_t i = 0; i < s->nrules; i++) {
		free(s->rules[i].name);
		mig_globs_clear(&s->rules[i].include);
		mig_globs_clear(&s->rules[i].exclude);
	}
	free(s->rules);
	free(s);
}
