#!/bin/bash
# t-vm-chain — the real thing: inside the old OS, booted under QEMU, a unit
# starts `inplace run job.ini` ([boot] method = grub) from a bundle, and
# the machine crosses its own reboots: GRUB's one-shot entry into the
# staging environment (make room, save, deploy, boot fix), the new OS's
# first boot (restore; reclaim on the running root: the store wiped and
# deleted, the mounted root grown online), done.  Then the next boot shows
# the old users logging in under the old hostname with no unit failed, and
# from the host: every home equal, password hashes, hostname, machine-id
# and host keys kept, the store gone and wiped, the root grown back and
# fsck clean, the first-boot unit and its copy of the bundle gone,
# status.log complete.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "chain" "no loop devices"; exit 0; }
vm_chain_start "chain" || exit 1
# the old OS's own login prompt came before: look only after staging
check "chain: the new OS's first boot restores and reclaims, no unit failed" \
	vm_wait "$VM_LOG" 'VM-REPORT os=new host=[^ ]* state=running failed=\[\]' 2400 "$(vm_mark "$VM_LOG")" || exit 1
vm_chain_finish "chain"
