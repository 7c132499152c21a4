/* test_state.c — state.json and status.log in a scratch directory: steps
 * begun and ended idempotently across a "crash" (a new handle on the same
 * directory), refusal of another job's state and of a newer format, event
 * sequence numbers after a torn last line, the tail reader, the status
 * document with and without state, and status reading the staging records
 * file of the state directory (an ext4 image made by mke2fs -d). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "bootstage/bootstage.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_state.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	const char *const argv[] = { "rm", "-rf", dir, NULL };

	(void)state;
	return ip_spawn(argv, NULL, NULL);
}

static bootstage_job *job(const char *extra)
{
	char text[512];
	bootstage_job *j = NULL;
	ip_error e = { 0 };

	snprintf(text, sizeof(text), "[job]\nimage = /os.img\nrequire_signature = no\ndisk = /dev/null\n"
		 "system_partition = 1\n%s", extra);
	assert_int_equal(bootstage_job_parse(text, "job.ini", &j, &e), 0);
	return j;
}

static void write_file(const char *name, const char *text)
{
	char path[128];
	ip_error e = { 0 };

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(ip_write_file_atomic(path, text, strlen(text), 0600, &e), 0);
}

static void test_steps_resume(void **state)
{
	bootstage_job *j = job("");
	bootstage_state *st = NULL;
	ip_error e = { 0 }, boom = { 0 };
	bool done, fresh;

	(void)state;
	assert_int_equal(bootstage_state_load(dir, j->hash, &st, &e), -ENOENT);
	assert_int_equal(bootstage_state_begin(dir, j, &st, &fresh, &e), 0);
	assert_true(fresh);
	assert_int_equal(bootstage_state_phase(st), BOOTSTAGE_PHASE_PREFLIGHT);
	assert_int_equal(bootstage_state_step_begin(st, "checks", &done, &e), 0);
	assert_false(done);
	assert_int_equal(bootstage_state_step_end(st, "checks", NULL, NULL, &e), 0);
	assert_int_equal(bootstage_state_set_phase(st, BOOTSTAGE_PHASE_PREPARE, &e), 0);
	assert_int_equal(bootstage_state_step_begin(st, "make-storage", &done, &e), 0);
	/* "crash": the step was begun and never ended */
	bootstage_state_free(st);

	assert_int_equal(bootstage_state_load(dir, j->hash, &st, &e), 0);
	assert_int_equal(bootstage_state_phase(st), BOOTSTAGE_PHASE_PREPARE);
	assert_string_equal(bootstage_state_step(st), "make-storage");
	assert_true(bootstage_state_step_done(st, BOOTSTAGE_PHASE_PREFLIGHT, "checks"));
	assert_false(bootstage_state_step_done(st, BOOTSTAGE_PHASE_PREPARE, "make-storage"));
	assert_int_equal(bootstage_state_step_begin(st, "make-storage", &done, &e), 0);
	assert_false(done);   /* found running: redone */
	ip_fail(&boom, -ENOSPC, "no room on the disk");
	assert_int_equal(bootstage_state_step_end(st, "make-storage", &boom, NULL, &e), 0);
	const char *err = NULL;
	assert_false(bootstage_state_ok(st, &err));
	assert_string_equal(err, "no room on the disk");
	assert_int_equal(bootstage_state_step_begin(st, "make-storage", &done, &e), 0);
	assert_int_equal(bootstage_state_step_end(st, "make-storage", NULL, json_object_new_int(3), &e), 0);
	assert_true(bootstage_state_ok(st, NULL));
	bootstage_state_free(st);

	/* a step that ended well is skipped by the next run */
	assert_int_equal(bootstage_state_begin(dir, j, &st, &fresh, &e), 0);
	assert_false(fresh);
	assert_int_equal(bootstage_state_step_begin(st, "make-storage", &done, &e), 0);
	assert_true(done);
	assert_int_equal(bootstage_state_step_end(st, "nonesuch", NULL, NULL, &e), -ENOENT);
	bootstage_state_free(st);
	bootstage_job_free(j);
}

static void test_other_job_and_format(void **state)
{
	bootstage_job *a = job(""), *b = job("store_size = 1G\n");
	bootstage_state *st = NULL;
	ip_error e = { 0 };
	bool fresh;

	(void)state;
	assert_int_equal(bootstage_state_create(dir, a, &st, &e), 0);
	bootstage_state_free(st);
	/* still in preflight: b may take its place */
	assert_int_equal(bootstage_state_begin(dir, b, &st, &fresh, &e), 0);
	assert_true(fresh);
	assert_int_equal(bootstage_state_set_phase(st, BOOTSTAGE_PHASE_DEPLOY, &e), 0);
	bootstage_state_free(st);
	/* past preflight: a is refused, in one line naming both */
	assert_int_equal(bootstage_state_begin(dir, a, &st, &fresh, &e), -EEXIST);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "belongs to another job"));
	assert_null(strchr(e.msg, '\n'));
	memset(&e, 0, sizeof(e));
	assert_int_equal(bootstage_state_load(dir, a->hash, &st, &e), -EEXIST);

	write_file("state.json", "{\"format\": 2, \"job\": \"x\", \"phase\": \"done\", \"steps\": []}");
	memset(&e, 0, sizeof(e));
	assert_int_equal(bootstage_state_load(dir, NULL, &st, &e), -EPROTONOSUPPORT);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	write_file("state.json", "{\"format\": 1, \"job\": \"x\", \"phase\": \"sideways\", \"steps\": []}");
	assert_int_equal(bootstage_state_load(dir, NULL, &st, &e), -EINVAL);
	write_file("state.json", "not json");
	assert_int_equal(bootstage_state_load(dir, NULL, &st, &e), -EINVAL);
	bootstage_job_free(a);
	bootstage_job_free(b);
}

