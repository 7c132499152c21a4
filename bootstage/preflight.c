/* preflight.c — the first phase, on the old OS and read-only: is the image
 * there and signed, does it fit, how large must the store be, and where
 * does the room come from.  `inplace run --dry-run` stops after it; a
 * refusal here leaves the disk byte for byte as it was. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "bootstage/boot.h"
#include "bootstage/internal.h"
#include "imager/imager.h"

#define MiB (1ULL << 20)

static void note(struct bootstage_preflight_result *res, const char *step, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void note(struct bootstage_preflight_result *res, const char *step, const char *fmt, ...)
{
	json_object *o = json_object_new_object();
	char msg[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "step", json_object_new_string(step));
	json_object_object_add(o, "message", json_object_new_string(msg));
	json_object_array_add(res->checks, o);
}

void bootstage_preflight_result_clear(struct bootstage_preflight_result *r)
{
	json_object_put(r->estimate);
	json_object_put(r->checks);
	memset(r, 0, sizeof(*r));
}

static int check_url(const bootstage_job *j, struct bootstage_preflight_result *res, ip_error *e)
{
	struct imager_fetch_opts fo = { .mirrors = (const char *const *)j->mirrors };
	int r = imager_probe_url(j->image, &fo, &res->image_bytes, e);

	if (r < 0)
		return r;
	res->image_url = true;
	return 0;
}

static int check_file(const bootstage_job *j, struct bootstage_preflight_result *res, ip_error *e)
{
	_cleanup_free_ char *sig = NULL;
	imager_image *img = NULL;
	struct stat st;
	int r;

	if (stat(j->image, &st) < 0)
		return ip_bad(e, -errno, "image %s: %s: fix image in the job", j->image, strerror(errno));
	if ((r = imager_open(j->image, &img, e)) < 0)
		return r;
	res->image_bytes = imager_file_size(img);
	res->image_part_bytes = imager_part_size(img);
	imager_free(img);
	if (!j->require_signature)
		return 0;
	if (asprintf(&sig, "%s.minisig", j->image) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	if ((r = imager_verify_sig(j->image, sig, j->key, e)) < 0) {
		if (e)
			e->status = IP_EXIT_BADINPUT;
		return r;
	}
	res->signature_checked = true;
	return 0;
}

/* Can the image boot by itself (kernel, GRUB for this disk's firmware)?
 * Looked up inside the image, before anything is written.  With a real
 * reboot to follow, an image that cannot is refused; with method none (a
 * test run) it is said and deployed as it is. */
static int check_bootable(const bootstage_job *j, struct bootstage_preflight_result *res, ip_error *e)
{
	const char *const *paths = bs_boot_paths();
	bool found[32] = { false }, uefi = bs_disk_has_esp(j->disk);
	ip_error why = { 0 };
	size_t n = 0;
	int r;

	while (paths[n])
		n++;
	if (n > IP_ARRAY_SIZE(found))
		return ip_fail(e, -E2BIG, "too many paths to look for in the image");
	r = imager_paths_exist(j->image, paths, found, &why);
	if (r == -EOPNOTSUPP) {
		note(res, "bootable", "%s: not checked", why.msg);
		return 0;
	}
	if (r == 0)
		r = bs_bootable(uefi, found, &why);
	if (r == 0) {
		note(res, "bootable", "the image can boot by %s: a kernel and GRUB", uefi ? "UEFI" : "BIOS");
		return 0;
	}
	if (j->boot == BOOTSTAGE_BOOT_NONE && why.status == IP_EXIT_BADINPUT) {
		note(res, "bootable", "%s; [boot] method none: deployed as it is", why.msg);
		return 0;
	}
	if (e)
		*e = why;
	return r;
}

/* ---- the system partition's root, for the estimate ------------------- */

struct sysroot {
	char dir[PATH_MAX];     /* where the root is readable */
	int fd;                 /* our mount, held open after it was detached */
	uint64_t used;          /* bytes its filesystem uses */
};

