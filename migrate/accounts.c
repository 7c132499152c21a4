/* accounts.c — the colon databases of a root (passwd, shadow, group,
 * gshadow), parsed from that root's files and never through the host's NSS.
 * Lines that are not records (comments, +NIS entries) are kept verbatim so
 * that rewriting a file changes only what we meant to change. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "migrate/internal.h"

const char *const mig_db_path[MIG_NDB] = { "etc/passwd", "etc/shadow", "etc/group", "etc/gshadow" };
static const unsigned db_fields[MIG_NDB] = { 7, 9, 4, 4 };

static void rec_clear(struct mig_rec *r)
{
	for (unsigned i = 0; i < r->nf; i++)
		free(r->f[i]);
	free(r->f);
	free(r->raw);
}

void mig_db_clear(struct mig_db *db)
{
	for (size_t i = 0; i < db->n; i++)
		rec_clear(&db->r[i]);
	free(db->r);
	db->r = NULL;
	db->n = 0;
}

static struct mig_rec *db_push(struct mig_db *db)
{
	struct mig_rec *nr = realloc(db->r, (db->n + 1) * sizeof(*nr));

	if (!nr)
		return NULL;
	db->r = nr;
	memset(&db->r[db->n], 0, sizeof(*nr));
	return &db->r[db->n++];
}

int mig_db_add(struct mig_db *db, const char *const *fields, unsigned nf)
{
	struct mig_rec *r = db_push(db);

	if (!r || !(r->f = calloc(nf, sizeof(char *))))
		return -ENOMEM;
	for (unsigned i = 0; i < nf; i++) {
		if (!(r->f[i] = strdup(fields[i] ? fields[i] : "")))
			return -ENOMEM;
		r->nf = i + 1;
	}
	return 0;
}

int mig_db_parse(struct mig_db *db, enum mig_db_kind kind, const char *text, ip_error *e)
{
	const char *p = text;
	unsigned lineno = 0;

	db->nfields = db_fields[kind];
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		_cleanup_free_ char *line = strndup(p, l);
		struct mig_rec *r;
		unsigned nf = 1;

		lineno++;
		p += l + (nl ? 1 : 0);
		if (!line)
			return ip_fail(e, -ENOMEM, "out of memory");
		if (!*line)
			continue;
		if (!(r = db_push(db)))
			return ip_fail(e, -ENOMEM, "out of memory");
		if (line[0] == '#' || line[0] == '+' || line[0] == '-') {
			r->raw = TAKE_PTR(line);
			continue;
		}
		for (const char *c = line; *c; c++)
			nf += *c == ':';
		if (nf != db->nfields) {
			db->n--;
			return ip_bad(e, -EINVAL, "%s line %u has %u fields instead of %u: repair the file",
				      mig_db_path[kind], lineno, nf, db->nfields);
		}
		if (!(r->f = calloc(nf, sizeof(char *))))
			return ip_fail(e, -ENOMEM, "out of memory");
		char *s = line;
		for (unsigned i = 0; i < nf; i++) {
			char *c = strchr(s, ':');
			if (c)
				*c = '\0';
			if (!(r->f[i] = strdup(s)))
				return ip_fail(e, -ENOMEM, "out of memory");
			r->nf = i + 1;
			s = c ? c + 1 : s + strlen(s);
		}
		if (!r->f[0][0])
			return ip_bad(e, -EINVAL, "%s line %u has an empty name: repair the file",
				      mig_db_path[kind], lineno);
		if ((kind == MIG_PASSWD || kind == MIG_GROUP) && mig_rec_id(r) < 0)
			return ip_bad(e, -EINVAL, "%s line %u has an invalid id '%s': repair the file",
				      mig_db_path[kind], lineno, r->f[2]);
	}
	return 0;
}

char *mig_db_format(const struct mig_db *db)
{
	size_t cap = 1, len = 0;
	char *out;

	for (size_t i = 0; i < db->n; i++) {
		const struct mig_rec *r = &db->r[i];
		if (!r->f)
			cap += strlen(r->raw) + 1;
		else
			for (unsigned j = 0; j < r->nf; j++)
				cap += strlen(r->f[j]) + 1;
	}
	if (!(out = malloc(cap)))
		return NULL;
	for (size_t i = 0; i < db->n; i++) {
		const struct mig_rec *r = &db->r[i];
		if (!r->f) {
			len += (size_t)sprintf(out + len, "%s\n", r->raw);
			continue;
		}
		for (unsigned j = 0; j < r->nf; j++)
			len += (size_t)sprintf(out + len, "%s%c", r->f[j], j + 1 < r->nf ? ':' : '\n');
	}
	out[len] = '\0';
	return out;
}

struct mig_rec *mig_db_find(const struct mig_db *db, const char *name)
{
	for (size_t i = 0; i < db->n; i++)
		if (db->r[i].f && !strcmp(db->r[i].f[0], name))
			return &db->r[i];
	return NULL;
}

long mig_rec_id(const struct mig_rec *r)
{
	char *end;
	unsigned long v;

	if (!r->f || r->nf < 3 || !r->f[2][0] || r->f[2][0] == '-')
		return -1;
	errno = 0;
	v = strtoul(r->f[2], &end, 10);
	if (*end || errno || v > 0xfffffffeUL)
		return -1;
	return (long)v;
}

struct mig_rec *mig_db_find_id(const struct mig_db *db, unsigned long id)
{
	for (size_t i = 0; i < db->n; i++)
		if (db->r[i].f && mig_rec_id(&db->r[i]) == (long)id)
			return &db->r[i];
	return NULL;
}

long mig_db_free_id(const struct mig_db *a, const struct mig_db *b, long preferred, long lo, long hi)
{
	if (preferred >= 0 && !mig_db_find_id(a, (unsigned long)preferred) &&
	    (!b || !mig_db_find_id(b, (unsigned long)preferred)))
		return preferred;
	for (long id = lo; id <= hi; id++)
		if (!mig_db_find_id(a, (unsigned long)id) && (!b || !mig_db_find_id(b, (unsigned long)id)))
			return id;
	return -1;
}

bool mig_group_has_member(const struct mig_rec *g, const char *user)
{
	const char *m = g->f[g->nf - 1];
	size_t l = strlen(user);

	while (*m) {
		const char *c = strchr(m, ',');
		size_t ml = c ? (size_t)(c - m) : strlen(m);
		if (ml == l && !strncmp(m, user, l))
			return true;
		if (!c)
			break;
		m = c + 1;
	}
	return false;
}

int mig_group_add_member(struct mig_rec *g, unsigned field, const char *user)
{
	char *old = g->f[field], *n;

	if (asprintf(&n, "%s%s%s", old, *old ? "," : "", user) < 0)
		return -ENOMEM;
	free(old);
	g->f[field] = n;
	return 0;
}

int mig_accounts_load(int rootfd, struct mig_accounts *a, ip_error *e)
{
	for (int k = 0; k < MIG_NDB; k++) {
		_cleanup_free_ char *text = NULL;
		int r = mig_read_inroot(rootfd, mig_db_path[k], 64 << 20, &text, NULL);

		a->db[k].nfields = db_fields[k];
		if (r == -ENOENT && (k == MIG_SHADOW || k == MIG_GSHADOW))
			continue;
		if (r < 0)
			return ip_error_set(e, r == -ENOENT ? IP_EXIT_BADINPUT : IP_EXIT_FAILED, r, "cannot read %s of the root: %s%s",
				mig_db_path[k], strerror(-r),
				r == -ENOENT ? ": is --root the root of an installed system?" : "");
		r = mig_db_parse(&a->db[k], (enum mig_db_kind)k, text, e);
		if (r < 0)
			return r;
	}
	return 0;
}

void mig_accounts_clear(struct mig_accounts *a)
{
	for (int k = 0; k < MIG_NDB; k++)
		mig_db_clear(&a->db[k]);
}

const char *mig_uid_name(const struct mig_accounts *a, uid_t uid)
{
	struct mig_rec *r = mig_db_find_id(&a->db[MIG_PASSWD], uid);
	return r ? r->f[0] : NULL;
}

const char *mig_gid_name(const struct mig_accounts *a, gid_t gid)
{
	struct mig_rec *r = mig_db_find_id(&a->db[MIG_GROUP], gid);
	return r ? r->f[0] : NULL;
}
