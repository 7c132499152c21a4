/* boot.c — the pipeline's verbs: `inplace run JOB.ini [--dry-run]` and
 * `inplace status`.  The work is in bootstage/; this file parses, prints
 * and picks the exit status. */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bootstage/boot.h"
#include "bootstage/bootstage.h"
#include "bootstage/notify.h"
#include "cli/cli.h"

enum {
	OPT_STATE_DIR = OPT_CLI_LAST,
	OPT_DISK,
	OPT_EVENTS,
	OPT_NO_REBOOT,
	OPT_BOOT_ROOT,
	OPT_KERNEL,
	OPT_MODULES,
	OPT_CMDLINE,
};

#define STATE_DIR_OPT(what) \
	{ "state-dir", 0, "DIR", OPT_STATE_DIR, what " (default: $INPLACE_STATE_DIR or /var/lib/inplace)" }

const struct cli_help cli_help_run = {
	.synopsis = "[options] JOB.ini",
	.description =
		"Reimage this machine in place as the job file says, keeping its users.\n"
		"The job is checked whole first (see inplace-job(5)); then the\n"
		"preflight phase, read-only: the image is reachable and signed, it fits,\n"
		"the store size is known and room for it is planned.\n",
	.opts = (const struct cli_opt[]){
		CLI_OPT_DRY_RUN("stop after preflight and print the plan; write nothing"),
		STATE_DIR_OPT("where state.json and status.log live until the store exists"),
		{ "no-reboot", 0, NULL, OPT_NO_REBOOT, "[boot] method grub or kexec: arm the staging boot, but "
						       "leave the reboot to the admin" },
		{ "kernel", 0, "VMLINUZ", OPT_KERNEL, "the staging kernel (default: the running one's)" },
		{ "modules", 0, "DIR", OPT_MODULES, "its modules (default: /lib/modules/VERSION beside it)" },
		{ "cmdline", 0, "ARGS", OPT_CMDLINE, "more arguments for the staging kernel (this boot's "
						     "console= arguments are passed on anyway)" },
		{ "boot-root", 0, "DIR", OPT_BOOT_ROOT, "the system whose /boot gets the GRUB one-shot entry "
							"(default: /; a mounted disk's root, for tests)" },
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
	.more = "Exit status: 0 ok, 1 failed, 2 bad job or input (nothing written).\n",
};

const struct cli_help cli_help_status = {
	.synopsis = "[options]",
	.description =
		"Where the job stands: the phase, the step, whether it failed, the last\n"
		"events of status.log.  Without any state: phase \"none\".\n",
	.opts = (const struct cli_opt[]){
		{ "disk", 0, "DISK", OPT_DISK, "only a run on DISK" },
		STATE_DIR_OPT("the state directory"),
		{ "events", 0, "N", OPT_EVENTS, "how many of the last events (default 10)" },
		CLI_OPT_JSON("{\"version\":1,\"phase\",\"step\",\"ok\",\"error\",\"events\"}"),
		CLI_OPTS_TAIL,
	},
};

struct bargs {
	struct cli_opts o;
	const char *state_dir, *disk;
	unsigned events;
	bool no_reboot;
	const char *boot_root, *kernel, *modules, *cmdline;
};

/* Returns -1 after --help, 0 to go on, or the exit status of bad usage. */
static int parse(int argc, char **argv, const char *command, const struct cli_help *help,
		 struct bargs *a)
{
	int c;

	memset(a, 0, sizeof(*a));
	a->events = 10;
	optind = 0;
	while ((c = cli_getopt(argc, argv, help)) != -1) {
		if (c == 'h') {
			cli_help_print(command, help);
			return -1;
		}
		/* each verb's table holds only the options it takes */
		if (cli_common_opt(&a->o, c))
			continue;
		switch (c) {
		case OPT_STATE_DIR:
			a->state_dir = optarg;
			break;
		case OPT_DISK:
			a->disk = optarg;
			break;
		case OPT_EVENTS:
			if (cli_parse_uint(&a->o, command, "number of events", optarg, &a->events))
				return IP_EXIT_BADINPUT;
			break;
		case OPT_NO_REBOOT:
			a->no_reboot = true;
			break;
		case OPT_BOOT_ROOT:
			a->boot_root = optarg;
			break;
		case OPT_KERNEL:
			a->kernel = optarg;
			break;
		case OPT_CMDLINE:
			a->cmdline = optarg;
			break;
		case OPT_MODULES:
			a->modules = optarg;
			break;
		default:
			return cli_usage(&a->o, command, "unknown option '%s'", argv[optind - 1]);
		}
	}
	cli_opts_apply(&a->o);
	if (!a->state_dir)
		a->state_dir = bootstage_default_state_dir();
	return 0;
}

static char *hsize(uint64_t v, char *buf)
{
	return ip_format_size(v, buf, IP_SIZE_BUFSZ);
}

static json_object *preflight_json(const bootstage_job *j, const struct bootstage_preflight_result *p)
{
	json_object *doc = ip_json_doc("run"), *img = json_object_new_object(), *store = json_object_new_object();

	json_object_object_add(doc, "job", json_object_new_string(j->name));
	json_object_object_add(doc, "job_hash", json_object_new_string(j->hash));
	json_object_object_add(doc, "phase", json_object_new_string("preflight"));
	json_object_object_add(img, "source", json_object_new_string(j->image));
	json_object_object_add(img, "bytes", ip_json_u64(p->image_bytes));
	json_object_object_add(img, "partition_bytes", p->image_url ? NULL : ip_json_u64(p->image_part_bytes));
	json_object_object_add(img, "signature", json_object_new_string(
		p->signature_checked ? "good" : !j->require_signature ? "not required" : "checked at download"));
	json_object_object_add(doc, "image", img);
	json_object_object_add(doc, "disk", json_object_new_string(j->disk));
	json_object_object_add(doc, "system_partition", json_object_new_int((int)j->system_partition));
	json_object_object_add(doc, "system_bytes", ip_json_u64(p->system_bytes));
	json_object_object_add(doc, "system_bytes_after", ip_json_u64(p->system_bytes_after));
	json_object_object_add(store, "kind", json_object_new_string(j->store == BOOTSTAGE_STORE_DIR ? "directory" : "partition"));
	json_object_object_add(store, "bytes", ip_json_u64(p->store_bytes));
	json_object_object_add(store, "profile_bytes", ip_json_u64(p->profile_bytes));
	json_object_object_add(store, "rollback_bytes", ip_json_u64(p->rollback_bytes));
	if (j->store == BOOTSTAGE_STORE_DIR) {
		json_object_object_add(store, "directory", json_object_new_string(j->store_dir));
		json_object_object_add(store, "free", ip_json_u64(p->store_free));
	}
	json_object_object_add(doc, "store", store);
	json_object_object_add(doc, "estimate", p->estimate ? json_object_get(p->estimate) : NULL);
	json_object_object_add(doc, "checks", p->checks ? json_object_get(p->checks) : NULL);
	if (p->planned) {
		json_object *plan = json_object_new_object();
		json_object_object_add(plan, "partition", json_object_new_int((int)p->plan.partition));
		json_object_object_add(plan, "start", ip_json_u64(p->plan.start));
		json_object_object_add(plan, "size", ip_json_u64(p->plan.size));
		json_object_object_add(plan, "steps", cli_plan_json(&p->plan, "ext4", "INPLACE-STORE"));
		json_object_object_add(doc, "plan", plan);
	} else {
		json_object_object_add(doc, "plan", NULL);
	}
	return doc;
}

static void preflight_print(const bootstage_job *j, const struct bootstage_preflight_result *p)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ], b3[IP_SIZE_BUFSZ];

	printf("preflight of %s (job %.12s): ok\n", j->name, j->hash);
	printf(" image    %s, %s", j->image, hsize(p->image_bytes, b1));
	if (!p->image_url)
		printf(", for a partition of %s", hsize(p->image_part_bytes, b2));
	printf(", signature %s\n", p->signature_checked ? "good" : !j->require_signature ? "not required"
	       : "checked at download");
	printf(" system   partition %u of %s, %s", j->system_partition, j->disk, hsize(p->system_bytes, b1));
	if (p->system_bytes_after != p->system_bytes)
		printf(" (%s after making room)", hsize(p->system_bytes_after, b2));
	printf("\n store    %s", hsize(p->store_bytes, b1));
	if (p->profile_bytes)
		printf(" (profiles %s + 10%%, the image %s, the bundle%s)", hsize(p->profile_bytes, b2),
		       hsize(p->image_bytes, b3), p->rollback_bytes ? ", the rollback image" : "");
	if (j->store == BOOTSTAGE_STORE_DIR)
		printf(" in %s (%s free)\n", j->store_dir, hsize(p->store_free, b2));
	else
		printf(" in a new storage partition\n");
	if (p->planned) {
		printf("plan for a storage partition of %s on %s:\n", hsize(p->plan.size, b1), j->disk);
		cli_plan_print(&p->plan, "ext4", "INPLACE-STORE");
	}
}

