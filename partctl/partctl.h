/* partctl.h — partition tables, filesystem knowledge and the operations
 * that make room for the storage partition.  The public face of partctl/:
 * the imager and bootstage ask it, never libfdisk or libext2fs directly. */
#ifndef INPLACE_PARTCTL_H
#define INPLACE_PARTCTL_H

#include "common/common.h"

/* ==== options every writing operation takes ============================ */

/* One shape for every partctl operation that writes:
 *   int partctl_X(const char *disk, …, const struct partctl_opts *o,
 *                 struct partctl_X_result *res, ip_error *e);
 * o may be NULL (write, no progress callback).  The CLI is the first caller
 * and the pipeline (bootstage) the second: everything both need (checks,
 * order of writes, resume) lives behind these calls, never in cli/. */
typedef void (*partctl_progress_fn)(void *data, const char *what, uint64_t done,
				    uint64_t total);
struct partctl_opts {
	bool dry_run;                 /* check and plan everything, write nothing */
	partctl_progress_fn progress; /* events for a caller that logs them (the
				       * pipeline's status.log); NULL: none.  The
				       * terminal bar is ip_progress's business */
	void *progress_data;
	const char *journal;          /* moves: journal file on another disk;
				       * NULL: on the disk itself (move.c) */
	bool no_repair;               /* shrink: refuse a filesystem e2fsck would
				       * repair, rather than repair it */
};

/* ==== filesystem knowledge (partctl/fs*.c) ============================== */

/* Room for any type name libblkid reports; its longest, "xfs_external_log",
 * has 16 characters. */
#define PARTCTL_FSTYPE_LEN 32

/* A byte range, relative to the start of the partition. */
typedef struct partctl_extent {
	uint64_t off;
	uint64_t len;
} partctl_extent;

/* The blocks a filesystem uses, as sorted, non-overlapping, merged extents.
 * For a filesystem inplace does not know, one extent covers everything. */
typedef struct partctl_usedmap {
	uint64_t block_size;   /* granularity of the map (fs block or cluster) */
	uint64_t size;         /* bytes the map covers (the partition's size) */
	uint64_t used;         /* sum of the extents' lengths */
	size_t n;              /* number of extents */
	partctl_extent *ext;
	bool exact;            /* false: unknown fs, every block counted as used */
} partctl_usedmap;

struct partctl_fsinfo {
	char type[PARTCTL_FSTYPE_LEN]; /* "ext4", "ntfs", "xfs", "swap", … ; "" when none */
	char label[64];
	char uuid[64];
	uint64_t size;         /* bytes the filesystem spans (0 if unknown) */
	uint64_t block_size;
	uint64_t used;         /* bytes in use (0 if unknown) */
	uint64_t min_size;     /* smallest size inplace shrinks it to (0 if unknown): for
				* ext2/3/4 counted from the filesystem (fs_ext_min.c),
				* for NTFS ntfsresize --info's */
	uint64_t min_estimate; /* the resizer's own estimate (resize2fs -P); for
				* NTFS the same as min_size (0 if unknown) */
	bool resizable;        /* ext2/3/4 and NTFS: inplace can shrink and grow it */
	bool used_known;       /* false: used is unknown (not 0: a damaged or
				* unreadable filesystem, or one inplace does not read) */
	bool min_known;        /* false: min_size is unknown */
	char unknown[192];     /* why a number above is unknown ("" when known) */
};

/* Probe the filesystem in [off, off+size) of d.  No filesystem is not an
 * error (type ""). */
int partctl_fs_probe(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *out,
		     ip_error *e);
/* Refuse (bad input, naming both sizes) a filesystem that claims more bytes
 * than partition n of disk has: what it keeps past the end is lost, and
 * nothing sized from it (an image, a shrink) can be right. */
int partctl_fs_check_fits(const struct partctl_fsinfo *fi, uint64_t part_size, const char *disk,
			  unsigned n, ip_error *e);
