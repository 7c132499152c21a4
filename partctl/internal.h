/* internal.h — partctl's private header: what its .c files share and no
 * other module may call.  One section per owner. */
#ifndef INPLACE_PARTCTL_INTERNAL_H
#define INPLACE_PARTCTL_INTERNAL_H

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
 * counted from the filesystem (fs_ext_min.c). */
int partctl_ext_min(ip_disk *d, uint64_t off, uint64_t *min, ip_error *e);
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

/* Finish an interrupted `part shrink` recorded in the state directory:
 * roll an interrupted resize2fs back with e2undo and redo the shrink, or
 * finish the table step when the filesystem was already shrunk.  0 and
 * *did = false when there is no shrink to finish for this disk.
 * partctl_resume() calls this first. */
int partctl_resize_resume(const char *disk, bool *did, ip_error *e);

/* The state directory ($INPLACE_STATE_DIR, default /var/lib/inplace):
 * out = DIR/KIND<disk path>-<disk size>.EXT, so that another disk that
 * later takes the same name is not mistaken for this one. */
int partctl_state_file(const char *disk, const char *kind, const char *ext, char *out, size_t n,
		       ip_error *e);
int partctl_state_mkdir(ip_error *e);

#endif
