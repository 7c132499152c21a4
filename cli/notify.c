/* notify.c — `inplace notify`: the notify phase of a job run alone, so that a
 * fleet tool can ask users before it starts a job.  The work is in
 * bootstage/notify.c; this file parses, prints and picks the exit status. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "bootstage/notify.h"
#include "cli/cli.h"

#define NOTIFY_DEFAULT_COUNTDOWN 60u
#define NOTIFY_DEFAULT_MAX_POSTPONE 86400u

enum {
	OPT_MESSAGE = OPT_CLI_LAST,
	OPT_COUNTDOWN,
	OPT_ALLOW_POSTPONE,
	OPT_MAX_POSTPONE,
	OPT_POSTPONED,
	OPT_ALLOW_DECLINE,
	OPT_NO_PROMPT,
};

const struct cli_help cli_help_notify = {
	.synopsis = "[options]",
	.description =
		"Tell logged-in users that this machine is about to be reimaged (a message on\n"
		"every login terminal, a desktop notification on every user session bus) and,\n"
		"at a terminal, ask: install now, postpone or decline.  No answer by the end\n"
		"of the countdown means install.  Prints the answer; exit 0 whatever it is.\n",
	.opts = (const struct cli_opt[]){
		{ "message", 0, "M", OPT_MESSAGE, "what users are told (default: a sentence on reimaging)" },
		{ "countdown", 0, "D", OPT_COUNTDOWN, "time before install, e.g. 90, 15m (default 60s)" },
		{ "allow-postpone", 0, NULL, OPT_ALLOW_POSTPONE, "offer to postpone (1h, 4h, 1d)" },
		{ "max-postpone", 0, "D", OPT_MAX_POSTPONE, "total postponement allowed (default 1d; implies "
							   "--allow-postpone)" },
		{ "postponed", 0, "D", OPT_POSTPONED, "postponement already used by earlier answers" },
		{ "allow-decline", 0, NULL, OPT_ALLOW_DECLINE, "offer to decline" },
		{ "no-prompt", 0, NULL, OPT_NO_PROMPT, "never ask, even at a terminal" },
		CLI_OPT_DRY_RUN("count the sessions that would be told; tell and ask nobody"),
		CLI_OPT_JSON("one JSON document: {\"version\":1,\"answer\":…}"),
		CLI_OPTS_TAIL,
	},
	.more = "Durations are seconds, or a number with s, m, h or d.  The prompt needs\n"
		"standard input and standard error on a terminal.\n",
};

static int parse_duration_opt(const struct cli_opts *o, const char *arg, unsigned *out)
{
	ip_error e = { 0 };

	if (bootstage_parse_duration(arg, out, &e) < 0)
		return cli_usage(o, "notify", "%s", e.msg);
	return 0;
}

static void iso_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

static json_object *result_doc(const struct bootstage_notify_result *r, unsigned so_far, bool dry_run)
{
	json_object *doc = ip_json_doc("notify"), *ttys, *desk;
	char at[40];

	json_object_object_add(doc, "answer", json_object_new_string(bootstage_answer_name(r->answer)));
	json_object_object_add(doc, "answered", json_object_new_boolean(r->answered));
	json_object_object_add(doc, "prompted", json_object_new_boolean(r->prompted));
	if (dry_run)
		json_object_object_add(doc, "dry_run", json_object_new_boolean(1));
	if (r->answer == BOOTSTAGE_POSTPONE) {
		iso_time(r->rerun_at, at, sizeof(at));
		json_object_object_add(doc, "postpone_s", json_object_new_int64(r->postpone_s));
		/* what the next run passes as --postponed */
		json_object_object_add(doc, "postponed_total_s",
				       json_object_new_int64((int64_t)so_far + r->postpone_s));
		json_object_object_add(doc, "rerun_at", json_object_new_string(at));
		json_object_object_add(doc, "rearmed", json_object_new_boolean(r->rearmed));
		if (r->rearmed)
			json_object_object_add(doc, "timer", json_object_new_string(r->rearm_unit));
	}
	ttys = json_object_new_object();
	json_object_object_add(ttys, "found", json_object_new_int64(r->ttys_found));
	json_object_object_add(ttys, "told", json_object_new_int64(r->ttys_told));
	json_object_object_add(doc, "terminals", ttys);
	desk = json_object_new_object();
	json_object_object_add(desk, "found", json_object_new_int64(r->buses_found));
	json_object_object_add(desk, "told", json_object_new_int64(r->buses_told));
	json_object_object_add(doc, "desktops", desk);
	return doc;
}