/* Refuse (bad input) a filesystem whose block bitmap cannot be trusted:
 * for ext2/3/4, errors recorded in its superblock or any problem e2fsck -fn
 * finds, named in the message.  Other filesystems pass. */
int partctl_fs_check_clean(ip_disk *d, uint64_t off, const struct partctl_fsinfo *fi, const char *disk,
			   unsigned n, ip_error *e);
/* The used-block map of the filesystem in [off, off+size) of d. */
int partctl_fs_usedmap(ip_disk *d, uint64_t off, uint64_t size, partctl_usedmap **out,
		       ip_error *e);
void partctl_usedmap_free(partctl_usedmap *m);

/* ==== partition tables (partctl/table*.c, owner: table) ================= */

typedef struct partctl_table partctl_table;

struct partctl_part {
	unsigned n;            /* partition number, 1-based, as the kernel names it */
	uint64_t start;        /* bytes from the start of the disk */
	uint64_t size;         /* bytes */
	char type[48];         /* "linux", "ntfs", "extended", … or the GUID / hex code */
	char name[72];         /* GPT partition name ("" on MBR) */
	char uuid[40];         /* GPT partition UUID ("" on MBR) */
	bool extended;         /* MBR extended container */
	bool logical;          /* MBR logical partition (n >= 5) */
};

/* Open the table of disk (block device or image file) through libfdisk.
 * write: the disk is checked unmounted and opened for writing.  Every open
 * checks the whole table first (partctl_table_check): a verb that opens it
 * read-only to plan its writes is refused before its first write too. */
int partctl_table_open(const char *disk, bool write, partctl_table **out, ip_error *e);
/* Read-only, for showing a table that may be damaged: the problem is kept
 * (partctl_table_problem) instead of refused. */
int partctl_table_inspect(const char *disk, partctl_table **out, ip_error *e);
/* Bad input (-EUCLEAN) naming the first fault of the entries as they are:
 * an entry outside the usable area, two entries sharing bytes, a logical
 * partition outside its container. */
int partctl_table_check(partctl_table *t, ip_error *e);
/* What partctl_table_check found; "" for a sound table. */
const char *partctl_table_problem(const partctl_table *t);
void partctl_table_free(partctl_table *t);
const char *partctl_table_label(const partctl_table *t); /* "gpt" or "dos" */
unsigned partctl_table_sector_size(const partctl_table *t);
uint64_t partctl_table_disk_size(const partctl_table *t);
/* Alignment unit for new partition starts (1 MiB, as fdisk/sfdisk use). */
uint64_t partctl_table_grain(const partctl_table *t);
/* Bytes [first_usable, end_usable) may hold partitions (after the MBR / GPT
 * header and entries, before the GPT backup). */
uint64_t partctl_table_first_usable(const partctl_table *t);
uint64_t partctl_table_end_usable(const partctl_table *t);
const char *partctl_table_path(const partctl_table *t);
/* Entries the table can hold: 4 primaries on MBR, 128 (usually) on GPT. */
unsigned partctl_table_max_parts(const partctl_table *t);
/* Where the table's own head ends (MBR: the first sector; GPT: after the
 * primary entry array), in bytes: the gap up to the first partition is the
 * disk's, not a partition's. */
uint64_t partctl_table_head_end(const partctl_table *t);

/* A free region where a new partition fits: start aligned to the grain,
 * at least one grain long; inside: MBR, inside the extended container
 * (room for a logical partition, its EBR already left out). */
struct partctl_region {
	uint64_t start, size;
	bool inside;
};
/* The free regions, sorted by start (libfdisk's fdisk_get_freespaces, and
 * the tail of a GPT disk that grew).  *out is malloc'd (free it). */
int partctl_table_free_regions(const partctl_table *t, struct partctl_region **out, size_t *n,
			       ip_error *e);