static void run_print(const struct bootstage_run_result *res, const char *disk)
{
	if (res->answer == BOOTSTAGE_POSTPONE) {
		char when[64];
		time_t t = (time_t)res->rerun_at;

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M %Z", localtime(&t));
		printf("postponed: nothing was changed; %s at %s\n",
		       res->rearmed ? "a timer runs the job again" : "run the job again", when);
	} else if (res->answer == BOOTSTAGE_DECLINE)
		printf("declined: nothing was changed\n");
	else if (res->hooked)
		printf("phase %s: the staging boot is armed; the next boot makes room and saves the users\n",
		       bootstage_phase_name(res->phase));
	else if (res->already)
		printf("this job is done already on %s: nothing to do\n", disk);
	else if (res->under_way)
		printf("this job is under way on %s (phase %s): continue it with 'inplace resume --disk %s'\n", disk,
		       bootstage_phase_name(res->phase), disk);
	else if (res->phase == BOOTSTAGE_PHASE_DONE)
		printf("done: the new system runs with its users; the storage space is given back\n");
	else if (res->reboot)
		printf("phase %s: a reboot comes here ([boot] method = none): run 'inplace resume --disk %s' to play it\n",
		       bootstage_phase_name(res->phase), disk);
	printf("state: %s\n", res->state_dir);
}

