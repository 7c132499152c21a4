/* bundle.c — `inplace bundle -o DIR`: the self-contained bundle. */
#include <string.h>

#include "bootstage/bundle.h"
#include "cli/cli.h"

const struct cli_help cli_help_bundle = {
	.synopsis = "-o DIR [--json] [--dry-run]",
	.description =
		"Write a self-contained inplace into DIR: the binary, every tool it runs\n"
		"(e2fsck, resize2fs, e2undo, mke2fs, ntfsresize, ntfsfix, mkntfs, rm), their\n"
		"shared libraries and the dynamic loader.  DIR/inplace runs on any x86_64\n"
		"Linux, from any directory, read-only media included.  DIR appears whole or\n"
		"not at all; an old bundle there is replaced, any other directory refused.\n",
	.opts = (const struct cli_opt[]){
		{ "output", 'o', "DIR", 'o', "where the bundle goes" },
		CLI_OPT_DRY_RUN("measure the bundle, write nothing"),
		CLI_OPT_JSON_DOC,
		CLI_OPTS_TAIL,
	},
};

int cmd_bundle(int argc, char **argv)
{
	struct cli_opts o = { 0 };
	struct bs_bundle_info info = { 0 };
	const char *dir = NULL;
	char size[IP_SIZE_BUFSZ];
	json_object *doc;
	ip_error e = { 0 };
	int c, r;

	optind = 0;
	while ((c = cli_getopt(argc, argv, &cli_help_bundle)) != -1) {
		if (c == 'h') {
			cli_help_print("bundle", &cli_help_bundle);
			return IP_EXIT_OK;
		}
		if (cli_common_opt(&o, c))
			continue;
		if (c != 'o')
			return cli_usage(&o, "bundle", "unknown option");
		dir = optarg;
	}
	if (optind < argc)
		return cli_usage(&o, "bundle", "unexpected argument '%s'", argv[optind]);
	if (!dir)
		return cli_usage(&o, "bundle", "no output directory: give -o DIR");
	cli_opts_apply(&o);

	r = o.dry_run ? bs_bundle_measure(&info.bytes, &e) : bs_bundle_write_info(dir, &info, &e);
	if (r < 0)
		return cli_error(&o, "bundle", &e);
	ip_format_size(info.bytes, size, sizeof(size));
	if (o.json) {
		doc = ip_json_doc("bundle");
		json_object_object_add(doc, "dir", json_object_new_string(dir));
		json_object_object_add(doc, "dry_run", json_object_new_boolean(o.dry_run));
		json_object_object_add(doc, "bytes", ip_json_u64(info.bytes));
		if (!o.dry_run) {
			json_object_object_add(doc, "files", json_object_new_int((int)info.files));
			json_object_object_add(doc, "tools", json_object_new_int((int)info.tools));
			json_object_object_add(doc, "libraries", json_object_new_int((int)info.libs));
			json_object_object_add(doc, "copied", json_object_new_boolean(info.copied));
		}
		return cli_emit(doc);
	}
	if (o.dry_run)
		printf("would write a bundle of %s into %s\n", size, dir);
	else
		printf("wrote a bundle of %s into %s: inplace, %u tools, %u libraries%s; run %s/inplace\n", size, dir,
		       info.tools, info.libs, info.copied ? " (copied from the running bundle)" : "", dir);
	return IP_EXIT_OK;
}
