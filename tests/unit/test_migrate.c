/* test_migrate.c — unit tests of migrate/: the profile spec parser, the
 * colon databases (passwd, shadow, group, gshadow), id allocation for
 * remapping, path safety and globs, machine kinds left out, kept home
 * directories. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "migrate/internal.h"

static void test_spec_defaults(void **state)
{
	migrate_spec *s = NULL;
	ip_error e = { 0 };

	(void)state;
	assert_int_equal(migrate_spec_load(NULL, &s, &e), 0);
	assert_true(s->all_users);
	assert_false(s->include_root);
	assert_int_equal(s->min_uid, 1000);
	assert_int_equal(s->max_size, 0);
	assert_true(s->machine);
	assert_int_equal(s->level, 3);
	assert_true(mig_globs_match(&s->exclude, ".cache/x/y"));
	assert_false(mig_globs_match(&s->exclude, ".cachedir/x"));
	assert_false(mig_globs_match(&s->exclude, "docs/.cache"));
	migrate_spec_free(s);
}

static void test_spec_parse(void **state)
{
	static const char text[] =
		"[profile]\nusers = alice, bob\ninclude_root = yes\nmin_uid = 500\nmax_size = 20G\n"
		"exclude = *.iso, Downloads/\nlevel = 9\nthreads = 2\nmachine = false\n"
		"[user alice]\ninclude = docs/*\nexclude = docs/tmp\n[system]\ninclude = srv/www\n";
	migrate_spec *s = NULL;
	ip_error e = { 0 };
	const struct mig_user_rule *r;

	(void)state;
	assert_int_equal(migrate_spec_parse(text, "spec.ini", &s, &e), 0);
	assert_false(s->all_users);
	assert_int_equal(s->users.n, 2);
	assert_string_equal(s->users.v[1], "bob");
	assert_true(s->include_root);
	assert_int_equal(s->min_uid, 500);
	assert_int_equal(s->max_size, 20ULL << 30);
	assert_int_equal(s->level, 9);
	assert_int_equal(s->threads, 2);
	assert_false(s->machine);
	assert_true(mig_globs_match(&s->exclude, "a/b/c.iso"));
	assert_true(mig_globs_match(&s->exclude, "Downloads/big/file"));
	assert_false(mig_globs_match(&s->exclude, ".cache/x"));  /* own excludes replace the defaults */
	r = mig_spec_rule(s, "alice");
	assert_non_null(r);
	assert_true(mig_globs_match(&r->include, "docs/a.txt"));
	assert_true(mig_globs_match(&r->exclude, "docs/tmp/x"));
	assert_null(mig_spec_rule(s, "bob"));
	assert_int_equal(s->sys_include.n, 1);
	migrate_spec_free(s);
	/* a per-user exclude keeps the default excludes; "exclude =" alone drops them */
	assert_int_equal(migrate_spec_parse("[user bob]\nexclude = x\n", "t.ini", &s, &e), 0);
	assert_true(mig_globs_match(&s->exclude, ".cache/a"));
	migrate_spec_free(s);
	assert_int_equal(migrate_spec_parse("[profile]\nexclude =\n", "t.ini", &s, &e), 0);
	assert_false(mig_globs_match(&s->exclude, ".cache/a"));
	migrate_spec_free(s);
}

