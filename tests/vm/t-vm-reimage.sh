#!/bin/bash
# t-vm-reimage — the old OS disk of the VM tests reimaged to the new OS with
# its users, then booted.  The pipeline runs from the host on the disk image
# ([boot] method = none, one `inplace resume` per boot); then, from the host:
# every home equal (content, mode, owner by name, xattrs, ACLs), password
# hashes, group, hostname, machine-id and SSH host keys kept, dave of the new
# OS kept at his UID and bob remapped, the store gone and wiped, the root
# grown back, status.log complete.  Then the result boots under QEMU: the
# new OS, no unit failed, and alice and bob log in with their old passwords.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "reimage" "no loop devices (the steps mount partitions)"; exit 0; }
vm_reimage_fixtures || exit 1
vm_mount_part "$D" 1 "$T/was" && vm_identity "$T/was" > want.id && umount "$T/was" ||
	{ fail "fixture" "read the old OS"; exit 1; }

fx_job job.ini "$T/new.img" "$D" "key = $T/new.img.pub"

ok "run: preflight, up to the first reboot" "$INPLACE" run job.ini
ok "resume: the staging boot (store, save, deploy)" "$INPLACE" resume --disk "$D"
read -r at len < <(fx_part_range "$D" 2)
# the wipe check must be able to fail: the store holds alice's hash now
salt=$(grep '^alice:' want.id | cut -d: -f2 | cut -d'$' -f1-3)
check "the store holds the saved password hashes" \
	bash -c "dd if='$D' bs=1M skip=$at count=$len iflag=skip_bytes,count_bytes status=none | grep -aqF '$salt'"
ok "resume: the new OS's first boot (restore, reclaim)" "$INPLACE" resume --disk "$D"
vm_check_reimaged "offline" "$D" want.id "$INPLACE_STATE_DIR"

VM_LOG=$T/new.log
vm_boot "$D" "$VM_LOG"
vm_check_new_os_boots "offline"
vm_kill