static void test_log_seq_and_tail(void **state)
{
	bootstage_log *l = NULL;
	json_object *tail = NULL, *v;
	ip_error e = { 0 };
	char path[128];
	int fd;

	(void)state;
	assert_int_equal(bootstage_log_tail(dir, 5, &tail, &e), 0);
	assert_int_equal(json_object_array_length(tail), 0);
	json_object_put(tail);
	assert_int_equal(bootstage_log_open(dir, NULL, &l, &e), 0);
	for (int i = 0; i < 7; i++)
		assert_int_equal(bootstage_log_event(l, "preflight", "image", BOOTSTAGE_INFO, i / 7.0, &e,
						     "event %d", i), 0);
	bootstage_log_free(l);
	/* a writer killed in mid-line */
	snprintf(path, sizeof(path), "%s/status.log", dir);
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\"seq\":8,\"ti", 12), 12);
	close(fd);
	assert_int_equal(bootstage_log_open(dir, NULL, &l, &e), 0);
	assert_int_equal(bootstage_log_event(l, "deploy", NULL, BOOTSTAGE_ERROR, -1, &e, "after the tear"), 0);
	bootstage_log_free(l);

	assert_int_equal(bootstage_log_tail(dir, 3, &tail, &e), 0);
	assert_int_equal(json_object_array_length(tail), 3);
	json_object_object_get_ex(json_object_array_get_idx(tail, 0), "message", &v);
	assert_string_equal(json_object_get_string(v), "event 5");
	json_object *last = json_object_array_get_idx(tail, 2);
	json_object_object_get_ex(last, "seq", &v);
	assert_int_equal(json_object_get_int(v), 8);   /* the torn line never counted */
	json_object_object_get_ex(last, "level", &v);
	assert_string_equal(json_object_get_string(v), "error");
	json_object_object_get_ex(last, "step", &v);
	assert_null(v);
	json_object_object_get_ex(last, "progress", &v);
	assert_null(v);
	json_object_put(tail);
}

/* Moving into the store: everything comes along, state.json last; a move
 * redone after it finished only switches over. */
static void test_relocate(void **state)
{
	bootstage_job *j = job("");
	bootstage_state *st = NULL, *again = NULL;
	bootstage_log *l = NULL;
	json_object *tail = NULL;
	ip_error e = { 0 };
	char store[128], old[128];
	bool done;

	(void)state;
	snprintf(old, sizeof(old), "%s/old", dir);
	snprintf(store, sizeof(store), "%s/store/inplace", dir);
	assert_int_equal(bootstage_state_create(old, j, &st, &e), 0);
	assert_int_equal(bootstage_log_open(old, NULL, &l, &e), 0);
	assert_int_equal(bootstage_log_event(l, "prepare", "make-storage", BOOTSTAGE_INFO, -1, &e, "before"), 0);
	bootstage_log_free(l);
	assert_int_equal(bootstage_state_set_phase(st, BOOTSTAGE_PHASE_PREPARE, &e), 0);
	assert_int_equal(bootstage_state_relocate(st, store, &e), 0);
	assert_string_equal(bootstage_state_dir(st), store);
	assert_int_equal(bootstage_state_step_begin(st, "save", &done, &e), 0);
	assert_int_equal(bootstage_log_open(store, NULL, &l, &e), 0);
	assert_int_equal(bootstage_log_event(l, "prepare", "save", BOOTSTAGE_INFO, -1, &e, "after"), 0);
	bootstage_log_free(l);
	assert_int_equal(bootstage_log_tail(store, 10, &tail, &e), 0);
	assert_int_equal(json_object_array_length(tail), 2);   /* one story */
	json_object_put(tail);

	/* the old home, reloaded (a resume that still looks there), moves
	 * again: it finds the move done and takes the newer state */
	assert_int_equal(bootstage_state_load(old, j->hash, &again, &e), 0);
	assert_int_equal(bootstage_state_relocate(again, store, &e), 0);
	assert_string_equal(bootstage_state_step(again), "save");
	assert_int_equal(bootstage_state_phase(again), BOOTSTAGE_PHASE_PREPARE);
	bootstage_state_free(again);
	bootstage_state_free(st);
	bootstage_job_free(j);
}

