/* stage.c — `inplace stage build`: the staging initramfs, a cpio newc
 * archive (libarchive, zstd) of the bundle, our /init, the run's state and
 * job, the job's local files, the disk's kernel modules in load order and
 * /stage.json, which tells init what it holds.
 *
 * Layout of the archive:
 *   /init                      the bundle's inplace binary itself (PID 1);
 *   /lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu
 *                              the bundle's loader and libraries where the
 *                              binary's PT_INTERP and the loader's default
 *                              path look: init starts before /proc exists,
 *                              so nothing may need /proc/self/exe
 *   /bundle/                   the bundle (its bin/ is init's PATH)
 *   /state/                    the state directory as `run` left it
 *   /lib/modules/VER/…         the modules init loads
 *   /ABS/PATH                  the job's key and CA (the image waits on
 *                              the old root: bs_root_image_put)
 *   /stage.json                {"version", "kernel_version", "modules",
 *                              "disk", "disk_wait_s", "records", …} */
#include <archive.h>
#include <archive_entry.h>
#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libkmod.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bootstage/bootstage.h"
#include "bootstage/internal.h"
#include "bootstage/stage.h"
#if __has_include("bootstage/bundle.h")
#include "bootstage/bundle.h"
#define HAVE_BUNDLE 1
#endif

#define STAGE_FORMAT 1

void bs_stage_result_clear(struct bs_stage_result *r)
{
	if (!r)
		return;
	json_object_put(r->modules);
	json_object_put(r->disk_id);
	r->modules = r->disk_id = NULL;
}

/* ---- modules ------------------------------------------------------------ */

/* Modules every staging env needs whatever the disk: the filesystems it
 * mounts (ext4 also serves the ext2 records; vfat an ESP; fuse ntfs-3g),
 * loop devices, and crc32c, which ext4 and jbd2 ask the crypto API for at
 * mount time (a request_module nobody answers without modprobe). */
static const char *const fs_modules[] = { "loop", "crc32c", "ext4", "vfat", "nls_cp437", "nls_ascii", "fuse",
					  NULL };
/* A disk that is an image file has no drivers to ask sysfs for: the disk
 * drivers a machine or a VM usually has. */
static const char *const usual_disk_modules[] = { "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci",
						  "nvme", NULL };

struct modset {
	struct kmod_ctx *ctx;
	const char *dir;
	json_object *out;        /* [{"name", "path"}] in load order */
	json_object *seen;       /* name → true */
	unsigned depth;
};

static int add_module(struct modset *ms, struct kmod_module *m, ip_error *e);

static int add_list(struct modset *ms, struct kmod_list *l, ip_error *e)
{
	struct kmod_list *it;
	int r = 0;

	kmod_list_foreach(it, l) {
		struct kmod_module *m = kmod_module_get_module(it);

		r = add_module(ms, m, e);
		kmod_module_unref(m);
		if (r < 0)
			break;
	}
	return r;
}

/* Depth first: dependencies and pre-softdeps before the module itself. */
static int add_module(struct modset *ms, struct kmod_module *m, ip_error *e)
{
	const char *name = kmod_module_get_name(m), *path = kmod_module_get_path(m);
	struct kmod_list *deps, *pre = NULL, *post = NULL;
	size_t dl = strlen(ms->dir);
	json_object *o;
	int r;

	if (json_object_object_get_ex(ms->seen, name, NULL))
		return 0;
	json_object_object_add(ms->seen, name, json_object_new_boolean(1));
	if (!path)
		return 0;   /* built into the kernel */
	if (++ms->depth > 64)
		return ip_fail(e, -ELOOP, "module %s: dependencies nested too deep in %s/modules.dep", name, ms->dir);
	deps = kmod_module_get_dependencies(m);
	r = add_list(ms, deps, e);
	kmod_module_unref_list(deps);
	if (r == 0 && kmod_module_get_softdeps(m, &pre, &post) == 0)
		r = add_list(ms, pre, e);
	kmod_module_unref_list(pre);
	kmod_module_unref_list(post);
	ms->depth--;
	if (r < 0)
		return r;
	if (strncmp(path, ms->dir, dl) || path[dl] != '/')
		return ip_fail(e, -EINVAL, "module %s lies outside %s (%s)", name, ms->dir, path);
	o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "path", json_object_new_string(path + dl + 1));
	json_object_array_add(ms->out, o);
	return 0;
}

