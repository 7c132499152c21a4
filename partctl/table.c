/* table.c — partition tables (GPT and MBR with extended/logical partitions)
 * through libfdisk, on block devices and disk-image files.
 *
 * A partctl_table is short-lived: open, read or change in memory, write,
 * free.  libfdisk holds its own file descriptor, opened without O_EXCL, so
 * that a caller may keep its own exclusive ip_disk of the same disk while it
 * updates the table, and so that no exclusive claim on the whole disk is
 * held while resize2fs or e2fsck open a partition of it exclusively.  The
 * mount check of ip_check_unmounted() is made at open and again right before
 * writing. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include <libfdisk.h>

#include "partctl/internal.h"


/* Short names for the types inplace creates or reports; anything else is
 * shown as the GPT type GUID or the MBR hex code. */
static const struct type_name {
	const char *name;
	unsigned code;     /* MBR */
	const char *guid;  /* GPT */
} type_names[] = {
	{ "linux",     0x83, "0FC63DAF-8483-4772-8E79-3D69D8477DE4" },
	{ "ntfs",      0x07, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" },
	{ "swap",      0x82, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" },
	{ "efi",       0xef, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" },
	{ "bios-boot", 0,    "21686148-6449-6E6F-744E-656564454649" },
	{ "lvm",       0x8e, "E6D6D379-F507-44C2-A23C-238F2A3DF928" },
	{ "raid",      0xfd, "A19D880F-05FC-4D3B-A006-743F0F84911E" },
	{ "msr",       0,    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" },
	{ "extended",  0x05, NULL },
	{ "extended",  0x0f, NULL },
	{ "extended",  0x85, NULL },
	{ "fat32",     0x0c, NULL },
	{ "fat32",     0x0b, NULL },
};

static int ask_cb(struct fdisk_context *cxt, struct fdisk_ask *ask, void *data)
{
	partctl_table *t = data;
	const char *msg;

	(void)cxt;
	switch (fdisk_ask_get_type(ask)) {
	case FDISK_ASKTYPE_WARN:
	case FDISK_ASKTYPE_WARNX:
		msg = fdisk_ask_print_get_mesg(ask);
		/* the first warning names the fault; later ones sum up ("1 error
		 * detected") */
		if (msg && !t->warn[0]) {
			size_t l;

			snprintf(t->warn, sizeof(t->warn), "%s", msg);
			/* our messages are lowercase and end without a full stop */
			l = strlen(t->warn);
			while (l && (t->warn[l - 1] == '.' || t->warn[l - 1] == '\n'))
				t->warn[--l] = '\0';
			if (t->warn[0] >= 'A' && t->warn[0] <= 'Z' && !(t->warn[1] >= 'A' && t->warn[1] <= 'Z'))
				t->warn[0] = (char)(t->warn[0] - 'A' + 'a');
		}
		return 0;
	case FDISK_ASKTYPE_INFO:
		return 0;
	default:
		return -EINVAL; /* no dialogs */
	}
}

static void type_to_name(const partctl_table *t, struct fdisk_parttype *pt, char *buf, size_t len)
{
	bool gpt = !strcmp(t->label, "gpt");

	buf[0] = '\0';
	if (!pt)
		return;
	for (size_t i = 0; i < IP_ARRAY_SIZE(type_names); i++) {
		const struct type_name *tn = &type_names[i];

		if (gpt && tn->guid && fdisk_parttype_get_string(pt) &&
		    !strcasecmp(tn->guid, fdisk_parttype_get_string(pt))) {
			snprintf(buf, len, "%s", tn->name);
			return;
		}
		if (!gpt && tn->code && tn->code == fdisk_parttype_get_code(pt)) {
			snprintf(buf, len, "%s", tn->name);
			return;
		}
	}
	if (gpt)
		snprintf(buf, len, "%s", fdisk_parttype_get_string(pt) ? fdisk_parttype_get_string(pt) : "");
	else
		snprintf(buf, len, "%02x", fdisk_parttype_get_code(pt));
}

static int cmp_part(const void *a, const void *b)
{
	const struct partctl_part *x = a, *y = b;

	return x->n < y->n ? -1 : x->n > y->n;
}

/* Refresh t->parts from libfdisk's in-memory table. */
static int reload(partctl_table *t, ip_error *e)
{
	size_t max = fdisk_get_npartitions(t->cxt), k = 0;
	struct partctl_part *parts;

	parts = calloc(max ? max : 1, sizeof(*parts));
	if (!parts)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (size_t i = 0; i < max; i++) {
		struct fdisk_partition *pa = NULL;
		struct partctl_part *p = &parts[k];
		const char *s;

		if (!fdisk_is_partition_used(t->cxt, i))
			continue;
		if (fdisk_get_partition(t->cxt, i, &pa) < 0 || !pa)
			continue;
		p->n = (unsigned)i + 1;
		p->start = (uint64_t)fdisk_partition_get_start(pa) * t->ssz;
		p->size = (uint64_t)fdisk_partition_get_size(pa) * t->ssz;
		p->extended = fdisk_partition_is_container(pa);
		p->logical = fdisk_partition_is_nested(pa);
		type_to_name(t, fdisk_partition_get_type(pa), p->type, sizeof(p->type));
		if (p->extended)
			snprintf(p->type, sizeof(p->type), "extended");
		s = fdisk_partition_get_name(pa);
		snprintf(p->name, sizeof(p->name), "%s", s ? s : "");
		s = fdisk_partition_get_uuid(pa);
		snprintf(p->uuid, sizeof(p->uuid), "%s", s ? s : "");
		fdisk_unref_partition(pa);
		k++;
	}
	qsort(parts, k, sizeof(*parts), cmp_part);
	free(t->parts);
	t->parts = parts;
	t->n = k;
	return 0;
}

void partctl_table_free(partctl_table *t)
{
	if (!t)
		return;
	if (t->cxt) {
		/* nosync: libfdisk would issue BLKRRPART, which fails on a disk
		 * in use; partctl_table_write() tells the kernel through BLKPG. */
		if (fdisk_get_devfd(t->cxt) >= 0) /* asserts on an unassigned context */
			fdisk_deassign_device(t->cxt, 1);
		fdisk_unref_context(t->cxt);
	}
	if (t->fd >= 0)
		close(t->fd);
	free(t->parts);
	free(t->orig);
	free(t->path);
	free(t);
}

static int table_open(const char *disk, bool write, bool check, bool busy, partctl_table **out, ip_error *e)
{
	partctl_table *t;
	struct stat st;
	struct fdisk_label *lb;
	int r;

	*out = NULL;
	if (stat(disk, &st) < 0)
		return ip_bad(e, -errno, "cannot open %s: %s", disk, strerror(errno));
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return ip_bad(e, -ENOTBLK, "%s is not a disk: give a block device or a disk-image file", disk);
	if (S_ISREG(st.st_mode) && st.st_size < 4096)
		return ip_bad(e, -EINVAL, "%s is too small to hold a partition table (%lld bytes): give a disk image",
			      disk, (long long)st.st_size);
	/* busy: the kernel is told through BLKPG, so a block device only */
	busy = busy && S_ISBLK(st.st_mode);
	if (write && !busy) {
		r = ip_check_unmounted(disk, e);
		if (r < 0)
			return r;
	}
	t = calloc(1, sizeof(*t));
	if (!t || !(t->path = strdup(disk))) {
		free(t);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	t->fd = -1;
	t->write = write;
	t->busy = busy;
	t->blockdev = S_ISBLK(st.st_mode);
	t->fd = open(disk, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (t->fd < 0) {
		r = -errno;
		partctl_table_free(t);
		return ip_fail(e, r, "cannot open %s: %s", disk, strerror(-r));
	}
	t->cxt = fdisk_new_context();
	if (!t->cxt) {
		partctl_table_free(t);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	fdisk_set_ask(t->cxt, ask_cb, t);
	fdisk_disable_dialogs(t->cxt, 1);
	/* An image file has no sector size to ask for, and libfdisk assumes
	 * 512: a 4Kn GPT (its header in the second 4096-byte sector) would
	 * read as a protective MBR with both GPT headers damaged. */
	if (!t->blockdev && ip_gpt_sector_size(t->fd) == 4096 &&
	    fdisk_save_user_sector_size(t->cxt, 4096, 4096) < 0) {
		partctl_table_free(t);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	r = fdisk_assign_device_by_fd(t->cxt, t->fd, disk, !write);
	if (r < 0) {
		partctl_table_free(t);
		return ip_fail(e, r, "cannot read the partition table of %s: %s", disk, strerror(-r));
	}
	if (!fdisk_has_label(t->cxt)) {
		partctl_table_free(t);
		return ip_bad(e, -ENOMEDIUM,
			      "%s has no partition table, or one inplace does not know (GPT and MBR only) or a damaged one: check it with fdisk -l",
			      disk);
	}
	lb = fdisk_get_label(t->cxt, NULL);
	snprintf(t->label, sizeof(t->label), "%s", fdisk_label_get_name(lb));
	if (strcmp(t->label, "gpt") && strcmp(t->label, "dos")) {
		r = -EPROTONOSUPPORT;
		ip_bad(e, r, "%s has a %s partition table: inplace knows only GPT and MBR", disk, t->label);
		partctl_table_free(t);
		return r;
	}
	t->ssz = (unsigned)fdisk_get_sector_size(t->cxt);
	t->size = (uint64_t)fdisk_get_nsectors(t->cxt) * t->ssz;
	t->grain = fdisk_get_grain_size(t->cxt);
	if (t->grain < t->ssz)
		t->grain = t->ssz;
	t->first_usable = (uint64_t)fdisk_get_first_lba(t->cxt) * t->ssz;
	t->end_usable = ((uint64_t)fdisk_get_last_lba(t->cxt) + 1) * t->ssz;
	if (!strcmp(t->label, "gpt")) {
		/* A disk that grew: opened for writing, libfdisk moves the backup
		 * GPT to the new end; say the same when only reading. */
		uint64_t ents = ((uint64_t)fdisk_get_npartitions(t->cxt) * 128 + t->ssz - 1) / t->ssz;
		uint64_t end = (fdisk_get_nsectors(t->cxt) - 1 - ents) * t->ssz;

		if (end > t->end_usable)
			t->end_usable = end;
	}
	r = reload(t, e);
	if (r < 0) {
		partctl_table_free(t);
		return r;
	}
	/* A protective MBR alone: libfdisk found no valid GPT header. */
	for (size_t i = 0; i < t->n && !strcmp(t->label, "dos"); i++)
		if (!strcmp(t->parts[i].type, "ee")) {
			partctl_table_free(t);
			return ip_bad(e, -EUCLEAN,
				      "%s has a protective MBR but no GPT header where sectors of 512 or 4096 bytes put it: both GPT headers are damaged, or its sector size is another; check it with fdisk -b SIZE -l (a block device over it: losetup -b SIZE) before any repair",
				      disk);
		}
	/* The whole table is checked before anything is written, by every
	 * opener (read-only ones plan the writes of shrink, move, deploy):
	 * overlapping entries are refused before resize2fs or a copy runs. */
	if (check) {
		r = partctl_table_check(t, e);
		if (r < 0) {
			partctl_table_free(t);
			return r;
		}
	}
	if (busy) {
		t->orig = malloc((t->n ? t->n : 1) * sizeof(*t->orig));
		if (!t->orig) {
			partctl_table_free(t);
			return ip_fail(e, -ENOMEM, "out of memory");
		}
		memcpy(t->orig, t->parts, t->n * sizeof(*t->orig));
		t->norig = t->n;
	}
	t->warn[0] = '\0';
	if (write && fdisk_verify_disklabel(t->cxt) > 0) {
		r = -EUCLEAN;
		ip_bad(e, r, "the partition table of %s has errors%s%s: repair it (fdisk, gdisk) before changing it",
		       disk, t->warn[0] ? " (" : "", t->warn[0] ? t->warn : "");
		partctl_table_free(t);
		return r;
	}
	*out = t;
	return 0;
}

int partctl_table_open(const char *disk, bool write, partctl_table **out, ip_error *e)
{
	return table_open(disk, write, true, false, out, e);
}

int partctl_table_open_busy(const char *disk, bool write, partctl_table **out, ip_error *e)
{
	return table_open(disk, write, true, true, out, e);
}

int partctl_table_inspect(const char *disk, partctl_table **out, ip_error *e)
{
	int r = table_open(disk, false, false, false, out, e);

	if (r == 0)
		(void)partctl_table_check(*out, NULL); /* fills the problem */
	return r;
}

const char *partctl_table_label(const partctl_table *t) { return t->label; }
unsigned partctl_table_sector_size(const partctl_table *t) { return t->ssz; }
uint64_t partctl_table_disk_size(const partctl_table *t) { return t->size; }
uint64_t partctl_table_grain(const partctl_table *t) { return t->grain; }
uint64_t partctl_table_first_usable(const partctl_table *t) { return t->first_usable; }
uint64_t partctl_table_end_usable(const partctl_table *t) { return t->end_usable; }
const char *partctl_table_path(const partctl_table *t) { return t->path; }
size_t partctl_table_count(const partctl_table *t) { return t->n; }

unsigned partctl_table_max_parts(const partctl_table *t)
{
	return !strcmp(t->label, "dos") ? 4 : (unsigned)fdisk_get_npartitions(t->cxt);
}

const struct partctl_part *partctl_table_at(const partctl_table *t, size_t i)
{
	return i < t->n ? &t->parts[i] : NULL;
}

const struct partctl_part *partctl_table_find(const partctl_table *t, unsigned n)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->parts[i].n == n)
			return &t->parts[i];
	return NULL;
}

int partctl_table_set_range(partctl_table *t, unsigned n, uint64_t start, uint64_t size, ip_error *e)
{
	const struct partctl_part *p = partctl_table_find(t, n);
	struct fdisk_partition *pa;
	int r;

	if (!p)
		return ip_bad(e, -ENOENT, "%s has no partition %u: see 'inplace part show %s'", t->path, n, t->path);
	if (p->extended && start != p->start)
		return ip_bad(e, -EINVAL, "cannot move extended partition %u of %s: only its end can change", n, t->path);
	r = partctl_geom_check_range(t, n, start, size, p->logical, p->extended, e);
	if (r < 0)
		return r;
	/* The boot record of a logical partition lies before it: a start at
	 * or before it takes the record along, to the grain before the new
	 * start (the first logical's record is the container's first sector
	 * and stays). */
	if (p->logical) {
		uint64_t ebr;

		r = partctl_table_ebr(t, n, &ebr, e);
		if (r == 0 && start <= ebr)
			r = partctl_table_move_ebr(t, n, start - t->grain, e);
		if (r < 0)
			return r;
	}
	pa = fdisk_new_partition();
	if (!pa)
		return ip_fail(e, -ENOMEM, "out of memory");
	fdisk_partition_set_start(pa, start / t->ssz);
	fdisk_partition_set_size(pa, size / t->ssz);
	fdisk_partition_size_explicit(pa, 1);
	t->warn[0] = '\0';
	r = fdisk_set_partition(t->cxt, n - 1, pa);
	fdisk_unref_partition(pa);
	if (r < 0)
		return ip_fail(e, r, "cannot change partition %u of %s: %s", n, t->path,
			       t->warn[0] ? t->warn : strerror(-r));
	r = reload(t, e);
	if (r < 0)
		return r;
	p = partctl_table_find(t, n);
	if (!p || p->start != start || p->size != size)
		return ip_fail(e, -EIO, "libfdisk did not place partition %u of %s where asked", n, t->path);
	return 0;
}

int partctl_table_ebr(const partctl_table *t, unsigned n, uint64_t *off, ip_error *e)
{
	const struct partctl_part *p = partctl_table_find(t, n);
	const char *name = NULL;
	uint64_t o = 0;
	size_t len = 0;

	/* libfdisk numbers the boot records of logical partitions 1, 2, …
	 * after the MBR (0) */
	if (!p || !p->logical || fdisk_locate_disklabel(t->cxt, (int)n - 4, &name, &o, &len) != 0 || !name ||
	    strcmp(name, "EBR"))
		return ip_fail(e, -ENOENT, "cannot find the boot record of logical partition %u of %s", n, t->path);
	*off = o;
	return 0;
}

int partctl_table_move_ebr(partctl_table *t, unsigned n, uint64_t at, ip_error *e)
{
	const struct partctl_part *p = partctl_table_find(t, n), *ext = partctl_geom_extended(t);
	struct fdisk_partition *old = NULL, *pa = NULL;
	uint64_t start, size, first = (uint64_t)fdisk_get_first_lba(t->cxt) * t->ssz, ebr;
	size_t partno = 0;
	bool boot;
	int r;

	if (!p || !p->logical || !ext)
		return ip_bad(e, -ENOENT, "%s has no logical partition %u", t->path, n);
	start = p->start;
	size = p->size;
	if (partctl_table_ebr(t, n, &ebr, NULL) == 0 && ebr == at)
		return 0;
	if (at % t->ssz || at <= ext->start || at >= start)
		return ip_bad(e, -ERANGE, "the boot record of logical partition %u of %s cannot lie at byte %llu: it must lie inside extended partition %u, before the partition",
			      n, t->path, (unsigned long long)at, ext->n);
	for (size_t i = 0; i < t->n; i++) {
		const struct partctl_part *q = &t->parts[i];

		if (q->logical && q->n != n && at >= q->start && at < q->start + q->size)
			return ip_bad(e, -EEXIST, "the boot record of logical partition %u of %s cannot lie at byte %llu, inside partition %u",
				      n, t->path, (unsigned long long)at, q->n);
	}
	if (partctl_table_ebr(t, n, &ebr, NULL) == 0 && ebr == ext->start)
		return ip_bad(e, -EINVAL, "the boot record of logical partition %u of %s is the extended partition's first sector: it does not move",
			      n, t->path);
	r = fdisk_get_partition(t->cxt, n - 1, &old);
	if (r < 0)
		return ip_fail(e, r, "cannot read partition %u of %s: %s", n, t->path, strerror(-r));
	boot = fdisk_partition_is_bootable(old);
	/* libfdisk keeps a boot record where it is; one is placed anew only
	 * with a new entry, at the first LBA offset before its start.  So: the
	 * entry goes, comes back one sector long right after the new place,
	 * takes its old range again, and the chain is sorted back into disk
	 * order, which gives the entry its number back.  All in memory. */
	pa = fdisk_new_partition();
	if (!pa) {
		fdisk_unref_partition(old);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	fdisk_partition_set_start(pa, (at + first) / t->ssz);
	fdisk_partition_set_size(pa, 1);
	fdisk_partition_size_explicit(pa, 1);
	fdisk_partition_set_type(pa, fdisk_partition_get_type(old));
	t->warn[0] = '\0';
	r = fdisk_delete_partition(t->cxt, n - 1);
	if (r == 0)
		r = fdisk_add_partition(t->cxt, pa, &partno);
	fdisk_unref_partition(pa);
	fdisk_unref_partition(old);
	pa = r == 0 ? fdisk_new_partition() : NULL;
	if (r == 0 && !pa)
		r = -ENOMEM;
	if (r == 0) {
		fdisk_partition_set_start(pa, start / t->ssz);
		fdisk_partition_set_size(pa, size / t->ssz);
		fdisk_partition_size_explicit(pa, 1);
		r = fdisk_set_partition(t->cxt, partno, pa);
		fdisk_unref_partition(pa);
	}
	if (r == 0 && fdisk_reorder_partitions(t->cxt) < 0)
		r = -EIO;
	if (r == 0 && boot)
		r = fdisk_toggle_partition_flag(t->cxt, n - 1, DOS_FLAG_ACTIVE);
	if (r < 0)
		return ip_fail(e, r, "cannot move the boot record of logical partition %u of %s: %s", n, t->path,
			       t->warn[0] ? t->warn : strerror(-r));
	r = reload(t, e);
	if (r < 0)
		return r;
	p = partctl_table_find(t, n);
	if (!p || p->start != start || p->size != size || partctl_table_ebr(t, n, &ebr, NULL) < 0 || ebr != at)
		return ip_fail(e, -EIO, "libfdisk did not place the boot record of logical partition %u of %s where asked",
			       n, t->path);
	return 0;
}

/* The sectors of the table's records: the MBR (0) and every EBR. */
static int record_offsets(const partctl_table *t, uint64_t *v, size_t max, size_t *n)
{
	const char *name;
	uint64_t off;
	size_t len;

	*n = 0;
	for (int k = 0; *n < max; k++) {
		if (fdisk_locate_disklabel(t->cxt, k, &name, &off, &len) != 0)
			return 0;
		v[(*n)++] = off;
	}
	return -E2BIG;
}

static bool in_set(const uint64_t *v, size_t n, uint64_t x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

#define MAX_RECORDS (1 + 128)

static int scratch_path(const char *disk, char *out, size_t n, ip_error *e)
{
	return partctl_state_file(disk, "ebr", "scratch", out, n, e);
}

/* The table change runs on a scratch file holding only the disk's records
 * (sparse, the disk's size, so libfdisk sees the same geometry); the
 * sectors that came out different are then written to the disk through d,
 * the new ones first (nothing points to them yet), one flush, then the
 * single record that switches the chain over, another flush. */
static int ebr_write_ordered(ip_disk *d, partctl_table *old, unsigned n, uint64_t at, ip_error *e)
{
	const char *disk = ip_disk_path(d);
	uint64_t was[MAX_RECORDS], now[MAX_RECORDS], live = UINT64_MAX;
	size_t nwas, nnow;
	uint8_t a[512], b[512];
	char scratch[4096];
	partctl_table *t = NULL;
	int fd = -1, r;

	if (old->ssz != sizeof(a))
		return ip_bad(e, -EOPNOTSUPP, "%s has %u-byte sectors: inplace moves logical partitions only on disks of 512-byte sectors",
			      disk, old->ssz);
	if (record_offsets(old, was, MAX_RECORDS, &nwas) < 0)
		return ip_bad(e, -E2BIG, "%s has more logical partitions than inplace handles (%d)", disk, MAX_RECORDS - 1);
	if ((r = partctl_state_mkdir(e)) < 0 || (r = scratch_path(disk, scratch, sizeof(scratch), e)) < 0)
		return r;
	fd = open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return ip_fail(e, -errno, "cannot create %s: %s", scratch, strerror(errno));
	if (ftruncate(fd, (off_t)old->size) < 0)
		r = ip_fail(e, -errno, "cannot size %s: %s", scratch, strerror(errno));
	for (size_t i = 0; r == 0 && i < nwas; i++) {
		r = ip_disk_read(d, a, sizeof(a), was[i], e);
		if (r == 0 && pwrite(fd, a, sizeof(a), (off_t)was[i]) != (ssize_t)sizeof(a))
			r = ip_fail(e, -EIO, "cannot write %s: %s", scratch, strerror(errno));
	}
	if (r == 0)
		r = partctl_table_open(scratch, true, &t, e);
	if (r == 0)
		r = partctl_table_move_ebr(t, n, at, e);
	if (r == 0)
		r = fdisk_write_disklabel(t->cxt) < 0 ? ip_fail(e, -EIO, "cannot write %s", scratch) : 0;
	if (r == 0 && record_offsets(t, now, MAX_RECORDS, &nnow) < 0)
		r = ip_fail(e, -E2BIG, "too many records in %s", scratch);
	/* which sectors changed: records new to the chain, and those of the
	 * chain as it is, which must be one */
	for (int pass = 0; r == 0 && pass < 2; pass++) {
		for (size_t i = 0; r == 0 && i < nnow; i++) {
			bool fresh = !in_set(was, nwas, now[i]);

			if (fresh != (pass == 0))
				continue;
			r = ip_disk_read(d, a, sizeof(a), now[i], e);
			if (r == 0 && pread(fd, b, sizeof(b), (off_t)now[i]) != (ssize_t)sizeof(b))
				r = ip_fail(e, -EIO, "cannot read %s: %s", scratch, strerror(errno));
			if (r < 0 || !memcmp(a, b, sizeof(a)))
				continue;
			if (!fresh && live != UINT64_MAX)
				r = ip_fail(e, -EXDEV, "moving the boot record of logical partition %u of %s would change two records (bytes %llu and %llu) at once: nothing was written",
					    n, disk, (unsigned long long)live, (unsigned long long)now[i]);
			if (!fresh)
				live = now[i];
			else
				r = ip_disk_write(d, b, sizeof(b), now[i], e);
		}
		if (r == 0 && pass == 0)
			r = ip_disk_flush(d, e);
	}
	if (r == 0 && live != UINT64_MAX) {
		r = pread(fd, b, sizeof(b), (off_t)live) == (ssize_t)sizeof(b) ? 0 : ip_fail(e, -EIO, "cannot read %s", scratch);
		if (r == 0)
			r = ip_disk_write(d, b, sizeof(b), live, e);
		if (r == 0)
			r = ip_disk_flush(d, e);
	}
	partctl_table_free(t);
	close(fd);
	unlink(scratch);
	return r;
}

int partctl_table_ebr_before(ip_disk *d, unsigned n, uint64_t start, ip_error *e)
{
	char scratch[4096];
	partctl_table *t = NULL;
	const struct partctl_part *p;
	uint64_t ebr;
	int r;

	r = partctl_table_open(ip_disk_path(d), false, &t, e);
	if (r < 0)
		return r;
	p = partctl_table_find(t, n);
	if (p && p->logical) {
		r = partctl_table_ebr(t, n, &ebr, e);
		if (r == 0 && ebr >= start)
			r = ebr_write_ordered(d, t, n, start - t->grain, e);
	}
	partctl_table_free(t);
	/* a move killed while the records were computed left the scratch copy */
	if (r == 0 && scratch_path(ip_disk_path(d), scratch, sizeof(scratch), NULL) == 0)
		unlink(scratch);
	return r;
}

static struct fdisk_parttype *parse_type(partctl_table *t, const char *type, bool extended)
{
	struct fdisk_label *lb = fdisk_get_label(t->cxt, NULL);
	bool gpt = !strcmp(t->label, "gpt");

	if (extended)
		type = "extended";
	if (!type || !*type)
		type = "linux";
	for (size_t i = 0; i < IP_ARRAY_SIZE(type_names); i++) {
		const struct type_name *tn = &type_names[i];

		if (strcmp(tn->name, type))
			continue;
		if (gpt && tn->guid)
			return fdisk_label_get_parttype_from_string(lb, tn->guid);
		if (!gpt && tn->code)
			return fdisk_label_get_parttype_from_code(lb, tn->code);
	}
	/* a GUID or a hex code */
	return fdisk_label_advparse_parttype(lb, type, FDISK_PARTTYPE_PARSE_DATA);
}

int partctl_table_add(partctl_table *t, const struct partctl_part *spec, unsigned *n_out, ip_error *e)
{
	bool dos = !strcmp(t->label, "dos");
	struct fdisk_parttype *pt;
	struct fdisk_partition *pa;
	size_t partno = 0, max;
	unsigned n = spec->n;
	const struct partctl_part *p;
	char b[IP_SIZE_BUFSZ];
	int r;

	if (!dos && (spec->extended || spec->logical))
		return ip_bad(e, -EINVAL, "%s has a GPT table: extended and logical partitions exist only on MBR", t->path);
	if (spec->extended && partctl_geom_extended(t))
		return ip_bad(e, -EEXIST, "%s already has an extended partition (%u): an MBR holds only one",
			      t->path, partctl_geom_extended(t)->n);
	if (spec->start % t->grain)
		return ip_bad(e, -EINVAL, "start %llu is not aligned to %s: use a multiple of %llu bytes",
			      (unsigned long long)spec->start, ip_format_size(t->grain, b, sizeof(b)),
			      (unsigned long long)t->grain);
	r = partctl_geom_check_range(t, 0, spec->start, spec->size, spec->logical, spec->extended, e);
	if (r < 0)
		return r;
	if (!spec->logical) {
		/* the slot: the lowest free number (primaries 1-4 on MBR) */
		max = dos ? 4 : fdisk_get_npartitions(t->cxt);
		if (n) {
			if (n > max)
				return ip_bad(e, -ERANGE, "partition number %u is out of range for %s (1-%zu)", n, t->path, max);
			if (partctl_table_find(t, n))
				return ip_bad(e, -EEXIST, "partition %u of %s already exists: delete it first or choose another number",
					      n, t->path);
		} else {
			for (unsigned i = 1; i <= max && !n; i++)
				if (!partctl_table_find(t, i))
					n = i;
			if (!n)
				return ip_bad(e, -ENOSPC, dos ? "all four primary partitions of %s are used: use a logical partition inside an extended one"
							  : "the partition table of %s is full", t->path);
		}
	}
	pt = parse_type(t, spec->type, spec->extended);
	if (!pt)
		return ip_bad(e, -EINVAL, "unknown partition type '%s': use linux, ntfs, swap, efi, a GPT type GUID or an MBR hex code",
			      spec->type);
	pa = fdisk_new_partition();
	if (!pa) {
		fdisk_unref_parttype(pt);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	fdisk_partition_set_start(pa, spec->start / t->ssz);
	fdisk_partition_set_size(pa, spec->size / t->ssz);
	fdisk_partition_size_explicit(pa, 1);
	fdisk_partition_set_type(pa, pt);
	fdisk_unref_parttype(pt);
	if (n)
		fdisk_partition_set_partno(pa, n - 1);
	if (!dos && spec->name[0])
		fdisk_partition_set_name(pa, spec->name);
	t->warn[0] = '\0';
	r = fdisk_add_partition(t->cxt, pa, &partno);
	fdisk_unref_partition(pa);
	if (r < 0)
		return ip_bad(e, r, "cannot add a partition of %s at byte %llu to %s: %s", ip_format_size(spec->size, b, sizeof(b)),
			      (unsigned long long)spec->start, t->path, t->warn[0] ? t->warn : strerror(-r));
	r = reload(t, e);
	if (r < 0)
		return r;
	p = partctl_table_find(t, (unsigned)partno + 1);
	if (!p || p->start != spec->start || p->size != spec->size)
		return ip_fail(e, -EIO, "libfdisk did not place the new partition of %s where asked", t->path);
	if (n_out)
		*n_out = (unsigned)partno + 1;
	return 0;
}

int partctl_table_delete(partctl_table *t, unsigned n, ip_error *e)
{
	const struct partctl_part *p = partctl_table_find(t, n);
	int r;

	if (!p)
		return ip_bad(e, -ENOENT, "%s has no partition %u: see 'inplace part show %s'", t->path, n, t->path);
	if (p->extended)
		for (size_t i = 0; i < t->n; i++)
			if (t->parts[i].logical)
				return ip_bad(e, -EBUSY, "extended partition %u of %s holds logical partition %u: delete the logical partitions first",
					      n, t->path, t->parts[i].n);
	t->warn[0] = '\0';
	r = fdisk_delete_partition(t->cxt, n - 1);
	if (r < 0)
		return ip_fail(e, r, "cannot delete partition %u of %s: %s", n, t->path,
			       t->warn[0] ? t->warn : strerror(-r));
	return reload(t, e);
}

/* The byte ranges a table write touches, for the write-recording test mode:
 * the head of the disk (MBR, GPT header and entries), the GPT backup at the
 * end, and each EBR of a logical partition (in the gap before it). */
static int log_table_writes(partctl_table *t, ip_error *e)
{
	const char *log = getenv("INPLACE_IOLOG");
	ip_disk *d = NULL;
	uint64_t prev;
	int r;

	if (!log || !*log)
		return 0;
	r = ip_disk_open(t->path, IP_DISK_RDWR, &d, e);
	if (r < 0)
		return r;
	r = ip_disk_log_external(d, 0, t->first_usable < t->size ? t->first_usable : t->ssz, e);
	if (r == 0 && !strcmp(t->label, "gpt") && t->size > t->end_usable)
		r = ip_disk_log_external(d, t->end_usable, t->size - t->end_usable, e);
	prev = 0;
	for (size_t i = 0; r == 0 && i < t->n; i++) {
		const struct partctl_part *p = &t->parts[i];

		if (p->extended)
			prev = p->start;
	}
	for (size_t i = 0; r == 0 && i < t->n; i++) {
		const struct partctl_part *p = &t->parts[i];
		uint64_t from = p->start > t->grain ? p->start - t->grain : 0;

		if (!p->logical)
			continue;
		if (from < prev)
			from = prev;
		r = ip_disk_log_external(d, from, p->start - from, e);
	}
	ip_disk_free(d);
	return r;
}

int partctl_table_write(partctl_table *t, ip_error *e)
{
	int r;

	if (!t->write)
		return ip_fail(e, -EBADF, "internal error: the table of %s was opened read-only", t->path);
	r = t->busy ? partctl_table_check_busy(t, e) : ip_check_unmounted(t->path, e);
	if (r < 0)
		return r;
	t->warn[0] = '\0';
	r = fdisk_write_disklabel(t->cxt);
	if (r < 0)
		return ip_fail(e, r, "cannot write the partition table of %s: %s", t->path,
			       t->warn[0] ? t->warn : strerror(-r));
	if (fsync(t->fd) < 0)
		return ip_fail(e, -errno, "cannot flush the partition table of %s: %s", t->path, strerror(errno));
	r = log_table_writes(t, e);
	if (r < 0)
		return r;
	if (t->blockdev)
		return ip_kernel_sync_partitions(t->path, e);
	return 0;
}

/* ---- a table written while the disk is in use ------------------------------ */

static bool same_entry(const struct partctl_part *a, const struct partctl_part *b)
{
	return a->start == b->start && a->size == b->size && a->extended == b->extended &&
	       a->logical == b->logical;
}

static const struct partctl_part *entry_n(const struct partctl_part *p, size_t np, unsigned n)
{
	for (size_t i = 0; i < np; i++)
		if (p[i].n == n)
			return &p[i];
	return NULL;
}

int partctl_busy_verdict(const char *disk, const struct partctl_part *old, size_t nold,
			 const struct partctl_part *now, size_t nnow, partctl_in_use_fn in_use, void *arg,
			 ip_error *e)
{
	char what[1200];

	/* the deletions first: a grow over a partition in use is named as
	 * the deletion of that partition */
	for (size_t i = 0; i < nold; i++)
		if (!entry_n(now, nnow, old[i].n) && in_use(arg, old[i].start, old[i].size, what, sizeof(what)))
			return ip_bad(e, -EBUSY, "partition %u of %s cannot be deleted while it is %s: unmount it first",
				      old[i].n, disk, what);
	for (size_t i = 0; i < nold; i++) {
		const struct partctl_part *o = &old[i], *w = entry_n(now, nnow, o->n);

		if (!w || same_entry(o, w))
			continue;
		if (w->start == o->start && w->size > o->size && w->extended == o->extended &&
		    w->logical == o->logical) {
			/* the end grows: over space nothing may use, the
			 * partition itself may stay mounted */
			if (in_use(arg, o->start + o->size, w->size - o->size, what, sizeof(what)))
				return ip_bad(e, -EBUSY,
					      "partition %u of %s cannot grow over space that is %s: unmount it first",
					      o->n, disk, what);
			continue;
		}
		if (in_use(arg, 0, UINT64_MAX, what, sizeof(what)))
			return ip_bad(e, -EBUSY,
				      "partition %u of %s cannot be %s while %s is %s: unmount it (or swapoff) first",
				      o->n, disk, w->start != o->start ? "moved" : "shrunk", disk, what);
	}
	for (size_t i = 0; i < nnow; i++) {
		if (entry_n(old, nold, now[i].n))
			continue;
		if (in_use(arg, 0, UINT64_MAX, what, sizeof(what)))
			return ip_bad(e, -EBUSY, "partition %u of %s cannot be added while %s is %s: unmount it (or swapoff) first",
				      now[i].n, disk, disk, what);
	}
	return 0;
}

static bool disk_range_in_use(void *arg, uint64_t off, uint64_t len, char *what, size_t wlen)
{
	const char *disk = arg;
	ip_error tmp = { 0 };
	char mnt[1024];
	bool rw;

	if (ip_range_mount(disk, off, len, mnt, sizeof(mnt), &rw) > 0) {
		snprintf(what, wlen, "mounted on %s", mnt);
		return true;
	}
	/* a mount of a subdirectory, swap, or mountinfo unreadable */
	if (ip_check_range_unmounted(disk, off, len, &tmp) < 0) {
		snprintf(what, wlen, "in use (%s)", tmp.msg);
		return true;
	}
	return false;
}

int partctl_table_check_busy(partctl_table *t, ip_error *e)
{
	if (!t->busy)
		return ip_check_unmounted(t->path, e);
	return partctl_busy_verdict(t->path, t->orig, t->norig, t->parts, t->n, disk_range_in_use, t->path, e);
}

int partctl_part_range(const char *disk, unsigned n, uint64_t *off, uint64_t *size, ip_error *e)
{
	partctl_table *t = NULL;
	const struct partctl_part *p;
	int r;

	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	p = partctl_table_find(t, n);
	if (!p) {
		r = ip_bad(e, -ENOENT, "%s has no partition %u: see 'inplace part show %s'", disk, n, disk);
	} else {
		*off = p->start;
		*size = p->size;
	}
	partctl_table_free(t);
	return r;
}