static void test_status_doc(void **state)
{
	bootstage_job *j = job("");
	bootstage_state *st = NULL;
	json_object *doc = NULL, *v;
	ip_error e = { 0 };
	bool done;

	(void)state;
	assert_int_equal(bootstage_status(dir, NULL, 10, &doc, &e), 0);
	json_object_object_get_ex(doc, "phase", &v);
	assert_string_equal(json_object_get_string(v), "none");
	json_object_object_get_ex(doc, "version", &v);
	assert_int_equal(json_object_get_int(v), 1);
	json_object_put(doc);

	assert_int_equal(bootstage_state_create(dir, j, &st, &e), 0);
	assert_int_equal(bootstage_state_step_begin(st, "checks", &done, &e), 0);
	bootstage_state_free(st);
	assert_int_equal(bootstage_status(dir, "/dev/null", 10, &doc, &e), 0);
	json_object_object_get_ex(doc, "phase", &v);
	assert_string_equal(json_object_get_string(v), "preflight");
	json_object_object_get_ex(doc, "step", &v);
	assert_string_equal(json_object_get_string(v), "checks");
	json_object_object_get_ex(doc, "ok", &v);
	assert_true(json_object_get_boolean(v));
	json_object_put(doc);
	/* another disk: no state for it */
	assert_int_equal(bootstage_status(dir, "/dev/zero", 10, &doc, &e), 0);
	json_object_object_get_ex(doc, "phase", &v);
	assert_string_equal(json_object_get_string(v), "none");
	json_object_put(doc);
	bootstage_job_free(j);
}

/* dir/staging-records.img: an ext4 image holding the state of src */
static void make_records(const char *src)
{
	char img[128];
	const char *argv[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-d", src, img, "4096k", NULL };
	ip_error e = { 0 };

	snprintf(img, sizeof(img), "%s/staging-records.img", dir);
	unlink(img);
	assert_int_equal(ip_spawn(argv, NULL, &e), 0);
}

static const char *doc_str(json_object *doc, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(doc, key, &v) && v ? json_object_get_string(v) : NULL;
}

static void test_status_records(void **state)
{
	bootstage_job *j = job(""), *other = job("store_size = 1MiB");
	bootstage_state *st = NULL;
	json_object *doc = NULL, *v;
	ip_error e = { 0 }, boom = { 0 };
	char src[128];
	bool done;

	(void)state;
	/* what run left in the state directory */
	assert_int_equal(bootstage_state_create(dir, j, &st, &e), 0);
	assert_int_equal(bootstage_state_set_phase(st, BOOTSTAGE_PHASE_PREPARE, &e), 0);
	bootstage_state_free(st);
	/* what the staging boot advanced in the records: a failed shrink */
	snprintf(src, sizeof(src), "%s/rec", dir);
	assert_int_equal(bootstage_state_create(src, j, &st, &e), 0);
	assert_int_equal(bootstage_state_set_phase(st, BOOTSTAGE_PHASE_PREPARE, &e), 0);
	assert_int_equal(bootstage_state_step_begin(st, "make-storage", &done, &e), 0);
	ip_fail(&boom, -ENOSPC, "no room for the store");
	assert_int_equal(bootstage_state_step_end(st, "make-storage", &boom, NULL, &e), 0);
	bootstage_state_free(st);
	make_records(src);
	assert_int_equal(bootstage_status(dir, NULL, 10, &doc, &e), 0);
	assert_string_equal(doc_str(doc, "step"), "make-storage");
	assert_string_equal(doc_str(doc, "error"), "no room for the store");
	json_object_object_get_ex(doc, "ok", &v);
	assert_false(json_object_get_boolean(v));
	assert_non_null(strstr(doc_str(doc, "records") ?: "", "staging-records.img"));
	assert_string_equal(doc_str(doc, "state_dir"), dir);
	json_object_put(doc);

	/* records of another job say nothing about this run */
	{
		const char *const rm[] = { "rm", "-rf", src, NULL };

		assert_int_equal(ip_spawn(rm, NULL, NULL), 0);
	}
	assert_int_equal(bootstage_state_create(src, other, &st, &e), 0);
	bootstage_state_free(st);
	make_records(src);
	assert_int_equal(bootstage_status(dir, NULL, 10, &doc, &e), 0);
	assert_null(doc_str(doc, "records"));
	assert_null(doc_str(doc, "step"));
	assert_string_equal(doc_str(doc, "phase"), "prepare");
	json_object_put(doc);

	/* a records file that holds no filesystem: the directory's state, and why */
	write_file("staging-records.img", "not an ext4");
	assert_int_equal(bootstage_status(dir, NULL, 10, &doc, &e), 0);
	assert_string_equal(doc_str(doc, "phase"), "prepare");
	assert_non_null(doc_str(doc, "records_error"));
	json_object_put(doc);
	bootstage_job_free(other);
	bootstage_job_free(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_steps_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_job_and_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_seq_and_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relocate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_doc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_records, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
