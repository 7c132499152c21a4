/* steps.c — the pipeline's steps, each a call into partctl, imager or
 * migrate plus the mounts around it.  Every step is idempotent (see
 * steps.h): what it finds on disk tells it what is left to do. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>

#include "bootstage/boot.h"
#include "bootstage/steps.h"
#include "imager/imager.h"
#include "partctl/partctl.h"

#define FIRSTBOOT_UNIT "inplace-firstboot.service"

/* ---- partitions ------------------------------------------------------- */

static int probe_part(const char *disk, unsigned n, uint64_t *off, uint64_t *size,
		      struct partctl_fsinfo *fi, ip_error *e)
{
	ip_disk *d = NULL;
	int r;

	r = partctl_part_range(disk, n, off, size, e);
	if (r < 0)
		return r;
	r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e);
	if (r < 0)
		return r;
	r = partctl_fs_probe(d, *off, *size, fi, e);
	ip_disk_free(d);
	return r;
}

/* The first partition of disk whose filesystem matches: of type (NULL:
 * any), by label or else by uuid.  *part 0 when none does. */
static int find_fs(const char *disk, const char *type, const char *label, const char *uuid, unsigned *part,
		   uint64_t *off, uint64_t *size, ip_error *e)
{
	partctl_table *t = NULL;
	ip_disk *d = NULL;
	int r;

	*part = 0;
	r = partctl_table_open(disk, false, &t, e);
	if (r < 0)
		return r;
	r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e);
	for (size_t i = 0; r == 0 && i < partctl_table_count(t); i++) {
		const struct partctl_part *pp = partctl_table_at(t, i);
		struct partctl_fsinfo fi;

		if (pp->extended || partctl_fs_probe(d, pp->start, pp->size, &fi, NULL) < 0)
			continue;
		if ((!type || !strcmp(fi.type, type)) && (label ? !strcmp(fi.label, label) : !strcasecmp(fi.uuid, uuid))) {
			*part = pp->n;
			*off = pp->start;
			*size = pp->size;
			break;
		}
	}
	ip_disk_free(d);
	partctl_table_free(t);
	return r;
}

int bs_find_store(const char *disk, unsigned *part, uint64_t *off, uint64_t *size, ip_error *e)
{
	return find_fs(disk, "ext4", BS_STORE_LABEL, NULL, part, off, size, e);
}

static int mount_part(const char *disk, unsigned n, unsigned flags, const char *dir, struct ip_mount *m,
		      ip_error *e)
{
	struct partctl_fsinfo fi;
	uint64_t off, size;
	int r;

	r = probe_part(disk, n, &off, &size, &fi, e);
	if (r < 0)
		return r;
	if (!*fi.type)
		return ip_fail(e, -ENOENT, "partition %u of %s holds no filesystem to mount", n, disk);
	return ip_mount_part(disk, n, off, size, fi.type, flags, dir, m, e);
}

static void path_join(char *out, size_t n, const char *a, const char *b)
{
	snprintf(out, n, "%s/%s", a, b);
}

static json_object *result_new(const char *step)
{
	json_object *o = json_object_new_object();

	if (o)
		json_object_object_add(o, "step", json_object_new_string(step));
	return o;
}

/* ---- prepare ---------------------------------------------------------- */

int bs_step_make_storage(const struct bs_params *p, bs_result *res, ip_error *e)
{
	struct partctl_storage_result sr = { 0 };
	int r;

	*res = result_new("make-storage");
	if (p->store_dir) {
		json_object_object_add(*res, "store_dir", json_object_new_string(p->store_dir));
		return 0;
	}
	/* partctl finishes an interrupted shrink or move first, reuses the
	 * partition an earlier (cut) run made, and checks every step before
	 * its first write */
	r = partctl_make_storage(p->disk, p->store_size, BS_STORE_LABEL, NULL, &sr, e);
	if (r < 0)
		return r;
	json_object_object_add(*res, "partition", json_object_new_int((int)sr.partition));
	json_object_object_add(*res, "start", ip_json_u64(sr.start));
	json_object_object_add(*res, "size", ip_json_u64(sr.size));
	json_object_object_add(*res, "existing", json_object_new_boolean(sr.existing));
	json_object_object_add(*res, "resumed", json_object_new_boolean(sr.resumed));
	json_object_object_add(*res, "steps", json_object_new_int((int)sr.done));
	if (*sr.journal)
		json_object_object_add(*res, "journal", json_object_new_string(sr.journal));
	return 0;
}

int bs_store_open(const struct bs_params *p, struct bs_store *s, ip_error *e)
{
	char dir[4096];
	uint64_t off, size;
	int r;

	memset(s, 0, sizeof(*s));
	if (p->store_dir) {
		snprintf(s->root, sizeof(s->root), "%s", p->store_dir);
		return ip_mkdir_p(s->root, 0700, e);
	}
	r = bs_find_store(p->disk, &s->part, &off, &size, e);
	if (r < 0)
		return r;
	if (!s->part)
		return ip_fail(e, -ENOENT, "%s has no storage partition (label %s): run the prepare phase again",
			       p->disk, BS_STORE_LABEL);
	path_join(dir, sizeof(dir), p->work_dir, "store");
	r = ip_mount_part(p->disk, s->part, off, size, "ext4", 0, dir, &s->m, e);
	if (r < 0)
		return r;
	path_join(s->root, sizeof(s->root), dir, "inplace");
	r = ip_mkdir_p(s->root, 0700, e);
	if (r < 0)
		ip_umount(&s->m, NULL);
	return r;
}

