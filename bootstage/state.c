/* state.c — where a run stands: state.json in the state directory, with
 * the job's hash, the phase, the current step and each step's result.
 * Every change rewrites the file whole (temp, fsync, rename, fsync of the
 * directory), so kill -9 at any instant leaves the state before or after
 * the change, and the phase runner can redo a step found "running". */
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bootstage/internal.h"
#include "bootstage/stage.h"

/*
 * state.json, format 1:
 *   format            BOOTSTAGE_STATE_FORMAT; a newer one is refused
 *   job               hex BLAKE2b-256 of the canonical job: a state belongs
 *                     to one job, and resume refuses another's
 *   disk, system_partition   what the job was resolved to
 *   phase, step       where the run is ("" between steps)
 *   ok, error         false and the message once a step failed
 *   created, updated  UTC times
 *   steps             [{phase, step, status: running|done|failed,
 *                       started, ended, error, result}] in the order begun
 */

static const char *const phase_names[] = {
	[BOOTSTAGE_PHASE_NONE] = "none",
	[BOOTSTAGE_PHASE_PREFLIGHT] = "preflight",
	[BOOTSTAGE_PHASE_NOTIFY] = "notify",
	[BOOTSTAGE_PHASE_PREPARE] = "prepare",
	[BOOTSTAGE_PHASE_DEPLOY] = "deploy",
	[BOOTSTAGE_PHASE_RESTORE] = "restore",
	[BOOTSTAGE_PHASE_FINISH] = "finish",
	[BOOTSTAGE_PHASE_DONE] = "done",
	[BOOTSTAGE_PHASE_FAILED] = "failed",
	[BOOTSTAGE_PHASE_ROLLED_BACK] = "rolled-back",
};

struct bootstage_state {
	char *dir;
	json_object *doc;
};

const char *bootstage_phase_name(enum bootstage_phase p)
{
	return (unsigned)p < IP_ARRAY_SIZE(phase_names) ? phase_names[p] : "none";
}

int bootstage_phase_parse(const char *name, enum bootstage_phase *out)
{
	for (size_t i = 0; i < IP_ARRAY_SIZE(phase_names); i++)
		if (!strcmp(name, phase_names[i])) {
			*out = (enum bootstage_phase)i;
			return 0;
		}
	return -EINVAL;
}

const char *bootstage_default_state_dir(void)
{
	const char *d = getenv("INPLACE_STATE_DIR");

	return d && *d ? d : "/var/lib/inplace";
}

int bs_path(char *buf, size_t len, const char *dir, const char *name)
{
	return snprintf(buf, len, "%s/%s", dir, name) >= (int)len ? -ENAMETOOLONG : 0;
}