/* Where device dev is mounted (its root, not a bind of a subtree). */
static bool mounted_at(dev_t dev, char *dir, size_t len)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;

	while (f && getline(&line, &cap, f) > 0) {
		unsigned a, b;
		char root[4096], mnt[4096];

		if (sscanf(line, "%*u %*u %u:%u %4095s %4095s", &a, &b, root, mnt) == 4 &&
		    makedev(a, b) == dev && !strcmp(root, "/") && strlen(mnt) < len) {
			/* mountinfo escapes spaces as \040: such a mount point is
			 * not used here rather than misread */
			if (strchr(mnt, '\\'))
				continue;
			strcpy(dir, mnt);
			return true;
		}
	}
	return false;
}

static void sysroot_release(struct sysroot *m)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
}

/* Mount node read-only on a fresh directory, then keep only a descriptor
 * of its root: the mount is detached at once (and the loop device set to
 * clear itself), so whatever happens to this process, kill -9 included,
 * no mount or loop device outlives it. */
static int mount_private(const bootstage_job *j, const char *node, const char *type, const char *loop,
			 struct sysroot *m, ip_error *e)
{
	const unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	char tmp[] = "/tmp/inplace-root.XXXXXX";
	int r;

	if (!mkdtemp(tmp))
		return ip_fail(e, -errno, "cannot make a mount point in /tmp: %s", strerror(errno));
	r = mount(node, tmp, type, flags, NULL);
	/* a journal that wants replaying cannot be replayed read-only */
	if (r < 0 && (!strcmp(type, "ext3") || !strcmp(type, "ext4")))
		r = mount(node, tmp, type, flags, "noload");
	if (r < 0) {
		r = ip_fail(e, -errno, "cannot mount partition %u of %s read-only to estimate the profiles (%s): "
			    "set store_size in [job]", j->system_partition, j->disk, strerror(errno));
		rmdir(tmp);
		return r;
	}
	m->fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = m->fd < 0 ? -errno : 0;
	umount2(tmp, MNT_DETACH);
	rmdir(tmp);
	/* busy (our mount holds it): the kernel clears it on its last close */
	if (loop)
		ip_loop_detach(loop, NULL);
	if (r < 0)
		return ip_fail(e, r, "cannot open the root of partition %u of %s: %s", j->system_partition, j->disk,
			       strerror(-r));
	snprintf(m->dir, sizeof(m->dir), "/proc/self/fd/%d", m->fd);
	return 0;
}

static int sysroot_get(const bootstage_job *j, uint64_t off, uint64_t size, struct sysroot *m, ip_error *e)
{
	struct partctl_fsinfo fs;
	ip_disk *d = NULL;
	char node[64], loop[64];
	struct stat st;
	bool blk;
	int r;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if ((r = ip_disk_open(j->disk, IP_DISK_RDONLY, &d, e)) < 0)
		return r;
	r = partctl_fs_probe(d, off, size, &fs, e);
	blk = ip_disk_is_blockdev(d);
	ip_disk_free(d);
	if (r < 0)
		return r;
	m->used = fs.used;
	if (!fs.type[0])
		return ip_bad(e, -EINVAL, "partition %u of %s holds no filesystem to save profiles from: "
			      "check system_partition, or set store_size", j->system_partition, j->disk);
	if (!blk) {
		/* an image file: a read-only loop device over the partition */
		if ((r = ip_loop_attach(j->disk, off, size, true, loop, sizeof(loop), e)) < 0)
			return r;
		r = mount_private(j, loop, fs.type, loop, m, e);
		if (r < 0)
			ip_loop_detach(loop, NULL);
		return r;
	}
	if (ip_partition_node(j->disk, j->system_partition, node, sizeof(node)) < 0 || stat(node, &st) < 0)
		return ip_fail(e, -ENOENT, "the kernel has no node for partition %u of %s: run partx -u %s",
			       j->system_partition, j->disk, j->disk);
	/* the running root, or a mounted partition: read it where it is */
	if (mounted_at(st.st_rdev, m->dir, sizeof(m->dir)))
		return 0;
	return mount_private(j, node, fs.type, NULL, m, e);
}

/* The size of a store partition whose filesystem holds need bytes: the
 * contents plus what ext4 takes for itself at that size (journal, inode
 * tables, group descriptors, the 5% reserve), measured by mke2fs itself
 * on a sparse scratch file formatted as make-storage formats the store
 * (the journal grows with the size, hence a few rounds). */
