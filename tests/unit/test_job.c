/* test_job.c — the job file parser without a machine: every key's good and
 * bad values, unknown names with their suggestion, line numbers, duplicates,
 * conflicts, the profile spec handed to migrate, and the job hash. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "bootstage/bootstage.h"

/* A job that parses: image, key, and whatever extra says. */
#define BASE "[job]\nimage = /srv/os.img\nkey = /etc/inplace/os.pub\n"

static bootstage_job *ok(const char *text)
{
	bootstage_job *j = NULL;
	ip_error e = { 0 };
	int r = bootstage_job_parse(text, "job.ini", &j, &e);

	if (r < 0)
		fail_msg("parse failed: %s\n--- job:\n%s", e.msg, text);
	return j;
}

/* The text must be refused as bad input with exactly msg. */
static void bad(const char *text, const char *msg)
{
	bootstage_job *j = NULL;
	ip_error e = { 0 };
	int r = bootstage_job_parse(text, "job.ini", &j, &e);

	if (r >= 0)
		fail_msg("accepted, wanted: %s\n--- job:\n%s", msg, text);
	assert_null(j);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	if (strcmp(e.msg, msg))
		fail_msg("message\n  got:  %s\n  want: %s", e.msg, msg);
}

/* The message must start with prefix (for messages that name long lists). */
static void bad_prefix(const char *text, const char *prefix)
{
	bootstage_job *j = NULL;
	ip_error e = { 0 };

	assert_true(bootstage_job_parse(text, "job.ini", &j, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	if (strncmp(e.msg, prefix, strlen(prefix)))
		fail_msg("message\n  got:  %s\n  want: %s…", e.msg, prefix);
}

static void test_defaults(void **state)
{
	bootstage_job *j = ok(BASE);

	(void)state;
	assert_string_equal(j->image, "/srv/os.img");
	assert_string_equal(j->key, "/etc/inplace/os.pub");
	assert_null(j->mirrors[0]);
	assert_true(j->require_signature);
	assert_null(j->disk);
	assert_int_equal(j->system_partition, 0);
	assert_int_equal(j->store, BOOTSTAGE_STORE_PARTITION);
	assert_int_equal(j->store_size, 0);
	assert_int_equal(j->on_failure, BOOTSTAGE_FAIL_STOP);
	assert_int_equal(j->keep_storage, BOOTSTAGE_KEEP_NO);
	assert_false(j->rollback_image);
	for (int i = 0; i < BOOTSTAGE_MACHINE_N; i++)
		assert_true(j->machine[i]);
	assert_int_equal(j->boot, BOOTSTAGE_BOOT_GRUB);
	assert_null(j->report_url);
	assert_true(j->report_spool);
	assert_int_equal(j->notify_countdown, 300);
	assert_true(j->notify_allow_postpone);
	assert_int_equal(j->notify_max_postpone, 86400);
	assert_false(j->notify_allow_decline);
	assert_non_null(j->spec);
	assert_int_equal(strlen(j->hash), 64);
	bootstage_job_free(j);
}

static void test_every_key(void **state)
{
	bootstage_job *j = ok(
		"; a full job\n"
		"[job]\n"
		"image = https://os.example/debian.img\n"
		"mirror = https://m1.example/debian.img\n"
		"mirror = http://m2.example/debian.img\n"
		"key = /k.pub\n"
		"require_signature = yes\n"
		"disk = /dev/sda\n"
		"system_partition = 2\n"
		"store = /mnt/second\n"
		"store_size = 8G\n"
		"on_failure = rollback\n"
		"keep_storage = no\n"
		"rollback_image = true\n"
		"[profile]\n"
		"users = alice,bob\n"
		"[user alice]\n"
		"exclude = Videos/*\n"
		"[system]\n"
		"include = srv/www\n"
		"[machine]\n"
		"hostname = on\n"
		"ssh-host-keys = off\n"
		"network = no\n"
		"[boot]\n"
		"method = none\n"
		"[report]\n"
		"url = https://fleet.example/events\n"
		"spool = no\n"
		"ca_cert = /etc/fleet-ca.pem\n"
		"[notify]\n"
		"message = Your machine gets a new system tonight\n"
		"countdown = 2m\n"
		"allow_postpone = yes\n"
		"max_postpone = 3d\n"
		"allow_decline = yes\n");

	(void)state;
	assert_string_equal(j->image, "https://os.example/debian.img");
	assert_string_equal(j->mirrors[0], "https://m1.example/debian.img");
	assert_string_equal(j->mirrors[1], "http://m2.example/debian.img");
	assert_null(j->mirrors[2]);
	assert_string_equal(j->disk, "/dev/sda");
	assert_int_equal(j->system_partition, 2);
	assert_int_equal(j->store, BOOTSTAGE_STORE_DIR);
	assert_string_equal(j->store_dir, "/mnt/second");
	assert_int_equal(j->store_size, 8ULL << 30);
	assert_int_equal(j->on_failure, BOOTSTAGE_FAIL_ROLLBACK);
	assert_true(j->rollback_image);
	assert_true(j->machine[BOOTSTAGE_MACHINE_HOSTNAME]);
	assert_false(j->machine[BOOTSTAGE_MACHINE_SSH_HOST_KEYS]);
	assert_false(j->machine[BOOTSTAGE_MACHINE_NETWORK]);
	assert_true(j->machine[BOOTSTAGE_MACHINE_LOCALE]);
	assert_int_equal(j->boot, BOOTSTAGE_BOOT_NONE);
	assert_string_equal(j->report_url, "https://fleet.example/events");
	assert_false(j->report_spool);
	assert_string_equal(j->report_ca_cert, "/etc/fleet-ca.pem");
	assert_string_equal(j->notify_message, "Your machine gets a new system tonight");
	assert_int_equal(j->notify_countdown, 120);
	assert_int_equal(j->notify_max_postpone, 3 * 86400);
	assert_true(j->notify_allow_decline);
	bootstage_job_free(j);

	j = ok(BASE "keep_storage = image\nstore_size = auto\n[boot]\nmethod = kexec\n[notify]\ncountdown = 45\n");
	assert_int_equal(j->keep_storage, BOOTSTAGE_KEEP_IMAGE);
	assert_int_equal(j->store_size, 0);
	assert_int_equal(j->boot, BOOTSTAGE_BOOT_KEXEC);
	assert_int_equal(j->notify_countdown, 45);
	bootstage_job_free(j);
	j = ok("[job]\nimage = os.img\nrequire_signature = no\n");
	assert_false(j->require_signature);
	assert_null(j->key);
	bootstage_job_free(j);
}

static void test_unknown_names(void **state)
{
	(void)state;
	bad("[job]\nkey = /k.pub\n\n\n\n\n\n\n\n\n# typo below\nimgae = /srv/os.img\n",
	    "job.ini:12: unknown key 'imgae' in [job] (did you mean 'image'?)");
	bad(BASE "store_szie = 1G\n", "job.ini:4: unknown key 'store_szie' in [job] (did you mean 'store_size'?)");
	bad(BASE "[machine]\nhostnmae = on\n", "job.ini:5: unknown key 'hostnmae' in [machine] (did you mean 'hostname'?)");
	bad(BASE "[boot]\nmethdo = grub\n", "job.ini:5: unknown key 'methdo' in [boot] (did you mean 'method'?)");
	bad(BASE "[notify]\ncountdwon = 5\n", "job.ini:5: unknown key 'countdwon' in [notify] (did you mean 'countdown'?)");
	bad(BASE "[report]\nulr = http://x/\n", "job.ini:5: unknown key 'ulr' in [report] (did you mean 'url'?)");
	bad(BASE "colour = blue\n", "job.ini:4: unknown key 'colour' in [job]: see the job file keys in the README");
	bad(BASE "[jbo]\n", "job.ini:4: unknown section [jbo] (did you mean [job]?)");
	bad(BASE "[notfiy]\nmessage = hi\n", "job.ini:4: unknown section [notfiy] (did you mean [notify]?)");
	bad_prefix(BASE "[weather]\n", "job.ini:4: unknown section [weather]: the sections are");
	bad("image = /os.img\n[job]\n", "job.ini:1: key 'image' outside any section: put it under [job] or the section it belongs to");
	bad(BASE "[user]\ninclude = x\n", "job.ini:4: [user] needs a user name: write [user NAME]");
	/* the spec's own keys are judged by migrate, with the file's line */
	bad(BASE "[boot]\nmethod = none\n[profile]\nusres = all\n",
	    "unknown key 'usres' in [profile] at job.ini line 7: fix or remove it");
	bad(BASE "[profile]\nlevel = 99\n", "invalid value '99' for key 'level' in [profile] at job.ini line 5: fix or remove it");
}

static void test_bad_values(void **state)
{
	(void)state;
	bad(BASE "require_signature = maybe\n",
	    "job.ini:4: invalid value 'maybe' for 'require_signature' in [job]: expected yes or no");
	bad(BASE "system_partition = two\n", "job.ini:4: invalid value 'two' for 'system_partition' in [job]: expected a partition number");
	bad(BASE "system_partition = 0\n", "job.ini:4: invalid value '0' for 'system_partition' in [job]: expected a partition number");
	bad(BASE "system_partition = -1\n", "job.ini:4: invalid value '-1' for 'system_partition' in [job]: expected a partition number");
	bad(BASE "store = ./here\n", "job.ini:4: invalid value './here' for 'store' in [job]: expected 'partition' or an absolute directory");
	bad(BASE "store_size = lots\n", "job.ini:4: invalid value 'lots' for 'store_size' in [job]: expected a size (512MiB, 8G) or auto");
	bad(BASE "store_size = 0\n", "job.ini:4: invalid value '0' for 'store_size' in [job]: expected a size (512MiB, 8G) or auto");
	bad(BASE "store_size = -5G\n", "job.ini:4: invalid value '-5G' for 'store_size' in [job]: expected a size (512MiB, 8G) or auto");
	bad(BASE "on_failure = retry\n", "job.ini:4: invalid value 'retry' for 'on_failure' in [job]: expected stop or rollback");
	bad(BASE "keep_storage = maybe\n", "job.ini:4: invalid value 'maybe' for 'keep_storage' in [job]: expected no, yes or image");
	bad(BASE "rollback_image = 2\n", "job.ini:4: invalid value '2' for 'rollback_image' in [job]: expected yes or no");
	bad(BASE "mirror = /mnt/os.img\n", "job.ini:4: invalid value '/mnt/os.img' for 'mirror' in [job]: expected an http:// or https:// URL");
	bad(BASE "mirror = ftp://m/os.img\n", "job.ini:4: invalid value 'ftp://m/os.img' for 'mirror' in [job]: expected an http:// or https:// URL");
	bad("[job]\nimage =\n", "job.ini:2: invalid value '' for 'image' in [job]: expected a value");
	bad(BASE "[machine]\nlocale = sometimes\n", "job.ini:5: invalid value 'sometimes' for 'locale' in [machine]: expected yes or no");
	bad(BASE "[boot]\nmethod = floppy\n",
	    "job.ini:5: invalid value 'floppy' for 'method' in [boot]: expected grub, kexec, media, pxe or none");
	bad(BASE "[report]\nurl = fleet.example\n", "job.ini:5: invalid value 'fleet.example' for 'url' in [report]: expected an http:// or https:// URL");
	bad(BASE "[report]\nurl = http://\n", "job.ini:5: invalid value 'http://' for 'url' in [report]: expected an http:// or https:// URL");
	bad(BASE "[report]\nurl = http://f/\nspool = often\n", "job.ini:6: invalid value 'often' for 'spool' in [report]: expected yes or no");
	bad(BASE "[notify]\ncountdown = soon\n", "job.ini:5: invalid value 'soon' for 'countdown' in [notify]: expected seconds, or a number with s, m, h or d");
	bad(BASE "[notify]\ncountdown = 5w\n", "job.ini:5: invalid value '5w' for 'countdown' in [notify]: expected seconds, or a number with s, m, h or d");
	bad(BASE "[notify]\ncountdown = 99999999999d\n", "job.ini:5: invalid value '99999999999d' for 'countdown' in [notify]: expected seconds, or a number with s, m, h or d");
	bad(BASE "[notify]\nmax_postpone = -1\n", "job.ini:5: invalid value '-1' for 'max_postpone' in [notify]: expected seconds, or a number with s, m, h or d");
	bad(BASE "[notify]\nallow_decline = perhaps\n", "job.ini:5: invalid value 'perhaps' for 'allow_decline' in [notify]: expected yes or no");
	bad(BASE "[notify]\nallow_postpone = 3\n", "job.ini:5: invalid value '3' for 'allow_postpone' in [notify]: expected yes or no");
}

static void test_syntax(void **state)
{
	char longline[400];

	(void)state;
	bad(BASE "this is not a key\n", "job.ini:4: expected [section] or key = value");
	bad(BASE "[boot\n", "job.ini:4: a section line without ']': write [section]");
	bad(BASE "  require_signature = no\n",
	    "job.ini:4: an indented line continues the value above it: write each key = value on one unindented line");
	bad(BASE "require_signature = yes\nrequire_signature = no\n",
	    "job.ini:5: duplicate key 'require_signature' in [job] (first set on line 4): keep one");
	bad(BASE "[boot]\nmethod = grub\n[boot]\nmethod = none\n",
	    "job.ini:7: duplicate key 'method' in [boot] (first set on line 5): keep one");
	snprintf(longline, sizeof(longline), BASE "[notify]\nmessage = %0300d\n", 7);
	bad_prefix(longline, "job.ini:5: line longer than");
	/* comments, blank lines, CRLF and inline comments are fine */
	bootstage_job *j = ok("# comment\r\n\r\n[job]\r\nimage = /a.img ; the image\r\nrequire_signature = no\r\n");
	assert_string_equal(j->image, "/a.img");
	bootstage_job_free(j);
	/* a byte order mark, as some editors write */
	j = ok("\xEF\xBB\xBF[job]\nimage = /b.img\nrequire_signature = no\n");
	assert_string_equal(j->image, "/b.img");
	bootstage_job_free(j);
	bad("\xEF\xBB\xBF  [job]\n", "job.ini:1: an indented line continues the value above it: write each key = value on one unindented line");
}

static void test_conflicts(void **state)
{
	(void)state;
	bad("[job]\nrequire_signature = no\n", "job.ini: [job] names no image: set image = PATH or an http(s):// URL");
	bad("[boot]\nmethod = none\n", "job.ini: [job] names no image: set image = PATH or an http(s):// URL");
	bad("[job]\nimage = /os.img\n",
	    "job.ini:2: the image must be signed (require_signature = yes, the default) but [job] names no key: "
	    "set key = PUBKEY.pub, or require_signature = no");
	bad("[job]\nimage = /os.img\n\nrequire_signature = yes\n",
	    "job.ini:4: the image must be signed (require_signature = yes, the default) but [job] names no key: "
	    "set key = PUBKEY.pub, or require_signature = no");
	bad(BASE "on_failure = rollback\n",
	    "job.ini:4: on_failure = rollback needs a copy of the old system to roll back to: set rollback_image = yes");
	bad(BASE "mirror = http://m/os.img\n",
	    "job.ini:4: mirror needs an image URL, but image is the local file /srv/os.img: remove mirror or make image a URL");
	bad(BASE "store = /mnt/b\nkeep_storage = yes\n",
	    "job.ini:5: keep_storage = yes keeps a storage partition, but store is the directory /mnt/b: remove keep_storage");
	bad(BASE "[report]\nca_cert = /ca.pem\n", "job.ini:5: [report] without url: set url = http(s)://… or remove the section");
	bad(BASE "[notify]\nallow_postpone = no\nmax_postpone = 1h\n",
	    "job.ini:6: max_postpone is set but allow_postpone = no: remove one of them");
	bad(BASE "[profile]\nusers = \n", "job.ini names no users: set users = all or a list of names");
}

/* The hash names the job, not its layout: comments and blanks do not
 * change it, any value does. */
static void test_hash(void **state)
{
	bootstage_job *a = ok(BASE "[boot]\nmethod = none\n");
	bootstage_job *b = ok("; same job\n" BASE "\n[boot]\n  ; comment\nmethod = none   ; inline\n");
	bootstage_job *c = ok(BASE "[boot]\nmethod = grub\n");

	(void)state;
	assert_string_equal(a->hash, b->hash);
	assert_string_not_equal(a->hash, c->hash);
	bootstage_job_free(a);
	bootstage_job_free(b);
	bootstage_job_free(c);
}

static void test_phase_names(void **state)
{
	enum bootstage_phase p;

	(void)state;
	for (int i = BOOTSTAGE_PHASE_NONE; i <= BOOTSTAGE_PHASE_ROLLED_BACK; i++) {
		assert_int_equal(bootstage_phase_parse(bootstage_phase_name(i), &p), 0);
		assert_int_equal(p, i);
	}
	assert_string_equal(bootstage_phase_name(BOOTSTAGE_PHASE_ROLLED_BACK), "rolled-back");
	assert_int_equal(bootstage_phase_parse("later", &p), -EINVAL);
	assert_string_equal(bootstage_machine_item_name(BOOTSTAGE_MACHINE_SSH_HOST_KEYS), "ssh-host-keys");
}

/* The key table the manual page inplace-job(5) is made from: every key it
 * lists is one the parser knows, each with what it takes. */
static void test_key_table(void **state)
{
	struct bootstage_job_keyinfo k;
	size_t n = bootstage_job_key(0, NULL);
	bool saw_failure = false;

	(void)state;
	assert_true(n >= 28);
	for (size_t i = 0; i < n; i++) {
		char text[256];
		bootstage_job *j = NULL;
		ip_error e = { 0 };

		assert_int_equal(bootstage_job_key(i, &k), n);
		assert_true(k.section[0] && k.key[0] && k.values[0]);
		if (!strcmp(k.key, "on_failure")) {
			assert_string_equal(k.values, "stop|rollback");
			saw_failure = true;
		}
		/* the parser may refuse the value or a missing companion key,
		 * never the key itself */
		snprintf(text, sizeof(text), "[job]\nimage = /x.img\n[%s]\n%s = x\n", k.section, k.key);
		if (!strcmp(k.section, "job") && !strcmp(k.key, "image"))
			snprintf(text, sizeof(text), "[job]\nimage = /x.img\n");
		if (bootstage_job_parse(text, "job.ini", &j, &e) < 0)
			assert_null(strstr(e.msg, "unknown key"));
		bootstage_job_free(j);
	}
	assert_true(saw_failure);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_unknown_names),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_conflicts),
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_phase_names),
		cmocka_unit_test(test_key_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
