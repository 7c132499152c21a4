/* boothook.c — the hooks that carry the old system into the staging
 * environment on its next boot: a GRUB one-shot entry (a menu entry in
 * /boot/grub/custom.cfg chosen once through grubenv's next_entry, as
 * grub-reboot does), or kexec (no firmware round trip). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <blkid/blkid.h>
#include <linux/magic.h>

#include "bootstage/boot.h"

#define ENTRY_ID "inplace-staging"
#define MARK_BEGIN "### BEGIN inplace staging (removed by inplace; do not edit) ###\n"
#define MARK_END "### END inplace staging ###\n"

int bs_need_tool(const char *tool, const char *package, ip_error *e)
{
	const char *path = getenv("PATH");
	_cleanup_free_ char *copy = strdup(path && *path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
	char *dir, *save = NULL;

	if (!copy)
		return ip_fail(e, -ENOMEM, "out of memory");
	for (dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char p[4200];

		snprintf(p, sizeof(p), "%s/%s", dir, tool);
		if (access(p, X_OK) == 0)
			return 0;
	}
	return ip_bad(e, -ENOENT, "%s not found: install it (Debian package %s)", tool, package);
}

/* ---- GRUB one-shot ----------------------------------------------------- */

struct bootfs {
	char uuid[64];      /* the filesystem holding /boot */
	char prefix[16];    /* "/boot", or "" when /boot is that filesystem's root */
};

/* The filesystem that holds root/boot: its UUID (libblkid on the device
 * st_dev names) and where /boot lies in it.  GRUB writes grubenv when it
 * clears next_entry: only on a filesystem it can write (not LVM, RAID,
 * btrfs), else a failing staging boot would come back for ever. */
static int boot_fs(const char *root, struct bootfs *bf, ip_error *e)
{
	char boot[4200];
	_cleanup_free_ char *node = NULL;
	const char *v = NULL;
	struct stat sb, sr;
	struct statfs sf;
	blkid_probe pr;
	int r = 0;

	memset(bf, 0, sizeof(*bf));
	snprintf(boot, sizeof(boot), "%s/boot", root);
	if (stat(boot, &sb) < 0 || stat(*root ? root : "/", &sr) < 0 || statfs(boot, &sf) < 0)
		return ip_fail(e, -errno, "cannot read %s: %s", boot, strerror(errno));
	if (sf.f_type != EXT2_SUPER_MAGIC && sf.f_type != MSDOS_SUPER_MAGIC)
		return ip_bad(e, -EOPNOTSUPP, "/boot is on a filesystem where GRUB cannot clear its one-shot entry "
			      "(only ext2/3/4 and FAT): use [boot] method = kexec or media");
	/* /boot its own filesystem: the kernel is /inplace/... there */
	snprintf(bf->prefix, sizeof(bf->prefix), "%s", sb.st_dev == sr.st_dev ? "/boot" : "");
	node = blkid_devno_to_devname(sb.st_dev);
	pr = node ? blkid_new_probe_from_filename(node) : NULL;
	if (!pr)
		return ip_fail(e, -ENODEV, "cannot find the device of %s (%u:%u) to read its filesystem UUID", boot,
			       major(sb.st_dev), minor(sb.st_dev));
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_UUID);
	if (blkid_do_safeprobe(pr) != 0 || blkid_probe_lookup_value(pr, "UUID", &v, NULL) != 0 || !v)
		r = ip_fail(e, -EIO, "cannot read the filesystem UUID of %s (%s)", boot, node);
	else
		snprintf(bf->uuid, sizeof(bf->uuid), "%s", v);
	blkid_free_probe(pr);
	return r;
}

