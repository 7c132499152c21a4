/* profile.c — the `inplace profile …` verbs: estimate, save, verify, list,
 * restore.  The work is in migrate/; this file parses, prints and picks the
 * exit status. */
#include <errno.h>
#include <string.h>

#include "cli/cli.h"
#include "migrate/migrate.h"

enum {
	OPT_ROOT = OPT_CLI_LAST,
	OPT_STORE,
	OPT_SPEC,
	OPT_USERS,
	OPT_TRUST_SETID,
	OPT_NO_MACHINE,
};

struct pargs {
	struct cli_opts o;
	const char *root, *store, *spec, *users;
	bool trust_setid, no_machine;
};

/* which options a verb accepts: a string of the OPT_* letters below */
#define A_ROOT  (1u << 0)
#define A_STORE (1u << 1)
#define A_SPEC  (1u << 2)
#define A_USERS (1u << 3)
#define A_TRUST (1u << 4)

static int parse(int argc, char **argv, const char *command, unsigned allowed, const struct cli_help *help,
		 struct pargs *a)
{
	int c;

	memset(a, 0, sizeof(*a));
	optind = 0;
	while ((c = cli_getopt(argc, argv, help)) != -1) {
		if (c == 'h') {
			cli_help_print(command, help);
			return -1;
		}
		if (cli_common_opt(&a->o, c))
			continue;
		switch (c) {
		case OPT_ROOT:
			if (!(allowed & A_ROOT))
				goto bad;
			a->root = optarg;
			break;
		case OPT_STORE:
			if (!(allowed & A_STORE))
				goto bad;
			a->store = optarg;
			break;
		case OPT_SPEC:
			if (!(allowed & A_SPEC))
				goto bad;
			a->spec = optarg;
			break;
		case OPT_USERS:
			if (!(allowed & A_USERS))
				goto bad;
			a->users = optarg;
			break;
		case OPT_TRUST_SETID:
			if (!(allowed & A_TRUST))
				goto bad;
			a->trust_setid = true;
			break;
		case OPT_NO_MACHINE:
			if (!(allowed & A_TRUST))
				goto bad;
			a->no_machine = true;
			break;
		default:
			goto bad;
		}
	}
	if (optind < argc)
		return cli_usage(&a->o, command, "unexpected argument '%s'", argv[optind]);
	if ((allowed & A_ROOT) && !a->root)
		return cli_usage(&a->o, command, "--root DIR is required");
	if ((allowed & A_STORE) && !a->store)
		return cli_usage(&a->o, command, "--store DIR is required");
	cli_opts_apply(&a->o);
	return 0;
bad:
	return cli_usage(&a->o, command, "unknown or misplaced option");
}

static void print_size_line(const char *label, json_object *o)
{
	char b[IP_SIZE_BUFSZ];
	int64_t bytes = json_object_get_int64(json_object_object_get(o, "bytes"));

	printf("%-16s %10lld files  %12s\n", label,
	       (long long)json_object_get_int64(json_object_object_get(o, "files")),
	       ip_format_size((uint64_t)bytes, b, sizeof(b)));
}

static void print_users(json_object *doc)
{
	json_object *users = json_object_object_get(doc, "users");

	for (size_t i = 0; users && i < json_object_array_length(users); i++) {
		json_object *u = json_object_array_get_idx(users, i);
		print_size_line(json_object_get_string(json_object_object_get(u, "name")), u);
	}
}

/* Users left out for an unsafe home: a warning, also without --json's reader */
static void print_skipped(json_object *doc)
{
	json_object *sk = json_object_object_get(doc, "skipped");

	for (size_t i = 0; sk && i < json_object_array_length(sk); i++) {
		json_object *o = json_object_array_get_idx(sk, i);
		fprintf(stderr, "inplace: warning: user %s not saved: %s (%s)\n",
			json_object_get_string(json_object_object_get(o, "name")),
			json_object_get_string(json_object_object_get(o, "reason")),
			json_object_get_string(json_object_object_get(o, "home")));
	}
}

static int finish(const struct pargs *a, const char *command, int r, ip_error *e, json_object *doc,
		  void (*human)(json_object *))
{
	if (r < 0)
		return cli_error(&a->o, command, e);
	print_skipped(doc);
	if (a->o.json)
		return cli_emit(doc);
	human(doc);
	json_object_put(doc);
	return 0;
}