int bs_store_close(struct bs_store *s, ip_error *e)
{
	return ip_umount(&s->m, e);
}

/* read/write fallback where copy_file_range cannot cross filesystems:
 * at most 1 MiB; -1 with errno, or the bytes copied. */
static ssize_t copy_chunk(int in, int out, off_t left)
{
	static __thread char buf[1 << 20];
	ssize_t n;

	do
		n = read(in, buf, left < (off_t)sizeof(buf) ? (size_t)left : sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n < 0 ? -1 : (errno = EIO, -1);
	return ip_write_all(out, buf, (size_t)n) < 0 ? -1 : n;
}

/* Copy src to dst through dst.part: fsync, then common's durable rename. */
static int copy_durable(const char *src, const char *dst, ip_error *e)
{
	_cleanup_close_ int in = -1, out = -1;
	char tmp[4200];
	struct stat sb;
	int r = 0;

	r = ip_open_input(src, &in, e);
	if (r < 0)
		return r;
	if (fstat(in, &sb) < 0)
		return ip_fail(e, -errno, "cannot read %s: %s", src, strerror(errno));
	/* one fixed temporary name, not ip_outfile's per-process one: a copy
	 * cut by a kill is overwritten by the next, never left to fill the store */
	snprintf(tmp, sizeof(tmp), "%s.part", dst);
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		return ip_fail(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
	for (off_t left = sb.st_size; left > 0;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);

		if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS))
			n = copy_chunk(in, out, left);
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			unlink(tmp);
			return ip_fail(e, r, "cannot copy %s into the store: %s", src,
				       r == -ENOSPC ? "no space left: give the store more room (store_size)" : strerror(-r));
		}
		left -= n;
	}
	if (fsync(out) < 0) {
		r = -errno;
		unlink(tmp);
		return ip_fail(e, r, "cannot write %s: %s", dst, strerror(-r));
	}
	return ip_rename_durable(tmp, dst, e);
}

static void image_paths(const struct bs_store *s, char *img, char *sig, size_t n)
{
	snprintf(img, n, "%s/image/os.img", s->root);
	snprintf(sig, n, "%s/image/os.img.minisig", s->root);
}

int bs_step_stage_image(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char dir[4200], img[4200], sig[4200], src_sig[4200], key[4200];
	int r;

	*res = result_new("stage-image");
	snprintf(dir, sizeof(dir), "%s/image", s->root);
	r = ip_mkdir_p(dir, 0700, e);
	if (r < 0)
		return r;
	image_paths(s, img, sig, sizeof(img));
	snprintf(key, sizeof(key), "%s/image/key.pub", s->root);
	if (imager_is_url(p->image)) {
		struct imager_fetch_opts fo = { .mirrors = p->mirrors, .ca_file = p->ca_cert,
						.want_sig = p->pubkey != NULL };

		/* only bytes that match their frame hash are kept */
		r = imager_fetch(p->image, &fo, img, e);
	} else {
		r = copy_durable(p->image, img, e);
		if (r == 0 && p->pubkey) {
			snprintf(src_sig, sizeof(src_sig), "%s.minisig", p->image);
			r = copy_durable(src_sig, sig, e);
		}
	}
	/* the key too: the old root that holds it is overwritten by deploy */
	if (r == 0 && p->pubkey)
		r = copy_durable(p->pubkey, key, e);
	/* the signature of the copy, now: a bad copy stops the run before the
	 * profiles are saved.  Every frame's hash is checked by deploy itself
	 * before it writes a byte (imager_deploy), so not twice here. */
	if (r == 0 && p->pubkey)
		r = imager_verify_sig(img, sig, key, e);
	if (r < 0)
		return r;
	json_object_object_add(*res, "image", json_object_new_string(img));
	json_object_object_add(*res, "signed", json_object_new_boolean(p->pubkey != NULL));
	return 0;
}

/* End a step that ran on a mounted root: unmount (its error counts only
 * when the step went well), keep the migrate result r produced. */
static int umount_with(struct ip_mount *m, int r, json_object *out, json_object *res, ip_error *e)
{
	int r2 = ip_umount(m, r < 0 ? NULL : e);

	if (r == 0 && out)
		json_object_object_add(res, "profile", out);
	else
		json_object_put(out);
	return r < 0 ? r : r2;
}

static void profile_dir(const struct bs_store *s, char *out, size_t n)
{
	snprintf(out, n, "%s/profile", s->root);
}

/* ---- homes on their own partition ------------------------------------ */

/* A mount point whose homes can stay where they are: /home, /var/home or
 * one home in them (what migrate_save_keeping accepts). */
static bool home_mount(const char *mnt)
{
	const char *rest = !strncmp(mnt, "/home/", 6) ? mnt + 6 : !strncmp(mnt, "/var/home/", 10) ? mnt + 10 : NULL;

	if (!strcmp(mnt, "/home") || !strcmp(mnt, "/var/home"))
		return true;
	return rest && *rest && !strchr(rest, '/') && strcmp(rest, ".") && strcmp(rest, "..");
}

/* The filesystem an fstab source names, as a partition of disk. */
static int fstab_source(const char *disk, const char *spec, unsigned *part, uint64_t *off, uint64_t *size,
			ip_error *e)
{
	*part = 0;
	if (!strncmp(spec, "UUID=", 5))
		return find_fs(disk, NULL, NULL, spec + 5, part, off, size, e);
	if (!strncmp(spec, "/dev/disk/by-uuid/", 18))
		return find_fs(disk, NULL, NULL, spec + 18, part, off, size, e);
	if (!strncmp(spec, "LABEL=", 6))
		return find_fs(disk, NULL, spec + 6, NULL, part, off, size, e);
	if (!strncmp(spec, "/dev/disk/by-label/", 19))
		return find_fs(disk, NULL, spec + 19, NULL, part, off, size, e);
	return 0;   /* a device name or PARTUUID: not resolvable off the running system */
}

