/* fuzz_accounts.c — libFuzzer target for a store's accounts.json: read as
 * the store reader does, then checked whole by restore's trust rules
 * (mig_trust_check, migrate/trust.c) against a new OS root and the saved
 * manifest's users, trusted and not. */
#include "tests/fuzz/fuzz_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static json_object *manifest, *musers, *sel;
	static struct mig_accounts now;   /* the new root's, loaded once */
	json_object *doc;
	struct mig_trust_plan p;
	ip_error e = { 0 };
	int r;

	if (!manifest) {
		if (mig_store_read_json(fz_storefd, "manifest.json", &manifest, &e) < 0 ||
		    !json_object_object_get_ex(manifest, "users", &musers))
			abort();
		/* every saved user selected, as a restore without --users does */
		sel = json_object_new_object();
		for (size_t i = 0; i < json_object_array_length(musers); i++)
			json_object_object_add(sel, mig_json_str(json_object_object_get(json_object_array_get_idx(musers, i), "name")),
					       json_object_get(json_object_array_get_idx(musers, i)));
		if (mig_accounts_load(fz_rootfd, &now, &e) < 0)
			abort();
	}
	doc = fz_load("accounts.json", data, size);
	if (!doc)
		return 0;
	for (int trusted = 0; trusted < 2; trusted++) {
		ip_error_clear(&e);
		r = mig_trust_check(fz_rootfd, &now, doc, musers, sel, trusted, &p, &e);
		fz_check_error(r, &e);
		mig_trust_plan_clear(&p);
	}
	json_object_put(doc);
	return 0;
}
