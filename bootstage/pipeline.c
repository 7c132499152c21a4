/* pipeline.c — the phase runner: one job carried across the machine's
 * reboots.  `run` does what the old OS does (preflight, notify) and stops
 * where the first reboot comes; each `resume` plays one boot: the staging
 * environment (prepare, deploy), then the new OS's first boot (restore,
 * finish).  Every step goes through the state: begun durably, redone when
 * found running after a crash, skipped when done.
 *
 * Where the state lives (DESIGN.md, "Where durable records live"):
 *   the old OS (run)         the state directory (the old OS's
 *                            /var/lib/inplace, or --state-dir)
 *   staging, until the store the records area: a contiguous ext4 file on
 *                            the old root below the shrink's new end, that
 *                            staging mounts from the raw disk (records.c);
 *                            it holds the state and partctl's shrink journal
 *                            and undo ($INPLACE_STATE_DIR), and is unmounted
 *                            once the state is in the store (state_in_store),
 *                            before deploy overwrites it
 *   from make-storage on     STORE/inplace/state, beside the profile it
 *                            describes; copied there whole, state.json last,
 *                            so a cut leaves one complete state to find
 *   for the finish           the state directory again (the new OS's
 *                            /var/lib/inplace), before the store is wiped
 * resume looks in the store first, then in the state directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "bootstage/boot.h"
#include "bootstage/bootstage.h"
#include "bootstage/bundle.h"
#include "bootstage/internal.h"
#include "bootstage/notify.h"
#include "bootstage/stage.h"
#include "bootstage/steps.h"
#include "imager/imager.h"
#include "partctl/partctl.h"

struct pipe {
	bootstage_job *job;
	const struct bootstage_run_opts *o;
	struct bs_params p;
	struct bs_store store;
	bootstage_state *st;
	bootstage_log *log;
	char dir[4096];        /* where the state is now */
	char work[4096];       /* mount points of this process */
	int lock;              /* flock of the run directory, -1: none */
};

/* Mount points and the lock live in $INPLACE_RUN_DIR (default /run/inplace):
 * RAM, so a power cut leaves none behind. */
static const char *run_base(void)
{
	const char *run = getenv("INPLACE_RUN_DIR");

	return run && *run ? run : "/run/inplace";
}

/* One run or resume at a time: two would mount the same store twice.  With
 * the lock held, whatever is still mounted below the run directory was
 * left by a killed run: unmounted here, before anything mounts again. */
