#!/bin/bash
# t-stage-cuts-status — `inplace status` after a failed staging (issue 12
# §5).  A staging boot under QEMU whose shrink cannot make the store's room
# (the old root filled after the initramfs was built) records its failure
# in the records area and reboots; on the old root, whose /var/lib/inplace
# holds the state as `run` left it and the records file, `status` (text and
# --json, exit 0) says the phase, the step and why, from the records.  Also
# a run whose image was damaged after preflight, played by `resume` on the
# host: resume fails (exit 1) and `status --disk` reads the failure from
# the store.  And an image that cannot boot (a kernel but no GRUB) is
# refused at preflight with method grub.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
have_loop || { skip "stage-cuts-status" "no loop devices (the steps mount partitions)"; exit 0; }
require_tool qemu-system-x86_64 jq || exit 1
export INPLACE_RUN_DIR=$T/run

tree=$(debian_tree "$DEBIAN_OS_PKGS") || { fail "fixture" "debian_tree"; exit 1; }
K=$(ls "$tree"/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$K" ] || { fail "fixture" "no kernel in $tree/boot"; exit 1; }

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
"$INPLACE" image build -q --from-dir new --fs ext4 --size 96MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }

# mount_root DISK DIR [ro]: partition 1 of DISK at DIR
mount_root() {
	local s z dev
	read -r s z < <(fx_part_range "$1" 1)
	dev=$(losetup -f --show ${3:+-r} -o "$s" --sizelimit "$z" "$1") && track_loop "$dev" &&
		mount ${3:+-o ro} "$dev" "$2" && track_mount "$2"
}

# ---- a staging boot that fails: the store's room cannot be made ------------------
D=$T/disk.img
fx_disk "$D" 1G $'label: dos\ntype=83'
fx_mkfs "$D" 1 ext4 old system
fx_job job.ini "$T/newos.img" "$D" "store_size = 384MiB"
export INPLACE_STATE_DIR=$T/state
ok "run stops where the staging boot comes" "$INPLACE" run job.ini || exit 1
ok "stage build" "$INPLACE" stage build -o stage.cpio --kernel "$K" || exit 1
# the old OS goes on living: its root fills up before the reboot, and its
# own /var/lib/inplace holds the state as run left it (the default state
# directory of a real machine)
mkdir m
mount_root "$D" m || { fail "fixture" "mount the old root"; exit 1; }
cp state/state.json state/status.log m/var/lib/inplace/
head -c 700M /dev/zero > m/fill
umount m
qemu-system-x86_64 -accel tcg -m 1024 -nographic -no-reboot -kernel "$K" -initrd stage.cpio \
	-append "console=ttyS0 panic=-1" -drive "file=$D,format=raw,if=virtio" \
	-serial file:stage.log -monitor none -display none </dev/null >/dev/null 2>&1 &
QEMU_PID=$!
track_pid "$QEMU_PID"
wait "$QEMU_PID"
check "the failed staging boot ends by itself (reboot)" test $? = 0
check "the staging boot said it failed" grep -aq 'resume failed' stage.log
check "no storage partition was made" test "$(partx -g -o NR "$D" | wc -l)" = 1
ok "the old root is fsck clean" fx_fsck "$D" 1

# back in the old OS
mount_root "$D" m ro || { fail "fixture" "mount the old root"; exit 1; }
ok "status --json on the old OS" sh -c "'$INPLACE' status --state-dir m/var/lib/inplace --json > st.json"
check "status: phase prepare, step make-storage, failed, and why" \
	jq -e '.phase == "prepare" and .step == "make-storage" and .ok == false and (.error | length > 0)' st.json
check "status: read from the records area, which is clean" \
	jq -e '(.records | endswith("staging-records.img")) and .records_unclean == false' st.json
check "status: the staging boot's events are there" \
	jq -e '[.events[] | select(.step == "make-storage" and .level == "error")] | length > 0' st.json
ok "status (text) on the old OS" sh -c "'$INPLACE' status --state-dir m/var/lib/inplace > st.txt"
check "status (text) says failed and the error" \
	sh -c "grep -q 'step: make-storage, failed' st.txt && grep -q '^error: ' st.txt"
umount m
check "the host's state directory (no records there) still says what run left" \
	test "$("$INPLACE" status --json | jq -r '.ok')" = true

# ---- an image damaged after preflight: the failure is in the store ---------------
D2=$T/disk2.img
fx_disk "$D2" 1G $'label: dos\ntype=83'
fx_mkfs "$D2" 1 ext4 old system
cp newos.img bad.img
fx_job job2.ini "$T/bad.img" "$D2" "store_size = 256MiB"
export INPLACE_STATE_DIR=$T/state2
ok "run (image good at preflight)" "$INPLACE" run job2.ini || exit 1
# a byte in the middle of the image's frames
printf '\xff\xff\xff\xff' | dd of=bad.img bs=1 seek=$(($(stat -c %s bad.img) / 2)) conv=notrunc status=none
must_fail 1 "resume with the damaged image fails" "$INPLACE" resume --disk "$D2"
ok "status --disk --json" sh -c "'$INPLACE' status --disk '$D2' --json > st2.json"
check "status --disk: the failed step and why" \
	jq -e '.ok == false and (.step | length > 0) and (.error | length > 0)' st2.json
check "the old root is fsck clean" fx_fsck "$D2" 1
rm -f "$D2"

# ---- an image with a kernel but no GRUB: refused at preflight (method grub) -------
mkdir -p nogrub/boot nogrub/etc && echo nogrub > nogrub/etc/hostname
cp "$K" nogrub/boot/
"$INPLACE" image build -q --from-dir nogrub --fs ext4 --size 64MiB -o nogrub.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
D3=$T/disk3.img
fx_disk "$D3" 512M $'label: dos\ntype=83'
fx_mkfs "$D3" 1 ext4 old system
sed -e "s|^image = .*|image = $T/nogrub.img|" -e "s|^disk = .*|disk = $D3|" -e 's/^method = none/method = grub/' \
	-e '/^store_size/d' job.ini > job3.ini
sha_before=$(sha256sum < "$D3")
must_fail 2 "an image without GRUB is refused at preflight (method grub)" \
	env INPLACE_STATE_DIR="$T/state3" "$INPLACE" run job3.ini
check "the refusal names GRUB" \
	sh -c "INPLACE_STATE_DIR='$T/state3' '$INPLACE' run job3.ini 2>&1 | grep -qi 'grub'"
check "the refused run wrote no state and left the disk" \
	test ! -e "$T/state3/state.json" -a "$(sha256sum < "$D3")" = "$sha_before"