static void human_estimate(json_object *doc)
{
	char b[IP_SIZE_BUFSZ];

	char d[IP_SIZE_BUFSZ], sm[IP_SIZE_BUFSZ];
	json_object *tot = json_object_object_get(doc, "total"), *how = json_object_object_get(doc, "estimate");
	uint64_t sampled = (uint64_t)json_object_get_int64(json_object_object_get(how, "sampled_bytes"));
	uint64_t smc = (uint64_t)json_object_get_int64(json_object_object_get(how, "sample_compressed_bytes"));

	print_users(doc);
	print_size_line("total", tot);
	printf("store needs      %s  (%s of data without holes; zstd -%d on a %s sample gave %.0f%%; + headers, manifest, 10%%)\n",
	       ip_format_size((uint64_t)json_object_get_int64(json_object_object_get(doc, "estimated_store_bytes")), b, sizeof(b)),
	       ip_format_size((uint64_t)json_object_get_int64(json_object_object_get(tot, "data_bytes")), d, sizeof(d)),
	       json_object_get_int(json_object_object_get(how, "level")), ip_format_size(sampled, sm, sizeof(sm)),
	       sampled ? 100.0 * (double)smc / (double)sampled : 100.0);
}

static void human_save(json_object *doc)
{
	char b[IP_SIZE_BUFSZ];
	json_object *users = json_object_object_get(doc, "users");
	uint64_t arch = 0;

	for (size_t i = 0; users && i < json_object_array_length(users); i++)
		arch += (uint64_t)json_object_get_int64(json_object_object_get(json_object_array_get_idx(users, i), "archive_bytes"));
	print_users(doc);
	print_size_line("total", json_object_object_get(doc, "total"));
	printf("saved into %s (%s compressed), COMPLETE\n", json_object_get_string(json_object_object_get(doc, "store")),
	       ip_format_size(arch, b, sizeof(b)));
}

static void human_verify(json_object *doc)
{
	print_users(doc);
	printf("%s verifies: every archive matches the manifest\n", json_object_get_string(json_object_object_get(doc, "store")));
}

static void human_list(json_object *doc)
{
	json_object *v;

	print_users(doc);
	if (json_object_object_get_ex(doc, "hostname", &v))
		printf("machine          %s\n", json_object_get_string(v));
	printf("complete         %s\n", json_object_get_boolean(json_object_object_get(doc, "complete")) ? "yes" : "no");
}

static void human_restore(json_object *doc)
{
	json_object *users = json_object_object_get(doc, "users"), *acc = json_object_object_get(doc, "accounts");
	json_object *mc = json_object_object_get(doc, "machine_changed");
	bool dry = json_object_get_boolean(json_object_object_get(doc, "dry_run"));

	for (size_t i = 0; acc && i < json_object_array_length(acc); i++) {
		json_object *u = json_object_array_get_idx(acc, i);
		int64_t o = json_object_get_int64(json_object_object_get(u, "old_uid")), n = json_object_get_int64(json_object_object_get(u, "uid"));
		printf("account %-12s %s uid %lld%s\n", json_object_get_string(json_object_object_get(u, "name")),
		       json_object_get_boolean(json_object_object_get(u, "created")) ? (dry ? "would be created," : "created,") : "exists,",
		       (long long)n, o != n ? " (remapped)" : "");
	}
	json_object *rm = json_object_object_get(doc, "remapped"), *wh = json_object_object_get(doc, "withheld");
	for (size_t i = 0; rm && i < json_object_array_length(rm); i++) {
		json_object *m = json_object_array_get_idx(rm, i);
		printf("remap   %-12s %s id %lld -> %lld (taken in the new OS)\n", json_object_get_string(json_object_object_get(m, "name")),
		       json_object_get_string(json_object_object_get(m, "kind")),
		       (long long)json_object_get_int64(json_object_object_get(m, "from")),
		       (long long)json_object_get_int64(json_object_object_get(m, "to")));
	}
	for (size_t i = 0; wh && i < json_object_array_length(wh); i++) {
		json_object *w = json_object_array_get_idx(wh, i);
		printf("withheld %-11s %s group %s (a system or admin group: only with --trusted-store)\n",
		       json_object_get_string(json_object_object_get(w, "user")),
		       json_object_get_string(json_object_object_get(w, "kind")),
		       json_object_get_string(json_object_object_get(w, "group")));
	}
	for (size_t i = 0; users && i < json_object_array_length(users); i++) {
		json_object *u = json_object_array_get_idx(users, i), *sk;
		if (json_object_object_get_ex(u, "skipped", &sk)) {
			printf("skipped %-12s %s\n", json_object_get_string(json_object_object_get(u, "name")), json_object_get_string(sk));
			continue;
		}
		printf("home    %-12s %lld %s, %lld unchanged, %lld setid bits or capabilities dropped\n",
		       json_object_get_string(json_object_object_get(u, "name")),
		       (long long)json_object_get_int64(json_object_object_get(u, "written")), dry ? "to write" : "written",
		       (long long)json_object_get_int64(json_object_object_get(u, "unchanged")),
		       (long long)json_object_get_int64(json_object_object_get(u, "neutralised")));
	}
	printf("machine state: %zu files %s\n", mc ? json_object_array_length(mc) : 0, dry ? "to change" : "changed");
}

