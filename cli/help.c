/* help.c — one table per verb (struct cli_help) drives getopt, --help, the
 * man pages (`inplace --help-man`) and bash completion (`inplace
 * --complete`), so that an option cannot exist in one and not the others. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "bootstage/bootstage.h"
#include "cli/cli.h"
#include "partctl/partctl.h"

#define MAX_OPTS 40
#define HELP_WIDTH 79

/* ---- getopt ------------------------------------------------------------- */

int cli_getopt(int argc, char **argv, const struct cli_help *h)
{
	/* built once per table: a verb calls this in its loop */
	static const struct cli_help *built;
	static struct option lo[MAX_OPTS + 1];
	static char so[2 * MAX_OPTS + 1];

	if (built != h) {
		size_t n = 0, k = 0;

		for (const struct cli_opt *o = h->opts; o->name && n < MAX_OPTS; o++, n++) {
			lo[n] = (struct option){ o->name, o->arg ? required_argument : no_argument, NULL, o->id };
			if (o->letter) {
				so[k++] = (char)o->letter;
				if (o->arg)
					so[k++] = ':';
			}
		}
		lo[n] = (struct option){ 0 };
		so[k] = '\0';
		built = h;
	}
	return getopt_long(argc, argv, so, lo, NULL);
}

/* ---- --help ------------------------------------------------------------- */

/* Print text wrapped at HELP_WIDTH, the first line from column col (the
 * caller is there), the others indented to indent. */
static void wrap(FILE *f, const char *text, size_t col, size_t indent)
{
	const char *p = text;
	bool first = true;

	while (*p) {
		size_t wl = strcspn(p, " \n");

		if (!first && col + 1 + wl > HELP_WIDTH) {
			fprintf(f, "\n%*s", (int)indent, "");
			col = indent;
		} else if (!first) {
			fputc(' ', f);
			col++;
		}
		first = false;
		fwrite(p, 1, wl, f);
		col += wl;
		p += wl;
		while (*p == ' ' || *p == '\n')
			p++;
	}
	fputc('\n', f);
}

static size_t opt_lhs(const struct cli_opt *o, char *buf, size_t len)
{
	int n = snprintf(buf, len, " %c%c%s --%s%s%s", o->letter ? '-' : ' ', o->letter ? o->letter : ' ',
			 o->letter ? "," : " ", o->name, o->arg ? " " : "", o->arg ? o->arg : "");

	return n < 0 ? 0 : (size_t)n;
}

int cli_help_print(const char *command, const struct cli_help *h)
{
	size_t width = 0;
	char lhs[128];

	printf("\nUsage:\n inplace %s%s%s\n\n%s", command, *h->synopsis ? " " : "", h->synopsis, h->description);
	for (const struct cli_opt *o = h->opts; o->name; o++) {
		size_t l = opt_lhs(o, lhs, sizeof(lhs));

		if (l > width && l <= 24)
			width = l;
	}
	width += 2;
	printf("\nOptions:\n");
	for (const struct cli_opt *o = h->opts; o->name; o++) {
		size_t l = opt_lhs(o, lhs, sizeof(lhs));

		fputs(lhs, stdout);
		if (l + 2 > width) {
			printf("\n%*s", (int)width, "");
			l = width;
		}
		printf("%*s", (int)(width - l), "");
		wrap(stdout, o->help, width, width + 2);
	}
	if (h->more)
		printf("\n%s", h->more);
	return IP_EXIT_OK;
}

/* ---- the verb tree -------------------------------------------------------- */

/* The verb named by words (space separated, "part shrink"), or NULL. */
static const struct cli_verb *find_verb(const char *words, size_t len)
{
	const struct cli_verb *tab = cli_top_verbs, *v = NULL;
	const char *p = words, *end = words + len;

	while (p < end) {
		size_t wl = strcspn(p, " ");

		if (wl > (size_t)(end - p))
			wl = (size_t)(end - p);
		if (!tab)
			return NULL;
		for (v = tab; v->name; v++)
			if (strlen(v->name) == wl && !strncmp(v->name, p, wl))
				break;
		if (!v->name)
			return NULL;
		tab = v->sub;
		p += wl;
		while (p < end && *p == ' ')
			p++;
	}
	return v;
}

