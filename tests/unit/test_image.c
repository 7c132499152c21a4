/* test_image.c — unit tests of imager/: the seek table, the metadata
 * parser, and a capture → open → verify round trip on a small file. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "imager/imager_int.h"

static void test_seektable_roundtrip(void **state)
{
	uint32_t cs[3] = { 100, 2000, 7 }, ds[3] = { IMAGER_FRAME_SIZE, IMAGER_FRAME_SIZE, 5 };
	struct imager_seektable st;
	uint8_t *buf;
	size_t len;
	uint32_t n;
	uint64_t tsize;
	bool ck;

	(void)state;
	assert_int_equal(imager_seektable_encode(cs, ds, 3, &buf, &len), 0);
	assert_int_equal(len, 8 + 3 * 8 + 9);
	assert_int_equal(imager_get32(buf), IMAGER_SEEK_MAGIC);
	assert_int_equal(imager_get32(buf + len - 4), IMAGER_SEEKABLE_MAGIC);
	assert_int_equal(imager_footer_parse(buf, len, &n, &tsize, &ck), 0);
	assert_int_equal(n, 3);
	assert_int_equal(tsize, len);
	assert_false(ck);
	assert_int_equal(imager_seektable_parse(buf, len, &st, NULL), 0);
	assert_int_equal(st.n, 3);
	assert_int_equal(st.f[1].coff, 100);
	assert_int_equal(st.f[2].coff, 2100);
	assert_int_equal(st.f[2].doff, 2ull * IMAGER_FRAME_SIZE);
	assert_int_equal(st.csum, 2107);
	assert_int_equal(st.dsum, 2ull * IMAGER_FRAME_SIZE + 5);
	imager_seektable_clear(&st);
	free(buf);
}

static void test_seektable_checksum_entries(void **state)
{
	/* A table written with Checksum_Flag: 12-byte entries. */
	uint8_t b[8 + 2 * 12 + 9] = { 0 };
	struct imager_seektable st;

	(void)state;
	imager_put32(b, IMAGER_SEEK_MAGIC);
	imager_put32(b + 4, sizeof(b) - 8);
	imager_put32(b + 8, 10);
	imager_put32(b + 12, 20);
	imager_put32(b + 20, 30);
	imager_put32(b + 24, 40);
	imager_put32(b + 32, 2);
	b[36] = 0x80;
	imager_put32(b + 37, IMAGER_SEEKABLE_MAGIC);
	assert_int_equal(imager_seektable_parse(b, sizeof(b), &st, NULL), 0);
	assert_true(st.checksums);
	assert_int_equal(st.f[1].csize, 30);
	assert_int_equal(st.f[1].coff, 10);
	assert_int_equal(st.dsum, 60);
	imager_seektable_clear(&st);
}

static void test_seektable_rejects(void **state)
{
	uint32_t cs[2] = { 1, 2 }, ds[2] = { 3, 4 };
	struct imager_seektable st;
	ip_error e = { 0 };
	uint8_t *buf;
	size_t len;

	(void)state;
	assert_int_equal(imager_seektable_encode(cs, ds, 2, &buf, &len), 0);
	/* wrong seekable magic */
	buf[len - 1] ^= 1;
	assert_int_equal(imager_seektable_parse(buf, len, &st, &e), -EINVAL);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	buf[len - 1] ^= 1;
	/* reserved descriptor bits */
	buf[len - 5] = 0x04;
	assert_int_equal(imager_seektable_parse(buf, len, &st, NULL), -EINVAL);
	buf[len - 5] = 0;
	/* Frame_Size disagrees */
	imager_put32(buf + 4, (uint32_t)len);
	assert_int_equal(imager_seektable_parse(buf, len, &st, NULL), -EINVAL);
	imager_put32(buf + 4, (uint32_t)len - 8);
	/* wrong skippable magic */
	buf[0] ^= 0xff;
	assert_int_equal(imager_seektable_parse(buf, len, &st, NULL), -EINVAL);
	buf[0] ^= 0xff;
	/* truncated: one byte short at the front */
	assert_int_equal(imager_seektable_parse(buf + 1, len - 1, &st, NULL), -EINVAL);
	/* more frames than the table holds */
	imager_put32(buf + len - 9, 3);
	assert_int_equal(imager_seektable_parse(buf, len, &st, NULL), -EINVAL);
	imager_put32(buf + len - 9, 2);
	assert_int_equal(imager_seektable_parse(buf, len, &st, NULL), 0);
	imager_seektable_clear(&st);
	/* too short to hold a footer */
	assert_int_equal(imager_seektable_parse(buf, 5, &st, NULL), -EINVAL);
	free(buf);
}

static partctl_extent used2[2] = { { 0, 4096 }, { 8192, 4096 } };
static uint8_t hashes[2][IMAGER_HASH_LEN];

