/* stage_init.c — what the bundled inplace does as /init (PID 1) of the
 * staging initramfs: the kernel's file systems, the recorded modules in
 * their order, the disk found by the id recorded at build time (no udev
 * here), the records area mounted as the state directory, then one
 * resume.  The caller reboots whatever happens, so that a staging boot
 * never stays up: after a failure the machine falls back to whatever
 * still boots, with the failure recorded where the state is. */
#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libkmod.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bootstage/bootstage.h"
#include "bootstage/media.h"
#include "bootstage/stage.h"
#include "bootstage/steps.h"

#define RECORDS_MNT "/run/inplace-records"

struct init {
	const char *root;
	bs_say_fn say;
	void *arg;
	json_object *doc;        /* /stage.json */
	char disk[64];
	char rec_dev[64];
	bool rec_mounted;
};

static void say(struct init *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct init *in, const char *fmt, ...)
{
	char line[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (in->say)
		in->say(line, in->arg);
}

static void path_in(const struct init *in, char *buf, size_t n, const char *p)
{
	snprintf(buf, n, "%s%s", strcmp(in->root, "/") ? in->root : "", p);
}

static int mount_basics(struct init *in, ip_error *e)
{
	static const struct { const char *src, *dir, *type; unsigned long flags; } fs[] = {
		{ "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC },
		{ "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC },
		{ "devtmpfs", "/dev", "devtmpfs", MS_NOSUID },
		{ "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV },
	};
	int fd;

	for (size_t i = 0; i < IP_ARRAY_SIZE(fs); i++) {
		mkdir(fs[i].dir, 0755);
		if (mount(fs[i].src, fs[i].dir, fs[i].type, fs[i].flags, NULL) < 0 && errno != EBUSY)
			return ip_fail(e, -errno, "cannot mount %s on %s: %s", fs[i].type, fs[i].dir, strerror(errno));
	}
	/* stdio on the console, also when the kernel found no /dev/console */
	fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0) {
		for (int i = 0; i < 3; i++)
			dup2(fd, i);
		if (fd > 2)
			close(fd);
	}
	(void)in;
	return 0;
}

static const char *str_at(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && v ? json_object_get_string(v) : NULL;
}

static uint64_t u64_at(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && v ? (uint64_t)json_object_get_int64(v) : 0;
}

static int load_doc(struct init *in, ip_error *e)
{
	_cleanup_free_ char *text = NULL;
	char path[4200];
	size_t len;
	int r;

	path_in(in, path, sizeof(path), "/stage.json");
	if ((r = ip_read_file(path, 1 << 20, &text, &len, e)) < 0)
		return r;
	in->doc = json_tokener_parse(text);
	if (!in->doc || u64_at(in->doc, "version") != 1)
		return ip_fail(e, -EINVAL, "%s is not a staging description this inplace reads", path);
	return 0;
}

/* Every module in the recorded order; one that fails to load is said and
 * passed over (an alternative, like crc32c_intel on a CPU without SSE4.2):
 * whether the disk appears is what decides. */
static void load_modules(struct init *in)
{
	const char *ver = str_at(in->doc, "kernel_version");
	json_object *mods;
	struct kmod_ctx *ctx;
	char dir[4200], path[8400];
	unsigned loaded = 0;

	path_in(in, dir, sizeof(dir), "/lib/modules/");
	strncat(dir, ver ? ver : "", sizeof(dir) - strlen(dir) - 1);
	if (!json_object_object_get_ex(in->doc, "modules", &mods) || !(ctx = kmod_new(dir, NULL)))
		return;
	for (size_t i = 0; i < json_object_array_length(mods); i++) {
		json_object *m = json_object_array_get_idx(mods, i);
		struct kmod_module *km = NULL;
		int r;

		snprintf(path, sizeof(path), "%s/%s", dir, str_at(m, "path") ?: "");
		r = kmod_module_new_from_path(ctx, path, &km);
		if (r == 0)
			r = kmod_module_insert_module(km, 0, NULL);
		if (r == 0 || r == -EEXIST)
			loaded++;
		else
			say(in, "module %s not loaded: %s", str_at(m, "name") ?: "?", strerror(-r));
		kmod_module_unref(km);
	}
	kmod_unref(ctx);
	say(in, "%u of %zu modules loaded", loaded, json_object_array_length(mods));
}

/* Is /dev/name the disk described by id (partition table id and size)? */
static bool disk_matches(const char *dev, json_object *id)
{
	blkid_probe pr = blkid_new_probe_from_filename(dev);
	const char *v, *want = str_at(id, "ptuuid");
	bool ok = false;

	if (!pr)
		return false;
	blkid_probe_enable_superblocks(pr, 0);
	blkid_probe_enable_partitions(pr, 1);
	if ((uint64_t)blkid_probe_get_size(pr) == u64_at(id, "size") && blkid_do_fullprobe(pr) == 0 &&
	    blkid_probe_lookup_value(pr, "PTUUID", &v, NULL) == 0 && want && !strcasecmp(v, want))
		ok = true;
	blkid_free_probe(pr);
	return ok;
}

static bool find_disk_once(struct init *in, json_object *id)
{
	DIR *d = opendir("/sys/block");
	struct dirent *de;
	bool found = false;

	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		char dev[300];

		if (de->d_name[0] == '.' || !strncmp(de->d_name, "loop", 4) || !strncmp(de->d_name, "ram", 3) ||
		    !strncmp(de->d_name, "zram", 4))
			continue;
		snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
		if (disk_matches(dev, id)) {
			snprintf(in->disk, sizeof(in->disk), "%s", dev);
			found = true;
		}
	}
	closedir(d);
	return found;
}

/* Bounded: a disk that never comes (another machine, a dead controller)
 * ends the staging boot, not hangs it. */
static int wait_disk(struct init *in, ip_error *e)
{
	json_object *id = NULL;
	uint64_t wait_s = u64_at(in->doc, "disk_wait_s");
	struct timespec half = { 0, 500 * 1000 * 1000 };

	json_object_object_get_ex(in->doc, "disk", &id);
	for (uint64_t i = 0; i <= wait_s * 2; i++) {
		if (find_disk_once(in, id))
			return 0;
		nanosleep(&half, NULL);
	}
	return ip_fail(e, -ENODEV, "the run's disk (partition table %s, %llu bytes, %s when built) did not appear "
		       "within %llu s: nothing was changed; check the disk controller's driver",
		       str_at(id, "ptuuid") ?: "?", (unsigned long long)u64_at(id, "size"),
		       str_at(in->doc, "disk_built_on") ?: "?", (unsigned long long)wait_s);
}

static void records_done(const char *dir, void *arg)
{
	struct init *in = arg;
	ip_error e = { 0 };

	/* partctl's records follow the state into the store */
	setenv("INPLACE_STATE_DIR", dir, 1);
	if (!in->rec_mounted)
		return;
	if (bs_records_umount(RECORDS_MNT, in->rec_dev, &e) < 0) {
		say(in, "warning: %s", e.msg);
		return;
	}
	in->rec_mounted = false;
	say(in, "the state is in the store (%s): the records area is released", dir);
}

/* The state directory for this boot: the records area while it is ours,
 * else the initramfs's copy (the store, found first by resume, holds the
 * state once it exists). */
static void choose_state_dir(struct init *in, char *dir, size_t n)
{
	json_object *rj = NULL;
	struct bs_records rec = { 0 };
	ip_error e = { 0 };
	uint64_t off, size;
	unsigned part = 0;
	int r;

	path_in(in, dir, n, str_at(in->doc, "state_dir") ?: "/state");
	/* once the store exists the state is there, and deploy may have
	 * overwritten part of the area: never mount it (or let e2fsck
	 * write) again */
	if (bs_find_store(in->disk, &part, &off, &size, NULL) == 0 && part) {
		say(in, "the store is partition %u: the state is there, the records area is done with", part);
		return;
	}
	if (!json_object_object_get_ex(in->doc, "records", &rj) || !rj) {
		say(in, "warning: no records area: the state before the store lives in RAM only");
		return;
	}
	rec.off = u64_at(rj, "offset");
	rec.size = u64_at(rj, "size");
	snprintf(rec.uuid, sizeof(rec.uuid), "%s", str_at(rj, "uuid") ?: "");
	r = bs_records_mount(in->disk, &rec, RECORDS_MNT, in->rec_dev, sizeof(in->rec_dev), &e);
	if (r == -ENOENT) {
		say(in, "warning: the records area is not where it was built: the state before the store lives in RAM only");
		return;
	}
	if (r < 0) {
		say(in, "warning: %s: the state before the store lives in RAM only", e.msg);
		return;
	}
	in->rec_mounted = true;
	snprintf(dir, n, "%s", RECORDS_MNT);
	say(in, "records area mounted from byte %llu of %s", (unsigned long long)rec.off, in->disk);
}

/* The story's events on the console as they come: the admin (and a
 * test) sees which step the staging boot is at. */
static void event_say(const char *msg, void *arg)
{
	say(arg, "%s", msg);
}

/* A failure before or outside the steps, into the status log where the
 * state is (the steps record their own). */
static void record_failure(const char *dir, const ip_error *err)
{
	bootstage_log *l = NULL;

	if (bootstage_log_open(dir, NULL, &l, NULL) == 0) {
		bootstage_log_event(l, "staging", NULL, BOOTSTAGE_ERROR, -1, NULL, "%s", err->msg);
		bootstage_log_free(l);
	}
}

/* ---- media and netboot: no old OS ran the job ---------------------------- */

/* Staging is over on the disk: boot on into the system there (kexec), so
 * that media left in (or a network boot first in the order) does not
 * start staging again; else say what to do and power off. */
static void media_boot_on(struct init *in, json_object *media)
{
	json_object *v = NULL;
	ip_error e = { 0 };

	json_object_object_get_ex(media, "system_partition", &v);
	say(in, "staging is done on %s: booting the system on it", in->disk);
	if (bs_media_boot_disk(in->disk, v ? (unsigned)json_object_get_int(v) : 0, &e) == 0)
		return;
	say(in, "cannot boot on into %s (%s): remove the boot media (or put the disk first in the boot order) "
	    "and power on; powering off", in->disk, e.msg);
	bs_media_set_after(BS_AFTER_POWEROFF);
}

/* The old OS's part, done here (bootstage/media.c): the disk by the job's
 * rules, the run's state looked for, else the job run up to prepare and
 * the records area made.  1: staging is over on this disk (booted on);
 * 0: the usual staging boot goes on.  From here on a failure powers off:
 * a media boot that reboots would start again, forever. */
static int media_entry(struct init *in, json_object *media, ip_error *e)
{
	enum bs_media_next next = BS_MEDIA_RESUME;
	struct bs_records rec = { 0 };
	char state[4200], job[4300], mdev[300];
	uint64_t store_bytes = 0;
	unsigned part = 0;
	ip_error err = { 0 };
	int r;

	bs_media_set_after(BS_AFTER_POWEROFF);
	if ((r = bs_media_find_disk(media, in->disk, sizeof(in->disk), e)) < 0)
		return r;
	say(in, "the job's disk is %s", in->disk);
	if ((r = bs_media_mount_image(media, mdev, sizeof(mdev), e)) < 0)
		return r;
	if (*mdev)
		say(in, "the image is on the boot media, %s", mdev);
	path_in(in, state, sizeof(state), str_at(in->doc, "state_dir") ?: "/state");
	snprintf(job, sizeof(job), "%s/job.ini", state);
	if ((r = bs_media_stage(in->disk, job, state, &next, &part, &store_bytes, e)) < 0)
		return r;
	if (next == BS_MEDIA_DONE) {
		media_boot_on(in, media);
		return 1;
	}
	if (next != BS_MEDIA_STARTED)
		return 0;
	say(in, "preflight passed on %s: the run is in phase prepare", in->disk);
	/* what the old OS's 'stage build' does: the state's durable home
	 * while the old root is shrunk; without it the state lives in RAM
	 * until the store exists, as a staging boot whose area is gone */
	if (bs_records_create(in->disk, part, state, store_bytes, &rec, &err) < 0) {
		say(in, "warning: no records area (%s): the state before the store lives in RAM only", err.msg);
		return 0;
	}
	json_object_object_add(in->doc, "records", bs_records_json(&rec));
	return 0;
}

int bs_stage_init(const char *root, bs_say_fn sayfn, void *arg, ip_error *e)
{
	struct init in = { .root = root ? root : "/", .say = sayfn, .arg = arg };
	struct bootstage_run_opts o = { 0 };
	struct bootstage_run_result res = { 0 };
	char state[4200], path[4200];
	json_object *media = NULL;
	int r;

	/* the kernel started the bundle's binary straight through its
	 * PT_INTERP (no /proc yet for the launcher); once /proc is there it
	 * starts again through the launcher, so that it knows itself as the
	 * bundle (bs_bundle_self: the store gets a copy of it) */
	if (!getenv("INPLACE_STAGE_INIT")) {
		if ((r = mount_basics(&in, e)) < 0)
			return r;
		say(&in, "staging environment: starting");
		setenv("INPLACE_STAGE_INIT", "1", 1);
		path_in(&in, path, sizeof(path), "/bundle/inplace");
		execv(path, (char *const[]){ "inplace", "stage", "init", NULL });
		say(&in, "warning: cannot start again through %s: %s", path, strerror(errno));
	}
	if ((r = load_doc(&in, e)) < 0)
		return r;
	path_in(&in, path, sizeof(path), "/bundle/bin");
	snprintf(state, sizeof(state), "%s:/usr/sbin:/usr/bin:/sbin:/bin", path);
	setenv("PATH", state, 1);
	setenv("INPLACE_RUN_DIR", "/run/inplace", 1);
	setenv("HOME", "/", 0);
	load_modules(&in);
	json_object_object_get_ex(in.doc, "media", &media);
	if ((r = media ? media_entry(&in, media, e) : wait_disk(&in, e)) < 0) {
		path_in(&in, state, sizeof(state), str_at(in.doc, "state_dir") ?: "/state");
		record_failure(state, e);
		goto out;
	}
	if (r > 0) {
		r = 0;
		goto out;
	}
	say(&in, "the run's disk is %s", in.disk);
	choose_state_dir(&in, state, sizeof(state));
	setenv("INPLACE_STATE_DIR", state, 1);
	o.state_dir = state;
	o.disk_here = in.disk;
	o.staging = true;
	o.state_in_store = records_done;
	o.state_in_store_arg = &in;
	o.on_event = event_say;
	o.on_event_arg = &in;
	r = bootstage_resume(in.disk, &o, &res, e);
	if (r < 0) {
		say(&in, "resume failed (state in %s): %s", res.state_dir, e->msg);
		/* the failed step recorded itself; a failure to find or open
		 * the state did not */
		if (*res.state_dir && access(res.state_dir, W_OK) == 0)
			record_failure(res.state_dir, e);
	} else {
		say(&in, "resume ended in phase %s (state in %s)", bootstage_phase_name(res.phase), res.state_dir);
		if (media && res.phase >= BOOTSTAGE_PHASE_RESTORE)
			media_boot_on(&in, media);
	}
out:
	if (in.rec_mounted)
		bs_records_umount(RECORDS_MNT, in.rec_dev, NULL);
	json_object_put(in.doc);
	return r;
}
