/* internal.h — what the files of bootstage/ share and nobody else sees. */
#ifndef INPLACE_BOOTSTAGE_INTERNAL_H
#define INPLACE_BOOTSTAGE_INTERNAL_H

#include <curl/curl.h>

#include "bootstage/bootstage.h"

#define BOOTSTAGE_STATE_FILE "state.json"
#define BOOTSTAGE_LOG_FILE "status.log"
#define BOOTSTAGE_CURSOR_FILE "report.cursor"
#define BOOTSTAGE_JOB_FILE "job.ini"

/* Room the bundle (binary, libraries, tools, loader) takes in the store:
 * measured from what bs_bundle_write would write now, plus a quarter, in
 * whole MiB; 64 MiB when it cannot be measured (bundle.c). */
uint64_t bs_bundle_room(void);
#define BOOTSTAGE_BUNDLE_BYTES bs_bundle_room()

/* dir + "/" + name into buf; -ENAMETOOLONG when it does not fit. */
int bs_path(char *buf, size_t len, const char *dir, const char *name);
/* The same disk: one block device (st_rdev), or one image file. */
bool bs_same_disk(const char *a, const char *b);
/* An easy handle with the options every request of bootstage shares:
 * short timeouts, http(s) only, peer and host verified (against ca_cert
 * alone when given).  errbuf: CURL_ERROR_SIZE bytes. */
CURL *bs_curl_new(const char *url, const char *ca_cert, char *errbuf);
/* Copy src to dst through dst.part (one fixed name: a copy cut short is
 * overwritten by the next), fsync, then common's durable rename (steps.c). */
int bs_copy_durable(const char *src, const char *dst, ip_error *e);
int bs_rm_tree(const char *dir, ip_error *e);
/* "2026-11-29T10:52:11Z" */
void bs_now(char *buf, size_t len);

#endif
