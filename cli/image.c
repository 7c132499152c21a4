/* image.c — the `inplace image …` verbs: capture, info, verify, deploy,
 * import, build, apply-files. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "cli/cli.h"
#include "imager/imager.h"

/* option ids of the image verbs (letters stand for themselves) */
enum {
	OPT_RAW = OPT_CLI_LAST, OPT_GROW, OPT_DISCARD, OPT_STATE, OPT_MIRROR, OPT_RATE, OPT_CA,
	OPT_FROM, OPT_FS, OPT_SIZE, OPT_ROOT, OPT_KEEP,
};

static imager_cancel_flag cancel_flag;

static void on_signal(int sig)
{
	(void)sig;
	cancel_flag = 1;
}

/* SIGINT/SIGTERM ask the library to stop cleanly (remove a partial image,
 * leave a resumable deploy). */
static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static int parse_part(const struct cli_opts *o, const char *cmd, const char *arg, unsigned *n)
{
	int r = cli_parse_uint(o, cmd, "partition number", arg, n);

	if (r)
		return r;
	if (*n == 0)
		return cli_usage(o, cmd, "partition numbers start at 1");
	return 0;
}

/* ---- capture ----------------------------------------------------------- */

/* -o, -l, -t, -n, -s: capture, import and build write an image alike */
#define CAPTURE_OPTS \
	{ "output", 'o', "IMAGE", 'o', "the image file to write (written under a temporary name)" }, \
	{ "level", 'l', "L", 'l', "zstd level, 1-19 (default 3)" }, \
	{ "threads", 't', "T", 't', "compression threads (default: every CPU)" }, \
	{ "name", 'n', "NAME", 'n', "a name recorded in the metadata" }, \
	{ "sign", 's', "KEY", 's', "sign with a minisign secret key (unencrypted), writing IMAGE.minisig" }

static const struct cli_help capture_help = {
	.synopsis = "DISK N -o IMAGE [options]",
	.description =
		"Capture partition N of DISK (a block device or disk-image file) into IMAGE:\n"
		"a zstd seekable stream of the blocks the filesystem uses (the rest as zeros).\n",
	.opts = (const struct cli_opt[]){
		CAPTURE_OPTS,
		{ "raw", 0, NULL, OPT_RAW, "every block, trusting no bitmap (a filesystem e2fsck finds "
					   "damaged is refused otherwise)" },
		CLI_OPT_JSON("print the result as JSON"),
		CLI_OPTS_TAIL,
	},
};

static int cmd_capture(int argc, char **argv)
{
	const char *cmd = "image capture";
	struct cli_opts o = { 0 };
	struct imager_capture_opts co = { .cancel = &cancel_flag };
	struct imager_capture_result res;
	const char *out = NULL;
	ip_error e = { 0 };
	unsigned n, v;
	bool warn_all;
	int c, r;

	while ((c = cli_getopt(argc, argv, &capture_help)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case 'o': out = optarg; break;
		case 'l':
			if ((r = cli_parse_uint(&o, cmd, "level", optarg, &v)))
				return r;
			if (v < 1 || v > 19)
				return cli_usage(&o, cmd, "level %u is out of range 1-19", v);
			co.level = (int)v;
			break;
		case 't':
			if ((r = cli_parse_uint(&o, cmd, "thread count", optarg, &co.threads)))
				return r;
			break;
		case 'n': co.name = optarg; break;
		case 's': co.sign_key = optarg; break;
		case OPT_RAW: co.raw = true; break;
		case 'h': return cli_help_print(cmd, &capture_help);
		default: return cli_usage(&o, cmd, "unknown option");
		}
	}
	if (argc - optind != 2)
		return cli_usage(&o, cmd, "expected DISK and N");
	if (!out)
		return cli_usage(&o, cmd, "missing -o IMAGE");
	if ((r = parse_part(&o, cmd, argv[optind + 1], &n)))
		return r;
	if (o.dry_run)
		return cli_usage(&o, cmd, "--dry-run is not supported: capture writes only IMAGE");
	cli_opts_apply(&o);
	catch_signals();
	r = imager_capture_part(argv[optind], n, out, &co, &res, &warn_all, &e);
	if (r < 0)
		return cli_error(&o, cmd, &e);
	if (warn_all)
		fprintf(stderr, "inplace: warning: unknown filesystem on partition %u: every block was captured\n", n);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "image", json_object_new_string(out));
		json_object_object_add(doc, "partition_size", ip_json_u64(res.part_size));
		json_object_object_add(doc, "used_bytes", ip_json_u64(res.used));
		json_object_object_add(doc, "image_size", ip_json_u64(res.out_size));
		json_object_object_add(doc, "frames", ip_json_u64(res.frames));
		json_object_object_add(doc, "signed", json_object_new_boolean(res.signed_));
		json_object_object_add(doc, "all_blocks", json_object_new_boolean(warn_all || co.raw));
		return cli_emit(doc);
	}
	char a[IP_SIZE_BUFSZ], b[IP_SIZE_BUFSZ], d[IP_SIZE_BUFSZ];
	printf("captured %s used of %s into %s (%s, %u frames)%s\n", ip_format_size(res.used, a, sizeof(a)),
	       ip_format_size(res.part_size, b, sizeof(b)), out, ip_format_size(res.out_size, d, sizeof(d)),
	       res.frames, res.signed_ ? ", signed" : "");
	return 0;
}

