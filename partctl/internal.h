/* internal.h — partctl's private header: what its .c files share and no
 * other module may call.  One section per owner. */
#ifndef INPLACE_PARTCTL_INTERNAL_H
#define INPLACE_PARTCTL_INTERNAL_H

#include <limits.h>
#include <string.h>

#include "partctl/partctl.h"

/* ==== filesystem knowledge and resize (owner: resize) =================== */

/* Growing list of extents; adjacent or overlapping ranges are merged, so
 * extents must be added in ascending order of offset. */
struct partctl_map_builder {
	partctl_usedmap *m;
	size_t cap;
};
int partctl_map_begin(struct partctl_map_builder *b, uint64_t size, uint64_t block_size);
int partctl_map_add(struct partctl_map_builder *b, uint64_t off, uint64_t len);
/* Hand the finished map over (computes used); frees on error. */
partctl_usedmap *partctl_map_end(struct partctl_map_builder *b);
void partctl_map_abort(struct partctl_map_builder *b);

/* ext2/3/4 through libext2fs (fs_ext.c). */
struct struct_ext2_filsys;   /* ext2_filsys, without ext2fs.h here */
/* Open the filesystem at byte off of d (the unix I/O manager's offset). */
int partctl_ext_open(ip_disk *d, uint64_t off, struct struct_ext2_filsys **fs, ip_error *e);
/* The same, refusing a journal that needs replay (the bitmaps would lie),
 * with the block bitmap read. */
int partctl_ext_open_bitmaps(ip_disk *d, uint64_t off, struct struct_ext2_filsys **fs, ip_error *e);
/* Whether the superblock records errors (its state or error count): why
 * says so, "" when it does not. */
int partctl_ext_sb_errors(ip_disk *d, uint64_t off, char *why, size_t len, ip_error *e);
int partctl_ext_info(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *fi,
		     ip_error *e);
int partctl_ext_usedmap(ip_disk *d, uint64_t off, uint64_t size, partctl_usedmap **out,
			ip_error *e);
/* An undo of the metadata of the ext filesystem at off (fs_ext_undo.c),
 * for the shrinks resize2fs -z cannot undo: save writes path whole (temp,
 * fsync, rename) and says how many bytes it holds; restore checks it whole,
 * then writes every block back and flushes. */
int partctl_ext_meta_save(ip_disk *d, uint64_t off, const char *path, uint64_t *bytes, ip_error *e);
int partctl_ext_meta_restore(ip_disk *d, uint64_t off, const char *path, ip_error *e);
/* The smallest size in bytes the ext filesystem at off can be shrunk to,
 * counted from the filesystem (fs_ext_min.c).  floor (may be NULL): the
 * same without the margin for extent-tree growth, below which resize2fs
 * cannot succeed at all. */
int partctl_ext_min(ip_disk *d, uint64_t off, uint64_t *min, uint64_t *floor, ip_error *e);
/* The count itself, on a filesystem's numbers (unit-tested). */
struct partctl_ext_geom {
	uint64_t block_size;
	uint64_t first_data_block;
	uint64_t blocks_per_group;
	uint64_t inodes_per_group;
	uint64_t used_inodes;
	uint64_t data_blocks;     /* in use and not group metadata (files, dirs, journal) */
	uint64_t groups;          /* groups now */
	uint64_t blocks_now;      /* blocks now */
	const uint64_t *meta;     /* meta[g]: blocks of group g's metadata */
	const uint64_t *tables;   /* tables[g]: its bitmaps and inode table … */
	const uint64_t *home;     /* home[g]: … lie in this group (flex_bg) */
	bool no_margin;           /* the floor: no margin for extent growth */
};
uint64_t partctl_ext_min_blocks(const struct partctl_ext_geom *g);
/* `resize2fs -P`: its estimate of the smallest size in bytes. */
int partctl_ext_min_size(ip_disk *d, uint64_t off, uint64_t block_size, uint64_t *min,
			 ip_error *e);

/* NTFS through libntfs-3g (fs_ntfs.c). */
int partctl_ntfs_info(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *fi,
		      ip_error *e);
int partctl_ntfs_usedmap(ip_disk *d, uint64_t off, uint64_t size, partctl_usedmap **out,
			 ip_error *e);
/* `ntfsresize --info` on a read-only loop device: the smallest size. */
int partctl_ntfs_min_size(ip_disk *d, uint64_t off, uint64_t size, uint64_t *min,
			  ip_error *e);

/* ---- resize (resize.c: plans, table step, grow; shrink.c: the journaled
 *      shrink and its resume; fstool.c: the tools) ---- */

static inline bool partctl_is_ext(const char *t)
{
	return !strcmp(t, "ext2") || !strcmp(t, "ext3") || !strcmp(t, "ext4");
}