/* The homes of the old root that live on another partition of the disk:
 * [{dir, uuid, type, options}] from its fstab, each mount resolved to a
 * partition of the disk and probed (the uuid is the filesystem's own). */
static int kept_from_fstab(const struct bs_params *p, const char *root, json_object **out, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	char path[4200], *line, *save = NULL;
	json_object *arr = json_object_new_array();
	size_t len = 0;
	int r;

	*out = arr;
	path_join(path, sizeof(path), root, "etc/fstab");
	r = ip_read_file(path, 1 << 20, &text, &len, NULL);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return ip_fail(e, r, "cannot read the old system's /etc/fstab: %s", strerror(-r));
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char spec[512], mnt[512], type[64], opts[512] = "defaults";
		struct partctl_fsinfo fi;
		uint64_t off, size;
		unsigned part;
		json_object *o;

		if (sscanf(line, "%511s %511s %63s %511s", spec, mnt, type, opts) < 3 || spec[0] == '#' ||
		    !home_mount(mnt))
			continue;
		r = fstab_source(p->disk, spec, &part, &off, &size, e);
		if (r < 0)
			return r;
		if (!part || part == p->sys_part)
			continue;
		r = probe_part(p->disk, part, &off, &size, &fi, e);
		if (r < 0)
			return r;
		o = json_object_new_object();
		json_object_object_add(o, "dir", json_object_new_string(mnt));
		json_object_object_add(o, "uuid", json_object_new_string(fi.uuid));
		json_object_object_add(o, "type", json_object_new_string(*fi.type ? fi.type : type));
		json_object_object_add(o, "options", json_object_new_string(opts));
		json_object_object_add(o, "partition", json_object_new_int((int)part));
		json_object_array_add(arr, o);
	}
	return 0;
}

static void kept_path(const struct bs_store *s, char *out, size_t n)
{
	snprintf(out, n, "%s/kept.json", s->root);
}

/* What save recorded of the kept homes ([] when there are none). */
static int kept_load(const struct bs_store *s, json_object **out, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	char path[4200];
	size_t len = 0;
	int r;

	kept_path(s, path, sizeof(path));
	r = ip_read_file(path, 1 << 20, &text, &len, NULL);
	if (r == -ENOENT) {
		*out = json_object_new_array();
		return 0;
	}
	if (r < 0)
		return ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
	*out = json_tokener_parse(text);
	if (!json_object_is_type(*out, json_type_array)) {
		json_object_put(*out);
		*out = NULL;
		return ip_fail(e, -EINVAL, "%s is damaged: run the save step again", path);
	}
	return 0;
}

static const char *kstr(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : "";
}

int bs_step_save(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char store[4200], root[4200], complete[4300], kpath[4200];
	struct ip_mount m;
	json_object *out = NULL, *kept = NULL;
	_cleanup_free_ struct migrate_kept *mk = NULL;
	size_t nk;
	int r;

	*res = result_new("save");
	profile_dir(s, store, sizeof(store));
	snprintf(complete, sizeof(complete), "%s/COMPLETE", store);
	if (access(complete, F_OK) == 0 && migrate_verify(store, &out, NULL) == 0) {
		/* saved before a cut: the old root may since have changed (it has
		 * not: nothing runs on it), the store is what we keep */
		json_object_object_add(*res, "kept", json_object_new_boolean(1));
		json_object_put(out);
		return 0;
	}
	path_join(root, sizeof(root), p->work_dir, "oldroot");
	/* the system filesystem read-only: nothing of the old system changes
	 * before its users are safe */
	r = mount_part(p->disk, p->sys_part, IP_MOUNT_RDONLY, root, &m, e);
	if (r < 0)
		return r;
	/* homes on another partition of the disk stay there: recorded (the
	 * configure and restore steps read it back), never copied */
	r = kept_from_fstab(p, root, &kept, e);
	if (r == 0) {
		const char *t = json_object_to_json_string_ext(kept, JSON_C_TO_STRING_PLAIN);

		kept_path(s, kpath, sizeof(kpath));
		r = ip_write_file_atomic(kpath, t, strlen(t), 0600, e);
	}
	nk = kept ? json_object_array_length(kept) : 0;
	if (r == 0 && !(mk = calloc(nk + 1, sizeof(*mk))))
		r = ip_fail(e, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < nk; i++) {
		mk[i].dir = kstr(json_object_array_get_idx(kept, i), "dir");
		mk[i].uuid = kstr(json_object_array_get_idx(kept, i), "uuid");
	}
	if (r == 0)
		r = migrate_save_keeping(root, store, p->spec, mk, nk, &out, e);
	if (r == 0)
		json_object_object_add(*res, "kept_homes", json_object_get(kept));
	json_object_put(kept);
	return umount_with(&m, r, out, *res, e);
}

int bs_step_verify(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char store[4200];
	json_object *out = NULL;
	int r;

	(void)p;
	*res = result_new("verify");
	profile_dir(s, store, sizeof(store));
	r = migrate_verify(store, &out, e);
	if (r == 0 && out)
		json_object_object_add(*res, "profile", out);
	else
		json_object_put(out);
	return r;
}

/* ---- rollback --------------------------------------------------------- */