static int load_spec(const struct pargs *a, const char *command, migrate_spec **s, ip_error *e)
{
	int r = migrate_spec_load(a->spec, s, e);
	if (r < 0)
		return cli_error(&a->o, command, e);
	return 0;
}

static const struct cli_help estimate_help = {
	.synopsis = "--root DIR [--spec FILE] [--json]",
	.description =
		"Count the files and bytes of every profile the spec selects, and the size\n"
		"of the store they need (what 'part plan --need' takes).\n",
	.opts = (const struct cli_opt[]){
		{ "root", 0, "DIR", OPT_ROOT, "the root of the installed system" },
		{ "spec", 0, "FILE", OPT_SPEC, "profile spec (INI); default: every user with a home and UID >= 1000" },
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

static int cmd_estimate(int argc, char **argv)
{
	struct pargs a;
	migrate_spec *s = NULL;
	json_object *doc = NULL;
	ip_error e = { 0 };
	int r = parse(argc, argv, "profile estimate", A_ROOT | A_SPEC, &estimate_help, &a);

	if (r)
		return r < 0 ? 0 : r;
	if ((r = load_spec(&a, "profile estimate", &s, &e)))
		return r;
	r = migrate_estimate(a.root, s, &doc, &e);
	migrate_spec_free(s);
	return finish(&a, "profile estimate", r, &e, doc, human_estimate);
}

static const struct cli_help save_help = {
	.synopsis = "--root DIR --store DIR [--spec FILE] [--json]",
	.description =
		"Save user profiles and machine state of the system at DIR into a store:\n"
		"one zstd-compressed pax archive per user, manifest.json, accounts.json,\n"
		"machine.json, and a COMPLETE marker written last.  Never writes under --root.\n"
		"An interrupted save (no COMPLETE) is started again from scratch.\n",
	.opts = (const struct cli_opt[]){
		{ "root", 0, "DIR", OPT_ROOT, "the root of the installed OS (may be read-only)" },
		{ "store", 0, "DIR", OPT_STORE, "the store directory (created 0700)" },
		{ "spec", 0, "FILE", OPT_SPEC, "profile spec (INI)" },
		CLI_OPT_DRY_RUN("only estimate, write nothing"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

static int cmd_save(int argc, char **argv)
{
	struct pargs a;
	migrate_spec *s = NULL;
	json_object *doc = NULL;
	ip_error e = { 0 };
	int r = parse(argc, argv, "profile save", A_ROOT | A_STORE | A_SPEC, &save_help, &a);

	if (r)
		return r < 0 ? 0 : r;
	if ((r = load_spec(&a, "profile save", &s, &e)))
		return r;
	if (a.o.dry_run) {
		r = migrate_estimate(a.root, s, &doc, &e);
		migrate_spec_free(s);
		if (doc)
			json_object_object_add(doc, "dry_run", json_object_new_boolean(1));
		return finish(&a, "profile save", r, &e, doc, human_estimate);
	}
	r = migrate_save(a.root, a.store, s, &doc, &e);
	migrate_spec_free(s);
	return finish(&a, "profile save", r, &e, doc, human_save);
}

static const struct cli_help verify_help = {
	.synopsis = "--store DIR [--json]",
	.description =
		"Check every archive of a store against its manifest: entry set, sizes,\n"
		"owners, modes and content hashes.\n",
	.opts = (const struct cli_opt[]){
		{ "store", 0, "DIR", OPT_STORE, "the store directory" },
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

static int cmd_verify(int argc, char **argv)
{
	struct pargs a;
	json_object *doc = NULL;
	ip_error e = { 0 };
	int r = parse(argc, argv, "profile verify", A_STORE, &verify_help, &a);

	if (r)
		return r < 0 ? 0 : r;
	r = migrate_verify(a.store, &doc, &e);
	return finish(&a, "profile verify", r, &e, doc, human_verify);
}

static const struct cli_help list_help = {
	.synopsis = "--store DIR [--json]",
	.description = "Show the users and machine state a store holds (never a hash or a key).\n",
	.opts = (const struct cli_opt[]){
		{ "store", 0, "DIR", OPT_STORE, "the store directory" },
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

static int cmd_list(int argc, char **argv)
{
	struct pargs a;
	json_object *doc = NULL;
	ip_error e = { 0 };
	int r = parse(argc, argv, "profile list", A_STORE, &list_help, &a);

	if (r)
		return r < 0 ? 0 : r;
	r = migrate_list(a.store, &doc, &e);
	return finish(&a, "profile list", r, &e, doc, human_list);
}

static const struct cli_help restore_help = {
	.synopsis = "--store DIR --root DIR [--users a,b] [options]",
	.description =
		"Restore a complete store into the root of a new OS: create missing groups\n"
		"and users by name (with their password hashes, remapping taken UIDs/GIDs),\n"
		"restore homes, crontabs, mail spools and machine state.  Running it again\n"
		"changes nothing.\n",
	.opts = (const struct cli_opt[]){
		{ "store", 0, "DIR", OPT_STORE, "the store directory (must hold COMPLETE)" },
		{ "root", 0, "DIR", OPT_ROOT, "the root of the new OS" },
		{ "users", 0, "a,b", OPT_USERS, "only these users" },
		{ "trusted-store", 0, NULL, OPT_TRUST_SETID,
		  "keep setuid/setgid bits, file capabilities and trusted.*/security.* xattrs, and restore "
		  "the spec's [system] paths (only for a store nobody else could have altered)" },
		{ "trust-setid", 0, NULL, OPT_TRUST_SETID, "the older name of --trusted-store" },
		{ "no-machine", 0, NULL, OPT_NO_MACHINE, "do not apply the machine state" },
		CLI_OPT_DRY_RUN("say what would change, write nothing"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

static int cmd_restore(int argc, char **argv)
{
	struct pargs a;
	json_object *doc = NULL;
	ip_error e = { 0 };
	int r = parse(argc, argv, "profile restore", A_STORE | A_ROOT | A_USERS | A_TRUST, &restore_help, &a);

	if (r)
		return r < 0 ? 0 : r;
	struct migrate_restore_opts o = {
		.users = a.users, .dry_run = a.o.dry_run, .trusted = a.trust_setid, .no_machine = a.no_machine,
	};
	r = migrate_restore(a.store, a.root, &o, &doc, &e);
	return finish(&a, "profile restore", r, &e, doc, human_restore);
}

const struct cli_verb cli_profile_verbs[] = {
	{ "estimate", cmd_estimate, "count what a save would store, and the store size it needs", &estimate_help, NULL },
	{ "save",     cmd_save,     "save user profiles and machine state into a store", &save_help, NULL },
	{ "verify",   cmd_verify,   "check every archive of a store against its manifest", &verify_help, NULL },
	{ "list",     cmd_list,     "show what a store holds", &list_help, NULL },
	{ "restore",  cmd_restore,  "restore users, homes and machine state into a new root", &restore_help, NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

int cmd_profile(int argc, char **argv)
{
	return cli_dispatch("profile", cli_profile_verbs, argc, argv);
}
