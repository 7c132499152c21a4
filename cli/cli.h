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

struct cli_verb {
	const char *name;
	cli_fn fn;
	const char *summary; /* one line for the verb list */
};

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
#define CLI_COMMON_LONGOPTS \
	{ "json", no_argument, NULL, OPT_JSON }, \
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN }, \
	{ "quiet", no_argument, NULL, 'q' }, \
	{ "help", no_argument, NULL, 'h' }
/* Handle a common option inside a verb's getopt loop; true if it was one. */
bool cli_common_opt(struct cli_opts *o, int c);

#endif
