/* bootfix.c — after a deploy, the new system boots on this disk by design:
 * GRUB installed to the disk and configured from a chroot of the new root,
 * instead of trusting an old core.img to find a compatible /boot/grub by
 * partition number (DESIGN.md, "Making the new system boot"). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <linux/magic.h>

#include "bootstage/boot.h"
#include "partctl/partctl.h"

/* The chroot runs the new root's own tools with a PATH of its own: the
 * staging environment's PATH names directories the new root may lack. */
#define CHROOT_PATH "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
#define EFIVARS "/sys/firmware/efi/efivars"

/* ---- is the tree bootable ---------------------------------------------- */

/* The newest vmlinuz-* in root/boot by version order; "" when none. */
static void newest_kernel(const char *root, char *out, size_t n)
{
	char dir[4200];
	struct dirent **list = NULL;
	int k;

	*out = '\0';
	snprintf(dir, sizeof(dir), "%s/boot", root);
	k = scandir(dir, &list, NULL, versionsort);
	for (int i = 0; i < k; i++) {
		if (!strncmp(list[i]->d_name, "vmlinuz-", 8))
			snprintf(out, n, "%s", list[i]->d_name);
		free(list[i]);
	}
	free(list);
}

static bool in_tree(const char *root, const char *path)
{
	char p[4200];

	snprintf(p, sizeof(p), "%s%s", root, path);
	return access(p, F_OK) == 0;
}

/* What a tree needs to boot: for each need, the paths any of which will do
 * ('*' at the end: a name with that prefix) and the Debian package that
 * brings it.  One table for the deployed tree and for the image at
 * preflight (bs_boot_paths). */
static const struct need {
	const char *const paths[3];
	const char *what, *bios_pkg, *uefi_pkg;
	int firmware;                /* 0: both, 1: BIOS only, 2: UEFI only */
} needs[] = {
	{ { "/boot/vmlinuz-*", NULL }, "no kernel in /boot (no vmlinuz-*)", "linux-image-amd64", "linux-image-amd64", 0 },
	{ { "/usr/sbin/grub-install", "/sbin/grub-install", NULL }, "no grub-install", "grub-pc", "grub-efi-amd64", 0 },
	{ { "/usr/sbin/grub-mkconfig", "/sbin/grub-mkconfig", NULL }, "no grub-mkconfig", "grub2-common",
	  "grub2-common", 0 },
	{ { "/usr/lib/grub/i386-pc", NULL }, "no GRUB for BIOS (/usr/lib/grub/i386-pc)", "grub-pc-bin", NULL, 1 },
	{ { "/usr/lib/grub/x86_64-efi", NULL }, "no GRUB for UEFI (/usr/lib/grub/x86_64-efi)", NULL,
	  "grub-efi-amd64-bin", 2 },
};

const char *const *bs_boot_paths(void)
{
	static const char *all[IP_ARRAY_SIZE(needs) * 3 + 1];

	if (!all[0]) {
		size_t k = 0;

		for (size_t i = 0; i < IP_ARRAY_SIZE(needs); i++)
			for (size_t j = 0; needs[i].paths[j]; j++)
				all[k++] = needs[i].paths[j];
	}
	return all;
}

int bs_bootable(bool uefi, const bool *found, ip_error *e)
{
	size_t k = 0;

	for (size_t i = 0; i < IP_ARRAY_SIZE(needs); i++) {
		const struct need *nd = &needs[i];
		bool any = false;

		for (size_t j = 0; nd->paths[j]; j++, k++)
			any |= found[k];
		if (any || (nd->firmware == 1 && uefi) || (nd->firmware == 2 && !uefi))
			continue;
		return ip_bad(e, -ENOENT, "the image cannot boot: %s: install it in the image (Debian: %s) or choose "
			      "an image that has it", nd->what, uefi ? nd->uefi_pkg : nd->bios_pkg);
	}
	return 0;
}