static void rollback_path(const struct bs_store *s, char *out, size_t n)
{
	snprintf(out, n, "%s/image/rollback.img", s->root);
}

int bs_step_rollback_image(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	struct imager_capture_opts co = { .name = "inplace rollback of the old system" };
	struct imager_capture_result cr = { 0 };
	char path[4200], dir[4200];
	bool warn = false;
	int r;

	*res = result_new("rollback-image");
	snprintf(dir, sizeof(dir), "%s/image", s->root);
	rollback_path(s, path, sizeof(path));
	r = ip_mkdir_p(dir, 0700, e);
	/* capture writes through a temporary file renamed when complete: a
	 * file under the final name is whole */
	if (r == 0 && access(path, F_OK) < 0)
		r = imager_capture_part(p->disk, p->sys_part, path, &co, &cr, &warn, e);
	if (r < 0)
		return r;
	json_object_object_add(*res, "image", json_object_new_string(path));
	json_object_object_add(*res, "bytes", ip_json_u64(cr.out_size));
	return 0;
}

int bs_rollback(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char path[4200], state[4200];
	struct imager_deploy_opts o = { .state_dir = state };
	struct imager_deploy_result dr = { 0 };
	int r;

	*res = result_new("rollback");
	rollback_path(s, path, sizeof(path));
	if (access(path, F_OK) < 0)
		return ip_fail(e, -ENOENT, "no rollback image in the store (%s): the old system cannot be written back",
			       path);
	snprintf(state, sizeof(state), "%s/rollback-state", s->root);
	r = ip_mkdir_p(state, 0700, e);
	if (r == 0)
		r = imager_deploy(path, p->disk, p->sys_part, &o, &dr, e);
	if (r == 0)
		json_object_object_add(*res, "written", ip_json_u64(dr.written));
	return r;
}

/* ---- deploy ----------------------------------------------------------- */

/* Where configure records which image the system partition was written
 * from: inside the deployed filesystem, so the record goes wherever the
 * filesystem goes and dies with it. */
#define DEPLOYED_RECORD "var/lib/inplace/image.json"

/* The image's content hash (hex), from its metadata. */
static int image_content_hash(const char *image, char *hex, size_t n, ip_error *e)
{
	imager_image *img = NULL;
	json_object *info, *v;
	int r;

	r = imager_open(image, &img, e);
	if (r < 0)
		return r;
	info = imager_info_json(img);
	if (info && json_object_object_get_ex(info, "content_hash", &v) && json_object_is_type(v, json_type_string))
		snprintf(hex, n, "%s", json_object_get_string(v));
	else
		r = ip_fail(e, -EINVAL, "%s records no content hash: it cannot be matched to a deployed system", image);
	json_object_put(info);
	imager_free(img);
	return r;
}

/* Is partition n of disk (a block device) the running system's root? */
static bool running_root(const char *disk, unsigned n)
{
	struct stat d, p, r;
	char node[64];

	return stat(disk, &d) == 0 && S_ISBLK(d.st_mode) && ip_partition_node(disk, n, node, sizeof(node)) == 0 &&
	       stat(node, &p) == 0 && stat("/", &r) == 0 && r.st_dev == p.st_rdev;
}

int bs_image_deployed(const char *disk, unsigned sys_part, const char *image, const char *work_dir, bool *same,
		      ip_error *e)
{
	char want[200] = "", root[4200], path[4300];
	_cleanup_free_ char *text = NULL;
	_cleanup_json_ json_object *rec = NULL;
	struct partctl_fsinfo fi;
	struct ip_mount m;
	uint64_t off, size;
	size_t len = 0;
	int r;

	*same = false;
	r = image_content_hash(image, want, sizeof(want), e);
	if (r == 0)
		r = probe_part(disk, sys_part, &off, &size, &fi, e);
	if (r < 0 || !*fi.type)
		return r;
	if (running_root(disk, sys_part)) {
		/* the old system runs from it: read where it is mounted (a
		 * second mount of a read-write filesystem is refused) */
		snprintf(path, sizeof(path), "/%s", DEPLOYED_RECORD);
		m.mounted = false;
	} else {
		path_join(root, sizeof(root), work_dir, "oldroot");
		if (ip_mount_part(disk, sys_part, off, size, fi.type, IP_MOUNT_RDONLY, root, &m, NULL) < 0)
			return 0;   /* not a filesystem we can read: not this image */
		path_join(path, sizeof(path), root, DEPLOYED_RECORD);
	}
	if (ip_read_file(path, 1 << 16, &text, &len, NULL) == 0 && (rec = json_tokener_parse(text)))
		/* the content, and the very filesystem configure recorded it in:
		 * a root captured from a deployed machine carries a stale record
		 * only until its UUID differs */
		*same = !strcmp(kstr(rec, "content_hash"), want) && !strcasecmp(kstr(rec, "fs_uuid"), fi.uuid);
	return m.mounted ? ip_umount(&m, e) : 0;
}

/* No directory, or nothing in it. */
static bool dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	bool empty = true;

	if (!d)
		return true;
	while (empty && (de = readdir(d)))
		empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
	closedir(d);
	return empty;
}