/* ---- info -------------------------------------------------------------- */

static const struct cli_help info_help = {
	.synopsis = "IMAGE [--json]",
	.description = "Show an image's metadata (checks its layout, not its frames: see verify).\n",
	.opts = (const struct cli_opt[]){
		CLI_OPT_JSON("print the metadata as JSON"),
		CLI_OPTS_TAIL,
	},
};

static int cmd_info(int argc, char **argv)
{
	const char *cmd = "image info";
	struct cli_opts o = { 0 };
	imager_image *img;
	ip_error e = { 0 };
	int c;

	while ((c = cli_getopt(argc, argv, &info_help)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		if (c == 'h') {
			return cli_help_print(cmd, &info_help);
		}
		return cli_usage(&o, cmd, "unknown option");
	}
	if (argc - optind != 1)
		return cli_usage(&o, cmd, "expected IMAGE");
	if (imager_open(argv[optind], &img, &e) < 0)
		return cli_error(&o, cmd, &e);
	json_object *meta = imager_info_json(img);
	imager_free(img);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "image", json_object_new_string(argv[optind]));
		json_object_object_foreach(meta, k, v)
			json_object_object_add(doc, k, json_object_get(v));
		json_object_put(meta);
		return cli_emit(doc);
	}
	json_object_object_foreach(meta, k, v)
		if (strcmp(k, "used"))
			printf("%-16s %s\n", k, json_object_get_string(v));
	json_object_put(meta);
	return 0;
}

/* ---- verify ------------------------------------------------------------ */

static const struct cli_help verify_help = {
	.synopsis = "IMAGE [--key PUB]",
	.description =
		"Check every frame's hash, that it decompresses, and the content hash;\n"
		"with --key also the minisign signature IMAGE.minisig.\n",
	.opts = (const struct cli_opt[]){
		{ "key", 'k', "PUB", 'k', "minisign public key file: the signature must verify" },
		{ "threads", 't', "T", 't', "threads (default: every CPU)" },
		CLI_OPT_JSON("print the result as JSON"),
		CLI_OPTS_TAIL,
	},
};