/* Partitions in use, sorted by number (MBR: primaries and the extended
 * container, then logicals from 5). */
size_t partctl_table_count(const partctl_table *t);
const struct partctl_part *partctl_table_at(const partctl_table *t, size_t i);
/* NULL when there is no partition n. */
const struct partctl_part *partctl_table_find(const partctl_table *t, unsigned n);
/* In-memory changes; nothing reaches the disk before partctl_table_write(). */
int partctl_table_set_range(partctl_table *t, unsigned n, uint64_t start, uint64_t size,
			    ip_error *e);
int partctl_table_add(partctl_table *t, const struct partctl_part *spec, unsigned *n_out,
		      ip_error *e);
int partctl_table_delete(partctl_table *t, unsigned n, ip_error *e);
/* Write the table, fsync, and tell the kernel (ip_kernel_sync_partitions). */
int partctl_table_write(partctl_table *t, ip_error *e);

/* Create a partition (partctl/create.c): every check first (table sound,
 * disk unmounted, range free and aligned, MBR slot, extended/logical
 * rules), then the filesystem on the range, then the table entry, so that
 * a crash leaves free space or a finished partition.  o->dry_run: the
 * checks only; res says what was (or would be) made. */
struct partctl_create_spec {
	uint64_t start, size;  /* bytes; start aligned to the table's grain */
	const char *type;      /* "linux" (NULL), "ntfs", "extended", "logical"
				* (MBR, inside the container), a GPT type GUID
				* or an MBR hex code */
	const char *fs;        /* "ext4", "ntfs", "none" (NULL) */
	const char *label;     /* filesystem label, and the GPT name; may be NULL */
	unsigned n;            /* wanted number; 0: the lowest free one */
};
struct partctl_create_result {
	struct partctl_part part; /* the new entry (part.n: its number) */
	char fs[PARTCTL_FSTYPE_LEN]; /* "ext4", "ntfs" or "none" */
};
int partctl_create(const char *disk, const struct partctl_create_spec *s, const struct partctl_opts *o,
		   struct partctl_create_result *res, ip_error *e);
/* Remove partition n's entry (its data stays).  An extended container
 * that still holds logical partitions is refused.  res: the entry removed
 * (or that would be). */
struct partctl_delete_result {
	struct partctl_part part; /* the entry removed */
};
int partctl_delete(const char *disk, unsigned n, const struct partctl_opts *o,
		   struct partctl_delete_result *res, ip_error *e);

/* Byte range of partition n of the disk at path (-ENOENT: no such partition,
 * bad input).  For callers that only need where a partition lies. */
int partctl_part_range(const char *disk, unsigned n, uint64_t *off, uint64_t *size,
		       ip_error *e);

/* Format partition n of disk with fs ("ext4", "ntfs"; "none" or "" does
 * nothing) and label (may be NULL): mke2fs / mkntfs on a loop device over
 * the partition's range (mke2fs -E offset= on an image file). */
int partctl_format(const char *disk, unsigned n, const char *fs, const char *label, ip_error *e);
/* The same on a byte range that need not be a partition yet: creating
 * verbs format first and write the table entry last, so that a partition
 * exists only once its filesystem does. */
int partctl_format_range(const char *disk, uint64_t off, uint64_t size, const char *fs, const char *label,
			 ip_error *e);

/* ==== making room for the storage partition (partctl/plan*.c, owner: table) */

/* The planner is a pure function over this description of a disk, so that
 * it is tested without disks; partctl_plan_describe() fills it from one. */
struct partctl_plan_part {
	struct partctl_part part;
	struct partctl_fsinfo fs;  /* type "" when none or unknown */
};

