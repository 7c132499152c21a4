/* fuzz_store.h — shared by the libFuzzer targets for the profile store's
 * JSON files (fuzz_manifest.c, fuzz_accounts.c, fuzz_machine.c): a store
 * and a new OS root in a scratch directory, built once from
 * tests/fuzz/store.base (a real save's files, the new root's etc/); the
 * input is parsed from memory by the store reader's parser
 * (mig_store_parse_json), and written into the store where a reader
 * opens the file itself.
 * Every refusal must be one line; nothing may crash, leak or hang. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate/internal.h"
#include "tests/fuzz/fuzz_tmp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fz_dir[256], fz_store[300], fz_root[300];
static int fz_storefd = -1, fz_rootfd = -1;

static void fz_copy(const char *from, const char *to)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	ip_error e = { 0 };

	if (ip_read_file(from, 16 << 20, &text, &len, &e) < 0 ||
	    ip_write_file_atomic(to, text, len, 0600, &e) < 0) {
		fprintf(stderr, "fuzz: %s (run from the top of the checkout)\n", e.msg);
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const store_files[] = { "manifest.json", "accounts.json", "machine.json" };
	static const char *const etc_files[] = { "passwd", "group", "shadow", "gshadow" };
	char from[512], to[512];

	(void)argc, (void)argv;
	snprintf(fz_dir, sizeof(fz_dir), "%s", fz_tmpdir("store"));
	snprintf(fz_store, sizeof(fz_store), "%s/store", fz_dir);
	snprintf(fz_root, sizeof(fz_root), "%s/root", fz_dir);
	snprintf(to, sizeof(to), "%s/etc", fz_root);
	if (mkdir(fz_store, 0700) < 0 || mkdir(fz_root, 0755) < 0 || mkdir(to, 0755) < 0)
		abort();
	for (size_t i = 0; i < IP_ARRAY_SIZE(store_files); i++) {
		snprintf(from, sizeof(from), "tests/fuzz/store.base/%s", store_files[i]);
		snprintf(to, sizeof(to), "%s/%s", fz_store, store_files[i]);
		fz_copy(from, to);
	}
	for (size_t i = 0; i < IP_ARRAY_SIZE(etc_files); i++) {
		snprintf(from, sizeof(from), "tests/fuzz/store.base/etc/%s", etc_files[i]);
		snprintf(to, sizeof(to), "%s/etc/%s", fz_root, etc_files[i]);
		fz_copy(from, to);
	}
	fz_storefd = open(fz_store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fz_rootfd = open(fz_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fz_storefd < 0 || fz_rootfd < 0)
		abort();
	return 0;
}

/* A refusal is one line with a status; ENOMEM is the only excuse. */
static void fz_check_error(int r, const ip_error *e)
{
	if (r >= 0)
		return;
	if (e->code == -ENOMEM)
		return;
	if (!e->status || !e->msg[0] || strchr(e->msg, '\n'))
		__builtin_trap();
}

/* Parse the input as the store reader parses name (mig_store_parse_json,
 * from memory: the reading itself does not depend on the bytes): NULL
 * when it is refused (checked to be one line). */
static json_object *fz_load(const char *name, const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	json_object *doc = NULL;
	ip_error e = { 0 };
	int r;

	if (!text)
		return NULL;
	memcpy(text, data, size);
	text[size] = '\0';
	r = mig_store_parse_json(text, name, &doc, &e);
	free(text);
	fz_check_error(r, &e);
	return r < 0 ? NULL : doc;
}

/* Write the input as name in the store (for the readers that open it
 * there themselves). */
__attribute__((unused)) static void fz_put(const char *name, const uint8_t *data, size_t size)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", fz_store, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (size && ip_write_all(fd, data, size) < 0))
		abort();
	close(fd);
}