static void test_spec_rejects(void **state)
{
	static const struct { const char *text, *want; } bad[] = {
		{ "[profile]\nusers = all\nexlcude = x\n", "unknown key 'exlcude' in [profile] at t.ini line 3" },
		{ "[profiles]\nusers = all\n", "unknown section [profiles] at t.ini line 2" },
		{ "[user alice]\nincluded = x\n", "unknown key 'included' in [user alice] at t.ini line 2" },
		{ "[profile]\nmin_uid = -1\n", "invalid value '-1' for key 'min_uid'" },
		{ "[profile]\ninclude_root = maybe\n", "invalid value 'maybe'" },
		{ "[profile]\nmax_size = lots\n", "invalid value 'lots'" },
		{ "[profile]\nlevel = 0\n", "invalid value '0'" },
		{ "[profile]\nusers = ,\n", "names no users" },
		{ "[profile]\nthis is not ini\n", "syntax error at t.ini line 2" },
	};

	(void)state;
	for (size_t i = 0; i < IP_ARRAY_SIZE(bad); i++) {
		migrate_spec *s = NULL;
		ip_error e = { 0 };

		assert_int_equal(migrate_spec_parse(bad[i].text, "t.ini", &s, &e), -EINVAL);
		assert_null(s);
		assert_int_equal(e.status, IP_EXIT_BADINPUT);
		if (!strstr(e.msg, bad[i].want))
			fail_msg("case %zu: '%s' lacks '%s'", i, e.msg, bad[i].want);
	}
}

static const char passwd[] =
	"root:x:0:0:root:/root:/bin/bash\n"
	"# a comment kept verbatim\n"
	"alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n"
	"+nisuser::::::\n"
	"\n"
	"bob:x:1001:1001::/home/bob:/bin/sh\n";

static void test_passwd_parse_format(void **state)
{
	struct mig_db db = { 0 };
	ip_error e = { 0 };
	struct mig_rec *r;
	char *out;

	(void)state;
	assert_int_equal(mig_db_parse(&db, MIG_PASSWD, passwd, &e), 0);
	assert_int_equal(db.n, 5);
	r = mig_db_find(&db, "alice");
	assert_non_null(r);
	assert_int_equal(mig_rec_id(r), 1000);
	assert_string_equal(r->f[4], "Alice,,,");
	assert_string_equal(r->f[5], "/home/alice");
	assert_ptr_equal(mig_db_find_id(&db, 1001), mig_db_find(&db, "bob"));
	assert_null(mig_db_find(&db, "+nisuser"));
	out = mig_db_format(&db);
	/* the same text back, blank line aside */
	assert_string_equal(out, "root:x:0:0:root:/root:/bin/bash\n# a comment kept verbatim\n"
				 "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n+nisuser::::::\n"
				 "bob:x:1001:1001::/home/bob:/bin/sh\n");
	free(out);
	mig_db_clear(&db);
}

static void test_passwd_rejects(void **state)
{
	static const char *const bad[] = {
		"alice:x:1000:1000::/home/alice\n",          /* 6 fields */
		"alice:x:1000:1000::/home/alice:/bin/sh:x\n", /* 8 fields */
		"alice:x:abc:1000::/home/alice:/bin/sh\n",   /* uid not a number */
		":x:1000:1000::/home/alice:/bin/sh\n",       /* empty name */
	};

	(void)state;
	for (size_t i = 0; i < IP_ARRAY_SIZE(bad); i++) {
		struct mig_db db = { 0 };
		ip_error e = { 0 };

		assert_int_equal(mig_db_parse(&db, MIG_PASSWD, bad[i], &e), -EINVAL);
		assert_non_null(strstr(e.msg, "etc/passwd line 1"));
		mig_db_clear(&db);
	}
}

static void test_group_members(void **state)
{
	struct mig_db db = { 0 }, gs = { 0 };
	ip_error e = { 0 };
	struct mig_rec *g;
	char *out;

	(void)state;
	assert_int_equal(mig_db_parse(&db, MIG_GROUP, "sudo:x:27:alice\nusers:x:100:\nproject:x:1500:alice,bob\n", &e), 0);
	assert_int_equal(mig_db_parse(&gs, MIG_GSHADOW, "project:$6$h:alice:alice,bob\n", &e), 0);
	g = mig_db_find(&db, "project");
	assert_true(mig_group_has_member(g, "bob"));
	assert_false(mig_group_has_member(g, "bo"));
	assert_false(mig_group_has_member(mig_db_find(&db, "users"), "alice"));
	assert_int_equal(mig_group_add_member(mig_db_find(&db, "users"), 3, "carol"), 0);
	assert_int_equal(mig_group_add_member(mig_db_find(&db, "sudo"), 3, "carol"), 0);
	assert_true(mig_group_has_member(mig_db_find(&db, "users"), "carol"));
	out = mig_db_format(&db);
	assert_string_equal(out, "sudo:x:27:alice,carol\nusers:x:100:carol\nproject:x:1500:alice,bob\n");
	free(out);
	assert_string_equal(mig_db_find(&gs, "project")->f[2], "alice");
	assert_int_equal(mig_db_parse(&gs, MIG_GSHADOW, "x:y:z\n", &e), -EINVAL);
	mig_db_clear(&db);
	mig_db_clear(&gs);
}

