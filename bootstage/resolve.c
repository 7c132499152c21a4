/* resolve.c — the half of job validation that asks this machine: which
 * disk and partition hold the running root (the defaults), whether the
 * named files and partition exist, and whether a store directory lies on
 * the disk that is about to be reimaged (it would be overwritten). */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "bootstage/internal.h"
#include "partctl/partctl.h"

/* First line of a small sysfs file, without its newline; -errno. */
static int read_line(const char *path, char *buf, size_t len)
{
	_cleanup_free_ char *data = NULL;
	int r = ip_read_file(path, 4096, &data, NULL, NULL);

	if (r < 0)
		return r;
	data[strcspn(data, "\n")] = '\0';
	if (strlen(data) >= len)
		return -ENAMETOOLONG;
	strcpy(buf, data);
	return 0;
}

int bootstage_dev_disk(dev_t dev, char *disk, size_t len, unsigned *part, ip_error *e)
{
	char sys[64], real[PATH_MAX], path[PATH_MAX + 64], num[32], backing[PATH_MAX];
	char *slash;

	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(dev), minor(dev));
	if (!realpath(sys, real))
		return ip_bad(e, -ENODEV, "device %u:%u is not a block device", major(dev), minor(dev));
	*part = 0;
	snprintf(path, sizeof(path), "%s/partition", real);
	if (read_line(path, num, sizeof(num)) == 0) {
		*part = (unsigned)strtoul(num, NULL, 10);
		/* a partition's directory sits inside its disk's */
		if ((slash = strrchr(real, '/')))
			*slash = '\0';
	}
	snprintf(path, sizeof(path), "%s/loop/backing_file", real);
	if (read_line(path, backing, sizeof(backing)) == 0 && backing[0] == '/') {
		if (strlen(backing) >= len)
			return ip_fail(e, -ENAMETOOLONG, "path too long: %s", backing);
		strcpy(disk, backing);
		return 0;
	}
	slash = strrchr(real, '/');
	if (snprintf(disk, len, "/dev/%s", slash ? slash + 1 : real) >= (int)len)
		return ip_fail(e, -ENAMETOOLONG, "path too long: %s", real);
	return 0;
}

int bootstage_root_disk(char *disk, size_t len, unsigned *part, ip_error *e)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	unsigned maj = 0, min = 0;
	bool found = false;

	if (!f)
		return ip_fail(e, -errno, "cannot read /proc/self/mountinfo: %s", strerror(errno));
	/* "36 35 98:0 / / rw … - ext4 /dev/sda2 rw": the last mount on "/"
	 * is the one that is visible */
	while (getline(&line, &cap, f) > 0) {
		unsigned a, b;
		char root[8], mnt[8];

		if (sscanf(line, "%*u %*u %u:%u %7s %7s", &a, &b, root, mnt) == 4 && !strcmp(mnt, "/")) {
			maj = a;
			min = b;
			found = true;
		}
	}
	if (!found)
		return ip_fail(e, -ENOENT, "/proc/self/mountinfo has no mount on /");
	return bootstage_dev_disk(makedev(maj, min), disk, len, part, e);
}

/* The same disk: one block device, or one image file. */
bool bs_same_disk(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!strcmp(a, b))
		return true;
	if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
		return false;
	if (S_ISBLK(sa.st_mode) && S_ISBLK(sb.st_mode))
		return sa.st_rdev == sb.st_rdev;
	if (S_ISREG(sa.st_mode) && S_ISREG(sb.st_mode))
		return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
	return false;
}

static int readable(const bootstage_job *j, const char *what, const char *path, ip_error *e)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return ip_bad(e, -errno, "%s: %s %s: %s: fix the path in the job", j->name, what, path,
			      strerror(errno));
	if (!S_ISREG(st.st_mode))
		return ip_bad(e, -EINVAL, "%s: %s %s is not a file: fix the path in the job", j->name, what, path);
	return 0;
}

static int resolve_disk(bootstage_job *j, ip_error *e)
{
	char root[PATH_MAX];
	unsigned part = 0;
	ip_error why = { 0 };
	int r;

	if (j->disk && j->system_partition)
		return 0;
	r = bootstage_root_disk(root, sizeof(root), &part, &why);
	if (r < 0 || !part) {
		if (j->disk)
			return ip_bad(e, -EINVAL, "%s: [job] names disk %s but no system_partition: "
				      "set system_partition = N", j->name, j->disk);
		return ip_bad(e, r < 0 ? r : -EINVAL, "%s: cannot tell the disk of the running root (%s): "
			      "set disk and system_partition in [job]", j->name,
			      r < 0 ? why.msg : "it is not on a partition");
	}
	if (!j->disk) {
		if (!(j->disk = strdup(root)))
			return ip_fail(e, -ENOMEM, "out of memory");
	} else if (!bs_same_disk(j->disk, root)) {
		return ip_bad(e, -EINVAL, "%s: [job] names disk %s, which does not hold the running root: "
			      "set system_partition = N", j->name, j->disk);
	}
	if (!j->system_partition)
		j->system_partition = part;
	return 0;
}

static int check_store_dir(const bootstage_job *j, ip_error *e)
{
	char disk[PATH_MAX];
	unsigned part;
	struct stat st;

	if (stat(j->store_dir, &st) < 0)
		return ip_bad(e, -errno, "%s: store directory %s: %s: create it on another disk first",
			      j->name, j->store_dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return ip_bad(e, -ENOTDIR, "%s: store %s is not a directory", j->name, j->store_dir);
	/* a filesystem with no block device (tmpfs, NFS) cannot be on the disk */
	if (bootstage_dev_disk(st.st_dev, disk, sizeof(disk), &part, NULL) == 0 && bs_same_disk(disk, j->disk))
		return ip_bad(e, -EINVAL, "%s: store directory %s is on %s, the disk being reimaged: "
			      "choose a directory on another disk, or store = partition",
			      j->name, j->store_dir, j->disk);
	return 0;
}

int bootstage_job_resolve(bootstage_job *j, ip_error *e)
{
	uint64_t off, size;
	int r;

	if ((r = resolve_disk(j, e)) < 0)
		return r;
	r = partctl_part_range(j->disk, j->system_partition, &off, &size, e);
	if (r < 0) {
		ip_error_prefix(e, "%s", j->name);
		if (e)
			e->status = IP_EXIT_BADINPUT;
		return r;
	}
	if (j->key && (r = readable(j, "key", j->key, e)) < 0)
		return r;
	if (j->report_ca_cert && (r = readable(j, "ca_cert", j->report_ca_cert, e)) < 0)
		return r;
	if (j->store == BOOTSTAGE_STORE_DIR && (r = check_store_dir(j, e)) < 0)
		return r;
	return 0;
}

int bootstage_job_load(const char *path, bootstage_job **out, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	bootstage_job *j = NULL;
	int r;

	r = ip_read_file(path, 1 << 20, &text, NULL, e);
	if (r < 0) {
		if (e)
			e->status = IP_EXIT_BADINPUT;
		return r;
	}
	if ((r = bootstage_job_parse(text, path, &j, e)) < 0)
		return r;
	if ((r = bootstage_job_resolve(j, e)) < 0) {
		bootstage_job_free(j);
		return r;
	}
	*out = j;
	return 0;
}