/* Call fn for every verb with its own table under tab, with its full name. */
static int walk(const struct cli_verb *tab, const char *prefix,
		int (*fn)(const char *cmd, const struct cli_verb *v, void *arg), void *arg)
{
	char cmd[128];
	int r = 0;

	for (const struct cli_verb *v = tab; v->name; v++) {
		snprintf(cmd, sizeof(cmd), "%s%s%s", prefix, *prefix ? " " : "", v->name);
		if (v->sub)
			r |= walk(v->sub, cmd, fn, arg);
		else
			r |= fn(cmd, v, arg);
	}
	return r;
}

/* ---- --help-check --------------------------------------------------------- */

static int check_one(const char *cmd, const struct cli_verb *v, void *arg)
{
	const struct cli_help *h = v->help;
	int bad = 0;

	(void)arg;
	if (!h || !h->synopsis || !h->description || !h->opts) {
		fprintf(stderr, "inplace: '%s' has no help table (struct cli_help): add one beside its code\n", cmd);
		return 1;
	}
	for (const struct cli_opt *o = h->opts; o->name; o++) {
		if (!o->help || !*o->help)
			bad = fprintf(stderr, "inplace: option --%s of '%s' has no help text\n", o->name, cmd);
		if (o - h->opts >= MAX_OPTS)
			bad = fprintf(stderr, "inplace: '%s' has more than %d options\n", cmd, MAX_OPTS);
		for (const struct cli_opt *p = h->opts; p < o; p++)
			if (!strcmp(p->name, o->name) || (o->letter && p->letter == o->letter))
				bad = fprintf(stderr, "inplace: options --%s and --%s of '%s' clash\n", p->name, o->name, cmd);
		if (o->letter && o->id != o->letter)
			bad = fprintf(stderr, "inplace: option -%c of '%s' must return its letter\n", o->letter, cmd);
	}
	if (!bad)
		printf("%s\n", cmd);
	return bad ? 1 : 0;
}

int cli_help_check(void)
{
	return walk(cli_top_verbs, "", check_one, NULL) ? IP_EXIT_FAILED : IP_EXIT_OK;
}

/* ---- --help-man ----------------------------------------------------------- */

/* A UTF-8 character as a roff escape (\[u2026] for …); returns the bytes
 * it took, 0 for plain ASCII. */
static size_t man_utf8(FILE *f, const char *p, size_t left)
{
	const unsigned char *u = (const unsigned char *)p;
	unsigned cp;
	size_t n;

	if (u[0] < 0x80)
		return 0;
	if ((u[0] & 0xe0) == 0xc0 && left >= 2)
		cp = u[0] & 0x1f, n = 2;
	else if ((u[0] & 0xf0) == 0xe0 && left >= 3)
		cp = u[0] & 0x0f, n = 3;
	else
		return fputc('?', f), 1;
	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | (u[i] & 0x3f);
	fprintf(f, "\\[u%04X]", cp);
	return n;
}

/* Text for an mdoc text line: a sentence per line (mandoc's rule), roff
 * escapes for backslashes and leading dots. */
static void man_text(FILE *f, const char *text, size_t len)
{
	bool bol = true;
	size_t n, col = 0;

	for (size_t i = 0; i < len; i++) {
		char c = text[i];

		if (c == '\n' || (c == ' ' && bol))
			c = ' ';
		if (bol && c == ' ')
			continue;
		if (bol && (c == '.' || c == '\''))
			fputs("\\&", f);
		if ((size_t)(n = man_utf8(f, text + i, len - i))) {
			i += n - 1;
		} else if (c == '\\') {
			fputs("\\e", f);
		} else if (c == ' ' && i > 0 && strchr(".?!", text[i - 1]) && i + 1 < len &&
			   (isupper((unsigned char)text[i + 1]) || text[i + 1] == ' ' || text[i + 1] == '\n')) {
			fputc('\n', f);
			bol = true;
			col = 0;
			continue;
		} else if (c == ' ' && i + 1 < len && (text[i + 1] == ' ' || text[i + 1] == '\n')) {
			continue;
		} else if (c == ' ' && col + 1 + strcspn(text + i + 1, " \n") > 72) {
			/* mandoc's style: input lines of at most 80 bytes */
			fputc('\n', f);
			bol = true;
			col = 0;
			continue;
		} else {
			fputc(c, f);
		}
		col++;
		bol = false;
	}
	if (!bol)
		fputc('\n', f);
}

