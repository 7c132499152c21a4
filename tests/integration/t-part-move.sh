#!/bin/bash
# t-part-move.sh — `inplace part move`: forward and backward, overlapping and
# not, 1 MiB shifts, ext4, NTFS and raw data, GPT and MBR (a logical
# partition too); every file's hash and fsck after each move; bad input
# leaves the image byte-for-byte unchanged.
. "$TESTS_DIR/lib.sh"

MiB=$((1024 * 1024))

# Hash the filesystem's files, or the raw bytes of a partition without one.
part_hash() {
	local img=$1 n=$2 kind=$3 start size
	if [ "$kind" = raw ]; then
		read -r start size < <(fx_part_range "$img" "$n")
		dd if="$img" bs=1M skip="$start" count="$size" iflag=skip_bytes,count_bytes status=none | sha256sum
	else
		fx_hashes "$img" "$n"
	fi
}

# move_case NAME IMG N TO_MIB KIND: move, then check place, files and fsck.
move_case() {
	local name=$1 img=$2 n=$3 to=$4 kind=$5 before after start out
	before=$(part_hash "$img" "$n" "$kind")
	if ! out=$("$INPLACE" part move -q "$img" "$n" --to "${to}MiB" 2>&1); then
		fail "$name" "move failed: $out"; return 1
	fi
	read -r start _ < <(fx_part_range "$img" "$n")
	if [ "$start" -ne $((to * MiB)) ]; then fail "$name" "partition at $start, wanted $((to * MiB))"; return 1; fi
	after=$(part_hash "$img" "$n" "$kind")
	if [ -z "$before" ] || [ "$before" != "$after" ]; then fail "$name" "contents changed"; return 1; fi
	if [ "$kind" != raw ] && ! fx_fsck "$img" "$n"; then fail "$name" "fsck found problems"; return 1; fi
	pass "$name"
}

# bad_case NAME STATUS IMG ARGS...: exit STATUS and the image unchanged.
bad_case() {
	local name=$1 want=$2 img=$3 sum rc
	shift 3
	sum=$(sha256sum < "$img")
	"$INPLACE" part move -q "$img" "$@" >/dev/null 2>&1
	rc=$?
	if [ "$rc" -ne "$want" ]; then fail "$name" "exit $rc, wanted $want"; return 1; fi
	if [ "$(sha256sum < "$img")" != "$sum" ]; then fail "$name" "image changed"; return 1; fi
	pass "$name"
}

fx_tree "$T/tree" 4 >/dev/null 2>&1
head -c $((12 * MiB)) /dev/urandom > "$T/tree/data/more.bin"

# ---- GPT: ext4, NTFS, raw ---------------------------------------------------
G=$T/gpt.img
fx_disk "$G" 320M 'label: gpt
start=1MiB, size=40MiB, type=linux
start=100MiB, size=40MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
start=160MiB, size=16MiB, type=linux'
fx_mkfs "$G" 1 ext4 "$T/tree"
if ! fx_mkfs "$G" 2 ntfs "$T/tree" 2>/dev/null; then
	skip "ntfs moves" "mkntfs/ntfs-3g unavailable"; ntfs=0
else ntfs=1; fi
read -r s3 _ < <(fx_part_range "$G" 3)
head -c $((16 * MiB)) /dev/urandom | dd of="$G" bs=1M seek="$s3" oflag=seek_bytes conv=notrunc status=none

move_case "gpt ext4 forward, overlapping"        "$G" 1 20  ext4
move_case "gpt ext4 backward, overlapping"       "$G" 1 3   ext4
move_case "gpt ext4 forward by 1 MiB"            "$G" 1 4   ext4
move_case "gpt ext4 backward by 1 MiB"           "$G" 1 3   ext4
move_case "gpt ext4 forward, not overlapping"    "$G" 1 200 ext4
move_case "gpt ext4 backward, not overlapping"   "$G" 1 1   ext4
if [ "$ntfs" = 1 ]; then
	move_case "gpt ntfs forward, overlapping"    "$G" 2 110 ntfs
	move_case "gpt ntfs backward, overlapping"   "$G" 2 99  ntfs
	move_case "gpt ntfs forward by 1 MiB"        "$G" 2 100 ntfs
