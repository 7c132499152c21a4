/* boot.h — making a system boot: the boot fix after a deploy (GRUB
 * installed and configured from a chroot of the new root), the checks that
 * a tree can boot at all, and the one-shot hooks that carry the machine
 * into the staging environment (GRUB next_entry, kexec). */
#ifndef INPLACE_BOOTSTAGE_BOOT_H
#define INPLACE_BOOTSTAGE_BOOT_H

#include "bootstage/steps.h"
#include "common/common.h"

/* ==== boot fix (bootstage/bootfix.c) ==================================== */

/* What the boot fix did, for the status log. */
struct bs_bootfix_result {
	bool uefi;                   /* an ESP on the disk: GRUB for x86_64-efi */
	bool nvram;                  /* a firmware boot entry was written (efivars) */
	char install_device[256];    /* BIOS: the disk GRUB went to, by its stable name */
	char root_uuid[64];          /* what grub.cfg and fstab name the root by */
	char kernel[256];            /* the newest /boot/vmlinuz-* found */
};

/* Whether the tree at root can boot by itself: a kernel (/boot/vmlinuz-*)
 * and GRUB (grub-install, grub-mkconfig, the modules of the firmware:
 * i386-pc, or x86_64-efi when uefi).  Bad input naming what is missing and
 * the Debian package that brings it.  kernel (may be NULL, n bytes): the
 * newest kernel's file name. */
int bs_bootable_tree(const char *root, bool uefi, char *kernel, size_t n, ip_error *e);
/* The same over a lookup done elsewhere (an image, at preflight): the
 * NULL-terminated paths to look for, and whether the tree can boot given
 * found[i] for each of them. */
const char *const *bs_boot_paths(void);
int bs_bootable(bool uefi, const bool *found, ip_error *e);
/* Whether disk has an EFI system partition (the fix installs GRUB for
 * UEFI then). */
bool bs_disk_has_esp(const char *disk);

/* After a deploy: partition part of disk (block device or image file, the
 * filesystem fstype with uuid) holds a new root; make the disk boot it by
 * design.  Mounts it at newroot (which must not be in use), binds /dev,
 * /proc and /sys into it, and from a chroot: grub-install to the disk
 * (BIOS; or, with an EFI system partition on the disk, x86_64-efi into it,
 * with the firmware entry when efivars exist and the removable path as a
 * second way), update-grub with root=UUID= where grub-mkconfig named a
 * device node (checked in the written grub.cfg), and debconf's
 * grub-pc/install_devices set to the disk's stable name.  Everything it
 * mounted is unmounted on every path.  An image file is attached to a loop
 * device with its partitions for the time of the fix. */
int bs_bootfix(const char *newroot, const char *disk, unsigned part, const char *fstype, const char *uuid,
	       struct bs_bootfix_result *res, ip_error *e);

/* The configure step's part: bs_bootfix on the deployed root, its result
 * added to res ("bootfix").  Without p->boot_required an image that
 * cannot boot by itself (a test tree) is left as it is, said in res. */
int bs_step_bootfix(const struct bs_params *p, const char *newroot, const char *fstype, const char *uuid,
		    json_object *res, ip_error *e);

/* ==== boot hooks (bootstage/boothook.c) ================================= */

/* 0 when tool is in PATH, else bad input naming the Debian package. */
int bs_need_tool(const char *tool, const char *package, ip_error *e);

/* The next boot of the system at root ("/" on the machine) starts kernel
 * with initrd and cmdline, once: both copied to root/boot/inplace/, a
 * marked menu entry (id "inplace-staging", the filesystem found by
 * search --fs-uuid) in root/boot/grub/custom.cfg, and grubenv's
 * next_entry set last (grub-editenv).  GRUB clears next_entry before it
 * boots the entry, so a staging boot that fails falls back to the default
 * entry: the old system.  Refused (bad input) when grub.cfg does not read
 * custom.cfg or honour next_entry, or /boot is where GRUB cannot write. */
int bs_grub_oneshot(const char *root, const char *kernel, const char *initrd, const char *cmdline, ip_error *e);
/* Undo bs_grub_oneshot: next_entry unset, our block of custom.cfg gone
 * (the file too when nothing else is in it), root/boot/inplace removed.
 * A no-op on a system that has none of it. */
int bs_grub_oneshot_remove(const char *root, ip_error *e);

/* kexec -l kernel --initrd --command-line (kexec-tools). */
int bs_kexec_load(const char *kernel, const char *initrd, const char *cmdline, ip_error *e);
/* kexec -e: jumps into the loaded kernel; returns only on failure. */
int bs_kexec_exec(ip_error *e);
/* Both. */
int bs_kexec(const char *kernel, const char *initrd, const char *cmdline, ip_error *e);

/* Reboot the machine (systemctl reboot; kexec: systemctl kexec, into the
 * kernel bs_kexec_load loaded; kexec -e without systemd). */
int bs_reboot(bool kexec, ip_error *e);

#endif