static int cmd_verify(int argc, char **argv)
{
	const char *cmd = "image verify";
	struct cli_opts o = { 0 };
	struct imager_verify_opts vo = { 0 };
	ip_error e = { 0 };
	int c, r;

	while ((c = cli_getopt(argc, argv, &verify_help)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case 'k': vo.pubkey = optarg; break;
		case 't':
			if ((r = cli_parse_uint(&o, cmd, "thread count", optarg, &vo.threads)))
				return r;
			break;
		case 'h':
			return cli_help_print(cmd, &verify_help);
		default: return cli_usage(&o, cmd, "unknown option");
		}
	}
	if (argc - optind != 1)
		return cli_usage(&o, cmd, "expected IMAGE");
	cli_opts_apply(&o);
	if (imager_verify(argv[optind], &vo, &e) < 0)
		return cli_error(&o, cmd, &e);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "image", json_object_new_string(argv[optind]));
		json_object_object_add(doc, "signature_checked", json_object_new_boolean(vo.pubkey != NULL));
		return cli_emit(doc);
	}
	printf("%s: ok%s\n", argv[optind], vo.pubkey ? " (signature verified)" : "");
	return 0;
}

/* ---- deploy ------------------------------------------------------------ */

static const struct cli_help deploy_help = {
	.synopsis = "IMAGE|URL DISK N [options]",
	.description =
		"Write IMAGE onto partition N of DISK, only the blocks its filesystem uses.\n"
		"Checks the signature, metadata, size and that the target is not mounted\n"
		"before writing anything.  Interrupted, it continues where it stopped when\n"
		"run again.  A http:// or https:// URL is downloaded first (resumed after a\n"
		"cut connection, mirrors tried in order) and checked before anything is written.\n",
	.opts = (const struct cli_opt[]){
		{ "key", 'k', "PUB", 'k', "require a minisign signature IMAGE.minisig by this key" },
		{ "grow", 0, NULL, OPT_GROW, "grow the filesystem to fill the partition" },
		{ "discard", 0, NULL, OPT_DISCARD, "discard the blocks the image does not use" },
		{ "mirror", 0, "URL", OPT_MIRROR, "another place to download the image from (repeatable)" },
		{ "max-rate", 0, "RATE", OPT_RATE, "download at most RATE bytes per second (e.g. 20M)" },
		{ "ca-cert", 0, "FILE", OPT_CA, "https: trust the CA certificates in FILE (PEM) instead of the system's" },
		{ "threads", 't', "T", 't', "threads (default: every CPU)" },
		{ "state-dir", 0, "DIR", OPT_STATE, "where the resume record lives "
						    "(default: $INPLACE_STATE_DIR or /var/lib/inplace)" },
		CLI_OPT_DRY_RUN("check everything, write nothing"),
		CLI_OPT_JSON("print the result as JSON"),
		CLI_OPTS_TAIL,
	},
};

