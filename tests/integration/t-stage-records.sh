#!/bin/bash
# t-stage-records — the records area on a 4 GiB root: its undo room makes
# it longer than one ext4 block group (128 MiB), and ext4 splits such a
# file where a backup superblock sits; stage build must still find it one
# run on disk, below the shrink's new end, its filesystem where the
# initramfs says.  (Before: "the records file is not contiguous on disk".)
# Then the staging steps fill the store that store_size = auto sized.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
have_loop || { skip "stage-records" "no loop devices (the steps mount partitions)"; exit 0; }
require_tool jq blkid debugfs || exit 1
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state

debian_kernel || exit 1

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
# an image that does not compress: the store holds its bytes exactly
head -c 300M /dev/urandom > new/opt-blob
"$INPLACE" image build -q --from-dir new --fs ext4 --size 480MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
D=$T/disk.img
fx_disk "$D" 4G $'label: dos\ntype=83'
fx_mkfs "$D" 1 ext4 old system
fx_job job.ini "$T/newos.img" "$D"
ok "run stops where the staging boot comes" "$INPLACE" run job.ini || exit 1
# on a machine the state directory is the old root's /var/lib/inplace, where
# the image waits too (staged-image/): the records hold the state, not it
mkdir -p "$INPLACE_STATE_DIR/staged-image" && cp newos.img "$INPLACE_STATE_DIR/staged-image/os.img" ||
	{ fail "fixture" "an image staged beside the state"; exit 1; }
ok "stage build on a 4 GiB root" sh -c "'$INPLACE' stage build -o stage.cpio --kernel '$K' --json > build.json" ||
	exit 1
off=$(jq -r '.records.offset' build.json) size=$(jq -r '.records.size' build.json)
uuid=$(jq -r '.records.uuid' build.json)
check "the area is longer than a block group (the case that splits)" test "$size" -gt $((128 << 20))
check "the area's filesystem is at the recorded offset" \
	test "$(blkid -p -o value -s UUID -O "$off" "$D")" = "$uuid"
read -r s z < <(fx_part_range "$D" 1)
check "the area lies inside the root" test "$off" -ge "$s" -a $((off + size)) -le $((s + z))
# the records filesystem copied out from the disk is clean and holds the state
dd if="$D" of=rec.img bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$size" status=none
check "the area's filesystem is clean" e2fsck -fn rec.img
check "the area holds the state" sh -c "debugfs -R 'cat /state.json' rec.img 2>/dev/null | jq -e .phase"
check "the area holds no image staged beside the state" \
	sh -c "debugfs -R 'ls -l /' rec.img 2>/dev/null | grep -q state.json && ! debugfs -R 'ls -l /' rec.img 2>/dev/null | grep -q staged-image"
l=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") && track_loop "$l" ||
	{ fail "fixture" "loop over the root"; exit 1; }
debugfs -R 'ls /var/lib/inplace' "$l" > ls.txt 2>/dev/null
check "the records file is on the root, and no spare file is left" \
	sh -c "grep -q staging-records.img ls.txt && ! grep -q spare ls.txt"

# store_size = auto sizes the store partition for its contents and its
# filesystem's own overhead (journal, inode tables, reserve): the staging
# steps, played here, fill it up to the bundle (before: "no room for the
# bundle in the store")
ok "resume: the staging steps in the auto-sized store" "$INPLACE" resume --disk "$D"
check "the run waits for the new OS's first boot" \
	test "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" = restore