/* The record bs_image_deployed reads, written into the new root. */
static int record_image(const struct bs_store *s, const char *root, const char *uuid, ip_error *e)
{
	char img[4200], sig[4200], hex[200], dir[4300], path[4300];
	_cleanup_json_ json_object *o = json_object_new_object();
	const char *t;
	int r;

	image_paths(s, img, sig, sizeof(img));
	r = image_content_hash(img, hex, sizeof(hex), e);
	if (r < 0)
		return r;
	json_object_object_add(o, "content_hash", json_object_new_string(hex));
	json_object_object_add(o, "fs_uuid", json_object_new_string(uuid));
	json_object_object_add(o, "deployed", json_object_new_int64((int64_t)time(NULL)));
	t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	path_join(dir, sizeof(dir), root, "var/lib/inplace");
	path_join(path, sizeof(path), root, DEPLOYED_RECORD);
	r = ip_mkdir_p(dir, 0755, e);
	return r < 0 ? r : ip_write_file_atomic(path, t, strlen(t), 0644, e);
}

int bs_step_deploy(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char img[4200], sig[4200], state[4200], key[4200];
	struct imager_deploy_opts o = { .pubkey = p->pubkey ? key : NULL, .grow = true, .state_dir = state };
	struct imager_deploy_result dr = { 0 };
	int r;

	*res = result_new("deploy");
	image_paths(s, img, sig, sizeof(img));
	snprintf(key, sizeof(key), "%s/image/key.pub", s->root);
	snprintf(state, sizeof(state), "%s/deploy-state", s->root);
	if (dir_empty(state)) {
		bool same = false;

		/* the system partition holds this very image already (deployed
		 * and recorded by an earlier run): writing it again would only
		 * throw away what runs there.  Asked only before deploy began:
		 * a partition half written is deploy's to finish. */
		r = bs_image_deployed(p->disk, p->sys_part, img, p->work_dir, &same, e);
		if (r < 0)
			return r;
		if (same) {
			json_object_object_add(*res, "skipped",
					       json_object_new_string("the system partition already carries this image"));
			return 0;
		}
	}
	/* deploy's own journal goes into the store: the staging env keeps
	 * nothing across a power cut, and the target is being overwritten */
	snprintf(state, sizeof(state), "%s/deploy-state", s->root);
	r = ip_mkdir_p(state, 0700, e);
	if (r == 0)
		r = imager_deploy(img, p->disk, p->sys_part, &o, &dr, e);
	if (r < 0)
		return r;
	json_object_object_add(*res, "written", ip_json_u64(dr.written));
	json_object_object_add(*res, "frames", json_object_new_int((int)dr.frames));
	json_object_object_add(*res, "resumed_at", json_object_new_int((int)dr.resumed_at));
	json_object_object_add(*res, "grown", json_object_new_boolean(dr.grown));
	return 0;
}

/* The kept entry mounted at mnt, or NULL. */
static json_object *kept_at(json_object *kept, const char *mnt)
{
	for (size_t i = 0; kept && i < json_object_array_length(kept); i++)
		if (!strcmp(kstr(json_object_array_get_idx(kept, i), "dir"), mnt))
			return json_object_array_get_idx(kept, i);
	return NULL;
}

static void kept_line(FILE *f, json_object *k)
{
	fprintf(f, "UUID=%s %s %s %s 0 2\n", kstr(k, "uuid"), kstr(k, "dir"), kstr(k, "type"),
		*kstr(k, "options") ? kstr(k, "options") : "defaults");
}

/* fstab of the new root: "/" by UUID (grub-mkconfig and a chroot without
 * udev would name a device node that does not exist at boot), and every
 * kept home partition by UUID with the old system's options, in place of
 * whatever the image said for the same mount point. */
