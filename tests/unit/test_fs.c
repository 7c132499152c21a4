/* test_fs.c — partctl's filesystem knowledge on real filesystems built with
 * mke2fs and mkntfs at a 1 MiB offset inside an image file: probe, the
 * used-block map against the filesystem's own count, and that every block
 * of a file written with known content lies inside the map. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "partctl/internal.h"

#define MiB (1024ULL * 1024)
#define PART_OFF MiB
#define PART_SIZE (48 * MiB)
#define MARK "inplace-test-block "

static char dir[256];

static void run(const char *const argv[])
{
	ip_error e = { 0 };

	if (ip_spawn(argv, NULL, &e) < 0)
		fail_msg("%s: %s", argv[0], e.msg);
}

static char *run_out(const char *const argv[])
{
	ip_error e = { 0 };
	char *out = NULL;

	if (ip_spawn(argv, &out, &e) < 0)
		fail_msg("%s: %s", argv[0], e.msg);
	return out;
}

static void path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* A 1 MiB file whose every 512-byte sector starts with MARK, so that its
 * blocks can be found again in the raw partition. */
static void make_marked_file(const char *p)
{
	FILE *f = fopen(p, "we");
	char sec[512];

	assert_non_null(f);
	for (unsigned i = 0; i < 2048; i++) {
		memset(sec, (int)(i * 7 + 1), sizeof(sec));
		snprintf(sec, sizeof(sec), MARK "%u", i);
		assert_int_equal(fwrite(sec, 1, sizeof(sec), f), sizeof(sec));
	}
	assert_int_equal(fclose(f), 0);
}

static void make_image(const char *img)
{
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(PART_OFF + PART_SIZE + MiB)), 0);
	close(fd);
}

static uint64_t field(const char *text, const char *name)
{
	const char *p = strstr(text, name);
	unsigned long long v;

	assert_non_null(p);
	p += strlen(name);
	while (*p == ' ' || *p == ':' || *p == '\t')
		p++;
	assert_int_equal(sscanf(p, "%llu", &v), 1);
	return v;
}

static bool in_map(const partctl_usedmap *m, uint64_t off, uint64_t len)
{
	for (size_t i = 0; i < m->n; i++)
		if (off >= m->ext[i].off && off + len <= m->ext[i].off + m->ext[i].len)
			return true;
	return false;
}

static void check_map_shape(const partctl_usedmap *m)
{
	uint64_t sum = 0;

	assert_true(m->exact);
	assert_int_equal(m->size, PART_SIZE);
	for (size_t i = 0; i < m->n; i++) {
		assert_true(m->ext[i].len > 0);
		assert_true(m->ext[i].off + m->ext[i].len <= m->size);
		if (i)
			assert_true(m->ext[i].off > m->ext[i - 1].off + m->ext[i - 1].len);
		sum += m->ext[i].len;
	}
	assert_int_equal(sum, m->used);
}

/* Every sector of the partition that starts with MARK must be mapped; and
 * all 2048 of them must be found (the file was written whole). */
static void check_marks(ip_disk *d, const partctl_usedmap *m)
{
	_cleanup_free_ uint8_t *buf = malloc(MiB);
	unsigned found = 0;

	assert_non_null(buf);
	for (uint64_t o = 0; o < PART_SIZE; o += MiB) {
		assert_int_equal(ip_disk_read(d, buf, MiB, PART_OFF + o, NULL), 0);
		for (uint64_t s = 0; s < MiB; s += 512) {
			if (memcmp(buf + s, MARK, strlen(MARK)) == 0) {
				found++;
				if (!in_map(m, o + s, 512))
					fail_msg("file data at partition offset %llu is not in the used map",
						 (unsigned long long)(o + s));
			}
		}
	}
	assert_true(found >= 2048);
}

