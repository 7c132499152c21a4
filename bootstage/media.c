/* media.c — `inplace media build` and `inplace netboot build` (a boot
 * image or a netboot directory that starts straight in the staging
 * environment), and what that staging environment does when no old OS
 * ran the job: find the job's disk by its rules, run the old OS's part
 * itself (preflight, state, records area), and, once staging is over,
 * boot on into the system on the disk instead of into the media again. */
#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bootstage/boot.h"
#include "bootstage/bootstage.h"
#include "bootstage/internal.h"
#include "bootstage/stage.h"
#include "bootstage/media.h"
#include "bootstage/steps.h"
#include "imager/imager.h"

/* Drivers of the disks and controllers a machine this media meets may
 * have, beyond the usual ones stage.c loads for a disk it does not know
 * (virtio, SCSI, AHCI, NVMe): legacy IDE/SATA, USB sticks and SD cards. */
static const char *const generic_modules[] = { "ata_piix", "usb_storage", "uas", "xhci_pci", "ehci_pci",
					       "mmc_block", "sdhci_pci", "sr_mod", "isofs", NULL };

/* Where the image lies on the media's ISO 9660 filesystem: GRUB would
 * read an initramfs holding it through the firmware (slow, and all of it
 * into RAM); staging mounts the media and reads it from there. */
#define MEDIA_IMAGE "/inplace/image"
#define MEDIA_MNT "/run/inplace-media"

#define MEDIA_KERNEL_MAX (256u << 20)
#define NEWROOT_MNT "/run/inplace-newroot"

static enum bs_media_after after = BS_AFTER_REBOOT;

enum bs_media_after bs_media_after(void)
{
	return after;
}

void bs_media_set_after(enum bs_media_after a)
{
	after = a;
}

void bs_media_result_clear(struct bs_media_result *r)
{
	if (!r)
		return;
	json_object_put(r->modules);
	r->modules = NULL;
}

/* ---- building -------------------------------------------------------------- */

/* Remove the temporary files and directories rel of base, in order
 * (files before the directories holding them), then base. */
