#!/bin/bash
# t-vm-cuts — power cuts in the new OS's first boot (restore, reclaim),
# across the VM's own reboots as in t-vm-chain ([boot] method grub): QEMU
# is killed a few seconds after the first-boot unit starts (restore under
# way), then again, later, on the next boot (restore again or reclaim);
# each boot after a cut runs the unit again from the bundle kept in the new
# root, and the chain ends as without cuts: the new OS's boot with no
# failed unit, every home, password hash and the identity kept, the store
# gone and wiped, the root grown back.  The cut instants are read from the
# serial console (systemd's "Starting inplace-firstboot"); a boot whose
# unit ended before the kill is a visible skip of that cut.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "vm-cuts" "no loop devices"; exit 0; }
vm_reimage_fixtures || exit 1
ok "bundle: inplace and its tools for the old OS" "$INPLACE" bundle -o "$T/bundle" || exit 1
vm_install_job "$D" "$T/r" grub || { fail "fixture" "install the job into the old root"; exit 1; }

VM_LOG=$T/chain.log
VM_FAIL='Kernel panic'
VM_MEM=2048 VM_REBOOT=yes vm_boot "$D" "$VM_LOG"
check "the old OS runs the job, GRUB's one-shot entry boots the staging kernel" \
	vm_wait "$VM_LOG" 'Command line:.* inplace\.stage' 1800 || exit 1
# first_boot_cut N DELAY: wait for the unit to start, DELAY seconds, kill
# -9, boot the same disk again
first_boot_cut() {
	local from
	from=$(vm_mark "$VM_LOG")
	if ! vm_wait "$VM_LOG" 'Starting .*inplace-firstboot' 1800 "$from"; then
		fail "cut $1: the first-boot unit never started"
		return 1
	fi
	sleep "$2"
	from=$(vm_mark "$VM_LOG")
	if tail -c +"$((from + 1))" "$VM_LOG" | tr -d '\r' | grep -aq 'Finished .*inplace-firstboot\|VM-REPORT'; then
		skip "cut $1" "the first-boot unit ended within $2 s"
	else
		check "cut $1: QEMU killed while the first-boot unit ran" true
	fi
	vm_kill
	VM_LOG=$T/after-cut-$1.log
	VM_MEM=2048 VM_REBOOT=yes vm_boot "$D" "$VM_LOG"
}
first_boot_cut 1 3 || exit 1
first_boot_cut 2 8 || exit 1
VM_FAIL='VM-REPORT os=(old|new) .*failed=\[[^]]|Kernel panic'
check "after the cuts the new OS's boot ends with no unit failed" \
	vm_wait "$VM_LOG" 'VM-REPORT os=new host=[^ ]* state=running failed=\[\]' 2400 || exit 1
vm_login root newrootpw 'systemctl poweroff'
vm_exited 120 || vm_kill
vm_check_reimaged "cuts" "$D" want.id root