static void test_remap_ids(void **state)
{
	struct mig_db pw = { 0 }, gr = { 0 };
	ip_error e = { 0 };
	const char *nf[7] = { "carol", "x", "1002", "1002", "", "/home/carol", "/bin/sh" };

	(void)state;
	assert_int_equal(mig_db_parse(&pw, MIG_PASSWD, passwd, &e), 0);
	assert_int_equal(mig_db_parse(&gr, MIG_GROUP, "g:x:1002:\n", &e), 0);
	/* a free preferred id is kept */
	assert_int_equal(mig_db_free_id(&pw, NULL, 1005, 1000, 59999), 1005);
	/* a taken one moves to the first free id of the range */
	assert_int_equal(mig_db_free_id(&pw, NULL, 1001, 1000, 59999), 1002);
	/* both databases are consulted when asked (user private groups) */
	assert_int_equal(mig_db_free_id(&pw, &gr, 1001, 1000, 59999), 1003);
	assert_int_equal(mig_db_add(&pw, nf, 7), 0);
	assert_int_equal(mig_db_free_id(&pw, NULL, 1000, 1000, 59999), 1003);
	/* an exhausted range says so */
	assert_int_equal(mig_db_free_id(&pw, NULL, 0, 0, 0), -1);
	assert_int_equal(mig_db_free_id(&pw, NULL, 1000, 1000, 1002), -1);
	mig_db_clear(&pw);
	mig_db_clear(&gr);
}

static void test_path_safe(void **state)
{
	(void)state;
	assert_true(mig_path_safe("a"));
	assert_true(mig_path_safe("a/b.c/..d/d.."));
	assert_false(mig_path_safe(""));
	assert_false(mig_path_safe("/etc/passwd"));
	assert_false(mig_path_safe(".."));
	assert_false(mig_path_safe("a/../b"));
	assert_false(mig_path_safe("a/./b"));
	assert_false(mig_path_safe("a//b"));
	assert_false(mig_path_safe("a/"));
	assert_false(mig_path_safe("a/.."));
}

/* Digests as xxh128sum and b2sum print them, for both algorithms. */
static void test_hash_vectors(void **state)
{
	char hex[MIG_HASH_HEX];
	enum mig_hash_alg alg;

	(void)state;
	mig_hash_buf(MIG_HASH_XXH128, "abc", 3, hex);
	assert_string_equal(hex, "06b05ab6733a618578af5f94892f3950");
	mig_hash_buf(MIG_HASH_XXH128, "", 0, hex);
	assert_string_equal(hex, "99aa06d3014798d86001c324468d497f");
	mig_hash_buf(MIG_HASH_BLAKE2B, "abc", 3, hex);
	assert_string_equal(hex, "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
				 "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923");
	assert_int_equal(mig_hash_parse("xxh3-128", &alg), 0);
	assert_int_equal(alg, MIG_HASH_XXH128);
	assert_int_equal(mig_hash_parse("blake2b-512", &alg), 0);
	assert_int_equal(alg, MIG_HASH_BLAKE2B);
	assert_int_equal(mig_hash_parse("sha1", &alg), -EINVAL);
	assert_string_equal(mig_hash_name(MIG_HASH_XXH128), "xxh3-128");
}