static inline uint64_t partctl_round_up(uint64_t v, uint64_t g)
{
	return (v + g - 1) / g * g;
}

static inline uint64_t partctl_round_down(uint64_t v, uint64_t g)
{
	return v / g * g;
}

/* INPLACE_TEST_NO_MIN=1 (tests only) lets a shrink below the minimum
 * reach resize2fs, so that its failure and the roll back are tested. */
bool partctl_test_no_min(void);
/* Tell a caller that logs events (o->progress) how far an operation got. */
void partctl_report(const struct partctl_opts *o, const char *what, uint64_t done, uint64_t total);
/* partctl_shrink_plan, also handing back what the probe found. */
int partctl_shrink_plan_fs(const char *disk, unsigned n, uint64_t new_size,
			   struct partctl_resize_plan *out, struct partctl_fsinfo *fi, ip_error *e);
/* Write partition n's new range into the table. */
int partctl_resize_table(const char *disk, unsigned n, uint64_t start, uint64_t size, ip_error *e);

/* Run a tool and hand back its exit code; fails only when it could not
 * run or died of a signal.  err_out (may be NULL): its stderr. */
int partctl_tool_run(const char *const argv[], int *code, char **err_out, ip_error *e);
/* The last line of a tool's output; the line starting with prefix (its
 * error), else the last one. */
void partctl_tool_last_line(const char *s, char *buf, size_t len);
void partctl_tool_line(const char *s, const char *prefix, char *buf, size_t len);
/* The device the tools work on: the kernel's partition node of a block
 * device when it has the right size, else a loop device over the range. */
struct partctl_tooldev {
	char path[64];
	bool loop;
};
int partctl_tooldev_get(const char *disk, unsigned n, uint64_t start, uint64_t size,
			struct partctl_tooldev *td, ip_error *e);
/* Does the block device node have exactly size bytes (BLKGETSIZE64)? */
bool partctl_node_has_size(const char *node, uint64_t size);
void partctl_tooldev_put(struct partctl_tooldev *td);
/* fsync what the tools wrote through the page cache (and under
 * INPLACE_IOLOG record the range as external writes). */
int partctl_tool_flush(const char *disk, uint64_t off, uint64_t len, ip_error *e);
/* The one check policy: e2fsck -f -y (exit 0-3 is clean or repaired),
 * ntfsfix -n (exit 0).  disk and n name the partition in messages. */
int partctl_ext_fsck(const char *dev, const char *disk, unsigned n, ip_error *e);
/* The same, saying what e2fsck repaired: found (flen bytes, may be NULL)
 * the problems it stated, "; "-joined, *count (may be NULL) how many.
 * !may_repair: e2fsck -fn, and any problem is a refusal naming it. */
int partctl_ext_fsck_repair(const char *dev, const char *disk, unsigned n, bool may_repair, char *found,
			    size_t flen, unsigned *count, ip_error *e);
/* e2fsck -f -y (repair) or -f -n on dev: *code its exit status, found and
 * *count its findings, errline the last line of its stderr. */
int partctl_e2fsck(const char *dev, bool repair, int *code, char *found, size_t flen, unsigned *count,
		   char *errline, size_t elen, ip_error *e);
/* The problems in e2fsck's output (the statement before each "Fix? yes"
 * style prompt), "; "-joined into buf; returns how many prompts. */
unsigned partctl_fsck_findings(const char *out, char *buf, size_t len);
int partctl_ntfs_check(const char *dev, const char *disk, unsigned n, ip_error *e);
/* resize2fs -P on dev: its estimate of the minimum, in bytes. */
int partctl_ext_estimate(const char *dev, uint64_t bs, uint64_t *min, ip_error *e);
/* resize2fs -z's undo file: did it get as far as its header; roll back. */
bool partctl_e2undo_has_header(const char *undo);
int partctl_e2undo_run(const char *undo, const char *dev, ip_error *e);

/* One record: what the shrink is and how far it got. */
struct shrink_rec {
	char disk[PATH_MAX];
	unsigned n;
	uint64_t start, old_size, new_size, block_size;
	char fs[PARTCTL_FSTYPE_LEN];
	char phase[24];
	char undo[PATH_MAX];
	char meta[PATH_MAX];   /* the metadata undo of an ext fs of 1 KiB blocks */
	char dev[64];          /* the device the resizer runs on */
};
/* Parse a shrink record (its journal payload, NUL-terminated, changed in
 * place); jpath names the journal in messages.  The record's own text
 * only: the fuzz target runs it (tests/fuzz/fuzz_shrink_rec.c). */
int partctl_shrink_rec_parse(char *buf, const char *jpath, struct shrink_rec *rec, ip_error *e);