static int pipe_lock(struct pipe *pp, bool wait, ip_error *e)
{
	char path[4200];
	DIR *d;
	struct dirent *de;
	int r;

	r = ip_mkdir_p(run_base(), 0700, e);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/lock", run_base());
	pp->lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (pp->lock < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if (flock(pp->lock, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
		r = -errno;
		close(pp->lock);
		pp->lock = -1;
		return ip_fail(e, r, "another inplace run or resume is at work (it holds %s): wait for it to end",
			       path);
	}
	r = ip_umount_below(run_base(), NULL, e);
	if (r < 0)
		return r;
	if ((d = opendir(run_base()))) {
		while ((de = readdir(d))) {
			if (strncmp(de->d_name, "work.", 5) && strncmp(de->d_name, "locate.", 7))
				continue;
			for (const char *sub = "store\0oldroot\0newroot\0"; *sub; sub += strlen(sub) + 1) {
				snprintf(path, sizeof(path), "%s/%s/%s", run_base(), de->d_name, sub);
				rmdir(path);
			}
			snprintf(path, sizeof(path), "%s/%s", run_base(), de->d_name);
			rmdir(path);
		}
		closedir(d);
	}
	return 0;
}

static const char *state_dir_of(const struct bootstage_run_opts *o)
{
	return o && o->state_dir ? o->state_dir : bootstage_default_state_dir();
}

static void bs_store_dir_state(const struct bs_store *s, char *out, size_t n)
{
	snprintf(out, n, "%s/state", s->root);
}

static int log_open(struct pipe *pp, ip_error *e)
{
	struct bootstage_report_cfg rep = { .url = pp->job->report_url, .ca_cert = pp->job->report_ca_cert,
					    .spool = pp->job->report_spool };

	bootstage_log_free(pp->log);
	pp->log = NULL;
	return bootstage_log_open(pp->dir, &rep, &pp->log, e);
}

/* Copy one file of the state from one directory to another (absent: skip). */
static int copy_state_file(const char *from, const char *to, const char *name, ip_error *e)
{
	_cleanup_free_ char *data = NULL;
	char src[4200], dst[4200];
	size_t len = 0;
	int r;

	snprintf(src, sizeof(src), "%s/%s", from, name);
	snprintf(dst, sizeof(dst), "%s/%s", to, name);
	r = ip_read_file(src, 256u << 20, &data, &len, NULL);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return ip_fail(e, r, "cannot read %s: %s", src, strerror(-r));
	return ip_write_file_atomic(dst, data, len, 0600, e);
}

/* Move the state to dir: job, log and cursor first, state.json last, so a
 * state.json found there always has its job and its log beside it. */
static int move_state(struct pipe *pp, const char *dir, ip_error *e)
{
	static const char *const files[] = { BOOTSTAGE_JOB_FILE, BOOTSTAGE_LOG_FILE, BOOTSTAGE_CURSOR_FILE,
					      BOOTSTAGE_STATE_FILE };
	bootstage_state *st = NULL;
	int r;

	if (!strcmp(dir, pp->dir))
		return 0;
	r = ip_mkdir_p(dir, 0700, e);
	for (size_t i = 0; r == 0 && i < IP_ARRAY_SIZE(files); i++)
		r = copy_state_file(pp->dir, dir, files[i], e);
	if (r == 0)
		r = bootstage_state_load(dir, pp->job->hash, &st, e);
	if (r < 0)
		return r;
	bootstage_state_free(pp->st);
	pp->st = st;
	snprintf(pp->dir, sizeof(pp->dir), "%s", dir);
	return log_open(pp, e);
}

static void event(struct pipe *pp, const char *step, enum bootstage_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void event(struct pipe *pp, const char *step, enum bootstage_level lvl, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (pp->log)
		bootstage_log_event(pp->log, bootstage_phase_name(bootstage_state_phase(pp->st)), step, lvl, -1,
				    NULL, "%s", msg);
	if (pp->o && pp->o->on_event)
		pp->o->on_event(msg, pp->o->on_event_arg);
}

typedef int (*step_fn)(const struct bs_params *, struct bs_store *, bs_result *, ip_error *);

/* One step through the state: skipped when done, else begun durably, run,
 * and ended with its result or its error. */
static int step(struct pipe *pp, const char *name, step_fn fn, ip_error *e)
{
	ip_error err = { 0 };
	bs_result res = NULL;
	bool done;
	int r;

	r = bootstage_state_step_begin(pp->st, name, &done, e);
	if (r < 0 || done)
		return r;
	event(pp, name, BOOTSTAGE_INFO, "%s: started", name);
	r = fn(&pp->p, &pp->store, &res, &err);
	if (r < 0 && !err.code)
		ip_fail(&err, r, "step %s failed: %s", name, strerror(-r));
	if (bootstage_state_step_end(pp->st, name, r < 0 ? &err : NULL, res, e) < 0 && r == 0)
		return -EIO;
	if (r < 0) {
		event(pp, name, BOOTSTAGE_ERROR, "%s", err.msg);
		*e = err;
		/* a step that failed is a run that failed (exit 1: resume again
		 * once the cause is fixed), even when its cause is bad input such
		 * as an image damaged since preflight: the disk changed already */
		e->status = IP_EXIT_FAILED;
		return r;
	}
	event(pp, name, BOOTSTAGE_INFO, "%s: done", name);
	return 0;
}

static int make_storage(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	(void)s;
	return bs_step_make_storage(p, res, e);
}

static int set_phase(struct pipe *pp, enum bootstage_phase ph, ip_error *e)
{
	int r = bootstage_state_set_phase(pp->st, ph, e);

	if (r == 0)
		event(pp, NULL, BOOTSTAGE_INFO, "phase %s", bootstage_phase_name(ph));
	return r;
}

/* The result a step recorded in the state, or NULL. */
static json_object *step_result(struct pipe *pp, const char *name)
{
	json_object *steps, *res = NULL, *v;

	if (!json_object_object_get_ex(bootstage_state_json(pp->st), "steps", &steps))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(steps); i++) {
		json_object *s = json_object_array_get_idx(steps, i);

		if (json_object_object_get_ex(s, "step", &v) && !strcmp(json_object_get_string(v), name))
			json_object_object_get_ex(s, "result", &res);
	}
	return res;
}

/* The storage partition as make-storage left it, from the state: reclaim
 * deletes exactly that partition, even after its filesystem was wiped. */
static void recorded_store(struct pipe *pp)
{
	json_object *res = step_result(pp, "make-storage"), *v;

	{
		if (json_object_object_get_ex(res, "partition", &v))
			pp->p.store_part = (unsigned)json_object_get_int(v);
		if (json_object_object_get_ex(res, "start", &v))
			pp->p.store_off = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(res, "size", &v))
			pp->p.store_size_made = (uint64_t)json_object_get_int64(v);
	}
}

/* store_size = auto: the size preflight worked out when the run began. */
static void recorded_store_size(struct pipe *pp)
{
	json_object *res = step_result(pp, "checks"), *v;

	if (!pp->p.store_size && res && json_object_object_get_ex(res, "store_bytes", &v))
		pp->p.store_size = (uint64_t)json_object_get_int64(v);
}

static int params_from_job(struct pipe *pp, ip_error *e)
{
	const bootstage_job *j = pp->job;
	const char *base = run_base();

	if (snprintf(pp->work, sizeof(pp->work), "%s/work.XXXXXX", base) >= (int)sizeof(pp->work) ||
	    !mkdtemp(pp->work))
		return ip_fail(e, -errno, "cannot make a directory for mount points under %s: %s", base,
			       strerror(errno));
	pp->p = (struct bs_params){
		.disk = j->disk,
		.sys_part = j->system_partition,
		.image = j->image,
		.mirrors = (const char *const *)j->mirrors,
		.pubkey = j->key,
		.spec = j->spec,
		.store_size = j->store_size,
		.store_dir = j->store == BOOTSTAGE_STORE_DIR ? j->store_dir : NULL,
		.keep = (enum bs_keep)j->keep_storage,
		.rollback_image = j->rollback_image,
		.boot_required = j->boot != BOOTSTAGE_BOOT_NONE,
		.work_dir = pp->work,
	};
	/* [machine] items off: restore leaves them as the new OS has them */
	for (size_t i = 0, k = 0; i < BOOTSTAGE_MACHINE_N && k + 1 < IP_ARRAY_SIZE(pp->p.machine_skip); i++)
		if (!j->machine[i])
			pp->p.machine_skip[k++] = bootstage_machine_item_name((enum bootstage_machine_item)i);
	return 0;
}

static void work_cleanup(struct pipe *pp)
{
	static const char *const sub[] = { "store", "oldroot", "newroot" };
	char d[4200];

	if (!*pp->work)
		return;
	for (size_t i = 0; i < IP_ARRAY_SIZE(sub); i++) {
		snprintf(d, sizeof(d), "%s/%s", pp->work, sub[i]);
		rmdir(d);
	}
	rmdir(pp->work);
}

static void pipe_close(struct pipe *pp)
{
	/* the log's file is open in the store: closed before the unmount */
	bootstage_log_free(pp->log);
	bootstage_state_free(pp->st);
	bs_store_close(&pp->store, NULL);
	work_cleanup(pp);
	bootstage_job_free(pp->job);
	if (pp->lock >= 0)
		close(pp->lock);
}

static int open_store_state(struct pipe *pp, ip_error *e)
{
	char dir[4200];
	int r;

	if (!pp->store.m.mounted && !*pp->store.root) {
		r = bs_store_open(&pp->p, &pp->store, e);
		if (r < 0)
			return r;
	}
	bs_store_dir_state(&pp->store, dir, sizeof(dir));
	r = move_state(pp, dir, e);
	if (r == 0 && pp->o && pp->o->state_in_store)
		pp->o->state_in_store(pp->dir, pp->o->state_in_store_arg);
	return r;
}

/* on_failure = rollback: a failed deploy or restore writes the old system
 * back from the rollback image and ends in phase rolled-back (the old
 * system boots again; the store with the saved profiles stays).  Returns
 * the failure (failed), which the caller reports, after the rollback. */
static int roll_back(struct pipe *pp, struct bootstage_run_result *res, int failed, ip_error *e)
{
	ip_error why = *e;
	int r;

	if (pp->job->on_failure != BOOTSTAGE_FAIL_ROLLBACK)
		return failed;
	event(pp, NULL, BOOTSTAGE_WARN, "rolling back: the old system is written back from the rollback image");
	if ((r = set_phase(pp, BOOTSTAGE_PHASE_ROLLED_BACK, e)) < 0 ||
	    (r = step(pp, "rollback", bs_rollback, e)) < 0)
		return r;
	res->phase = BOOTSTAGE_PHASE_ROLLED_BACK;
	event(pp, NULL, BOOTSTAGE_WARN, "rolled back: the old system is in place again; the saved profiles stay in the store");
	ip_error_set(e, IP_EXIT_FAILED, failed, "%s; rolled back: the old system is in place again", why.msg);
	return failed;
}

/* The phases after preflight and notify, from wherever the state stands,
 * up to the next reboot (method none) or the end. */
static int advance(struct pipe *pp, struct bootstage_run_result *res, ip_error *e)
{
	int r = 0;

	for (;;) {
		enum bootstage_phase ph = bootstage_state_phase(pp->st);

		res->phase = ph;
		/* the new system's phases are its own first boot's, never the
		 * staging env's: stop as a reboot would */
		if (pp->o && pp->o->staging && (ph == BOOTSTAGE_PHASE_RESTORE || ph == BOOTSTAGE_PHASE_FINISH)) {
			res->reboot = true;
			return 0;
		}
		switch (ph) {
		case BOOTSTAGE_PHASE_PREPARE:
			if ((r = step(pp, "make-storage", make_storage, e)) < 0 ||
			    (r = open_store_state(pp, e)) < 0 ||
			    (r = step(pp, "stage-image", bs_step_stage_image, e)) < 0 ||
			    (r = step(pp, "stage-bundle", bs_step_stage_bundle, e)) < 0 ||
			    (r = step(pp, "save", bs_step_save, e)) < 0 ||
			    (r = step(pp, "verify", bs_step_verify, e)) < 0 ||
			    (pp->p.rollback_image && (r = step(pp, "rollback-image", bs_step_rollback_image, e)) < 0) ||
			    (r = set_phase(pp, BOOTSTAGE_PHASE_DEPLOY, e)) < 0)
				return r;
			break;
		case BOOTSTAGE_PHASE_DEPLOY:
			if ((r = open_store_state(pp, e)) < 0)
				return r;
			if ((r = step(pp, "deploy", bs_step_deploy, e)) < 0 ||
			    (r = step(pp, "configure", bs_step_configure, e)) < 0)
				return roll_back(pp, res, r, e);
			if ((r = set_phase(pp, BOOTSTAGE_PHASE_RESTORE, e)) < 0)
				return r;
			event(pp, NULL, BOOTSTAGE_INFO, "the new system is in place: the next boot restores the users");
			res->phase = BOOTSTAGE_PHASE_RESTORE;
			res->reboot = true;
			return 0;
		case BOOTSTAGE_PHASE_RESTORE:
			if ((r = open_store_state(pp, e)) < 0)
				return r;
			if ((r = step(pp, "restore", bs_step_restore, e)) < 0)
				return roll_back(pp, res, r, e);
			if ((r = set_phase(pp, BOOTSTAGE_PHASE_FINISH, e)) < 0)
				return r;
			break;
		case BOOTSTAGE_PHASE_FINISH:
			/* the store is about to go: the state goes home first (the
			 * new OS's state directory), with everything it recorded */
			if (!bootstage_state_step_done(pp->st, BOOTSTAGE_PHASE_FINISH, "reclaim")) {
				if (!pp->p.store_dir && !pp->store.m.mounted) {
					unsigned part;
					uint64_t off, size;

					if (bs_find_store(pp->p.disk, &part, &off, &size, NULL) == 0 && part)
						r = open_store_state(pp, e);
				} else if (pp->p.store_dir) {
					r = open_store_state(pp, e);
				}
				if (r == 0)
					r = move_state(pp, state_dir_of(pp->o), e);
				if (r < 0)
					return r;
			}
			recorded_store(pp);
			if ((r = step(pp, "reclaim", bs_step_reclaim, e)) < 0 ||
			    (r = set_phase(pp, BOOTSTAGE_PHASE_DONE, e)) < 0)
				return r;
			event(pp, NULL, BOOTSTAGE_INFO, "done: the machine runs the new system with its users");
			res->phase = BOOTSTAGE_PHASE_DONE;
			return 0;
		case BOOTSTAGE_PHASE_ROLLED_BACK:
			/* a rollback cut short is finished (writing the image back
			 * is resumable like any deploy) */
			if ((r = open_store_state(pp, e)) < 0 || (r = step(pp, "rollback", bs_rollback, e)) < 0)
				return r;
			return 0;
		case BOOTSTAGE_PHASE_DONE:
			return 0;
		default:
			return ip_fail(e, -EINVAL, "the state in %s is in phase %s, which resume cannot continue",
				       pp->dir, bootstage_phase_name(ph));
		}
	}
}

static int pipe_open_job(struct pipe *pp, const char *dir, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	char path[4200];
	json_object *v;
	size_t len = 0;
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, BOOTSTAGE_JOB_FILE);
	r = ip_read_file(path, 1 << 20, &text, &len, NULL);
	if (r < 0)
		return ip_bad(e, r, "the state in %s has no job file (%s): it is damaged", dir, strerror(-r));
	r = bootstage_job_parse(text, path, &pp->job, e);
	if (r < 0)
		return r;
	/* the disk and partition the run resolved when it began: the staging
	 * env and the new OS have other roots */
	if (json_object_object_get_ex(bootstage_state_json(pp->st), "disk", &v) && v) {
		free(pp->job->disk);
		pp->job->disk = strdup(json_object_get_string(v));
	}
	if (json_object_object_get_ex(bootstage_state_json(pp->st), "system_partition", &v) && v)
		pp->job->system_partition = (unsigned)json_object_get_int(v);
	if (pp->o && pp->o->disk_here) {
		free(pp->job->disk);
		pp->job->disk = strdup(pp->o->disk_here);
	}
	if (!pp->job->disk)
		return ip_fail(e, -ENOMEM, "out of memory");
	r = params_from_job(pp, e);
	if (r == 0)
		recorded_store_size(pp);
	return r;
}