void bs_now(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *str_of(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static void set_str(json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, v ? json_object_new_string(v) : NULL);
}

static void set_now(json_object *o, const char *key)
{
	char now[32];

	bs_now(now, sizeof(now));
	set_str(o, key, now);
}

static int state_save(bootstage_state *st, ip_error *e)
{
	char path[4096];
	const char *s;

	set_now(st->doc, "updated");
	s = json_object_to_json_string_ext(st->doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!s)
		return ip_fail(e, -ENOMEM, "out of memory");
	if (bs_path(path, sizeof(path), st->dir, BOOTSTAGE_STATE_FILE) < 0)
		return ip_fail(e, -ENAMETOOLONG, "state directory path too long: %s", st->dir);
	return ip_write_file_atomic(path, s, strlen(s), 0600, e);
}

static bootstage_state *state_new(const char *dir, json_object *doc)
{
	bootstage_state *st = calloc(1, sizeof(*st));

	if (!st || !(st->dir = strdup(dir))) {
		free(st);
		return NULL;
	}
	st->doc = doc;
	return st;
}

int bootstage_state_load(const char *dir, const char *job_hash, bootstage_state **out, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	char path[4096];
	json_object *doc, *v, *steps;
	const char *job;
	enum bootstage_phase p;
	int64_t fmt;
	int r;

	if (bs_path(path, sizeof(path), dir, BOOTSTAGE_STATE_FILE) < 0)
		return ip_bad(e, -ENAMETOOLONG, "state directory path too long: %s", dir);
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return -ENOENT;
	if ((r = ip_read_file(path, 16 << 20, &text, NULL, e)) < 0)
		return r;
	doc = json_tokener_parse(text);
	if (!doc || !json_object_is_type(doc, json_type_object) ||
	    !json_object_object_get_ex(doc, "format", &v) || !json_object_is_type(v, json_type_int)) {
		json_object_put(doc);
		return ip_bad(e, -EINVAL, "%s is not an inplace state: move it away or name another --state-dir",
			      path);
	}
	fmt = json_object_get_int64(v);
	if (fmt > BOOTSTAGE_STATE_FORMAT || fmt < 1) {
		json_object_put(doc);
		return ip_bad(e, -EPROTONOSUPPORT, "%s is of state format %lld, this inplace reads up to %d: "
			      "continue with the inplace that started the run", path, (long long)fmt,
			      BOOTSTAGE_STATE_FORMAT);
	}
	job = str_of(doc, "job");
	if (!job || !str_of(doc, "phase") || bootstage_phase_parse(str_of(doc, "phase"), &p) < 0 ||
	    !json_object_object_get_ex(doc, "steps", &steps) || !json_object_is_type(steps, json_type_array)) {
		json_object_put(doc);
		return ip_bad(e, -EINVAL, "%s is damaged (no job, phase or steps): move it away to start over", path);
	}
	if (job_hash && strcmp(job, job_hash)) {
		r = ip_bad(e, -EEXIST, "the state in %s belongs to another job (%.12s, this one is %.12s): "
			   "finish that run with its own job file, or move %s away", dir, job, job_hash, path);
		json_object_put(doc);
		return r;
	}
	if (!(*out = state_new(dir, doc))) {
		json_object_put(doc);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	return 0;
}

int bootstage_state_create(const char *dir, const bootstage_job *job, bootstage_state **out,
			   ip_error *e)
{
	json_object *doc = json_object_new_object();
	bootstage_state *st;
	char path[4096];
	int r;

	if (!doc)
		return ip_fail(e, -ENOMEM, "out of memory");
	json_object_object_add(doc, "format", json_object_new_int(BOOTSTAGE_STATE_FORMAT));
	set_str(doc, "job", job->hash);
	set_str(doc, "disk", job->disk);
	json_object_object_add(doc, "system_partition", json_object_new_int((int)job->system_partition));
	set_str(doc, "phase", bootstage_phase_name(BOOTSTAGE_PHASE_PREFLIGHT));
	set_str(doc, "step", "");
	json_object_object_add(doc, "ok", json_object_new_boolean(1));
	json_object_object_add(doc, "error", NULL);
	set_now(doc, "created");
	json_object_object_add(doc, "steps", json_object_new_array());
	if (!(st = state_new(dir, doc))) {
		json_object_put(doc);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	/* the job file first: a state always has the job it belongs to */
	if ((r = ip_mkdir_p(dir, 0700, e)) < 0 ||
	    (r = bs_path(path, sizeof(path), dir, BOOTSTAGE_JOB_FILE)) < 0 ||
	    (r = ip_write_file_atomic(path, job->text, strlen(job->text), 0600, e)) < 0 ||
	    (r = state_save(st, e)) < 0) {
		if (r == -ENAMETOOLONG)
			ip_bad(e, r, "state directory path too long: %s", dir);
		bootstage_state_free(st);
		return r;
	}
	*out = st;
	return 0;
}

int bootstage_state_lock(const char *dir, int *fd, ip_error *e)
{
	char path[4096];
	int r;

	*fd = -1;
	if (bs_path(path, sizeof(path), dir, "run.lock") < 0)
		return ip_bad(e, -ENAMETOOLONG, "state directory path too long: %s", dir);
	if ((r = ip_mkdir_p(dir, 0700, e)) < 0)
		return r;
	*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (*fd < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(*fd);
		*fd = -1;
		if (r == -EBUSY)
			return ip_fail(e, r, "another inplace run or resume is working in %s: wait for it to end", dir);
		return ip_fail(e, r, "cannot lock %s: %s", path, strerror(-r));
	}
	return 0;
}

/* Nothing on the disk has changed yet: the run is in preflight or notify,
 * or it reached prepare and no step of prepare has begun. */
static bool changed_nothing(const bootstage_state *st)
{
	enum bootstage_phase p = bootstage_state_phase(st);
	json_object *steps;

	if (p == BOOTSTAGE_PHASE_PREFLIGHT || p == BOOTSTAGE_PHASE_NOTIFY)
		return true;
	if (p != BOOTSTAGE_PHASE_PREPARE || !json_object_object_get_ex(st->doc, "steps", &steps))
		return false;
	for (size_t i = 0; i < json_object_array_length(steps); i++) {
		const char *ph = str_of(json_object_array_get_idx(steps, i), "phase");

		if (!ph || (strcmp(ph, "preflight") && strcmp(ph, "notify")))
			return false;
	}
	return true;
}

int bootstage_state_begin(const char *dir, const bootstage_job *job, bootstage_state **out,
			  bool *fresh, ip_error *e)
{
	bootstage_state *st = NULL;
	int r;

	*fresh = false;
	r = bootstage_state_load(dir, NULL, &st, e);
	if (r < 0 && r != -ENOENT)
		return r;
	if (st && !strcmp(bootstage_state_job_hash(st), job->hash)) {
		*out = st;
		return 0;
	}
	/* another job's run that changed nothing yet (its checks, its users
	 * asked, no step of prepare begun): a corrected job may take its place */
	if (st && !changed_nothing(st)) {
		bootstage_state_free(st);
		return bootstage_state_load(dir, job->hash, out, e);
	}
	bootstage_state_free(st);
	*fresh = true;
	return bootstage_state_create(dir, job, out, e);
}

void bootstage_state_free(bootstage_state *st)
{
	if (!st)
		return;
	json_object_put(st->doc);
	free(st->dir);
	free(st);
}

/* Copy dir/name to newdir/name durably (temp, fsync, rename); a missing
 * source is no error. */
static int copy_file(const char *dir, const char *newdir, const char *name, ip_error *e)
{
	_cleanup_free_ char *data = NULL;
	char from[4096], to[4096];
	size_t len;
	int r;

	if (bs_path(from, sizeof(from), dir, name) < 0 || bs_path(to, sizeof(to), newdir, name) < 0)
		return ip_bad(e, -ENAMETOOLONG, "state directory path too long: %s", newdir);
	if (access(from, F_OK) < 0 && errno == ENOENT)
		return 0;
	if ((r = ip_read_file(from, 1ULL << 30, &data, &len, e)) < 0)
		return r;
	return ip_write_file_atomic(to, data, len, 0600, e);
}

int bootstage_state_relocate(bootstage_state *st, const char *newdir, ip_error *e)
{
	static const char *const files[] = { BOOTSTAGE_JOB_FILE, BOOTSTAGE_LOG_FILE, BOOTSTAGE_CURSOR_FILE };
	bootstage_state *there = NULL;
	char *d;
	int r;

	if (!strcmp(st->dir, newdir))
		return 0;
	/* state.json is written there last: once it is, the move is done, and
	 * a move redone after a crash only switches over */
	r = bootstage_state_load(newdir, bootstage_state_job_hash(st), &there, e);
	if (r < 0 && r != -ENOENT)
		return r;
	if (!(d = strdup(newdir))) {
		bootstage_state_free(there);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	if (there) {
		json_object_put(st->doc);
		st->doc = TAKE_PTR(there->doc);
		bootstage_state_free(there);
	} else {
		if ((r = ip_mkdir_p(newdir, 0700, e)) < 0) {
			free(d);
			return r;
		}
		for (size_t i = 0; i < IP_ARRAY_SIZE(files); i++)
			if ((r = copy_file(st->dir, newdir, files[i], e)) < 0) {
				free(d);
				return r;
			}
	}
	free(st->dir);
	st->dir = d;
	return there ? 0 : state_save(st, e);
}

enum bootstage_phase bootstage_state_phase(const bootstage_state *st)
{
	enum bootstage_phase p = BOOTSTAGE_PHASE_NONE;

	bootstage_phase_parse(str_of(st->doc, "phase"), &p);
	return p;
}

const char *bootstage_state_step(const bootstage_state *st)
{
	const char *s = str_of(st->doc, "step");

	return s ? s : "";
}

const char *bootstage_state_job_hash(const bootstage_state *st)
{
	return str_of(st->doc, "job");
}

const char *bootstage_state_dir(const bootstage_state *st)
{
	return st->dir;
}

bool bootstage_state_ok(const bootstage_state *st, const char **error)
{
	json_object *v;
	bool ok = !json_object_object_get_ex(st->doc, "ok", &v) || json_object_get_boolean(v);

	if (error)
		*error = ok ? NULL : str_of(st->doc, "error");
	return ok;
}

json_object *bootstage_state_json(const bootstage_state *st)
{
	return st->doc;
}

int bootstage_state_set_phase(bootstage_state *st, enum bootstage_phase p, ip_error *e)
{
	if (bootstage_state_phase(st) == p)
		return 0;
	set_str(st->doc, "phase", bootstage_phase_name(p));
	set_str(st->doc, "step", "");
	return state_save(st, e);
}

/* The record of step in phase, or NULL. */
static json_object *find_step(const bootstage_state *st, const char *phase, const char *step)
{
	json_object *steps;

	json_object_object_get_ex(st->doc, "steps", &steps);
	for (size_t i = json_object_array_length(steps); i-- > 0;) {
		json_object *s = json_object_array_get_idx(steps, i);
		const char *p = str_of(s, "phase"), *n = str_of(s, "step");

		if (p && n && !strcmp(p, phase) && !strcmp(n, step))
			return s;
	}
	return NULL;
}

bool bootstage_state_step_done(const bootstage_state *st, enum bootstage_phase p, const char *step)
{
	json_object *s = find_step(st, bootstage_phase_name(p), step);
	const char *status = s ? str_of(s, "status") : NULL;

	return status && !strcmp(status, "done");
}

int bootstage_state_step_begin(bootstage_state *st, const char *step, bool *done, ip_error *e)
{
	const char *phase = str_of(st->doc, "phase");
	json_object *s = find_step(st, phase, step), *steps;

	*done = false;
	if (s && !strcmp(str_of(s, "status") ?: "", "done")) {
		*done = true;
		return 0;
	}
	if (!s) {
		s = json_object_new_object();
		set_str(s, "phase", phase);
		set_str(s, "step", step);
		json_object_object_get_ex(st->doc, "steps", &steps);
		json_object_array_add(steps, s);
	}
	/* begun again after a crash or a failure: the step is redone */
	set_str(s, "status", "running");
	set_now(s, "started");
	json_object_object_del(s, "ended");
	json_object_object_del(s, "error");
	json_object_object_del(s, "result");
	set_str(st->doc, "step", step);
	return state_save(st, e);
}

int bootstage_state_step_end(bootstage_state *st, const char *step, const ip_error *err,
			     json_object *result, ip_error *e)
{
	json_object *s = find_step(st, str_of(st->doc, "phase"), step);
	bool failed = err && err->code;

	if (!s) {
		json_object_put(result);
		return ip_fail(e, -ENOENT, "step %s of phase %s was never begun", step, str_of(st->doc, "phase"));
	}
	set_str(s, "status", failed ? "failed" : "done");
	set_now(s, "ended");
	set_str(s, "error", failed ? err->msg : NULL);
	if (result)
		json_object_object_add(s, "result", result);
	json_object_object_add(st->doc, "ok", json_object_new_boolean(!failed));
	set_str(st->doc, "error", failed ? err->msg : NULL);
	return state_save(st, e);
}

static int status_of(const char *dir, const char *disk, size_t nevents, json_object **out, ip_error *e)
{
	bootstage_state *st = NULL;
	json_object *doc, *events = NULL;
	int r;

	r = bootstage_state_load(dir, NULL, &st, e);
	if (r < 0 && r != -ENOENT)
		return r;
	/* a state of another disk says nothing about this one */
	if (st && disk && !bs_same_disk(disk, str_of(st->doc, "disk") ?: "")) {
		bootstage_state_free(st);
		st = NULL;
	}
	if ((r = bootstage_log_tail(dir, nevents, &events, e)) < 0) {
		bootstage_state_free(st);
		return r;
	}
	doc = ip_json_doc("status");
	if (!st) {
		set_str(doc, "phase", "none");
		json_object_object_add(doc, "step", NULL);
		json_object_object_add(doc, "ok", json_object_new_boolean(1));
		json_object_object_add(doc, "error", NULL);
		json_object_put(events);
		events = json_object_new_array();
	} else {
		const char *err = NULL, *step = bootstage_state_step(st);
		bool ok = bootstage_state_ok(st, &err);

		set_str(doc, "phase", bootstage_phase_name(bootstage_state_phase(st)));
		set_str(doc, "step", *step ? step : NULL);
		json_object_object_add(doc, "ok", json_object_new_boolean(ok));
		set_str(doc, "error", err);
		set_str(doc, "job", bootstage_state_job_hash(st));
		set_str(doc, "disk", str_of(st->doc, "disk"));
		set_str(doc, "updated", str_of(st->doc, "updated"));
	}
	json_object_object_add(doc, "state_dir", json_object_new_string(dir));
	json_object_object_add(doc, "events", events);
	bootstage_state_free(st);
	*out = doc;
	return 0;
}

/* Remove what status_records copied out. */
static void records_tmp_drop(const char *tmp)
{
	char p[4200];

	snprintf(p, sizeof(p), "%s/%s", tmp, BOOTSTAGE_STATE_FILE);
	unlink(p);
	snprintf(p, sizeof(p), "%s/%s", tmp, BOOTSTAGE_LOG_FILE);
	unlink(p);
	rmdir(tmp);
}

/* The old OS after a staging boot that did not end in a store (a failure
 * before the store existed, or a cut): the staging boot advanced the state
 * in the records area, a file of this state directory, and recorded its
 * failure there, while the state directory still says what `run` left.
 * The records' state is shown when it is this run's (or the directory has
 * none) and not older; -ENOENT (no error set) when there is nothing newer
 * there. */
static int status_records(const char *dir, const char *disk, size_t nevents, json_object **out, ip_error *e)
{
	char img[4200], tmp[] = "/tmp/inplace-status.XXXXXX";
	bootstage_state *st = NULL, *rs = NULL;
	bool unclean = false, newer;
	int r;

	if (bs_path(img, sizeof(img), dir, BS_RECORDS_NAME) < 0 || access(img, F_OK) < 0)
		return -ENOENT;
	r = bootstage_state_load(dir, NULL, &st, e);
	if (r < 0 && r != -ENOENT)
		return r;
	ip_error_clear(e);
	/* a state of another disk says nothing about this one */
	if (st && disk && !bs_same_disk(disk, str_of(st->doc, "disk") ?: "")) {
		bootstage_state_free(st);
		return -ENOENT;
	}
	if (!mkdtemp(tmp)) {
		bootstage_state_free(st);
		return ip_fail(e, -errno, "cannot make a directory in /tmp: %s", strerror(errno));
	}
	r = bs_records_read(img, tmp, &unclean, e);
	if (r == 0)
		r = bootstage_state_load(tmp, NULL, &rs, e);
	if (r == -ENOENT) {
		ip_error_clear(e);
	} else if (r == 0) {
		newer = !st || (!strcmp(bootstage_state_job_hash(st), bootstage_state_job_hash(rs)) &&
				strcmp(str_of(rs->doc, "updated") ?: "", str_of(st->doc, "updated") ?: "") >= 0);
		r = newer ? status_of(tmp, NULL, nevents, out, e) : -ENOENT;
		if (r == 0) {
			json_object_object_add(*out, "state_dir", json_object_new_string(dir));
			json_object_object_add(*out, "records", json_object_new_string(img));
			json_object_object_add(*out, "records_unclean", json_object_new_boolean(unclean));
		}
	}
	bootstage_state_free(rs);
	bootstage_state_free(st);
	records_tmp_drop(tmp);
	if (r < 0 && r != -ENOENT) {
		/* records that cannot be read must not hide the state there is:
		 * the directory's, with why the records were not read */
		char why[sizeof(e->msg)];

		snprintf(why, sizeof(why), "%s", e->msg);
		ip_error_clear(e);
		if ((r = status_of(dir, disk, nevents, out, e)) == 0)
			json_object_object_add(*out, "records_error", json_object_new_string(why));
	}
	return r;
}

int bootstage_status(const char *dir, const char *disk, size_t nevents, json_object **out, ip_error *e)
{
	int r = status_records(dir, disk, nevents, out, e);

	return r == -ENOENT ? status_of(dir, disk, nevents, out, e) : r;
}