static int fix_fstab(const char *root, const char *uuid, const char *fstype, json_object *kept, ip_error *e)
{
	char path[4200];
	_cleanup_free_ char *old = NULL, *buf = NULL;
	_cleanup_free_ bool *have = calloc(json_object_array_length(kept) + 1, sizeof(bool));
	size_t len = 0, cap;
	FILE *f;
	bool have_root = false;
	char *line, *save = NULL;
	int r;

	snprintf(path, sizeof(path), "%s/etc/fstab", root);
	r = ip_read_file(path, 1 << 20, &old, &len, NULL);
	if (r < 0 && r != -ENOENT)
		return ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
	cap = len + 512 + 1024 * json_object_array_length(kept);
	if (!have || !(buf = malloc(cap)))
		return ip_fail(e, -ENOMEM, "out of memory");
	f = fmemopen(buf, cap, "w");
	if (!f)
		return ip_fail(e, -errno, "out of memory");
	for (line = old ? strtok_r(old, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		char spec[512], mnt[512];
		json_object *k;

		if (sscanf(line, "%511s %511s", spec, mnt) == 2 && spec[0] != '#' && !strcmp(mnt, "/")) {
			if (!have_root)
				fprintf(f, "UUID=%s / %s errors=remount-ro 0 1\n", uuid, fstype);
			have_root = true;
			continue;
		}
		if (sscanf(line, "%511s %511s", spec, mnt) == 2 && spec[0] != '#' && (k = kept_at(kept, mnt))) {
			for (size_t i = 0; i < json_object_array_length(kept); i++)
				if (json_object_array_get_idx(kept, i) == k && !have[i]) {
					kept_line(f, k);
					have[i] = true;
				}
			continue;
		}
		fprintf(f, "%s\n", line);
	}
	if (!have_root)
		fprintf(f, "UUID=%s / %s errors=remount-ro 0 1\n", uuid, fstype);
	for (size_t i = 0; i < json_object_array_length(kept); i++)
		if (!have[i])
			kept_line(f, json_object_array_get_idx(kept, i));
	fclose(f);
	return ip_write_file_atomic(path, buf, strlen(buf), 0644, e);
}

/* The bundle runs from a copy in a tmpfs of its own (Debian mounts /run
 * noexec), the store unmounted: reclaim zeroes the store's blocks and
 * deletes its partition, and a bundle run from there faulted its
 * libraries' pages in from zeros (SIGSEGV in the VM chain), its tools too.
 * The copy comes from FIRSTBOOT_BUNDLE in the new root, itself copied
 * whole from the store (a temporary name, then renamed) while the store is
 * there: a first boot cut after reclaim wiped the store runs it again from
 * there.  Reclaim removes both, the unit last of all.  ($$ is systemd's
 * escape for the shell's $.) */
#define FIRSTBOOT_BUNDLE "/var/lib/inplace/bundle"
static const char unit_fmt[] =
	"# Written by inplace: restores users and machine identity on the first\n"
	"# boot after reimaging, then gives the storage space back.  Removed by\n"
	"# the finish phase.\n"
	"[Unit]\n"
	"Description=inplace: restore users after reimaging\n"
	"DefaultDependencies=no\n"
	"After=local-fs.target\n"
	"Before=systemd-user-sessions.service display-manager.service getty.target\n"
	"ConditionPathExists=!/var/lib/inplace/done\n"
	"\n"
	"[Service]\n"
	"Type=oneshot\n"
	"RemainAfterExit=yes\n"
	"ExecStartPre=-/bin/umount -l /run/inplace/bundle\n"
	"ExecStartPre=/bin/mount --mkdir -t tmpfs -o mode=0700 inplace-bundle /run/inplace/bundle\n"
	"ExecStartPre=/bin/sh -ec 'k=" FIRSTBOOT_BUNDLE "; s=/run/inplace/store; "
	"if [ ! -x $$k/inplace ] && mount --mkdir -o ro LABEL=" BS_STORE_LABEL " $$s; then "
	"rm -rf $$k.new; mkdir -p $$k.new; cp -a $$s/inplace/bundle/. $$k.new/; umount $$s; sync; "
	"mv -T $$k.new $$k; sync; fi; cp -a $$k/. /run/inplace/bundle/'\n"
	"ExecStart=/run/inplace/bundle/inplace resume --disk %s\n"
	"ExecStartPost=-/bin/umount -l /run/inplace/bundle\n"
	"ExecStopPost=-/bin/umount -l /run/inplace/bundle\n"
	"\n"
	"[Install]\n"
	"WantedBy=multi-user.target\n";

static int hook_paths(const char *root, char *unit, char *link, size_t n)
{
	snprintf(unit, n, "%s/etc/systemd/system/" FIRSTBOOT_UNIT, root);
	snprintf(link, n, "%s/etc/systemd/system/multi-user.target.wants/" FIRSTBOOT_UNIT, root);
	return 0;
}

static int install_hook(const char *root, const char *disk, ip_error *e)
{
	char unit[4200], link[4200], dir[4200], text[2048];
	int r;

	hook_paths(root, unit, link, sizeof(unit));
	snprintf(text, sizeof(text), unit_fmt, disk);
	snprintf(dir, sizeof(dir), "%s/etc/systemd/system/multi-user.target.wants", root);
	r = ip_mkdir_p(dir, 0755, e);
	if (r == 0)
		r = ip_write_file_atomic(unit, text, strlen(text), 0644, e);
	if (r < 0)
		return r;
	if (symlink("../" FIRSTBOOT_UNIT, link) < 0 && errno != EEXIST)
		return ip_fail(e, -errno, "cannot enable %s: %s", FIRSTBOOT_UNIT, strerror(errno));
	return ip_fsync_dir(dir, e);
}

/* The unit and the new root's copy of the bundle, once nothing is left
 * for a first boot to do (the unit last: a cut before it runs it again). */
static int remove_hook(const char *root, ip_error *e)
{
	char unit[4200], link[4200], bundle[4300];
	const char *const rm[] = { "rm", "-rf", "--one-file-system", bundle, NULL };
	int r;

	hook_paths(root, unit, link, sizeof(unit));
	snprintf(bundle, sizeof(bundle), "%s" FIRSTBOOT_BUNDLE, root);
	r = ip_spawn(rm, NULL, e);
	if (r == 0) {
		/* a half copy an earlier cut left behind */
		snprintf(bundle, sizeof(bundle), "%s" FIRSTBOOT_BUNDLE ".new", root);
		r = ip_spawn(rm, NULL, e);
	}
	if (r < 0)
		return r;
	if ((unlink(link) < 0 && errno != ENOENT) || (unlink(unit) < 0 && errno != ENOENT))
		return ip_fail(e, -errno, "cannot remove the first-boot unit from %s: %s", root, strerror(errno));
	return ip_fsync_parent(unit, e);
}

static void newroot_dir(const struct bs_params *p, char *out, size_t n)
{
	path_join(out, n, p->work_dir, "newroot");
}

int bs_step_configure(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char root[4200];
	struct partctl_fsinfo fi;
	struct ip_mount m;
	uint64_t off, size;
	_cleanup_json_ json_object *kept = NULL;
	int r, r2;

	*res = result_new("configure");
	r = kept_load(s, &kept, e);
	if (r == 0)
		r = probe_part(p->disk, p->sys_part, &off, &size, &fi, e);
	if (r < 0)
		return r;
	newroot_dir(p, root, sizeof(root));
	r = ip_mount_part(p->disk, p->sys_part, off, size, fi.type, 0, root, &m, e);
	if (r < 0)
		return r;
	r = fix_fstab(root, fi.uuid, fi.type, kept, e);
	if (r == 0)
		r = record_image(s, root, fi.uuid, e);
	if (r == 0)
		r = install_hook(root, p->disk, e);
	r2 = ip_umount(&m, r < 0 ? NULL : e);
	if (r == 0) {
		json_object_object_add(*res, "root_uuid", json_object_new_string(fi.uuid));
		json_object_object_add(*res, "kept_homes", json_object_new_int((int)json_object_array_length(kept)));
		json_object_object_add(*res, "hook", json_object_new_string(FIRSTBOOT_UNIT));
	}
	if (r == 0 && r2 == 0)
		r2 = bs_step_bootfix(p, root, fi.type, fi.uuid, *res, e);
	return r < 0 ? r : r2;
}

/* ---- restore and finish ----------------------------------------------- */

/* Mount the kept home partitions (found by uuid) where the new root
 * mounts them: restore re-owns their files there.  m[0..n) mounted. */
static int mount_kept(const struct bs_params *p, json_object *kept, const char *root, struct ip_mount *m,
		      size_t *n, ip_error *e)
{
	*n = 0;
	for (size_t i = 0; i < json_object_array_length(kept); i++) {
		json_object *k = json_object_array_get_idx(kept, i);
		char dir[4200];
		uint64_t off, size;
		unsigned part;
		int r;

		r = find_fs(p->disk, NULL, NULL, kstr(k, "uuid"), &part, &off, &size, e);
		if (r < 0)
			return r;
		if (!part)
			return ip_fail(e, -ENOENT, "the home partition %s (UUID %s) is no longer on %s: its users cannot be re-owned",
				       kstr(k, "dir"), kstr(k, "uuid"), p->disk);
		snprintf(dir, sizeof(dir), "%s%s", root, kstr(k, "dir"));
		r = ip_mount_part(p->disk, part, off, size, kstr(k, "type"), 0, dir, &m[*n], e);
		if (r < 0)
			return r;
		(*n)++;
	}
	return 0;
}

int bs_step_restore(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char store[4200], root[4200];
	/* the store is the one this job wrote from the old system's root */
	struct migrate_restore_opts o = { .trusted = true, .machine_skip = p->machine_skip };
	struct ip_mount m, *km = NULL;
	_cleanup_json_ json_object *kept = NULL;
	json_object *out = NULL;
	size_t nk = 0;
	int r;

	*res = result_new("restore");
	profile_dir(s, store, sizeof(store));
	newroot_dir(p, root, sizeof(root));
	r = kept_load(s, &kept, e);
	if (r < 0)
		return r;
	if (!(km = calloc(json_object_array_length(kept) + 1, sizeof(*km))))
		return ip_fail(e, -ENOMEM, "out of memory");
	r = mount_part(p->disk, p->sys_part, 0, root, &m, e);
	if (r < 0) {
		free(km);
		return r;
	}
	r = mount_kept(p, kept, root, km, &nk, e);
	if (r == 0)
		r = migrate_restore(store, root, &o, &out, e);
	/* the kept homes first: they are mounted inside the new root */
	while (nk--) {
		int r2 = ip_umount(&km[nk], r < 0 ? NULL : e);

		if (r == 0)
			r = r2;
	}
	free(km);
	if (r < 0) {
		json_object_put(out);
		out = NULL;
	}
	return umount_with(&m, r, out, *res, e);
}

/* The store holds password hashes and host keys: its blocks go before
 * its table entry does.  Zeroed (BLKZEROOUT) on a block device; holes
 * punched in an image file, which read back as zeros. */
static int wipe_range(const char *disk, uint64_t off, uint64_t size, ip_error *e)
{
	_cleanup_close_ int fd = open(disk, O_RDWR | O_CLOEXEC);
	struct stat sb;

	if (fd < 0 || fstat(fd, &sb) < 0)
		return ip_fail(e, -errno, "cannot open %s to wipe the store: %s", disk, strerror(errno));
	if (S_ISBLK(sb.st_mode)) {
		uint64_t range[2] = { off, size };

		if (ioctl(fd, BLKZEROOUT, range) < 0)
			return ip_fail(e, -errno, "cannot wipe the store on %s: %s", disk, strerror(errno));
	} else if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)size) < 0) {
		return ip_fail(e, -errno, "cannot wipe the store in %s: %s", disk, strerror(errno));
	}
	if (fsync(fd) < 0)
		return ip_fail(e, -errno, "cannot sync %s: %s", disk, strerror(errno));
	return 0;
}

