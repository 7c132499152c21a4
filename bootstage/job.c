/* job.c — the job file of `inplace run`: an INI file read with libinih and
 * validated whole (types, unknown names with a suggestion, duplicates,
 * conflicts) before anything happens.  [profile], [user NAME] and [system]
 * are migrate's profile spec and are handed to migrate_spec_parse() with
 * every other line blanked, so that its messages keep the file's line
 * numbers. */
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <sodium.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "bootstage/internal.h"
#include "partctl/partctl.h"

enum key_type {
	KT_STR,        /* any non-empty text */
	KT_URL,        /* http:// or https:// */
	KT_MIRROR,     /* a URL, repeatable: appended to mirrors */
	KT_BOOL,
	KT_ENUM,       /* one of names[], stored as its index in an int */
	KT_PART,       /* a partition number */
	KT_STORE,      /* "partition" or an absolute directory */
	KT_SIZE_AUTO,  /* SIZE or "auto" (0) */
	KT_DURATION,   /* seconds, with an optional s, m, h or d */
};

static const char *const boot_names[] = { "grub", "kexec", "media", "pxe", "none", NULL };
static const char *const failure_names[] = { "stop", "rollback", NULL };
static const char *const keep_names[] = { "no", "yes", "image", NULL };
static const char *const machine_names[] = {
	"hostname", "hosts", "machine-id", "ssh-host-keys", "network", "timezone", "locale", "keyboard",
};

struct keydef {
	const char *section;
	const char *key;
	enum key_type type;
	size_t off;                 /* of the field in bootstage_job */
	const char *const *names;   /* KT_ENUM */
};

#define F(field) offsetof(bootstage_job, field)
#define M(i) (offsetof(bootstage_job, machine) + (i) * sizeof(bool))
static const struct keydef keys[] = {
	{ "job", "image", KT_STR, F(image), NULL },
	{ "job", "mirror", KT_MIRROR, F(mirrors), NULL },
	{ "job", "key", KT_STR, F(key), NULL },
	{ "job", "require_signature", KT_BOOL, F(require_signature), NULL },
	{ "job", "disk", KT_STR, F(disk), NULL },
	{ "job", "system_partition", KT_PART, F(system_partition), NULL },
	{ "job", "store", KT_STORE, F(store_dir), NULL },
	{ "job", "store_size", KT_SIZE_AUTO, F(store_size), NULL },
	{ "job", "on_failure", KT_ENUM, F(on_failure), failure_names },
	{ "job", "keep_storage", KT_ENUM, F(keep_storage), keep_names },
	{ "job", "rollback_image", KT_BOOL, F(rollback_image), NULL },
	{ "machine", "hostname", KT_BOOL, M(BOOTSTAGE_MACHINE_HOSTNAME), NULL },
	{ "machine", "hosts", KT_BOOL, M(BOOTSTAGE_MACHINE_HOSTS), NULL },
	{ "machine", "machine-id", KT_BOOL, M(BOOTSTAGE_MACHINE_MACHINE_ID), NULL },
	{ "machine", "ssh-host-keys", KT_BOOL, M(BOOTSTAGE_MACHINE_SSH_HOST_KEYS), NULL },
	{ "machine", "network", KT_BOOL, M(BOOTSTAGE_MACHINE_NETWORK), NULL },
	{ "machine", "timezone", KT_BOOL, M(BOOTSTAGE_MACHINE_TIMEZONE), NULL },
	{ "machine", "locale", KT_BOOL, M(BOOTSTAGE_MACHINE_LOCALE), NULL },
	{ "machine", "keyboard", KT_BOOL, M(BOOTSTAGE_MACHINE_KEYBOARD), NULL },
	{ "boot", "method", KT_ENUM, F(boot), boot_names },
	{ "report", "url", KT_URL, F(report_url), NULL },
	{ "report", "spool", KT_BOOL, F(report_spool), NULL },
	{ "report", "ca_cert", KT_STR, F(report_ca_cert), NULL },
	{ "notify", "message", KT_STR, F(notify_message), NULL },
	{ "notify", "countdown", KT_DURATION, F(notify_countdown), NULL },
	{ "notify", "allow_postpone", KT_BOOL, F(notify_allow_postpone), NULL },
	{ "notify", "max_postpone", KT_DURATION, F(notify_max_postpone), NULL },
	{ "notify", "allow_decline", KT_BOOL, F(notify_allow_decline), NULL },
};
#undef F
#undef M
#define NKEYS IP_ARRAY_SIZE(keys)