static void test_ext4(void **state)
{
	char img[300], src[300], file[320], dev[340], opt[64], sz[32];
	struct partctl_fsinfo fi;
	partctl_usedmap *m = NULL;
	ip_disk *d = NULL;
	ip_error e = { 0 };
	_cleanup_free_ char *info = NULL;

	(void)state;
	path(img, sizeof(img), "ext4.img");
	path(src, sizeof(src), "src");
	snprintf(file, sizeof(file), "%s/marked.bin", src);
	mkdir(src, 0700);
	make_marked_file(file);
	make_image(img);
	snprintf(opt, sizeof(opt), "offset=%llu", PART_OFF);
	snprintf(sz, sizeof(sz), "%lluk", PART_SIZE / 1024);
	run((const char *const[]){ "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "testlabel",
				   "-d", src, "-E", opt, img, sz, NULL });

	assert_int_equal(ip_disk_open(img, IP_DISK_RDONLY, &d, &e), 0);
	assert_int_equal(partctl_fs_probe(d, PART_OFF, PART_SIZE, &fi, &e), 0);
	assert_string_equal(fi.type, "ext4");
	assert_string_equal(fi.label, "testlabel");
	assert_true(strlen(fi.uuid) > 0);
	assert_true(fi.resizable);
	assert_int_equal(fi.block_size, 4096);
	assert_int_equal(fi.size, PART_SIZE);
	assert_true(fi.min_size > 0 && fi.min_size < PART_SIZE);
	/* ours: at least what is used of the one group it keeps */
	assert_true(fi.min_size >= fi.used && fi.min_estimate > 0);

	assert_int_equal(partctl_fs_usedmap(d, PART_OFF, PART_SIZE, &m, &e), 0);
	check_map_shape(m);
	snprintf(dev, sizeof(dev), "%s?offset=%llu", img, PART_OFF);
	info = run_out((const char *const[]){ "dumpe2fs", "-h", dev, NULL });
	assert_int_equal(m->used, (field(info, "Block count:") - field(info, "Free blocks:")) * 4096);
	assert_int_equal(fi.used, m->used);
	assert_int_equal(m->block_size, 4096);
	assert_true(in_map(m, 0, 4096)); /* superblock */
	check_marks(d, m);
	partctl_usedmap_free(m);
	ip_disk_free(d);
}

/* 1 KiB blocks: block 0 (the boot block) is in no group's bitmap but is
 * the filesystem's, and counted in its used blocks. */
static void test_ext2_1k(void **state)
{
	char img[300], dev[340], opt[64], sz[32];
	partctl_usedmap *m = NULL;
	ip_disk *d = NULL;
	ip_error e = { 0 };
	_cleanup_free_ char *info = NULL;

	(void)state;
	path(img, sizeof(img), "ext2.img");
	make_image(img);
	snprintf(opt, sizeof(opt), "offset=%llu", PART_OFF);
	snprintf(sz, sizeof(sz), "%lluk", PART_SIZE / 1024);
	run((const char *const[]){ "mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-E", opt, img, sz, NULL });
	assert_int_equal(ip_disk_open(img, IP_DISK_RDONLY, &d, &e), 0);
	assert_int_equal(partctl_fs_usedmap(d, PART_OFF, PART_SIZE, &m, &e), 0);
	check_map_shape(m);
	assert_int_equal(m->block_size, 1024);
	snprintf(dev, sizeof(dev), "%s?offset=%llu", img, PART_OFF);
	info = run_out((const char *const[]){ "dumpe2fs", "-h", dev, NULL });
	assert_int_equal(m->used, (field(info, "Block count:") - field(info, "Free blocks:")) * 1024);
	assert_true(in_map(m, 0, 2048)); /* boot block and superblock */
	partctl_usedmap_free(m);
	ip_disk_free(d);
}

