/* fs_ext.c — ext2/3/4 through libext2fs, opened at a byte offset of the disk
 * or image ("offset=N" on the unix I/O manager), so that image files need no
 * loop device. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "partctl/internal.h"

static int ext_errno(errcode_t err)
{
	/* libext2fs passes errno values through; its own codes are large. */
	return err > 0 && err < 4096 ? -(int)err : -EIO;
}

/* libext2fs's codes read as "Unknown code ext2 156" until its com_err table
 * is registered; every message below names one, so it is registered once,
 * by whichever thread opens a filesystem first. */
static pthread_once_t ext_errors_once = PTHREAD_ONCE_INIT;

static void ext_errors_register(void)
{
	initialize_ext2_error_table();
}

int partctl_ext_open(ip_disk *d, uint64_t off, ext2_filsys *fs, ip_error *e)
{
	char opts[64];
	errcode_t err;

	pthread_once(&ext_errors_once, ext_errors_register);
	snprintf(opts, sizeof(opts), "offset=%llu", (unsigned long long)off);
	err = ext2fs_open2(ip_disk_path(d), opts, EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP, 0, 0,
			   unix_io_manager, fs);
	if (err)
		return ip_fail(e, ext_errno(err),
			       "cannot read the ext filesystem at offset %llu of %s (%s): run e2fsck on it",
			       (unsigned long long)off, ip_disk_path(d), error_message(err));
	return 0;
}

int partctl_ext_sb_errors(ip_disk *d, uint64_t off, char *why, size_t len, ip_error *e)
{
	ext2_filsys fs;
	int r = partctl_ext_open(d, off, &fs, e);

	if (r < 0)
		return r;
	why[0] = '\0';
	/* the kernel marks errors it met; e2fsck clears them after repairing */
	if (fs->super->s_state & EXT2_ERROR_FS || fs->super->s_error_count)
		snprintf(why, len, "its superblock records %u error(s) the kernel met",
			 fs->super->s_error_count ? fs->super->s_error_count : 1);
	ext2fs_close_free(&fs);
	return 0;
}

int partctl_ext_open_bitmaps(ip_disk *d, uint64_t off, ext2_filsys *fs, ip_error *e)
{
	errcode_t err;
	int r = partctl_ext_open(d, off, fs, e);

	if (r < 0)
		return r;
	if (ext2fs_has_feature_journal_needs_recovery((*fs)->super)) {
		/* The bitmaps on disk may be missing what the journal holds. */
		r = ip_fail(e, -EUCLEAN,
			    "the ext filesystem at offset %llu of %s has a journal to replay: run e2fsck -f on it (after unmounting it)",
			    (unsigned long long)off, ip_disk_path(d));
		goto fail;
	}
	err = ext2fs_read_block_bitmap(*fs);
	if (err) {
		r = ip_fail(e, ext_errno(err),
			    "cannot read the block bitmap of the ext filesystem at offset %llu of %s (%s): run e2fsck -f on it",
			    (unsigned long long)off, ip_disk_path(d), error_message(err));
		goto fail;
	}
	return 0;
fail:
	ext2fs_close_free(fs);
	return r;
}

int partctl_ext_info(ip_disk *d, uint64_t off, uint64_t size, struct partctl_fsinfo *fi,
		     ip_error *e)
{
	ext2_filsys fs;
	uint64_t blocks, freeb;
	int r;

	(void)size;
	r = partctl_ext_open(d, off, &fs, e);
	if (r < 0)
		return r;
	fi->block_size = fs->blocksize;
	blocks = ext2fs_blocks_count(fs->super);
	freeb = ext2fs_free_blocks_count(fs->super);
	fi->size = blocks * fs->blocksize;
	ext2fs_close_free(&fs);
	/* More free blocks than blocks: the count is wrong, so is any usage
	 * computed from it (0 would read as "empty"). */
	if (freeb > blocks)
		return ip_fail(e, -EUCLEAN,
			       "the superblock of the ext filesystem at offset %llu of %s counts %llu free blocks of %llu: run e2fsck -f on it",
			       (unsigned long long)off, ip_disk_path(d), (unsigned long long)freeb,
			       (unsigned long long)blocks);
	fi->used = (blocks - freeb) * fi->block_size;
	return 0;
}

int partctl_ext_usedmap(ip_disk *d, uint64_t off, uint64_t size, partctl_usedmap **out,
			ip_error *e)
{
	struct partctl_map_builder b = { 0 };
	ext2_filsys fs;
	blk64_t start, end, s, z;
	uint64_t bs;
	errcode_t err;
	int r;

	*out = NULL;
	r = partctl_ext_open_bitmaps(d, off, &fs, e);
	if (r < 0)
		return r;
	bs = fs->blocksize;
	r = partctl_map_begin(&b, size, bs);
	if (r < 0)
		goto oom;
	/* Blocks before the first data block (the boot block of a 1 KiB-block
	 * filesystem) are in no group's bitmap but belong to the filesystem. */
	start = fs->super->s_first_data_block;
	end = ext2fs_blocks_count(fs->super) - 1;
	if (start > 0 && (r = partctl_map_add(&b, 0, start * bs)) < 0)
		goto oom;
	while (start <= end) {
		err = ext2fs_find_first_set_block_bitmap2(fs->block_map, start, end, &s);
		if (err == ENOENT)
			break;
		if (err) {
			r = ip_fail(e, ext_errno(err), "cannot scan the block bitmap of %s (%s)",
				    ip_disk_path(d), error_message(err));
			goto out;
		}
		err = ext2fs_find_first_zero_block_bitmap2(fs->block_map, s, end, &z);
		if (err == ENOENT)
			z = end + 1;
		else if (err) {
			r = ip_fail(e, ext_errno(err), "cannot scan the block bitmap of %s (%s)",
				    ip_disk_path(d), error_message(err));
			goto out;
		}
		r = partctl_map_add(&b, s * bs, (z - s) * bs);
		if (r < 0)
			goto oom;
		start = z;
	}
	*out = partctl_map_end(&b);
	r = 0;
	goto out;
oom:
	r = ip_fail(e, -ENOMEM, "out of memory building the used-block map of %s", ip_disk_path(d));
out:
	partctl_map_abort(&b);
	ext2fs_close_free(&fs);
	return r;
}

int partctl_ext_min_size(ip_disk *d, uint64_t off, uint64_t block_size, uint64_t *min,
			 ip_error *e)
{
	_cleanup_free_ char *dev = NULL;

	*min = 0;
	/* e2fsprogs tools accept "IMAGE?offset=N" as the device. */
	if (asprintf(&dev, "%s?offset=%llu", ip_disk_path(d), (unsigned long long)off) < 0) {
		dev = NULL;
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	return partctl_ext_estimate(dev, block_size, min, e);
}