/* A sparse file hashes as its logical bytes: holes as zeros, at the start,
 * between data and at the end. */
static void test_hash_sparse_fd(void **state)
{
	char path[] = "/tmp/inplace-test-hash.XXXXXX";
	size_t size = 5u << 20;
	uint8_t *img = calloc(1, size);
	int fd = mkstemp(path);

	(void)state;
	assert_non_null(img);
	assert_true(fd >= 0);
	unlink(path);
	memset(img + (1u << 20) + 17, 'x', 70000);   /* data inside the second MiB */
	memcpy(img + (3u << 20), "middle", 6);
	assert_int_equal(pwrite(fd, img + (1u << 20) + 17, 70000, (1 << 20) + 17), 70000);
	assert_int_equal(pwrite(fd, "middle", 6, 3 << 20), 6);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);   /* a hole at the end */
	for (int a = MIG_HASH_XXH128; a <= MIG_HASH_BLAKE2B; a++) {
		char want[MIG_HASH_HEX], got[MIG_HASH_HEX];
		struct mig_hash h;

		mig_hash_buf((enum mig_hash_alg)a, img, size, want);
		assert_int_equal(mig_hash_fd(fd, (enum mig_hash_alg)a, got), 0);
		assert_string_equal(got, want);
		/* the same through mig_hash_zeros, as save hashes a sparse entry */
		mig_hash_init(&h, (enum mig_hash_alg)a);
		mig_hash_zeros(&h, (1u << 20) + 17);
		mig_hash_update(&h, img + (1u << 20) + 17, 70000);
		mig_hash_zeros(&h, (3u << 20) - ((1u << 20) + 17 + 70000));
		mig_hash_update(&h, "middle", 6);
		mig_hash_zeros(&h, size - (3u << 20) - 6);
		mig_hash_hex(&h, got);
		assert_string_equal(got, want);
	}
	close(fd);
	free(img);
}

/* The algorithm of a store: format 1 is BLAKE2b; newer or unknown refused. */
static void test_store_hash_alg(void **state)
{
	static const struct {
		const char *doc;
		int r;
		enum mig_hash_alg alg;
	} cases[] = {
		{ "{\"format\":\"inplace-profile-store\"}", 0, MIG_HASH_BLAKE2B },
		{ "{\"format_version\":1}", 0, MIG_HASH_BLAKE2B },
		{ "{\"format_version\":2,\"hash\":\"xxh3-128\"}", 0, MIG_HASH_XXH128 },
		{ "{\"format_version\":2,\"hash\":\"blake2b-512\"}", 0, MIG_HASH_BLAKE2B },
		{ "{\"format_version\":2}", -EINVAL, 0 },
		{ "{\"format_version\":2,\"hash\":\"md5\"}", -EPROTONOSUPPORT, 0 },
		{ "{\"format_version\":2,\"hash\":7}", -EPROTONOSUPPORT, 0 },
		{ "{\"format_version\":3,\"hash\":\"xxh3-128\"}", -EPROTONOSUPPORT, 0 },
	};

	(void)state;
	for (size_t i = 0; i < IP_ARRAY_SIZE(cases); i++) {
		json_object *doc = json_tokener_parse(cases[i].doc);
		enum mig_hash_alg alg = MIG_HASH_XXH128;
		ip_error e = { 0 };

		assert_non_null(doc);
		assert_int_equal(mig_store_hash_alg(doc, "COMPLETE", &alg, &e), cases[i].r);
		if (!cases[i].r)
			assert_int_equal(alg, cases[i].alg);
		else
			assert_int_equal(e.status, cases[i].r == -EINVAL ? IP_EXIT_FAILED : IP_EXIT_BADINPUT);
		json_object_put(doc);
	}
}

