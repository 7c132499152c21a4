/* peek.c — look at files inside an ext2/3/4 image without deploying it:
 * libext2fs reads the filesystem through an io_manager that decompresses
 * the image's frames on demand.  The preflight asks whether the image can
 * boot (a kernel in /boot, GRUB) before anything is written. */
#include <errno.h>
#include <string.h>

#include <ext2fs/ext2fs.h>
#include <zstd.h>

#include "imager/imager_int.h"

/* One frame decompressed at a time: the few lookups of a path touch a
 * handful of frames (superblock, group descriptors, inode tables, the
 * directories), each read once or twice. */
struct peek {
	imager_image *img;
	ZSTD_DCtx *dctx;
	uint8_t *cbuf, *dbuf;
	uint32_t cur;          /* the frame in dbuf, UINT32_MAX: none */
	ip_error err;          /* why a read failed */
};

/* libext2fs opens by name only: the name carries our context's address,
 * produced and parsed in this file alone. */
static struct struct_io_manager peek_manager;

static errcode_t peek_open(const char *name, int flags, io_channel *channel)
{
	struct peek *pk = NULL;
	io_channel io;

	if (flags & IO_FLAG_RW)
		return EXT2_ET_RO_UNSUPP_FEATURE;
	if (sscanf(name, "inplace-image:%p", (void **)&pk) != 1 || !pk)
		return EXT2_ET_BAD_DEVICE_NAME;
	io = calloc(1, sizeof(*io));
	if (!io)
		return EXT2_ET_NO_MEMORY;
	io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	io->manager = &peek_manager;
	io->block_size = 1024;
	io->refcount = 1;
	io->private_data = pk;
	io->name = strdup(name);
	if (!io->name) {
		free(io);
		return EXT2_ET_NO_MEMORY;
	}
	*channel = io;
	return 0;
}

static errcode_t peek_close(io_channel io)
{
	if (--io->refcount > 0)
		return 0;
	free(io->name);
	free(io);
	return 0;
}

static errcode_t peek_set_blksize(io_channel io, int blksize)
{
	io->block_size = blksize;
	return 0;
}