static void human(const struct bootstage_notify_result *r, bool dry_run)
{
	char d[32], at[64];
	struct tm tm;

	if (dry_run) {
		printf("would tell %u terminals and %u desktop sessions (dry run: nobody told, "
		       "nothing asked)\n", r->ttys_found, r->buses_found);
		return;
	}
	switch (r->answer) {
	case BOOTSTAGE_INSTALL:
		printf("answer: install%s\n", r->answered ? "" : " (no answer before the countdown ended)");
		break;
	case BOOTSTAGE_POSTPONE:
		strftime(at, sizeof(at), "%Y-%m-%d %H:%M %Z", localtime_r(&r->rerun_at, &tm));
		printf("answer: postpone for %s: %s %s\n", bootstage_format_duration(r->postpone_s, d, sizeof(d)),
		       r->rearmed ? "a timer re-runs the job at" : "re-run at", at);
		break;
	case BOOTSTAGE_DECLINE:
		printf("answer: decline\n");
		break;
	}
	printf("users told: %u of %u terminals, %u of %u desktop sessions\n", r->ttys_told,
	       r->ttys_found, r->buses_told, r->buses_found);
}

int cmd_notify(int argc, char **argv)
{
	struct bootstage_notify_opts no = {
		.countdown_s = NOTIFY_DEFAULT_COUNTDOWN,
		.max_postpone_s = NOTIFY_DEFAULT_MAX_POSTPONE,
		.prompt_in = STDIN_FILENO,
		.prompt_out = STDERR_FILENO,
		.interactive = true,
	};
	struct bootstage_notify_result res;
	struct cli_opts o = { 0 };
	ip_error e = { 0 };
	int c, r;

	optind = 0;
	while ((c = cli_getopt(argc, argv, &cli_help_notify)) != -1) {
		if (c == 'h') {
			cli_help_print("notify", &cli_help_notify);
			return IP_EXIT_OK;
		}
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_MESSAGE:
			no.message = optarg;
			break;
		case OPT_COUNTDOWN:
			if ((r = parse_duration_opt(&o, optarg, &no.countdown_s)))
				return r;
			break;
		case OPT_ALLOW_POSTPONE:
			no.allow_postpone = true;
			break;
		case OPT_MAX_POSTPONE:
			if ((r = parse_duration_opt(&o, optarg, &no.max_postpone_s)))
				return r;
			no.allow_postpone = true;
			break;
		case OPT_POSTPONED:
			if ((r = parse_duration_opt(&o, optarg, &no.postponed_so_far_s)))
				return r;
			break;
		case OPT_ALLOW_DECLINE:
			no.allow_decline = true;
			break;
		case OPT_NO_PROMPT:
			no.interactive = false;
			break;
		default:
			return cli_usage(&o, "notify", "unknown option");
		}
	}
	if (optind < argc)
		return cli_usage(&o, "notify", "unexpected argument '%s'", argv[optind]);
	no.dry_run = o.dry_run;
	cli_opts_apply(&o);
	/* The prompt takes keys from stdin and draws on stderr, so stdout can
	 * carry the --json result to a file or a pipe meanwhile. */
	if (!isatty(STDIN_FILENO) || !isatty(STDERR_FILENO))
		no.interactive = false;

	r = bootstage_notify(&no, &res, &e);
	if (r < 0)
		return cli_error(&o, "notify", &e);
	if (o.json)
		return cli_emit(result_doc(&res, no.postponed_so_far_s, no.dry_run));
	human(&res, no.dry_run);
	return IP_EXIT_OK;
}
