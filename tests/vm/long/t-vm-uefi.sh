#!/bin/bash
# t-vm-uefi — the chain of t-vm-chain on a GPT disk booted through UEFI
# (OVMF): the old OS's GRUB for EFI (installed by its own first boot, its
# firmware entry in the disk's copy of OVMF_VARS.fd) takes the one-shot
# entry into staging, whose boot fix installs the new OS's GRUB for EFI
# with a firmware entry and the removable path EFI/BOOT/BOOTX64.EFI; the
# new OS boots through its entry, and again with the NVRAM reset (the
# firmware's fallback path).  Then the host's checks, the ESP kept.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "uefi" "no loop devices"; exit 0; }
[ -r /usr/share/OVMF/OVMF_CODE.fd ] || { skip "uefi" "no OVMF firmware (Debian package ovmf)"; exit 0; }
require_tool mdir || exit 1
vm_reimage_fixtures uefi && vm_chain_prepare grub || exit 1
# shellcheck disable=SC2046 # the firmware's words
vm_chain_boot "$T/uefi.log" $(vm_uefi_args "$D.vars")
check "uefi: the old OS boots through its firmware entry, runs the job, its GRUB for EFI boots staging" \
	vm_wait "$VM_LOG" 'Command line:.* inplace\.stage' 2400 || exit 1
vm_chain_first_boot uefi || exit 1
from=$(vm_mark "$VM_LOG")
vm_login root newrootpw 'efibootmgr | sed "s/^/VM-EFI /"; exit'
check "uefi: the new OS sees the firmware entry the boot fix wrote (debian)" \
	vm_wait "$VM_LOG" 'VM-EFI Boot[0-9A-F]+\* debian' 120 "$from"
vm_chain_finish uefi
read -r s _ < <(fx_part_range "$D" 2)
check "uefi: the ESP holds the new OS's GRUB and the removable fallback" \
	bash -c "mdir -i '$D@@$s' ::/EFI/debian/grubx64.efi && mdir -i '$D@@$s' ::/EFI/BOOT/BOOTX64.EFI"

# the NVRAM reset: no entry names the disk's GRUB, the firmware takes the
# removable path
cp /usr/share/OVMF/OVMF_VARS.fd "$T/fresh.vars"
VM_LOG=$T/uefi-fresh.log
# shellcheck disable=SC2046
VM_MEM=2048 vm_boot "$D" "$VM_LOG" $(vm_uefi_args "$T/fresh.vars")
vm_check_new_os_boots "uefi, NVRAM reset" 0 1800
vm_login root newrootpw 'systemctl poweroff'
vm_exited 300 || vm_kill
