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
require_tool qemu-system-x86_64 debootstrap minisign python3 jq || exit 1
have_loop || { skip "reimage" "no loop devices (the steps mount partitions)"; exit 0; }
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state

vm_old_os_disk old.img || { fail "fixture" "the old OS disk"; exit 1; }
vm_new_os_image new.img || { fail "fixture" "the new OS image"; exit 1; }
D=$T/old.img
vm_mount_part "$D" 1 "$T/was" && vm_identity "$T/was" > want.id && umount "$T/was" ||
	{ fail "fixture" "read the old OS"; exit 1; }
alice_hash=$(grep '^alice:' want.id | cut -d: -f2)
disk_sectors=$(( $(stat -c %s "$D") / 512 ))

cat > job.ini <<EOF2
; the VM's old OS disk becomes the new OS, its users kept
[job]
image = $T/new.img
key = $T/new.img.pub
disk = $D
system_partition = 1

[boot]
method = none

[notify]
countdown = 0
EOF2

ok "run: preflight, up to the first reboot" "$INPLACE" run job.ini
ok "resume: the staging boot (store, save, deploy)" "$INPLACE" resume --disk "$D"
read -r store_at store_len < <(fx_part_range "$D" 2)
# the wipe check must be able to fail: the store holds alice's hash now
check "the store holds the saved password hashes" \
	bash -c "dd if='$D' bs=1M skip=$store_at count=$store_len iflag=skip_bytes,count_bytes status=none | grep -aqF '$alice_hash'"
ok "resume: the new OS's first boot (restore, reclaim)" "$INPLACE" resume --disk "$D"

check "the run is done" test "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" = done
check "the store partition is gone" test "$(partx -g -o NR "$D" | wc -l)" = 1
check "the store was wiped (no password hash left where it was)" \
	bash -c "! dd if='$D' bs=1M skip=$store_at count=$store_len iflag=skip_bytes,count_bytes status=none | grep -aqF '$alice_hash'"
check "the root fills the disk again" test "$(partx -g -n 1 -o SECTORS "$D" | tr -d ' ')" -ge $((disk_sectors - 2 * 2048))
ok "the new root is fsck clean" fx_fsck "$D" 1
phases=$(jq -r .phase "$INPLACE_STATE_DIR/status.log" 2>/dev/null | uniq | tr '\n' ' ')
check "status.log tells every phase in order" test "$phases" = "preflight notify prepare deploy restore finish done "
vm_mount_part "$D" 1 "$T/now" || { fail "mount the new root"; exit 1; }
vm_identity "$T/now" > got.id
check "homes, password hashes, group, hostname, machine-id, host keys kept" diff want.id got.id
check "it is the new OS" test -e "$T/now/etc/inplace-new-os"
check "the new OS's dave kept UID 1001" grep -q '^dave:x:1001:' "$T/now/etc/passwd"
check "bob remapped off dave's UID" test "$(awk -F: '$1 == "bob" { print $3 }' "$T/now/etc/passwd")" != 1001
check "the first-boot unit is gone" test ! -e "$T/now/etc/systemd/system/inplace-firstboot.service"
umount "$T/now"

VM_LOG=$T/new.log
vm_boot "$D" "$VM_LOG"
check "new OS: boots to the login prompt under the old hostname" vm_wait "$VM_LOG" '^oldhost login:' 400
check "new OS: the boot ends running, no unit failed, the old machine-id" \
	vm_wait "$VM_LOG" 'VM-REPORT os=new host=oldhost state=running failed=\[\] id=0123456789abcdef0123456789abcdef' 300
vm_login alice alicepw 'echo "VM-LOGIN $(id -un) $(id -Gn | tr " " ,) $(cat /etc/inplace-new-os)"; exit'
check "new OS: alice logs in with her old password" vm_wait "$VM_LOG" 'VM-LOGIN alice alice,project the new OS' 60
vm_login bob bobpw 'echo "VM-LOGIN $(id -un) $(id -u) $(stat -c %U ~/docs/notes.txt)"; exit'
check "new OS: bob logs in, remapped, owning his files" vm_wait "$VM_LOG" 'VM-LOGIN bob 1[0-9]{3} bob' 60
vm_login dave davepw 'echo "VM-LOGIN $(id -un) $(id -u)"; exit'
check "new OS: dave of the new OS logs in at 1001" vm_wait "$VM_LOG" 'VM-LOGIN dave 1001' 60
vm_kill