static int store_partition_bytes(uint64_t need, uint64_t *bytes, ip_error *e)
{
	char tmp[] = "/tmp/inplace-storefs.XXXXXX";
	const char *argv[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-E", "nodiscard", tmp, NULL };
	_cleanup_close_ int fd = mkstemp(tmp);
	uint64_t size = need;
	int r = 0;

	if (fd < 0)
		return ip_fail(e, -errno, "cannot make a scratch file to measure the store's filesystem: %s",
			       strerror(errno));
	for (int round = 0; round < 6; round++) {
		struct partctl_fsinfo fi;
		ip_disk *d = NULL;
		uint64_t usable;

		size = (size + MiB - 1) & ~(MiB - 1);
		if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0) {
			r = ip_fail(e, -errno, "cannot size the scratch file %s: %s", tmp, strerror(errno));
			break;
		}
		if ((r = ip_spawn(argv, NULL, e)) < 0) {
			ip_error_prefix(e, "cannot measure the store's filesystem overhead: ");
			break;
		}
		if ((r = ip_disk_open(tmp, IP_DISK_RDONLY, &d, e)) == 0)
			r = partctl_fs_probe(d, 0, size, &fi, e);
		ip_disk_free(d);
		if (r < 0)
			break;
		usable = fi.size > fi.used + fi.size / 20 ? fi.size - fi.used - fi.size / 20 : 0;
		*bytes = size;
		if (fi.used_known && usable >= need)
			break;
		size += need > usable ? need - usable : MiB;
	}
	unlink(tmp);
	return r;
}

static int estimate_store(const bootstage_job *j, uint64_t off, uint64_t size,
			  struct bootstage_preflight_result *res, ip_error *e)
{
	struct sysroot m;
	json_object *v;
	int r;

	if ((r = sysroot_get(j, off, size, &m, e)) < 0)
		return r;
	r = migrate_estimate(m.dir, j->spec, &res->estimate, e);
	sysroot_release(&m);
	if (r < 0)
		return r;
	if (json_object_object_get_ex(res->estimate, "store_bytes", &v))
		res->profile_bytes = (uint64_t)json_object_get_int64(v);
	/* the rollback image holds the used blocks, compressed: at most these
	 * bytes and its 1% of frame overhead */
	if (j->rollback_image)
		res->rollback_bytes = m.used + m.used / 100;
	/* profiles + 10%, the image copied into the store, the bundle */
	res->store_bytes = res->profile_bytes + res->profile_bytes / 10 + res->image_bytes + BOOTSTAGE_BUNDLE_BYTES +
			   res->rollback_bytes;
	res->store_bytes = (res->store_bytes + MiB - 1) & ~(MiB - 1);
	if (j->store == BOOTSTAGE_STORE_PARTITION)
		return store_partition_bytes(res->store_bytes, &res->store_bytes, e);
	return 0;
}

/* With a reboot into staging, the old OS puts the image on the old root
 * first (bs_root_image_put), and the shrink must keep it there until the
 * store holds its copy: the room is there when a store of the image's
 * size more could be made. */
static int room_for_image(const bootstage_job *j, const struct partctl_plan_disk *d,
			  const struct bootstage_preflight_result *res, ip_error *e)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ], node[64];
	struct partctl_plan both;
	ip_error why = { 0 };
	struct stat img, part;

	/* an image on the old root already is linked there, not copied */
	if (!imager_is_url(j->image) && stat(j->image, &img) == 0 &&
	    ip_partition_node(j->disk, j->system_partition, node, sizeof(node)) == 0 && stat(node, &part) == 0 &&
	    S_ISBLK(part.st_mode) && img.st_dev == part.st_rdev)
		return 0;
	if (partctl_plan_compute(d, res->store_bytes + res->image_bytes, &both, &why) == 0)
		return 0;
	return ip_bad(e, -ENOSPC, "the old root of %s must hold the image (%s) until the staging boot copies it "
		      "into the store (%s), and the disk has not room for both: %s",
		      j->disk, ip_format_size(res->image_bytes, b1, sizeof(b1)),
		      ip_format_size(res->store_bytes, b2, sizeof(b2)), why.msg);
}