/* A module name or alias (a modalias string too); unknown ones are left
 * out (a driver built in, or not in this kernel). */
static int add_lookup(struct modset *ms, const char *what, ip_error *e)
{
	struct kmod_list *l = NULL;
	int r;

	if (kmod_module_new_from_lookup(ms->ctx, what, &l) < 0)
		return 0;
	r = add_list(ms, l, e);
	kmod_module_unref_list(l);
	return r;
}

static void read_line(const char *path, char *buf, size_t n)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;

	*buf = '\0';
	if (ip_read_file(path, 4096, &data, &len, NULL) < 0)
		return;
	snprintf(buf, n, "%.*s", (int)strcspn(data, "\n"), data);
}

/* The drivers of a block device: from its device up through every parent
 * (virtio_blk, then virtio_pci; sd_mod, then ahci …), by the bound
 * driver's module and by each level's modalias. */
static int add_disk_drivers(struct modset *ms, const char *disk, ip_error *e)
{
	char sys[PATH_MAX], real[PATH_MAX], p[PATH_MAX + 32], link[PATH_MAX], alias[1024];
	struct stat st;
	int r;

	if (disk && stat(disk, &st) < 0)
		return ip_bad(e, -errno, "cannot find %s: %s", disk, strerror(errno));
	if (!disk || !S_ISBLK(st.st_mode)) {
		for (size_t i = 0; usual_disk_modules[i]; i++)
			if ((r = add_lookup(ms, usual_disk_modules[i], e)) < 0)
				return r;
		return 0;
	}
	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/device", major(st.st_rdev), minor(st.st_rdev));
	if (!realpath(sys, real))
		return 0;   /* a virtual disk (loop, dm): nothing to load */
	while (strlen(real) > strlen("/sys/devices")) {
		ssize_t n;

		snprintf(p, sizeof(p), "%s/driver/module", real);
		if ((n = readlink(p, link, sizeof(link) - 1)) > 0) {
			link[n] = '\0';
			if ((r = add_lookup(ms, strrchr(link, '/') ? strrchr(link, '/') + 1 : link, e)) < 0)
				return r;
		}
		snprintf(p, sizeof(p), "%s/modalias", real);
		read_line(p, alias, sizeof(alias));
		if (*alias && (r = add_lookup(ms, alias, e)) < 0)
			return r;
		*strrchr(real, '/') = '\0';
	}
	return 0;
}

int bs_stage_modules(const char *modules_dir, const char *disk, const char *const *extra, json_object **out,
		     ip_error *e)
{
	struct modset ms = { .dir = modules_dir };
	char dep[PATH_MAX];
	int r;

	*out = NULL;
	snprintf(dep, sizeof(dep), "%s/modules.dep", modules_dir);
	if (access(dep, R_OK) < 0)
		return ip_bad(e, -errno, "no %s: give the kernel's modules with --modules DIR", dep);
	ms.ctx = kmod_new(modules_dir, NULL);
	if (!ms.ctx)
		return ip_fail(e, -ENOMEM, "cannot read the module index of %s", modules_dir);
	ms.out = json_object_new_array();
	ms.seen = json_object_new_object();
	r = add_disk_drivers(&ms, disk, e);
	for (size_t i = 0; r == 0 && fs_modules[i]; i++)
		r = add_lookup(&ms, fs_modules[i], e);
	for (size_t i = 0; r == 0 && extra && extra[i]; i++) {
		struct kmod_list *l = NULL;

		if (kmod_module_new_from_lookup(ms.ctx, extra[i], &l) < 0 || !l)
			r = ip_bad(e, -ENOENT, "no module or alias %s in %s", extra[i], modules_dir);
		else
			r = add_list(&ms, l, e);
		kmod_module_unref_list(l);
	}
	json_object_put(ms.seen);
	kmod_unref(ms.ctx);
	if (r < 0) {
		json_object_put(ms.out);
		return r;
	}
	*out = ms.out;
	return 0;
}

