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

static const struct cli_verb part_verbs[] = {
	{ "show",         cmd_part_show,         "show the partition table, filesystems, usage and free space" },
	{ "create",       cmd_part_create,       "create a partition (and format it)" },
	{ "delete",       cmd_part_delete,       "delete a partition" },
	{ "shrink",       cmd_part_shrink,       "shrink a filesystem, then its partition" },
	{ "grow",         cmd_part_grow,         "grow a partition, then its filesystem" },
	{ "move",         cmd_part_move,         "move a partition, crash-safely" },
	{ "resume",       cmd_part_resume,       "finish an interrupted move or shrink" },
	{ "plan",         cmd_part_plan,         "show how to make room for a new partition; writes nothing" },
	{ "make-storage", cmd_part_make_storage, "carry out the plan and create the storage partition" },
	{ NULL, NULL, NULL },
};

int cmd_part(int argc, char **argv)
{
	return cli_dispatch("part", part_verbs, argc, argv);
}
