/* fuzz_state.c — libFuzzer target for a run's state.json, read by
 * bootstage_state_load (the pipeline trusts it to resume after a reboot):
 * any bytes give a state or a refusal of one line, never a crash or a
 * leak; a state that loads must load again with its own job hash. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootstage/bootstage.h"
#include "tests/fuzz/fuzz_tmp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256], path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	snprintf(dir, sizeof(dir), "%s", fz_tmpdir("state"));
	snprintf(path, sizeof(path), "%s/state.json", dir);
	return 0;
}

static void check(int r, const ip_error *e)
{
	if (r < 0 && r != -ENOENT && e->code != -ENOMEM && (!e->status || !e->msg[0] || strchr(e->msg, '\n')))
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bootstage_state *st = NULL, *again = NULL;
	ip_error e = { 0 };
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), r;

	if (fd < 0 || (size && ip_write_all(fd, data, size) < 0))
		abort();
	close(fd);
	r = bootstage_state_load(dir, NULL, &st, &e);
	check(r, &e);
	if (r == 0) {
		ip_error_clear(&e);
		r = bootstage_state_load(dir, bootstage_state_job_hash(st), &again, &e);
		if (r < 0)
			__builtin_trap();
		bootstage_state_free(again);
		bootstage_state_free(st);
	}
	return 0;
}