static void remove_tmp(const char *base, const char *const *rel)
{
	char p[PATH_MAX];

	for (size_t i = 0; rel[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", base, rel[i]);
		if (unlink(p) < 0 && errno == EISDIR)
			rmdir(p);
	}
	rmdir(base);
}

/* What the build host can check of a job that no old OS will run: the
 * staging env has neither network nor the old OS's running root to take
 * defaults from, and the image travels with it. */
static int check_job(const char *job_path, enum bootstage_boot_method want, bootstage_job **out,
		     struct bs_media_result *res, ip_error *e)
{
	const char *verb = want == BOOTSTAGE_BOOT_MEDIA ? "media" : "netboot";
	const char *method = want == BOOTSTAGE_BOOT_MEDIA ? "media" : "pxe";
	struct imager_verify_opts vo = { 0 };
	_cleanup_free_ char *text = NULL;
	bootstage_job *j = NULL;
	char sig[PATH_MAX + 16];
	int r;

	*out = NULL;
	if ((r = ip_read_file(job_path, 1 << 20, &text, NULL, e)) < 0) {
		if (e)
			e->status = IP_EXIT_BADINPUT;
		return r;
	}
	if ((r = bootstage_job_parse(text, job_path, &j, e)) < 0)
		return r;
	if (j->boot != want)
		r = ip_bad(e, -EINVAL, "%s: [boot] method is not %s: set method = %s for '%s build'", j->name, method,
			   method, verb);
	else if (imager_is_url(j->image))
		r = ip_bad(e, -EINVAL, "%s: the image is a URL, and the staging environment has no network: download "
			   "it (inplace image verify) and name the file", j->name);
	else if (j->image[0] != '/' || (j->key && j->key[0] != '/') ||
		 (j->report_ca_cert && j->report_ca_cert[0] != '/'))
		r = ip_bad(e, -EINVAL, "%s: the image, key and ca_cert travel at their paths: give them as absolute "
			   "paths", j->name);
	else if (!j->system_partition)
		r = ip_bad(e, -EINVAL, "%s: no system_partition: a %s boot has no running root to take it from: "
			   "set system_partition = N", j->name, method);
	else if (j->store != BOOTSTAGE_STORE_PARTITION)
		r = ip_bad(e, -EINVAL, "%s: store = %s is a directory of the old system, which a %s boot does not "
			   "mount: use store = partition", j->name, j->store_dir, method);
	else if (j->disk && strncmp(j->disk, "/dev/", 5))
		r = ip_bad(e, -EINVAL, "%s: disk %s is not a device: name it /dev/disk/by-id/NAME (or leave it out "
			   "when the machine has one disk)", j->name, j->disk);
	if (r < 0)
		goto fail;
	if (j->require_signature && !j->key) {
		r = ip_bad(e, -EINVAL, "%s: require_signature = yes needs key = FILE", j->name);
		goto fail;
	}
	vo.pubkey = j->key;
	snprintf(sig, sizeof(sig), "%s.minisig", j->image);
	if (!j->key && access(sig, F_OK) == 0)
		vo.pubkey = NULL;
	/* the whole image, every frame: what staging deploys is what was
	 * checked here, and a bad copy is found before anyone boots it */
	if ((r = imager_verify(j->image, &vo, e)) < 0) {
		ip_error_prefix(e, "%s: image %s", j->name, j->image);
		if (e)
			e->status = IP_EXIT_BADINPUT;
		goto fail;
	}
	res->signature_checked = j->key != NULL;
	*out = j;
	return 0;
fail:
	bootstage_job_free(j);
	return r;
}

/* The staging kernel's command line: both consoles (the serial one last,
 * so /dev/console is the one a headless machine logs to), the mark, the
 * kind of boot and panic=30. */
static void media_cmdline(const struct bs_media_opts *o, const char *kind, char *out, size_t n)
{
	snprintf(out, n, "console=tty0 console=ttyS0,115200 inplace.stage inplace.%s panic=30%s%s", kind,
		 o->cmdline && *o->cmdline ? " " : "", o->cmdline ? o->cmdline : "");
}

/* The staging initramfs for job j at initrd, and the kernel copied to
 * kernel_out. */
static int build_boot_files(const bootstage_job *j, const char *job_path, const struct bs_media_opts *o,
			    const char *kernel_out, const char *initrd, struct bs_media_result *res, ip_error *e)
{
	char tmp[] = "/tmp/inplace-media.XXXXXX", path[PATH_MAX];
	const char *mods[128];
	_cleanup_free_ char *text = NULL, *kern = NULL;
	struct bs_stage_opts so = { .kernel = o->kernel, .modules_dir = o->modules_dir, .state_dir = tmp,
				    .disk_wait_s = o->disk_wait_s, .no_records = true };
	struct bs_stage_result sr = { 0 };
	size_t n = 0, len, klen;
	struct stat st;
	int r;

	for (size_t i = 0; generic_modules[i]; i++)
		mods[n++] = generic_modules[i];
	for (size_t i = 0; o->add_modules && o->add_modules[i] && n < IP_ARRAY_SIZE(mods) - 1; i++)
		mods[n++] = o->add_modules[i];
	mods[n] = NULL;
	so.add_modules = mods;
	so.media = json_object_new_object();
	json_object_object_add(so.media, "kind", json_object_new_string(j->boot == BOOTSTAGE_BOOT_MEDIA ? "media" :
									  "pxe"));
	json_object_object_add(so.media, "disk", j->disk ? json_object_new_string(j->disk) : NULL);
	json_object_object_add(so.media, "system_partition", json_object_new_int((int)j->system_partition));
	json_object_object_add(so.media, "wait_s", json_object_new_int(o->disk_wait_s ? (int)o->disk_wait_s : 60));
	if (j->boot == BOOTSTAGE_BOOT_MEDIA && stat(j->image, &st) == 0) {
		json_object *im = json_object_new_object();

		/* the image on the media, linked at the job's path in staging */
		json_object_object_add(im, "on_media", json_object_new_string(MEDIA_IMAGE));
		json_object_object_add(im, "path", json_object_new_string(j->image));
		json_object_object_add(im, "bytes", ip_json_u64((uint64_t)st.st_size));
		json_object_object_add(so.media, "image", im);
		so.no_image = true;
	}
	/* the job alone, as the state directory stage.c packs: staging
	 * starts the run from it */
	if (!mkdtemp(tmp)) {
		json_object_put(so.media);
		return ip_fail(e, -errno, "cannot make a temporary directory: %s", strerror(errno));
	}
	snprintf(path, sizeof(path), "%s/%s", tmp, BOOTSTAGE_JOB_FILE);
	if ((r = ip_read_file(job_path, 1 << 20, &text, &len, e)) == 0 &&
	    (r = ip_write_file_atomic(path, text, len, 0600, e)) == 0 && (r = bs_stage_build(initrd, &so, &sr, e)) == 0)
		r = ip_read_file(sr.kernel, MEDIA_KERNEL_MAX, &kern, &klen, e);
	if (r == 0)
		r = ip_write_file_atomic(kernel_out, kern, klen, 0644, e);
	if (r == 0) {
		snprintf(res->kernel, sizeof(res->kernel), "%s", sr.kernel);
		snprintf(res->version, sizeof(res->version), "%s", sr.version);
		res->modules = json_object_get(sr.modules);
		res->initrd_bytes = sr.bytes;
		if (stat(kernel_out, &st) == 0)
			res->bytes = sr.bytes + (uint64_t)st.st_size;
	}
	bs_stage_result_clear(&sr);
	json_object_put(so.media);
	remove_tmp(tmp, (const char *const[]){ BOOTSTAGE_JOB_FILE, NULL });
	return r;
}

static int need_dir(const char *dir, const char *package, ip_error *e)
{
	if (access(dir, R_OK) == 0)
		return 0;
	return ip_bad(e, -ENOENT, "no %s: install %s", dir, package);
}

int bs_media_build(const char *job_path, const char *out, const struct bs_media_opts *o, struct bs_media_result *res,
		   ip_error *e)
{
	char tree[] = "/tmp/inplace-iso.XXXXXX", p[PATH_MAX], cfg[2048];
	ip_outfile of = { .fd = -1 };
	bootstage_job *j = NULL;
	struct stat st;
	int r;

	memset(res, 0, sizeof(*res));
	/* every tool before anything is built: a missing one costs nothing */
	if ((r = bs_need_tool("grub-mkrescue", "grub-common", e)) < 0 || (r = bs_need_tool("xorriso", "xorriso", e)) < 0 ||
	    (r = bs_need_tool("mformat", "mtools", e)) < 0 ||
	    (r = need_dir("/usr/lib/grub/i386-pc", "grub-pc-bin", e)) < 0 ||
	    (r = need_dir("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin", e)) < 0)
		return r;
	if ((r = check_job(job_path, BOOTSTAGE_BOOT_MEDIA, &j, res, e)) < 0)
		return r;
	/* the output may not be the job's image or disk */
	if ((r = ip_check_distinct(out, j->image, e)) < 0)
		goto out;
	if (!mkdtemp(tree)) {
		r = ip_fail(e, -errno, "cannot make a temporary directory: %s", strerror(errno));
		goto out;
	}
	snprintf(p, sizeof(p), "%s/boot/grub", tree);
	if ((r = ip_mkdir_p(p, 0755, e)) < 0)
		goto out_tree;
	media_cmdline(o, "media", res->cmdline, sizeof(res->cmdline));
	/* GRUB on the serial line and the screen alike; one entry, started
	 * after a short wait so that a headless machine goes on by itself */
	snprintf(cfg, sizeof(cfg),
		 "# inplace media: the staging environment of job %s\n"
		 "serial --unit=0 --speed=115200\n"
		 "terminal_input console serial\n"
		 "terminal_output console serial\n"
		 "set timeout=3\n"
		 "set default=0\n"
		 "menuentry 'inplace: reimage this machine' {\n"
		 "\tlinux /boot/vmlinuz %s\n"
		 "\tinitrd /boot/initrd.img\n"
		 "}\n",
		 j->name, res->cmdline);
	snprintf(p, sizeof(p), "%s/boot/grub/grub.cfg", tree);
	if ((r = ip_write_file_atomic(p, cfg, strlen(cfg), 0644, e)) < 0)
		goto out_tree;
	{
		char kernel[PATH_MAX], initrd[PATH_MAX];

		snprintf(kernel, sizeof(kernel), "%s/boot/vmlinuz", tree);
		snprintf(initrd, sizeof(initrd), "%s/boot/initrd.img", tree);
		if ((r = build_boot_files(j, job_path, o, kernel, initrd, res, e)) < 0)
			goto out_tree;
	}
	/* grub-mkrescue writes its own file: into our temporary name, which
	 * then replaces out durably */
	if ((r = ip_outfile_open(out, j->image, 0644, &of, e)) < 0)
		goto out_tree;
	{
		char sig[PATH_MAX + 16];
		const char *argv[] = { "grub-mkrescue", "-o", of.tmp, tree, "--", "-map", j->image, MEDIA_IMAGE,
				       "-map", sig, MEDIA_IMAGE ".minisig", NULL };

		/* xorriso's own -map after "--": the image goes on the ISO
		 * from where it is, without a copy in the tree */
		snprintf(sig, sizeof(sig), "%s.minisig", j->image);
		if (access(sig, R_OK) < 0)
			argv[8] = NULL;

		r = ip_spawn(argv, NULL, e);
		if (r < 0)
			ip_error_prefix(e, "grub-mkrescue");
	}
	if (r == 0)
		r = ip_outfile_commit(&of, e);
	else
		ip_outfile_abort(&of);
	if (r == 0 && stat(out, &st) == 0)
		res->bytes = (uint64_t)st.st_size;
out_tree:
	remove_tmp(tree, (const char *const[]){ "boot/grub/grub.cfg", "boot/vmlinuz", "boot/initrd.img", "boot/grub",
						"boot", NULL });
out:
	bootstage_job_free(j);
	return r;
}

int bs_netboot_build(const char *job_path, const char *dir, const struct bs_media_opts *o,
		     struct bs_media_result *res, ip_error *e)
{
	char p[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX], text[2048];
	bootstage_job *j = NULL;
	struct stat st;
	int r;

	memset(res, 0, sizeof(*res));
	if ((r = check_job(job_path, BOOTSTAGE_BOOT_PXE, &j, res, e)) < 0)
		return r;
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
		r = ip_bad(e, -ENOTDIR, "%s is not a directory: give the TFTP or HTTP directory", dir);
		goto out;
	}
	snprintf(p, sizeof(p), "%s/pxelinux.cfg", dir);
	if ((r = ip_mkdir_p(p, 0755, e)) < 0)
		goto out;
	snprintf(kernel, sizeof(kernel), "%s/vmlinuz", dir);
	snprintf(initrd, sizeof(initrd), "%s/initrd.img", dir);
	media_cmdline(o, "pxe", res->cmdline, sizeof(res->cmdline));
	if ((r = build_boot_files(j, job_path, o, kernel, initrd, res, e)) < 0)
		goto out;
	/* a TFTP or HTTP server reads it as its own user */
	if (chmod(initrd, 0644) < 0) {
		r = ip_fail(e, -errno, "cannot make %s readable: %s", initrd, strerror(errno));
		goto out;
	}
	/* names relative to the script: iPXE fetches them the way it
	 * fetched the script (TFTP, HTTP) from the same place */
	snprintf(text, sizeof(text),
		 "#!ipxe\n"
		 "# inplace netboot: the staging environment of job %s\n"
		 "kernel vmlinuz initrd=initrd.img %s\n"
		 "initrd initrd.img\n"
		 "boot\n",
		 j->name, res->cmdline);
	snprintf(p, sizeof(p), "%s/boot.ipxe", dir);
	if ((r = ip_write_file_atomic(p, text, strlen(text), 0644, e)) < 0)
		goto out;
	snprintf(text, sizeof(text),
		 "# inplace netboot: the staging environment of job %s\n"
		 "DEFAULT inplace\n"
		 "LABEL inplace\n"
		 "  KERNEL vmlinuz\n"
		 "  APPEND initrd=initrd.img %s\n",
		 j->name, res->cmdline);
	snprintf(p, sizeof(p), "%s/pxelinux.cfg/default", dir);
	r = ip_write_file_atomic(p, text, strlen(text), 0644, e);
out:
	bootstage_job_free(j);
	return r;
}

