#!/bin/bash
# t-vm-kexec — the chain of t-vm-chain with [boot] method = kexec: the old
# OS, booted under QEMU, runs `inplace run job.ini` from a bundle (which
# carries kexec: the old OS has no kexec-tools), loads the staging kernel
# and jumps into it with no firmware round trip; then staging, the new OS's
# first boot, done, and the same checks from the host and in the new OS.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "kexec" "no loop devices"; exit 0; }
vm_reimage_fixtures && vm_chain_prepare kexec || exit 1
vm_chain_boot "$T/kexec.log"
# TCG at a load of 25 took 13 min for the old OS's boot alone
check "kexec: the old OS runs the job, loads the staging kernel and jumps into it" \
	vm_wait "$VM_LOG" 'Command line:.* inplace\.stage' 2400 || exit 1
# the firmware and GRUB print on the serial line at every boot through
# them: once (the old OS's boot) before staging, never between the old
# OS's shutdown and the staging kernel; a kexec'd kernel has no
# BOOT_IMAGE= (GRUB's) on its command line
tr -d '\r' < "$VM_LOG" | sed '/Command line:.* inplace\.stage/q' > upto-stage.log
check "kexec: the old kernel jumped into the staging kernel" grep -aq 'kexec_core: Starting new kernel' upto-stage.log
check "kexec: no firmware round trip (one GRUB menu, the old OS's, before staging; no machine restart)" \
	test "$(grep -ac 'GNU GRUB' upto-stage.log):$(grep -ac 'reboot: machine restart' upto-stage.log)" = 1:0
check "kexec: the staging kernel was not started by GRUB" \
	bash -c "! grep -a 'Command line:.* inplace\.stage' upto-stage.log | grep -q BOOT_IMAGE="
vm_chain_first_boot kexec || exit 1
vm_chain_finish kexec