static json_object *run_json(const char *cmd, const struct bootstage_run_result *res, const char *disk)
{
	json_object *doc = ip_json_doc(cmd);

	json_object_object_add(doc, "disk", json_object_new_string(disk));
	json_object_object_add(doc, "phase", json_object_new_string(bootstage_phase_name(res->phase)));
	json_object_object_add(doc, "reboot", json_object_new_boolean(res->reboot));
	json_object_object_add(doc, "armed", json_object_new_boolean(res->hooked));
	json_object_object_add(doc, "already_done", json_object_new_boolean(res->already));
	json_object_object_add(doc, "under_way", json_object_new_boolean(res->under_way));
	if (!strcmp(cmd, "run") && !res->already && !res->under_way)
		json_object_object_add(doc, "answer", json_object_new_string(bootstage_answer_name(res->answer)));
	if (res->answer == BOOTSTAGE_POSTPONE) {
		json_object_object_add(doc, "rerun_at", json_object_new_int64(res->rerun_at));
		json_object_object_add(doc, "rearmed", json_object_new_boolean(res->rearmed));
	}
	if (!strcmp(cmd, "reclaim"))
		json_object_object_add(doc, "reclaimed", json_object_new_boolean(res->reclaimed));
	json_object_object_add(doc, "state_dir", json_object_new_string(res->state_dir));
	return doc;
}

