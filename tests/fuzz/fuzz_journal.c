/* fuzz_journal.c — libFuzzer target for the journal file that move and
 * shrink keep (common/journal.c: two slots with magic, version, sequence,
 * length and checksum): any bytes as the file give a record of at most
 * IP_JOURNAL_PAYLOAD_MAX bytes, -ENOENT (no valid slot) or a refusal of
 * one line; a record read must be read again the same, and survive a
 * write-then-read round trip. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "tests/fuzz/fuzz_tmp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	snprintf(path, sizeof(path), "%s/journal", fz_tmpdir("journal"));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t a[IP_JOURNAL_PAYLOAD_MAX + 64], b[IP_JOURNAL_PAYLOAD_MAX + 64];
	size_t la = IP_JOURNAL_PAYLOAD_MAX, lb = IP_JOURNAL_PAYLOAD_MAX;
	ip_journal *j = NULL;
	ip_error e = { 0 };
	int fd, r;

	if (size > 2 * IP_JOURNAL_SLOT + 512)
		return 0;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (size && ip_write_all(fd, data, size) < 0))
		abort();
	close(fd);
	r = ip_journal_open_file(path, &j, &e);
	if (r < 0) {
		if (!e.msg[0] || strchr(e.msg, '\n'))
			__builtin_trap();
		return 0;
	}
	r = ip_journal_read(j, a, &la, &e);
	if (r == 0) {
		if (la > IP_JOURNAL_PAYLOAD_MAX)
			__builtin_trap();
		if (ip_journal_read(j, b, &lb, &e) != 0 || lb != la || memcmp(a, b, la))
			__builtin_trap();
		/* what was read is written and read back unchanged */
		if (ip_journal_write(j, a, la, &e) == 0) {
			lb = IP_JOURNAL_PAYLOAD_MAX;
			if (ip_journal_read(j, b, &lb, &e) != 0 || lb != la || memcmp(a, b, la))
				__builtin_trap();
		}
	} else if (r != -ENOENT && (!e.msg[0] || strchr(e.msg, '\n'))) {
		__builtin_trap();
	}
	ip_journal_free(j);
	return 0;
}