/* The store given back after it was kept (keep_storage = yes, then
 * `inplace reclaim`): the new root's fstab must not mount it any more. */
static int drop_store_fstab(const char *root, ip_error *e)
{
	char fstab[4300];
	_cleanup_free_ char *old = NULL, *nw = NULL;
	size_t len = 0, k = 0;
	char *line, *save = NULL;
	int r;

	snprintf(fstab, sizeof(fstab), "%s/etc/fstab", root);
	r = ip_read_file(fstab, 1 << 20, &old, &len, e);
	if (r < 0 || !strstr(old, "LABEL=" BS_STORE_LABEL))
		return r == -ENOENT ? 0 : r;
	nw = malloc(len + 1);
	if (!nw)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (line = strtok_r(old, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (strncmp(line, "LABEL=" BS_STORE_LABEL " ", strlen("LABEL=" BS_STORE_LABEL " ")))
			k += (size_t)sprintf(nw + k, "%s\n", line);
	return ip_write_file_atomic(fstab, nw, k, 0644, e);
}

/* Everything reclaim does but removing the first-boot hook. */
static int reclaim_space(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char root[4200], node[4300];
	struct ip_mount m;
	uint64_t off = 0, size = 0;
	unsigned part = 0;
	int r;

	newroot_dir(p, root, sizeof(root));
	r = mount_part(p->disk, p->sys_part, 0, root, &m, e);
	if (r < 0)
		return r;
	if (p->keep == BS_KEEP_NO && !p->store_dir)
		r = drop_store_fstab(root, e);
	if (r == 0 && p->keep == BS_KEEP_IMAGE && !p->store_dir) {
		struct imager_capture_opts co = { .name = "inplace storage" };
		struct imager_capture_result cr = { 0 };
		bool warn = false;

		r = bs_find_store(p->disk, &part, &off, &size, e);
		snprintf(node, sizeof(node), "%s/var/lib/inplace", root);
		if (r == 0 && part)
			r = ip_mkdir_p(node, 0700, e);
		snprintf(node, sizeof(node), "%s/var/lib/inplace/storage.img", root);
		if (r == 0 && part && access(node, F_OK) < 0) {
			bs_store_close(s, NULL);
			r = imager_capture_part(p->disk, part, node, &co, &cr, &warn, e);
		}
	}
	if (r == 0 && p->keep == BS_KEEP_YES && !p->store_dir) {
		/* kept as a data partition: the profile (hashes, keys) goes, the
		 * space stays, mounted by label */
		static const char line[] = "LABEL=" BS_STORE_LABEL " /var/lib/inplace/storage ext4 defaults,nofail 0 2\n";
		char fstab[4300];
		_cleanup_free_ char *old = NULL;
		size_t len = 0;

		snprintf(fstab, sizeof(fstab), "%s/etc/fstab", root);
		r = ip_read_file(fstab, 1 << 20, &old, &len, e);
		if (r == 0 && !strstr(old, "LABEL=" BS_STORE_LABEL)) {
			_cleanup_free_ char *nw = NULL;

			if (asprintf(&nw, "%s%s%s", old, len && old[len - 1] != '\n' ? "\n" : "", line) < 0)
				r = ip_fail(e, -ENOMEM, "out of memory");
			else
				r = ip_write_file_atomic(fstab, nw, strlen(nw), 0644, e);
		}
		snprintf(node, sizeof(node), "%s/var/lib/inplace/storage", root);
		if (r == 0)
			r = ip_mkdir_p(node, 0755, e);
	}
	{
		int r2 = ip_umount(&m, r < 0 ? NULL : e);

		if (r == 0)
			r = r2;
	}
	if (r < 0 || p->store_dir || p->keep == BS_KEEP_YES) {
		/* what stays (a kept partition, the job's directory) loses
		 * everything inplace put in it: the profile holds password hashes
		 * and host keys, and a state left there would be found before the
		 * new system's own by status and reclaim (the bundle last: the rm
		 * spawned for each is the bundle's own) */
		static const char *const ours[] = { "profile", "image", "deploy-state", "state", "kept.json", "bundle", NULL };

		for (size_t i = 0; r == 0 && ours[i]; i++) {
			char path[4200];
			const char *const rm[] = { "rm", "-rf", "--one-file-system", path, NULL };

			snprintf(path, sizeof(path), "%s/%s", s->root, ours[i]);
			r = ip_spawn(rm, NULL, e);
		}
		if (r == 0)
			r = ip_fsync_dir(s->root, e);
		json_object_object_add(*res, "kept", json_object_new_boolean(p->keep == BS_KEEP_YES));
		return r;
	}
	r = bs_store_close(s, e);
	if (r == 0)
		r = bs_find_store(p->disk, &part, &off, &size, e);
	if (r == 0 && !part && p->store_part) {
		/* wiped by a run that was cut before it deleted the entry: the
		 * partition make-storage recorded, if it is still exactly there */
		uint64_t o2, z2;

		if (partctl_part_range(p->disk, p->store_part, &o2, &z2, NULL) == 0 && o2 == p->store_off &&
		    z2 == p->store_size_made) {
			part = p->store_part;
			off = o2;
			size = z2;
		}
	}
	if (r == 0 && part) {
		uint64_t so = 0, ss = 0;

		r = wipe_range(p->disk, off, size, e);
		/* in the new system its root is mounted from this disk: the
		 * store's entry goes and the root's end grows over its space in
		 * one table write, the kernel told through BLKPG, the root
		 * grown online (partctl_part_grow_over) */
		if (r == 0)
			r = partctl_part_range(p->disk, p->sys_part, &so, &ss, e);
		if (r == 0 && off > so)
			r = partctl_part_grow_over(p->disk, p->sys_part, part, NULL, NULL, e);
		else if (r == 0)
			r = partctl_delete(p->disk, part, NULL, NULL, e);
		if (r == 0)
			json_object_object_add(*res, "deleted", json_object_new_int((int)part));
		if (r < 0 || off > so)
			return r;
	}
	if (r == 0)
		r = partctl_grow(p->disk, p->sys_part, 0, e);
	return r;
}

/* The hook goes last: a first boot cut anywhere in reclaim (the store
 * wiped, its entry deleted, the root half grown) runs again, from the new
 * root's copy of the bundle. */
int bs_step_reclaim(const struct bs_params *p, struct bs_store *s, bs_result *res, ip_error *e)
{
	char root[4200];
	struct ip_mount m;
	int r;

	*res = result_new("reclaim");
	r = reclaim_space(p, s, res, e);
	if (r < 0)
		return r;
	newroot_dir(p, root, sizeof(root));
	r = mount_part(p->disk, p->sys_part, 0, root, &m, e);
	if (r < 0)
		return r;
	r = remove_hook(root, e);
	return umount_with(&m, r, NULL, *res, e);
}
