#!/bin/bash
# t-vm-media — boot media under UEFI (OVMF), and a job whose disk is not
# in the machine: `inplace media build` of a job naming a disk by an id no
# drive has; the old OS disk and the media attached, the media first in
# the boot order; OVMF starts GRUB from the image's EFI system partition,
# GRUB the staging kernel; staging says on the console that the job's
# disk is not there and powers off by itself (a media boot never loops
# into itself); the old OS disk is unchanged byte for byte.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "media" "no loop devices"; exit 0; }
require_tool xorriso grub-mkrescue mformat || exit 1
require_tool qemu-system-x86_64 debootstrap minisign || exit 1
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state
vm_old_os_disk "$T/old.img" || { fail "fixture" "the old OS disk"; exit 1; }
D=$T/old.img
# never deployed (the disk is absent): a small one
vm_tiny_image "$T/new.img" || { fail "fixture" "a small signed image"; exit 1; }
K=$(vm_media_kernel) || { fail "fixture" "no kernel in the Debian tree"; exit 1; }
for f in /usr/share/OVMF/OVMF_CODE.fd /usr/share/OVMF/OVMF_VARS.fd; do
	[ -r "$f" ] || { skip "uefi" "no $f (ovmf)"; exit 0; }
done

vm_media_job nodisk.ini /dev/disk/by-id/virtio-not-in-this-machine
ok "media build of a job whose disk is elsewhere" \
	"$INPLACE" media build nodisk.ini -o nodisk.img --kernel "$K" --disk-wait 5 || exit 1
h_disk=$(sha256sum < "$D")
cp /usr/share/OVMF/OVMF_VARS.fd vars.fd

VM_LOG=$T/uefi.log
VM_FAIL='Kernel panic'
# reboots allowed: a staging boot that rebooted would loop, and QEMU stay
VM_REBOOT=yes vm_boot_media "$D" nodisk.img "$VM_LOG" \
	-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd -drive if=pflash,format=raw,file=vars.fd
check "UEFI: OVMF starts the media's GRUB, which boots the staging kernel" \
	vm_wait "$VM_LOG" 'Command line:.* inplace\.stage inplace\.media' 600
check "the staging env says the job's disk is not in this machine" \
	vm_wait "$VM_LOG" "inplace staging: the job's disk \(/dev/disk/by-id/virtio-not-in-this-machine, with partition 1\) is not in this machine" 300
check "and powers off by itself" vm_exited 120 || vm_kill
check "the old OS disk is unchanged" test "$(sha256sum < "$D")" = "$h_disk"