static int cmd_deploy(int argc, char **argv)
{
	const char *cmd = "image deploy";
	struct cli_opts o = { 0 };
	struct imager_deploy_opts dopt = { .cancel = &cancel_flag };
	struct imager_deploy_result res;
	ip_error e = { 0 };
	const char *mirrors[33] = { NULL };
	size_t nm = 0;
	unsigned n;
	int c, r;

	dopt.mirrors = mirrors;
	while ((c = cli_getopt(argc, argv, &deploy_help)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case 'k': dopt.pubkey = optarg; break;
		case 't':
			if ((r = cli_parse_uint(&o, cmd, "thread count", optarg, &dopt.threads)))
				return r;
			break;
		case OPT_GROW: dopt.grow = true; break;
		case OPT_DISCARD: dopt.discard = true; break;
		case OPT_STATE: dopt.state_dir = optarg; break;
		case OPT_MIRROR:
			if (nm == IP_ARRAY_SIZE(mirrors) - 1)
				return cli_usage(&o, cmd, "too many --mirror (at most %zu)", nm);
			if (strncmp(optarg, "http://", 7) && strncmp(optarg, "https://", 8))
				return cli_usage(&o, cmd, "--mirror '%s' is not an http:// or https:// URL", optarg);
			mirrors[nm++] = optarg;
			break;
		case OPT_RATE:
			if ((r = cli_parse_size(&o, cmd, optarg, 512, &dopt.max_rate)))
				return r;
			break;
		case OPT_CA: dopt.ca_file = optarg; break;
		case 'h':
			return cli_help_print(cmd, &deploy_help);
		default: return cli_usage(&o, cmd, "unknown option");
		}
	}
	if (argc - optind != 3)
		return cli_usage(&o, cmd, "expected IMAGE DISK N");
	if ((r = parse_part(&o, cmd, argv[optind + 2], &n)))
		return r;
	dopt.dry_run = o.dry_run;
	cli_opts_apply(&o);
	catch_signals();
	if (imager_deploy(argv[optind], argv[optind + 1], n, &dopt, &res, &e) < 0)
		return cli_error(&o, cmd, &e);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "image", json_object_new_string(argv[optind]));
		json_object_object_add(doc, "disk", json_object_new_string(argv[optind + 1]));
		json_object_object_add(doc, "partition", json_object_new_int((int)n));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o.dry_run));
		json_object_object_add(doc, "written", ip_json_u64(res.written));
		json_object_object_add(doc, "resumed_at_frame", ip_json_u64(res.resumed_at));
		json_object_object_add(doc, "frames", ip_json_u64(res.frames));
		json_object_object_add(doc, "grown", json_object_new_boolean(res.grown));
		return cli_emit(doc);
	}
	if (o.dry_run) {
		printf("would deploy %s onto partition %u of %s: every check passed\n", argv[optind], n,
		       argv[optind + 1]);
		return 0;
	}
	char a[IP_SIZE_BUFSZ];
	printf("deployed %s onto partition %u of %s (%s written%s%s)\n", argv[optind], n, argv[optind + 1],
	       ip_format_size(res.written, a, sizeof(a)), res.resumed_at ? ", resumed" : "",
	       res.grown ? ", filesystem grown" : "");
	return 0;
}

/* ---- import, build ----------------------------------------------------- */

static int print_capture(const struct cli_opts *o, const char *cmd, const char *out,
			 const struct imager_capture_result *res, bool warn_all)
{
	char a[IP_SIZE_BUFSZ], b[IP_SIZE_BUFSZ], d[IP_SIZE_BUFSZ];

	if (warn_all)
		fprintf(stderr, "inplace: warning: unknown filesystem: every block was captured\n");
	if (o->json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "image", json_object_new_string(out));
		json_object_object_add(doc, "partition_size", ip_json_u64(res->part_size));
		json_object_object_add(doc, "used_bytes", ip_json_u64(res->used));
		json_object_object_add(doc, "image_size", ip_json_u64(res->out_size));
		json_object_object_add(doc, "frames", ip_json_u64(res->frames));
		json_object_object_add(doc, "signed", json_object_new_boolean(res->signed_));
		json_object_object_add(doc, "all_blocks", json_object_new_boolean(warn_all));
		return cli_emit(doc);
	}
	printf("wrote %s: %s used of %s (%s, %u frames)%s\n", out, ip_format_size(res->used, a, sizeof(a)),
	       ip_format_size(res->part_size, b, sizeof(b)), ip_format_size(res->out_size, d, sizeof(d)),
	       res->frames, res->signed_ ? ", signed" : "");
	return 0;
}

/* Options shared by import and build; returns 0, a status, or -1 (not one of them). */
static int capture_opt(const struct cli_opts *o, const char *cmd, int c, struct imager_capture_opts *co,
		       const char **out)
{
	unsigned v;
	int r;

	switch (c) {
	case 'o': *out = optarg; return 0;
	case 'l':
		if ((r = cli_parse_uint(o, cmd, "level", optarg, &v)))
			return r;
		if (v < 1 || v > 19)
			return cli_usage(o, cmd, "level %u is out of range 1-19", v);
		co->level = (int)v;
		return 0;
	case 't': return cli_parse_uint(o, cmd, "thread count", optarg, &co->threads);
	case 'n': co->name = optarg; return 0;
	case 's': co->sign_key = optarg; return 0;
	}
	return -1;
}