int bs_bootable_tree(const char *root, bool uefi, char *kernel, size_t n, ip_error *e)
{
	const char *const *paths = bs_boot_paths();
	bool found[IP_ARRAY_SIZE(needs) * 3];
	char k[256];
	int r;

	newest_kernel(root, k, sizeof(k));
	for (size_t i = 0; paths[i]; i++)
		found[i] = strchr(paths[i], '*') ? *k != '\0' : in_tree(root, paths[i]);
	r = bs_bootable(uefi, found, e);
	if (r == 0 && kernel)
		snprintf(kernel, n, "%s", k);
	return r;
}

/* ---- the mounts around the chroot ------------------------------------ */

/* Everything the fix mounted, undone in reverse order on every path. */
struct fixmounts {
	char loop[64];               /* the image file's loop device, "" on a block device */
	struct ip_mount root;        /* the new root */
	char dirs[8][4200];          /* binds and the ESP, in mount order */
	unsigned n;
};

static int bind_into(struct fixmounts *fm, const char *root, const char *what, ip_error *e)
{
	char *dir = fm->dirs[fm->n];
	int r;

	snprintf(dir, sizeof(fm->dirs[0]), "%s%s", root, what);
	r = ip_mkdir_p(dir, 0755, e);
	if (r < 0)
		return r;
	if (mount(what, dir, NULL, MS_BIND, NULL) < 0)
		return ip_fail(e, -errno, "cannot bind %s into the new root: %s", what, strerror(errno));
	fm->n++;
	/* a slave: an unmount here never travels back to the host's own
	 * mount of what (shared propagation would carry it) */
	mount(NULL, dir, NULL, MS_SLAVE, NULL);
	return 0;
}

static int fixmounts_undo(struct fixmounts *fm, ip_error *e)
{
	int r = 0;

	while (fm->n > 0) {
		const char *dir = fm->dirs[--fm->n];

		if (umount2(dir, 0) < 0 && umount2(dir, MNT_DETACH) < 0 && r == 0)
			r = ip_fail(e, -errno, "cannot unmount %s: %s", dir, strerror(errno));
	}
	if (ip_umount(&fm->root, r < 0 ? NULL : e) < 0 && r == 0)
		r = -EBUSY;
	if (*fm->loop) {
		ip_loop_detach(fm->loop, NULL);
		*fm->loop = '\0';
	}
	return r;
}

/* The disk's EFI system partition: its number, 0 when there is none. */
static unsigned find_esp(const char *disk, uint64_t *off, uint64_t *size)
{
	partctl_table *t = NULL;
	unsigned n = 0;

	if (partctl_table_open(disk, false, &t, NULL) < 0)
		return 0;
	for (size_t i = 0; !n && i < partctl_table_count(t); i++) {
		const struct partctl_part *pp = partctl_table_at(t, i);

		if (!strcmp(pp->type, "efi")) {
			n = pp->n;
			*off = pp->start;
			*size = pp->size;
		}
	}
	partctl_table_free(t);
	return n;
}

bool bs_disk_has_esp(const char *disk)
{
	uint64_t off, size;

	return find_esp(disk, &off, &size) != 0;
}

/* ---- running the new root's tools ----------------------------------- */

/* argv (NULL-terminated, at most 12) in a chroot of root, stdin from
 * stdin_path (NULL: /dev/null); a failure names the tool's last line. */
static int chroot_run(const char *root, const char *const *argv, const char *stdin_path, ip_error *e)
{
	const char *full[20] = { "chroot", root, "/usr/bin/env", CHROOT_PATH };
	size_t k = 4;
	ip_proc p = { .argv = full, .stdin_path = stdin_path };
	char how[64], line[600] = "";
	int r;

	for (; *argv && k < IP_ARRAY_SIZE(full) - 1; argv++)
		full[k++] = *argv;
	full[k] = NULL;
	r = ip_proc_run(&p, e);
	if (r == 0 && p.exit_code != 0) {
		const char *t = p.err && *p.err ? p.err : p.out ? p.out : "";
		size_t len = strlen(t);

		while (len && t[len - 1] == '\n')
			len--;
		for (size_t i = len; i > 0; i--)
			if (t[i - 1] == '\n') {
				t += i;
				len -= i;
				break;
			}
		snprintf(line, sizeof(line), "%.*s", (int)len, t);
		r = ip_fail(e, -EIO, "%s in the new root %s%s%s", full[4], ip_proc_describe(&p, how, sizeof(how)),
			    *line ? ": " : "", line);
	}
	ip_proc_clear(&p);
	return r;
}

