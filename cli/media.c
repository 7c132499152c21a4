/* media.c — `inplace media build` (a hybrid BIOS/UEFI boot image) and
 * `inplace netboot build` (kernel, initramfs, iPXE script, pxelinux
 * config) that start straight in the staging environment.  The work is
 * in bootstage/media.c; this file parses and prints. */
#include <string.h>

#include "bootstage/media.h"
#include "cli/cli.h"

enum {
	OPT_KERNEL = OPT_CLI_LAST,
	OPT_MODULES,
	OPT_ADD_MODULE,
	OPT_DISK_WAIT,
	OPT_CMDLINE,
};

#define MEDIA_OPTS(what, help)                                                                           \
	(const struct cli_opt[]){                                                                        \
		{ "output", 'o', what, 'o', help },                                                      \
		{ "kernel", 0, "VMLINUZ", OPT_KERNEL, "the staging kernel (default: the running one's "   \
						      "/boot/vmlinuz-$(uname -r)); its version names its modules" }, \
		{ "modules", 0, "DIR", OPT_MODULES, "that kernel's modules (default: /lib/modules/VERSION " \
						    "of the tree the kernel comes from)" },                \
		{ "add-module", 0, "NAME", OPT_ADD_MODULE, "one more module or alias to load (repeatable)" }, \
		{ "disk-wait", 0, "SEC", OPT_DISK_WAIT, "how long staging waits for the job's disk (default 60)" }, \
		{ "cmdline", 0, "ARGS", OPT_CMDLINE, "more arguments for the staging kernel (the consoles "  \
						     "are tty0 and ttyS0,115200)" },                         \
		CLI_OPT_JSON_DOC,                                                                        \
		CLI_OPTS_TAIL,                                                                           \
	}

#define MEDIA_MORE(method)                                                                  \
	"The job ([boot] method = " method ") is checked as far as this host can: parsed,\n"   \
	"the image a local file (absolute path) verified whole with its key,\n"                 \
	"system_partition given, store = partition.  The machine then finds its\n"              \
	"disk by the job's disk = /dev/disk/by-id/NAME (or, without it, as the one\n"           \
	"disk with that partition), runs the old system's part itself (preflight,\n"            \
	"state, records area), makes room, saves the users, deploys, and boots on\n"            \
	"into the new system (kexec); booted again later it boots on into the disk.\n"          \
	"A disk that is absent or ambiguous is said on the console and the machine\n"           \
	"powers off with the disk unchanged.\n\n"                                               \
	"Exit status: 0 ok, 1 failed, 2 bad input (bad job, image, kernel, tool).\n"

static const struct cli_help media_help = {
	.synopsis = "JOB.ini -o IMAGE [options]",
	.description =
		"Write a hybrid boot image (ISO 9660 with GRUB for BIOS and UEFI, grub-\n"
		"mkrescue's layout: boots from a CD or written raw to a USB stick) that\n"
		"starts straight in the staging environment of JOB.ini: the bundle, the\n"
		"job, its image and the usual x86_64 disk and filesystem modules.\n",
	.opts = MEDIA_OPTS("IMAGE", "the boot image (written whole or not at all)"),
	.more = MEDIA_MORE("media"),
};

static const struct cli_help netboot_help = {
	.synopsis = "JOB.ini -o DIR [options]",
	.description =
		"Write DIR/vmlinuz, DIR/initrd.img (the staging environment of JOB.ini:\n"
		"the bundle, the job, its image, the usual x86_64 modules), DIR/boot.ipxe\n"
		"(an iPXE script naming both relative to itself: serve DIR by TFTP or\n"
		"HTTP) and DIR/pxelinux.cfg/default.\n",
	.opts = MEDIA_OPTS("DIR", "the directory (made when missing)"),
	.more = MEDIA_MORE("pxe"),
};