/* ---- the kernel --------------------------------------------------------- */

static int find_kernel(const struct bs_stage_opts *o, struct bs_stage_result *res, ip_error *e)
{
	struct utsname u;
	const char *base, *v;
	char tree[PATH_MAX];

	if (o->kernel) {
		if (!realpath(o->kernel, res->kernel))
			return ip_bad(e, -errno, "cannot find the kernel %s: %s", o->kernel, strerror(errno));
		base = strrchr(res->kernel, '/') + 1;
		/* vmlinuz-VER (Debian, Fedora …): VER names its modules */
		v = strchr(base, '-');
		if (!v || !v[1])
			return ip_bad(e, -EINVAL, "cannot tell the version of kernel %s (named vmlinuz-VERSION?): "
				      "name it so, or give --modules DIR", o->kernel);
		snprintf(res->version, sizeof(res->version), "%s", v + 1);
	} else {
		if (uname(&u) < 0)
			return ip_fail(e, -errno, "uname: %s", strerror(errno));
		snprintf(res->version, sizeof(res->version), "%s", u.release);
		snprintf(res->kernel, sizeof(res->kernel), "/boot/vmlinuz-%s", u.release);
		if (access(res->kernel, R_OK) < 0)
			return ip_bad(e, -errno, "no kernel of the running system (%s: %s): give one with --kernel",
				      res->kernel, strerror(errno));
	}
	if (o->modules_dir) {
		if (!realpath(o->modules_dir, res->modules_dir))
			return ip_bad(e, -errno, "cannot find %s: %s", o->modules_dir, strerror(errno));
		v = strrchr(res->modules_dir, '/') + 1;
		if (o->kernel && strcmp(v, res->version))
			snprintf(res->version, sizeof(res->version), "%s", v);
		return 0;
	}
	/* KERNEL in TREE/boot: TREE/lib/modules/VER */
	snprintf(tree, sizeof(tree), "%s", res->kernel);
	*strrchr(tree, '/') = '\0';
	if (strrchr(tree, '/'))
		*strrchr(tree, '/') = '\0';
	snprintf(res->modules_dir, sizeof(res->modules_dir), "%s/lib/modules/%s", tree, res->version);
	if (access(res->modules_dir, R_OK) < 0)
		return ip_bad(e, -errno, "no modules of kernel %s in %s: give them with --modules DIR", res->version,
			      res->modules_dir);
	return 0;
}

/* ---- the disk's id ------------------------------------------------------- */

/* What init finds the disk by without udev: the partition table's id and
 * type (libblkid) and the size. */
static int disk_id(const char *disk, json_object **out, ip_error *e)
{
	blkid_probe pr = blkid_new_probe_from_filename(disk);
	const char *v;
	json_object *o;

	if (!pr)
		return ip_bad(e, -errno ? -errno : -EIO, "cannot probe %s", disk);
	blkid_probe_enable_superblocks(pr, 0);
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
	o = json_object_new_object();
	if (blkid_do_fullprobe(pr) == 0 && blkid_probe_lookup_value(pr, "PTUUID", &v, NULL) == 0)
		json_object_object_add(o, "ptuuid", json_object_new_string(v));
	if (blkid_probe_lookup_value(pr, "PTTYPE", &v, NULL) == 0)
		json_object_object_add(o, "pttype", json_object_new_string(v));
	json_object_object_add(o, "size", ip_json_u64((uint64_t)blkid_probe_get_size(pr)));
	blkid_free_probe(pr);
	if (!json_object_object_get_ex(o, "ptuuid", NULL)) {
		json_object_put(o);
		return ip_bad(e, -EINVAL, "%s has no partition table id (PTUUID): the staging environment could not "
			      "find it", disk);
	}
	*out = o;
	return 0;
}