/* ---- finding the disk in the staging env ---------------------------------- */

static void sys_line(const char *dev, const char *file, char *buf, size_t n)
{
	_cleanup_free_ char *data = NULL;
	char path[PATH_MAX];
	size_t len = 0, a = 0, b;

	*buf = '\0';
	snprintf(path, sizeof(path), "/sys/block/%s/%s", dev, file);
	if (ip_read_file(path, 4096, &data, &len, NULL) < 0)
		return;
	b = strcspn(data, "\n");
	while (a < b && data[a] == ' ')
		a++;
	while (b > a && data[b - 1] == ' ')
		b--;
	snprintf(buf, n, "%.*s", (int)(b - a), data + a);
}

/* Whether the /dev/disk/by-id name id names block device dev, from what
 * udev builds those names of (no udev here): the serial of a virtio disk,
 * the model and serial or the WWID of an NVMe or SCSI/ATA disk; a name
 * holding the disk's serial as a word is taken too. */
static bool id_matches(const char *dev, const char *id)
{
	char serial[256], model[256], wwid[256], want[600];

	sys_line(dev, "serial", serial, sizeof(serial));
	if (!*serial)
		sys_line(dev, "device/serial", serial, sizeof(serial));
	sys_line(dev, "device/model", model, sizeof(model));
	sys_line(dev, "wwid", wwid, sizeof(wwid));
	if (!*wwid)
		sys_line(dev, "device/wwid", wwid, sizeof(wwid));
	for (char *c = model; *c; c++)
		if (*c == ' ')
			*c = '_';
	if (*serial) {
		snprintf(want, sizeof(want), "virtio-%s", serial);
		if (!strcmp(id, want))
			return true;
		snprintf(want, sizeof(want), "%s_%s", model, serial);
		if (*model && (!strcmp(id + strcspn(id, "-") + (id[strcspn(id, "-")] ? 1 : 0), want)))
			return true;
		{
			const char *s = strstr(id, serial);
			size_t l = strlen(serial);

			if (s && (s == id || s[-1] == '-' || s[-1] == '_') && (!s[l] || s[l] == '-' || s[l] == '_'))
				return true;
		}
	}
	if (*wwid) {
		/* nvme-eui.…, wwn-0x… (scsi "naa.XXXX") */
		snprintf(want, sizeof(want), "nvme-%s", wwid);
		if (!strcmp(id, want))
			return true;
		if (!strncmp(wwid, "naa.", 4)) {
			snprintf(want, sizeof(want), "wwn-0x%s", wwid + 4);
			if (!strcasecmp(id, want))
				return true;
		}
	}
	return false;
}