/* custom.cfg without our block (and so what stays when it goes) */
static int custom_without_ours(const char *path, char **out, size_t *len, ip_error *e)
{
	_cleanup_free_ char *old = NULL;
	size_t n = 0;
	char *b, *end;
	int r;

	r = ip_read_file(path, 1 << 20, &old, &n, NULL);
	if (r == -ENOENT) {
		*out = strdup("");
		*len = 0;
		return *out ? 0 : ip_fail(e, -ENOMEM, "out of memory");
	}
	if (r < 0)
		return ip_fail(e, r, "cannot read %s: %s", path, strerror(-r));
	if ((b = strstr(old, MARK_BEGIN)) && (end = strstr(b, MARK_END))) {
		end += strlen(MARK_END);
		memmove(b, end, strlen(end) + 1);
		n = strlen(old);
	}
	*out = TAKE_PTR(old);
	*len = n;
	return 0;
}

static int copy_file(const char *src, const char *dst, ip_error *e)
{
	_cleanup_free_ char *data = NULL;
	struct stat a, b;
	size_t len = 0;
	int r;

	/* built in place already (the staging initramfs) */
	if (stat(src, &a) == 0 && stat(dst, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return 0;
	r = ip_read_file(src, 1u << 30, &data, &len, e);
	return r < 0 ? r : ip_write_file_atomic(dst, data, len, 0600, e);
}

static int grub_editenv(const char *env, const char *op, const char *arg, ip_error *e)
{
	const char *const argv[] = { "grub-editenv", env, op, arg, NULL };
	int r = bs_need_tool("grub-editenv", "grub-common", e);

	return r < 0 ? r : ip_spawn(argv, NULL, e);
}

int bs_grub_oneshot(const char *root, const char *kernel, const char *initrd, const char *cmdline, ip_error *e)
{
	char dir[4200], k[4300], i[4300], cfg[4200], grubcfg[4200], env[4200];
	_cleanup_free_ char *keep = NULL, *text = NULL, *main_cfg = NULL;
	struct bootfs bf;
	size_t len = 0;
	int r;

	snprintf(grubcfg, sizeof(grubcfg), "%s/boot/grub/grub.cfg", root);
	r = ip_read_file(grubcfg, 8u << 20, &main_cfg, &len, NULL);
	if (r < 0)
		return ip_bad(e, r, "this system does not boot through GRUB (%s: %s): use [boot] method = kexec or media",
			      grubcfg, strerror(-r));
	/* the one-shot needs what Debian's 00_header and 41_custom write */
	if (!strstr(main_cfg, "next_entry") || !strstr(main_cfg, "custom.cfg"))
		return ip_bad(e, -EOPNOTSUPP, "%s neither honours next_entry nor reads custom.cfg: run update-grub, "
			      "or use [boot] method = kexec", grubcfg);
	r = bs_need_tool("grub-editenv", "grub-common", e);
	if (r == 0)
		r = boot_fs(root, &bf, e);
	if (r < 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/boot/inplace", root);
	snprintf(k, sizeof(k), "%s/vmlinuz", dir);
	snprintf(i, sizeof(i), "%s/initrd.img", dir);
	snprintf(cfg, sizeof(cfg), "%s/boot/grub/custom.cfg", root);
	snprintf(env, sizeof(env), "%s/boot/grub/grubenv", root);
	/* kernel and initramfs where GRUB reads them, before the entry that
	 * names them */
	r = ip_mkdir_p(dir, 0700, e);
	if (r == 0)
		r = copy_file(kernel, k, e);
	if (r == 0)
		r = copy_file(initrd, i, e);
	if (r == 0)
		r = custom_without_ours(cfg, &keep, &len, e);
	if (r < 0)
		return r;
	if (asprintf(&text,
		     "%s%s" MARK_BEGIN
		     "menuentry 'inplace staging (reimaging this machine)' --id " ENTRY_ID " {\n"
		     "\tinsmod part_msdos\n\tinsmod part_gpt\n\tinsmod ext2\n\tinsmod fat\n"
		     "\tsearch --no-floppy --fs-uuid --set=root %s\n"
		     "\tlinux %s/inplace/vmlinuz %s\n"
		     "\tinitrd %s/inplace/initrd.img\n"
		     "}\n" MARK_END,
		     keep, len && keep[len - 1] != '\n' ? "\n" : "", bf.uuid, bf.prefix, cmdline ? cmdline : "",
		     bf.prefix) < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	r = ip_write_file_atomic(cfg, text, strlen(text), 0644, e);
	/* last: GRUB clears next_entry (save_env) before it boots the entry,
	 * so a staging boot that fails comes back to the default entry, the
	 * old system */
	if (r == 0)
		r = grub_editenv(env, "set", "next_entry=" ENTRY_ID, e);
	if (r == 0)
		r = ip_fsync_parent(env, e);
	return r;
}

int bs_grub_oneshot_remove(const char *root, ip_error *e)
{
	char dir[4200], cfg[4200], env[4200];
	_cleanup_free_ char *keep = NULL;
	size_t len = 0;
	int r;

	snprintf(dir, sizeof(dir), "%s/boot/inplace", root);
	snprintf(cfg, sizeof(cfg), "%s/boot/grub/custom.cfg", root);
	snprintf(env, sizeof(env), "%s/boot/grub/grubenv", root);
	/* next_entry first: an entry chosen with nothing left to boot would
	 * be a boot that fails */
	if (access(env, F_OK) == 0) {
		r = grub_editenv(env, "unset", "next_entry", e);
		if (r < 0)
			return r;
	}
	r = custom_without_ours(cfg, &keep, &len, e);
	if (r < 0)
		return r;
	if (len == 0 && unlink(cfg) < 0 && errno != ENOENT)
		return ip_fail(e, -errno, "cannot remove %s: %s", cfg, strerror(errno));
	if (len > 0 && (r = ip_write_file_atomic(cfg, keep, len, 0644, e)) < 0)
		return r;
	{
		const char *const rm[] = { "rm", "-rf", "--one-file-system", dir, NULL };

		r = ip_spawn(rm, NULL, e);
	}
	return r < 0 ? r : ip_fsync_parent(cfg, e);
}

/* ---- kexec ------------------------------------------------------------- */

int bs_kexec_load(const char *kernel, const char *initrd, const char *cmdline, ip_error *e)
{
	_cleanup_free_ char *ird = NULL, *cl = NULL;
	int r = bs_need_tool("kexec", "kexec-tools", e);

	if (r < 0)
		return r;
	if (asprintf(&ird, "--initrd=%s", initrd) < 0 || asprintf(&cl, "--command-line=%s", cmdline ? cmdline : "") < 0)
		return ip_fail(e, -ENOMEM, "out of memory");
	{
		const char *const argv[] = { "kexec", "-l", kernel, ird, cl, NULL };

		return ip_spawn(argv, NULL, e);
	}
}

int bs_kexec_exec(ip_error *e)
{
	static const char *const argv[] = { "kexec", "-e", NULL };
	int r = bs_need_tool("kexec", "kexec-tools", e);

	/* returns only when the jump failed */
	return r < 0 ? r : ip_spawn(argv, NULL, e);
}

int bs_kexec(const char *kernel, const char *initrd, const char *cmdline, ip_error *e)
{
	int r = bs_kexec_load(kernel, initrd, cmdline, e);

	return r < 0 ? r : bs_kexec_exec(e);
}

/* ---- the reboot -------------------------------------------------------- */

int bs_reboot(bool kexec, ip_error *e)
{
	/* systemd stops the services and unmounts first; "kexec" then jumps
	 * into the loaded kernel instead of the firmware */
	const char *const argv[] = { "systemctl", kexec ? "kexec" : "reboot", NULL };

	if (bs_need_tool("systemctl", "systemd", NULL) == 0)
		return ip_spawn(argv, NULL, e);
	if (kexec)
		return bs_kexec_exec(e);
	{
		static const char *const rb[] = { "reboot", NULL };

		return ip_spawn(rb, NULL, e);
	}
}
