/* part_resize.c — placeholder until its owner lands the real verbs. */
#include "cli/cli.h"

int cmd_part_shrink(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part shrink", "not implemented yet");
}

int cmd_part_grow(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part grow", "not implemented yet");
}