/* Sections of the job itself, then those of the profile spec. */
static const char *const own_sections[] = { "job", "machine", "boot", "report", "notify", NULL };
static const char *const spec_sections[] = { "profile", "system", "user NAME", NULL };

size_t bootstage_job_key(size_t i, struct bootstage_job_keyinfo *out)
{
	static const char *const values[] = {
		[KT_STR] = "TEXT", [KT_URL] = "URL", [KT_MIRROR] = "URL", [KT_BOOL] = "yes|no",
		[KT_PART] = "N", [KT_STORE] = "partition|DIR", [KT_SIZE_AUTO] = "SIZE|auto",
		[KT_DURATION] = "DURATION",
	};

	if (!out || i >= NKEYS)
		return NKEYS;
	out->section = keys[i].section;
	out->key = keys[i].key;
	out->values[0] = '\0';
	if (keys[i].type != KT_ENUM) {
		snprintf(out->values, sizeof(out->values), "%s", values[keys[i].type]);
		return NKEYS;
	}
	for (size_t j = 0; keys[i].names[j]; j++) {
		size_t l = strlen(out->values);

		snprintf(out->values + l, sizeof(out->values) - l, "%s%s", j ? "|" : "", keys[i].names[j]);
	}
	return NKEYS;
}

const char *bootstage_machine_item_name(enum bootstage_machine_item i)
{
	return (unsigned)i < BOOTSTAGE_MACHINE_N ? machine_names[i] : "";
}

struct jctx {
	bootstage_job *job;
	const char *text;           /* the reader's input */
	size_t pos;
	char *spec_text;            /* text with every non-spec line blanked */
	int line;                   /* of the line being parsed */
	char section[128];
	bool spec_section;          /* the current section belongs to the spec */
	int lines[NKEYS];           /* where each key was set; 0: not set */
	size_t nmirrors;
	crypto_generichash_state hash;
	bool err_set;               /* the first error: its line (0: none) and message */
	int err_line;
	char err[640];
	char want[160];             /* what a bad value should have been */
	bool oom;
};

static void jerr(struct jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jerr(struct jctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c->err_set)
		return;
	c->err_set = true;
	c->err_line = c->line;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

/* Optimal string alignment distance: Levenshtein plus transpositions, so
 * that 'imgae' is one edit from 'image'. */
static unsigned edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned d[40][40];

	if (la >= 40 || lb >= 40)
		return UINT_MAX;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			unsigned cost = a[i - 1] != b[j - 1];
			unsigned v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < v)
				v = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	return d[la][lb];
}

/* The closest of candidates to word, when it is close enough to be a typo
 * (at most 2 edits, and fewer than the word has letters); NULL otherwise. */
static const char *did_you_mean(const char *word, const char *const *cand, size_t n)
{
	const char *best = NULL;
	unsigned bestd = 3;

	for (size_t i = 0; i < n && cand[i]; i++) {
		unsigned d = edit_distance(word, cand[i]);
		if (d < bestd && d < strlen(word)) {
			bestd = d;
			best = cand[i];
		}
	}
	return best;
}

static void unknown_section(struct jctx *c, const char *name)
{
	const char *all[IP_ARRAY_SIZE(own_sections) + IP_ARRAY_SIZE(spec_sections)];
	size_t n = 0;
	const char *hint;

	for (size_t i = 0; own_sections[i]; i++)
		all[n++] = own_sections[i];
	for (size_t i = 0; spec_sections[i]; i++)
		all[n++] = spec_sections[i];
	hint = did_you_mean(name, all, n);
	if (hint)
		jerr(c, "unknown section [%s] (did you mean [%s]?)", name, hint);
	else
		jerr(c, "unknown section [%s]: the sections are [job], [profile], [user NAME], [system], "
		     "[machine], [boot], [report] and [notify]", name);
}

static bool is_spec_section(const char *s)
{
	return !strcmp(s, "profile") || !strcmp(s, "system") || !strncmp(s, "user ", 5);
}

static bool is_own_section(const char *s)
{
	for (size_t i = 0; own_sections[i]; i++)
		if (!strcmp(s, own_sections[i]))
			return true;
	return false;
}