static void test_ntfs(void **state)
{
	char img[300], side[300], src[300], file[320], opt[64];
	struct partctl_fsinfo fi;
	partctl_usedmap *m = NULL;
	ip_disk *d = NULL;
	ip_error e = { 0 };
	_cleanup_free_ char *info = NULL;
	uint64_t clusters, freec, cs;

	(void)state;
	path(img, sizeof(img), "ntfs.img");
	path(side, sizeof(side), "ntfs.side");
	path(src, sizeof(src), "src");
	snprintf(file, sizeof(file), "%s/marked.bin", src);
	mkdir(src, 0700);
	make_marked_file(file);
	make_image(img);
	run((const char *const[]){ "truncate", "-s", "48M", side, NULL });
	run((const char *const[]){ "mkntfs", "-F", "-Q", "-q", "-L", "winlabel", "-p", "2048", side, NULL });
	run((const char *const[]){ "ntfscp", "-f", side, file, "/marked.bin", NULL });
	snprintf(opt, sizeof(opt), "seek=%llu", PART_OFF);
	{
		char of[320];

		snprintf(of, sizeof(of), "of=%s", img);
		char ifs[320];

		snprintf(ifs, sizeof(ifs), "if=%s", side);
		run((const char *const[]){ "dd", ifs, of, "bs=1M", opt, "oflag=seek_bytes",
					   "conv=notrunc,sparse", "status=none", NULL });
	}
	info = run_out((const char *const[]){ "ntfsinfo", "-m", side, NULL });
	clusters = field(info, "Volume Size in Clusters:");
	freec = field(info, "Free Clusters:");
	cs = field(info, "Cluster Size:");

	assert_int_equal(ip_disk_open(img, IP_DISK_RDONLY, &d, &e), 0);
	assert_int_equal(partctl_fs_probe(d, PART_OFF, PART_SIZE, &fi, &e), 0);
	assert_string_equal(fi.type, "ntfs");
	assert_string_equal(fi.label, "winlabel");
	assert_true(fi.resizable);
	assert_int_equal(fi.block_size, cs);
	assert_int_equal(fi.size, PART_SIZE);
	assert_int_equal(fi.used, (clusters - freec) * cs);
	if (fi.min_size == 0)
		print_message("ntfs min_size unknown (no loop device?): %s\n", e.msg);
	else
		assert_true(fi.min_size > fi.used / 2 && fi.min_size < PART_SIZE);

	assert_int_equal(partctl_fs_usedmap(d, PART_OFF, PART_SIZE, &m, &e), 0);
	check_map_shape(m);
	/* The bitmap's clusters plus the backup boot sector in the last
	 * sector of the partition, right after the last cluster. */
	assert_int_equal(m->used, (clusters - freec) * cs + 512);
	assert_true(in_map(m, PART_SIZE - 512, 512));
	assert_true(in_map(m, 0, 512));
	check_marks(d, m);
	partctl_usedmap_free(m);
	ip_disk_free(d);
}

