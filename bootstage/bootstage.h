/* bootstage.h — the pipeline: one job file turns into a reimaged machine
 * through journaled phases (preflight, notify, prepare, deploy, restore,
 * finish).  This header holds the job file, the state of a run, the status
 * log every phase appends to (and its reporting to a URL), and preflight.
 * Every function returns 0 or a negative errno and fills e; none prints. */
#ifndef INPLACE_BOOTSTAGE_H
#define INPLACE_BOOTSTAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"
#include "migrate/migrate.h"
#include "partctl/partctl.h"

/* ==== the job file (bootstage/job.c) ==================================== */

enum bootstage_store_kind {
	BOOTSTAGE_STORE_PARTITION,  /* make a storage partition on the disk */
	BOOTSTAGE_STORE_DIR,        /* a directory on another filesystem */
};

enum bootstage_on_failure {
	BOOTSTAGE_FAIL_STOP,
	BOOTSTAGE_FAIL_ROLLBACK,    /* write the rollback image back */
};

enum bootstage_keep {
	BOOTSTAGE_KEEP_NO,          /* delete the storage partition, grow the root */
	BOOTSTAGE_KEEP_YES,         /* keep it as a data partition (fstab entry) */
	BOOTSTAGE_KEEP_IMAGE,       /* capture it as an image into the new system, then delete */
};

enum bootstage_boot_method {
	BOOTSTAGE_BOOT_GRUB,
	BOOTSTAGE_BOOT_KEXEC,
	BOOTSTAGE_BOOT_MEDIA,
	BOOTSTAGE_BOOT_PXE,
	BOOTSTAGE_BOOT_NONE,        /* stop where a reboot would come (tests, demo) */
};

/* The items of machine state ([machine], each on or off), in the order of
 * migrate/machine.c's kinds. */
enum bootstage_machine_item {
	BOOTSTAGE_MACHINE_HOSTNAME,
	BOOTSTAGE_MACHINE_HOSTS,
	BOOTSTAGE_MACHINE_MACHINE_ID,
	BOOTSTAGE_MACHINE_SSH_HOST_KEYS,
	BOOTSTAGE_MACHINE_NETWORK,
	BOOTSTAGE_MACHINE_TIMEZONE,
	BOOTSTAGE_MACHINE_LOCALE,
	BOOTSTAGE_MACHINE_KEYBOARD,
	BOOTSTAGE_MACHINE_N,
};
/* "hostname", "ssh-host-keys" …: the kind names of migrate's machine.json. */
const char *bootstage_machine_item_name(enum bootstage_machine_item i);

/* A parsed, validated job.  Made by bootstage_job_parse()/_load(), freed by
 * bootstage_job_free(); callers read the fields and change none. */
typedef struct bootstage_job {
	char *name;                 /* the file, for messages ("job.ini") */
	char *text;                 /* the file as read */
	char hash[65];              /* hex BLAKE2b-256 of the canonical job: every
	                             * section, key and value in file order, with
	                             * comments and blanks left out */
	/* [job] */
	char *image;                /* path or http(s):// URL */
	char **mirrors;             /* NULL-terminated (never NULL itself) */
	char *key;                  /* minisign public key file, or NULL */
	bool require_signature;     /* default true */
	char *disk;                 /* NULL until resolved: the running root's disk */
	unsigned system_partition;  /* 0 until resolved: the running root's partition */
	enum bootstage_store_kind store;
	char *store_dir;            /* BOOTSTAGE_STORE_DIR: an absolute path */
	uint64_t store_size;        /* bytes; 0: auto */
	enum bootstage_on_failure on_failure;
	enum bootstage_keep keep_storage;
	bool rollback_image;        /* capture the old system partition into the store */
	/* [profile], [user NAME], [system]: migrate's profile spec */
	migrate_spec *spec;
	/* [machine] */
	bool machine[BOOTSTAGE_MACHINE_N];  /* default: all true */
	/* [boot] */
	enum bootstage_boot_method boot;    /* default grub */
	/* [report] */
	char *report_url;           /* NULL: no reporting */
	bool report_spool;          /* default true: keep unsent events for later */
	char *report_ca_cert;       /* PEM file of the CAs to trust, or NULL */
	/* [notify] */
	char *notify_message;       /* NULL: the default text */
	unsigned notify_countdown;  /* seconds, default 300 */
	bool notify_allow_postpone; /* default true */
	unsigned notify_max_postpone; /* seconds of postponing in total, default 86400 */
	bool notify_allow_decline;  /* default false */
} bootstage_job;

/* Parse and validate text (every key's type, unknown sections and keys
 * with a suggestion, duplicates, conflicts).  Touches nothing outside
 * memory; disk and system_partition stay unset when the file omits them.
 * Errors are bad input: "job.ini:12: unknown key 'imgae' in [job] (did you
 * mean 'image'?)". */
