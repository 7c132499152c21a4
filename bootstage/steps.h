/* steps.h — the steps of the pipeline, each one idempotent: run twice, or
 * after a kill -9 anywhere inside it, it finishes the same work and changes
 * nothing more.  The phase runner decides which step comes next from the
 * state; a step only needs its parameters and what it finds on disk. */
#ifndef INPLACE_BOOTSTAGE_STEPS_H
#define INPLACE_BOOTSTAGE_STEPS_H

#include "common/common.h"
#include "migrate/migrate.h"

#define BS_STORE_LABEL "INPLACE-STORE"

enum bs_keep { BS_KEEP_NO, BS_KEEP_YES, BS_KEEP_IMAGE };

/* What the steps act on (from the job file). */
struct bs_params {
	const char *disk;            /* the disk being reimaged */
	unsigned sys_part;           /* its system partition */
	const char *image;           /* the new OS image: a path or a URL */
	const char *const *mirrors;  /* more URLs of the image (NULL-terminated) */
	const char *pubkey;          /* minisign public key; NULL: unsigned */
	const char *ca_cert;         /* https trust, NULL: the system's */
	const migrate_spec *spec;    /* which profiles to save */
	uint64_t store_size;         /* bytes for the storage partition */
	const char *store_dir;       /* store = DIR on another filesystem; NULL: a partition */
	enum bs_keep keep;           /* keep_storage */
	bool rollback_image;         /* capture the old system partition first */
	bool boot_required;          /* a real reboot follows ([boot] method other than
	                              * none): the new root must be made to boot; with
	                              * none, only an image that can boot is fixed */
	const char *work_dir;        /* mount points live below (e.g. /run/inplace) */
	/* the storage partition make-storage made, from the state (0: unknown):
	 * reclaim deletes exactly this one, even once its filesystem is wiped */
	unsigned store_part;
	uint64_t store_off, store_size_made;
};

/* Where the storage lives once prepare made it: a mounted partition, or
 * the job's directory.  store_root is the directory inside: image/,
 * profile/, state. */
struct bs_store {
	unsigned part;               /* 0 when store = DIR */
	struct ip_mount m;
	char root[4096];             /* the store's directory */
};

/* Results that steps hand to the log (a JSON object each; caller owns). */
typedef json_object *bs_result;

/* prepare (staging): make the storage partition (resuming an interrupted
 * shrink or move first; an existing one labelled BS_STORE_LABEL is reused). */
int bs_step_make_storage(const struct bs_params *p, bs_result *res, ip_error *e);
/* Mount the store read-write (or use store_dir); creates the layout. */
int bs_store_open(const struct bs_params *p, struct bs_store *s, ip_error *e);
int bs_store_close(struct bs_store *s, ip_error *e);
/* Copy (or download) the image and its signature into the store and verify
 * them there: deploy must not depend on the old root, which it overwrites. */
int bs_step_stage_image(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
/* Save the profiles of the system partition, mounted read-only, into the
 * store; a complete profile that verifies is kept as it is. */
int bs_step_save(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
int bs_step_verify(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
/* Capture the old system partition into the store (rollback_image = yes):
 * what a rollback writes back.  Kept when a complete capture is there. */
int bs_step_rollback_image(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
/* Write the rollback image back over the system partition: the old system
 * boots again.  -ENOENT when the store has none. */
int bs_rollback(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
/* deploy (staging): the image onto the system partition, grown to fill it. */
int bs_step_deploy(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
/* The new root: fstab names its root by UUID, the first-boot unit is installed. */
int bs_step_configure(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
/* restore (new OS, first boot): the profiles into the new root. */
int bs_step_restore(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);
/* finish: give the space back per keep_storage, remove the hooks. */
int bs_step_reclaim(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e);

/* The storage partition on disk (by label), 0 when there is none. */
int bs_find_store(const char *disk, unsigned *part, uint64_t *off, uint64_t *size, ip_error *e);

#endif
