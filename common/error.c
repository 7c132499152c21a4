/* error.c — one-line errors that carry an exit status. */
#include <errno.h>
#include <string.h>

#include "common/common.h"

/* An error is one line, whatever the text it quotes: a name read from a
 * store, an image or a job file may hold newlines or escape sequences meant
 * for the admin's terminal or the fleet's logs.  Control bytes become '?';
 * other bytes (UTF-8 names) stay. */
static void one_line(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

int ip_error_set(ip_error *e, int status, int code, const char *fmt, ...)
{
	if (code >= 0)
		code = -EIO;
	if (e) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
		one_line(e->msg);
		e->code = code;
		e->status = status;
	}
	return code;
}

void ip_error_prefix(ip_error *e, const char *fmt, ...)
{
	char head[512], old[sizeof(e->msg)];
	va_list ap;

	if (!e)
		return;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	one_line(head);
	memcpy(old, e->msg, sizeof(old));
	snprintf(e->msg, sizeof(e->msg), "%s: %s", head, old);
}

void ip_error_clear(ip_error *e)
{
	if (e)
		memset(e, 0, sizeof(*e));
}