static void sample_meta(struct imager_meta *m)
{
	memset(m, 0, sizeof(*m));
	m->version = IMAGER_FORMAT_VERSION;
	strcpy(m->fs_type, "ext4");
	strcpy(m->name, "test \"image\" ✓");
	strcpy(m->created, "2026-11-22T00:00:00Z");
	strcpy(m->tool_version, "0.1.0");
	m->part_size = IMAGER_FRAME_SIZE + 12288;
	m->block_size = 4096;
	m->frame_size = IMAGER_FRAME_SIZE;
	m->frames = 2;
	m->used = used2;
	m->nused = 2;
	m->used_bytes = 8192;
	memset(hashes[0], 0xab, IMAGER_HASH_LEN);
	memset(hashes[1], 0x01, IMAGER_HASH_LEN);
	m->frame_hash = hashes;
	memset(m->content_hash, 0x5a, IMAGER_HASH_LEN);
}

static void test_meta_roundtrip(void **state)
{
	struct imager_meta m, p;
	char *json;

	(void)state;
	sample_meta(&m);
	json = imager_meta_json(&m);
	assert_non_null(json);
	assert_int_equal(imager_meta_parse(json, strlen(json), NULL, &p, NULL), 0);
	assert_string_equal(p.name, m.name);
	assert_string_equal(p.fs_type, "ext4");
	assert_int_equal(p.part_size, m.part_size);
	assert_int_equal(p.frames, 2);
	assert_int_equal(p.nused, 2);
	assert_int_equal(p.used[1].off, 8192);
	assert_memory_equal(p.frame_hash[0], hashes[0], IMAGER_HASH_LEN);
	assert_memory_equal(p.content_hash, m.content_hash, IMAGER_HASH_LEN);
	imager_meta_clear(&p);
	free(json);
}

/* Replace the first occurrence of from by to in json and parse it. */
static int parse_edited(const char *from, const char *to, ip_error *e)
{
	struct imager_meta m, p;
	char *json, *at, buf[8192];
	int r;

	sample_meta(&m);
	json = imager_meta_json(&m);
	at = strstr(json, from);
	assert_non_null(at);
	snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - json), json, to, at + strlen(from));
	free(json);
	r = imager_meta_parse(buf, strlen(buf), NULL, &p, e);
	imager_meta_clear(&p);
	return r;
}

static void test_meta_rejects(void **state)
{
	ip_error e = { 0 };

	(void)state;
	assert_int_equal(parse_edited("\"format_version\":1", "\"format_version\":2", &e), -EPROTONOSUPPORT);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "version 2"));
	assert_int_equal(parse_edited("inplace-image", "other-image", NULL), -EINVAL);
	assert_int_equal(parse_edited("[[0,4096],[8192,4096]]", "[[8192,4096],[0,4096]]", NULL), -EINVAL);
	assert_int_equal(parse_edited("[[0,4096],[8192,4096]]", "[[0,4096],[4000,4096]]", NULL), -EINVAL);
	assert_int_equal(parse_edited("[[0,4096],[8192,4096]]", "[[0,4096],[8192,99999999]]", NULL), -EINVAL);
	assert_int_equal(parse_edited("[[0,4096],[8192,4096]]", "[[0,4096],[8192,0]]", NULL), -EINVAL);
	assert_int_equal(parse_edited("[[0,4096],[8192,4096]]", "[[0,4096],[-1,4096]]", NULL), -EINVAL);
	assert_int_equal(parse_edited("\"used_bytes\":8192", "\"used_bytes\":8193", NULL), -EINVAL);
	assert_int_equal(parse_edited("\"frames\":2", "\"frames\":3", NULL), -EINVAL);
	assert_int_equal(parse_edited("\"frame_hashes\":[\"", "\"frame_hashes\":[\"zz", NULL), -EINVAL);
	assert_int_equal(parse_edited("\"frame_size\":4194304", "\"frame_size\":1", NULL), -EINVAL);
	assert_int_equal(parse_edited("\"fs_type\":\"ext4\"", "\"fs_type\":4", NULL), -EINVAL);
	assert_int_equal(parse_edited("{", "[", NULL), -EINVAL);
	assert_int_equal(imager_meta_parse("{\"format\":", 10, NULL, &(struct imager_meta){ 0 }, NULL), -EINVAL);
}

static void test_meta_against_seektable(void **state)
{
	struct imager_meta m, p;
	struct imager_seektable st = { 0 };
	struct imager_frame f[2] = { { 0, 10, IMAGER_FRAME_SIZE, 0 }, { 10, 10, 12288, IMAGER_FRAME_SIZE } };
	char *json;

	(void)state;
	sample_meta(&m);
	json = imager_meta_json(&m);
	st.n = 2;
	st.f = f;
	st.dsum = IMAGER_FRAME_SIZE + 12288;
	assert_int_equal(imager_meta_parse(json, strlen(json), &st, &p, NULL), 0);
	imager_meta_clear(&p);
	f[1].dsize = 12287;
	st.dsum--;
	assert_int_equal(imager_meta_parse(json, strlen(json), &st, &p, NULL), -EINVAL);
	imager_meta_clear(&p);
	free(json);
}

