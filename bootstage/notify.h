/* notify.h — the notify phase: tell logged-in users that the machine will be
 * reimaged, and ask the admin at the terminal: install now, postpone, decline.
 * (To be folded into bootstage/bootstage.h.) */
#ifndef INPLACE_BOOTSTAGE_NOTIFY_H
#define INPLACE_BOOTSTAGE_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "common/common.h"

enum bootstage_answer {
	BOOTSTAGE_INSTALL = 0,  /* go on (also: no answer by the end of the countdown) */
	BOOTSTAGE_POSTPONE,     /* run again later; result.postpone_s says when */
	BOOTSTAGE_DECLINE,      /* the admin refused; the job stops */
};
/* "install", "postpone", "decline": the words of status.log and --json. */
const char *bootstage_answer_name(enum bootstage_answer a);

/* The postpone lengths the prompt offers, keys '1', '2', '3'. */
#define BOOTSTAGE_POSTPONE_CHOICES { 3600u, 4u * 3600u, 86400u }

struct bootstage_notify_opts {
	const char *message;         /* told to users; NULL: a default sentence */
	unsigned countdown_s;        /* time given before install; 0: none */
	bool allow_postpone;
	unsigned max_postpone_s;     /* total postponement the job allows */
	unsigned postponed_so_far_s; /* already used by earlier postpones */
	bool allow_decline;
	/* Ask at a terminal: keys are read from prompt_in and the countdown is
	 * drawn on prompt_out (the caller checks both are terminals: stdin and
	 * stderr for the CLI).  The only output this library makes. */
	bool interactive;
	int prompt_in, prompt_out;
	/* Postpone re-arms the job: a timer (inplace-postpone.timer and
	 * .service, unit files in unit_dir, enabled, Persistent=true so that
	 * a reboot does not lose it) runs this argv ("inplace", "run", JOB) at
	 * the due time.  NULL, or systemd not running as PID 1: no timer, the
	 * caller gets result.rerun_at to act on. */
	const char *const *rearm_argv;
	const char *unit_dir;        /* NULL: $INPLACE_UNIT_DIR or /etc/systemd/system */
	bool quiet_users;            /* tell nobody (tests of the prompt alone) */
	/* Find the sessions (counted as found), tell nobody, ask nothing, wait
	 * for nothing, re-arm nothing: the answer is install. */
	bool dry_run;
	/* Where sessions are found; NULL: $INPLACE_UTMP or the system's utmp,
	 * $INPLACE_RUN_USER_DIR or /run/user (the variables exist for tests). */
	const char *utmp_path;
	const char *run_user_dir;
};

struct bootstage_notify_result {
	enum bootstage_answer answer;
	unsigned postpone_s;       /* POSTPONE: for how long */
	time_t rerun_at;           /* POSTPONE: when the job is due again (wall clock) */
	bool rearmed;              /* POSTPONE: a systemd timer will re-run it */
	char rearm_unit[64];       /* its name, when rearmed */
	bool prompted;             /* the admin was asked at a terminal */
	bool answered;             /* false: no key decided, the countdown ran out */
	unsigned ttys_found, ttys_told;     /* login terminals in utmp / written to */
	unsigned buses_found, buses_told;   /* user session buses / notifications accepted */
};

/* Tell users, ask (or wait out the countdown), and re-arm on postpone.
 * Failing to reach a user is no error (counted in the result); an
 * interrupted prompt (SIGINT, SIGTERM, SIGHUP) restores the terminal and
 * returns -EINTR; a failed re-arm is an error (the postpone would be lost). */
int bootstage_notify(const struct bootstage_notify_opts *o, struct bootstage_notify_result *res,
		     ip_error *e);

/* Remove the postpone timer (disable, stop without waiting, delete its unit
 * files): for the job's end, and before a run that was not started by it.
 * Nothing to do is no error.  Only o->unit_dir is read; o may be NULL. */
int bootstage_notify_disarm(const struct bootstage_notify_opts *o, ip_error *e);

/* Tell every login terminal (utmp) and every user session bus; counts go into
 * res.  Used by bootstage_notify before and after the prompt. */
void bootstage_notify_users(const struct bootstage_notify_opts *o, const char *text,
			    struct bootstage_notify_result *res);

/* "90", "90s", "15m", "4h", "1d": seconds.  Bad input (status 2) otherwise. */
int bootstage_parse_duration(const char *s, unsigned *out, ip_error *e);
/* "1d 2h", "4h", "2h 30m", "45s"; returns buf. */
char *bootstage_format_duration(unsigned s, char *buf, size_t len);

/* The prompt as a state machine, without a terminal: the terminal loop of
 * bootstage_notify feeds it keys and seconds and draws its line; tests and
 * other front ends can drive it the same way. */
enum bootstage_prompt_mode { BOOTSTAGE_PROMPT_MAIN, BOOTSTAGE_PROMPT_POSTPONE };
struct bootstage_prompt {
	const struct bootstage_notify_opts *o;
	unsigned left_s;                 /* countdown left */
	enum bootstage_prompt_mode mode;
	bool done;
	bool answered;                   /* done by a key, not by the countdown */
	enum bootstage_answer answer;
	unsigned postpone_s;
	char notice[256];                /* a refusal to show once; "" when none */
};
void bootstage_prompt_init(struct bootstage_prompt *p, const struct bootstage_notify_opts *o);
/* One key ('i', 'p', 'd', '1'…'3', 'c', Esc).  Sets done, or a notice. */
void bootstage_prompt_key(struct bootstage_prompt *p, int key);
/* The countdown now has left_s seconds; 0 ends it with INSTALL. */
void bootstage_prompt_tick(struct bootstage_prompt *p, unsigned left_s);
/* The current prompt line, without newline. */
void bootstage_prompt_line(const struct bootstage_prompt *p, char *buf, size_t len);
/* Postponement still allowed in total (0 when postponing is not allowed). */
unsigned bootstage_postpone_left(const struct bootstage_notify_opts *o);

#endif