/* ---- the archive ---------------------------------------------------------- */

struct cpio {
	struct archive *a;
	json_object *dirs;       /* directories written so far */
};

static int arch_err(struct cpio *c, const char *what, ip_error *e)
{
	return ip_fail(e, -EIO, "cannot write the initramfs (%s): %s", what, archive_error_string(c->a));
}

static int put_entry(struct cpio *c, const char *name, mode_t mode, const char *target, dev_t rdev,
		     const void *data, size_t len, ip_error *e)
{
	struct archive_entry *en = archive_entry_new();
	int r = 0;

	archive_entry_set_pathname(en, name);
	archive_entry_set_mode(en, mode);
	archive_entry_set_uid(en, 0);
	archive_entry_set_gid(en, 0);
	archive_entry_set_mtime(en, 0, 0);
	archive_entry_set_nlink(en, S_ISDIR(mode) ? 2 : 1);
	if (S_ISLNK(mode))
		archive_entry_set_symlink(en, target);
	if (S_ISCHR(mode))
		archive_entry_set_rdev(en, rdev);
	archive_entry_set_size(en, S_ISREG(mode) ? (la_int64_t)len : 0);
	if (archive_write_header(c->a, en) != ARCHIVE_OK)
		r = arch_err(c, name, e);
	else if (len && archive_write_data(c->a, data, len) != (la_ssize_t)len)
		r = arch_err(c, name, e);
	archive_entry_free(en);
	return r;
}

/* Every parent directory of name, once. */
static int put_parents(struct cpio *c, const char *name, ip_error *e)
{
	char d[PATH_MAX];
	int r;

	for (const char *s = strchr(name, '/'); s; s = strchr(s + 1, '/')) {
		snprintf(d, sizeof(d), "%.*s", (int)(s - name), name);
		if (json_object_object_get_ex(c->dirs, d, NULL))
			continue;
		json_object_object_add(c->dirs, d, NULL);
		if ((r = put_entry(c, d, S_IFDIR | 0755, NULL, 0, NULL, 0, e)) < 0)
			return r;
	}
	return 0;
}

/* A file of the host as name in the archive (following symlinks). */
static int put_file(struct cpio *c, const char *name, const char *src, ip_error *e)
{
	struct archive_entry *en;
	_cleanup_close_ int fd = -1;
	char buf[1 << 16];
	struct stat st;
	ssize_t n;
	int r;

	if ((r = put_parents(c, name, e)) < 0)
		return r;
	fd = open(src, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return ip_fail(e, -errno, "cannot read %s: %s", src, strerror(errno));
	en = archive_entry_new();
	archive_entry_set_pathname(en, name);
	archive_entry_set_mode(en, S_IFREG | (st.st_mode & 07777));
	archive_entry_set_size(en, st.st_size);
	archive_entry_set_mtime(en, st.st_mtime, 0);
	archive_entry_set_nlink(en, 1);
	r = archive_write_header(c->a, en) == ARCHIVE_OK ? 0 : arch_err(c, name, e);
	archive_entry_free(en);
	while (r == 0 && (n = read(fd, buf, sizeof(buf))) > 0)
		if (archive_write_data(c->a, buf, (size_t)n) != n)
			r = arch_err(c, name, e);
	if (r == 0 && n < 0)
		r = ip_fail(e, -errno, "cannot read %s: %s", src, strerror(errno));
	return r;
}

/* A directory tree of the host below name (symlinks kept as links). */
static int put_tree(struct cpio *c, const char *name, const char *src, ip_error *e)
{
	DIR *d = opendir(src);
	struct dirent *de;
	int r;

	if (!d)
		return ip_fail(e, -errno, "cannot read %s: %s", src, strerror(errno));
	r = put_parents(c, name, e);
	if (r == 0 && !json_object_object_get_ex(c->dirs, name, NULL)) {
		json_object_object_add(c->dirs, name, NULL);
		r = put_entry(c, name, S_IFDIR | 0755, NULL, 0, NULL, 0, e);
	}
	while (r == 0 && (de = readdir(d))) {
		char s[PATH_MAX], n[PATH_MAX], target[PATH_MAX];
		struct stat st;
		ssize_t tl;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(s, sizeof(s), "%s/%s", src, de->d_name);
		snprintf(n, sizeof(n), "%s/%s", name, de->d_name);
		if (lstat(s, &st) < 0) {
			r = ip_fail(e, -errno, "cannot read %s: %s", s, strerror(errno));
		} else if (S_ISDIR(st.st_mode)) {
			r = put_tree(c, n, s, e);
		} else if (S_ISLNK(st.st_mode)) {
			tl = readlink(s, target, sizeof(target) - 1);
			if (tl < 0)
				r = ip_fail(e, -errno, "cannot read %s: %s", s, strerror(errno));
			else {
				target[tl] = '\0';
				r = put_entry(c, n, S_IFLNK | 0777, target, 0, NULL, 0, e);
			}
		} else if (S_ISREG(st.st_mode)) {
			r = put_file(c, n, s, e);
		}
	}
	closedir(d);
	return r;
}

/* A file the job names by absolute path, at that path (absent: skipped;
 * the staging steps say what is missing). */
static int put_job_file(struct cpio *c, const char *path, ip_error *e)
{
	char real[PATH_MAX];

	if (!path || path[0] != '/' || !realpath(path, real))
		return 0;
	return put_file(c, path + 1, real, e);
}

static int put_json(struct cpio *c, const char *name, json_object *doc, ip_error *e)
{
	const char *s = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY);

	return put_entry(c, name, S_IFREG | 0600, NULL, 0, s, strlen(s), e);
}