static int plan_room(const bootstage_job *j, struct bootstage_preflight_result *res, ip_error *e)
{
	struct partctl_plan_disk *d = NULL;
	struct statvfs vfs;
	int r;

	if (j->store == BOOTSTAGE_STORE_DIR) {
		if (statvfs(j->store_dir, &vfs) < 0)
			return ip_fail(e, -errno, "cannot read the free space of %s: %s", j->store_dir, strerror(errno));
		res->store_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
		if (res->store_free < res->store_bytes) {
			char need[IP_SIZE_BUFSZ], have[IP_SIZE_BUFSZ];
			return ip_bad(e, -ENOSPC, "store directory %s has %s free, the store needs %s: "
				      "free space there or choose another directory",
				      j->store_dir, ip_format_size(res->store_free, have, sizeof(have)),
				      ip_format_size(res->store_bytes, need, sizeof(need)));
		}
		return 0;
	}
	if ((r = partctl_plan_describe(j->disk, &d, e)) < 0)
		return r;
	r = partctl_plan_compute(d, res->store_bytes, &res->plan, e);
	if (r == 0 && j->boot != BOOTSTAGE_BOOT_NONE)
		r = room_for_image(j, d, res, e);
	partctl_plan_disk_free(d);
	if (r < 0)
		return r;
	res->planned = true;
	for (size_t i = 0; i < res->plan.n; i++)
		if (res->plan.steps[i].op == PARTCTL_OP_SHRINK && res->plan.steps[i].partition == j->system_partition)
			res->system_bytes_after = res->plan.steps[i].to;
	return 0;
}

int bootstage_preflight(const bootstage_job *j, struct bootstage_preflight_result *res, ip_error *e)
{
	char b1[IP_SIZE_BUFSZ], b2[IP_SIZE_BUFSZ], b3[IP_SIZE_BUFSZ];
	uint64_t off, size;
	int r;

	memset(res, 0, sizeof(*res));
	if (!(res->checks = json_object_new_array()))
		return ip_fail(e, -ENOMEM, "out of memory");
	note(res, "job", "job %s valid (%.12s): disk %s, system partition %u", j->name, j->hash, j->disk,
	     j->system_partition);
	if ((r = partctl_part_range(j->disk, j->system_partition, &off, &size, e)) < 0)
		return r;
	res->system_bytes = res->system_bytes_after = size;
	r = imager_is_url(j->image) ? check_url(j, res, e) : check_file(j, res, e);
	if (r < 0)
		return r;
	note(res, "image", "image %s reachable, %s", j->image, ip_format_size(res->image_bytes, b1, sizeof(b1)));
	if (res->signature_checked)
		note(res, "signature", "signature of %s good (key %s)", j->image, j->key);
	/* a URL's image is looked at once it is in the store */
	if (!res->image_url && (r = check_bootable(j, res, e)) < 0)
		return r;
	if (j->store_size) {
		res->store_bytes = j->store_size;
	} else if ((r = estimate_store(j, off, size, res, e)) < 0) {
		return r;
	}
	note(res, "estimate", "the store needs %s (profiles %s)", ip_format_size(res->store_bytes, b1, sizeof(b1)),
	     res->profile_bytes ? ip_format_size(res->profile_bytes, b2, sizeof(b2)) : "as store_size says");
	if ((r = plan_room(j, res, e)) < 0)
		return r;
	if (res->image_part_bytes > res->system_bytes_after)
		return ip_bad(e, -ENOSPC, "the image needs a partition of %s, but partition %u of %s %s %s: "
			      "choose a smaller image%s", ip_format_size(res->image_part_bytes, b1, sizeof(b1)),
			      j->system_partition, j->disk,
			      res->system_bytes_after < size ? "would have, after making room for the store," : "has",
			      ip_format_size(res->system_bytes_after, b2, sizeof(b2)),
			      res->system_bytes_after < size ? ", or a store on another disk" : "");
	if (res->planned)
		note(res, "plan", "room planned: a store partition of %s in %zu step%s", ip_format_size(res->plan.size, b3, sizeof(b3)),
		     res->plan.n, res->plan.n == 1 ? "" : "s");
	else
		note(res, "plan", "store directory %s has room", j->store_dir);
	return 0;
}
