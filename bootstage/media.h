/* media.h — `[boot] method = media` and `pxe`: a hybrid boot image (BIOS
 * and UEFI) or a netboot directory (kernel, initramfs, iPXE script,
 * pxelinux config) that starts straight in the staging environment, and
 * what that staging environment does first when no old OS ran the job:
 * find the job's disk, run the old OS's part (preflight, state, records
 * area), then the usual staging phases.  Every function returns 0 or a
 * negative errno and fills e; none prints. */
#ifndef INPLACE_BOOTSTAGE_MEDIA_H
#define INPLACE_BOOTSTAGE_MEDIA_H

#include <stdbool.h>
#include <stdint.h>

#include "bootstage/stage.h"
#include "common/common.h"

/* ==== building (the build host) ========================================== */

struct bs_media_opts {
	const char *kernel;        /* NULL: /boot/vmlinuz-$(uname -r) */
	const char *modules_dir;   /* NULL: /lib/modules/VERSION of its tree */
	const char *const *add_modules; /* more modules, NULL-terminated, may be NULL */
	const char *cmdline;       /* more kernel arguments (NULL: none); the
	                            * console default is tty0 and ttyS0 */
	unsigned disk_wait_s;      /* how long init waits for the disk (0: 60) */
};

struct bs_media_result {
	char kernel[4096];
	char version[128];
	json_object *modules;      /* the load order */
	uint64_t initrd_bytes;
	uint64_t bytes;            /* the image (media) or the directory's files (netboot) */
	char cmdline[1024];        /* the staging kernel's command line */
	bool signature_checked;
};
void bs_media_result_clear(struct bs_media_result *r);

/* The job at job_path checked as far as the build host can (parsed;
 * method media; image a local file by absolute path, verified whole with
 * its key; system_partition given; store a partition), then out: an ISO
 * 9660 image with GRUB for BIOS (El Torito and an MBR, so that it boots
 * from a CD or written raw to a USB stick) and for UEFI (an EFI system
 * partition image), grub-mkrescue's hybrid layout, whose only entry boots
 * the staging kernel with the initramfs (bundle, job, image, the usual
 * x86_64 disk and filesystem modules).  Written whole or not at all. */
int bs_media_build(const char *job_path, const char *out, const struct bs_media_opts *o, struct bs_media_result *res,
		   ip_error *e);
/* The same checks (method pxe), then into dir: vmlinuz, initrd.img,
 * boot.ipxe (an iPXE script naming both relative to itself, so TFTP or
 * HTTP serve it alike) and pxelinux.cfg/default. */
int bs_netboot_build(const char *job_path, const char *dir, const struct bs_media_opts *o,
		     struct bs_media_result *res, ip_error *e);

/* ==== in the staging environment ========================================= */

/* The job's disk by media's rules ({"disk", "system_partition",
 * "wait_s"}): a disk named /dev/disk/by-id/NAME matched by its serial or
 * WWN in sysfs (no udev here); otherwise the one disk (boot media left
 * out: an ISO 9660 whole disk) with a partition table and partition
 * system_partition, and when the job names /dev/X, that one.  Waits up
 * to wait_s for it.  Absent (-ENODEV) or ambiguous (-EEXIST): bad input
 * naming what was seen; nothing touched. */
int bs_media_find_disk(json_object *media, char *disk, size_t n, ip_error *e);

/* A media boot: mount the boot media (the ISO 9660 holding the image of
 * the recorded size, CD or stick alike) read-only and link the image and
 * its signature at the job's paths.  found: the media's device.  A
 * netboot (the image in the initramfs): nothing to do. */
int bs_media_mount_image(json_object *media, char *found, size_t n, ip_error *e);

enum bs_media_next {
	BS_MEDIA_STARTED,          /* the job ran up to prepare here: the records
	                            * area is to be made (bs_records_create) */
	BS_MEDIA_RESUME,           /* a run under way: the staging phases go on */
	BS_MEDIA_DONE,             /* staging is over on this disk: boot it */
};

/* The old OS's part on disk, in the staging env: the state of this disk's
 * run looked for where resume looks (the store first); past staging
 * (phase restore or later, or the image deployed already): BS_MEDIA_DONE.
 * A run under way: BS_MEDIA_RESUME.  None: the job at job_path runs
 * (preflight, phase prepare; nobody is logged in, so no countdown) with
 * its state in state_dir: BS_MEDIA_STARTED, with the system partition
 * and the store size the records area is made for. */
int bs_media_stage(const char *disk, const char *job_path, const char *state_dir, enum bs_media_next *next,
		   unsigned *sys_part, uint64_t *store_bytes, ip_error *e);

/* Load the kernel of the system on partition sys_part of disk (its newest
 * /boot/vmlinuz-* and initrd, root=UUID= and this boot's consoles) with
 * kexec_file_load: bs_media_after() is then BS_AFTER_KEXEC. */
int bs_media_boot_disk(const char *disk, unsigned sys_part, ip_error *e);

enum bs_media_after { BS_AFTER_REBOOT, BS_AFTER_POWEROFF, BS_AFTER_KEXEC };
/* What PID 1 does when bs_stage_init returns: reboot (the default),
 * power off (a media or netboot boot that must not loop back into
 * itself), or jump into the kernel loaded by bs_media_boot_disk. */
enum bs_media_after bs_media_after(void);
void bs_media_set_after(enum bs_media_after a);

#endif
