/* part.c — the `inplace part …` verbs (move and resume: cli/part_move.c). */
#include "cli/cli.h"

int cmd_part_move(int argc, char **argv);
int cmd_part_resume(int argc, char **argv);

static const struct cli_verb part_verbs[] = {
	{ "move",   cmd_part_move,   "move a partition, crash-safely" },
	{ "resume", cmd_part_resume, "finish an interrupted move or shrink" },
	{ NULL, NULL, NULL },
};

int cmd_part(int argc, char **argv)
{
	return cli_dispatch("part", part_verbs, argc, argv);
}