/* ---- build ------------------------------------------------------------------ */

/* The bundle's real binary and loader: where /init and the standard
 * library paths point. */
#define BUNDLE_BINARY "libexec/inplace"
#define BUNDLE_LIBDIR "lib"
#define BUNDLE_LOADER "ld-linux-x86-64.so.2"


static int write_bundle(const char *tmp, char *dir, size_t n, ip_error *e)
{
	snprintf(dir, n, "%s/bundle", tmp);
#ifdef HAVE_BUNDLE
	return bs_bundle_write(dir, e);
#else
	(void)dir;
	return ip_fail(e, -ENOSYS, "this inplace has no bundle writer (inplace bundle): the staging environment "
		       "needs one");
#endif
}

/* The state of the run staging resumes, and the store size it planned. */
static int load_state(const struct bs_stage_opts *o, const char *dir, bootstage_state **st, uint64_t *store_bytes,
		      ip_error *e)
{
	bootstage_job *job = NULL;
	json_object *steps, *v;
	enum bootstage_phase ph;
	int r;

	if (o->job && (r = bootstage_job_load(o->job, &job, e)) < 0)
		return r;
	r = bootstage_state_load(dir, job ? job->hash : NULL, st, e);
	bootstage_job_free(job);
	if (r == -ENOENT)
		return ip_bad(e, r, "no run waits for the staging boot (no state in %s): start one with "
			      "'inplace run JOB.ini' first", dir);
	if (r < 0)
		return r;
	ph = bootstage_state_phase(*st);
	if (ph < BOOTSTAGE_PHASE_PREPARE || ph > BOOTSTAGE_PHASE_DEPLOY)
		return ip_bad(e, -EINVAL, "the run in %s is in phase %s: a staging environment serves phases "
			      "prepare and deploy", dir, bootstage_phase_name(ph));
	*store_bytes = 0;
	if (json_object_object_get_ex(bootstage_state_json(*st), "steps", &steps))
		for (size_t i = 0; i < json_object_array_length(steps); i++) {
			json_object *s = json_object_array_get_idx(steps, i), *res;

			if (json_object_object_get_ex(s, "step", &v) && !strcmp(json_object_get_string(v), "checks") &&
			    json_object_object_get_ex(s, "result", &res) &&
			    json_object_object_get_ex(res, "store_bytes", &v))
				*store_bytes = (uint64_t)json_object_get_int64(v);
		}
	return 0;
}