/* store = DIR: from make-storage to the finish, the state lives in DIR.
 * The state directory's copy says which job, and so which DIR. */
static int locate_store_dir(struct pipe *pp, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	bootstage_job *job = NULL;
	bootstage_state *st = NULL;
	char path[4200];
	size_t len;
	int r;

	if (bootstage_state_phase(pp->st) >= BOOTSTAGE_PHASE_FINISH)
		return 0;
	snprintf(path, sizeof(path), "%s/%s", pp->dir, BOOTSTAGE_JOB_FILE);
	if (ip_read_file(path, 1 << 20, &text, &len, NULL) < 0 || bootstage_job_parse(text, path, &job, NULL) < 0)
		return 0;   /* pipe_open_job names what is wrong with it */
	if (job->store == BOOTSTAGE_STORE_DIR) {
		snprintf(path, sizeof(path), "%s/state", job->store_dir);
		r = bootstage_state_load(path, bootstage_state_job_hash(pp->st), &st, e);
		if (r < 0 && r != -ENOENT) {
			bootstage_job_free(job);
			return r;
		}
		if (r == 0) {
			bootstage_state_free(pp->st);
			pp->st = st;
			snprintf(pp->dir, sizeof(pp->dir), "%s", path);
		}
	}
	bootstage_job_free(job);
	return 0;
}