/* A whole disk that could be the job's: a partition table with partition
 * part, and not the boot media (an ISO 9660 whole disk). */
static bool candidate(const char *dev, unsigned part)
{
	char node[300];
	blkid_probe pr;
	blkid_partlist pl;
	const char *type;
	bool ok = false;

	snprintf(node, sizeof(node), "/dev/%s", dev);
	if (!(pr = blkid_new_probe_from_filename(node)))
		return false;
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_enable_partitions(pr, 1);
	if (blkid_do_fullprobe(pr) == 0 &&
	    !(blkid_probe_lookup_value(pr, "TYPE", &type, NULL) == 0 && !strcmp(type, "iso9660")) &&
	    (pl = blkid_probe_get_partitions(pr)))
		for (int i = 0; i < blkid_partlist_numof_partitions(pl); i++)
			if (blkid_partition_get_partno(blkid_partlist_get_partition(pl, i)) == (int)part)
				ok = true;
	blkid_free_probe(pr);
	return ok;
}

static bool skip_dev(const char *name)
{
	static const char *const virt[] = { "loop", "ram", "zram", "sr", "dm-", "md", "fd", NULL };

	if (name[0] == '.')
		return true;
	for (size_t i = 0; virt[i]; i++)
		if (!strncmp(name, virt[i], strlen(virt[i])))
			return true;
	return false;
}