static json_object *result_json(const char *cmd, const char *out, const struct bs_media_result *r)
{
	json_object *doc = ip_json_doc(cmd);

	json_object_object_add(doc, "output", json_object_new_string(out));
	json_object_object_add(doc, "bytes", ip_json_u64(r->bytes));
	json_object_object_add(doc, "initrd_bytes", ip_json_u64(r->initrd_bytes));
	json_object_object_add(doc, "kernel", json_object_new_string(r->kernel));
	json_object_object_add(doc, "kernel_version", json_object_new_string(r->version));
	json_object_object_add(doc, "cmdline", json_object_new_string(r->cmdline));
	json_object_object_add(doc, "modules", json_object_get(r->modules));
	json_object_object_add(doc, "signature_checked", json_object_new_boolean(r->signature_checked));
	return doc;
}

static int build(int argc, char **argv, bool netboot)
{
	const char *cmd = netboot ? "netboot build" : "media build";
	const char *mods[65] = { 0 }, *out = NULL, *job;
	struct bs_media_opts mo = { 0 };
	struct bs_media_result res = { 0 };
	struct cli_opts o = { 0 };
	ip_error e = { 0 };
	char sz[32];
	size_t nm = 0;
	int c, r;

	const struct cli_help *help = netboot ? &netboot_help : &media_help;

	while ((c = cli_getopt(argc, argv, help)) != -1) {
		if (c == 'h')
			return cli_help_print(cmd, help);
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case 'o': out = optarg; break;
		case OPT_KERNEL: mo.kernel = optarg; break;
		case OPT_MODULES: mo.modules_dir = optarg; break;
		case OPT_CMDLINE: mo.cmdline = optarg; break;
		case OPT_ADD_MODULE:
			if (nm == IP_ARRAY_SIZE(mods) - 1)
				return cli_usage(&o, cmd, "too many --add-module");
			mods[nm++] = optarg;
			break;
		case OPT_DISK_WAIT:
			if ((r = cli_parse_uint(&o, cmd, "--disk-wait seconds", optarg, &mo.disk_wait_s)))
				return r;
			break;
		default:
			return cli_usage(&o, cmd, "unknown option");
		}
	}
	if (optind >= argc)
		return cli_usage(&o, cmd, "missing JOB.ini");
	job = argv[optind++];
	if (optind != argc)
		return cli_usage(&o, cmd, "unexpected argument '%s'", argv[optind]);
	if (!out)
		return cli_usage(&o, cmd, "missing -o %s", netboot ? "DIR" : "IMAGE");
	mo.add_modules = mods;
	cli_opts_apply(&o);
	r = netboot ? bs_netboot_build(job, out, &mo, &res, &e) : bs_media_build(job, out, &mo, &res, &e);
	if (r < 0) {
		bs_media_result_clear(&res);
		return cli_error(&o, cmd, &e);
	}
	if (o.json) {
		r = cli_emit(result_json(cmd, out, &res));
	} else {
		printf("%s: %s for job %s, kernel %s, %zu modules, %s\n", out,
		       netboot ? "netboot files (boot.ipxe, pxelinux.cfg/default)" : "hybrid BIOS/UEFI boot image", job,
		       res.version, json_object_array_length(res.modules), ip_format_size(res.bytes, sz, sizeof(sz)));
		r = IP_EXIT_OK;
	}
	bs_media_result_clear(&res);
	return r;
}

static int cmd_media_build(int argc, char **argv)
{
	return build(argc, argv, false);
}

static int cmd_netboot_build(int argc, char **argv)
{
	return build(argc, argv, true);
}

const struct cli_verb cli_media_verbs[] = {
	{ "build", cmd_media_build, "write a hybrid BIOS/UEFI boot image that starts in the staging environment",
	  &media_help, NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

const struct cli_verb cli_netboot_verbs[] = {
	{ "build", cmd_netboot_build, "write kernel, initramfs, iPXE script and pxelinux config for a network boot",
	  &netboot_help, NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

int cmd_media(int argc, char **argv)
{
	return cli_dispatch("media", cli_media_verbs, argc, argv);
}

int cmd_netboot(int argc, char **argv)
{
	return cli_dispatch("netboot", cli_netboot_verbs, argc, argv);
}
