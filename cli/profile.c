/* profile.c — the `inplace profile …` verbs. */
#include "cli/cli.h"

static const struct cli_verb profile_verbs[] = {
	{ NULL, NULL, NULL },
};

int cmd_profile(int argc, char **argv)
{
	return cli_dispatch("profile", profile_verbs, argc, argv);
}