static int state_job(const char *state_dir, bootstage_job **job, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	char path[PATH_MAX];
	size_t len;
	int r;

	snprintf(path, sizeof(path), "%s/%s", state_dir, BOOTSTAGE_JOB_FILE);
	if ((r = ip_read_file(path, 1 << 20, &text, &len, e)) < 0)
		return r;
	return bootstage_job_parse(text, path, job, e);
}

/* The job's small files staging reads by their paths: the key (the trust
 * the copy in the store is checked against) and the report's CA.  The
 * image is among them only for netboot (with_image), whose staging has no
 * other way to it; otherwise it waits on the old root (put_image) or on
 * the boot media beside the initramfs. */
static int put_job_files(struct cpio *c, const char *state_dir, bool with_image, ip_error *e)
{
	bootstage_job *job = NULL;
	char sig[PATH_MAX];
	int r;

	if ((r = state_job(state_dir, &job, e)) < 0)
		return r;
	snprintf(sig, sizeof(sig), "%s.minisig", job->image);
	if ((!with_image || ((r = put_job_file(c, job->image, e)) == 0 && (r = put_job_file(c, sig, e)) == 0)) &&
	    (r = put_job_file(c, job->key, e)) == 0)
		r = put_job_file(c, job->report_ca_cert, e);
	bootstage_job_free(job);
	return r;
}

/* The image onto the old root, downloaded or copied and verified, before
 * the records (the shrink the records are planned against keeps it). */
static int put_image(const char *state_dir, const char *disk, unsigned sys_part, struct bs_root_image *ri,
		     ip_error *e)
{
	bootstage_job *job = NULL;
	int r;

	if ((r = state_job(state_dir, &job, e)) < 0)
		return r;
	r = bs_root_image_put(disk, sys_part ? sys_part : job->system_partition, job->image, (const char *const *)job->mirrors, job->key, ri, e);
	bootstage_job_free(job);
	return r;
}

static int put_state(struct cpio *c, const char *state_dir, ip_error *e)
{
	static const char *const files[] = { BOOTSTAGE_JOB_FILE, BOOTSTAGE_STATE_FILE, BOOTSTAGE_LOG_FILE,
					     BOOTSTAGE_CURSOR_FILE };
	char p[PATH_MAX], n[64];
	int r = put_entry(c, "state", S_IFDIR | 0700, NULL, 0, NULL, 0, e);

	json_object_object_add(c->dirs, "state", NULL);
	for (size_t i = 0; r == 0 && i < IP_ARRAY_SIZE(files); i++) {
		snprintf(p, sizeof(p), "%s/%s", state_dir, files[i]);
		snprintf(n, sizeof(n), "state/%s", files[i]);
		if (access(p, F_OK) == 0)
			r = put_file(c, n, p, e);
	}
	return r;
}

static int put_bundle(struct cpio *c, const char *bundle, ip_error *e)
{
	static const char *const dirs[] = { "dev", "proc", "sys", "run", "tmp", "lib", "lib64", "mnt" };
	char p[PATH_MAX];
	int r = put_tree(c, "bundle", bundle, e);

	for (size_t i = 0; r == 0 && i < IP_ARRAY_SIZE(dirs); i++) {
		json_object_object_add(c->dirs, dirs[i], NULL);
		r = put_entry(c, dirs[i], S_IFDIR | 0755, NULL, 0, NULL, 0, e);
	}
	/* the kernel opens init's stdio here, before devtmpfs is mounted */
	if (r == 0)
		r = put_entry(c, "dev/console", S_IFCHR | 0600, NULL, makedev(5, 1), NULL, 0, e);
	snprintf(p, sizeof(p), "%s/%s", bundle, BUNDLE_BINARY);
	if (r == 0 && access(p, X_OK) < 0)
		r = ip_fail(e, -ENOENT, "the bundle has no %s: cannot make /init of it", BUNDLE_BINARY);
	if (r == 0)
		r = put_entry(c, "init", S_IFLNK | 0777, "bundle/" BUNDLE_BINARY, 0, NULL, 0, e);
	if (r == 0)
		r = put_entry(c, "lib64/" BUNDLE_LOADER, S_IFLNK | 0777, "../bundle/" BUNDLE_LIBDIR "/" BUNDLE_LOADER,
			      0, NULL, 0, e);
	if (r == 0)
		r = put_entry(c, "lib/x86_64-linux-gnu", S_IFLNK | 0777, "../bundle/" BUNDLE_LIBDIR, 0, NULL, 0, e);
	return r;
}

