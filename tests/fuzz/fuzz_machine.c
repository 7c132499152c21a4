/* fuzz_machine.c — libFuzzer target for a store's machine.json: read as
 * the store reader does, checked (mig_machine_check: safe paths, links,
 * data), then applied as a dry run on a scratch root, which decodes every
 * entry and writes nothing. */
#include "tests/fuzz/fuzz_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mig_accounts acc;   /* the scratch root's, loaded once */
	static bool loaded;
	json_object *doc = fz_load("machine.json", data, size), *report;
	ip_error e = { 0 };
	int r;

	if (!doc)
		return 0;
	r = mig_machine_check(doc, &e);
	fz_check_error(r, &e);
	if (!loaded && mig_accounts_load(fz_rootfd, &acc, &e) < 0)
		abort();
	loaded = true;
	if (r == 0) {
		report = json_object_new_object();
		ip_error_clear(&e);
		r = mig_machine_apply(fz_rootfd, &acc, doc, true, NULL, report, &e);
		fz_check_error(r, &e);
		json_object_put(report);
	}
	json_object_put(doc);
	return 0;
}
