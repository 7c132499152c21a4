/* estimate.c — how large a store will be, before writing it: the bytes a
 * file really holds (holes are not archived) and a compression ratio
 * measured on a bounded sample of each user's data with zstd at the spec's
 * level, plus pax headers, the manifest and a safety margin. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "migrate/internal.h"

/* Per file at most this much is sampled, from its first data region, so
 * that many files (not the first large one) make up the sample. */
#define SAMPLE_PER_FILE (128u << 10)

int mig_sampler_init(struct mig_sampler *s, unsigned level)
{
	memset(s, 0, sizeof(*s));
	/* the slow levels get a smaller sample: bounded time either way */
	s->budget = level <= 9 ? 16u << 20 : level <= 15 ? 8u << 20 : 2u << 20;
	s->z = ZSTD_createCCtx();
	s->in = malloc(SAMPLE_PER_FILE);
	s->out = malloc(ZSTD_CStreamOutSize());
	if (!s->z || !s->in || !s->out) {
		mig_sampler_free(s);
		return -ENOMEM;
	}
	/* one stream, like the archive: redundancy between files counts */
	ZSTD_CCtx_setParameter(s->z, ZSTD_c_compressionLevel, (int)level);
	return 0;
}

void mig_sampler_free(struct mig_sampler *s)
{
	ZSTD_freeCCtx(s->z);
	free(s->in);
	free(s->out);
	s->z = NULL;
	s->in = s->out = NULL;
}

/* Compress p with the stream so far; the bytes it produced, flushed so
 * that they belong to this input alone. */
static uint64_t feed(struct mig_sampler *s, const void *p, size_t n, ZSTD_EndDirective end)
{
	ZSTD_inBuffer in = { p, n, 0 };
	size_t cap = ZSTD_CStreamOutSize();
	uint64_t made = 0;

	for (;;) {
		ZSTD_outBuffer out = { s->out, cap, 0 };
		size_t left = ZSTD_compressStream2(s->z, &out, &in, end);

		if (ZSTD_isError(left)) {
			s->failed = true;
			return n;
		}
		made += out.pos;
		if (left == 0 && in.pos == in.size)
			return made;
	}
}

uint64_t mig_file_data_bytes(const struct stat *st)
{
	uint64_t alloc = (uint64_t)st->st_blocks * 512, size = (uint64_t)st->st_size;

	/* no block at all: a hole, unless the data sits in the inode */
	if (!alloc)
		return size <= 4096 ? size : 0;
	return alloc < size ? alloc : size;
}

/* Each file's data is estimated at its own sample's ratio, so that one
 * large file of random data is not judged by many small text files.
 * Within the budget a file gives up to 128 KiB; past it, only files of a
 * MiB or more are still sampled (32 KiB each, up to four budgets), and
 * the rest take the ratio measured so far. */
void mig_sampler_add(struct mig_sampler *s, int fd, const struct stat *st)
{
	uint64_t data = S_ISREG(st->st_mode) ? mig_file_data_bytes(st) : 0;
	size_t want = SAMPLE_PER_FILE;
	uint64_t made;
	off_t off;
	ssize_t n;

	if (!data)
		return;
	s->data += data;
	if (s->sampled >= s->budget) {
		if (data < (1u << 20) || s->sampled >= 4 * s->budget)
			want = 0;
		else
			want = 32u << 10;
	} else if (want > s->budget - s->sampled) {
		want = (size_t)(s->budget - s->sampled);
	}
	if (!s->z || s->failed || !want) {
		s->unsampled += data;
		return;
	}
	/* a sparse file's first bytes may be a hole: sample its data */
	off = lseek(fd, 0, SEEK_DATA);
	if (off < 0)
		off = 0;
	do
		n = pread(fd, s->in, want, off);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		s->unsampled += data;
		return;
	}
	made = feed(s, s->in, (size_t)n, ZSTD_e_flush);
	s->sampled += (uint64_t)n;
	s->compressed += made;
	s->sampled_files++;
	/* ceiling: never below what was measured */
	s->estimate += (made * data + (uint64_t)n - 1) / (uint64_t)n;
}

uint64_t mig_sampler_finish(struct mig_sampler *s)
{
	/* nothing measured: assume nothing compresses */
	s->ratio = s->failed || !s->sampled ? 1.0 : (double)s->compressed / (double)s->sampled;
	if (s->failed)
		return s->data;
	return s->estimate + (uint64_t)((double)s->unsampled * s->ratio) + 1;
}

/* Archive bytes of a user: data compressed at the sampled ratio; each
 * entry's pax headers (1.5 KiB before compression, counted at a third);
 * zstd's block overhead on incompressible data is inside the margin. */
uint64_t mig_estimate_archive(uint64_t compressed, uint64_t files)
{
	return compressed + files * (MIG_PAX_OVERHEAD / 3) + 4096;
}

/* The store: archives and manifest, accounts and machine state (a
 * megabyte covers keys and network files), a block of slack per file of
 * the store, then a 10% margin, rounded up to MiB. */
uint64_t mig_estimate_store(uint64_t archives, uint64_t manifest, size_t narchives)
{
	uint64_t s = archives + manifest + (1u << 20) + (uint64_t)(narchives + 4) * 4096;

	s += s / 10;
	return (s + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
}