/* The state of a run on disk: in its store when there is one, else in the
 * state directory.  -ENOENT with a message when there is none. */
static int locate(struct pipe *pp, const char *disk, ip_error *e)
{
	struct bs_params probe = { .disk = disk };
	char dir[4200];
	unsigned part = 0;
	uint64_t off, size;
	int r;

	if (disk && bs_find_store(disk, &part, &off, &size, NULL) == 0 && part) {
		snprintf(pp->work, sizeof(pp->work), "%s/locate.XXXXXX", run_base());
		if (!mkdtemp(pp->work))
			return ip_fail(e, -errno, "cannot make a mount point under %s: %s", run_base(), strerror(errno));
		probe.work_dir = pp->work;
		r = bs_store_open(&probe, &pp->store, e);
		if (r < 0)
			return r;
		bs_store_dir_state(&pp->store, dir, sizeof(dir));
		r = bootstage_state_load(dir, NULL, &pp->st, e);
		if (r == 0) {
			snprintf(pp->dir, sizeof(pp->dir), "%s", dir);
			return 0;
		}
		bs_store_close(&pp->store, NULL);
		memset(&pp->store, 0, sizeof(pp->store));
		work_cleanup(pp);
		*pp->work = '\0';
		if (r != -ENOENT)
			return r;
	}
	snprintf(pp->dir, sizeof(pp->dir), "%s", state_dir_of(pp->o));
	r = bootstage_state_load(pp->dir, NULL, &pp->st, e);
	if (r == -ENOENT)
		return ip_bad(e, r, "no run to resume: no state in %s%s%s: start one with 'inplace run JOB.ini'",
			      pp->dir, disk ? " nor in a storage partition of " : "", disk ? disk : "");
	if (r == 0)
		r = locate_store_dir(pp, e);
	return r;
}

