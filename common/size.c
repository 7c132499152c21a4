/* size.c — the SIZE syntax of the CLI (512MiB, 8G, 1000000, 2048s). */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"

static const struct {
	const char *suffix;
	uint64_t mult;
} units[] = {
	{ "", 1 }, { "b", 1 },
	{ "k", 1ULL << 10 }, { "kib", 1ULL << 10 }, { "kb", 1000ULL },
	{ "m", 1ULL << 20 }, { "mib", 1ULL << 20 }, { "mb", 1000000ULL },
	{ "g", 1ULL << 30 }, { "gib", 1ULL << 30 }, { "gb", 1000000000ULL },
	{ "t", 1ULL << 40 }, { "tib", 1ULL << 40 }, { "tb", 1000000000000ULL },
};

int ip_parse_size(const char *s, unsigned sector_size, uint64_t *out, ip_error *e)
{
	const char *p = s;
	uint64_t whole = 0, frac = 0, frac_div = 1, mult = 0;
	bool digits = false;

	if (!s)
		return ip_bad(e, -EINVAL, "missing size");
	while (isspace((unsigned char)*p))
		p++;
	for (; isdigit((unsigned char)*p); p++) {
		if (whole > (UINT64_MAX - 9) / 10)
			return ip_bad(e, -ERANGE, "size '%s' is too large", s);
		whole = whole * 10 + (uint64_t)(*p - '0');
		digits = true;
	}
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++) {
			if (frac_div < 1000000000ULL) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				frac_div *= 10;
			}
			digits = true;
		}
	}
	if (!digits)
		goto bad;
	while (isspace((unsigned char)*p))
		p++;
	if (!strcasecmp(p, "s")) {
		if (!sector_size)
			return ip_bad(e, -EINVAL, "size '%s' is in sectors, but the sector size is unknown", s);
		if (frac)
			goto bad;
		mult = sector_size;
	} else {
		for (size_t i = 0; i < IP_ARRAY_SIZE(units); i++)
			if (!strcasecmp(p, units[i].suffix)) {
				mult = units[i].mult;
				break;
			}
		if (!mult)
			goto bad;
	}
	if (whole > UINT64_MAX / mult)
		return ip_bad(e, -ERANGE, "size '%s' is too large", s);
	*out = whole * mult + (frac * mult) / frac_div;
	return 0;
bad:
	return ip_bad(e, -EINVAL,
		      "invalid size '%s': use bytes, a unit such as 512MiB or 8G, or sectors such as 2048s", s);
}

char *ip_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const names[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	unsigned i = 0;

	while (v >= 1024.0 && i + 1 < IP_ARRAY_SIZE(names)) {
		v /= 1024.0;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, names[i]);
	return buf;
}

int ip_parse_bool(const char *v, bool *out)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcmp(v, "1"))
		*out = true;
	else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off") || !strcmp(v, "0"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}