/* Paragraphs (blank line between) of text as mdoc. */
static void man_paragraphs(FILE *f, const char *text)
{
	const char *p = text;

	while (*p) {
		const char *end = strstr(p, "\n\n");
		size_t len = end ? (size_t)(end - p) : strlen(p);

		while (len && p[len - 1] == '\n')
			len--;
		if (len) {
			if (p != text)
				fputs(".Pp\n", f);
			man_text(f, p, len);
		}
		if (!end)
			break;
		p = end + 2;
		while (*p == '\n')
			p++;
	}
}

/* A synopsis as mdoc macros: -x and --x as Fl, NAMES as Ar, [ ] as Oo Oc. */
static void man_synopsis(FILE *f, const char *cmd, const char *syn)
{
	const char *p = syn;
	bool first = true;

	fprintf(f, ".Nm inplace %s\n", cmd);
	while (*p) {
		size_t wl = strcspn(p, " ");
		char w[128];
		size_t a = 0, b = wl, closers;

		snprintf(w, sizeof(w), "%.*s", (int)wl, p);
		fputs(first ? "." : " ", f);
		first = false;
		while (a < b && w[a] == '[') {
			fputs("Oo ", f);
			a++;
		}
		while (b > a && w[b - 1] == ']' && !memchr(w + a, '[', b - a))
			b--;
		closers = wl - b;
		if (b > a) {
			w[b] = '\0';
			if (w[a] == '-')
				fprintf(f, "Fl %s", w + a + 1);
			else if (!strcmp(w + a, "|"))
				fputs("|", f);
			else if (!strcmp(w + a, "…") || !strcmp(w + a, "..."))
				fputs("No ...", f);
			else
				fprintf(f, "Ar %s", w + a);
		}
		while (closers--)
			fputs(" Oc", f);
		p += wl;
		while (*p == ' ')
			p++;
	}
	if (!first)
		fputc('\n', f);
}

static void man_options(FILE *f, const struct cli_opt *opts)
{
	fputs(".Bl -tag -width Ds\n", f);
	for (const struct cli_opt *o = opts; o->name; o++) {
		fputs(".It", f);
		if (o->letter)
			fprintf(f, " Fl %c ,", o->letter);
		fprintf(f, " Fl -%s", o->name);
		if (o->arg)
			fprintf(f, " Ar %s", o->arg);
		fputc('\n', f);
		man_text(f, o->help, strlen(o->help));
	}
	fputs(".El\n", f);
}

/* Free text kept as written (environment, exit status of --help). */
static void man_literal(FILE *f, const char *text)
{
	fputs(".Bd -literal -offset indent\n", f);
	for (const char *p = text; *p;) {
		size_t l = strcspn(p, "\n");

		if (l && (*p == '.' || *p == '\''))
			fputs("\\&", f);
		for (size_t i = 0, n; i < l; i++) {
			if ((n = man_utf8(f, p + i, l - i)))
				i += n - 1;
			else
				p[i] == '\\' ? fputs("\\e", f) : fputc(p[i], f);
		}
		fputc('\n', f);
		p += l;
		if (*p)
			p++;
	}
	fputs(".Ed\n", f);
}

struct man_ctx {
	FILE *f;
	bool commands; /* @commands, else @synopsis */
};

static int man_verb(const char *cmd, const struct cli_verb *v, void *arg)
{
	struct man_ctx *c = arg;
	const struct cli_help *h = v->help;

	if (!h) {
		fprintf(stderr, "inplace: '%s' has no help table (struct cli_help): add one beside its code\n", cmd);
		return 1;
	}
	if (!c->commands) {
		man_synopsis(c->f, cmd, h->synopsis);
		return 0;
	}
	fprintf(c->f, ".Ss inplace %s\n", cmd);
	man_synopsis(c->f, cmd, h->synopsis);
	fputs(".Pp\n", c->f);
	man_paragraphs(c->f, h->description);
	man_options(c->f, h->opts);
	if (h->more)
		man_literal(c->f, h->more);
	return 0;
}

