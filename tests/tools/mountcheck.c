/* mountcheck.c — test driver for ip_check_range_unmounted and
 * ip_kernel_sync_partitions: `mountcheck check PATH OFF LEN` exits 0 when
 * the range is free, 3 when it is in use (the message on stdout);
 * `mountcheck sync DISK` tells the kernel about DISK's table. */
#include <string.h>

#include "common/common.h"

int main(int argc, char **argv)
{
	ip_error e = { 0 };
	int r;

	if (argc == 5 && !strcmp(argv[1], "check")) {
		r = ip_check_range_unmounted(argv[2], strtoull(argv[3], NULL, 0),
					     strtoull(argv[4], NULL, 0), &e);
		if (r < 0)
			printf("%s\n", e.msg);
		return r == 0 ? 0 : 3;
	}
	if (argc == 3 && !strcmp(argv[1], "sync")) {
		r = ip_kernel_sync_partitions(argv[2], &e);
		if (r < 0)
			fprintf(stderr, "%s\n", e.msg);
		return r == 0 ? 0 : 1;
	}
	fprintf(stderr, "usage: mountcheck check PATH OFF LEN | mountcheck sync DISK\n");
	return 2;
}