fi
move_case "gpt raw data forward by 1 MiB"        "$G" 3 161 raw
move_case "gpt raw data backward, overlapping"   "$G" 3 150 raw
move_case "gpt raw data forward, not overlapping" "$G" 3 250 raw

# dry run: plan only
sum=$(sha256sum < "$G")
if out=$("$INPLACE" part move --dry-run --json "$G" 1 --to 60MiB) &&
   [ "$(sha256sum < "$G")" = "$sum" ] && printf '%s' "$out" | grep -q '"dry_run": true'; then
	pass "dry run writes nothing"
else fail "dry run writes nothing" "$out"; fi

# ---- bad input: exit 2, image unchanged ----------------------------------
bad_case "unaligned start"            2 "$G" 1 --to 1500K
bad_case "overlapping another"        2 "$G" 1 --to 120MiB
bad_case "past the end of the disk"   2 "$G" 1 --to 300MiB
bad_case "into the table area"        2 "$G" 1 --to 0
bad_case "partition out of range"     2 "$G" 9 --to 60MiB
bad_case "partition zero"             2 "$G" 0 --to 60MiB
bad_case "already there"              2 "$G" 1 --to 1MiB
bad_case "garbage start"              2 "$G" 1 --to 12Q
must_fail 2 "missing disk" "$INPLACE" part move -q "$T/nope.img" 1 --to 60MiB

# a boot loader in the head of the gap (GRUB's core.img on BIOS disks; on
# this GPT disk after the entry array, byte 20480): the journal takes the
# tail, and the head stays byte for byte (t-part-grub.sh: the real core.img)
gap_head() { dd if="$1" bs=1024 skip=20 count=$((1024 - 128 - 20)) status=none | sha256sum; }
cp --sparse=always "$G" "$T/grub.img"
head -c $((200 * 1024)) /dev/urandom | dd of="$T/grub.img" bs=1024 seek=20 conv=notrunc status=none
gap_sum=$(gap_head "$T/grub.img")
move_case "core.img in the head of the gap: journal in its tail" "$T/grub.img" 1 60 ext4
check "the gap's head is unchanged after the move" [ "$(gap_head "$T/grub.img")" = "$gap_sum" ]
# … and too close to the tail, or in it: refused, nothing written
cp --sparse=always "$G" "$T/grub.img"
head -c $((900 * 1024)) /dev/urandom | dd of="$T/grub.img" bs=1024 seek=20 conv=notrunc status=none
bad_case "gap full up to the journal's margin" 2 "$T/grub.img" 1 --to 60MiB
cp --sparse=always "$G" "$T/grub.img"
printf 'foreign data' | dd of="$T/grub.img" bs=1 seek=$((1024 * 1024 - 4096)) conv=notrunc status=none
bad_case "gap tail holds foreign data" 2 "$T/grub.img" 1 --to 60MiB
# a journal that is the disk itself (its name, a symlink, a hardlink): refused, unchanged
bad_case "--journal the disk itself" 2 "$T/grub.img" 1 --to 60MiB --journal "$T/grub.img"
ln -sf "$T/grub.img" "$T/grub.link" && ln -f "$T/grub.img" "$T/grub.hard"
bad_case "--journal a symlink to the disk" 2 "$T/grub.img" 1 --to 60MiB --journal "$T/grub.link"
bad_case "--journal a hardlink of the disk" 2 "$T/grub.img" 1 --to 60MiB --journal "$T/grub.hard"
rm -f "$T/grub.link" "$T/grub.hard"
if "$INPLACE" part move -q "$T/grub.img" 1 --to 60MiB --journal "$T/side.journal" >/dev/null 2>&1 &&
   [ "$(fx_hashes "$T/grub.img" 1)" = "$(fx_hashes "$G" 1)" ] && fx_fsck "$T/grub.img" 1 &&
   "$INPLACE" part resume -q "$T/grub.img" --journal "$T/side.journal" >/dev/null; then
	pass "journal in a file on another disk"
else fail "journal in a file on another disk"; fi

