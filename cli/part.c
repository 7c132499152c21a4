/* part.c — the `inplace part …` verb table.  The verbs live in
 * cli/part_table.c (show, create, delete, plan, make-storage),
 * cli/part_resize.c (shrink, grow) and cli/part_move.c (move, resume). */
#include "cli/cli.h"

int cmd_part_show(int argc, char **argv);
int cmd_part_create(int argc, char **argv);
int cmd_part_delete(int argc, char **argv);
int cmd_part_shrink(int argc, char **argv);
int cmd_part_grow(int argc, char **argv);
int cmd_part_move(int argc, char **argv);
int cmd_part_resume(int argc, char **argv);
int cmd_part_plan(int argc, char **argv);
int cmd_part_make_storage(int argc, char **argv);

/* their tables, beside each verb */
extern const struct cli_help cli_help_part_show, cli_help_part_create, cli_help_part_delete,
	cli_help_part_shrink, cli_help_part_grow, cli_help_part_move, cli_help_part_resume,
	cli_help_part_plan, cli_help_part_make_storage;

const struct cli_verb cli_part_verbs[] = {
	{ "show",         cmd_part_show,         "show the partition table, filesystems, usage and free space", &cli_help_part_show, NULL },
	{ "create",       cmd_part_create,       "create a partition (and format it)", &cli_help_part_create, NULL },
	{ "delete",       cmd_part_delete,       "delete a partition", &cli_help_part_delete, NULL },
	{ "shrink",       cmd_part_shrink,       "shrink a filesystem, then its partition", &cli_help_part_shrink, NULL },
	{ "grow",         cmd_part_grow,         "grow a partition, then its filesystem", &cli_help_part_grow, NULL },
	{ "move",         cmd_part_move,         "move a partition, crash-safely", &cli_help_part_move, NULL },
	{ "resume",       cmd_part_resume,       "finish an interrupted move or shrink", &cli_help_part_resume, NULL },
	{ "plan",         cmd_part_plan,         "show how to make room for a new partition; writes nothing", &cli_help_part_plan, NULL },
	{ "make-storage", cmd_part_make_storage, "carry out the plan and create the storage partition", &cli_help_part_make_storage, NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

int cmd_part(int argc, char **argv)
{
	return cli_dispatch("part", cli_part_verbs, argc, argv);
}
