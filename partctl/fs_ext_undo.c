/* fs_ext_undo.c — an undo of an ext filesystem's metadata, for the shrinks
 * that resize2fs cannot undo itself.
 *
 * resize2fs 1.47.0 with -z (its undo file) corrupts filesystems of 1 KiB
 * blocks, so those are shrunk without it.  Before resize2fs runs on one,
 * every metadata block goes into a file in the state directory: superblocks
 * and group descriptors with their reserved blocks, bitmaps, inode tables,
 * every block of directories, of the resize inode and of the journal, the
 * extent-tree and indirect blocks of every file, and extended-attribute
 * blocks.  A shrink by resize2fs writes only such blocks, and blocks free in
 * the filesystem it started from: the moved data lands in free blocks and
 * the old copies are only read.  Writing the saved blocks back therefore
 * gives the filesystem as it was before resize2fs began, whenever it was
 * stopped.
 *
 * File: a header, then runs (first block, count, the blocks), then a
 * trailer holding the count of runs and a BLAKE2b-256 of everything before
 * it.  The whole file is written through ip_outfile (temporary name, fsync,
 * rename, fsync of the directory), so it exists only complete.  Restore checks the trailer before it
 * writes a byte. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>
#include <sodium.h>

#include "partctl/internal.h"

#define MU_MAGIC "IPEXTMU1"
#define MU_END "IPEXTEND"
#define MU_RUN_MAX 1024          /* blocks per run: at most 4 MiB read at once */

struct mu_header {
	char magic[8];
	uint32_t block_size;
	uint32_t reserved;
	uint64_t fs_blocks;          /* blocks_count when saved */
	uint64_t fs_offset;          /* byte offset of the filesystem on the disk */
};

struct mu_run {
	uint64_t first, count;
};

struct mu_trailer {
	char magic[8];
	uint64_t runs;
	uint8_t hash[32];
};

struct mark_ctx {
	ext2fs_block_bitmap map;
	bool all;                    /* data blocks too (directories, journal) */
};

static int mark_block(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt, blk64_t ref_blk,
		      int ref_offset, void *priv)
{
	struct mark_ctx *m = priv;

	(void)ref_blk;
	(void)ref_offset;
	if ((blockcnt < 0 || m->all) && *blocknr >= fs->super->s_first_data_block &&
	    *blocknr < ext2fs_blocks_count(fs->super))
		ext2fs_mark_block_bitmap2(m->map, *blocknr);
	return 0;
}

/* Every block that holds metadata, into map. */
static errcode_t mark_metadata(ext2_filsys fs, ext2fs_block_bitmap map)
{
	ext2_inode_scan scan = NULL;
	struct ext2_inode_large inode;
	ext2_ino_t ino;
	errcode_t err;

	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		ext2fs_reserve_super_and_bgd(fs, g, map);
		if (ext2fs_block_bitmap_loc(fs, g))
			ext2fs_mark_block_bitmap2(map, ext2fs_block_bitmap_loc(fs, g));
		if (ext2fs_inode_bitmap_loc(fs, g))
			ext2fs_mark_block_bitmap2(map, ext2fs_inode_bitmap_loc(fs, g));
		if (ext2fs_inode_table_loc(fs, g))
			ext2fs_mark_block_bitmap_range2(map, ext2fs_inode_table_loc(fs, g), fs->inode_blocks_per_group);
	}
	err = ext2fs_open_inode_scan(fs, 0, &scan);
	if (err)
		return err;
	for (;;) {
		err = ext2fs_get_next_inode_full(scan, &ino, (struct ext2_inode *)&inode, sizeof(inode));
		if (err == EXT2_ET_BAD_BLOCK_IN_INODE_TABLE)
			continue;
		if (err || !ino)
			break;
		struct ext2_inode *in = (struct ext2_inode *)&inode;
		bool reserved = ino < EXT2_FIRST_INODE(fs->super);
		if (!reserved && (!in->i_links_count || in->i_dtime))
			continue;
		blk64_t acl = ext2fs_file_acl_block(fs, in);
		if (acl && acl < ext2fs_blocks_count(fs->super))
			ext2fs_mark_block_bitmap2(map, acl);
		if (!ext2fs_inode_has_valid_blocks2(fs, in) || (in->i_flags & EXT4_INLINE_DATA_FL))
			continue;
		struct mark_ctx m = {
			.map = map,
			.all = LINUX_S_ISDIR(in->i_mode) || ino == EXT2_RESIZE_INO || ino == EXT2_JOURNAL_INO,
		};
		err = ext2fs_block_iterate3(fs, ino, BLOCK_FLAG_READ_ONLY, NULL, mark_block, &m);
		if (err)
			break;
	}
	ext2fs_close_inode_scan(scan);
	return err;
}