/* The disk's name that survives a reboot and a controller's other order:
 * the first /dev/disk/by-id link to it; the node itself when none. */
static void stable_name(const char *dev, char *out, size_t n)
{
	static const char byid[] = "/dev/disk/by-id";
	struct stat want, st;
	struct dirent *de;
	DIR *d;

	snprintf(out, n, "%s", dev);
	if (stat(dev, &want) < 0 || !(d = opendir(byid)))
		return;
	while ((de = readdir(d))) {
		char p[600];

		if (de->d_name[0] == '.' || !strncmp(de->d_name, "wwn-", 4))
			continue;
		snprintf(p, sizeof(p), "%s/%s", byid, de->d_name);
		if (stat(p, &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == want.st_rdev) {
			snprintf(out, n, "%s", p);
			break;
		}
	}
	closedir(d);
}

/* debconf's grub-pc/install_devices: the package's own upgrades install
 * GRUB where this run did, not on a device name it guesses. */
static int set_install_devices(const char *root, const char *dev, ip_error *e)
{
	static const char *const argv[] = { "debconf-set-selections", NULL };
	char path[4200], text[512];
	int r;

	if (!in_tree(root, "/usr/bin/debconf-set-selections") || !in_tree(root, "/var/lib/dpkg/info/grub-pc.list"))
		return 0;
	snprintf(path, sizeof(path), "%s/tmp/.inplace-debconf", root);
	snprintf(text, sizeof(text), "grub-pc grub-pc/install_devices multiselect %s\n"
		 "grub-pc grub-pc/install_devices_empty boolean false\n", dev);
	r = ip_write_file_atomic(path, text, strlen(text), 0600, e);
	if (r < 0)
		return r;
	r = chroot_run(root, argv, path, e);
	unlink(path);
	return r;
}

/* grub.cfg of the new root: every root=<node> of the device grub-mkconfig
 * saw in the chroot (no udev there, so no /dev/disk/by-uuid link, so it
 * names the node) becomes root=UUID=; then the file must name the UUID. */
static int root_by_uuid(const char *root, const char *node, const char *uuid, ip_error *e)
{
	_cleanup_free_ char *old = NULL, *nw = NULL;
	char path[4200], from[128], to[128];
	size_t len = 0, fl, tl, k = 0;
	unsigned hits = 0;
	int r;

	snprintf(path, sizeof(path), "%s/boot/grub/grub.cfg", root);
	r = ip_read_file(path, 8u << 20, &old, &len, e);
	if (r < 0)
		return r;
	fl = (size_t)snprintf(from, sizeof(from), "root=%s", node);
	tl = (size_t)snprintf(to, sizeof(to), "root=UUID=%s", uuid);
	for (const char *p = old; (p = strstr(p, from)); p += fl)
		hits++;
	if (!(nw = malloc(len + hits * tl + 1)))
		return ip_fail(e, -ENOMEM, "out of memory");
	for (const char *p = old; *p;) {
		/* the node exactly: root=/dev/sda1 is no prefix of root=/dev/sda10 */
		if (!strncmp(p, from, fl) && (p[fl] == ' ' || p[fl] == '\t' || p[fl] == '\n' || !p[fl])) {
			memcpy(nw + k, to, tl);
			k += tl;
			p += fl;
		} else {
			nw[k++] = *p++;
		}
	}
	nw[k] = '\0';
	if (!strstr(nw, to))
		return ip_fail(e, -EIO, "update-grub wrote a grub.cfg that does not name the root by UUID=%s: check "
			       "GRUB_DISABLE_LINUX_UUID and the scripts in /etc/grub.d of the image", uuid);
	return k == len && !memcmp(nw, old, len) ? 0 : ip_write_file_atomic(path, nw, k, 0600, e);
}

/* ---- the fix -------------------------------------------------------- */

/* The firmware's boot entries are this machine's to write only when the
 * disk is its own (a block device: an image file will boot elsewhere) and
 * the machine booted through UEFI.  efibootmgr needs efivarfs mounted: the
 * staging environment mounts sysfs alone, so it is mounted here then. */
static bool efivars_ready(bool own_disk)
{
	struct statfs sf;

	if (!own_disk || access(EFIVARS, F_OK) < 0)
		return false;
	if (statfs(EFIVARS, &sf) == 0 && sf.f_type == EFIVARFS_MAGIC)
		return true;
	return mount("efivarfs", EFIVARS, "efivarfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
}

static int install_grub(const char *root, const char *dev, unsigned esp, struct bs_bootfix_result *res,
			ip_error *e)
{
	if (!esp) {
		const char *const argv[] = { "grub-install", "--target=i386-pc", dev, NULL };

		return chroot_run(root, argv, NULL, e);
	}
	/* the firmware's entry needs efivars (and efibootmgr in the new
	 * root); the removable path EFI/BOOT/BOOTX64.EFI boots without it,
	 * firmware whose NVRAM is reset included */
	res->nvram = res->nvram && in_tree(root, "/usr/bin/efibootmgr");
	{
		const char *const argv[] = { "grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
					     "--bootloader-id=debian", res->nvram ? "--recheck" : "--no-nvram", NULL };
		const char *const removable[] = { "grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
						  "--removable", "--no-nvram", NULL };
		int r = chroot_run(root, argv, NULL, e);

		return r < 0 ? r : chroot_run(root, removable, NULL, e);
	}
}

/* The new root's fstab mounts this disk's ESP at /boot/efi, by its UUID:
 * the image's line names the ESP of the machine it was captured on, and a
 * mount that fails at boot stops the boot in emergency mode. */
static int esp_fstab(const char *root, const char *disk, uint64_t off, uint64_t size, ip_error *e)
{
	_cleanup_free_ char *old = NULL, *buf = NULL;
	struct partctl_fsinfo fi;
	char path[4200], *line, *save = NULL;
	ip_disk *d = NULL;
	size_t len = 0, k = 0, cap;
	int r;

	r = ip_disk_open(disk, IP_DISK_RDONLY, &d, e);
	if (r == 0)
		r = partctl_fs_probe(d, off, size, &fi, e);
	ip_disk_free(d);
	if (r < 0)
		return r;
	if (!*fi.uuid)
		return ip_fail(e, -EIO, "the EFI system partition of %s has no filesystem UUID: format it (mkfs.vfat)",
			       disk);
	snprintf(path, sizeof(path), "%s/etc/fstab", root);
	r = ip_read_file(path, 1 << 20, &old, &len, NULL);
	if (r < 0 && r != -ENOENT)
		return ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
	cap = len + strlen(fi.uuid) + 64;
	if (!(buf = malloc(cap)))
		return ip_fail(e, -ENOMEM, "out of memory");
	for (line = old ? strtok_r(old, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		char spec[512], mnt[512];

		if (sscanf(line, "%511s %511s", spec, mnt) == 2 && spec[0] != '#' && !strcmp(mnt, "/boot/efi"))
			continue;
		k += (size_t)snprintf(buf + k, cap - k, "%s\n", line);
	}
	snprintf(buf + k, cap - k, "UUID=%s /boot/efi vfat umask=0077 0 1\n", fi.uuid);
	return ip_write_file_atomic(path, buf, strlen(buf), 0644, e);
}

int bs_bootfix(const char *newroot, const char *disk, unsigned part, const char *fstype, const char *uuid,
	       struct bs_bootfix_result *res, ip_error *e)
{
	static const char *const update[] = { "update-grub", NULL };
	struct fixmounts fm = { 0 };
	uint64_t off, size, eoff = 0, esize = 0;
	const char *dev = disk;
	unsigned esp;
	struct stat st;
	int r;

	memset(res, 0, sizeof(*res));
	snprintf(res->root_uuid, sizeof(res->root_uuid), "%s", uuid);
	if (stat(disk, &st) < 0)
		return ip_fail(e, -errno, "cannot open %s: %s", disk, strerror(errno));
	r = partctl_part_range(disk, part, &off, &size, e);
	if (r < 0)
		return r;
	esp = find_esp(disk, &eoff, &esize);
	res->uefi = esp != 0;
	if (!S_ISBLK(st.st_mode)) {
		/* grub-install wants a disk with partition nodes, as the
		 * machine will have: the image through a loop device and the
		 * kernel told its partitions */
		char loop[64];

		/* fm.loop only once it is ours: a failed attach may leave the
		 * name of another user's device in the buffer */
		r = ip_loop_attach(disk, 0, 0, false, loop, sizeof(loop), e);
		if (r == 0) {
			snprintf(fm.loop, sizeof(fm.loop), "%s", loop);
			r = ip_kernel_sync_partitions(fm.loop, e);
		}
		if (r < 0)
			goto out;
		dev = fm.loop;
	}
	r = ip_mount_part(dev, part, off, size, fstype, 0, newroot, &fm.root, e);
	if (r < 0)
		goto out;
	r = bs_bootable_tree(newroot, res->uefi, res->kernel, sizeof(res->kernel), e);
	if (r == 0)
		r = bind_into(&fm, newroot, "/dev", e);
	if (r == 0)
		r = bind_into(&fm, newroot, "/proc", e);
	if (r == 0)
		r = bind_into(&fm, newroot, "/sys", e);
	res->nvram = res->uefi && efivars_ready(S_ISBLK(st.st_mode));
	if (r == 0 && res->nvram)
		r = bind_into(&fm, newroot, EFIVARS, e);
	if (r == 0 && res->uefi) {
		char dir[4200];
		struct ip_mount em;

		snprintf(dir, sizeof(dir), "%s/boot/efi", newroot);
		r = ip_mount_part(dev, esp, eoff, esize, "vfat", 0, dir, &em, e);
		if (r == 0)
			snprintf(fm.dirs[fm.n++], sizeof(fm.dirs[0]), "%s", dir);
	}
	if (r < 0)
		goto out;
	stable_name(dev, res->install_device, sizeof(res->install_device));
	r = install_grub(newroot, dev, esp, res, e);
	if (r == 0)
		r = chroot_run(newroot, update, NULL, e);
	if (r == 0)
		r = root_by_uuid(newroot, fm.root.dev, uuid, e);
	if (r == 0 && esp)
		r = esp_fstab(newroot, disk, eoff, esize, e);
	/* a loop device's name means nothing to the machine that boots the
	 * image: debconf keeps its own guess then */
	if (r == 0 && !esp && S_ISBLK(st.st_mode))
		r = set_install_devices(newroot, res->install_device, e);
out:
	{
		int r2 = fixmounts_undo(&fm, r < 0 ? NULL : e);

		return r < 0 ? r : r2;
	}
}

int bs_step_bootfix(const struct bs_params *p, const char *newroot, const char *fstype, const char *uuid,
		    json_object *res, ip_error *e)
{
	struct bs_bootfix_result br;
	ip_error why = { 0 };
	json_object *o;
	int r;

	r = bs_bootfix(newroot, p->disk, p->sys_part, fstype, uuid, &br, &why);
	if (r < 0 && !p->boot_required && why.status == IP_EXIT_BADINPUT) {
		/* method none: a tree without kernel or GRUB (a test image) is
		 * deployed as it is; the reason stays in the result */
		json_object_object_add(res, "bootfix", json_object_new_string(why.msg));
		return 0;
	}
	if (r < 0) {
		if (e)
			*e = why;
		return r;
	}
	if (!(o = json_object_new_object()))
		return ip_fail(e, -ENOMEM, "out of memory");
	json_object_object_add(o, "firmware", json_object_new_string(br.uefi ? "uefi" : "bios"));
	json_object_object_add(o, "install_device", json_object_new_string(br.install_device));
	json_object_object_add(o, "nvram", json_object_new_boolean(br.nvram));
	json_object_object_add(o, "kernel", json_object_new_string(br.kernel));
	json_object_object_add(o, "root_uuid", json_object_new_string(br.root_uuid));
	json_object_object_add(res, "bootfix", o);
	return 0;
}