static int put_modules(struct cpio *c, const struct bs_stage_result *res, ip_error *e)
{
	char name[PATH_MAX], src[PATH_MAX];
	int r = 0;

	for (size_t i = 0; r == 0 && i < json_object_array_length(res->modules); i++) {
		json_object *m = json_object_array_get_idx(res->modules, i), *p;

		json_object_object_get_ex(m, "path", &p);
		snprintf(name, sizeof(name), "lib/modules/%s/%s", res->version, json_object_get_string(p));
		snprintf(src, sizeof(src), "%s/%s", res->modules_dir, json_object_get_string(p));
		r = put_file(c, name, src, e);
	}
	return r;
}

static json_object *stage_doc(const struct bs_stage_opts *o, const struct bs_stage_result *res, const char *disk)
{
	json_object *doc = json_object_new_object();

	json_object_object_add(doc, "version", json_object_new_int(STAGE_FORMAT));
	json_object_object_add(doc, "kernel_version", json_object_new_string(res->version));
	json_object_object_add(doc, "modules", json_object_get(res->modules));
	json_object_object_add(doc, "disk", json_object_get(res->disk_id));
	json_object_object_add(doc, "disk_built_on", json_object_new_string(disk));
	json_object_object_add(doc, "disk_wait_s", json_object_new_int(o->disk_wait_s ? (int)o->disk_wait_s : 60));
	json_object_object_add(doc, "state_dir", json_object_new_string("/state"));
	json_object_object_add(doc, "bundle", json_object_new_string("/bundle"));
	json_object_object_add(doc, "records", bs_records_json(res->records ? &res->rec : NULL));
	if (o->media)
		json_object_object_add(doc, "media", json_object_get(o->media));
	else
		json_object_object_add(doc, "image", bs_root_image_json(&res->image));
	return doc;
}

static int write_archive(int fd, const struct bs_stage_opts *o, struct bs_stage_result *res, const char *disk,
			 const char *state_dir, const char *bundle, ip_error *e)
{
	struct cpio c = { .a = archive_write_new(), .dirs = json_object_new_object() };
	json_object *doc;
	int r = 0;

	if (!c.a || !c.dirs)
		r = ip_fail(e, -ENOMEM, "out of memory");
	else if (archive_write_set_format_cpio_newc(c.a) != ARCHIVE_OK ||
		 archive_write_add_filter_zstd(c.a) != ARCHIVE_OK ||
		 archive_write_set_bytes_in_last_block(c.a, 1) != ARCHIVE_OK ||
		 archive_write_open_fd(c.a, fd) != ARCHIVE_OK)
		r = arch_err(&c, "open", e);
	if (r == 0)
		r = put_bundle(&c, bundle, e);
	if (r == 0)
		r = put_state(&c, state_dir, e);
	if (r == 0)
		r = put_job_files(&c, state_dir, o->media && !o->no_image, e);
	if (r == 0)
		r = put_modules(&c, res, e);
	if (r == 0) {
		doc = stage_doc(o, res, disk);
		r = put_json(&c, "stage.json", doc, e);
		json_object_put(doc);
	}
	if (r == 0 && archive_write_close(c.a) != ARCHIVE_OK)
		r = arch_err(&c, "close", e);
	if (c.a)
		archive_write_free(c.a);
	json_object_put(c.dirs);
	return r;
}