/* What resume and reclaim share: the lock, the run's state found (the
 * store of disk first), its job and log open. */
static int pipe_reopen(struct pipe *pp, const char *disk, const struct bootstage_run_opts *o, ip_error *e)
{
	char keep_work[4096] = "";
	int r;

	r = pipe_lock(pp, false, e);
	/* loop devices a killed run left over an image file (never a block
	 * device's partitions: those are the kernel's) */
	if (r == 0 && disk)
		ip_loop_detach_stale(disk, NULL);
	if (r == 0)
		r = locate(pp, disk, e);
	if (r < 0)
		return r;
	if (disk && !(o && o->disk_here)) {
		json_object *v;

		if (json_object_object_get_ex(bootstage_state_json(pp->st), "disk", &v) && v &&
		    !bs_same_disk(json_object_get_string(v), disk))
			return ip_bad(e, -EINVAL, "the run in %s is on %s, not %s: give --disk %s", pp->dir,
				      json_object_get_string(v), disk, json_object_get_string(v));
	}
	/* the store was mounted under the locate work dir: keep using it */
	snprintf(keep_work, sizeof(keep_work), "%s", pp->work);
	r = pipe_open_job(pp, pp->dir, e);
	if (r < 0)
		return r;
	if (*keep_work) {
		/* params_from_job made a fresh work dir; the mounted store stays
		 * where locate put it, so the store's mount point is kept */
		rmdir(pp->work);
		snprintf(pp->work, sizeof(pp->work), "%s", keep_work);
		pp->p.work_dir = pp->work;
	}
	return log_open(pp, e);
}

/* The end of resume and reclaim: where the state is and stands, the run
 * closed; returns r. */
static int pipe_end(struct pipe *pp, struct bootstage_run_result *res, int r)
{
	snprintf(res->state_dir, sizeof(res->state_dir), "%s", pp->dir);
	if (pp->st && r == 0)
		res->phase = bootstage_state_phase(pp->st);
	pipe_close(pp);
	return r;
}

int bootstage_resume(const char *disk, const struct bootstage_run_opts *o, struct bootstage_run_result *res,
		     ip_error *e)
{
	struct pipe pp = { .o = o, .lock = -1 };
	int r;

	memset(res, 0, sizeof(*res));
	r = pipe_reopen(&pp, disk, o, e);
	if (r < 0)
		goto out;
	event(&pp, NULL, BOOTSTAGE_INFO, "resume on %s (state in %s)", pp.job->disk, pp.dir);
	if (!bootstage_state_ok(pp.st, NULL))
		event(&pp, NULL, BOOTSTAGE_WARN, "resuming after a failure: the failed step runs again");
	r = advance(&pp, res, e);
out:
	return pipe_end(&pp, res, r);
}

/* A run done whose storage partition was kept: it goes now (keep_storage
 * no from here on).  The store's data stays readable until the wipe, which
 * refuses a store still mounted (the kept one is, by fstab). */
static int reclaim_kept(struct pipe *pp, struct bootstage_run_result *res, ip_error *e)
{
	bs_result sr = NULL;
	unsigned part = 0;
	uint64_t off, size;
	int r;

	if (pp->p.store_dir) {
		event(pp, "reclaim", BOOTSTAGE_INFO, "nothing to reclaim: the store was the directory %s", pp->p.store_dir);
		return 0;
	}
	r = bs_find_store(pp->p.disk, &part, &off, &size, e);
	if (r < 0)
		return r;
	if (!part) {
		event(pp, "reclaim", BOOTSTAGE_INFO, "nothing to reclaim: %s has no storage partition", pp->p.disk);
		return 0;
	}
	pp->p.keep = BS_KEEP_NO;
	r = bs_step_reclaim(&pp->p, &pp->store, &sr, e);
	json_object_put(sr);
	if (r < 0) {
		event(pp, "reclaim", BOOTSTAGE_ERROR, "reclaim by hand failed: %s", e->msg);
		return r;
	}
	event(pp, "reclaim", BOOTSTAGE_INFO, "the kept storage partition %u is wiped and deleted, partition %u grown",
	      part, pp->p.sys_part);
	res->reclaimed = true;
	return 0;
}

int bootstage_reclaim(const char *disk, const struct bootstage_run_opts *o, struct bootstage_run_result *res,
		      ip_error *e)
{
	struct pipe pp = { .o = o, .lock = -1 };
	enum bootstage_phase ph;
	int r;

	memset(res, 0, sizeof(*res));
	r = pipe_reopen(&pp, disk, o, e);
	if (r < 0)
		goto out;
	ph = bootstage_state_phase(pp.st);
	if (ph == BOOTSTAGE_PHASE_FINISH) {
		event(&pp, NULL, BOOTSTAGE_INFO, "reclaim on %s: the run's finish phase (state in %s)", pp.job->disk, pp.dir);
		r = advance(&pp, res, e);
	} else if (ph == BOOTSTAGE_PHASE_DONE) {
		r = reclaim_kept(&pp, res, e);
	} else {
		r = ip_bad(e, -EBUSY, "the run on %s is in phase %s: its store still holds what the first boot restores; "
			   "finish it with 'inplace resume' first", pp.job->disk, bootstage_phase_name(ph));
	}
out:
	return pipe_end(&pp, res, r);
}