struct partctl_plan_disk {
	const char *path;          /* for messages (may be NULL) */
	char label[8];             /* "gpt" or "dos" */
	unsigned sector_size;
	uint64_t size;
	uint64_t grain;            /* alignment of new starts */
	uint64_t first_usable, end_usable;
	unsigned max_parts;        /* GPT: entries in the table (128); MBR: 4 */
	size_t n;
	struct partctl_plan_part *parts;
	/* the free regions as the table knows them (partctl_table_free_regions:
	 * aligned, a logical's boot record left out), sorted by start */
	size_t nregions;
	struct partctl_region *regions;
};

enum partctl_plan_op {
	PARTCTL_OP_SHRINK,          /* partition: fs and entry from `from` to `to` bytes */
	PARTCTL_OP_MOVE,            /* partition: start from `from` to `to` */
	PARTCTL_OP_GROW_EXTENDED,   /* MBR extended container: size from `from` to `to` */
	PARTCTL_OP_CREATE_EXTENDED, /* MBR: new extended container [start, start+size) */
	PARTCTL_OP_CREATE,          /* the new partition [start, start+size) */
};

struct partctl_plan_step {
	enum partctl_plan_op op;
	unsigned partition;        /* number; for creations the expected one */
	uint64_t from, to;
	uint64_t start, size;
	bool logical;              /* CREATE on MBR: a logical partition */
};

#define PARTCTL_PLAN_MAX_STEPS 32
struct partctl_plan {
	uint64_t need;             /* asked for, rounded up to the grain */
	size_t n;
	struct partctl_plan_step steps[PARTCTL_PLAN_MAX_STEPS];
	/* the new partition, as in the last step */
	unsigned partition;
	uint64_t start, size;
	bool logical;
	uint64_t shortfall;        /* no way (-ENOSPC): bytes missing, 0 if unknown */
};

/* Smallest size the planner shrinks a filesystem to: its minimum plus 5%
 * and 64 MiB of headroom, rounded up to the grain; 0 when it cannot shrink. */
uint64_t partctl_plan_keep(const struct partctl_fsinfo *fs, uint64_t grain);
/* The steps that yield a partition of need bytes; bad input, naming the
 * shortfall, when there is no way.  Writes nothing. */
int partctl_plan_compute(const struct partctl_plan_disk *d, uint64_t need, struct partctl_plan *out,
			 ip_error *e);
const char *partctl_plan_op_name(enum partctl_plan_op op);
int partctl_plan_describe(const char *disk, struct partctl_plan_disk **out, ip_error *e);
void partctl_plan_disk_free(struct partctl_plan_disk *d);
struct partctl_move_opts;
/* Carry the plan out, step by step through partctl_shrink, partctl_move
 * and the table (each journaled by its owner), then format the new
 * partition with fs and label.  o: progress per step (may be NULL); mo:
 * where moves keep their journal (may be NULL: the gap).  *done: steps
 * carried out (on failure, those before the one that failed); *n_out: the
 * new partition's number. */
int partctl_plan_execute(const char *disk, const struct partctl_plan *p, const char *fs,
			 const char *label, const struct partctl_opts *o, const struct partctl_move_opts *mo,
			 size_t *done, unsigned *n_out, ip_error *e);

/* The bytes of the metadata undo a shrink of the ext filesystem at off of
 * d writes into the state directory (fs_ext_undo.c): what a state
 * directory must have room for before partctl_shrink. */
int partctl_ext_meta_bytes(ip_disk *d, uint64_t off, uint64_t *bytes, ip_error *e);

/* ==== the storage partition (partctl/storage.c) ========================= */

/* System caches on a system root of the disk mounted read-write in the
 * running OS (package caches, the systemd journal above 64 MiB, /var/tmp,
 * core dumps): what a short plan could still free. */
struct partctl_cache {
	unsigned partition;
	char what[48];             /* "apt package cache", "/var/tmp", … */
	char mnt[256];             /* where the partition is mounted */
	uint64_t bytes;            /* allocated bytes of its files */
	size_t files;
};
struct partctl_caches {
	size_t n;
	struct partctl_cache v[16];
	uint64_t total;
	bool cleaned;              /* deleted (partctl_caches_clean, not a dry run) */
};
int partctl_caches_find(const char *disk, struct partctl_caches *out, ip_error *e);
/* Delete them through the mounted filesystem (o->dry_run: only list) and
 * flush it, so that planning again sees the room. */
