/* image.c — the `inplace image …` verbs. */
#include "cli/cli.h"

static const struct cli_verb image_verbs[] = {
	{ NULL, NULL, NULL },
};

int cmd_image(int argc, char **argv)
{
	return cli_dispatch("image", image_verbs, argc, argv);
}
