/* partctl.h — partition tables, filesystem knowledge and the operations
 * that make room for the storage partition.  The public face of partctl/:
 * the imager and bootstage ask it, never libfdisk or libext2fs directly. */
#ifndef INPLACE_PARTCTL_H
#define INPLACE_PARTCTL_H

#include "common/common.h"

/* ==== filesystem knowledge (partctl/fs*.c) ============================== */

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
	char type[16];         /* "ext4", "ntfs", "xfs", "swap", … ; "" when none */
	char label[64];
	char uuid[64];
	uint64_t size;         /* bytes the filesystem spans (0 if unknown) */
	uint64_t block_size;
	uint64_t used;         /* bytes in use (0 if unknown) */
	uint64_t min_size;     /* smallest size its resizer can shrink it to (0 if unknown) */
	bool resizable;        /* ext2/3/4 and NTFS: inplace can shrink and grow it */
};

/* Probe the filesystem in [off, off+size) of d.  No filesystem is not an
 * error (type ""). */
int partctl_fs_probe(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *out,
		     ip_error *e);
/* The used-block map of the filesystem in [off, off+size) of d. */
int partctl_fs_usedmap(ip_disk *d, uint64_t off, uint64_t size, partctl_usedmap **out,
		       ip_error *e);
void partctl_usedmap_free(partctl_usedmap *m);

/* ==== partition tables (partctl/table*.c) =============================== */

/* Byte range of partition n of the disk at path (-ENOENT: no such partition,
 * bad input).  For callers that only need where a partition lies. */
int partctl_part_range(const char *disk, unsigned n, uint64_t *off, uint64_t *size,
		       ip_error *e);

#endif
