/* part_move.c — placeholder until its owner lands the real verbs. */
#include "cli/cli.h"

int cmd_part_move(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part move", "not implemented yet");
}

int cmd_part_resume(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part resume", "not implemented yet");
}