static int put(int fd, crypto_generichash_state *st, const void *p, size_t n)
{
	if (st)
		crypto_generichash_update(st, p, n);
	return ip_write_all(fd, p, n);
}

/* A save killed half-way leaves its temporary file (ip_outfile's
 * PATH.tmp-PID-XXXXXX); the next save of the same undo removes it. */
static void drop_stale(const char *path)
{
	_cleanup_free_ char *pat = NULL;
	glob_t g;

	if (asprintf(&pat, "%s.tmp-*", path) < 0)
		return;
	if (glob(pat, GLOB_NOSORT | GLOB_NOESCAPE, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++)
			unlink(g.gl_pathv[i]);
		globfree(&g);
	}
}

/* The filesystem at off of d and the map of its metadata blocks (free
 * both with ext2fs_free_block_bitmap and ext2fs_close_free, also on error). */
static int open_metadata(ip_disk *d, uint64_t off, ext2_filsys *fs, ext2fs_block_bitmap *map, ip_error *e)
{
	errcode_t err;
	int r;

	if ((r = partctl_ext_open(d, off, fs, e)) < 0)
		return r;
	err = ext2fs_allocate_block_bitmap(*fs, "metadata", map);
	if (!err)
		err = mark_metadata(*fs, *map);
	if (err)
		return ip_fail(e, -EIO, "cannot list the metadata of the filesystem at offset %llu of %s (%s): run e2fsck -f on it",
			       (unsigned long long)off, ip_disk_path(d), error_message(err));
	return 0;
}

int partctl_ext_meta_save(ip_disk *d, uint64_t off, const char *path, uint64_t *bytes, ip_error *e)
{
	ext2_filsys fs = NULL;
	ext2fs_block_bitmap map = NULL;
	crypto_generichash_state st;
	struct mu_header h = { .magic = MU_MAGIC };
	struct mu_trailer t = { .magic = MU_END };
	_cleanup_free_ uint8_t *buf = NULL;
	ip_outfile of = { .fd = -1 };
	blk64_t blk, end;
	int r;

	*bytes = 0;
	if ((r = open_metadata(d, off, &fs, &map, e)) < 0)
		goto out;
	h.block_size = fs->blocksize;
	h.fs_blocks = ext2fs_blocks_count(fs->super);
	h.fs_offset = off;
	buf = malloc((size_t)MU_RUN_MAX * fs->blocksize);
	if (!buf) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	drop_stale(path);
	/* the undo must never land on the disk it guards */
	r = ip_outfile_open(path, ip_disk_path(d), 0600, &of, e);
	if (r < 0)
		goto out;
	crypto_generichash_init(&st, NULL, 0, sizeof(t.hash));
	r = put(of.fd, &st, &h, sizeof(h));
	end = ext2fs_blocks_count(fs->super) - 1;
	blk = fs->super->s_first_data_block;
	while (r == 0 && blk <= end) {
		blk64_t first, stop;

		if (ext2fs_find_first_set_block_bitmap2(map, blk, end, &first))
			break;                               /* no more */
		if (ext2fs_find_first_zero_block_bitmap2(map, first, end, &stop))
			stop = end + 1;
		if (stop - first > MU_RUN_MAX)
			stop = first + MU_RUN_MAX;
		struct mu_run run = { first, stop - first };
		size_t len = (size_t)run.count * fs->blocksize;
		r = ip_disk_read(d, buf, len, off + first * fs->blocksize, e);
		if (r == 0 && ((r = put(of.fd, &st, &run, sizeof(run))) < 0 || (r = put(of.fd, &st, buf, len)) < 0))
			ip_fail(e, r, "cannot write %s: %s", path, strerror(-r));
		t.runs++;
		*bytes += len;
		blk = stop;
	}
	if (r < 0)
		goto out;
	crypto_generichash_final(&st, t.hash, sizeof(t.hash));
	if ((r = put(of.fd, NULL, &t, sizeof(t))) < 0) {
		r = ip_fail(e, r, "cannot write %s: %s", path, strerror(-r));
		goto out;
	}
	r = ip_outfile_commit(&of, e);
out:
	ip_outfile_abort(&of);
	if (map)
		ext2fs_free_block_bitmap(map);
	if (fs)
		ext2fs_close_free(&fs);
	return r;
}

