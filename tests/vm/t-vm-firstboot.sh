#!/bin/bash
# t-vm-firstboot — the new OS's first boot for real, with a power cut in
# it: the pipeline's first two boots are played from the host on the old
# OS disk ([boot] method = none), then the disk boots under QEMU, where the
# first-boot unit copies the store's bundle into the new root and runs it:
# restore, then reclaim on the running root (the store wiped, its entry
# deleted and the mounted root grown online).  QEMU is killed $VM_CUT
# seconds (default 20) after the unit starts, and the next boot finishes
# the job (from the new root's copy of the bundle when the cut came after
# the wipe).  Then alice logs in, and from the host: the reimaged disk's
# checks (homes, hashes, identity, store gone and wiped, root grown, fsck
# clean, status.log), the unit and the bundle's copy gone.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "first boot" "no loop devices (the steps mount partitions)"; exit 0; }
vm_reimage_fixtures || exit 1
vm_mount_part "$D" 1 "$T/was" && vm_identity "$T/was" > want.id && umount "$T/was" ||
	{ fail "fixture" "read the old OS"; exit 1; }
fx_job job.ini "$T/new.img" "$D" "key = $T/new.img.pub"
ok "run: preflight, up to the first reboot" "$INPLACE" run job.ini || exit 1
ok "resume: the staging boot (store, save, deploy)" "$INPLACE" resume --disk "$D" || exit 1
# the unit and the run's state name the disk as the run knew it, the
# host's image file: in the VM it is /dev/vda (a run started in the
# machine itself, as in t-vm-chain, knows it so)
# vm_rw_part N DIR: partition N of $D mounted read-write at DIR, the loop
# device in $l (not echoed: the tracking must not run in a subshell)
vm_rw_part() {
	local s z
	read -r s z < <(fx_part_range "$D" "$1")
	mkdir -p "$2" && l=$(losetup -f --show -o "$s" --sizelimit "$z" "$D") && track_loop "$l" &&
		mount "$l" "$2" && track_mount "$2"
}
vm_rw_part 1 "$T/r" &&
	sed -i "s|--disk $D\$|--disk /dev/vda|" r/etc/systemd/system/inplace-firstboot.service &&
	grep -q -- '--disk /dev/vda$' r/etc/systemd/system/inplace-firstboot.service &&
	umount r && losetup -d "$l" &&
	vm_rw_part 2 "$T/st" && st=$T/st/inplace/state/state.json &&
	jq '.disk = "/dev/vda"' "$st" > "$T/state.json" && cp "$T/state.json" "$st" &&
	umount "$T/st" && losetup -d "$l" || { fail "fixture" "point the first-boot unit and the state at /dev/vda"; exit 1; }

VM_FAIL='VM-REPORT os=new .*failed=\[[^]]|Kernel panic'
VM_LOG=$T/first.log
vm_boot "$D" "$VM_LOG"
check "the new OS's first boot starts the unit" vm_wait "$VM_LOG" 'Starting .*inplace-firstboot' 900 || exit 1
sleep "${VM_CUT:-20}"
vm_kill
VM_LOG=$T/again.log
vm_boot "$D" "$VM_LOG"
check "the boot after the cut ends with no unit failed" \
	vm_wait "$VM_LOG" 'VM-REPORT os=new host=[^ ]* state=running failed=\[\]' 900 || exit 1
# no history written: her home is compared with the old one below
vm_login alice alicepw 'unset HISTFILE; echo "VM-LOGIN $(id -un) $(id -Gn | tr " " ,)"; exit'
check "alice logs in with her old password" vm_wait "$VM_LOG" 'VM-LOGIN alice alice,project' 60
vm_login root newrootpw 'systemctl poweroff'
vm_exited 120 || vm_kill
vm_check_reimaged "firstboot" "$D" want.id root
vm_mount_part "$D" 1 "$T/m" || exit 1
check "the new root's copy of the bundle is gone" \
	test ! -e "$T/m/var/lib/inplace/bundle" -a ! -e "$T/m/var/lib/inplace/bundle.new"
vm_chain_cuts_landed "$T/m/var/lib/inplace" | sed 's/^/  info /'
umount "$T/m"