int bootstage_job_parse(const char *text, const char *name, bootstage_job **out, ip_error *e);
/* Read path, parse it, and check it against this machine: the key and CA
 * files exist, disk and system_partition (filled from the running root when
 * omitted) exist, a store directory exists and is not on the disk being
 * reimaged.  Bad input for all of these. */
int bootstage_job_load(const char *path, bootstage_job **out, ip_error *e);
/* The machine-dependent half of bootstage_job_load() on a parsed job. */
int bootstage_job_resolve(bootstage_job *job, ip_error *e);
void bootstage_job_free(bootstage_job *job);

/* One key of the job file, for its manual page (inplace-job(5)). */
struct bootstage_job_keyinfo {
	const char *section;  /* "job" */
	const char *key;      /* "store_size" */
	char values[96];      /* what it takes: "SIZE|auto", "yes|no", "stop|rollback" */
};
/* The number of keys; with out, also key i (i below that number). */
size_t bootstage_job_key(size_t i, struct bootstage_job_keyinfo *out);

/* The disk and partition number holding the filesystem of device dev
 * (st_dev), through /sys/dev/block.  disk gets "/dev/sda" (a loop device
 * backed by a file: that file's path); *part 0 when dev is a whole disk. */
int bootstage_dev_disk(dev_t dev, char *disk, size_t len, unsigned *part, ip_error *e);
/* The disk and partition of the running root (/proc/self/mountinfo). */
int bootstage_root_disk(char *disk, size_t len, unsigned *part, ip_error *e);

/* ==== state of a run (bootstage/state.c) ================================ */

/* Newest state.json format this code writes and reads. */
#define BOOTSTAGE_STATE_FORMAT 1

enum bootstage_phase {
	BOOTSTAGE_PHASE_NONE,       /* no state */
	BOOTSTAGE_PHASE_PREFLIGHT,
	BOOTSTAGE_PHASE_NOTIFY,
	BOOTSTAGE_PHASE_PREPARE,
	BOOTSTAGE_PHASE_DEPLOY,
	BOOTSTAGE_PHASE_RESTORE,
	BOOTSTAGE_PHASE_FINISH,
	BOOTSTAGE_PHASE_DONE,
	BOOTSTAGE_PHASE_FAILED,
	BOOTSTAGE_PHASE_ROLLED_BACK,
};
const char *bootstage_phase_name(enum bootstage_phase p);
/* -EINVAL for an unknown name. */
int bootstage_phase_parse(const char *name, enum bootstage_phase *out);

/* The state directory when none is given: $INPLACE_STATE_DIR, else
 * /var/lib/inplace. */
const char *bootstage_default_state_dir(void);

/* state.json in a directory: format, job hash, disk, phase, the current
 * step, and each step's result.  Every change is written whole with
 * ip_write_file_atomic before the call returns, so kill -9 leaves the old
 * or the new state, never a mix. */
typedef struct bootstage_state bootstage_state;

/* Read dir/state.json.  -ENOENT (no error set) when there is none.  A
 * state of a newer format, or of another job when job_hash is not NULL:
 * bad input (exit 2) in one line naming both. */
int bootstage_state_load(const char *dir, const char *job_hash, bootstage_state **out,
			 ip_error *e);
/* A new state for job in dir (phase preflight); written at once, with a
 * copy of the job file as dir/job.ini for the later boots. */
int bootstage_state_create(const char *dir, const bootstage_job *job, bootstage_state **out,
			   ip_error *e);
/* One run or resume at a time in dir: an exclusive lock on dir/run.lock,
 * held until *fd is closed (by the process's end at the latest).  -EBUSY
 * (failure, exit 1) while another process holds it. */
int bootstage_state_lock(const char *dir, int *fd, ip_error *e);
/* What `run` does: the state of job in dir, created when there is none.
 * A state of another job is refused (as bootstage_state_load does) unless
 * that run never left preflight, which changed nothing: then it is
 * replaced.  *fresh: a new state was written. */
int bootstage_state_begin(const char *dir, const bootstage_job *job, bootstage_state **out,
			  bool *fresh, ip_error *e);
void bootstage_state_free(bootstage_state *st);

enum bootstage_phase bootstage_state_phase(const bootstage_state *st);
const char *bootstage_state_step(const bootstage_state *st);   /* "" when none */
const char *bootstage_state_job_hash(const bootstage_state *st);
const char *bootstage_state_dir(const bootstage_state *st);
/* false when the run failed; *error then holds the message. */
bool bootstage_state_ok(const bootstage_state *st, const char **error);

