/* stage.c — `inplace stage build` (the staging initramfs) and `inplace
 * stage init` (what /init runs as PID 1 in it).  The work is in
 * bootstage/stage*.c; this file parses, prints and reboots. */
#include <errno.h>
#include <string.h>
#include <sys/reboot.h>
#include <unistd.h>

#include "bootstage/media.h"
#include "bootstage/stage.h"
#include "cli/cli.h"

enum {
	OPT_OUT = OPT_CLI_LAST,
	OPT_KERNEL,
	OPT_MODULES,
	OPT_JOB,
	OPT_DISK,
	OPT_STATE_DIR,
	OPT_ADD_MODULE,
	OPT_DISK_WAIT,
	OPT_NO_RECORDS,
};

static const struct cli_help build_help = {
	.synopsis = "-o FILE [options]",
	.description =
		"Write the staging initramfs for the run waiting in the state directory\n"
		"(after 'inplace run'): the bundle as /init, the job and its state, the\n"
		"job's image, and the kernel modules of the disk's controller and of the\n"
		"filesystems, loaded by init in dependency order.  Boot it with the same\n"
		"kernel; it finds the disk by its partition table id, resumes the run and\n"
		"reboots.  Also makes the records area on the old root that holds the\n"
		"state durably until the store exists.\n",
	.opts = (const struct cli_opt[]){
		{ "output", 'o', "FILE", 'o', "the initramfs (cpio newc, zstd)" },
		{ "kernel", 0, "VMLINUZ", OPT_KERNEL, "the kernel it is for (default: the running one's "
						      "/boot/vmlinuz-$(uname -r)); its version names its modules" },
		{ "modules", 0, "DIR", OPT_MODULES, "that kernel's modules (default: /lib/modules/VERSION of "
						    "the tree the kernel comes from)" },
		{ "job", 0, "JOB.ini", OPT_JOB, "the state must be this job's run" },
		{ "disk", 0, "DISK", OPT_DISK, "the run's disk (default: the one the state names)" },
		{ "state-dir", 0, "DIR", OPT_STATE_DIR, "the state directory (default: $INPLACE_STATE_DIR or "
							"/var/lib/inplace)" },
		{ "add-module", 0, "NAME", OPT_ADD_MODULE, "one more module or alias to load (repeatable)" },
		{ "disk-wait", 0, "SEC", OPT_DISK_WAIT, "how long init waits for the disk (default 60)" },
		{ "no-records", 0, NULL, OPT_NO_RECORDS, "no records area: the state lives in RAM until the "
							 "store exists (a power cut then loses it)" },
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
	.more = "Exit status: 0 ok, 1 failed, 2 bad input (no waiting run, no kernel).\n",
};

static const struct cli_help init_help = {
	.synopsis = "",
	.description =
		"PID 1 of the staging initramfs: its /init runs this; it resumes the run\n"
		"and reboots, whatever happened.  Refused anywhere else.\n",
	.opts = (const struct cli_opt[]){
		CLI_OPT_HELP,
		CLI_OPT_END,
	},
};

static json_object *build_json(const char *out, const struct bs_stage_result *r)
{
	json_object *doc = ip_json_doc("stage build");

	json_object_object_add(doc, "initramfs", json_object_new_string(out));
	json_object_object_add(doc, "bytes", ip_json_u64(r->bytes));
	json_object_object_add(doc, "kernel", json_object_new_string(r->kernel));
	json_object_object_add(doc, "kernel_version", json_object_new_string(r->version));
	json_object_object_add(doc, "modules_dir", json_object_new_string(r->modules_dir));
	json_object_object_add(doc, "modules", json_object_get(r->modules));
	json_object_object_add(doc, "disk", json_object_get(r->disk_id));
	json_object_object_add(doc, "records", bs_records_json(r->records ? &r->rec : NULL));
	json_object_object_add(doc, "image", bs_root_image_json(&r->image));
	return doc;
}

static int cmd_stage_build(int argc, char **argv)
{
	struct bs_stage_opts so = { 0 };
	struct bs_stage_result res = { 0 };
	const char *mods[65] = { 0 }, *out = NULL;
	struct cli_opts o = { 0 };
	ip_error e = { 0 };
	size_t nm = 0;
	char sz[32];
	int c, r;

	optind = 0;
	while ((c = cli_getopt(argc, argv, &build_help)) != -1) {
		if (c == 'h') {
			cli_help_print("stage build", &build_help);
			return IP_EXIT_OK;
		}
		if (cli_common_opt(&o, c)) {
			if (c == OPT_DRY_RUN)
				return cli_usage(&o, "stage build", "--dry-run does not apply");
			continue;
		}
		switch (c) {
		case 'o': out = optarg; break;
		case OPT_KERNEL: so.kernel = optarg; break;
		case OPT_MODULES: so.modules_dir = optarg; break;
		case OPT_JOB: so.job = optarg; break;
		case OPT_DISK: so.disk = optarg; break;
		case OPT_STATE_DIR: so.state_dir = optarg; break;
		case OPT_NO_RECORDS: so.no_records = true; break;
		case OPT_ADD_MODULE:
			if (nm == IP_ARRAY_SIZE(mods) - 1)
				return cli_usage(&o, "stage build", "too many --add-module");
			mods[nm++] = optarg;
			break;
		case OPT_DISK_WAIT:
			if ((r = cli_parse_uint(&o, "stage build", "--disk-wait seconds", optarg, &so.disk_wait_s)))
				return r;
			break;
		default:
			return cli_usage(&o, "stage build", "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage(&o, "stage build", "unexpected argument '%s'", argv[optind]);
	if (!out)
		return cli_usage(&o, "stage build", "missing -o FILE");
	so.add_modules = mods;
	cli_opts_apply(&o);
	if (bs_stage_build(out, &so, &res, &e) < 0) {
		bs_stage_result_clear(&res);
		return cli_error(&o, "stage build", &e);
	}
	if (o.json) {
		r = cli_emit(build_json(out, &res));
	} else {
		printf("%s: staging initramfs for kernel %s, %s, %zu modules\n", out, res.version,
		       ip_format_size(res.bytes, sz, sizeof(sz)), json_object_array_length(res.modules));
		if (res.records)
			printf("records area: %s (byte %llu of the disk)\n", res.rec.path,
			       (unsigned long long)res.rec.off);
		printf("image: %s on the old root (%s)\n", res.image.path, ip_format_size(res.image.bytes, sz, sizeof(sz)));
		r = IP_EXIT_OK;
	}
	bs_stage_result_clear(&res);
	return r;
}

static void console_say(const char *line, void *arg)
{
	(void)arg;
	fprintf(stderr, "inplace staging: %s\n", line);
}

/* PID 1 of the staging initramfs.  It never exits (the kernel would
 * panic): whatever happened, sync and reboot. */
static int cmd_stage_init(int argc, char **argv)
{
	ip_error e = { 0 };

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return cli_help_print("stage init", &init_help);
	if (getpid() != 1 || argc > 1) {
		fputs("inplace stage init: only the staging initramfs's /init runs this (as PID 1)\n", stderr);
		return IP_EXIT_BADINPUT;
	}
	if (bs_stage_init("/", console_say, NULL, &e) < 0)
		fprintf(stderr, "inplace staging: %s\n", e.msg);
	/* media and netboot boots power off rather than loop into themselves,
	 * or jump into the system on the disk */
	switch (bs_media_after()) {
	case BS_AFTER_POWEROFF:
		fputs("inplace staging: powering off\n", stderr);
		sync();
		reboot(RB_POWER_OFF);
		break;
	case BS_AFTER_KEXEC:
		fputs("inplace staging: starting the system on the disk (kexec)\n", stderr);
		sync();
		reboot(RB_KEXEC);
		break;
	default:
		break;
	}
	fputs("inplace staging: rebooting\n", stderr);
	sync();
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

const struct cli_verb cli_stage_verbs[] = {
	{ "build", cmd_stage_build, "write the staging initramfs (bundle, state, modules, init)", &build_help, NULL },
	{ "init", cmd_stage_init, "PID 1 of the staging initramfs (not for hand use)", &init_help, NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

int cmd_stage(int argc, char **argv)
{
	return cli_dispatch("stage", cli_stage_verbs, argc, argv);
}
