/* fuzz_job.c — libFuzzer target for the job file parser: any bytes must
 * give a job or a bad-input error with one line, never a crash or a leak,
 * and a job must parse the same twice (the hash names it). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bootstage/bootstage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	bootstage_job *j = NULL, *k = NULL;
	ip_error e = { 0 };

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';   /* the parser takes text: what follows a NUL is not read */
	if (bootstage_job_parse(text, "job.ini", &j, &e) == 0) {
		if (bootstage_job_parse(text, "job.ini", &k, &e) != 0 || strcmp(j->hash, k->hash))
			__builtin_trap();
	} else if (e.status != IP_EXIT_BADINPUT || strchr(e.msg, '\n')) {
		if (e.code != -ENOMEM)
			__builtin_trap();
	}
	bootstage_job_free(j);
	bootstage_job_free(k);
	free(text);
	return 0;
}
