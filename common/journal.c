/* journal.c — a crash-safe progress record: two alternating checksummed
 * slots on a disk region or in a file.
 *
 * On-disk format: two slots of IP_JOURNAL_SLOT (4096) bytes, back to back.
 * Each slot, little endian:
 *
 *   0   magic[8]     "IPJRNL01": tells our slot from zeros or foreign data
 *   8   version u32  format version (1); a newer one is refused, not guessed
 *   12  len u32      payload bytes used (<= IP_JOURNAL_PAYLOAD_MAX)
 *   16  seq u64      write sequence; the valid slot with the higher one wins
 *   24  sum[16]      BLAKE2b-128 of bytes [0, 128 + len) with sum zeroed:
 *                    a torn or half-written slot fails it and is ignored
 *   40  reserved     zeros up to byte 128
 *   128 payload      the caller's record
 *
 * A write goes to the slot that does not hold the newest record and is
 * flushed before returning, so a torn write can only damage the slot being
 * replaced: the previous record stays readable.  A slot is a 4096-byte
 * aligned block (the caller aligns the region), which most devices write
 * atomically anyway; the checksum covers the case where they do not.
 * Clearing zeroes the older slot first, flushes, then the newer one: a crash
 * in between leaves only the newest record, never resurrects an older one.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"

#define J_MAGIC "IPJRNL01"
#define J_VERSION 1u
#define J_HDR 128u

_Static_assert(J_HDR + IP_JOURNAL_PAYLOAD_MAX == IP_JOURNAL_SLOT, "slot layout");

struct ip_journal {
	ip_disk *disk;      /* disk back end (not owned), or NULL */
	uint64_t off;       /* disk back end: byte offset of slot 0 */
	int fd;             /* file back end, or -1 */
	char *path;         /* file back end: for messages */
	uint64_t seq;       /* sequence of the newest valid record (0: none) */
	int newest;         /* slot holding it, -1 when none */
};

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

static const char *j_where(const ip_journal *j, char *buf, size_t len)
{
	if (j->disk)
		snprintf(buf, len, "%s at byte %llu", ip_disk_path(j->disk), (unsigned long long)j->off);
	else
		snprintf(buf, len, "%s", j->path);
	return buf;
}

static int slot_read(ip_journal *j, int i, uint8_t *buf, ip_error *e)
{
	if (j->disk)
		return ip_disk_read(j->disk, buf, IP_JOURNAL_SLOT, j->off + (uint64_t)i * IP_JOURNAL_SLOT, e);
	ssize_t n = pread(j->fd, buf, IP_JOURNAL_SLOT, (off_t)i * IP_JOURNAL_SLOT);
	if (n < 0)
		return ip_fail(e, -errno, "cannot read the journal %s: %s", j->path, strerror(errno));
	/* a short file (new, or cut short) reads as zeros: no record */
	memset(buf + n, 0, IP_JOURNAL_SLOT - (size_t)n);
	return 0;
}

static int slot_write(ip_journal *j, int i, const uint8_t *buf, ip_error *e)
{
	int r;

	if (j->disk) {
		r = ip_disk_write(j->disk, buf, IP_JOURNAL_SLOT, j->off + (uint64_t)i * IP_JOURNAL_SLOT, e);
		if (r == 0)
			r = ip_disk_flush(j->disk, e);
		return r;
	}
	ssize_t n = pwrite(j->fd, buf, IP_JOURNAL_SLOT, (off_t)i * IP_JOURNAL_SLOT);
	if (n >= 0 && n != IP_JOURNAL_SLOT)
		errno = ENOSPC;
	if (n != IP_JOURNAL_SLOT || fdatasync(j->fd) < 0)
		return ip_fail(e, -errno, "cannot write the journal %s: %s: put it on a writable filesystem with free space",
			       j->path, strerror(errno));
	return 0;
}

/* 1 when buf holds a valid record (seq and len filled), 0 otherwise. */
static int slot_parse(const uint8_t *buf, uint64_t *seq, uint32_t *len)
{
	uint8_t tmp[IP_JOURNAL_SLOT];
	uint32_t l;

	if (memcmp(buf, J_MAGIC, 8) != 0 || get32(buf + 8) != J_VERSION)
		return 0;
	l = get32(buf + 12);
	if (l > IP_JOURNAL_PAYLOAD_MAX)
		return 0;
	memcpy(tmp, buf, J_HDR + l);
	memset(tmp + 24, 0, IP_CHECKSUM_LEN);
	if (!ip_checksum_ok(tmp, J_HDR + l, buf + 24))
		return 0;
	*seq = get64(buf + 16);
	*len = l;
	return *seq > 0;
}