int partctl_ext_meta_bytes(ip_disk *d, uint64_t off, uint64_t *bytes, ip_error *e)
{
	ext2_filsys fs = NULL;
	ext2fs_block_bitmap map = NULL;
	blk64_t blk, end, first, stop;
	uint64_t runs = 0, blocks = 0;
	int r;

	*bytes = 0;
	if ((r = open_metadata(d, off, &fs, &map, e)) == 0) {
		/* the same runs partctl_ext_meta_save writes */
		end = ext2fs_blocks_count(fs->super) - 1;
		for (blk = fs->super->s_first_data_block; blk <= end; blk = stop) {
			if (ext2fs_find_first_set_block_bitmap2(map, blk, end, &first))
				break;
			if (ext2fs_find_first_zero_block_bitmap2(map, first, end, &stop))
				stop = end + 1;
			if (stop - first > MU_RUN_MAX)
				stop = first + MU_RUN_MAX;
			blocks += stop - first;
			runs++;
		}
		*bytes = sizeof(struct mu_header) + runs * sizeof(struct mu_run) + blocks * fs->blocksize +
			 sizeof(struct mu_trailer);
	}
	if (map)
		ext2fs_free_block_bitmap(map);
	if (fs)
		ext2fs_close_free(&fs);
	return r;
}

/* One pass over the file: with write false, check it; with write true,
 * put every run back. */
static int meta_pass(int fd, ip_disk *d, uint64_t off, bool write, const char *path, ip_error *e)
{
	crypto_generichash_state st;
	struct mu_header h;
	struct mu_trailer t;
	struct stat sb;
	_cleanup_free_ uint8_t *buf = NULL;
	uint64_t pos, runs = 0, end;
	uint8_t sum[32];

	if (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size < sizeof(h) + sizeof(t) ||
	    pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    pread(fd, &t, sizeof(t), sb.st_size - (off_t)sizeof(t)) != (ssize_t)sizeof(t) ||
	    memcmp(h.magic, MU_MAGIC, 8) || memcmp(t.magic, MU_END, 8) ||
	    h.block_size < 1024 || h.block_size > 65536 || h.fs_offset != off)
		return ip_fail(e, -EBADMSG, "%s is not a complete metadata undo of this filesystem", path);
	end = (uint64_t)sb.st_size - sizeof(t);
	buf = malloc((size_t)MU_RUN_MAX * h.block_size);
	if (!buf)
		return ip_fail(e, -ENOMEM, "out of memory");
	crypto_generichash_init(&st, NULL, 0, sizeof(sum));
	crypto_generichash_update(&st, (const uint8_t *)&h, sizeof(h));
	for (pos = sizeof(h); pos < end; runs++) {
		struct mu_run run;
		size_t len;

		if (end - pos < sizeof(run) || pread(fd, &run, sizeof(run), (off_t)pos) != (ssize_t)sizeof(run) ||
		    !run.count || run.count > MU_RUN_MAX || run.first + run.count > h.fs_blocks)
			return ip_fail(e, -EBADMSG, "%s is damaged (run %llu)", path, (unsigned long long)runs);
		len = (size_t)run.count * h.block_size;
		pos += sizeof(run);
		if (end - pos < len || pread(fd, buf, len, (off_t)pos) != (ssize_t)len)
			return ip_fail(e, -EBADMSG, "%s is truncated (run %llu)", path, (unsigned long long)runs);
		pos += len;
		crypto_generichash_update(&st, (const uint8_t *)&run, sizeof(run));
		crypto_generichash_update(&st, buf, len);
		if (write) {
			int r = ip_disk_write(d, buf, len, off + run.first * h.block_size, e);
			if (r < 0)
				return r;
		}
	}
	crypto_generichash_final(&st, sum, sizeof(sum));
	if (runs != t.runs || sodium_memcmp(sum, t.hash, sizeof(sum)) != 0)
		return ip_fail(e, -EBADMSG, "%s is damaged (its checksum does not match)", path);
	return 0;
}

int partctl_ext_meta_restore(ip_disk *d, uint64_t off, const char *path, ip_error *e)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if ((r = meta_pass(fd, d, off, false, path, e)) < 0 || (r = meta_pass(fd, d, off, true, path, e)) < 0)
		return r;
	return ip_disk_flush(d, e);
}
