#!/bin/bash
# Deploying the system partition while the storage partition of the same
# disk is mounted (the pipeline's normal case) works; deploying onto the
# mounted partition itself is refused and changes nothing.
. "$(dirname "$0")/../lib.sh"

if ! have_loop; then
	skip "deploy beside a mounted partition" "no loop devices"
	exit 0
fi
fx_tree "$T/tree" 2
fx_disk "$T/d.img" 200M "label: gpt
size=80MiB
size=80MiB"
fx_mkfs "$T/d.img" 1 ext4 "$T/tree"
fx_mkfs "$T/d.img" 2 ext4
ok "capture partition 1" "$INPLACE" image capture "$T/d.img" 1 -o "$T/p1.img" -q
fx_hashes "$T/d.img" 1 > "$T/want"
read -r s1 z1 < <(fx_part_range "$T/d.img" 1)

for how in image loop; do
	# wipe partition 1's filesystem so the deploy has something to do
	dd if=/dev/zero of="$T/d.img" bs=1M seek=$((s1 / 1048576)) count=8 conv=notrunc status=none
	rm -rf "$T/state"
	read -r s2 z2 < <(fx_part_range "$T/d.img" 2)
	if [ "$how" = image ]; then
		dev=$(losetup -f --show -o "$s2" --sizelimit "$z2" "$T/d.img") && track_loop "$dev"
		disk=$T/d.img
	else
		attach_loop "$T/d.img"
		dev=${LOOP}p2 disk=$LOOP
	fi
	mkdir -p "$T/m"
	mount "$dev" "$T/m" && track_mount "$T/m"
	echo data > "$T/m/in-store"
	ok "deploy partition 1 of the $how while partition 2 is mounted" "$INPLACE" image deploy "$T/p1.img" "$disk" 1 -q --state-dir "$T/state"
	sync
	sum=$(sha256sum < "$T/d.img")
	must_fail 2 "deploy onto the mounted partition 2 of the $how is refused" "$INPLACE" image deploy "$T/p1.img" "$disk" 2 -q --state-dir "$T/state"
	check "the refused deploy changed nothing" test "$sum" = "$(sha256sum < "$T/d.img")"
	check "the store's file is intact" grep -q data "$T/m/in-store"
	umount "$T/m"
	[ "$how" = loop ] && losetup -d "$LOOP"
	fx_hashes "$T/d.img" 1 > "$T/got"
	check "partition 1 deployed from the $how: every file equal" cmp -s "$T/want" "$T/got"
	check "partition 1 deployed from the $how: fsck clean" fx_fsck "$T/d.img" 1
done