int cmd_run(int argc, char **argv)
{
	struct bootstage_preflight_result p = { 0 };
	bootstage_job *j = NULL;
	ip_error e = { 0 };
	struct bargs a;
	int r;

	if ((r = parse(argc, argv, "run", &cli_help_run, &a)))
		return r < 0 ? IP_EXIT_OK : r;
	if (optind != argc - 1)
		return cli_usage(&a.o, "run", "expected one JOB.ini");
	if (bootstage_job_load(argv[optind], &j, &e) < 0)
		return cli_error(&a.o, "run", &e);
	if (a.o.dry_run) {
		r = bootstage_preflight(j, &p, &e);
	} else {
		/* the admin is asked only at a terminal, and not under --json,
		 * whose reader is a program */
		struct bootstage_run_opts ro = { .state_dir = a.state_dir,
						 .interactive = !a.o.json && isatty(0) && isatty(2),
						 .boot_root = a.boot_root, .kernel = a.kernel, .modules_dir = a.modules,
						 .cmdline = a.cmdline };
		struct bootstage_run_result res;

		r = bootstage_run(j, &ro, &p, &res, &e);
		if (r == 0 && a.o.json) {
			json_object *doc = run_json("run", &res, j->disk);

			if (!res.already && !res.under_way)
				json_object_object_add(doc, "preflight", preflight_json(j, &p));
			r = cli_emit(doc);
		} else if (r == 0) {
			if (!res.already && !res.under_way)
				preflight_print(j, &p);
			run_print(&res, j->disk);
		}
		/* the staging boot is armed: the reboot that starts it, unless
		 * the admin keeps it for later */
		if (r == 0 && res.hooked && !a.no_reboot) {
			if (!a.o.json)
				printf("rebooting into the staging environment\n");
			fflush(stdout);
			if (bs_reboot(j->boot == BOOTSTAGE_BOOT_KEXEC, &e) < 0)
				r = -1;
		}
		bootstage_preflight_result_clear(&p);
		bootstage_job_free(j);
		return r < 0 ? cli_error(&a.o, "run", &e) : r;
	}
	if (r < 0) {
		bootstage_preflight_result_clear(&p);
		bootstage_job_free(j);
		return cli_error(&a.o, "run", &e);
	}
	if (a.o.json) {
		json_object *doc = preflight_json(j, &p);
		json_object_object_add(doc, "dry_run", json_object_new_boolean(1));
		r = cli_emit(doc);
	} else {
		preflight_print(j, &p);
		printf("dry run: nothing written\n");
		r = IP_EXIT_OK;
	}
	bootstage_preflight_result_clear(&p);
	bootstage_job_free(j);
	return r;
}

static void status_print(json_object *doc)
{
	json_object *v, *events;
	const char *err;

	json_object_object_get_ex(doc, "phase", &v);
	printf("phase: %s", json_object_get_string(v));
	if (json_object_object_get_ex(doc, "step", &v) && v)
		printf(", step: %s", json_object_get_string(v));
	json_object_object_get_ex(doc, "ok", &v);
	printf(", %s\n", json_object_get_boolean(v) ? "ok" : "failed");
	if (json_object_object_get_ex(doc, "error", &v) && v && (err = json_object_get_string(v)))
		printf("error: %s\n", err);
	if (json_object_object_get_ex(doc, "disk", &v) && v)
		printf("disk: %s\n", json_object_get_string(v));
	if (json_object_object_get_ex(doc, "records", &v) && v) {
		printf("read from: %s (what the staging boot recorded)\n", json_object_get_string(v));
		if (json_object_object_get_ex(doc, "records_unclean", &v) && json_object_get_boolean(v))
			printf("note: the staging boot was cut: its last changes may be missing here\n");
	}
	json_object_object_get_ex(doc, "events", &events);
	if (!json_object_array_length(events))
		return;
	printf("last events:\n");
	for (size_t i = 0; i < json_object_array_length(events); i++) {
		json_object *ev = json_object_array_get_idx(events, i), *t, *ph, *s, *l, *m;

		json_object_object_get_ex(ev, "time", &t);
		json_object_object_get_ex(ev, "phase", &ph);
		json_object_object_get_ex(ev, "step", &s);
		json_object_object_get_ex(ev, "level", &l);
		json_object_object_get_ex(ev, "message", &m);
		printf(" %s %s%s%s %s: %s\n", t ? json_object_get_string(t) : "", ph ? json_object_get_string(ph) : "",
		       s ? "/" : "", s ? json_object_get_string(s) : "", l ? json_object_get_string(l) : "",
		       m ? json_object_get_string(m) : "");
	}
}