int partctl_caches_clean(const char *disk, const struct partctl_opts *o, struct partctl_caches *out, ip_error *e);

struct partctl_storage_result {
	unsigned partition;        /* the storage partition (planned, on a dry run) */
	uint64_t start, size;      /* bytes */
	bool logical;              /* MBR: a logical partition */
	bool existing;             /* an earlier run made it: nothing was done */
	bool resumed;              /* an interrupted move or shrink was finished first */
	bool dry_run;              /* nothing was written */
	struct partctl_plan plan;  /* the steps (to do on a dry run); on -ENOSPC
				    * plan.shortfall says how much is missing */
	size_t done;               /* steps carried out */
	char journal[512];         /* where moves keep their journal ("" if none) */
	uint64_t journal_off;      /* on the disk in free space no step touches,
				    * when the gap had no room (0: not so) */
	char warning[512];         /* part plan: what make-storage would refuse
				    * (a journal place that cannot be used) */
	struct partctl_caches caches; /* on -ENOSPC: system caches that could go */
};
/* The steps that make a partition of need bytes on disk, and whether
 * everything they need is there (res->warning when not).  Writes nothing. */
int partctl_plan_storage(const char *disk, uint64_t need, const struct partctl_opts *o,
			 struct partctl_storage_result *res, ip_error *e);
/* Make (or find) the ext4 storage partition labelled label of at least
 * need bytes: finish an interrupted operation first, reuse a partition an
 * earlier run made, plan, check every step's needs (journal places
 * included) before the first write, carry the plan out and format.
 * Refusals are status 2 with the disk unchanged; a failure after steps
 * were done is status 1 naming them and how to resume.  o->dry_run:
 * plan and check only; o->journal: journal file for moves. */
int partctl_make_storage(const char *disk, uint64_t need, const char *label, const struct partctl_opts *o,
			 struct partctl_storage_result *res, ip_error *e);

/* ==== resizing through the filesystem's own tool (partctl/resize.c,
 *      owner: resize) ===================================================== */

/* What a shrink or grow would do, computed without writing (--dry-run, and
 * the first step of partctl_shrink/partctl_grow): the size is aligned so
 * that the partition ends on the table's grain, checked against the
 * filesystem's minimum (shrink) or the free space after it (grow). */
struct partctl_resize_plan {
	unsigned n;
	char fstype[PARTCTL_FSTYPE_LEN];
	uint64_t start;        /* bytes from the start of the disk */
	uint64_t old_size;     /* the partition now */
	uint64_t new_size;     /* the partition afterwards */
	uint64_t fs_min;       /* the filesystem's minimum (0 if unknown) */
	uint64_t max_size;     /* grow: the largest the partition can become */
	bool nothing;          /* already that size: nothing to do */
	unsigned repairs;      /* shrink: problems e2fsck repaired first … */
	char repaired[512];    /* … and what they were, "; "-joined ("" none) */
};
int partctl_shrink_plan(const char *disk, unsigned n, uint64_t new_size,
			struct partctl_resize_plan *out, ip_error *e);
int partctl_grow_plan(const char *disk, unsigned n, uint64_t new_size,
		      struct partctl_resize_plan *out, ip_error *e);

/* Shrink: fs check, fs resize (resize2fs -f / ntfsresize), then the table;
 * never leaves a filesystem larger than its partition.  Below the fs
 * minimum: bad input naming the minimum.  resize2fs failing is rolled back
 * (exit 1 naming resize2fs -P's size).  res (may be NULL): what was done,
 * or with o->dry_run what would be done. */
