/* fuzz_shrink_rec.c — libFuzzer target for the shrink record (the payload
 * of the shrink journal that `part resume` trusts): parsed by the same
 * function resume uses, never a crash; a record that parses names a
 * partition and both sizes, and every text field is NUL-terminated within
 * its field. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "partctl/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct shrink_rec rec;
	char *buf;
	ip_error e = { 0 };
	int r;

	if (size > IP_JOURNAL_PAYLOAD_MAX)
		return 0;   /* the journal holds no more */
	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	r = partctl_shrink_rec_parse(buf, "/var/lib/inplace/shrink.journal", &rec, &e);
	if (r == 0) {
		if (!rec.n || !rec.old_size || !rec.new_size || !rec.phase[0] ||
		    strnlen(rec.disk, sizeof(rec.disk)) == sizeof(rec.disk) ||
		    strnlen(rec.fs, sizeof(rec.fs)) == sizeof(rec.fs) ||
		    strnlen(rec.dev, sizeof(rec.dev)) == sizeof(rec.dev))
			__builtin_trap();
	} else if (!e.msg[0] || strchr(e.msg, '\n')) {
		__builtin_trap();
	}
	free(buf);
	return 0;
}