/* Find the newest valid slot; copy its payload out when payload != NULL. */
static int j_scan(ip_journal *j, void *payload, size_t *len, ip_error *e)
{
	uint8_t buf[2][IP_JOURNAL_SLOT];
	uint64_t seq[2] = { 0, 0 };
	uint32_t l[2] = { 0, 0 };
	int ok[2], r, best;

	for (int i = 0; i < 2; i++) {
		r = slot_read(j, i, buf[i], e);
		if (r < 0)
			return r;
		ok[i] = slot_parse(buf[i], &seq[i], &l[i]);
	}
	if (!ok[0] && !ok[1]) {
		j->seq = 0;
		j->newest = -1;
		return -ENOENT;
	}
	best = !ok[0] ? 1 : !ok[1] ? 0 : seq[1] > seq[0] ? 1 : 0;
	j->seq = seq[best];
	j->newest = best;
	if (payload) {
		if (l[best] > *len) {
			char w[600];
			return ip_fail(e, -EOVERFLOW, "journal record in %s is larger than expected: it was written by another version of inplace",
				       j_where(j, w, sizeof(w)));
		}
		memcpy(payload, buf[best] + J_HDR, l[best]);
		*len = l[best];
	}
	return 0;
}

static int j_new(ip_journal **out, ip_journal **j, ip_error *e)
{
	*out = NULL;
	*j = calloc(1, sizeof(**j));
	if (!*j)
		return ip_fail(e, -ENOMEM, "out of memory");
	(*j)->fd = -1;
	(*j)->newest = -1;
	return 0;
}

int ip_journal_open_disk(ip_disk *d, uint64_t off, ip_journal **out, ip_error *e)
{
	ip_journal *j;
	int r;

	r = j_new(out, &j, e);
	if (r < 0)
		return r;
	if (off % 512 || off + 2 * IP_JOURNAL_SLOT > ip_disk_size(d)) {
		free(j);
		return ip_fail(e, -EINVAL, "internal error: journal region at byte %llu does not fit %s",
			       (unsigned long long)off, ip_disk_path(d));
	}
	j->disk = d;
	j->off = off;
	r = j_scan(j, NULL, NULL, e);
	if (r < 0 && r != -ENOENT) {
		ip_journal_free(j);
		return r;
	}
	*out = j;
	return 0;
}

int ip_journal_open_file(const char *path, ip_journal **out, ip_error *e)
{
	ip_journal *j;
	struct stat st;
	bool created;
	int r;

	r = j_new(out, &j, e);
	if (r < 0)
		return r;
	created = stat(path, &st) < 0;
	j->path = strdup(path);
	if (!j->path) {
		free(j);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	j->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (j->fd < 0) {
		r = -errno;
		ip_journal_free(j);
		return ip_fail(e, r, "cannot open the journal %s: %s: choose a writable place", path,
			       strerror(-r));
	}
	if (fstat(j->fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		ip_journal_free(j);
		return ip_bad(e, -EINVAL, "journal %s is not a regular file: give a file path", path);
	}
	/* a new file must survive a crash too: its directory entry as well */
	if (created && (r = ip_fsync_parent(path, e)) < 0) {
		ip_journal_free(j);
		return r;
	}
	r = j_scan(j, NULL, NULL, e);
	if (r < 0 && r != -ENOENT) {
		ip_journal_free(j);
		return r;
	}
	*out = j;
	return 0;
}

int ip_journal_read(ip_journal *j, void *payload, size_t *len, ip_error *e)
{
	return j_scan(j, payload, len, e);
}

int ip_journal_write(ip_journal *j, const void *payload, size_t len, ip_error *e)
{
	uint8_t buf[IP_JOURNAL_SLOT];
	int target, r;

	if (len > IP_JOURNAL_PAYLOAD_MAX)
		return ip_fail(e, -EINVAL, "internal error: journal record of %zu bytes is too large", len);
	memset(buf, 0, sizeof(buf));
	memcpy(buf, J_MAGIC, 8);
	put32(buf + 8, J_VERSION);
	put32(buf + 12, (uint32_t)len);
	put64(buf + 16, j->seq + 1);
	if (len)
		memcpy(buf + J_HDR, payload, len);
	ip_checksum(buf, J_HDR + len, buf + 24);
	target = j->newest == 0 ? 1 : 0;
	r = slot_write(j, target, buf, e);
	if (r < 0)
		return r;
	j->seq++;
	j->newest = target;
	return 0;
}

int ip_journal_clear(ip_journal *j, ip_error *e)
{
	uint8_t zero[IP_JOURNAL_SLOT];
	int first = j->newest == 0 ? 1 : 0;
	int r;

	memset(zero, 0, sizeof(zero));
	r = slot_write(j, first, zero, e);
	if (r == 0)
		r = slot_write(j, !first, zero, e);
	if (r < 0)
		return r;
	j->seq = 0;
	j->newest = -1;
	return 0;
}

void ip_journal_free(ip_journal *j)
{
	if (!j)
		return;
	if (j->fd >= 0)
		close(j->fd);
	free(j->path);
	free(j);
}