/* Postponement used by earlier runs of this job (the notify steps' results). */
static unsigned postponed_so_far(struct pipe *pp)
{
	json_object *res = step_result(pp, "notify"), *v;

	return res && json_object_object_get_ex(res, "postponed_total_s", &v) ? (unsigned)json_object_get_int(v) : 0;
}

/* The notify phase: users told, the admin asked (at a terminal), the answer
 * recorded.  Install goes on; postpone re-arms the job (a timer) and stops;
 * decline stops.  Both leave the disk as it was. */
static int notify_phase(struct pipe *pp, const struct bootstage_run_opts *o, struct bootstage_run_result *res,
			ip_error *e)
{
	const bootstage_job *j = pp->job;
	char job_path[4096];
	const char *rearm[] = { "inplace", "run", job_path, NULL };
	struct bootstage_notify_opts no = {
		.message = j->notify_message,
		.countdown_s = j->notify_countdown,
		.allow_postpone = j->notify_allow_postpone,
		.max_postpone_s = j->notify_max_postpone,
		.postponed_so_far_s = postponed_so_far(pp),
		.allow_decline = j->notify_allow_decline,
		.interactive = o && o->interactive,
		.prompt_in = 0,
		.prompt_out = 2,
		.rearm_argv = rearm,
	};
	struct bootstage_notify_result nr = { 0 };
	ip_error err = { 0 };
	json_object *found;
	bool done;
	int r;

	if (!realpath(j->name, job_path))
		snprintf(job_path, sizeof(job_path), "%s", j->name);
	if ((r = set_phase(pp, BOOTSTAGE_PHASE_NOTIFY, e)) < 0 ||
	    (r = bootstage_state_step_begin(pp->st, "notify", &done, e)) < 0)
		return r;
	r = bootstage_notify(&no, &nr, &err);
	found = r < 0 ? NULL : json_object_new_object();
	if (found) {
		json_object_object_add(found, "answer", json_object_new_string(bootstage_answer_name(nr.answer)));
		json_object_object_add(found, "answered", json_object_new_boolean(nr.answered));
		json_object_object_add(found, "terminals_told", json_object_new_int((int)nr.ttys_told));
		json_object_object_add(found, "desktops_told", json_object_new_int((int)nr.buses_told));
		json_object_object_add(found, "postponed_total_s",
				       json_object_new_int((int)(no.postponed_so_far_s + nr.postpone_s)));
		if (nr.answer == BOOTSTAGE_POSTPONE)
			json_object_object_add(found, "rerun_at", json_object_new_int64((int64_t)nr.rerun_at));
	}
	if (bootstage_state_step_end(pp->st, "notify", r < 0 ? &err : NULL, found, e) < 0 && r == 0)
		r = -EIO;
	if (r < 0) {
		if (err.code)
			*e = err;
		event(pp, "notify", BOOTSTAGE_ERROR, "%s", e->msg);
		return r;
	}
	res->answer = nr.answer;
	res->rerun_at = nr.rerun_at;
	res->rearmed = nr.rearmed;
	event(pp, "notify", BOOTSTAGE_INFO, "users told (%u terminals, %u desktops); answer: %s%s", nr.ttys_told,
	      nr.buses_told, bootstage_answer_name(nr.answer),
	      nr.answer == BOOTSTAGE_INSTALL && !nr.answered ? " (the countdown ran out)" : "");
	if (nr.answer == BOOTSTAGE_POSTPONE)
		event(pp, "notify", BOOTSTAGE_INFO, "postponed by %u s%s", nr.postpone_s,
		      nr.rearmed ? ": a timer runs the job again then" : ": run the job again then");
	else if (nr.answer == BOOTSTAGE_INSTALL && bootstage_notify_disarm(&no, &err) < 0)
		/* a timer an earlier postpone left is not needed now */
		event(pp, "notify", BOOTSTAGE_WARN, "%s", err.msg);
	res->phase = BOOTSTAGE_PHASE_NOTIFY;
	return 0;
}

/* Does the system partition carry the job's image already (the record the
 * configure step leaves there)?  Images given by URL are known only once
 * staged: for them the deploy step asks. */
static bool deployed_already(struct pipe *pp)
{
	bool same = false;

	if (imager_is_url(pp->job->image) ||
	    snprintf(pp->work, sizeof(pp->work), "%s/work.XXXXXX", run_base()) >= (int)sizeof(pp->work) ||
	    !mkdtemp(pp->work)) {
		*pp->work = '\0';
		return false;
	}
	return bs_image_deployed(pp->job->disk, pp->job->system_partition, pp->job->image, pp->work, &same, NULL) == 0 &&
	       same;
}

/* The kernel command line of the staging boot: the consoles this boot
 * has (the admin sees staging where the old system spoke), and a reboot
 * 30 s after a panic, so that a staging kernel that dies comes back to
 * the old system (the one-shot entry is spent by then). */
