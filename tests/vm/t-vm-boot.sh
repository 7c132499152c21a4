#!/bin/bash
# t-vm-boot — the harness: the old OS disk of the VM tests (Debian 12, MBR,
# GRUB in the MBR) boots under QEMU through its own GRUB to the login prompt
# on the serial console with no unit failed (a unit of the disk reports),
# alice logs in with her password and is in her supplementary group, and
# root's login powers the machine off.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
require_tool qemu-system-x86_64 debootstrap minisign python3 || exit 1

vm_old_os_disk old.img || { fail "fixture" "the old OS disk"; exit 1; }
VM_LOG=$T/boot.log
vm_boot old.img "$VM_LOG"
check "old OS: GRUB from the MBR boots it to the login prompt" vm_wait "$VM_LOG" '^oldhost login:' 400
check "old OS: the boot ends running, no unit failed" \
	vm_wait "$VM_LOG" 'VM-REPORT os=old host=oldhost state=running failed=\[\] id=0123456789abcdef0123456789abcdef' 300
vm_login alice alicepw 'echo "VM-LOGIN $(id -un) $(id -Gn | tr " " ,)"; exit'
check "old OS: alice logs in with her password, in group project" vm_wait "$VM_LOG" 'VM-LOGIN alice alice,project' 60
vm_login root rootpw 'systemctl poweroff'
check "old OS: root logs in and powers it off" vm_exited 120