/* Finish an interrupted `part shrink` recorded in the state directory:
 * roll an interrupted resize2fs back with e2undo and redo the shrink, or
 * finish the table step when the filesystem was already shrunk.  0 and
 * *did = false when there is no shrink to finish for this disk.
 * partctl_resume() calls this first. */
int partctl_resize_resume(const char *disk, bool *did, ip_error *e);

/* The state directory (common/state.c): out = DIR/KIND<disk path>-<disk
 * size>.EXT, so that another disk that later takes the same name is not
 * mistaken for this one. */
int partctl_state_file(const char *disk, const char *kind, const char *ext, char *out, size_t n,
		       ip_error *e);
int partctl_state_mkdir(ip_error *e);

/* ==== partition tables (owner: table; table.c and geometry.c) =========== */

struct fdisk_context;
struct partctl_table {
	struct fdisk_context *cxt;
	char *path;
	int fd;
	bool write;
	bool blockdev;
	char label[8];
	unsigned ssz;
	uint64_t size;
	uint64_t grain;
	uint64_t first_usable, end_usable;
	struct partctl_part *parts; /* sorted by number */
	size_t n;
	char warn[256];             /* libfdisk's first warning, for messages */
	char problem[512];          /* what partctl_table_check() found ("" sound) */
	bool busy;                  /* opened by partctl_table_open_busy: the
				     * write checks each change (partctl_busy_verdict)
				     * instead of refusing any mount on the disk */
	struct partctl_part *orig;  /* busy: the entries as read */
	size_t norig;
};

/* Open a block device's table while part of it may be in use (the running
 * root): the mount check moves to partctl_table_write, which allows only
 * the changes partctl_busy_verdict allows (read-only: a dry run asks
 * partctl_table_check_busy).  An image file is opened as
 * partctl_table_open does: the kernel could not be told. */
int partctl_table_open_busy(const char *disk, bool write, partctl_table **out, ip_error *e);
/* The check partctl_table_write makes, for a dry run that writes nothing
 * (a table not opened busy: the disk must be unmounted). */
int partctl_table_check_busy(partctl_table *t, ip_error *e);
/* Does anything mounted (or swap) use a byte of [off, off+len)?  what
 * (wlen bytes) says how, for messages. */
typedef bool (*partctl_in_use_fn)(void *arg, uint64_t off, uint64_t len, char *what, size_t wlen);
/* May the entries old[0..nold) become now[0..nnow) on disk while it is in
 * use, telling the kernel through BLKPG only?  The one place that decides
 * (the same rule as parted and growpart): an entry unchanged, an entry
 * whose start stays and whose end grows over space nothing uses (a
 * mounted filesystem then grows online), an entry deleted that nothing
 * uses.  Anything else (a partition moved, shrunk, renumbered or added, or
 * one in use deleted) is refused, bad input naming the partition and its
 * use, when the disk is in use. */
int partctl_busy_verdict(const char *disk, const struct partctl_part *old, size_t nold,
			 const struct partctl_part *now, size_t nnow, partctl_in_use_fn in_use, void *arg,
			 ip_error *e);

/* The disk label's id (GPT disk GUID, MBR "0x" signature), malloc'd;
 * *id NULL when the label has none. */
int partctl_table_label_id(const partctl_table *t, char **id, ip_error *e);
/* Where the boot record (EBR) of logical partition n lies, in bytes. */
int partctl_table_ebr(const partctl_table *t, unsigned n, uint64_t *off, ip_error *e);
/* Put the boot record of logical partition n at byte at (inside the
 * container, before the partition, outside every other logical), the
 * partition and its number unchanged; in memory, like every change.  A
 * logical partition moved towards the disk's start takes its record
 * along this way (partctl_table_set_range does it). */
int partctl_table_move_ebr(partctl_table *t, unsigned n, uint64_t at, ip_error *e);
/* Make sure the boot record of logical partition n of the disk d lies
 * before start (a move towards the disk's start: the copy will overwrite
 * the old place): else it moves to the grain before start, the partition
 * staying where it is.  The new record is written and flushed before the
 * one record that links it into the chain, so a crash leaves the old chain
 * or the new one.  Nothing to do (0) for a primary partition or a record
 * already before start; idempotent, for resume. */
int partctl_table_ebr_before(ip_disk *d, unsigned n, uint64_t start, ip_error *e);
/* The MBR extended container, or NULL. */
const struct partctl_part *partctl_geom_extended(const partctl_table *t);
/* Can [start, start+size) hold partition n (0: a new one) of the given
 * kind without overlapping its neighbours?  Bad input naming the clash. */
int partctl_geom_check_range(const partctl_table *t, unsigned n, uint64_t start, uint64_t size,
			     bool logical, bool extended, ip_error *e);

#endif