static void test_id_parse(void **state)
{
	static const struct { const char *s; bool ok; long v; } cases[] = {
		{ "0", true, 0 }, { "1000", true, 1000 }, { "4294967294", true, 4294967294L },
		{ "4294967295", false, 0 }, { "4294967296", false, 0 }, { "-1", false, 0 },
		{ "65534", false, 0 }, { "65535", false, 0 }, { "", false, 0 }, { "10a", false, 0 },
		{ " 1", false, 0 }, { "+1", false, 0 }, { "99999999999", false, 0 },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long v = -7;
		assert_int_equal(mig_id_parse(cases[i].s, &v), cases[i].ok);
		if (cases[i].ok)
			assert_int_equal(v, cases[i].v);
	}
	assert_false(mig_id_parse(NULL, &(long){ 0 }));
}

static void test_home_and_names(void **state)
{
	(void)state;
	assert_true(mig_home_plausible("/home/alice"));
	assert_true(mig_home_plausible("/var/home/alice"));
	assert_false(mig_home_plausible("/etc"));
	assert_false(mig_home_plausible("/home/"));
	assert_false(mig_home_plausible("/home/../etc"));
	assert_false(mig_home_plausible("/home/a/b"));
	assert_false(mig_home_plausible("/root"));
	assert_false(mig_home_plausible(NULL));
	assert_true(mig_name_valid("alice"));
	assert_true(mig_name_valid("host$"));
	assert_false(mig_name_valid("../x"));
	assert_false(mig_name_valid("a:b"));
	assert_false(mig_name_valid("-rf"));
	assert_false(mig_name_valid("@system"));
	assert_false(mig_name_valid(""));
}

/* One machine.json file per kind, as the job file's [machine] items name
 * them: each item left out leaves exactly its own files as the new root has
 * them, a kept directory is accepted only where homes live. */
static const struct {
	const char *kind, *path;
} mfiles[] = {
	{ "hostname", "etc/hostname" },
	{ "hosts", "etc/hosts" },
	{ "machine-id", "etc/machine-id" },
	{ "ssh-host-keys", "etc/ssh/ssh_host_ed25519_key" },
	{ "network", "etc/netplan/01-netcfg.yaml" },
	{ "timezone", "etc/timezone" },
	{ "locale", "etc/default/locale" },
	{ "keyboard", "etc/default/keyboard" },
};

static void test_machine_skip(void **state)
{
	json_object *machine = json_object_new_object(), *files = json_object_new_array();

	(void)state;
	json_object_object_add(machine, "files", files);
	for (size_t i = 0; i < sizeof(mfiles) / sizeof(mfiles[0]); i++) {
		json_object *f = json_object_new_object();

		json_object_object_add(f, "kind", json_object_new_string(mfiles[i].kind));
		json_object_object_add(f, "path", json_object_new_string(mfiles[i].path));
		json_object_object_add(f, "mode", json_object_new_int(0600));
		json_object_object_add(f, "data", json_object_new_string("b2xkCg=="));   /* "old\n" */
		json_object_array_add(files, f);
	}
	/* i == n: nothing skipped, every file written */
	for (size_t i = 0; i <= sizeof(mfiles) / sizeof(mfiles[0]); i++) {
		char root[] = "/tmp/test-machine-XXXXXX", path[128];
		const char *skip[] = { i < sizeof(mfiles) / sizeof(mfiles[0]) ? mfiles[i].kind : NULL, NULL };
		struct mig_accounts acc = { 0 };
		json_object *report = json_object_new_object();
		ip_error e = { 0 };
		int rootfd;

		assert_non_null(mkdtemp(root));
		rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(rootfd >= 0);
		assert_int_equal(mig_machine_apply(rootfd, &acc, machine, false, skip, report, &e), 0);
		for (size_t k = 0; k < sizeof(mfiles) / sizeof(mfiles[0]); k++) {
			bool there = faccessat(rootfd, mfiles[k].path, F_OK, 0) == 0;

			if (k == i)
				assert_false(there);
			else
				assert_true(there);
		}
		close(rootfd);
		json_object_put(report);
		for (size_t k = 0; k < sizeof(mfiles) / sizeof(mfiles[0]); k++) {
			snprintf(path, sizeof(path), "%s/%s", root, mfiles[k].path);
			unlink(path);
		}
		for (const char *d = "etc/ssh\0etc/netplan\0etc/default\0etc\0"; *d; d += strlen(d) + 1) {
			snprintf(path, sizeof(path), "%s/%s", root, d);
			rmdir(path);
		}
		assert_int_equal(rmdir(root), 0);
	}
	json_object_put(machine);
}

