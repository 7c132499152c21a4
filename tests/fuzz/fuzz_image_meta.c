/* fuzz_image_meta.c — libFuzzer target for the image metadata parser: any
 * bytes must give 0 or a bad-input error, never a crash or a leak. */
#include <stdint.h>
#include <string.h>

#include "imager/imager_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imager_meta m;
	ip_error e = { 0 };

	if (imager_meta_parse((const char *)data, size, NULL, &m, &e) == 0) {
		/* A parsed document must survive a round trip. */
		char *json = imager_meta_json(&m);
		struct imager_meta m2;

		if (json && imager_meta_parse(json, strlen(json), NULL, &m2, &e) != 0)
			__builtin_trap();
		if (json)
			imager_meta_clear(&m2);
		free(json);
	}
	imager_meta_clear(&m);
	return 0;
}
