/* part_table.c — placeholder until its owner lands the real verbs. */
#include "cli/cli.h"

int cmd_part_show(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part show", "not implemented yet");
}

int cmd_part_create(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part create", "not implemented yet");
}

int cmd_part_delete(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part delete", "not implemented yet");
}

int cmd_part_plan(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part plan", "not implemented yet");
}

int cmd_part_make_storage(int argc, char **argv)
{
	struct cli_opts o = { 0 };

	(void)argc;
	(void)argv;
	return cli_usage(&o, "part make-storage", "not implemented yet");
}