static void stage_cmdline(const char *extra, char *out, size_t n)
{
	_cleanup_free_ char *cl = NULL;
	size_t len = 0, k = 0;
	char *tok, *save = NULL;

	*out = '\0';
	if (ip_read_file("/proc/cmdline", 4096, &cl, &len, NULL) == 0)
		for (tok = strtok_r(cl, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
			if (!strncmp(tok, "console=", 8) && k + strlen(tok) + 2 < n &&
			    !(extra && strstr(extra, tok)))
				k += (size_t)snprintf(out + k, n - k, "%s ", tok);
	/* inplace.stage: the boot says what it is in its own log */
	snprintf(out + k, n - k, "%s%sinplace.stage panic=30", extra ? extra : "", extra && *extra ? " " : "");
}

/* [boot] method grub or kexec, the run in phase prepare: the staging
 * initramfs built from the state as it is now, then the hook that starts
 * it on the next boot.  Done again by a run again of the job until the
 * staging boot has begun. */
static int arm_boot(struct pipe *pp, const struct bootstage_run_opts *o, struct bootstage_run_result *res,
		    ip_error *e)
{
	struct bs_stage_opts so = { .kernel = o ? o->kernel : NULL, .modules_dir = o ? o->modules_dir : NULL,
				    .state_dir = pp->dir, .disk = pp->job->disk };
	struct bs_stage_result sr = { 0 };
	const char *root = o && o->boot_root ? o->boot_root : "/";
	char initrd[4200], cmdline[1024];
	int r;

	/* written where GRUB reads it (the bundle and modules: the image
	 * waits on the old root, put there by bs_stage_build) */
	snprintf(initrd, sizeof(initrd), "%s/boot/inplace", root);
	r = ip_mkdir_p(initrd, 0700, e);
	if (r < 0)
		return r;
	snprintf(initrd, sizeof(initrd), "%s/boot/inplace/initrd.img", root);
	stage_cmdline(o ? o->cmdline : NULL, cmdline, sizeof(cmdline));
	r = bs_stage_build(initrd, &so, &sr, e);
	if (r == 0)
		r = pp->job->boot == BOOTSTAGE_BOOT_GRUB ? bs_grub_oneshot(root, sr.kernel, initrd, cmdline, e)
							 : bs_kexec_load(sr.kernel, initrd, cmdline, e);
	if (r == 0) {
		event(pp, NULL, BOOTSTAGE_INFO, "staging armed (%s): kernel %s, initramfs %s; the image verified on "
		      "the old root at %s", pp->job->boot == BOOTSTAGE_BOOT_GRUB ? "GRUB one-shot entry" : "kexec",
		      sr.kernel, initrd, sr.image.path);
		res->hooked = true;
	} else {
		event(pp, NULL, BOOTSTAGE_ERROR, "cannot arm the staging boot: %s", e->msg);
	}
	bs_stage_result_clear(&sr);
	return r;
}

/* A method whose staging boot the old OS arms (media and pxe start there). */
static bool armed_boot(const bootstage_job *job)
{
	return job->boot == BOOTSTAGE_BOOT_GRUB || job->boot == BOOTSTAGE_BOOT_KEXEC;
}

/* The hook's tools are here (before a state is written: a run that cannot
 * reboot into staging changes nothing). */
static int boot_ready(const bootstage_job *job, ip_error *e)
{
	switch (job->boot) {
	case BOOTSTAGE_BOOT_GRUB:
		return bs_need_tool("grub-editenv", "grub-common", e);
	case BOOTSTAGE_BOOT_KEXEC:
		return bs_need_tool("kexec", "kexec-tools", e);
	case BOOTSTAGE_BOOT_NONE:
	case BOOTSTAGE_BOOT_MEDIA:   /* the staging env is running already */
	case BOOTSTAGE_BOOT_PXE:
		return 0;
	default:
		return ip_bad(e, -EOPNOTSUPP, "%s: this [boot] method is not supported", job->name);
	}
}

int bootstage_run(bootstage_job *job, const struct bootstage_run_opts *o,
		  struct bootstage_preflight_result *pre, struct bootstage_run_result *res, ip_error *e)
{
	struct pipe pp = { .o = o, .job = job, .lock = -1 };
	_cleanup_close_ int state_lock = -1;
	ip_error failed = { 0 };
	bool fresh, done;
	int r, pr;

	memset(res, 0, sizeof(*res));
	snprintf(pp.dir, sizeof(pp.dir), "%s", state_dir_of(o));
	if ((r = pipe_lock(&pp, false, e)) < 0)
		goto out;
	ip_loop_detach_stale(job->disk, NULL);
	/* media and pxe: the staging env itself runs the old OS's part
	 * (bootstage/media.c); on the old OS there is nothing to arm */
	if ((job->boot == BOOTSTAGE_BOOT_MEDIA || job->boot == BOOTSTAGE_BOOT_PXE) && !(o && o->staging)) {
		r = ip_bad(e, -EOPNOTSUPP, "%s: [boot] method=%s starts from the %s, not from this system: build it with "
			   "'inplace %s build %s' and boot the machine from it", job->name,
			   job->boot == BOOTSTAGE_BOOT_MEDIA ? "media" : "pxe",
			   job->boot == BOOTSTAGE_BOOT_MEDIA ? "boot media" : "network",
			   job->boot == BOOTSTAGE_BOOT_MEDIA ? "media" : "netboot", job->name);
		goto out;
	}
	/* this job's run past its checks: say where it stands, change nothing */
	if (bootstage_state_load(pp.dir, NULL, &pp.st, NULL) == 0 &&
	    !strcmp(bootstage_state_job_hash(pp.st), job->hash) &&
	    bootstage_state_phase(pp.st) > BOOTSTAGE_PHASE_NOTIFY) {
		res->phase = bootstage_state_phase(pp.st);
		res->already = res->phase == BOOTSTAGE_PHASE_DONE;
		res->under_way = !res->already;
		/* armed, but the staging boot has not begun (a failed arm, a
		 * reboot that did not come): arm again */
		if (res->phase == BOOTSTAGE_PHASE_PREPARE && armed_boot(job) &&
		    !bootstage_state_step_done(pp.st, BOOTSTAGE_PHASE_PREPARE, "make-storage") &&
		    strcmp(bootstage_state_step(pp.st), "make-storage")) {
			if ((r = bootstage_state_lock(pp.dir, &state_lock, e)) < 0 || (r = log_open(&pp, e)) < 0 ||
			    (r = arm_boot(&pp, o, res, e)) < 0)
				goto out;
			res->reboot = true;
			goto out;
		}
		/* said in the story too, which also sends what the report
		 * server has not taken yet */
		if (log_open(&pp, NULL) == 0)
			event(&pp, NULL, BOOTSTAGE_INFO, "run again of job %s (%.12s): %s, nothing changed", job->name,
			      job->hash, res->already ? "done already" : "under way");
		goto out;
	}
	bootstage_state_free(pp.st);
	pp.st = NULL;
	if (deployed_already(&pp)) {
		/* the machine carries this image (a run of another job file, a
		 * state directory lost): say so, change nothing, write no state */
		res->already = true;
		res->phase = BOOTSTAGE_PHASE_DONE;
		goto out;
	}
	/* the checks are read-only and run again on every run (the image or
	 * the disk may have changed); a first run whose checks fail writes
	 * nothing at all, not even a state */
	pr = bootstage_preflight(job, pre, &failed);
	if (pr < 0 && bootstage_state_load(pp.dir, job->hash, &pp.st, NULL) < 0) {
		*e = failed;
		r = pr;
		goto out;
	}
	bootstage_state_free(pp.st);
	pp.st = NULL;
	if (pr == 0 && (r = boot_ready(job, e)) < 0)
		goto out;
	if ((r = bootstage_state_lock(pp.dir, &state_lock, e)) < 0 ||
	    (r = bootstage_state_begin(pp.dir, job, &pp.st, &fresh, e)) < 0 || (r = log_open(&pp, e)) < 0)
		goto out;
	event(&pp, NULL, BOOTSTAGE_INFO, "%s job %s (%.12s) on %s", fresh ? "run of" : "run again of", job->name,
	      job->hash, job->disk);
	if ((r = bootstage_state_set_phase(pp.st, BOOTSTAGE_PHASE_PREFLIGHT, e)) < 0 ||
	    (r = bootstage_state_step_begin(pp.st, "checks", &done, e)) < 0)
		goto out;
	for (size_t i = 0; pre->checks && i < json_object_array_length(pre->checks); i++) {
		json_object *c = json_object_array_get_idx(pre->checks, i), *st, *m;

		json_object_object_get_ex(c, "step", &st);
		json_object_object_get_ex(c, "message", &m);
		bootstage_log_event(pp.log, "preflight", json_object_get_string(st), BOOTSTAGE_INFO, -1, NULL, "%s",
				    json_object_get_string(m));
	}
	{
		/* what the later boots need of the checks: the store's size */
		json_object *found = pr < 0 ? NULL : json_object_new_object();

		if (found)
			json_object_object_add(found, "store_bytes", ip_json_u64(pre->store_bytes));
		if ((r = bootstage_state_step_end(pp.st, "checks", pr < 0 ? &failed : NULL, found, e)) < 0)
			goto out;
	}
	if (pr < 0) {
		*e = failed;
		r = pr;
		event(&pp, "checks", BOOTSTAGE_ERROR, "%s", e->msg);
		goto out;
	}
	if ((r = notify_phase(&pp, o, res, e)) < 0 || res->answer != BOOTSTAGE_INSTALL)
		goto out;
	if ((r = set_phase(&pp, BOOTSTAGE_PHASE_PREPARE, e)) < 0)
		goto out;
	if (armed_boot(job) && (r = arm_boot(&pp, o, res, e)) < 0)
		goto out;
	event(&pp, NULL, BOOTSTAGE_INFO, "ready: the next boot (the staging environment) makes room and saves the users");
	res->phase = BOOTSTAGE_PHASE_PREPARE;
	res->reboot = true;
out:
	snprintf(res->state_dir, sizeof(res->state_dir), "%s", pp.dir);
	pp.job = NULL; /* the caller's */
	pipe_close(&pp);
	return r;
}

int bootstage_status_find(const char *disk, const struct bootstage_run_opts *o, size_t nevents,
			  json_object **out, ip_error *e)
{
	struct pipe pp = { .o = o, .lock = -1 };
	int r;

	/* while a run or resume is at work, its store is its own: the state
	 * directory's view is all status can give without mounting it twice */
	if (!disk || pipe_lock(&pp, false, NULL) < 0) {
		pipe_close(&pp);
		return bootstage_status(state_dir_of(o), disk, nevents, out, e);
	}
	r = locate(&pp, disk, e);
	if (r == -ENOENT) {
		/* no run anywhere: phase "none", as without --disk */
		ip_error_clear(e);
		r = bootstage_status(state_dir_of(o), disk, nevents, out, e);
	} else if (r == 0) {
		r = bootstage_status(pp.dir, disk, nevents, out, e);
	}
	pipe_close(&pp);
	return r;
}
