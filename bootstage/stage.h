/* stage.h — the RAM-only staging environment: the initramfs `stage build`
 * writes (bundle, job, state, the kernel modules the disk needs, our own
 * /init), the init that runs in it as PID 1, and the durable records area
 * that holds the state while the old root is shrunk.  Every function
 * returns 0 or a negative errno and fills e; none prints. */
#ifndef INPLACE_BOOTSTAGE_STAGE_H
#define INPLACE_BOOTSTAGE_STAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"

/* ==== the records area (bootstage/records.c) ============================ */

/* A small journaled ext4 image in a contiguous file on the old root, wholly below
 * the end the shrink gives that filesystem: staging mounts it through a
 * loop device over the raw disk at off (never mounting the old root
 * read-write), so the state and partctl's shrink journal and undo survive
 * a power cut before the store exists.  The old OS can loop-mount the
 * same file (path) to read what happened. */
struct bs_records {
	uint64_t off;              /* byte offset of the image on the disk */
	uint64_t size;             /* bytes */
	char uuid[40];             /* its filesystem's UUID: staging mounts
	                            * it only when the disk still shows this */
	char path[512];            /* the file, relative to the old root */
};

/* Make the records area on partition sys_part of disk (mounted read-write
 * where it is, else mounted here for the time of the call), seeded with
 * the files of state_dir, and check it stays put through the shrink that
 * makes a store of store_bytes: one extent, below the planned new end, in
 * a partition the plan does not move.  Made again when it exists. */
int bs_records_create(const char *disk, unsigned sys_part, const char *state_dir, uint64_t store_bytes,
		      struct bs_records *rec, ip_error *e);
/* Mount the area of disk at dir (read-write): -ENOENT (no error set) when
 * the disk no longer shows its filesystem there.  dev gets the loop
 * device (for bs_records_umount). */
int bs_records_mount(const char *disk, const struct bs_records *rec, const char *dir, char *dev, size_t devlen,
		     ip_error *e);
/* {"path", "offset", "size", "uuid"}; NULL for rec NULL. */
json_object *bs_records_json(const struct bs_records *rec);
/* sync, unmount, detach; a no-op when dir is not mounted. */
int bs_records_umount(const char *dir, const char *dev, ip_error *e);
/* The records file's name, in the old root's /var/lib/inplace (the state
 * directory of an old OS that kept the default). */
#define BS_RECORDS_NAME "staging-records.img"
/* Copy state.json and status.log out of the records file img (read-only,
 * libext2fs) into dir, for status on the old OS after a staging boot.
 * -ENOENT (no error set) without the file; *unclean when its journal
 * holds changes not yet replayed (a cut staging boot). */
int bs_records_read(const char *img, const char *dir, bool *unclean, ip_error *e);

/* ==== the image on the old root (bootstage/records.c) =================== */

/* The old OS puts the job's image (downloaded, or copied from its path)
 * and its signature in this directory of the old root, verified, before
 * the first reboot: the staging env has no network, and its RAM need not
 * hold the image.  The shrink keeps the file (resize2fs moves its blocks,
 * the filesystem still reads it); staging copies it into the store and
 * verifies it there before deploy overwrites the old root.  The manifest,
 * written last, names the source it came from ({"source", "bytes",
 * "signed", "source_mtime"}): a copy without it is not used. */
#define BS_ROOT_IMAGE_DIR "var/lib/inplace/staged-image"
#define BS_ROOT_IMAGE_FILE "os.img"
#define BS_ROOT_IMAGE_MANIFEST "image.json"

struct bs_root_image {
	char path[512];            /* the image, relative to the old root */
	uint64_t bytes;
	bool signature;            /* its signature came with it and was verified */
	bool kept;                 /* a complete copy of this source was there */
};

/* Put image (a path or an http(s) URL with its mirrors; the imager's
 * download with its limits) on partition sys_part of disk (mounted
 * read-write where it is, else here for the time of the call) and verify
 * its signature with key (NULL: unsigned).  A complete copy of the same
 * source is kept (checked again). */
int bs_root_image_put(const char *disk, unsigned sys_part, const char *image, const char *const *mirrors,
		      const char *key, struct bs_root_image *out, ip_error *e);
json_object *bs_root_image_json(const struct bs_root_image *ri);

/* ==== the initramfs (bootstage/stage.c) ================================= */

struct bs_stage_opts {
	const char *kernel;        /* NULL: /boot/vmlinuz-$(uname -r) */
	const char *modules_dir;   /* NULL: /lib/modules/<version> of the tree
	                            * the kernel comes from */
	const char *state_dir;     /* NULL: bootstage_default_state_dir() */
	const char *job;           /* a job file: the state must be its run (NULL:
	                            * whichever job the state holds) */
	const char *disk;          /* NULL: the disk the state names */
	const char *const *add_modules; /* more modules (names or aliases), NULL-
	                            * terminated, may be NULL */
	unsigned disk_wait_s;      /* how long init waits for the disk (0: 60) */
	bool no_records;           /* keep the state in RAM only (tests) */
	/* media and netboot (bootstage/media.c): no old OS ran the job, so
	 * state_dir holds the job alone, the drivers are the usual ones of
	 * any x86_64 machine, no records area is made, and this object goes
	 * into /stage.json as "media" for init ({"disk", "system_partition",
	 * "wait_s"}: how to find the disk).  NULL: a staging boot after
	 * 'inplace run'. */
	json_object *media;
	bool no_image;             /* the job's image and signature travel beside
	                            * the initramfs (on the boot media), not in it */
};

struct bs_stage_result {
	char kernel[4096];         /* the kernel the initramfs is for */
	char version[128];         /* its release ("6.1.0-28-amd64") */
	char modules_dir[4096];
	json_object *modules;      /* ["virtio_pci", …]: the load order */
	json_object *disk_id;      /* {"ptuuid", "pttype", "size"}: how init finds the disk */
	bool records;              /* a records area was made (rec) */
	struct bs_records rec;
	struct bs_root_image image; /* where the old OS put the image */
	uint64_t bytes;            /* the compressed initramfs */
};
void bs_stage_result_clear(struct bs_stage_result *r);

/* Write the staging initramfs to out (cpio newc, zstd, written durably):
 * the bundle (bs_bundle_write), /init, the run's state and job (the state
 * must wait in phase prepare), the job's key and CA, the disk's modules
 * in load order and /stage.json saying what init needs.  First puts the
 * image on the old root (bs_root_image_put; res->image), then makes the
 * records area unless o->no_records. */
int bs_stage_build(const char *out, const struct bs_stage_opts *o, struct bs_stage_result *res, ip_error *e);

/* The modules of the disk (its drivers up the sysfs parents; an image
 * file: the usual disk drivers) and of the filesystems the staging env
 * mounts (disk NULL: a machine not known yet, the usual disk drivers),
 * plus extra, with every dependency and pre-softdep, dependencies
 * first; built-in ones left out.  *out: [{"name", "path"}] with path
 * relative to modules_dir. */
int bs_stage_modules(const char *modules_dir, const char *disk, const char *const *extra, json_object **out,
		     ip_error *e);

/* ==== the init (bootstage/stage_init.c) ================================= */

/* Lines for the console as init goes (the CLI prints them). */
typedef void (*bs_say_fn)(const char *line, void *arg);

/* What /init does as PID 1: mount /proc, /sys, /dev, /run; load the
 * modules; wait (bounded) for the disk by the id recorded at build time;
 * mount the records area; resume the run; record how it ended.  The
 * caller syncs and reboots whatever this returns. */
int bs_stage_init(const char *root, bs_say_fn say, void *arg, ip_error *e);

#endif
