#!/bin/bash
# common/: the mount check sees mounts through loop devices, limited to the
# byte range asked about; the BLKPG sync shows a changed table to the kernel.
. "$(dirname "$0")/../lib.sh"
mc=$TOOLS/mountcheck

if ! have_loop; then
	skip "mount checks" "no loop devices"
	exit 0
fi
fx_disk "$T/d.img" 200M "label: gpt
size=80MiB
size=80MiB"
fx_mkfs "$T/d.img" 1 ext4
fx_mkfs "$T/d.img" 2 ext4
read -r s1 z1 < <(fx_part_range "$T/d.img" 1)
read -r s2 z2 < <(fx_part_range "$T/d.img" 2)
attach_loop "$T/d.img"
mkdir "$T/m"
mount "${LOOP}p2" "$T/m" && track_mount "$T/m"

ok "partition 1 of the image is free while partition 2 is mounted" "$mc" check "$T/d.img" "$s1" "$z1"
must_fail 3 "partition 2 of the image is in use" "$mc" check "$T/d.img" "$s2" "$z2"
must_fail 3 "the whole image is in use" "$mc" check "$T/d.img" 0 18446744073709551615
ok "partition 1 of the loop device is free" "$mc" check "$LOOP" "$s1" "$z1"
must_fail 3 "the loop device's partition 2 is in use" "$mc" check "$LOOP" "$s2" "$z2"
check "the message names the mount point" sh -c "'$mc' check '$T/d.img' $s2 $z2 | grep -q '$T/m'"

# A partition loop with an offset (as inplace attaches for resize2fs) is seen too.
umount "$T/m"
p1loop=$(losetup -f --show -o "$s1" --sizelimit "$z1" "$T/d.img") && track_loop "$p1loop"
mount "$p1loop" "$T/m"
must_fail 3 "a mount through an offset loop device is seen" "$mc" check "$T/d.img" "$s1" "$z1"
ok "...but not outside its range" "$mc" check "$T/d.img" "$s2" "$z2"
umount "$T/m"

# BLKPG: change the table behind the kernel's back, then sync.
printf 'label: gpt\nsize=80MiB\nsize=40MiB\nsize=40MiB\n' | sfdisk -q --no-reread --no-tell-kernel "$LOOP" >/dev/null 2>&1
ok "sync the kernel's view" "$mc" sync "$LOOP"
check "the kernel sees partition 3" test -b "${LOOP}p3"
check "the kernel sees partition 2 resized" test "$(cat /sys/block/$(basename "$LOOP")/$(basename "$LOOP")p2/size)" -eq $((40 * 2048))
printf 'label: gpt\nsize=80MiB\n' | sfdisk -q --no-reread --no-tell-kernel "$LOOP" >/dev/null 2>&1
ok "sync after deleting partitions" "$mc" sync "$LOOP"
check "partitions 2 and 3 are gone from the kernel" test ! -e "/sys/block/$(basename "$LOOP")/$(basename "$LOOP")p2"

# A partition written through its own node is read through the whole disk
# as written, even while the disk's node is held open with the old blocks
# in its page cache (staging holds it through the records area's loop
# device; deploy writes through the partition node).
fx_disk "$T/c.img" 64M "label: dos
size=40MiB"
fx_mkfs "$T/c.img" 1 ext4
read -r cs cz < <(fx_part_range "$T/c.img" 1)
attach_loop "$T/c.img"
exec 9< "$LOOP"
dd if="$LOOP" of=/dev/null bs=4096 skip=$((cs / 4096)) count=64 status=none
mkfs.ext4 -q -F -U 0badcafe-0000-4000-8000-00000000c0de "${LOOP}p1" >/dev/null 2>&1
check "the filesystem written through the partition node is seen through the disk" \
	sh -c "'$INPLACE' part show '$LOOP' --json | grep -q 0badcafe-0000-4000-8000-00000000c0de"
exec 9<&-
