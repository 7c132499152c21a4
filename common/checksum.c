/* checksum.c — short BLAKE2b checksums for on-disk records. */
#include <sodium.h>
#include <string.h>

#include "common/common.h"

void ip_checksum(const void *buf, size_t len, uint8_t out[IP_CHECKSUM_LEN])
{
	crypto_generichash(out, IP_CHECKSUM_LEN, buf, len, NULL, 0);
}

bool ip_checksum_ok(const void *buf, size_t len, const uint8_t sum[IP_CHECKSUM_LEN])
{
	uint8_t now[IP_CHECKSUM_LEN];

	ip_checksum(buf, len, now);
	return sodium_memcmp(now, sum, IP_CHECKSUM_LEN) == 0;
}