/* A section header line: remember the section and check its name. */
static void section_line(struct jctx *c, const char *p, size_t l)
{
	const char *end = memchr(p, ']', l);
	size_t n;

	if (!end) {
		jerr(c, "a section line without ']': write [section]");
		return;
	}
	n = (size_t)(end - p - 1);
	if (n >= sizeof(c->section)) {
		jerr(c, "section name too long");
		return;
	}
	memcpy(c->section, p + 1, n);
	c->section[n] = '\0';
	/* inih trims the name it hands to the handler; the spec's user
	 * sections must name someone */
	if (!strcmp(c->section, "user") || !strcmp(c->section, "user ")) {
		jerr(c, "[user] needs a user name: write [user NAME]");
		return;
	}
	c->spec_section = is_spec_section(c->section);
	if (!c->spec_section && !is_own_section(c->section))
		unknown_section(c, c->section);
}

/* inih's line source: hands it one line at a time, so that the handler
 * knows the line number, and looks at what inih would take silently:
 * indented lines (continuations of the previous value), lines longer than
 * inih's buffer, and sections without keys. */
static char *job_reader(char *str, int num, void *stream)
{
	struct jctx *c = stream;
	const char *s = c->text + c->pos, *p, *text;
	size_t l, start = c->pos;

	if (c->err_set || !*s)
		return NULL;
	l = strcspn(s, "\n");
	c->pos += l + (s[l] == '\n');
	c->line++;
	if (l >= (size_t)num - 1) {
		jerr(c, "line longer than %d characters", num - 2);
		return NULL;
	}
	memcpy(str, s, l);
	str[l] = '\0';
	/* a UTF-8 byte order mark on the first line, which inih skips too */
	text = s;
	if (c->line == 1 && l >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3))
		text += 3;
	for (p = text; p < s + l && (*p == ' ' || *p == '\t' || *p == '\r'); p++)
		;
	if (p < s + l && *p != ';' && *p != '#') {
		if (p > text) {
			jerr(c, "an indented line continues the value above it: write each key = value on one unindented line");
			return NULL;
		}
		if (*p == '[')
			section_line(c, p, l - (size_t)(p - s));
	}
	if (!c->spec_section)
		memset(c->spec_text + start, ' ', l);
	return str;
}

static bool is_url(const char *v)
{
	return (!strncmp(v, "http://", 7) && v[7]) || (!strncmp(v, "https://", 8) && v[8]);
}

/* "90", "90s", "5m", "2h", "7d" → seconds. */
static int parse_duration(const char *v, unsigned *out)
{
	char *end;
	unsigned long long n, mul = 1;

	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end) {
		switch (*end) {
		case 's': mul = 1; break;
		case 'm': mul = 60; break;
		case 'h': mul = 3600; break;
		case 'd': mul = 86400; break;
		default: return -EINVAL;
		}
		if (end[1])
			return -EINVAL;
	}
	if (n > UINT_MAX / mul)
		return -EINVAL;
	*out = (unsigned)(n * mul);
	return 0;
}

static int set_str(char **field, const char *v)
{
	char *s = strdup(v);

	if (!s)
		return -ENOMEM;
	free(*field);
	*field = s;
	return 0;
}

/* Parse value into the field of k; -EINVAL with what was expected in
 * *want, -ENOMEM. */