/* Write the archive durably to out from what the caller gathered. */
static int write_out(const char *out, const struct bs_stage_opts *o, struct bs_stage_result *res, const char *disk,
		     const char *state_dir, const char *bundle, ip_error *e)
{
	ip_outfile of = { .fd = -1 };
	struct stat sb;
	int r;

	if ((r = ip_outfile_open(out, NULL, 0600, &of, e)) < 0)
		return r;
	r = write_archive(of.fd, o, res, disk, state_dir, bundle, e);
	if (r == 0)
		r = ip_outfile_commit(&of, e);
	else
		ip_outfile_abort(&of);
	if (r == 0 && stat(out, &sb) == 0)
		res->bytes = (uint64_t)sb.st_size;
	return r;
}

/* Media and netboot (o->media): no state, no disk to ask sysfs about and
 * no records area; the job alone in state_dir. */
static int build_for_media(const char *out, const struct bs_stage_opts *o, struct bs_stage_result *res,
			   ip_error *e)
{
	char tmp[] = "/tmp/inplace-stage.XXXXXX", bundle[PATH_MAX];
	int r;

	if ((r = find_kernel(o, res, e)) < 0 ||
	    (r = bs_stage_modules(res->modules_dir, NULL, o->add_modules, &res->modules, e)) < 0)
		return r;
	if (!mkdtemp(tmp))
		return ip_fail(e, -errno, "cannot make a temporary directory: %s", strerror(errno));
	if ((r = write_bundle(tmp, bundle, sizeof(bundle), e)) == 0)
		r = write_out(out, o, res, "", o->state_dir, bundle, e);
	bs_rm_tree(tmp, NULL);
	return r;
}

int bs_stage_build(const char *out, const struct bs_stage_opts *o, struct bs_stage_result *res, ip_error *e)
{
	const char *state_dir = o->state_dir ? o->state_dir : bootstage_default_state_dir();
	char tmp[] = "/tmp/inplace-stage.XXXXXX", bundle[PATH_MAX], disk[PATH_MAX];
	bootstage_state *st = NULL;
	uint64_t store_bytes = 0;
	unsigned sys_part = 0;
	json_object *v;
	int r;

	memset(res, 0, sizeof(*res));
	if (o->media)
		return build_for_media(out, o, res, e);
	if ((r = load_state(o, state_dir, &st, &store_bytes, e)) < 0)
		goto out;
	snprintf(disk, sizeof(disk), "%s", o->disk ? o->disk : "");
	if (!*disk && json_object_object_get_ex(bootstage_state_json(st), "disk", &v))
		snprintf(disk, sizeof(disk), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(bootstage_state_json(st), "system_partition", &v))
		sys_part = (unsigned)json_object_get_int(v);
	if (!*disk) {
		r = ip_bad(e, -EINVAL, "the state in %s names no disk: give --disk", state_dir);
		goto out;
	}
	if ((r = find_kernel(o, res, e)) < 0 || (r = disk_id(disk, &res->disk_id, e)) < 0 ||
	    (r = bs_stage_modules(res->modules_dir, disk, o->add_modules, &res->modules, e)) < 0)
		goto out;
	if (!mkdtemp(tmp)) {
		r = ip_fail(e, -errno, "cannot make a temporary directory: %s", strerror(errno));
		goto out;
	}
	if ((r = write_bundle(tmp, bundle, sizeof(bundle), e)) < 0)
		goto out_tmp;
	if ((r = put_image(state_dir, disk, sys_part, &res->image, e)) < 0)
		goto out_tmp;
	/* last before the archive: the records hold the state as written now */
	if (!o->no_records) {
		if ((r = bs_records_create(disk, sys_part, state_dir, store_bytes, &res->rec, e)) < 0)
			goto out_tmp;
		res->records = true;
	}
	r = write_out(out, o, res, disk, state_dir, bundle, e);
out_tmp:
	bs_rm_tree(tmp, NULL);
out:
	bootstage_state_free(st);
	return r;
}