/* Move the run's home to newdir (the store, once it exists): job.ini,
 * status.log and report.cursor are copied durably, then state.json is
 * written there last, so that a move cut short is redone and a finished
 * one found again (then st takes the state found there).  The old
 * directory is left as it was.  A bootstage_log open on the old directory
 * must be reopened on the new one. */
int bootstage_state_relocate(bootstage_state *st, const char *newdir, ip_error *e);
/* Enter phase p (durable).  Entering the phase the state is in is a no-op. */
int bootstage_state_set_phase(bootstage_state *st, enum bootstage_phase p, ip_error *e);
/* Start step `step` of the current phase.  *done is set true, and nothing
 * written, when that step already ended well (a resumed run skips it);
 * otherwise the step is recorded "running" before the call returns, so a
 * step found "running" after a crash is one to redo (every step is
 * idempotent). */
int bootstage_state_step_begin(bootstage_state *st, const char *step, bool *done, ip_error *e);
/* End the running step: err NULL or with code 0 means it succeeded; result
 * (may be NULL, reference taken) is kept with it.  A failure marks the
 * state failed with err's message. */
int bootstage_state_step_end(bootstage_state *st, const char *step, const ip_error *err,
			     json_object *result, ip_error *e);
/* true when step of phase p ended well. */
bool bootstage_state_step_done(const bootstage_state *st, enum bootstage_phase p, const char *step);
/* The state as a JSON object (borrowed; valid until the next change). */
json_object *bootstage_state_json(const bootstage_state *st);

/* ==== status log and reporting (bootstage/log.c, report.c) ============== */

enum bootstage_level { BOOTSTAGE_INFO, BOOTSTAGE_WARN, BOOTSTAGE_ERROR };

/* Where events go: dir/status.log (JSON lines, appended with O_APPEND and
 * fsynced), and, when url is set, POSTed to it one by one in order. */
struct bootstage_report_cfg {
	const char *url;            /* NULL: no reporting */
	const char *ca_cert;        /* PEM file for https, NULL: the system's CAs */
	bool spool;                 /* keep events the server did not take, to
	                             * send them later; false: drop them */
};

typedef struct bootstage_log bootstage_log;

/* Open dir/status.log (created 0600); report may be NULL. */
int bootstage_log_open(const char *dir, const struct bootstage_report_cfg *report,
		       bootstage_log **out, ip_error *e);
/* Flushes what it can to the report URL, then frees. */
void bootstage_log_free(bootstage_log *l);
/* Append one event {"seq", "time", "host", "boot_id", "phase", "step",
 * "level", "message", "progress"} (seq: one more than the last in the
 * file; progress < 0: null), durably, then report every unsent event.
 * A report failure does not fail the call: the event stays spooled. */
