/* cli.h — the verb layer: the only code that prints or chooses an exit
 * status.  Each module's verbs live in cli/<module>.c. */
#ifndef INPLACE_CLI_H
#define INPLACE_CLI_H

#include <getopt.h>

#include "common/common.h"

/* Options every verb shares. */
struct cli_opts {
	bool json;     /* one JSON document on stdout */
	bool dry_run;  /* say what would be written, write nothing */
	bool quiet;    /* no progress */
};

/* A verb's entry point: argv[0] is the verb's own name ("shrink"). */
typedef int (*cli_fn)(int argc, char **argv);

/* One option of a verb: the only place it is declared.  It drives getopt
 * (cli_getopt), --help, the man pages and completion, so none can drift. */
struct cli_opt {
	const char *name;  /* long name without "--" */
	int letter;        /* short option letter, 0 for none */
	const char *arg;   /* its value's name ("SIZE"), NULL for a flag */
	int id;            /* what cli_getopt returns: the letter or an OPT_* id */
	const char *help;  /* one sentence or two, wrapped by the printer */
};

/* A verb's documentation: --help prints it, `inplace --help-man` turns it
 * into its man page section. */
struct cli_help {
	const char *synopsis;    /* after "inplace <command> " */
	const char *description; /* lines as written; a blank line between paragraphs */
	const struct cli_opt *opts; /* ends with CLI_OPT_END */
	const char *more;        /* sections after the options ("Environment: …") */
};

struct cli_verb {
	const char *name;
	cli_fn fn;
	const char *summary;          /* one line for the verb list */
	const struct cli_help *help;  /* a verb with its own options */
	const struct cli_verb *sub;   /* or a group of verbs ("part") */
};

/* The verb tables, walked by the man page generator and completion. */
extern const struct cli_verb cli_top_verbs[];
extern const struct cli_verb cli_part_verbs[];
extern const struct cli_verb cli_image_verbs[];
extern const struct cli_verb cli_profile_verbs[];
extern const struct cli_verb cli_media_verbs[];
extern const struct cli_verb cli_netboot_verbs[];
extern const struct cli_verb cli_stage_verbs[];
extern const struct cli_help cli_help_run, cli_help_resume, cli_help_reclaim, cli_help_status,
	cli_help_notify, cli_help_bundle;

/* Dispatch argv[1] among verbs (git style); prints the list on --help or
 * when the verb is missing.  prefix is "part", "image" … for messages. */
int cli_dispatch(const char *prefix, const struct cli_verb *verbs, int argc, char **argv);

/* Report a library error: "inplace: <msg>" on stderr, and with --json also a
 * result document {"version", "command", "ok": false, "error": {...}} on
 * stdout.  Returns the exit status to use (1 or 2). */
int cli_error(const struct cli_opts *o, const char *command, const ip_error *e);
/* Bad usage: one line naming the fix ("see 'inplace part shrink --help'"),
 * and a JSON error document under --json.  Returns 2. */
int cli_usage(const struct cli_opts *o, const char *command, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Print a result document (adds "ok": true) and free it.  Returns the exit
 * status (1 if stdout cannot be written). */
int cli_emit(json_object *doc);
/* Apply the shared options after parsing (progress off under --json). */
void cli_opts_apply(const struct cli_opts *o);
/* Parse a SIZE argument, reporting bad input through cli_usage. */
int cli_parse_size(const struct cli_opts *o, const char *command, const char *arg,
		   unsigned sector_size, uint64_t *out);
/* Parse a SIZE that may be given in sectors of DISK ("2048s"): opens the
 * disk read-only to learn its logical sector size.  Returns 0 or the exit
 * status, the error already reported. */
int cli_parse_disk_size(const struct cli_opts *o, const char *command, const char *disk,
			const char *arg, uint64_t *out);
/* Parse an unsigned number (partition number, thread count …). */
int cli_parse_uint(const struct cli_opts *o, const char *command, const char *what,
		   const char *arg, unsigned *out);

/* Module verb groups. */
int cmd_part(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_notify(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_reclaim(int argc, char **argv);
int cmd_bundle(int argc, char **argv);
int cmd_stage(int argc, char **argv);
int cmd_media(int argc, char **argv);
int cmd_netboot(int argc, char **argv);

/* A storage plan as `part plan` shows it (cli/part_table.c), for `run`. */
struct partctl_plan;
json_object *cli_plan_json(const struct partctl_plan *p, const char *fs, const char *label);
void cli_plan_print(const struct partctl_plan *p, const char *fs, const char *label);

/* getopt_long long-option ids shared by verbs. */
enum {
	OPT_JSON = 0x100,
	OPT_DRY_RUN,
	OPT_CLI_LAST, /* verbs number their own options from here */
};
/* The shared options, each verb listing those it takes. */
#define CLI_OPT_JSON(help) { "json", 0, NULL, OPT_JSON, help }
#define CLI_OPT_DRY_RUN(help) { "dry-run", 0, NULL, OPT_DRY_RUN, help }
#define CLI_OPT_QUIET { "quiet", 'q', NULL, 'q', "no progress output" }
#define CLI_OPT_HELP { "help", 'h', NULL, 'h', "display this help" }
#define CLI_OPT_END { NULL, 0, NULL, 0, NULL }
#define CLI_OPT_JSON_DOC CLI_OPT_JSON("one JSON document on stdout")
/* how most tables end */
#define CLI_OPTS_TAIL CLI_OPT_QUIET, CLI_OPT_HELP, CLI_OPT_END
/* Handle a common option inside a verb's getopt loop; true if it was one. */
bool cli_common_opt(struct cli_opts *o, int c);

/* getopt_long over the options of h (short letters and long names built
 * from h->opts); returns like getopt_long. */
int cli_getopt(int argc, char **argv, const struct cli_help *h);
/* Print the --help text of `inplace <command>` on stdout; returns 0. */
int cli_help_print(const char *command, const struct cli_help *h);

/* The hidden entry points of cli/help.c: `inplace --help-man TEMPLATE`
 * (a man page from a template in man/), `inplace --help-check` (every verb has its
 * table) and `inplace --complete WORDS…` (bash completion candidates). */
int cli_help_man(int argc, char **argv);
int cli_help_check(void);
int cli_complete(int argc, char **argv);

#endif