# interrupted with --journal FILE: the state directory remembers FILE, so a
# plain 'part resume' finishes the move instead of finding nothing to do.
# The interruption: writes past 80 MiB of the image exceed RLIMIT_FSIZE and
# SIGXFSZ kills the move halfway, the same instant in every run.
interrupted_move() { # IMG: the move of partition 1 to 60 MiB, cut at 80 MiB
	cp --sparse=always "$G" "$1"
	printf 'foreign data' | dd of="$1" bs=1 seek=$((1024 * 1024 - 4096)) conv=notrunc status=none
	rm -f "$T/side.journal"
	(ulimit -f $((80 * 1024)); exec "$INPLACE" part move -q "$1" 1 --to 60MiB --journal "$T/side.journal") >/dev/null 2>&1
}
{ interrupted_move "$T/grub.img"; } 2>/dev/null; rc=$?
check "the move was cut (status $rc)" [ "$rc" -ne 0 ]
check "the state directory names the journal file" grep -qx "$T/side.journal" "$INPLACE_STATE_DIR"/move*.journal-path
must_fail 2 "another move is refused until the interrupted one is finished" "$INPLACE" part move -q "$T/grub.img" 3 --to 200MiB --journal "$T/other.journal"
mv "$T/side.journal" "$T/side.away"
must_fail 2 "resume with the journal file gone: exit 2" "$INPLACE" part resume -q "$T/grub.img"
check "the message names the journal file" sh -c '"$1" part resume -q "$2" 2>&1 | grep -q "journal in $3"' _ "$INPLACE" "$T/grub.img" "$T/side.journal"
mv "$T/side.away" "$T/side.journal"
out=$("$INPLACE" part resume --json "$T/grub.img" 2>&1)
check "a plain 'part resume' finishes it" sh -c 'printf "%s" "$1" | grep -q "\"resumed\": true"' _ "$out"
read -r start _ < <(fx_part_range "$T/grub.img" 1)
check "partition 1 is at 60 MiB" [ "$start" -eq $((60 * MiB)) ]
check "files equal after the resume" [ "$(fx_hashes "$T/grub.img" 1)" = "$(fx_hashes "$G" 1)" ]
ok "fsck clean after the resume" fx_fsck "$T/grub.img" 1
check "the pointer is gone" sh -c '! ls "$1"/move*.journal-path 2>/dev/null | grep -q .' _ "$INPLACE_STATE_DIR"
check "nothing left to resume" sh -c '"$1" part resume --json "$2" | grep -q "\"resumed\": false"' _ "$INPLACE" "$T/grub.img"
rm -f "$T/grub.img"

# mounted: through a loop device
if have_loop; then
	attach_loop "$G"
	mkdir -p "$T/mnt"
	if mount -o ro "${LOOP}p1" "$T/mnt" 2>/dev/null; then
		track_mount "$T/mnt"
		bad_case "mounted partition (image)"   2 "$G" 1 --to 60MiB
		bad_case "mounted partition (device)"  2 "$LOOP" 1 --to 60MiB
		umount "$T/mnt"
	else
		skip "mounted partition" "cannot mount ${LOOP}p1"
	fi
	losetup -d "$LOOP"
else
	skip "mounted partition" "no loop device"
fi

# ---- MBR: primary and logical ------------------------------------------
M=$T/mbr.img
fx_disk "$M" 320M 'label: dos
start=1MiB, size=40MiB, type=83
start=60MiB, size=240MiB, type=5
start=62MiB, size=40MiB, type=83
start=150MiB, size=20MiB, type=83'
fx_mkfs "$M" 1 ext4 "$T/tree"
fx_mkfs "$M" 5 ext4 "$T/tree"
move_case "mbr primary forward, overlapping"   "$M" 1 9  ext4
move_case "mbr primary backward by 1 MiB"      "$M" 1 8  ext4
move_case "mbr logical forward, overlapping"   "$M" 5 80 ext4
move_case "mbr logical forward, not overlapping" "$M" 5 190 ext4
bad_case  "mbr logical over the next one's boot record" 2 "$M" 5 --to 130MiB
bad_case  "mbr logical outside its container"  2 "$M" 5 --to 290MiB
bad_case  "mbr extended container"             2 "$M" 2 --to 62MiB
if fx_fsck "$M" 1 && fx_fsck "$M" 5; then pass "mbr neighbours intact"; else fail "mbr neighbours intact"; fi