int bootstage_log_event(bootstage_log *l, const char *phase, const char *step,
			enum bootstage_level level, double progress, ip_error *e,
			const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* Send the events of dir/status.log not yet sent (the durable cursor
 * dir/report.cursor), in order, stopping at the first the server does not
 * take.  *sent (may be NULL): how many went out.  -EIO when the server
 * could not be reached; the cursor stays where it was. */
int bootstage_report_flush(const char *dir, const struct bootstage_report_cfg *cfg,
			   unsigned *sent, ip_error *e);
/* The last n events of dir/status.log as a JSON array (torn lines skipped);
 * an empty array when there is no log. */
int bootstage_log_tail(const char *dir, size_t n, json_object **out, ip_error *e);

/* ==== status (bootstage/state.c) ======================================== */

/* The document of `inplace status`: {"version": 1, "phase", "step", "ok",
 * "error", "job", "disk", "events": [last nevents]}; phase "none" when dir
 * holds no state (or a state of another disk than disk, when given). */
int bootstage_status(const char *dir, const char *disk, size_t nevents, json_object **out,
		     ip_error *e);

/* ==== preflight (bootstage/preflight.c) ================================= */

struct bootstage_preflight_result {
	bool image_url;             /* the image is a URL (metadata and signature
	                             * are checked when it is downloaded) */
	uint64_t image_bytes;       /* the image file (a URL: its Content-Length) */
	uint64_t image_part_bytes;  /* the partition size the image needs (0: URL) */
	bool signature_checked;     /* a good signature was seen */
	uint64_t system_bytes;      /* the system partition now */
	uint64_t system_bytes_after;/* … after the plan (the plan may shrink it) */
	uint64_t profile_bytes;     /* migrate_estimate's store_bytes; 0 with store_size */
	uint64_t rollback_bytes;    /* rollback_image = yes: room for the old system's
	                             * image (its used bytes + 1%); 0 with store_size */
	uint64_t store_bytes;       /* what the store needs */
	uint64_t store_free;        /* store = DIR: its free bytes */
	bool planned;               /* store = partition: plan holds the steps */
	struct partctl_plan plan;
	json_object *estimate;      /* migrate_estimate's document, or NULL */
	json_object *checks;        /* [{"step", "message"}] of the checks passed,
	                             * for the status log once the run has one */
};
void bootstage_preflight_result_clear(struct bootstage_preflight_result *r);

/* Every check of the preflight phase, read-only: the image is reachable
 * (file, or URL answering HEAD, trying the mirrors), its signature is good
 * when required, its metadata fits the system partition (as the plan
 * leaves it); the store size is known (store_size, or migrate_estimate of
 * the system partition's root, mounted read-only when it is not mounted,
 * + 10% + the image + the bundle + the rollback image when asked for);
 * room is planned (partctl_plan_compute) or the store directory has it.
 * *res is filled on success and on failure (clear it either way).  Bad input (exit 2) for what the job or
 * the disk gets wrong; failure (1) for an unreachable URL. */
int bootstage_preflight(const bootstage_job *job, struct bootstage_preflight_result *res, ip_error *e);

/* ==== the phase runner (bootstage/pipeline.c) ========================== */

struct bootstage_run_opts {
	const char *state_dir;      /* NULL: bootstage_default_state_dir() */
	bool interactive;           /* run: the notify phase may ask at the
	                             * terminal (stdin, stderr) */
	/* staging: the run's disk as this boot names it (found by its id),
	 * used instead of the name the state recorded; NULL: that name */
	const char *disk_here;
	/* staging: stop where the new system's first boot takes over (phase
	 * restore), as a reboot would; never run its phases here */
	bool staging;
	/* staging: called each time the state is (again) in the store, with
	 * its directory: the records area that held it is then no longer
	 * needed, and deploy may overwrite it */
	void (*state_in_store)(const char *dir, void *arg);
	void *state_in_store_arg;
	/* staging: each event of the story as it is logged (the console
	 * shows the steps as they come; NULL: none) */
	void (*on_event)(const char *msg, void *arg);
	void *on_event_arg;
	/* run, [boot] method grub: the system whose /boot gets the one-shot
	 * entry (NULL: "/"; tests: a mounted tree) */
	const char *boot_root;
	const char *kernel;         /* run: the staging kernel (NULL: the running
	                             * one's /boot/vmlinuz-RELEASE) */
	const char *modules_dir;    /* its modules (NULL: found from the kernel) */
	const char *cmdline;        /* more arguments for the staging kernel (the
	                             * consoles of this boot are passed on anyway) */
};

struct bootstage_run_result {
	enum bootstage_phase phase; /* where the run stands now */
	bool reboot;                /* stopped where a reboot comes ([boot] method none:
	                             * 'inplace resume' plays it) */
	bool already;               /* run: this job is done already; nothing changed */
	bool under_way;             /* run: this job is past preflight: resume it */
	int answer;                 /* run: the notify phase's enum bootstage_answer
	                             * (0, install, unless postponed or declined) */
	long long rerun_at;         /* postponed: when the job is due again */
	bool rearmed;               /* postponed: a timer will run it then */
	bool hooked;                /* run: the staging boot is armed ([boot]
	                             * method grub: the one-shot entry; kexec:
	                             * the kernel loaded): reboot now */
	bool reclaimed;             /* reclaim: a kept storage partition went */
	char state_dir[4096];       /* where the state is now */
};

/* The old OS's part of a run: the state (created, or this job's found), the
 * preflight, then phase prepare, where the first reboot comes.  pre gets
 * the preflight's findings.  A run of this job past preflight is not
 * started again: res says where it stands. */
int bootstage_run(bootstage_job *job, const struct bootstage_run_opts *o,
		  struct bootstage_preflight_result *pre, struct bootstage_run_result *res, ip_error *e);
/* bootstage_status() of the run on disk, wherever its state is now (the
 * store first, as resume looks); disk NULL: the state directory's. */
int bootstage_status_find(const char *disk, const struct bootstage_run_opts *o, size_t nevents,
			  json_object **out, ip_error *e);
/* Play the next boot: find the run's state (the storage partition of disk
 * first, then the state directory) and carry it to the next reboot or to
 * the end.  Every step is idempotent: after kill -9 anywhere, resume again. */
int bootstage_resume(const char *disk, const struct bootstage_run_opts *o, struct bootstage_run_result *res,
		     ip_error *e);
/* `inplace reclaim`: give the storage space back by hand.  A run in phase
 * finish is finished (as resume would); a run done whose storage partition
 * was kept (keep_storage = yes or image) loses it now: wiped, deleted, the
 * system partition grown, its fstab line gone.  Refused (ip_bad, nothing
 * changed) while the store still holds profiles the first boot has not
 * restored.  res->reclaimed: whether a partition went. */
int bootstage_reclaim(const char *disk, const struct bootstage_run_opts *o, struct bootstage_run_result *res,
		      ip_error *e);


#endif