static void test_kept_dirs(void **state)
{
	(void)state;
	assert_true(mig_kept_dir_valid("/home"));
	assert_true(mig_kept_dir_valid("/var/home"));
	assert_true(mig_kept_dir_valid("/home/alice"));
	assert_false(mig_kept_dir_valid("/"));
	assert_false(mig_kept_dir_valid("/etc"));
	assert_false(mig_kept_dir_valid("/home/../etc"));
	assert_false(mig_kept_dir_valid("/home/a/b"));
	assert_false(mig_kept_dir_valid(NULL));

	/* a manifest naming another directory as kept is refused whole */
	const char *good = "{\"kept\":[{\"dir\":\"/home\",\"uuid\":\"x\"}]}";
	const char *bad = "{\"kept\":[{\"dir\":\"/home\"},{\"dir\":\"/etc\"}]}";
	json_object *m = json_tokener_parse(good);
	ip_error e = { 0 };

	assert_int_equal(mig_kept_check(m, &e), 0);
	json_object_put(m);
	m = json_tokener_parse(bad);
	assert_int_equal(mig_kept_check(m, &e), -EINVAL);
	json_object_put(m);
	m = json_tokener_parse("{\"kept\":\"/home\"}");
	assert_int_equal(mig_kept_check(m, &e), -EINVAL);
	json_object_put(m);
}

/* A file of random bytes is never estimated below what zstd makes of it,
 * a file of zeros far below its size, a hole at nothing. */
static void test_sampler(void **state)
{
	char path[] = "/tmp/test_migrate_sampleXXXXXX";
	int fd = mkstemp(path);
	struct mig_sampler s;
	struct stat st;
	uint8_t buf[65536];
	uint64_t est;

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	for (int i = 0; i < 64; i++) {   /* 4 MiB of noise */
		for (size_t k = 0; k < sizeof(buf); k++)
			buf[k] = (uint8_t)(rand() >> 7);
		assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	}
	fsync(fd);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(mig_sampler_init(&s, 3), 0);
	mig_sampler_add(&s, fd, &st);
	est = mig_sampler_finish(&s);
	assert_true(est >= (uint64_t)st.st_size);
	mig_sampler_free(&s);
	assert_int_equal(ftruncate(fd, 0), 0);
	memset(buf, 0, sizeof(buf));
	for (int i = 0; i < 64; i++)
		assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	fsync(fd);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(mig_sampler_init(&s, 3), 0);
	mig_sampler_add(&s, fd, &st);
	est = mig_sampler_finish(&s);
	assert_true(est < (uint64_t)st.st_size / 100);
	mig_sampler_free(&s);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(ftruncate(fd, 1 << 30), 0);   /* a hole */
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(mig_file_data_bytes(&st), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_defaults),
		cmocka_unit_test(test_spec_parse),
		cmocka_unit_test(test_spec_rejects),
		cmocka_unit_test(test_passwd_parse_format),
		cmocka_unit_test(test_passwd_rejects),
		cmocka_unit_test(test_group_members),
		cmocka_unit_test(test_remap_ids),
		cmocka_unit_test(test_path_safe),
		cmocka_unit_test(test_hash_vectors),
		cmocka_unit_test(test_hash_sparse_fd),
		cmocka_unit_test(test_store_hash_alg),
		cmocka_unit_test(test_id_parse),
		cmocka_unit_test(test_home_and_names),
		cmocka_unit_test(test_machine_skip),
		cmocka_unit_test(test_kept_dirs),
		cmocka_unit_test(test_sampler),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
