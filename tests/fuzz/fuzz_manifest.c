/* fuzz_manifest.c — libFuzzer target for a store's manifest.json: the
 * input becomes the manifest of a store whose COMPLETE marker covers it
 * (so the hash check lets it through), then profile list, verify and a
 * restore dry run read it (the archives are absent: each user's is
 * refused where restore opens it). */
#include "tests/fuzz/fuzz_store.h"
#include "migrate/migrate.h"

/* COMPLETE covering the store's files: the hashes of accounts.json and
 * machine.json, which never change, are computed once. */
static void write_complete(void)
{
	static const char *const files[] = { "manifest.json", "accounts.json", "machine.json" };
	static char fixed[IP_ARRAY_SIZE(files)][MIG_HASH_HEX];
	json_object *c = json_object_new_object();
	char path[512];
	const char *text;
	ip_error e = { 0 };

	for (size_t i = 0; i < IP_ARRAY_SIZE(files); i++) {
		_cleanup_free_ char *data = NULL;
		size_t len = 0;

		if (i == 0 || !fixed[i][0]) {
			snprintf(path, sizeof(path), "%s/%s", fz_store, files[i]);
			if (ip_read_file(path, 1 << 30, &data, &len, &e) < 0)
				abort();
			mig_hash_buf(MIG_HASH_XXH128, data, len, fixed[i]);
		}
		json_object_object_add(c, files[i], json_object_new_string(fixed[i]));
	}
	json_object_object_add(c, "format", json_object_new_string(MIG_FORMAT));
	json_object_object_add(c, "format_version", json_object_new_int(MIG_FORMAT_VERSION));
	json_object_object_add(c, "hash", json_object_new_string(mig_hash_name(MIG_HASH_XXH128)));
	text = json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN);
	snprintf(path, sizeof(path), "%s/COMPLETE", fz_store);
	if (ip_write_file_atomic(path, text, strlen(text), 0600, &e) < 0)
		abort();
	json_object_put(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct migrate_restore_opts ro = { .dry_run = true };
	json_object *doc = fz_load("manifest.json", data, size), *out = NULL;
	ip_error e = { 0 };
	int r;

	if (!doc)
		return 0;
	json_object_put(doc);
	fz_put("manifest.json", data, size);
	write_complete();
	r = migrate_list(fz_store, &out, &e);
	fz_check_error(r, &e);
	json_object_put(out);
	out = NULL;
	ip_error_clear(&e);
	r = migrate_verify(fz_store, &out, &e);
	fz_check_error(r, &e);
	json_object_put(out);
	out = NULL;
	ip_error_clear(&e);
	r = migrate_restore(fz_store, fz_root, &ro, &out, &e);
	fz_check_error(r, &e);
	json_object_put(out);
	return 0;
}
