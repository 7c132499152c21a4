#!/bin/bash
# t-vm-media (long) — the reimage from boot media, BIOS: `inplace media
# build` on the host (job checked, image verified and put on the ISO); the
# old OS disk and the media attached, the media first in the boot order,
# and nothing of inplace in the old OS.  SeaBIOS boots the media's GRUB,
# the staging kernel finds the disk by /dev/disk/by-id/virtio-…, runs the
# old OS's part (preflight, state, records area), makes room, saves the
# users, deploys, fixes the boot and starts the new OS by kexec; its first
# boot restores the users.  Then, from the host: every home, password
# hash, group, hostname, machine-id and host key kept, the new OS on the
# root.  Then the media booted again on that disk: staging sees its work
# done and boots on into the disk (never a second reimage, never a loop).
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "media" "no loop devices"; exit 0; }
require_tool xorriso grub-mkrescue mformat || exit 1
vm_reimage_fixtures || exit 1
K=$(vm_media_kernel) || { fail "fixture" "no kernel in the Debian tree"; exit 1; }
vm_mount_part "$D" 1 "$T/was" && vm_identity "$T/was" > want.id && umount "$T/was" ||
	{ fail "fixture" "read the old OS"; exit 1; }

vm_media_job job.ini /dev/disk/by-id/virtio-inplace-vm-disk
ok "media build" "$INPLACE" media build job.ini -o usb.img --kernel "$K" || exit 1

VM_LOG=$T/media.log
VM_FAIL='Kernel panic|inplace staging: powering off'
VM_REBOOT=yes vm_boot_media "$D" usb.img "$VM_LOG"
check "BIOS: the media's GRUB boots the staging kernel" vm_wait "$VM_LOG" 'Command line:.* inplace\.media' 900 || exit 1
check "staging finds the disk by its id and passes preflight" \
	vm_wait "$VM_LOG" 'inplace staging: preflight passed on /dev/vda' 900 || exit 1
check "staging makes room, saves, deploys and starts the new OS (kexec)" \
	vm_wait "$VM_LOG" 'inplace staging: starting the system on the disk \(kexec\)' 2400 || exit 1
from=$(vm_mark "$VM_LOG")
VM_FAIL='Kernel panic'
check "the new OS's first boot (restore) ends running" \
	vm_wait "$VM_LOG" 'VM-REPORT os=new host=[^ ]* state=' 1200 "$from"
vm_kill

vm_mount_part "$D" 1 "$T/now" || { fail "mount the new root"; exit 1; }
vm_identity "$T/now" > got.id
check "homes, password hashes, group, hostname, machine-id, host keys kept" diff want.id got.id
check "it is the new OS" test -e "$T/now/etc/inplace-new-os"
check "the first boot restored (phase finish or done)" \
	bash -c "jq -r .phase '$T/now/var/lib/inplace/state.json' | grep -qxE 'finish|done'"
umount "$T/now"

# the media left in: booted again, it boots on into the disk
VM_LOG=$T/again.log
VM_FAIL='Kernel panic|inplace staging: powering off|inplace staging: preflight passed'
VM_REBOOT=yes vm_boot_media "$D" usb.img "$VM_LOG"
check "media again: staging sees its work done and boots on into the disk" \
	vm_wait "$VM_LOG" 'inplace staging: staging is done on /dev/vda: booting the system on it' 900
check "media again: the new OS boots" vm_wait "$VM_LOG" 'VM-REPORT os=new host=[^ ]* state=' 900
vm_kill
