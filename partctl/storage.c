/* storage.c — make room for the storage partition and make it, as one
 * library call: finish an interrupted operation, reuse an earlier run's
 * partition, plan, check everything the plan needs, carry it out, format.
 * The CLI (part plan / part make-storage) and the pipeline both call this.
 *
 * The promise to callers: a refusal (status 2) comes before the first
 * write, so the disk is unchanged; a failure after a step was carried out
 * is status 1 and names the steps done and how to go on. */
#include <errno.h>
#include <string.h>

#include "partctl/partctl.h"

static const struct partctl_opts no_opts;

/* A storage partition an earlier run made (one that may have been cut
 * short after it): 1 when found and large enough, bad input when too
 * small, 0 when there is none. */
static int find_existing(const char *disk, const struct partctl_plan_disk *d, const char *label, uint64_t need,
			 struct partctl_storage_result *res, ip_error *e)
{
	char b[IP_SIZE_BUFSZ];

	for (size_t i = 0; i < d->n; i++) {
		const struct partctl_plan_part *pp = &d->parts[i];

		if (strcmp(pp->fs.label, label) || strcmp(pp->fs.type, "ext4"))
			continue;
		if (pp->part.size < need)
			return ip_bad(e, -EEXIST,
				      "partition %u of %s is already labelled %s but holds only %s: delete it or choose another --label",
				      pp->part.n, disk, label, ip_format_size(pp->part.size, b, sizeof(b)));
		res->existing = true;
		res->partition = pp->part.n;
		res->start = pp->part.start;
		res->size = pp->part.size;
		res->logical = pp->part.logical;
		return 1;
	}
	return 0;
}

/* Everything the plan's steps need that the planner could not see, read
 * only: where each move keeps its journal, and each shrink's own checks
 * (the filesystem's minimum, alignment).  For `part plan` a journal place
 * that cannot be used is a warning; for make-storage a refusal. */
static int preflight(const char *disk, const struct partctl_plan *p, const struct partctl_opts *o,
		     struct partctl_storage_result *res, bool warn_only, ip_error *e)
{
	bool moves = false;
	int r;

	for (size_t i = 0; i < p->n; i++) {
		const struct partctl_plan_step *s = &p->steps[i];
		struct partctl_resize_plan rp;

		if (s->op == PARTCTL_OP_MOVE)
			moves = true;
		if (s->op != PARTCTL_OP_SHRINK)
			continue;
		r = partctl_shrink_plan(disk, s->partition, s->to, &rp, e);
		if (r < 0) {
			ip_error_prefix(e, "step %zu (shrink partition %u)", i + 1, s->partition);
			return r;
		}
	}
	if (!moves)
		return 0;
	r = partctl_move_journal_check(disk, o->journal, res->journal, sizeof(res->journal), e);
	if (r < 0 && warn_only) {
		snprintf(res->warning, sizeof(res->warning), "%s", e->msg);
		ip_error_clear(e);
		return 0;
	}
	return r;
}

static int plan_on(const char *disk, const struct partctl_plan_disk *d, uint64_t need, const struct partctl_opts *o,
		   struct partctl_storage_result *res, bool warn_only, ip_error *e)
{
	int r;

	r = partctl_plan_compute(d, need, &res->plan, e);
	if (r < 0)
		return r;
	res->partition = res->plan.partition;
	res->start = res->plan.start;
	res->size = res->plan.size;
	res->logical = res->plan.logical;
	return preflight(disk, &res->plan, o, res, warn_only, e);
}

int partctl_plan_storage(const char *disk, uint64_t need, const struct partctl_opts *o,
			 struct partctl_storage_result *res, ip_error *e)
{
	struct partctl_plan_disk *d = NULL;
	int r;

	memset(res, 0, sizeof(*res));
	res->dry_run = true;
	if (!o)
		o = &no_opts;
	r = partctl_plan_describe(disk, &d, e);
	if (r == 0)
		r = plan_on(disk, d, need, o, res, true, e);
	partctl_plan_disk_free(d);
	return r;
}

/* What to tell after a step failed: which steps were done, and how to go
 * on.  Status 1: the disk was changed. */
static void failed_after(const char *disk, const struct partctl_plan *p, size_t done, ip_error *e)
{
	char steps[256] = "";
	size_t len = 0;

	for (size_t i = 0; i < done && len < sizeof(steps); i++) {
		snprintf(steps + len, sizeof(steps) - len, "%s%s partition %u", i ? ", " : "",
			 partctl_plan_op_name(p->steps[i].op), p->steps[i].partition);
		len = strlen(steps);
	}
	ip_error_prefix(e, "after %zu of %zu steps were done (%s)", done, p->n, steps);
	/* the fix goes last, after the step's own message */
	len = strlen(e->msg);
	snprintf(e->msg + len, sizeof(e->msg) - len,
		 "; 'inplace part resume %s' finishes an interrupted step, then 'inplace part make-storage %s' again carries out the rest",
		 disk, disk);
	e->status = IP_EXIT_FAILED;
}

int partctl_make_storage(const char *disk, uint64_t need, const char *label, const struct partctl_opts *o,
			 struct partctl_storage_result *res, ip_error *e)
{
	struct partctl_plan_disk *d = NULL;
	struct partctl_move_opts mo = { 0 };
	int r;

	memset(res, 0, sizeof(*res));
	if (!o)
		o = &no_opts;
	res->dry_run = o->dry_run;
	if (!label || !*label)
		return ip_bad(e, -EINVAL, "the storage partition needs a label: give --label");
	mo.journal = o->journal;
	if (!o->dry_run) {
		r = ip_check_unmounted(disk, e);
		/* a move or shrink cut short by a crash is finished first, so
		 * that the plan starts from a consistent disk */
		if (r == 0)
			r = partctl_resume_ex(disk, &mo, &res->resumed, NULL, e);
		if (r < 0)
			return r;
	}
	r = partctl_plan_describe(disk, &d, e);
	if (r < 0)
		return r;
	/* Idempotent: a storage partition made by an earlier run is the
	 * result, not a reason to make a second one. */
	r = find_existing(disk, d, label, need, res, e);
	if (r != 0) {
		partctl_plan_disk_free(d);
		return r < 0 ? r : 0;
	}
	r = plan_on(disk, d, need, o, res, false, e);
	partctl_plan_disk_free(d);
	if (r < 0 || o->dry_run)
		return r;
	r = partctl_plan_execute(disk, &res->plan, "ext4", label, o, &res->done, &res->partition, e);
	if (r < 0 && res->done > 0)
		failed_after(disk, &res->plan, res->done, e);
	return r;
}