/* @synopsis / @commands LIST: LIST names verbs or groups, comma separated. */
static int man_directive(FILE *f, const char *list, bool commands)
{
	struct man_ctx c = { f, commands };
	const char *p = list;
	int r = 0;

	while (*p) {
		size_t l = strcspn(p, ",");
		const struct cli_verb *v;
		char cmd[128];

		while (*p == ' ')
			p++, l--;
		snprintf(cmd, sizeof(cmd), "%.*s", (int)l, p);
		while (l && cmd[l - 1] == ' ')
			cmd[--l] = '\0';
		v = find_verb(cmd, l);
		if (!v) {
			fprintf(stderr, "inplace: --help-man: no command '%s'\n", cmd);
			return 1;
		}
		r |= v->sub ? walk(v->sub, cmd, man_verb, &c) : man_verb(cmd, v, &c);
		p += l;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return r;
}

/* @verbs: the top verbs with their one-line summaries. */
static void man_verbs(FILE *f)
{
	fputs(".Bl -tag -width Ds\n", f);
	for (const struct cli_verb *v = cli_top_verbs; v->name; v++) {
		fprintf(f, ".It Cm %s\n", v->name);
		man_text(f, v->summary, strlen(v->summary));
	}
	fputs(".El\n", f);
}

/* @jobkey SECTION KEY: the key's line from bootstage's table, its prose
 * follows in the template; every key must have one (checked at the end). */
static int man_jobkey(FILE *f, const char *args, unsigned char *seen, size_t nkeys)
{
	char section[64], key[64];

	if (sscanf(args, "%63s %63s", section, key) != 2)
		return fprintf(stderr, "inplace: --help-man: @jobkey wants SECTION KEY\n"), 1;
	for (size_t i = 0; i < nkeys; i++) {
		struct bootstage_job_keyinfo k;

		bootstage_job_key(i, &k);
		if (strcmp(k.section, section) || strcmp(k.key, key))
			continue;
		seen[i] = 1;
		fprintf(f, ".It Ic %s Ns = Ns Ar %s\n", k.key, k.values);
		return 0;
	}
	fprintf(stderr, "inplace: --help-man: no job key %s in [%s]\n", key, section);
	return 1;
}

int cli_help_man(int argc, char **argv)
{
	size_t nkeys = bootstage_job_key(0, NULL);
	unsigned char seen[256] = { 0 };
	bool jobkeys = false;
	char line[4096];
	FILE *in;
	int r = 0;

	if (argc != 1) {
		fprintf(stderr, "inplace: --help-man wants one template (man/*.in)\n");
		return IP_EXIT_BADINPUT;
	}
	in = fopen(argv[0], "re");
	if (!in) {
		fprintf(stderr, "inplace: cannot open %s: %s\n", argv[0], strerror(errno));
		return IP_EXIT_FAILED;
	}
	while (fgets(line, sizeof(line), in)) {
		const char *d;

		if (strncmp(line, ".\\\" @", 5)) {
			fputs(line, stdout);
			continue;
		}
		line[strcspn(line, "\n")] = '\0';
		d = line + 5;
		if (!strncmp(d, "synopsis ", 9))
			r |= man_directive(stdout, d + 9, false);
		else if (!strncmp(d, "commands ", 9))
			r |= man_directive(stdout, d + 9, true);
		else if (!strcmp(d, "verbs"))
			man_verbs(stdout);
		else if (!strncmp(d, "jobkey ", 7))
			jobkeys = true, r |= man_jobkey(stdout, d + 7, seen, nkeys < 256 ? nkeys : 256);
		else
			r |= fprintf(stderr, "inplace: --help-man: unknown directive '@%s'\n", d) > 0;
	}
	fclose(in);
	for (size_t i = 0; jobkeys && i < nkeys && i < 256; i++)
		if (!seen[i]) {
			struct bootstage_job_keyinfo k;

			bootstage_job_key(i, &k);
			fprintf(stderr, "inplace: --help-man: job key %s in [%s] is not in %s: describe it there\n",
				k.key, k.section, argv[0]);
			r = 1;
		}
	if (fflush(stdout) != 0)
		r = 1;
	return r ? IP_EXIT_FAILED : IP_EXIT_OK;
}

/* ---- --complete ----------------------------------------------------------- */

static const struct cli_opt *find_opt(const struct cli_help *h, const char *w)
{
	for (const struct cli_opt *o = h->opts; o->name; o++) {
		if (w[1] == '-' && !strcmp(w + 2, o->name))
			return o;
		if (w[1] != '-' && o->letter && w[1] == o->letter && !w[2])
			return o;
	}
	return NULL;
}

/* The name of positional argument i in a synopsis ("DISK", "N"), skipping
 * option values; NULL past the last. */
static bool positional(const char *syn, unsigned i, char *out, size_t len)
{
	const char *p = syn;
	bool after_opt = false;

	while (*p) {
		size_t wl = strcspn(p, " ");
		const char *w = p;
		size_t a = 0;

		while (a < wl && w[a] == '[')
			a++;
		p += wl;
		while (*p == ' ')
			p++;
		if (a < wl && w[a] == '-') {
			after_opt = true;
			continue;
		}
		if (after_opt || w[a] == '|' || !strncmp(w + a, "options", 7)) {
			after_opt = false;
			continue;
		}
		if (i-- == 0) {
			size_t b = wl;

			while (b > a && w[b - 1] == ']')
				b--;
			snprintf(out, len, "%.*s", (int)(b - a), w + a);
			return true;
		}
	}
	return false;
}

static void complete_parts(const char *disk)
{
	partctl_table *t = NULL;
	ip_error e = { 0 };

	if (partctl_table_inspect(disk, &t, &e) < 0)
		return;
	for (size_t i = 0; i < partctl_table_count(t); i++)
		printf("%u\n", partctl_table_at(t, i)->n);
	partctl_table_free(t);
}

/* argv: the words after "inplace", the last the one being completed.
 * Prints candidates, one a line; "@files" asks the shell for file names. */
int cli_complete(int argc, char **argv)
{
	const struct cli_verb *tab = cli_top_verbs, *v = NULL;
	const char *cur = argc ? argv[argc - 1] : "";
	char name[64], disk[4096] = "";
	unsigned npos = 0;
	int i = 0;

	/* walk down the verb groups */
	while (i < argc - 1 && tab) {
		for (v = tab; v->name && strcmp(v->name, argv[i]); v++)
			;
		if (!v->name)
			return IP_EXIT_OK;
		tab = v->sub;
		i++;
	}
	if (tab) {
		for (v = tab; v->name; v++)
			printf("%s\n", v->name);
		return IP_EXIT_OK;
	}
	if (!v->help)
		return IP_EXIT_OK;
	for (; i < argc - 1; i++) {
		const char *w = argv[i];
		const struct cli_opt *o;

		if (w[0] == '-' && w[1]) {
			o = strchr(w, '=') ? NULL : find_opt(v->help, w);
			if (o && o->arg)
				i++;
			continue;
		}
		if (positional(v->help->synopsis, npos, name, sizeof(name)) && !strcmp(name, "DISK"))
			snprintf(disk, sizeof(disk), "%s", w);
		npos++;
	}
	if (i == argc - 1 + 1) {
		/* the word before the current one was an option wanting a value */
		printf("@files\n");
		return IP_EXIT_OK;
	}
	if (cur[0] == '-') {
		for (const struct cli_opt *o = v->help->opts; o->name; o++)
			printf("--%s\n", o->name);
		return IP_EXIT_OK;
	}
	if (positional(v->help->synopsis, npos, name, sizeof(name)) && !strcmp(name, "N") && disk[0]) {
		complete_parts(disk);
		return IP_EXIT_OK;
	}
	printf("@files\n");
	return IP_EXIT_OK;
}
