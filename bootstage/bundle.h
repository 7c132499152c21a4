/* bundle.h — the self-contained bundle: inplace, every tool it spawns, their
 * shared libraries and the dynamic loader in one directory that runs on any
 * x86_64 Linux, from any directory, read-only media included.
 *
 * Layout of DIR (the names are the contract the launcher and the first-boot
 * unit rely on):
 *   DIR/inplace            the launcher (static), what users and units run
 *   DIR/bin/TOOL           the same launcher, hardlinked, once per tool:
 *                          first in PATH, so inplace spawns the bundled tools
 *   DIR/libexec/NAME       the real executables (inplace, e2fsck, …)
 *   DIR/lib/               their libraries and ld-linux-x86-64.so.2
 *   DIR/BUNDLE             manifest (JSON), written last: marks DIR a bundle
 * The launcher runs DIR/lib/ld-linux-x86-64.so.2 --library-path DIR/lib
 * --argv0 ARGV0 DIR/libexec/NAME ARGS with DIR/bin first in PATH, NAME
 * being its own file name; under a name that is no bundled program (a
 * hardlink DIR/init, or /init as a symlink to DIR/inplace) it runs
 * inplace, which sees that argv[0].  It finds DIR by /proc/self/exe, or
 * by its argv[0] path while /proc is not mounted (PID 1). */
#ifndef INPLACE_BOOTSTAGE_BUNDLE_H
#define INPLACE_BOOTSTAGE_BUNDLE_H

#include "common/common.h"

#define BS_BUNDLE_MANIFEST "BUNDLE"
#define BS_BUNDLE_LOADER "ld-linux-x86-64.so.2"

/* What a bundle holds (filled by bs_bundle_write; may be NULL). */
struct bs_bundle_info {
	uint64_t bytes;        /* every file's size, hardlinks once */
	unsigned files;        /* regular files written */
	unsigned tools;        /* tools bundled (inplace not counted) */
	unsigned libs;         /* shared libraries, the loader included */
	bool copied;           /* copied from the running bundle, not built */
};

/* Write a bundle into dir, durably and atomically: built in DIR.tmp, every
 * file fsynced, then renamed over dir (an old bundle there is replaced; any
 * other non-empty dir is refused, bad input).  Run from a bundle, the
 * running bundle is copied; else it is built from this executable
 * (/proc/self/exe) and the tools found in PATH, /usr/sbin, /sbin. */
int bs_bundle_write(const char *dir, ip_error *e);
int bs_bundle_write_info(const char *dir, struct bs_bundle_info *info, ip_error *e);

/* The directory of the running bundle, or "" when not run from one.
 * Returns 0, or -ENAMETOOLONG when it does not fit in n. */
int bs_bundle_self(char *dir, size_t n);

/* The bytes a bundle written now takes (what bs_bundle_write would write);
 * -errno when a tool or library is missing. */
int bs_bundle_measure(uint64_t *bytes, ip_error *e);

/* The pipeline's step stage-bundle (phase prepare, after stage-image):
 * the bundle into STORE/inplace/bundle, which the first-boot unit runs.
 * A complete bundle already there is kept. */
struct bs_params;
struct bs_store;
int bs_step_stage_bundle(const struct bs_params *p, struct bs_store *s, json_object **res, ip_error *e);

#endif
