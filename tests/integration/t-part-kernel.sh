#!/bin/bash
# t-part-kernel.sh — the kernel paths of the table verbs on a loop device
# (losetup -P, partx -u): after `part create` / `part delete` and
# `part make-storage` the kernel shows the new table (sysfs, partition
# nodes) without re-attaching; a disk with a mounted partition is refused,
# through the loop device and through the image file behind it.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

MiB=$((1024 * 1024))
FX_SRC=$T/src

if ! have_loop; then
	skip "kernel paths of part create/delete/make-storage" "no loop devices"
	exit 0
fi

# ksize LOOP N: the kernel's size of partition N in bytes ("" when none).
ksize() {
	local b; b=$(basename "$1")
	[ -e "/sys/block/$b/${b}p$2/size" ] && echo $(( $(cat "/sys/block/$b/${b}p$2/size") * 512 ))
}

# ---- GPT on a loop device ---------------------------------------------------------
G=$T/gpt.img
fx_disk_gpt_free "$G"
attach_loop "$G" || { fail "attach" "losetup failed"; exit 1; }
L=$LOOP
ok "show a loop device" "$INPLACE" part show "$L"
ok "create on the loop device" "$INPLACE" part create "$L" --start 300MiB --size 64MiB --fs ext4 --label K3
check "the kernel sees partition 3" test "$(ksize "$L" 3)" = $((64 * MiB))
check "its node holds the new ext4" test "$(blkid -p -o value -s LABEL "${L}p3")" = K3
ok "the new ext4 is clean" e2fsck -fn "${L}p3"
ok "create ntfs on the loop device" "$INPLACE" part create "$L" --start 400MiB --size 32MiB --fs ntfs --label K4
check "ntfs on partition 4" test "$(blkid -p -o value -s TYPE "${L}p4")" = ntfs
ok "delete on the loop device" "$INPLACE" part delete "$L" 3
check "the kernel dropped partition 3" test -z "$(ksize "$L" 3)"
check "partition 4 stays" test "$(ksize "$L" 4)" = $((32 * MiB))

# ---- mounted partition: refused, nothing written -----------------------------------
mkdir -p "$T/mnt"
# read-only, so that only inplace could change the image
if mount -o ro,noload "${L}p1" "$T/mnt"; then
	track_mount "$T/mnt"
	sum=$(sha256sum < "$G")
	must_fail 2 "create refused while partition 1 is mounted" "$INPLACE" part create "$L" --start 440MiB --size 8MiB
	must_fail 2 "delete refused while partition 1 is mounted" "$INPLACE" part delete "$L" 4
	must_fail 2 "make-storage refused while partition 1 is mounted" "$INPLACE" part make-storage "$L" --need 16MiB
	must_fail 2 "the image file is refused too" "$INPLACE" part create "$G" --start 440MiB --size 8MiB
	umount "$T/mnt"
	check "the refusals wrote nothing" test "$(sha256sum < "$G")" = "$sum"
	check "the kernel still has partition 4" test "$(ksize "$L" 4)" = $((32 * MiB))
else
	fail "mount partition 1" "mount failed"
fi

# ---- MBR logical partitions on a loop device -------------------------------------
M=$T/mbr.img
fx_disk_mbr_ext "$M"
attach_loop "$M" || { fail "attach mbr" "losetup failed"; exit 1; }
ok "create a logical partition on the loop device" "$INPLACE" part create "$LOOP" --type logical --start 330MiB --size 32MiB --fs ext4
check "the kernel sees logical 6" test "$(ksize "$LOOP" 6)" = $((32 * MiB))
ok "delete it" "$INPLACE" part delete "$LOOP" 6
check "the kernel dropped logical 6" test -z "$(ksize "$LOOP" 6)"
check "logical 5 stays" test "$(ksize "$LOOP" 5)" = $((96 * MiB))

# ---- make-storage through the kernel: shrink (resize2fs on the node) + create ---------
D=$T/last.img
fx_disk_gpt_full_last "$D"
h2=$(fx_hashes "$D" 2)
attach_loop "$D" || { fail "attach last" "losetup failed"; exit 1; }
if out=$("$INPLACE" part make-storage --json -q "$LOOP" --need 200MiB 2>&1); then
	n=$(jq -r .partition <<<"$out")
	read -r _ size2 < <(fx_part_range "$D" 2)
	check "make-storage: the kernel sees partition 2 shrunk" test "$(ksize "$LOOP" 2)" = "$size2"
	check "make-storage: the kernel sees the storage partition" test "$(ksize "$LOOP" "$n")" = $((200 * MiB))
	check "make-storage: storage is ext4 INPLACE-STORE" test "$(blkid -p -o value -s LABEL "${LOOP}p$n")" = INPLACE-STORE
	ok "make-storage: shrunk fs is clean" e2fsck -fn "${LOOP}p2"
	losetup -d "$LOOP"
	check "make-storage: files of partition 2 unchanged" test "$(fx_hashes "$D" 2)" = "$h2"
else
	fail "make-storage on a loop device" "$(tail -1 <<<"$out")"
fi
