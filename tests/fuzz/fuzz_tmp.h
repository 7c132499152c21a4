/* fuzz_tmp.h — a scratch directory for the fuzz targets that go through
 * files: in /dev/shm when there is one (a target writes its input once per
 * run: on a busy disk that is 20x slower), removed at exit. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/common.h"

static char fz_tmp[256];

static void fz_tmp_remove(void)
{
	const char *rm[] = { "rm", "-rf", fz_tmp, NULL };

	if (fz_tmp[0])
		ip_spawn(rm, NULL, NULL);
}

/* Make the directory once and return it. */
static const char *fz_tmpdir(const char *tag)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	snprintf(fz_tmp, sizeof(fz_tmp), "%s/inplace-fuzz-%s.XXXXXX", base, tag);
	if (!mkdtemp(fz_tmp))
		abort();
	atexit(fz_tmp_remove);
	return fz_tmp;
}