static void test_unknown_and_corrupt(void **state)
{
	char img[300], opt[64], sz[32];
	struct partctl_fsinfo fi;
	partctl_usedmap *m = NULL;
	ip_disk *d = NULL;
	ip_error e = { 0 };
	uint8_t bad[4] = { 40, 0, 0, 0 };
	int fd;

	(void)state;
	path(img, sizeof(img), "raw.img");
	make_image(img);
	assert_int_equal(ip_disk_open(img, IP_DISK_RDONLY, &d, &e), 0);
	assert_int_equal(partctl_fs_probe(d, PART_OFF, PART_SIZE, &fi, &e), 0);
	assert_string_equal(fi.type, "");
	assert_false(fi.resizable);
	assert_int_equal(partctl_fs_usedmap(d, PART_OFF, PART_SIZE, &m, &e), 0);
	assert_false(m->exact);
	assert_int_equal(m->n, 1);
	assert_int_equal(m->used, PART_SIZE);
	partctl_usedmap_free(m);
	/* A range outside the disk is bad input. */
	assert_true(partctl_fs_probe(d, PART_OFF, 1ULL << 40, &fi, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	ip_disk_free(d);

	/* ext4 with a nonsense block size in its superblock: probe still
	 * names the type, the used map fails with a message. */
	snprintf(opt, sizeof(opt), "offset=%llu", PART_OFF);
	snprintf(sz, sizeof(sz), "%lluk", PART_SIZE / 1024);
	run((const char *const[]){ "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-E", opt, img, sz, NULL });
	fd = open(img, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	/* s_log_block_size, at byte 24 of the superblock */
	assert_int_equal(pwrite(fd, bad, sizeof(bad), (off_t)(PART_OFF + 1024 + 24)), (ssize_t)sizeof(bad));
	close(fd);
	assert_int_equal(ip_disk_open(img, IP_DISK_RDONLY, &d, &e), 0);
	ip_error_clear(&e);
	assert_int_equal(partctl_fs_probe(d, PART_OFF, PART_SIZE, &fi, &e), 0);
	assert_string_equal(fi.type, "ext4");
	assert_int_equal(fi.used, 0);
	assert_true(partctl_fs_usedmap(d, PART_OFF, PART_SIZE, &m, &e) < 0);
	assert_null(m);
	assert_true(strlen(e.msg) > 0);
	ip_disk_free(d);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/test_fs.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	run((const char *const[]){ "rm", "-rf", dir, NULL });
	return 0;
}

/* The metadata undo of an ext4 of 1 KiB blocks: metadata overwritten
 * after the save comes back byte for byte; an undo file with one flipped
 * byte is refused before anything is written. */
static void test_ext_meta_undo(void **state)
{
	char img[300], tree[300], undo[300], opt[64], sz[32], f[340];
	_cleanup_free_ char *orig = NULL, *now = NULL, *data = NULL;
	size_t olen, nlen, ulen;
	uint64_t saved = 0;
	ip_disk *d = NULL;
	ip_error e = { 0 };
	static uint8_t junk[64 * 1024];

	(void)state;
	path(img, sizeof(img), "undo.img");
	path(tree, sizeof(tree), "undo-tree");
	path(undo, sizeof(undo), "undo.meta");
	assert_int_equal(ip_mkdir_p(tree, 0755, &e), 0);
	for (int i = 0; i < 20; i++) {
		snprintf(f, sizeof(f), "%s/file%d", tree, i);
		make_marked_file(f);
	}
	make_image(img);
	snprintf(opt, sizeof(opt), "offset=%llu", PART_OFF);
	snprintf(sz, sizeof(sz), "%lluk", PART_SIZE / 1024);
	run((const char *const[]){ "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-d", tree, "-E", opt, img, sz, NULL });
	assert_int_equal(ip_read_file(img, 1ULL << 30, &orig, &olen, &e), 0);

	assert_int_equal(ip_disk_open(img, IP_DISK_RDONLY, &d, &e), 0);
	assert_int_equal(partctl_ext_meta_save(d, PART_OFF, undo, &saved, &e), 0);
	ip_disk_free(d);
	assert_true(saved > 0 && saved < PART_SIZE / 2);   /* the metadata, not the data */

	/* wreck the superblock, group descriptors, bitmaps and inode table */
	memset(junk, 0xa5, sizeof(junk));
	assert_int_equal(ip_disk_open(img, IP_DISK_RDWR, &d, &e), 0);
	assert_int_equal(ip_disk_write(d, junk, sizeof(junk), PART_OFF + 1024, &e), 0);
	ip_disk_free(d);
	assert_int_equal(ip_read_file(img, 1ULL << 30, &now, &nlen, &e), 0);
	assert_memory_not_equal(orig, now, olen);
	free(TAKE_PTR(now));

	/* a damaged undo: refused, nothing written */
	assert_int_equal(ip_read_file(undo, 1ULL << 30, &data, &ulen, &e), 0);
	data[ulen / 2] ^= 1;
	snprintf(f, sizeof(f), "%s.bad", undo);
	assert_int_equal(ip_write_file_atomic(f, data, ulen, 0600, &e), 0);
	assert_int_equal(ip_disk_open(img, IP_DISK_RDWR, &d, &e), 0);
	assert_int_equal(partctl_ext_meta_restore(d, PART_OFF, f, &e), -EBADMSG);
	ip_disk_free(d);
	assert_int_equal(ip_read_file(img, 1ULL << 30, &now, &nlen, &e), 0);
	assert_int_equal(memcmp(now + PART_OFF + 1024, junk, sizeof(junk)), 0);
	free(TAKE_PTR(now));

	/* the real one: the partition as it was */
	assert_int_equal(ip_disk_open(img, IP_DISK_RDWR, &d, &e), 0);
	assert_int_equal(partctl_ext_meta_restore(d, PART_OFF, undo, &e), 0);
	ip_disk_free(d);
	assert_int_equal(ip_read_file(img, 1ULL << 30, &now, &nlen, &e), 0);
	assert_int_equal(nlen, olen);
	assert_memory_equal(orig, now, olen);
}

/* The minimum on a filesystem's numbers: 4 groups of 32768 blocks, the
 * superblock backups in 0, 1 and 3, flex_bg: every group's bitmaps and
 * inode table (514 blocks) in group 0. */
static void test_ext_min_formula(void **state)
{
	const uint64_t meta[] = { 579, 579, 514, 579 }, tables[] = { 514, 514, 514, 514 };
	uint64_t home[] = { 0, 0, 0, 0 };
	struct partctl_ext_geom g = {
		.block_size = 4096, .first_data_block = 0, .blocks_per_group = 32768,
		.inodes_per_group = 8192, .used_inodes = 100, .data_blocks = 40000,
		.groups = 4, .blocks_now = 4 * 32768, .meta = meta, .tables = tables, .home = home,
	};

	(void)state;
	/* 2 groups: their metadata, the tables of groups 2 and 3 that lie in
	 * group 0 (freed only after the move), the data, 4 MiB of margin */
	assert_int_equal(partctl_ext_min_blocks(&g), 579 + 579 + 514 + 514 + 40000 + 1024);
	/* the floor: the same without the margin */
	g.no_margin = true;
	assert_int_equal(partctl_ext_min_blocks(&g), 579 + 579 + 514 + 514 + 40000);
	g.no_margin = false;
	/* every inode table but the kept ones counted only where it lies */
	home[2] = 2, home[3] = 3;
	assert_int_equal(partctl_ext_min_blocks(&g), 579 + 579 + 40000 + 1024);
	home[2] = 0, home[3] = 0;
	/* the inodes in use need 3 groups: the third must exist, with its
	 * metadata and resize2fs's 50 blocks of slack */
	g.used_inodes = 2 * 8192 + 1;
	assert_int_equal(partctl_ext_min_blocks(&g), 2 * 32768 + 514 + 50);
	/* a filesystem that needs every group it has shrinks inside the last */
	g.used_inodes = 100;
	g.data_blocks = 3 * 32768;
	assert_int_equal(partctl_ext_min_blocks(&g), 579 + 579 + 514 + 579 + 3 * 32768 + 3 * 32768 / 64);
	/* one that needs more than it has cannot shrink */
	g.data_blocks = 4 * 32768;
	assert_int_equal(partctl_ext_min_blocks(&g), g.blocks_now);
}

/* A block bitmap whose checksum no longer matches: the refusal names
 * libext2fs's reason, not "Unknown code ext2 156" (its com_err table is
 * registered before the first open). */
static void test_ext_error_text(void **state)
{
	char img[300], dev[340], opt[64], sz[32];
	partctl_usedmap *m = NULL;
	ip_disk *d = NULL;
	ip_error e = { 0 };
	_cleanup_free_ char *info = NULL;
	uint64_t bitmap;
	uint8_t byte;
	int fd;

	(void)state;
	path(img, sizeof(img), "csum.img");
	make_image(img);
	snprintf(opt, sizeof(opt), "offset=%llu", PART_OFF);
	snprintf(sz, sizeof(sz), "%lluk", PART_SIZE / 1024);
	run((const char *const[]){ "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-O", "metadata_csum",
				   "-E", opt, img, sz, NULL });
	snprintf(dev, sizeof(dev), "%s?offset=%llu", img, PART_OFF);
	info = run_out((const char *const[]){ "dumpe2fs", dev, NULL });
	bitmap = field(info, "Block bitmap at");
	/* the bit of the group's last block: free, so only the checksum tells */
	fd = open(img, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &byte, 1, (off_t)(PART_OFF + bitmap * 4096 + 4095)), 1);
	byte ^= 0x80;
	assert_int_equal(pwrite(fd, &byte, 1, (off_t)(PART_OFF + bitmap * 4096 + 4095)), 1);
	close(fd);
	assert_int_equal(ip_disk_open(img, IP_DISK_RDONLY, &d, &e), 0);
	assert_true(partctl_fs_usedmap(d, PART_OFF, PART_SIZE, &m, &e) < 0);
	assert_null(m);
	if (strstr(e.msg, "Unknown code") || !strstr(e.msg, "checksum"))
		fail_msg("the reason is lost: %s", e.msg);
	ip_disk_free(d);
}

/* blkid's longest type name, "xfs_external_log", whole (it was cut to 15
 * characters). */
static void test_long_fstype(void **state)
{
	char data[300], log[300], opt[340];
	struct partctl_fsinfo fi;
	ip_disk *d = NULL;
	ip_error e = { 0 };

	(void)state;
	path(data, sizeof(data), "xfs.img");
	path(log, sizeof(log), "xfs.log");
	run((const char *const[]){ "truncate", "-s", "300M", data, NULL });
	run((const char *const[]){ "truncate", "-s", "64M", log, NULL });
	snprintf(opt, sizeof(opt), "logdev=%s,size=64m", log);
	run((const char *const[]){ "mkfs.xfs", "-q", "-f", "-l", opt, data, NULL });
	assert_int_equal(ip_disk_open(log, IP_DISK_RDONLY, &d, &e), 0);
	assert_int_equal(partctl_fs_probe(d, 0, 64 * MiB, &fi, &e), 0);
	assert_string_equal(fi.type, "xfs_external_log");
	ip_disk_free(d);
	unlink(data);
	unlink(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ext_min_formula),
		cmocka_unit_test(test_ext4),
		cmocka_unit_test(test_ext2_1k),
		cmocka_unit_test(test_ext_meta_undo),
		cmocka_unit_test(test_ntfs),
		cmocka_unit_test(test_unknown_and_corrupt),
		cmocka_unit_test(test_ext_error_text),
		cmocka_unit_test(test_long_fstype),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