static int set_value(struct jctx *c, const struct keydef *k, const char *v, const char **want)
{
	void *field = (char *)c->job + k->off;
	uint64_t size;
	unsigned long n;
	char *end;

	switch (k->type) {
	case KT_STR:
		*want = "a value";
		return *v ? set_str(field, v) : -EINVAL;
	case KT_URL:
		*want = "an http:// or https:// URL";
		return is_url(v) ? set_str(field, v) : -EINVAL;
	case KT_MIRROR: {
		char **m;
		*want = "an http:// or https:// URL";
		if (!is_url(v))
			return -EINVAL;
		m = realloc(c->job->mirrors, (c->nmirrors + 2) * sizeof(*m));
		if (!m)
			return -ENOMEM;
		c->job->mirrors = m;
		if (!(m[c->nmirrors] = strdup(v)))
			return -ENOMEM;
		m[++c->nmirrors] = NULL;
		return 0;
	}
	case KT_BOOL:
		*want = "yes or no";
		return ip_parse_bool(v, field);
	case KT_ENUM:
		for (size_t i = 0; k->names[i]; i++) {
			if (!strcmp(v, k->names[i])) {
				*(int *)field = (int)i;
				return 0;
			}
			/* "grub, kexec, media, pxe or none" */
			snprintf(c->want + strlen(c->want), sizeof(c->want) - strlen(c->want), "%s%s",
				 !i ? "" : k->names[i + 1] ? ", " : " or ", k->names[i]);
		}
		*want = c->want;
		return -EINVAL;
	case KT_PART:
		*want = "a partition number";
		errno = 0;
		n = strtoul(v, &end, 10);
		if (*v < '1' || *v > '9' || *end || errno || n > 256)
			return -EINVAL;
		*(unsigned *)field = (unsigned)n;
		return 0;
	case KT_STORE:
		*want = "'partition' or an absolute directory";
		if (!strcmp(v, "partition")) {
			c->job->store = BOOTSTAGE_STORE_PARTITION;
			return 0;
		}
		if (v[0] != '/')
			return -EINVAL;
		c->job->store = BOOTSTAGE_STORE_DIR;
		return set_str(field, v);
	case KT_SIZE_AUTO:
		*want = "a size (512MiB, 8G) or auto";
		if (!strcmp(v, "auto")) {
			*(uint64_t *)field = 0;
			return 0;
		}
		if (ip_parse_size(v, 512, &size, NULL) < 0 || !size)
			return -EINVAL;
		*(uint64_t *)field = size;
		return 0;
	case KT_DURATION:
		*want = "seconds, or a number with s, m, h or d";
		return parse_duration(v, field);
	}
	return -EINVAL;
}

static int job_handler(void *user, const char *section, const char *key, const char *value)
{
	struct jctx *c = user;
	const char *cand[NKEYS], *want = "", *hint;
	size_t ncand = 0, i;
	int r;

	if (c->err_set || c->oom)
		return 0;
	/* the canonical job: what the file says, without comments or layout */
	crypto_generichash_update(&c->hash, (const unsigned char *)section, strlen(section) + 1);
	crypto_generichash_update(&c->hash, (const unsigned char *)key, strlen(key) + 1);
	crypto_generichash_update(&c->hash, (const unsigned char *)value, strlen(value) + 1);
	if (is_spec_section(section))
		return 1;   /* migrate_spec_parse() judges these */
	if (!*section) {
		jerr(c, "key '%s' outside any section: put it under [job] or the section it belongs to", key);
		return 0;
	}
	for (i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].section, section))
			continue;
		if (!strcmp(keys[i].key, key))
			break;
		cand[ncand++] = keys[i].key;
	}
	if (i == NKEYS) {
		if ((hint = did_you_mean(key, cand, ncand)))
			jerr(c, "unknown key '%s' in [%s] (did you mean '%s'?)", key, section, hint);
		else
			jerr(c, "unknown key '%s' in [%s]: see the job file keys in the README", key, section);
		return 0;
	}
	if (c->lines[i] && keys[i].type != KT_MIRROR) {
		jerr(c, "duplicate key '%s' in [%s] (first set on line %d): keep one", key, section, c->lines[i]);
		return 0;
	}
	c->lines[i] = c->line;
	r = set_value(c, &keys[i], value, &want);
	if (r == -ENOMEM) {
		c->oom = true;
		return 0;
	}
	if (r < 0) {
		jerr(c, "invalid value '%.80s' for '%s' in [%s]: expected %s", value, key, section, want);
		return 0;
	}
	return 1;
}

static int key_line(const struct jctx *c, const char *section, const char *key)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].section, section) && !strcmp(keys[i].key, key))
			return c->lines[i];
	return 0;
}

/* Options that each parse but cannot go together; the line is that of the
 * key to change. */