/* bytes [off, off+len) of the partition; zeros past the frames */
static errcode_t peek_read(struct peek *pk, uint64_t off, size_t len, uint8_t *out)
{
	const struct imager_seektable *st = &pk->img->st;
	uint32_t fs = pk->img->meta.frame_size ? pk->img->meta.frame_size : IMAGER_FRAME_SIZE;

	while (len > 0) {
		uint32_t i = (uint32_t)(off / fs);
		size_t in, n;

		if (i >= st->n) {
			memset(out, 0, len);
			return 0;
		}
		if (pk->cur != i) {
			if (imager_read_frame(pk->img, i, pk->cbuf, &pk->err) < 0 ||
			    imager_decompress_frame(pk->img, i, pk->dctx, pk->cbuf, pk->dbuf, &pk->err) < 0) {
				pk->cur = UINT32_MAX;
				return EXT2_ET_SHORT_READ;
			}
			pk->cur = i;
		}
		in = (size_t)(off - st->f[i].doff);
		n = st->f[i].dsize > in ? st->f[i].dsize - in : 0;
		if (n == 0)
			return EXT2_ET_SHORT_READ;
		if (n > len)
			n = len;
		memcpy(out, pk->dbuf + in, n);
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

static errcode_t peek_read_blk64(io_channel io, unsigned long long block, int count, void *data)
{
	/* a negative count is a byte count (libext2fs's convention) */
	size_t len = count < 0 ? (size_t)-count : (size_t)count * (size_t)io->block_size;

	return peek_read(io->private_data, block * (uint64_t)io->block_size, len, data);
}

static errcode_t peek_read_blk(io_channel io, unsigned long block, int count, void *data)
{
	return peek_read_blk64(io, block, count, data);
}

static errcode_t peek_write_blk(io_channel io, unsigned long block, int count, const void *data)
{
	(void)io, (void)block, (void)count, (void)data;
	return EXT2_ET_RO_UNSUPP_FEATURE;
}

static errcode_t peek_write_blk64(io_channel io, unsigned long long block, int count, const void *data)
{
	(void)io, (void)block, (void)count, (void)data;
	return EXT2_ET_RO_UNSUPP_FEATURE;
}

static errcode_t peek_flush(io_channel io)
{
	(void)io;
	return 0;
}

static struct struct_io_manager peek_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "inplace image",
	.open = peek_open,
	.close = peek_close,
	.set_blksize = peek_set_blksize,
	.read_blk = peek_read_blk,
	.write_blk = peek_write_blk,
	.flush = peek_flush,
	.read_blk64 = peek_read_blk64,
	.write_blk64 = peek_write_blk64,
};

struct prefix_match {
	const char *prefix;
	size_t len;
	bool found;
};

static int prefix_cb(struct ext2_dir_entry *de, int off, int bsize, char *buf, void *priv)
{
	struct prefix_match *pm = priv;
	size_t n = ext2fs_dirent_name_len(de);

	(void)off, (void)bsize, (void)buf;
	if (n >= pm->len && !memcmp(de->name, pm->prefix, pm->len)) {
		pm->found = true;
		return DIRENT_ABORT;
	}
	return 0;
}

/* path exists in fs; a last component ending in '*' is a prefix */
static bool path_in_fs(ext2_filsys fs, const char *path)
{
	_cleanup_free_ char *dir = strdup(path);
	char *slash, *star;
	ext2_ino_t ino;

	if (!dir)
		return false;
	star = strchr(dir, '*');
	if (!star)
		return ext2fs_namei_follow(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, dir, &ino) == 0;
	*star = '\0';
	slash = strrchr(dir, '/');
	if (!slash)
		return false;
	*slash = '\0';
	{
		struct prefix_match pm = { .prefix = slash + 1, .len = strlen(slash + 1) };

		if (ext2fs_namei_follow(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, *dir ? dir : "/", &ino) != 0 ||
		    ext2fs_dir_iterate(fs, ino, 0, NULL, prefix_cb, &pm) != 0)
			return false;
		return pm.found;
	}
}

int imager_paths_exist(const char *image, const char *const *paths, bool *found, ip_error *e)
{
	struct peek pk = { .cur = UINT32_MAX };
	ext2_filsys fs = NULL;
	char name[64];
	uint32_t maxc = 0;
	errcode_t err;
	int r = 0;

	r = imager_open(image, &pk.img, e);
	if (r < 0)
		return r;
	if (strncmp(imager_fs_type(pk.img), "ext", 3)) {
		r = ip_bad(e, -EOPNOTSUPP, "cannot look into image %s: its filesystem is %s, not ext2/3/4", image,
			   *imager_fs_type(pk.img) ? imager_fs_type(pk.img) : "unknown");
		goto out;
	}
	for (uint32_t i = 0; i < pk.img->st.n; i++)
		if (pk.img->st.f[i].csize > maxc)
			maxc = pk.img->st.f[i].csize;
	pk.dctx = ZSTD_createDCtx();
	pk.cbuf = malloc(maxc ? maxc : 1);
	pk.dbuf = malloc(pk.img->meta.frame_size ? pk.img->meta.frame_size : IMAGER_FRAME_SIZE);
	if (!pk.dctx || !pk.cbuf || !pk.dbuf) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	snprintf(name, sizeof(name), "inplace-image:%p", (void *)&pk);
	err = ext2fs_open2(name, NULL, EXT2_FLAG_64BITS, 0, 0, &peek_manager, &fs);
	if (err) {
		if (pk.err.code) {
			if (e)
				*e = pk.err;
			r = pk.err.code;
		} else
			r = ip_bad(e, -EINVAL, "cannot read the filesystem in image %s: %s", image, error_message(err));
		goto out;
	}
	for (size_t i = 0; paths[i]; i++)
		found[i] = path_in_fs(fs, paths[i]);
	if (pk.err.code) {
		if (e)
			*e = pk.err;
		r = pk.err.code;
	}
out:
	if (fs)
		ext2fs_close_free(&fs);
	ZSTD_freeDCtx(pk.dctx);
	free(pk.cbuf);
	free(pk.dbuf);
	imager_free(pk.img);
	return r;
}
