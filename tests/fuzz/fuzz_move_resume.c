/* fuzz_move_resume.c — libFuzzer target for the move journal's meaning, not
 * only its framing: the input becomes a move record (and the used map after
 * it) that the harness writes through ip_journal_write, so its checksums
 * are valid, on a small MBR disk image in tmpfs; then `part resume` plans
 * and carries out what the record asks.  Whatever the record says, resume
 * must not crash, hang or leak, must refuse in one line, and must write
 * nowhere but the table's sector, the journal's area and the partition's
 * recorded destination inside the disk (the disk never grows).
 *
 * Input: byte 0 holds flags that make fields right (so that the fuzzer gets
 * past the identity and table checks), then the record's bytes (zero
 * padded), then the map's extents.  The disk: 2304 KiB, partition 1 at
 * 1 MiB, 64 KiB long, filled with a pattern. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "partctl/internal.h"
#include "tests/fuzz/fuzz_tmp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DISK (2304ULL << 10)
#define PART_AT (1ULL << 20)
#define PART_LEN (64ULL << 10)
#define TAIL (MOVE_GAP_END - MOVE_TAIL_LEN)
#define MAP_AT (TAIL + 2 * IP_JOURNAL_SLOT)

enum {
	F_KIND = 1 << 0,     /* kind = MOVE_KIND */
	F_DISK = 1 << 1,     /* disk size, sector size and identity of this disk */
	F_FROM = 1 << 2,     /* from = the partition's start (not moved yet) */
	F_TO = 1 << 3,       /* to = the partition's start (the table moved already) */
	F_SIZE = 1 << 4,     /* size = the partition's size */
	F_MAP = 1 << 5,      /* the map's header and checksum match the record */
	F_HEAD = 1 << 6,     /* the journal at the head of the gap (older versions) */
	F_N = 1 << 7,        /* n = 1 */
};

static char path[300];
static uint8_t *pristine, *disk;
static uint8_t ident[16];
static int dfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = fz_tmpdir("move");
	partctl_table *t = NULL;
	uint8_t legacy[16];
	ip_error e = { 0 };
	uint8_t *mbr;
	int fd;

	(void)argc, (void)argv;
	setenv("INPLACE_STATE_DIR", dir, 1);   /* no pointer, no shrink journal */
	snprintf(path, sizeof(path), "%s/disk.img", dir);
	pristine = calloc(1, DISK);
	if (!pristine)
		abort();
	/* an MBR: signature 0x1e55f00d, one Linux partition at sector 2048 */
	mbr = pristine;
	mbr[440] = 0x0d, mbr[441] = 0xf0, mbr[442] = 0x55, mbr[443] = 0x1e;
	mbr[446 + 4] = 0x83;
	mbr[446 + 8] = (PART_AT / 512) & 0xff, mbr[446 + 9] = (PART_AT / 512) >> 8;
	mbr[446 + 12] = (PART_LEN / 512) & 0xff, mbr[446 + 13] = (PART_LEN / 512) >> 8;
	mbr[510] = 0x55, mbr[511] = 0xaa;
	for (uint64_t i = 0; i < PART_LEN; i++)
		pristine[PART_AT + i] = (uint8_t)(i * 7 + i / 4096 + 1);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ip_write_all(fd, pristine, DISK) < 0)
		abort();
	disk = mmap(NULL, DISK, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	dfd = fd;
	if (disk == MAP_FAILED)
		abort();
	if (partctl_table_open(path, false, &t, &e) < 0 || partctl_move_disk_identity(t, ident, legacy, &e) < 0) {
		fprintf(stderr, "fuzz: %s\n", e.msg);
		abort();
	}
	partctl_table_free(t);
	return 0;
}

/* Bytes [lo, hi) of the disk are as they were. */
static void same(uint64_t lo, uint64_t hi)
{
	if (lo < hi && memcmp(disk + lo, pristine + lo, hi - lo))
		__builtin_trap();
}

/* The disk outside what the record may write is as it was: the boot
 * sector (the table), the journal's slots where it was written, the gap's
 * tail (slots, map) and the partition's recorded destination above 1 MiB.
 * The file has not grown. */
