/* fuzz_image_seektable.c — libFuzzer target for the seek-table parser and
 * for opening a whole image (footer, seek table, metadata frame). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "imager/imager_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imager_seektable st;
	imager_image *img = NULL;
	ip_error e = { 0 };
	char path[64];
	int fd;

	if (imager_seektable_parse(data, size, &st, &e) == 0) {
		/* offsets are cumulative sums */
		uint64_t c = 0;

		for (uint32_t i = 0; i < st.n; i++) {
			if (st.f[i].coff != c)
				__builtin_trap();
			c += st.f[i].csize;
		}
	}
	imager_seektable_clear(&st);

	/* The same bytes as an image file. */
	fd = memfd_create("fuzz-image", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (ip_write_all(fd, data, size) == 0) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (imager_open(path, &img, &e) == 0)
			imager_free(img);
	}
	close(fd);
	return 0;
}
