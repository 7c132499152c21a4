#!/bin/bash
# t-vm-chain-cuts — power cuts in the new OS's phases of the chain: the old
# OS reimages itself as in t-vm-chain, then QEMU is killed $VM_CUTS seconds
# (default "4 35") after each first boot of the new OS starts its unit (the
# first lands in the unit's copy of the bundle or the restore, the second
# in the restore or the reclaim, which wipes the store: the next boot must
# run from the new root's copy of the bundle), and booted again until the
# job is done.  Then the same checks as t-vm-chain; where each cut landed
# (status.log) is printed.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "chain cuts" "no loop devices"; exit 0; }
vm_chain_start "cuts" || exit 1
k=0
for cut in ${VM_CUTS:-4 35}; do
	k=$((k + 1))
	check "cuts: boot $k of the new OS starts the first-boot unit" \
		vm_wait "$VM_LOG" 'Starting .*inplace-firstboot' 1800 "$(vm_mark "$VM_LOG")" || exit 1
	sleep "$cut"
	vm_kill
	vm_chain_boot "$T/cut$k.log"
done
check "cuts: the first boot after the cuts ends with no unit failed" \
	vm_wait "$VM_LOG" 'VM-REPORT os=new host=[^ ]* state=running failed=\[\]' 1800 || exit 1
vm_chain_finish "cuts"