int cmd_status(int argc, char **argv)
{
	json_object *doc = NULL;
	ip_error e = { 0 };
	struct bargs a;
	int r;

	if ((r = parse(argc, argv, "status", &cli_help_status, &a)))
		return r < 0 ? IP_EXIT_OK : r;
	if (optind != argc)
		return cli_usage(&a.o, "status", "unexpected argument '%s'", argv[optind]);
	if (bootstage_status_find(a.disk, &(struct bootstage_run_opts){ .state_dir = a.state_dir }, a.events,
				  &doc, &e) < 0)
		return cli_error(&a.o, "status", &e);
	if (a.o.json)
		return cli_emit(doc);   /* keeps the "ok" of the run */
	status_print(doc);
	json_object_put(doc);
	return IP_EXIT_OK;
}

const struct cli_help cli_help_resume = {
	.synopsis = "[options]",
	.description =
		"Continue the run of a job from its persisted state, up to the next reboot\n"
		"or the end: the boot hooks call this, and with [boot] method = none each\n"
		"call plays one boot (the staging environment, then the new system's first\n"
		"boot).  Safe to run again after a crash or kill -9 at any point.\n",
	.opts = (const struct cli_opt[]){
		{ "disk", 0, "DISK", OPT_DISK, "the disk of the run (its storage partition holds the "
					       "state once it exists)" },
		STATE_DIR_OPT("the state directory"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
	.more = "Exit status: 0 ok, 1 failed (resume again once the cause is fixed), 2 no\n"
		"run to resume or a state this inplace cannot read.\n",
};

int cmd_resume(int argc, char **argv)
{
	struct bootstage_run_result res;
	struct bootstage_run_opts ro = { 0 };
	ip_error e = { 0 };
	struct bargs a;
	int r;

	if ((r = parse(argc, argv, "resume", &cli_help_resume, &a)))
		return r < 0 ? IP_EXIT_OK : r;
	if (optind != argc)
		return cli_usage(&a.o, "resume", "unexpected argument '%s'", argv[optind]);
	ro.state_dir = a.state_dir;
	if (bootstage_resume(a.disk, &ro, &res, &e) < 0)
		return cli_error(&a.o, "resume", &e);
	if (a.o.json)
		return cli_emit(run_json("resume", &res, a.disk ? a.disk : ""));
	run_print(&res, a.disk ? a.disk : "DISK");
	return IP_EXIT_OK;
}

const struct cli_help cli_help_reclaim = {
	.synopsis = "[options]",
	.description =
		"Give the storage space back by hand.  A run whose first boot restored the\n"
		"users but was cut before its finish phase is finished (as resume would);\n"
		"a run done with keep_storage = yes or image loses its storage partition\n"
		"now: wiped, deleted, the system partition grown, its fstab line removed\n"
		"(unmount it first).  Refused while the store holds profiles not restored.\n",
	.opts = (const struct cli_opt[]){
		{ "disk", 0, "DISK", OPT_DISK, "the disk of the run" },
		STATE_DIR_OPT("the state directory"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
	.more = "Exit status: 0 ok (or nothing to reclaim), 1 failed, 2 no run, or a run\n"
		"not restored yet (nothing changed).\n",
};

int cmd_reclaim(int argc, char **argv)
{
	struct bootstage_run_result res;
	struct bootstage_run_opts ro = { 0 };
	ip_error e = { 0 };
	struct bargs a;
	int r;

	if ((r = parse(argc, argv, "reclaim", &cli_help_reclaim, &a)))
		return r < 0 ? IP_EXIT_OK : r;
	if (optind != argc)
		return cli_usage(&a.o, "reclaim", "unexpected argument '%s'", argv[optind]);
	ro.state_dir = a.state_dir;
	if (bootstage_reclaim(a.disk, &ro, &res, &e) < 0)
		return cli_error(&a.o, "reclaim", &e);
	if (a.o.json)
		return cli_emit(run_json("reclaim", &res, a.disk ? a.disk : ""));
	if (res.reclaimed) {
		printf("reclaimed: the kept storage partition is wiped and deleted, the system partition grown\n");
		printf("state: %s\n", res.state_dir);
	} else {
		run_print(&res, a.disk ? a.disk : "DISK");
	}
	return IP_EXIT_OK;
}