int partctl_part_shrink(const char *disk, unsigned n, uint64_t new_size, const struct partctl_opts *o,
			struct partctl_resize_plan *res, ip_error *e);
/* Grow: the table first, then the fs.  new_size 0: as far as free space
 * allows.  A partition mounted read-write from a block device (ext2/3/4)
 * grows online: its start stays, the kernel is told through BLKPG and
 * resize2fs grows the mounted filesystem (no e2fsck then). */
int partctl_part_grow(const char *disk, unsigned n, uint64_t new_size, const struct partctl_opts *o,
		      struct partctl_resize_plan *res, ip_error *e);
/* Delete partition gone (after n, beside it, nothing using it) and grow n
 * as far as the space then allows, in one table write: how reclaim gives
 * the store's space back to the root it follows, the root mounted (online,
 * as partctl_part_grow) or not.  Every other change of a partition in use
 * stays refused (partctl/table.c). */
int partctl_part_grow_over(const char *disk, unsigned n, unsigned gone, const struct partctl_opts *o,
			   struct partctl_resize_plan *res, ip_error *e);
/* Grow the filesystem of partition n to fill the partition (after an image
 * was written to a larger one): one check (e2fsck -f -y / ntfsfix -n), then
 * resize2fs / ntfsresize.  res: old_size and new_size are the filesystem's
 * before and after; nothing when it already fills the partition. */
int partctl_fs_grow(const char *disk, unsigned n, const struct partctl_opts *o,
		    struct partctl_resize_plan *res, ip_error *e);
/* The old shapes, for plan_exec.c until it calls partctl_part_shrink. */
int partctl_shrink(const char *disk, unsigned n, uint64_t new_size, ip_error *e);
int partctl_grow(const char *disk, unsigned n, uint64_t new_size, ip_error *e);

/* ==== crash-safe move (partctl/move.c, owner: move) ===================== */

/* Move partition n so that it starts at new_start (bytes), copying only the
 * blocks its filesystem uses.  Journaled: after kill -9 or a power cut,
 * partctl_resume() finishes it. */
int partctl_move(const char *disk, unsigned n, uint64_t new_start, ip_error *e);
/* Finish an interrupted move or shrink; 0 and *did = false when there was
 * nothing to finish. */
int partctl_resume(const char *disk, bool *did, ip_error *e);

/* The same with options (the CLI's): journal elsewhere, dry run, and what
 * was (or would be) done. */
struct partctl_move_opts {
	const char *journal;   /* journal file on another disk; NULL: in the tail
				* of the gap below 1 MiB (see partctl/move.c) */
	uint64_t journal_off;  /* else, when not 0: on the disk at this byte, 128 KiB
				* of a free region no step of the plan touches
				* (partctl_make_storage picks it when the gap
				* has no room) */
	bool dry_run;          /* check and plan, write nothing */
};
struct partctl_move_info {
	unsigned n;            /* partition moved */
	uint64_t from, to;     /* old and new start, bytes */
	uint64_t size;         /* partition size, bytes */
	uint64_t used;         /* bytes to copy (resume: bytes left, all counted) */
	uint64_t batch;        /* bytes per durable step */
	bool resized;          /* resume: an interrupted shrink was finished */
	char journal[512];     /* where the journal lives */
};
/* Can a move on disk keep its journal where it would (file, or NULL: the
 * tail of the gap below 1 MiB)?  Reads only; bad input naming the way out
 * when not.  *where: the place, for messages.  For a caller that must know
 * before its first write (partctl_make_storage). */
int partctl_move_journal_check(const char *disk, const char *file, char *where, size_t wlen, ip_error *e);
int partctl_move_ex(const char *disk, unsigned n, uint64_t new_start,
		    const struct partctl_move_opts *o, struct partctl_move_info *info, ip_error *e);
int partctl_resume_ex(const char *disk, const struct partctl_move_opts *o, bool *did,
		      struct partctl_move_info *info, ip_error *e);

#endif
