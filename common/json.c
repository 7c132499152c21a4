/* json.c — the one emitter of --json documents. */
#include <errno.h>

#include "common/common.h"

json_object *ip_json_doc(const char *command)
{
	json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	json_object_object_add(o, "version", json_object_new_int(IP_JSON_VERSION));
	if (command)
		json_object_object_add(o, "command", json_object_new_string(command));
	return o;
}

int ip_json_print(json_object *doc, FILE *f)
{
	const char *s = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY |
							       JSON_C_TO_STRING_SPACED |
							       JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!s)
		return -ENOMEM;
	if (fputs(s, f) < 0 || fputc('\n', f) < 0)
		return -EIO;
	return 0;
}
