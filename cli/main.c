/* main.c — `inplace`: one executable, git-style verbs. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

const struct cli_verb cli_top_verbs[] = {
	{ "part",    cmd_part,    "partitions: show, create, shrink, grow, move, plan, make-storage", NULL, cli_part_verbs },
	{ "image",   cmd_image,   "OS images: capture, info, verify, deploy, import, build, apply-files", NULL, cli_image_verbs },
	{ "profile", cmd_profile, "user profiles: estimate, save, verify, list, restore", NULL, cli_profile_verbs },
	{ "run",     cmd_run,     "reimage in place as a job file says (--dry-run: preflight and plan)", &cli_help_run, NULL },
	{ "resume",  cmd_resume,  "continue a run from its state, up to the next reboot or the end", &cli_help_resume, NULL },
	{ "reclaim", cmd_reclaim, "give the storage space back: finish a run, or drop a kept store", &cli_help_reclaim, NULL },
	{ "status",  cmd_status,  "where the job stands: phase, step, last events", &cli_help_status, NULL },
	{ "notify",  cmd_notify,  "tell logged-in users, ask: install now, postpone, decline", &cli_help_notify, NULL },
	{ "bundle",  cmd_bundle,  "a self-contained inplace (tools, libraries, loader) in one directory", &cli_help_bundle, NULL },
	{ "stage",   cmd_stage,   "the RAM-only staging environment: build its initramfs", NULL, cli_stage_verbs },
	{ "media",   cmd_media,   "a hybrid BIOS/UEFI boot image that starts in the staging environment", NULL, cli_media_verbs },
	{ "netboot", cmd_netboot, "kernel, initramfs and iPXE script that start the staging environment", NULL, cli_netboot_verbs },
	{ NULL, NULL, NULL, NULL, NULL },
};

bool cli_common_opt(struct cli_opts *o, int c)
{
	switch (c) {
	case OPT_JSON:
		o->json = true;
		return true;
	case OPT_DRY_RUN:
		o->dry_run = true;
		return true;
	case 'q':
		o->quiet = true;
		return true;
	}
	return false;
}

void cli_opts_apply(const struct cli_opts *o)
{
	ip_progress_enable(!o->json && !o->quiet);
}

static int emit_error_doc(const char *command, int status, const char *msg)
{
	json_object *doc = ip_json_doc(command);
	json_object *err = json_object_new_object();

	json_object_object_add(doc, "ok", json_object_new_boolean(0));
	json_object_object_add(err, "status", json_object_new_int(status));
	json_object_object_add(err, "message", json_object_new_string(msg));
	json_object_object_add(doc, "error", err);
	ip_json_print(doc, stdout);
	json_object_put(doc);
	fflush(stdout);
	return status;
}

int cli_error(const struct cli_opts *o, const char *command, const ip_error *e)
{
	int status = e->status ? e->status : IP_EXIT_FAILED;
	const char *msg = e->msg[0] ? e->msg : "unknown error";

	fprintf(stderr, "inplace: %s\n", msg);
	if (o && o->json)
		emit_error_doc(command, status, msg);
	return status;
}

/* The argv of the verb being parsed, for naming a bad option. */
static int verb_argc;
static char **verb_argv;

/* getopt_long has just returned '?' (opterr is 0, so it printed nothing):
 * name the word it stopped at.  optopt is 0 for an unknown long option,
 * the option's value for one missing its argument, the letter otherwise. */
static void describe_bad_option(char *buf, size_t len)
{
	const char *word = optind > 0 && optind <= verb_argc ? verb_argv[optind - 1] : NULL;
	const char *cur = optind < verb_argc ? verb_argv[optind] : NULL;
	size_t wl;

	if (optopt && optopt < 0x100 && (!word || strncmp(word, "--", 2) ||
					 (cur && cur[0] == '-' && cur[1] != '-' && strchr(cur, optopt)))) {
		/* a letter: unknown, or the last of its word and missing its value */
		if (word && word[0] == '-' && word[1] != '-' && optind == verb_argc &&
		    word[strlen(word) - 1] == optopt)
			snprintf(buf, len, "unknown option '-%c', or it needs a value", optopt);
		else
			snprintf(buf, len, "unknown option '-%c'", optopt);
		return;
	}
	if (!word) {
		snprintf(buf, len, "unknown option");
		return;
	}
	wl = strcspn(word, "=");
	if (optopt)
		snprintf(buf, len, "option '%.*s' needs a value", (int)wl, word);
	else
		snprintf(buf, len, "unknown option '%.*s'", (int)wl, word);
}

