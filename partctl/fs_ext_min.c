/* fs_ext_min.c — the smallest size an ext2/3/4 filesystem can be shrunk to,
 * computed from the filesystem itself through libext2fs.
 *
 * resize2fs -P is an estimate built to be safe for any filesystem and is
 * far too pessimistic on ordinary ones (1.5 GiB for a filesystem that
 * resize2fs -f shrinks to 1000 MiB).  This one counts what the smaller
 * filesystem really holds:
 *
 *   data      blocks in use that are not group metadata: files,
 *             directories, extent-tree blocks, the journal, the resize
 *             inode's own block;
 *   metadata  of the groups that remain: superblock backups with their
 *             descriptor and reserved GDT blocks (resize2fs keeps the
 *             descriptor + reserved GDT count when it shrinks), bitmaps,
 *             inode tables;
 *   tables of the groups that go but lie in one that remains (flex_bg
 *             packs 16 groups' bitmaps and inode tables into the first):
 *             resize2fs frees them only after it has moved the data, so
 *             during the resize they are as good as used;
 *   inodes    the groups that remain must hold every inode in use
 *             (resize2fs renumbers the others), so a filesystem with many
 *             small files keeps more groups, with their inode tables;
 *   margin    extent trees grow when resize2fs moves a file's blocks into
 *             the free gaps: 1/64 of the data, at least 4 MiB;
 *   last group  resize2fs drops a last group smaller than its metadata
 *             plus 50 blocks, so the minimum never ends inside one. */
#include <errno.h>
#include <string.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "partctl/internal.h"

#define LAST_GROUP_SLACK 50   /* blocks resize2fs wants in a last group beyond its metadata */
#define MARGIN_DIV 64         /* extent-tree growth: 1/64 of the data */
#define MARGIN_MIN (4 << 20)  /* … and at least 4 MiB */

static uint64_t div_ceil(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

uint64_t partctl_ext_min_blocks(const struct partctl_ext_geom *g)
{
	uint64_t groups, meta, total, rem, margin, last;

	if (!g->groups || !g->blocks_per_group || !g->inodes_per_group || !g->block_size)
		return 0;
	margin = g->data_blocks / MARGIN_DIV;
	if (margin < MARGIN_MIN / g->block_size)
		margin = MARGIN_MIN / g->block_size;
	if (g->no_margin)
		margin = 0;
	groups = div_ceil(g->used_inodes, g->inodes_per_group);
	if (groups == 0)
		groups = 1;
	for (;;) {
		if (groups > g->groups)
			return g->blocks_now; /* it needs more groups than it has */
		meta = 0;
		for (uint64_t i = 0; i < g->groups; i++)
			if (i < groups)
				meta += g->meta[i];
			else if (g->home[i] < groups)
				meta += g->tables[i];
		total = meta + g->data_blocks + margin;
		if (div_ceil(total, g->blocks_per_group) <= groups)
			break;
		groups = div_ceil(total, g->blocks_per_group);
	}
	/* Inodes may ask for more groups than the blocks fill: the last one
	 * must still exist, and hold its metadata plus resize2fs's slack. */
	last = g->meta[groups - 1] + (groups > 1 ? LAST_GROUP_SLACK : 0);
	rem = total - (groups - 1) * g->blocks_per_group;
	if (total <= (groups - 1) * g->blocks_per_group || rem < last)
		total = (groups - 1) * g->blocks_per_group + last;
	total += g->first_data_block;
	return total < g->blocks_now ? total : g->blocks_now;
}

/* Blocks of group g's superblock backup, descriptors and reserved GDT. */
static uint64_t group_super(ext2_filsys fs, dgrp_t g)
{
	blk64_t super = 0, old_desc = 0, new_desc = 0;
	blk_t used = 0;

	ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used);
	return used;
}

int partctl_ext_min(ip_disk *d, uint64_t off, uint64_t *min, uint64_t *floor, ip_error *e)
{
	_cleanup_free_ uint64_t *meta = NULL;
	uint64_t *tables, *home;
	struct partctl_ext_geom g = { 0 };
	ext2_filsys fs;
	blk64_t used = 0;
	uint64_t all_meta = 0, free_inodes = 0;
	errcode_t err;
	int r;

	*min = 0;
	if (floor)
		*floor = 0;
	r = partctl_ext_open_bitmaps(d, off, &fs, e);
	if (r < 0)
		return r;
	if (ext2fs_has_feature_meta_bg(fs->super) || ext2fs_has_feature_bigalloc(fs->super)) {
		/* Other layouts of the descriptors and clusters: this count does
		 * not describe them; resize2fs -P's estimate stays the minimum. */
		r = ip_fail(e, -EOPNOTSUPP, "the ext filesystem at offset %llu of %s uses meta_bg or bigalloc",
			    (unsigned long long)off, ip_disk_path(d));
		goto out;
	}
	err = ext2fs_count_used_clusters(fs, fs->super->s_first_data_block,
						 ext2fs_blocks_count(fs->super) - 1, &used);
	if (err) {
		r = ip_fail(e, -EIO, "cannot read the block bitmap of the ext filesystem at offset %llu of %s (%s): run e2fsck -f on it",
			    (unsigned long long)off, ip_disk_path(d), error_message(err));
		goto out;
	}
	meta = calloc(3 * (size_t)fs->group_desc_count, sizeof(*meta));
	if (!meta) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	/* The groups' counts, not the superblock's: the kernel updates the
	 * superblock's lazily. */
	tables = meta + fs->group_desc_count;
	home = tables + fs->group_desc_count;
	for (dgrp_t i = 0; i < fs->group_desc_count; i++) {
		tables[i] = 2 + fs->inode_blocks_per_group;
		meta[i] = group_super(fs, i) + tables[i];
		home[i] = ext2fs_group_of_blk2(fs, ext2fs_inode_table_loc(fs, i));
		all_meta += meta[i];
		free_inodes += ext2fs_bg_free_inodes_count(fs, i);
	}
	g.block_size = fs->blocksize;
	g.first_data_block = fs->super->s_first_data_block;
	g.blocks_per_group = fs->super->s_blocks_per_group;
	g.inodes_per_group = fs->super->s_inodes_per_group;
	g.used_inodes = fs->super->s_inodes_count - free_inodes;
	g.data_blocks = used > all_meta ? used - all_meta : 0;
	g.groups = fs->group_desc_count;
	g.blocks_now = ext2fs_blocks_count(fs->super);
	g.meta = meta;
	g.tables = tables;
	g.home = home;
	*min = partctl_ext_min_blocks(&g) * fs->blocksize;
	if (floor) {
		g.no_margin = true;
		*floor = partctl_ext_min_blocks(&g) * fs->blocksize;
	}
	r = 0;
out:
	ext2fs_close_free(&fs);
	return r;
}
