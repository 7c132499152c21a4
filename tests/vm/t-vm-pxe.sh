#!/bin/bash
# t-vm-pxe — the network boot: `inplace netboot build` of a job whose disk
# is not in the machine, served by QEMU's user network (its built-in TFTP
# and DHCP naming boot.ipxe) to the iPXE ROM of an e1000 NIC first in the
# boot order (ipxe-qemu): iPXE runs our script, fetches the kernel and the
# initramfs by TFTP, the staging env says the job's disk is not there and
# powers off by itself; the old OS disk is unchanged byte for byte.  (The
# image is a small signed one: it travels inside the initramfs over TFTP,
# and is never used when the disk is absent.)
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "pxe" "no loop devices"; exit 0; }
require_tool qemu-system-x86_64 debootstrap minisign || exit 1
[ -r /usr/lib/ipxe/qemu/efi-e1000.rom ] || { skip "pxe" "no iPXE ROM (ipxe-qemu)"; exit 0; }
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state
vm_old_os_disk "$T/old.img" || { fail "fixture" "the old OS disk"; exit 1; }
D=$T/old.img
K=$(vm_media_kernel) || { fail "fixture" "no kernel in the Debian tree"; exit 1; }
vm_tiny_image "$T/new.img" || { fail "fixture" "a small signed image"; exit 1; }

vm_media_job nodisk.ini /dev/disk/by-id/virtio-not-in-this-machine
sed -i 's/^method = media/method = pxe/' nodisk.ini
ok "netboot build of a job whose disk is elsewhere" \
	"$INPLACE" netboot build nodisk.ini -o tftp --kernel "$K" --disk-wait 5 || exit 1
h_disk=$(sha256sum < "$D")

VM_LOG=$T/pxe.log
VM_FAIL='Kernel panic|No more network devices'
# the virtio NIC vm_boot adds loses its ROM (its iPXE took the boot and,
# its network naming no boot file, gave up); the PXE NIC is an e1000 with
# its own iPXE ROM (a virtio one with an explicit romfile got none)
# reboots allowed: a staging boot that rebooted would loop, and QEMU stay
VM_REBOOT=yes vm_boot "$D" "$VM_LOG" -global virtio-net-pci.romfile= -netdev "user,id=pxe0,tftp=$T/tftp,bootfile=boot.ipxe" \
	-device e1000,netdev=pxe0,bootindex=0,romfile=/usr/lib/ipxe/qemu/efi-e1000.rom
check "iPXE fetches our script, the kernel and the initramfs by TFTP and boots them" \
	vm_wait "$VM_LOG" 'Command line:.* inplace\.stage inplace\.pxe' 600
check "the staging env says the job's disk is not in this machine" \
	vm_wait "$VM_LOG" "inplace staging: the job's disk \(/dev/disk/by-id/virtio-not-in-this-machine, with partition 1\) is not in this machine" 300
check "and powers off by itself" vm_exited 120 || vm_kill
check "the old OS disk is unchanged" test "$(sha256sum < "$D")" = "$h_disk"
