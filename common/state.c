/* state.c — the state directory: where journals and undo files that
 * must outlive the process live ($INPLACE_STATE_DIR, default
 * /var/lib/inplace), one file per disk and kind. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

#define STATE_DIR_DEFAULT "/var/lib/inplace"

const char *ip_state_dir(void)
{
	const char *d = getenv("INPLACE_STATE_DIR");

	return d && *d ? d : STATE_DIR_DEFAULT;
}

/* Files are keyed by the disk's canonical path and size, so that another
 * disk that later takes the same name is not mistaken for this one. */
int ip_state_file(const char *disk, const char *kind, const char *ext, char *out, size_t n,
		       ip_error *e)
{
	char real[PATH_MAX], key[PATH_MAX];
	ip_disk *d = NULL;
	uint64_t size;
	size_t k = 0;
	int r;

	if (!realpath(disk, real))
		return ip_bad(e, -errno, "cannot find %s: %s", disk, strerror(errno));
	r = ip_disk_open(real, IP_DISK_RDONLY, &d, e);
	if (r < 0)
		return r;
	size = ip_disk_size(d);
	ip_disk_free(d);
	for (const char *c = real; *c && k < sizeof(key) - 1; c++)
		key[k++] = isalnum((unsigned char)*c) || *c == '.' || *c == '-' ? *c : '_';
	key[k] = '\0';
	if ((size_t)snprintf(out, n, "%s/%s%s-%llu.%s", ip_state_dir(), kind, key, (unsigned long long)size, ext) >= n)
		return ip_bad(e, -ENAMETOOLONG, "the state file name for %s is too long", disk);
	return 0;
}

int ip_state_mkdir(ip_error *e)
{
	return ip_mkdir_p(ip_state_dir(), 0700, e);
}
