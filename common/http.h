/* http.h — the one way inplace opens an HTTP(S) transfer (libcurl): the
 * settings every download, check and report shares.  Separate from
 * common.h so that only the modules that talk HTTP see libcurl. */
#ifndef INPLACE_COMMON_HTTP_H
#define INPLACE_COMMON_HTTP_H

#include <curl/curl.h>

/* A libcurl handle for url: http and https only (redirects too), the
 * server's certificate and name always verified, against ca_file's CAs only
 * when given (NULL: the system's), failing on HTTP errors, no signals,
 * errbuf (CURL_ERROR_SIZE) filled on failure.  The caller adds its own
 * timeouts and body handling.  NULL when out of memory. */
CURL *ip_http_new(const char *url, const char *ca_file, long connect_timeout, char *errbuf);

#endif
