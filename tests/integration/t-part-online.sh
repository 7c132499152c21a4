#!/bin/bash
# t-part-online.sh — a partition table changed while a partition of the
# disk is mounted, as reclaim does on the new system's running root: `part
# grow N --over M` deletes the unmounted partition after the mounted one
# and grows the mounted ext4 online (the kernel told through BLKPG, resize2fs
# on the mounted node); every other change of a mounted partition (delete,
# shrink, move) and the deletion of a mounted one stay refused.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

MiB=$((1024 * 1024))
FX_SRC=$T/src

if ! have_loop; then
	skip "online grow over a deleted partition" "no loop devices"
	exit 0
fi
require_tool resize2fs e2fsck || exit 1

# ksize LOOP N: the kernel's size of partition N in bytes ("" when none).
ksize() {
	local b; b=$(basename "$1")
	[ -e "/sys/block/$b/${b}p$2/size" ] && echo $(( $(cat "/sys/block/$b/${b}p$2/size") * 512 ))
}
# fsbytes DEV: the ext4's size in bytes, from its superblock
fsbytes() {
	dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Block count/ {c=$2} /^Block size/ {s=$2} END {printf "%.0f\n", c * s}'
}

_fx_src || { fail "fixture" "fx_tree"; exit 1; }
G=$T/disk.img
# the root, the store after it, free space after both
fx_disk "$G" 256M 'label: dos
start=1MiB, size=96MiB, type=83
size=96MiB, type=83' &&
	fx_mkfs "$G" 1 ext4 "$FX_SRC" ROOT && fx_mkfs "$G" 2 ext4 "$FX_SRC" STORE ||
	{ fail "fixture" "build the disk"; exit 1; }
attach_loop "$G" || { fail "attach" "losetup failed"; exit 1; }
L=$LOOP
check "the kernel has both partitions" test "$(ksize "$L" 2)" = $((96 * MiB))

mkdir -p "$T/root" "$T/store"
mount "${L}p1" "$T/root" && track_mount "$T/root" || { fail "mount" "mount the root"; exit 1; }
# written through the mounted filesystem, not yet on the disk
head -c 3MiB /dev/urandom > "$T/root/written-while-mounted"
before=$(fx_hash_tree "$T/root")

# ---- refused while the partition is mounted ------------------------------------
must_fail 2 "delete of the mounted partition refused" "$INPLACE" part delete "$L" 1
must_fail 2 "shrink of the mounted partition refused" "$INPLACE" part shrink "$L" 1 --to 64MiB
must_fail 2 "move of a partition on the busy disk refused" "$INPLACE" part move "$L" 2 --to 120MiB
must_fail 2 "grow over a partition before it refused" "$INPLACE" part grow "$L" 2 --over 1
mount "${L}p2" "$T/store" && track_mount "$T/store" || { fail "mount" "mount the store"; exit 1; }
must_fail 2 "grow over a mounted partition refused" "$INPLACE" part grow "$L" 1 --over 2
umount "$T/store"
check "the refusals left both partitions" test "$(ksize "$L" 1)" = $((96 * MiB)) -a "$(ksize "$L" 2)" = $((96 * MiB))
check "and the table" test "$(sfdisk -d "$G" | grep -c '^/')" = 2

# ---- the store deleted, the mounted root grown online ----------------------------
ok "dry run: the grow is allowed" "$INPLACE" part grow "$L" 1 --over 2 --dry-run
check "the dry run wrote nothing" test "$(ksize "$L" 2)" = $((96 * MiB))
# the kernel's online resize wants CAP_SYS_RESOURCE (a container may drop it):
# then the table and the kernel's view change, the filesystem grows offline
cap_resource() { (( 0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24 & 1 )); }
if cap_resource; then
	ok "grow the mounted root over the store" "$INPLACE" part grow "$L" 1 --over 2
else
	must_fail 1 "grow the mounted root over the store: the table, not the fs (no CAP_SYS_RESOURCE)" \
		"$INPLACE" part grow "$L" 1 --over 2
fi
want=$((255 * MiB))
check "the kernel dropped the store" test -z "$(ksize "$L" 2)"
check "the kernel sees the root grown to the disk's end" test "$(ksize "$L" 1)" = "$want"
check "the table has one partition" test "$(sfdisk -d "$G" | grep -c '^/')" = 1
if cap_resource; then
	check "the mounted filesystem is grown" test "$(df -B1 --output=size "$T/root" | tail -1)" -gt $((200 * MiB))
	ok "grow again: nothing to do" "$INPLACE" part grow "$L" 1
else
	skip "the mounted filesystem grown online" "no CAP_SYS_RESOURCE here: resize2fs cannot grow a mounted ext4"
fi
check "the root is still mounted read-write" grep -q " $T/root ext4 rw" /proc/mounts
check "its files are equal while mounted" test "$(fx_hash_tree "$T/root")" = "$before"
must_fail 2 "delete of the mounted partition still refused" "$INPLACE" part delete "$L" 1
must_fail 2 "shrink of the mounted partition still refused" "$INPLACE" part shrink "$L" 1 --to 64MiB
umount "$T/root"
# an online grow cut short (or refused) is finished offline by the same verb
cap_resource || ok "the filesystem grown after umount" "$INPLACE" part grow "$L" 1
ok "fsck -n after umount: clean" e2fsck -fn "${L}p1"
check "the filesystem fills the partition" test "$(fsbytes "${L}p1")" = "$want"
check "its files are equal after umount" test "$(fx_hashes "$G" 1 | grep -v written-while-mounted)" = "$(fx_hash_tree "$FX_SRC")"
mount -o ro "${L}p1" "$T/root" && check "the file written while mounted is there" \
	test "$(fx_hash_tree "$T/root")" = "$before"
umount "$T/root" 2>/dev/null