int cli_usage(const struct cli_opts *o, const char *command, const char *fmt, ...)
{
	char msg[768], line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* every verb's getopt loop ends in cli_usage(…, "unknown option"):
	 * name the option here, once, instead of in each verb */
	if (!strcmp(msg, "unknown option")) {
		describe_bad_option(msg, sizeof(msg));
	} else if (!strcmp(msg, "unknown or misplaced option") && optind > 0 && optind <= verb_argc) {
		/* profile's parser also lands here for a known option another
		 * verb takes: getopt then set no optopt (reset at dispatch) and
		 * the option is the word before its value */
		const char *word = verb_argv[optind - 1];

		if (optopt)
			describe_bad_option(msg, sizeof(msg));
		else {
			if (word[0] != '-' && optind >= 2 && !strncmp(verb_argv[optind - 2], "--", 2))
				word = verb_argv[optind - 2];
			snprintf(msg, sizeof(msg), "unknown or misplaced option '%.*s'", (int)strcspn(word, "="), word);
		}
	}
	snprintf(line, sizeof(line), "%s: see 'inplace %s --help'", msg, command);
	fprintf(stderr, "inplace %s: %s\n", command, line);
	if (o && o->json)
		emit_error_doc(command, IP_EXIT_BADINPUT, line);
	return IP_EXIT_BADINPUT;
}

int cli_emit(json_object *doc)
{
	if (!json_object_object_get_ex(doc, "ok", NULL))
		json_object_object_add(doc, "ok", json_object_new_boolean(1));
	if (ip_json_print(doc, stdout) < 0) {
		json_object_put(doc);
		return IP_EXIT_FAILED;
	}
	json_object_put(doc);
	return IP_EXIT_OK;
}

int cli_parse_size(const struct cli_opts *o, const char *command, const char *arg,
		   unsigned sector_size, uint64_t *out)
{
	ip_error e = { 0 };

	if (ip_parse_size(arg, sector_size, out, &e) < 0)
		return cli_usage(o, command, "%s", e.msg);
	return 0;
}

int cli_parse_disk_size(const struct cli_opts *o, const char *command, const char *disk,
			const char *arg, uint64_t *out)
{
	ip_disk *d = NULL;
	ip_error e = { 0 };
	unsigned ss;

	if (ip_disk_open(disk, IP_DISK_RDONLY, &d, &e) < 0)
		return cli_error(o, command, &e);
	ss = ip_disk_sector_size(d);
	ip_disk_free(d);
	return cli_parse_size(o, command, arg, ss, out);
}

int cli_parse_uint(const struct cli_opts *o, const char *command, const char *what,
		   const char *arg, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (!*arg || *end || errno || v > UINT32_MAX || arg[0] == '-')
		return cli_usage(o, command, "invalid %s '%s'", what, arg);
	*out = (unsigned)v;
	return 0;
}

static void list_verbs(FILE *f, const char *prefix, const struct cli_verb *verbs)
{
	fprintf(f, "Usage:\n inplace %s%s<command> [options]\n\nCommands:\n", prefix, *prefix ? " " : "");
	for (const struct cli_verb *v = verbs; v->name; v++)
		fprintf(f, " %-14s %s\n", v->name, v->summary);
	fprintf(f, "\nRun 'inplace %s%s<command> --help' for the options of one command.\n",
		prefix, *prefix ? " " : "");
}

int cli_dispatch(const char *prefix, const struct cli_verb *verbs, int argc, char **argv)
{
	if (argc < 2) {
		list_verbs(stderr, prefix, verbs);
		return IP_EXIT_BADINPUT;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		list_verbs(stdout, prefix, verbs);
		return IP_EXIT_OK;
	}
	for (const struct cli_verb *v = verbs; v->name; v++)
		if (!strcmp(argv[1], v->name)) {
			verb_argc = argc - 1;
			verb_argv = argv + 1;
			optopt = 0;
			return v->fn(argc - 1, argv + 1);
		}
	fprintf(stderr, "inplace: '%s%s%s' is not an inplace command: see 'inplace %s%s--help'\n",
		prefix, *prefix ? " " : "", argv[1], prefix, *prefix ? " " : "");
	return IP_EXIT_BADINPUT;
}

int main(int argc, char **argv)
{
	int r;

	/* getopt's own message would be a second line before ours, which
	 * names the option (cli_usage) */
	opterr = 0;
	/* /init of the staging initramfs: the kernel starts us as PID 1 */
	if (getpid() == 1) {
		static char *init_argv[] = { "inplace", "stage", "init", NULL };

		return cli_dispatch("", cli_top_verbs, 3, init_argv);
	}
	if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
		printf("inplace %s\n", IP_TOOL_VERSION);
		return 0;
	}
	/* hidden: the man page generator, its check, and bash completion */
	if (argc >= 2 && !strcmp(argv[1], "--help-man"))
		return cli_help_man(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "--help-check"))
		return cli_help_check();
	if (argc >= 2 && !strcmp(argv[1], "--complete"))
		return cli_complete(argc - 2, argv + 2);
	r = cli_dispatch("", cli_top_verbs, argc, argv);
	/* A result nobody could read is a failure (git's check at exit). */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "inplace: cannot write the result to standard output: %s\n", strerror(errno));
		return IP_EXIT_FAILED;
	}
	return r;
}
