/* iolog-replay.c — rebuild what a power cut could have left on a disk from
 * an INPLACE_IOLOG write log (see common/common.h for the format).
 *
 *   iolog-replay LOG                 print the number of flush records
 *   iolog-replay LOG IMG K SEED      apply to IMG (a copy of the disk as it
 *                                    was before the logged run) every write
 *                                    logged before flush K (K = 0: none),
 *                                    then, of the writes between flush K and
 *                                    flush K+1 (those in flight when the
 *                                    power went), a random subset chosen by
 *                                    SEED: each is lost, written whole, or
 *                                    torn (a random subset of its 512-byte
 *                                    sectors reaches the disk).
 *
 * Prints "applied W writes, U of N unflushed (T torn)" on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"

static uint64_t rng_state;

static uint32_t rnd(void)
{
	/* xorshift64*: a fixed, documented sequence per seed */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static int die(const char *what)
{
	fprintf(stderr, "iolog-replay: %s: %s\n", what, errno ? strerror(errno) : "bad log");
	return 1;
}

static int read_full(FILE *f, void *buf, size_t len)
{
	return fread(buf, 1, len, f) == len ? 0 : -1;
}

static int pwrite_full(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct ip_iolog_rec rec;
	char magic[8];
	FILE *f;
	uint8_t *buf = NULL;
	size_t cap = 0;
	unsigned long flushes = 0, k = 0, applied = 0, inflight = 0, kept = 0, torn = 0;
	int fd = -1;

	if (argc != 2 && argc != 5) {
		fprintf(stderr, "usage: iolog-replay LOG [IMG K SEED]\n");
		return 2;
	}
	f = fopen(argv[1], "rb");
	if (!f)
		return die(argv[1]);
	errno = 0;
	if (read_full(f, magic, 8) < 0 || memcmp(magic, IP_IOLOG_MAGIC, 8))
		return die("not an I/O log");
	if (argc == 5) {
		k = strtoul(argv[3], NULL, 10);
		rng_state = strtoull(argv[4], NULL, 10) * 2654435761ULL + 88172645463325252ULL;
		fd = open(argv[2], O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return die(argv[2]);
	}
	while (read_full(f, &rec, sizeof(rec)) == 0) {
		if (rec.type == IP_IOLOG_FLUSH) {
			flushes++;
			if (fd >= 0 && flushes > k)
				break; /* the power went before this flush completed */
			continue;
		}
		if (rec.type != IP_IOLOG_WRITE || rec.len > (1ULL << 32)) {
			errno = 0;
			return die("corrupt record");
		}
		if (rec.len > cap) {
			free(buf);
			cap = (size_t)rec.len;
			buf = malloc(cap);
			if (!buf)
				return die("malloc");
		}
		errno = 0;
		if (read_full(f, buf, (size_t)rec.len) < 0)
			return die("truncated record");
		if (fd < 0)
			continue;
		if (flushes < k) {
			if (pwrite_full(fd, buf, (size_t)rec.len, rec.off) < 0)
				return die("write");
			applied++;
			continue;
		}
		/* in flight when the power went */
		inflight++;
		switch (rnd() % 5) {
		case 0: case 1:
			break; /* lost */
		case 2: case 3:
			if (pwrite_full(fd, buf, (size_t)rec.len, rec.off) < 0)
				return die("write");
			kept++;
			break;
		default:
			for (uint64_t s = 0; s < rec.len; s += 512) {
				size_t n = rec.len - s < 512 ? (size_t)(rec.len - s) : 512;

				if (rnd() & 1 && pwrite_full(fd, buf + s, n, rec.off + s) < 0)
					return die("write");
			}
			torn++;
			break;
		}
	}
	if (fd < 0) {
		printf("%lu\n", flushes);
	} else {
		if (fsync(fd) < 0 || close(fd) < 0)
			return die("close");
		printf("applied %lu writes, %lu of %lu unflushed (%lu torn)\n", applied, kept, inflight, torn);
	}
	free(buf);
	fclose(f);
	return 0;
}