/* A 10 MiB "partition" in a file, captured with a used map, then opened,
 * verified, damaged and truncated. */
static void test_capture_verify(void **state)
{
	char dir[] = "/tmp/test-image.XXXXXX", src[64], img[80];
	uint64_t size = 10u << 20;
	partctl_extent ext[2] = { { 4096, 1u << 20 }, { 6u << 20, 8192 } };
	partctl_usedmap map = { .block_size = 4096, .size = size, .used = (1u << 20) + 8192, .n = 2,
				.ext = ext, .exact = true };
	struct imager_capture_opts co = { .level = 3, .threads = 2, .name = "unit", .fs_type = "none" };
	struct imager_capture_result res;
	struct imager_verify_opts vo = { 0 };
	imager_image *im;
	ip_disk *d;
	ip_error e = { 0 };
	uint8_t *buf = malloc(size);
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(src, sizeof(src), "%s/src", dir);
	snprintf(img, sizeof(img), "%s/img", dir);
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)(i * 7 + (i >> 12));
	fd = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(ip_write_all(fd, buf, size) == 0);
	close(fd);
	assert_int_equal(ip_disk_open(src, IP_DISK_RDONLY, &d, &e), 0);
	assert_int_equal(imager_capture(d, 0, size, &map, img, &co, &res, &e), 0);
	ip_disk_free(d);
	assert_int_equal(res.frames, 3);
	assert_int_equal(imager_open(img, &im, &e), 0);
	assert_int_equal(imager_frames(im), 3);
	assert_int_equal(imager_used_bytes(im), map.used);
	assert_string_equal(imager_name(im), "unit");
	imager_free(im);
	assert_int_equal(imager_verify(img, &vo, &e), 0);

	/* one flipped byte inside frame 1: named with its offset */
	assert_int_equal(imager_open(img, &im, &e), 0);
	uint64_t at = im->st.f[1].coff + im->st.f[1].csize / 2;
	imager_free(im);
	fd = open(img, O_RDWR);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)at), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)at), 1);
	close(fd);
	assert_int_equal(imager_verify(img, &vo, &e), -EBADMSG);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);
	assert_non_null(strstr(e.msg, "frame 1 at byte offset"));

	/* truncated */
	assert_int_equal(truncate(img, 1000), 0);
	assert_true(imager_open(img, &im, &e) < 0);
	assert_int_equal(e.status, IP_EXIT_BADINPUT);

	{
		const char *rm[] = { "rm", "-rf", dir, NULL };

		assert_int_equal(ip_spawn(rm, NULL, NULL), 0);
	}
	free(buf);
}

/* imager_paths_exist: files looked up inside an ext4 image, symlinks
 * followed, a trailing '*' as a prefix; another filesystem refused. */
static void test_paths_exist(void **state)
{
	char dir[] = "/tmp/test-peek.XXXXXX", tree[64], img[80], p[128];
	const char *const paths[] = { "/boot/vmlinuz-*", "/sbin/grub-install", "/usr/lib/grub/i386-pc",
				      "/boot/initrd*", "/usr/sbin", NULL };
	bool found[5] = { false };
	struct imager_capture_opts co = { .level = 1, .threads = 1 };
	struct imager_capture_result res;
	ip_error e = { 0 };
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(tree, sizeof(tree), "%s/tree", dir);
	snprintf(img, sizeof(img), "%s/os.img", dir);
	snprintf(p, sizeof(p), "%s/boot", tree);
	assert_int_equal(ip_mkdir_p(p, 0755, &e), 0);
	snprintf(p, sizeof(p), "%s/usr/sbin", tree);
	assert_int_equal(ip_mkdir_p(p, 0755, &e), 0);
	snprintf(p, sizeof(p), "%s/boot/vmlinuz-6.1.0-1-amd64", tree);
	fd = open(p, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/usr/sbin/grub-install", tree);
	fd = open(p, O_WRONLY | O_CREAT, 0755);
	assert_true(fd >= 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/sbin", tree);
	assert_int_equal(symlink("usr/sbin", p), 0);
	assert_int_equal(imager_build(tree, "ext4", 16u << 20, img, &co, &res, &e), 0);
	assert_int_equal(imager_paths_exist(img, paths, found, &e), 0);
	assert_true(found[0]);
	assert_true(found[1]);
	assert_false(found[2]);
	assert_false(found[3]);
	assert_true(found[4]);
	{
		const char *rm[] = { "rm", "-rf", dir, NULL };

		assert_int_equal(ip_spawn(rm, NULL, NULL), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seektable_roundtrip),
		cmocka_unit_test(test_seektable_checksum_entries),
		cmocka_unit_test(test_seektable_rejects),
		cmocka_unit_test(test_meta_roundtrip),
		cmocka_unit_test(test_meta_rejects),
		cmocka_unit_test(test_meta_against_seektable),
		cmocka_unit_test(test_capture_verify),
		cmocka_unit_test(test_paths_exist),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