static void check_conflicts(struct jctx *c)
{
	bootstage_job *j = c->job;
	int l;

	if (!j->image) {
		c->line = 0;
		jerr(c, "[job] names no image: set image = PATH or an http(s):// URL");
		return;
	}
	if (j->require_signature && !j->key) {
		c->line = (l = key_line(c, "job", "require_signature")) ? l : key_line(c, "job", "image");
		jerr(c, "the image must be signed (require_signature = yes, the default) but [job] names no key: "
		     "set key = PUBKEY.pub, or require_signature = no");
	} else if (j->on_failure == BOOTSTAGE_FAIL_ROLLBACK && !j->rollback_image) {
		c->line = key_line(c, "job", "on_failure");
		jerr(c, "on_failure = rollback needs a copy of the old system to roll back to: set rollback_image = yes");
	} else if (j->mirrors[0] && !is_url(j->image)) {
		c->line = key_line(c, "job", "mirror");
		jerr(c, "mirror needs an image URL, but image is the local file %s: remove mirror or make image a URL",
		     j->image);
	} else if (j->store == BOOTSTAGE_STORE_DIR && j->keep_storage != BOOTSTAGE_KEEP_NO) {
		c->line = key_line(c, "job", "keep_storage");
		jerr(c, "keep_storage = %s keeps a storage partition, but store is the directory %s: remove keep_storage",
		     keep_names[j->keep_storage], j->store_dir);
	} else if (!j->report_url && (l = key_line(c, "report", "ca_cert") ?: key_line(c, "report", "spool"))) {
		c->line = l;
		jerr(c, "[report] without url: set url = http(s)://… or remove the section");
	} else if (!j->notify_allow_postpone && (l = key_line(c, "notify", "max_postpone"))) {
		c->line = l;
		jerr(c, "max_postpone is set but allow_postpone = no: remove one of them");
	}
}

static bootstage_job *job_new(void)
{
	bootstage_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	if (!(j->mirrors = calloc(1, sizeof(*j->mirrors)))) {
		free(j);
		return NULL;
	}
	j->require_signature = true;
	for (size_t i = 0; i < BOOTSTAGE_MACHINE_N; i++)
		j->machine[i] = true;
	j->boot = BOOTSTAGE_BOOT_GRUB;
	j->report_spool = true;
	j->notify_countdown = 300;
	j->notify_allow_postpone = true;
	j->notify_max_postpone = 86400;
	return j;
}

int bootstage_job_parse(const char *text, const char *name, bootstage_job **out, ip_error *e)
{
	struct jctx c = { 0 };
	unsigned char h[32];
	int r, line;

	if (!name)
		name = "job";
	if (sodium_init() < 0)
		return ip_fail(e, -EIO, "libsodium cannot start");
	if (!(c.job = job_new()) || !(c.job->name = strdup(name)) || !(c.job->text = strdup(text)) ||
	    !(c.spec_text = strdup(text))) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto fail;
	}
	c.text = text;
	crypto_generichash_init(&c.hash, NULL, 0, sizeof(h));
	line = ini_parse_stream(job_reader, &c, job_handler, &c);
	if (c.oom) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto fail;
	}
	/* inih's own complaint (a line that is neither a section nor
	 * key = value) counts when it comes before ours */
	if (line > 0 && (!c.err_set || line < c.err_line)) {
		c.err_set = true;
		c.err_line = line;
		snprintf(c.err, sizeof(c.err), "expected [section] or key = value");
	}
	if (!c.err_set)
		check_conflicts(&c);
	if (c.err_set && c.err_line) {
		r = ip_bad(e, -EINVAL, "%s:%d: %s", name, c.err_line, c.err);
		goto fail;
	}
	if (c.err_set) {
		r = ip_bad(e, -EINVAL, "%s: %s", name, c.err);
		goto fail;
	}
	r = migrate_spec_parse(c.spec_text, name, &c.job->spec, e);
	if (r < 0)
		goto fail;
	crypto_generichash_final(&c.hash, h, sizeof(h));
	sodium_bin2hex(c.job->hash, sizeof(c.job->hash), h, sizeof(h));
	free(c.spec_text);
	*out = c.job;
	return 0;
fail:
	free(c.spec_text);
	bootstage_job_free(c.job);
	return r;
}

void bootstage_job_free(bootstage_job *j)
{
	if (!j)
		return;
	for (size_t i = 0; j->mirrors && j->mirrors[i]; i++)
		free(j->mirrors[i]);
	free(j->mirrors);
	free(j->name);
	free(j->text);
	free(j->image);
	free(j->key);
	free(j->disk);
	free(j->store_dir);
	free(j->report_url);
	free(j->report_ca_cert);
	free(j->notify_message);
	migrate_spec_free(j->spec);
	free(j);
}