static void check_writes(const struct move_rec *rec, uint64_t head)
{
	/* no partition, so no destination, lies below 1 MiB */
	uint64_t lo = rec->to < MOVE_GAP_END ? MOVE_GAP_END : rec->to < DISK ? rec->to : DISK;
	uint64_t hi = rec->to + rec->size < rec->to || rec->to + rec->size > DISK ? DISK : rec->to + rec->size;
	uint64_t pos = 0;
	struct stat st;

	if (hi < lo)
		hi = lo;
	if (fstat(dfd, &st) < 0 || (uint64_t)st.st_size != DISK)
		__builtin_trap();
	/* allowed: [0, 512), [head, head + 8 KiB), [TAIL, 1 MiB), [lo, hi) */
	uint64_t cuts[][2] = { { 0, 512 }, { head, head + 2 * IP_JOURNAL_SLOT }, { TAIL, MOVE_GAP_END }, { lo, hi } };

	/* the cuts sorted by start (head < TAIL always; lo anywhere) */
	for (int pass = 0; pass < 4; pass++)
		for (int i = 0; i + 1 < 4; i++)
			if (cuts[i][0] > cuts[i + 1][0]) {
				uint64_t a = cuts[i][0], b = cuts[i][1];

				cuts[i][0] = cuts[i + 1][0], cuts[i][1] = cuts[i + 1][1];
				cuts[i + 1][0] = a, cuts[i + 1][1] = b;
			}
	for (int i = 0; i < 4; i++) {
		if (cuts[i][0] > pos)
			same(pos, cuts[i][0]);
		if (cuts[i][1] > pos)
			pos = cuts[i][1];
	}
	same(pos, DISK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct move_rec rec = { 0 };
	uint8_t flags = size ? data[0] : 0, map[MOVE_TAIL_LEN - 2 * IP_JOURNAL_SLOT];
	size_t mlen = 0;
	ip_disk *d = NULL;
	ip_journal *j = NULL;
	struct partctl_move_info info;
	ip_error e = { 0 };
	bool did;
	int r;

	if (size > 1 + sizeof(rec) + sizeof(map) - MAP_HDR)
		return 0;
	if (size > 1)
		memcpy(&rec, data + 1, size - 1 < sizeof(rec) ? size - 1 : sizeof(rec));
	if (flags & F_KIND)
		memcpy(rec.kind, MOVE_KIND, 8);
	if (flags & F_DISK) {
		rec.disk_size = DISK;
		rec.sector_size = 512;
		memcpy(rec.disk_id, ident, 16);
	}
	if (flags & F_FROM)
		rec.from = PART_AT;
	if (flags & F_TO)
		rec.to = PART_AT;
	if (flags & F_SIZE)
		rec.size = PART_LEN;
	if (flags & F_N)
		rec.n = 1;

	/* the disk as it was, then the map and the record */
	if (memcmp(disk, pristine, DISK))
		memcpy(disk, pristine, DISK);
	if (ftruncate(dfd, DISK) < 0)
		abort();
	if (size > 1 + sizeof(rec)) {
		mlen = size - 1 - sizeof(rec);
		memset(map, 0, MAP_HDR);
		memcpy(map + MAP_HDR, data + 1 + sizeof(rec), mlen);
		mlen += MAP_HDR;
		if (flags & F_MAP) {
			uint64_t n = (mlen - MAP_HDR) / 16;

			memcpy(map, MAP_MAGIC, 8);
			memcpy(map + 8, &n, 8);
			rec.map_n = n;
			ip_checksum(map, MAP_HDR + 16 * n, rec.map_sum);
		}
		memcpy(disk + MAP_AT, map, mlen);
	}
	if (ip_disk_open(path, IP_DISK_RDWR, &d, &e) < 0 ||
	    ip_journal_open_disk(d, flags & F_HEAD ? 4096 : TAIL, &j, &e) < 0 ||
	    ip_journal_write(j, &rec, sizeof(rec), &e) < 0) {
		fprintf(stderr, "fuzz: %s\n", e.msg);
		abort();
	}
	ip_journal_free(j);
	ip_disk_free(d);

	r = partctl_resume_ex(path, NULL, &did, &info, &e);
	if (r < 0 && e.code != -ENOMEM && (!e.status || !e.msg[0] || strchr(e.msg, '\n')))
		__builtin_trap();
	check_writes(&rec, flags & F_HEAD ? 4096 : TAIL);
	return 0;
}