/* One look: the matching disks, names joined into seen. */
static unsigned scan(const char *want_id, const char *want_name, unsigned part, char *disk, size_t n, char *seen,
		     size_t sn)
{
	DIR *d = opendir("/sys/block");
	struct dirent *de;
	unsigned found = 0;

	*seen = '\0';
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (skip_dev(de->d_name))
			continue;
		snprintf(seen + strlen(seen), sn - strlen(seen), "%s%s", *seen ? ", " : "", de->d_name);
		if (want_id && !id_matches(de->d_name, want_id))
			continue;
		if (want_name && strcmp(de->d_name, want_name))
			continue;
		if (!candidate(de->d_name, part))
			continue;
		if (!found++)
			snprintf(disk, n, "/dev/%s", de->d_name);
	}
	closedir(d);
	return found;
}

int bs_media_find_disk(json_object *media, char *disk, size_t n, ip_error *e)
{
	json_object *v;
	const char *named = NULL, *want_id = NULL, *want_name = NULL;
	struct timespec half = { 0, 500 * 1000 * 1000 };
	unsigned part = 0, wait_s = 60, found = 0, settle = 0;
	char seen[1024] = "";

	if (json_object_object_get_ex(media, "disk", &v) && v)
		named = json_object_get_string(v);
	if (json_object_object_get_ex(media, "system_partition", &v))
		part = (unsigned)json_object_get_int(v);
	if (json_object_object_get_ex(media, "wait_s", &v))
		wait_s = (unsigned)json_object_get_int(v);
	if (named && !strncmp(named, "/dev/disk/by-id/", 16))
		want_id = named + 16;
	else if (named)
		want_name = named + 5;
	/* disks come up one by one: once one matches, three seconds more
	 * for a second that would make the choice ambiguous */
	for (unsigned i = 0; i <= wait_s * 2; i++) {
		found = scan(want_id, want_name, part, disk, n, seen, sizeof(seen));
		if (found && ++settle > 6)
			break;
		nanosleep(&half, NULL);
	}
	if (found == 1)
		return 0;
	if (found > 1)
		return ip_bad(e, -EEXIST, "more than one disk could be the job's (%s, with partition %u; disks here: "
			      "%s): nothing was changed; name the disk in the job by /dev/disk/by-id/NAME",
			      named ? named : "a partition table", part, *seen ? seen : "none");
	return ip_bad(e, -ENODEV, "the job's disk (%s, with partition %u) is not in this machine (disks here: %s; "
		      "waited %u s): nothing was changed; check the job's disk or the controller's driver",
		      named ? named : "the one disk with a partition table", part, *seen ? seen : "none", wait_s);
}