static const struct cli_help import_help = {
	.synopsis = "RAW[.gz|.xz|.zst|.bz2] -o IMAGE [options]",
	.description =
		"Turn a raw image of one filesystem (a partition image, e.g. from dd or a\n"
		"vendor) into an inplace image: used blocks only, compressed, hashed.\n",
	.opts = (const struct cli_opt[]){
		CAPTURE_OPTS,
		CLI_OPT_JSON("print the result as JSON"),
		CLI_OPTS_TAIL,
	},
};

static int cmd_import(int argc, char **argv)
{
	const char *cmd = "image import", *out = NULL;
	struct cli_opts o = { 0 };
	struct imager_capture_opts co = { .cancel = &cancel_flag };
	struct imager_capture_result res;
	ip_error e = { 0 };
	bool warn_all = false;
	int c, r;

	while ((c = cli_getopt(argc, argv, &import_help)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		if (c == 'h') {
			return cli_help_print(cmd, &import_help);
		}
		if ((r = capture_opt(&o, cmd, c, &co, &out)) >= 0) {
			if (r)
				return r;
			continue;
		}
		return cli_usage(&o, cmd, "unknown option");
	}
	if (argc - optind != 1)
		return cli_usage(&o, cmd, "expected RAW");
	if (!out)
		return cli_usage(&o, cmd, "missing -o IMAGE");
	cli_opts_apply(&o);
	catch_signals();
	if (imager_import(argv[optind], out, &co, &res, &warn_all, &e) < 0)
		return cli_error(&o, cmd, &e);
	return print_capture(&o, cmd, out, &res, warn_all);
}

static const struct cli_help build_help = {
	.synopsis = "--from-dir ROOTFS --size SIZE -o IMAGE [options]",
	.description =
		"Make an image from a directory tree (a debootstrap target, an unpacked\n"
		"rootfs tarball): mke2fs -d into a temporary file, then capture it.\n",
	.opts = (const struct cli_opt[]){
		{ "from-dir", 0, "DIR", OPT_FROM, "the tree to put in the filesystem" },
		{ "fs", 0, "FS", OPT_FS, "ext4 (default), ext3 or ext2" },
		{ "size", 0, "SIZE", OPT_SIZE, "the filesystem's size (512MiB, 4G …)" },
		CAPTURE_OPTS,
		CLI_OPT_JSON("print the result as JSON"),
		CLI_OPTS_TAIL,
	},
};

static int cmd_build(int argc, char **argv)
{
	const char *cmd = "image build", *out = NULL, *from = NULL, *fs = "ext4";
	struct cli_opts o = { 0 };
	struct imager_capture_opts co = { .cancel = &cancel_flag };
	struct imager_capture_result res;
	uint64_t size = 0;
	ip_error e = { 0 };
	int c, r;

	while ((c = cli_getopt(argc, argv, &build_help)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_FROM: from = optarg; continue;
		case OPT_FS: fs = optarg; continue;
		case OPT_SIZE:
			if ((r = cli_parse_size(&o, cmd, optarg, 512, &size)))
				return r;
			continue;
		case 'h':
			return cli_help_print(cmd, &build_help);
		}
		if ((r = capture_opt(&o, cmd, c, &co, &out)) >= 0) {
			if (r)
				return r;
			continue;
		}
		return cli_usage(&o, cmd, "unknown option");
	}
	if (argc != optind)
		return cli_usage(&o, cmd, "unexpected argument '%s'", argv[optind]);
	if (!from || !size || !out)
		return cli_usage(&o, cmd, "--from-dir, --size and -o are required");
	cli_opts_apply(&o);
	catch_signals();
	if (imager_build(from, fs, size, out, &co, &res, &e) < 0)
		return cli_error(&o, cmd, &e);
	return print_capture(&o, cmd, out, &res, false);
}

/* ---- apply-files ------------------------------------------------------- */

static const struct cli_help apply_files_help = {
	.synopsis = "ARCHIVE --root DIR [--keep PATHS]",
	.description =
		"Replace the system under DIR by the files of ARCHIVE (tar, pax, cpio …,\n"
		"compressed or not), without repartitioning: files the archive has are\n"
		"written, files it does not have are removed, kept paths are not touched.\n",
	.opts = (const struct cli_opt[]){
		{ "root", 0, "DIR", OPT_ROOT, "the mounted root of the system to replace (not /)" },
		{ "keep", 0, "PATHS", OPT_KEEP, "comma-separated paths left alone (default /home,/root,/srv)" },
		CLI_OPT_DRY_RUN("check the archive, write nothing (not supported yet: refused)"),
		CLI_OPT_JSON("print the result as JSON"),
		CLI_OPTS_TAIL,
	},
};

static int cmd_apply_files(int argc, char **argv)
{
	const char *cmd = "image apply-files", *root = NULL;
	struct cli_opts o = { 0 };
	struct imager_files_result res;
	_cleanup_free_ char *keepbuf = NULL;
	const char *keep[65];
	size_t nk = 0;
	bool have_keep = false;
	ip_error e = { 0 };
	int c;

	while ((c = cli_getopt(argc, argv, &apply_files_help)) != -1) {
		if (cli_common_opt(&o, c))
			continue;
		switch (c) {
		case OPT_ROOT: root = optarg; break;
		case OPT_KEEP:
			free(keepbuf);
			keepbuf = strdup(optarg);
			have_keep = true;
			nk = 0;
			for (char *save = NULL, *t = strtok_r(keepbuf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (nk == IP_ARRAY_SIZE(keep) - 1)
					return cli_usage(&o, cmd, "too many --keep paths");
				keep[nk++] = t;
			}
			break;
		case 'h':
			return cli_help_print(cmd, &apply_files_help);
		default: return cli_usage(&o, cmd, "unknown option");
		}
	}
	keep[nk] = NULL;
	if (argc - optind != 1)
		return cli_usage(&o, cmd, "expected ARCHIVE");
	if (!root)
		return cli_usage(&o, cmd, "missing --root DIR");
	if (o.dry_run)
		return cli_usage(&o, cmd, "--dry-run is not supported yet");
	cli_opts_apply(&o);
	if (imager_apply_files(argv[optind], root, have_keep ? keep : NULL, &res, &e) < 0)
		return cli_error(&o, cmd, &e);
	if (o.json) {
		json_object *doc = ip_json_doc(cmd);

		json_object_object_add(doc, "archive", json_object_new_string(argv[optind]));
		json_object_object_add(doc, "root", json_object_new_string(root));
		json_object_object_add(doc, "extracted", ip_json_u64(res.extracted));
		json_object_object_add(doc, "skipped_kept", ip_json_u64(res.skipped));
		json_object_object_add(doc, "removed", ip_json_u64(res.removed));
		return cli_emit(doc);
	}
	printf("applied %s to %s: %llu entries written, %llu removed, %llu under kept paths left alone\n",
	       argv[optind], root, (unsigned long long)res.extracted, (unsigned long long)res.removed,
	       (unsigned long long)res.skipped);
	return 0;
}

const struct cli_verb cli_image_verbs[] = {
	{ "capture", cmd_capture, "capture a partition into an image (used blocks only)", &capture_help, NULL },
	{ "info",    cmd_info,    "show an image's metadata", &info_help, NULL },
	{ "verify",  cmd_verify,  "check an image's frames, content hash and signature", &verify_help, NULL },
	{ "deploy",  cmd_deploy,  "write an image onto a partition (resumable)", &deploy_help, NULL },
	{ "import",  cmd_import,  "make an image from a raw filesystem image (.gz, .xz, .zst too)", &import_help, NULL },
	{ "build",   cmd_build,   "make an image from a directory tree (mke2fs -d)", &build_help, NULL },
	{ "apply-files", cmd_apply_files, "replace a system's files from an archive, keeping /home, /root, /srv", &apply_files_help, NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

int cmd_image(int argc, char **argv)
{
	return cli_dispatch("image", cli_image_verbs, argc, argv);
}