/* ---- the image on the media -------------------------------------------------- */

/* Mount /dev/name read-only at MEDIA_MNT when it is an ISO 9660 holding
 * the image of the recorded size. */
static bool try_media(const char *name, uint64_t bytes)
{
	char dev[300], img[PATH_MAX];
	struct stat st;

	snprintf(dev, sizeof(dev), "/dev/%s", name);
	if (mount(dev, MEDIA_MNT, "iso9660", MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
		return false;
	snprintf(img, sizeof(img), "%s%s", MEDIA_MNT, MEDIA_IMAGE);
	if (stat(img, &st) == 0 && (uint64_t)st.st_size == bytes)
		return true;
	umount(MEDIA_MNT);
	return false;
}

int bs_media_mount_image(json_object *media, char *found, size_t n, ip_error *e)
{
	struct timespec half = { 0, 500 * 1000 * 1000 };
	json_object *im = NULL, *v;
	const char *path = NULL;
	char src[PATH_MAX], at[PATH_MAX + 16], dir[PATH_MAX];
	uint64_t bytes = 0;
	unsigned wait_s = 60;
	bool ok = false;
	int r;

	*found = '\0';
	if (!json_object_object_get_ex(media, "image", &im) || !im)
		return 0;    /* netboot: the image is in the initramfs */
	if (json_object_object_get_ex(im, "path", &v))
		path = json_object_get_string(v);
	if (json_object_object_get_ex(im, "bytes", &v))
		bytes = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(media, "wait_s", &v))
		wait_s = (unsigned)json_object_get_int(v);
	if (!path || path[0] != '/')
		return ip_fail(e, -EINVAL, "the media's description names no image path");
	if ((r = ip_mkdir_p(MEDIA_MNT, 0700, e)) < 0)
		return r;
	for (unsigned i = 0; !ok && i <= wait_s * 2; i++) {
		DIR *d = opendir("/sys/block");
		struct dirent *de;

		while (d && !ok && (de = readdir(d)))
			if (de->d_name[0] != '.' && strncmp(de->d_name, "loop", 4) && strncmp(de->d_name, "ram", 3) &&
			    (ok = try_media(de->d_name, bytes)))
				snprintf(found, n, "/dev/%s", de->d_name);
		if (d)
			closedir(d);
		if (!ok)
			nanosleep(&half, NULL);
	}
	if (!ok)
		return ip_bad(e, -ENODEV, "the boot media (ISO 9660 with %s of %llu bytes) is not to be found: nothing "
			      "was changed; leave the media in while staging runs", MEDIA_IMAGE,
			      (unsigned long long)bytes);
	/* the job names the image by its path on the build host */
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	if (*dir && (r = ip_mkdir_p(dir, 0755, e)) < 0)
		return r;
	for (int k = 0; k < 2; k++) {
		snprintf(src, sizeof(src), "%s%s%s", MEDIA_MNT, MEDIA_IMAGE, k ? ".minisig" : "");
		snprintf(at, sizeof(at), "%s%s", path, k ? ".minisig" : "");
		if (access(src, F_OK) < 0)
			continue;
		unlink(at);
		if (symlink(src, at) < 0)
			return ip_fail(e, -errno, "cannot link %s to the image on the media: %s", at, strerror(errno));
	}
	return 0;
}

/* ---- the old OS's part, in the staging env --------------------------------- */

int bs_media_stage(const char *disk, const char *job_path, const char *state_dir, enum bs_media_next *next,
		   unsigned *sys_part, uint64_t *store_bytes, ip_error *e)
{
	struct bootstage_run_opts ro = { .state_dir = state_dir, .staging = true, .disk_here = disk };
	struct bootstage_preflight_result pre = { 0 };
	struct bootstage_run_result res = { 0 };
	_cleanup_free_ char *text = NULL;
	bootstage_job *j = NULL;
	json_object *doc = NULL, *v;
	enum bootstage_phase ph = BOOTSTAGE_PHASE_NONE;
	int r;

	*next = BS_MEDIA_RESUME;
	*store_bytes = 0;
	/* a run of this disk found where resume looks (the store first):
	 * staging goes on from it, or is over */
	if (bootstage_status_find(disk, &ro, 0, &doc, NULL) == 0 && json_object_object_get_ex(doc, "phase", &v))
		bootstage_phase_parse(json_object_get_string(v), &ph);
	json_object_put(doc);
	if (ph >= BOOTSTAGE_PHASE_RESTORE && ph <= BOOTSTAGE_PHASE_DONE) {
		*next = BS_MEDIA_DONE;
		return 0;
	}
	if (ph != BOOTSTAGE_PHASE_NONE)
		return 0;
	if ((r = ip_read_file(job_path, 1 << 20, &text, NULL, e)) < 0 ||
	    (r = bootstage_job_parse(text, job_path, &j, e)) < 0)
		return r;
	/* the disk as this boot found it; the text (and so the job's hash)
	 * stays as written */
	free(j->disk);
	if (!(j->disk = strdup(disk))) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	/* booting the media was the admin's decision, and nobody is
	 * logged in to be told */
	j->notify_countdown = 0;
	if ((r = bootstage_job_resolve(j, e)) < 0 || (r = bootstage_run(j, &ro, &pre, &res, e)) < 0)
		goto out;
	if (res.already) {
		*next = BS_MEDIA_DONE;
		goto out;
	}
	if (res.phase != BOOTSTAGE_PHASE_PREPARE) {
		r = ip_fail(e, -EINVAL, "the run of %s stands in phase %s, not prepare: nothing more was done",
			    job_path, bootstage_phase_name(res.phase));
		goto out;
	}
	*next = BS_MEDIA_STARTED;
	*sys_part = j->system_partition;
	*store_bytes = pre.store_bytes;
out:
	bootstage_preflight_result_clear(&pre);
	bootstage_job_free(j);
	return r;
}

/* ---- booting on into the disk ---------------------------------------------- */

static void this_boot_consoles(char *out, size_t n)
{
	_cleanup_free_ char *cl = NULL;
	size_t len = 0, k = 0;
	char *tok, *save = NULL;

	*out = '\0';
	if (ip_read_file("/proc/cmdline", 4096, &cl, &len, NULL) < 0)
		return;
	for (tok = strtok_r(cl, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
		if (!strncmp(tok, "console=", 8) && k + strlen(tok) + 2 < n)
			k += (size_t)snprintf(out + k, n - k, " %s", tok);
}

int bs_media_boot_disk(const char *disk, unsigned sys_part, ip_error *e)
{
	struct ip_mount m = { 0 };
	char kernel[256], path[PATH_MAX], initrd[PATH_MAX], cmdline[1024], consoles[512];
	const char *uuid = NULL;
	_cleanup_close_ int kfd = -1, ifd = -1;
	uint64_t off, size;
	blkid_probe pr;
	int r;

	if ((r = partctl_part_range(disk, sys_part, &off, &size, e)) < 0)
		return r;
	if ((r = ip_mkdir_p(NEWROOT_MNT, 0700, e)) < 0 ||
	    (r = ip_mount_part(disk, sys_part, off, size, "ext4", IP_MOUNT_RDONLY, NEWROOT_MNT, &m, e)) < 0)
		return r;
	if ((r = bs_bootable_tree(NEWROOT_MNT, false, kernel, sizeof(kernel), e)) < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/boot/%s", NEWROOT_MNT, kernel);
	snprintf(initrd, sizeof(initrd), "%s/boot/initrd.img-%s", NEWROOT_MNT, kernel + strlen("vmlinuz-"));
	kfd = open(path, O_RDONLY | O_CLOEXEC);
	ifd = open(initrd, O_RDONLY | O_CLOEXEC);
	if (kfd < 0 || ifd < 0) {
		r = ip_fail(e, -errno, "cannot open %s: %s", kfd < 0 ? path : initrd, strerror(errno));
		goto out;
	}
	if ((pr = blkid_new_probe_from_filename(m.dev))) {
		if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, "UUID", &uuid, NULL) == 0)
			snprintf(path, sizeof(path), "%s", uuid);
		else
			uuid = NULL;
		blkid_free_probe(pr);
	}
	if (!uuid) {
		r = ip_fail(e, -EINVAL, "the system on %s partition %u has no filesystem UUID to boot it by", disk,
			    sys_part);
		goto out;
	}
	this_boot_consoles(consoles, sizeof(consoles));
	snprintf(cmdline, sizeof(cmdline), "root=UUID=%s ro%s", path, consoles);
	if (syscall(SYS_kexec_file_load, kfd, ifd, strlen(cmdline) + 1, cmdline, 0UL) < 0) {
		r = ip_fail(e, -errno, "cannot load the kernel %s of %s for kexec: %s", kernel, disk, strerror(errno));
		goto out;
	}
	bs_media_set_after(BS_AFTER_KEXEC);
out:
	ip_umount(&m, r < 0 ? NULL : e);
	return r;
}
