#!/bin/bash
# t-part-resize.sh — `inplace part shrink` and `part grow` on ext4 and NTFS,
# GPT and MBR (a logical partition too): every file's hash and fsck after
# each step, the table's new size, the filesystem filling its partition after
# a grow; refusals (below the minimum, xfs/btrfs/raw, mounted, too large)
# exit 2 and leave the image byte-for-byte unchanged.
. "$TESTS_DIR/lib.sh"

MiB=$((1024 * 1024))
export INPLACE_STATE_DIR=$T/state

part_size() { local s; read -r _ s < <(fx_part_range "$1" "$2"); echo "$s"; }

# Bytes the filesystem of partition N spans.
fs_span() {
	local img=$1 n=$2 start
	read -r start _ < <(fx_part_range "$img" "$n")
	case "$(_fx_fstype "$img" "$n")" in
	ext*) dumpe2fs -h "$img?offset=$start" 2>/dev/null |
		awk -F: '/^Block count/ {c=$2} /^Block size/ {b=$2} END {print c * b}' ;;
	ntfs) dd if="$img" bs=512 skip=$((start / 512)) count=1 status=none |
		od -An -t u8 -j 40 -N 8 | awk '{print ($1 + 1) * 512}' ;;
	esac
}

# resize_case NAME VERB IMG N ARGS... — the verb succeeds; files, fsck, the
# table and the filesystem agree afterwards.  $want: expected size in bytes.
resize_case() {
	local name=$1 verb=$2 img=$3 n=$4 before after out size span
	shift 4
	before=$(fx_hashes "$img" "$n")
	if ! out=$("$INPLACE" part "$verb" -q "$img" "$n" "$@" 2>&1); then
		fail "$name" "$verb failed: $out"; return 1
	fi
	size=$(part_size "$img" "$n")
	if [ "$size" -ne "$want" ]; then fail "$name" "partition is $size bytes, wanted $want"; return 1; fi
	span=$(fs_span "$img" "$n")
	if [ "$span" -gt "$size" ]; then fail "$name" "filesystem ($span) larger than its partition ($size)"; return 1; fi
	if [ "$verb" = grow ] && [ $((size - span)) -ge $((64 * 1024)) ]; then
		fail "$name" "filesystem ($span) does not fill the grown partition ($size)"; return 1
	fi
	if ! fx_fsck "$img" "$n"; then fail "$name" "fsck found problems"; return 1; fi
	after=$(fx_hashes "$img" "$n")
	if [ -z "$before" ] || [ "$before" != "$after" ]; then fail "$name" "contents changed"; return 1; fi
	pass "$name"
}

# bad_case NAME STATUS IMG ARGS...: exit STATUS, the image unchanged.  The
# image's checksum is CRC (cksum): sha256 of these 700 MB images costs 5-10 s
# each on CI machines; $SUM=sha256sum where the brief asks for sha256.
bad_case() {
	local name=$1 want=$2 img=$3 sum rc h=${SUM:-cksum}
	shift 3
	sum=$($h < "$img")
	"$INPLACE" part "$@" >/dev/null 2>&1
	rc=$?
	if [ "$rc" -ne "$want" ]; then fail "$name" "exit $rc, wanted $want"; return 1; fi
	if [ "$($h < "$img")" != "$sum" ]; then fail "$name" "image changed"; return 1; fi
	pass "$name"
}

fx_tree "$T/tree" 4 >/dev/null 2>&1
head -c $((8 * MiB)) /dev/urandom > "$T/tree/data/more.bin"

# ---- GPT: ext4 (4 KiB blocks), NTFS, raw --------------------------------------
G=$T/gpt.img
fx_disk "$G" 700M 'label: gpt
start=1MiB, size=520MiB, type=linux
start=521MiB, size=120MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
start=641MiB, size=16MiB, type=linux'
fx_mkfs "$G" 1 ext4 "$T/tree"
if fx_mkfs "$G" 2 ntfs "$T/tree" 2>/dev/null; then ntfs=1; else ntfs=0; skip "gpt ntfs" "mkntfs/ntfs-3g unavailable"; fi

want=$((64 * MiB)) resize_case "gpt ext4 shrink" shrink "$G" 1 --to 64MiB
want=$((100 * MiB)) resize_case "gpt ext4 grow --to" grow "$G" 1 --to 100MiB
want=$((520 * MiB)) resize_case "gpt ext4 grow --max" grow "$G" 1 --max
# unaligned sizes: a shrink rounds the end up, a grow down, to the 1 MiB grain
want=$((81 * MiB)) resize_case "gpt ext4 shrink, unaligned size rounds up" shrink "$G" 1 --to $((80 * MiB + 4096))
want=$((90 * MiB)) resize_case "gpt ext4 grow, unaligned size rounds down" grow "$G" 1 --to $((90 * MiB + 4096))
if [ "$ntfs" = 1 ]; then
	want=$((40 * MiB)) resize_case "gpt ntfs shrink" shrink "$G" 2 --to 40MiB
	want=$((120 * MiB)) resize_case "gpt ntfs grow --max" grow "$G" 2
fi

# dry run and --json: plan only, one document, nothing written
sum=$(cksum < "$G")
out=$("$INPLACE" part shrink "$G" 1 --to 50MiB --dry-run --json)
if [ $? -eq 0 ] && [ "$(cksum < "$G")" = "$sum" ] &&
   [ "$(printf '%s' "$out" | jq -r '.new_size, .dry_run, .changed, .version' | tr '\n' ' ')" = "$((50 * MiB)) true false 1 " ]; then
	pass "shrink --dry-run --json writes nothing"
else fail "shrink --dry-run --json writes nothing" "$out"; fi

# refusals
min=$("$INPLACE" part shrink "$G" 1 --to 50MiB --dry-run --json | jq -r .fs_min_size)
SUM=sha256sum bad_case "ext4 below its minimum: bad input, image sha256 unchanged" 2 "$G" shrink "$G" 1 --to $((min / 2))
msg=$("$INPLACE" part shrink "$G" 1 --to $((min / 2)) 2>&1)
case "$msg" in *"filesystem's minimum"*"--to "*) pass "below-minimum message names the minimum and the fix" ;;
	*) fail "below-minimum message names the minimum and the fix" "$msg" ;; esac
if [ "$ntfs" = 1 ]; then bad_case "ntfs below its minimum: bad input" 2 "$G" shrink "$G" 2 --to 2MiB; fi
bad_case "raw partition cannot be shrunk" 2 "$G" shrink "$G" 3 --to 8MiB
bad_case "grow past the free space" 2 "$G" grow "$G" 1 --to 600MiB
bad_case "shrink to a larger size" 2 "$G" shrink "$G" 1 --to 600MiB
bad_case "no such partition" 2 "$G" shrink "$G" 9 --to 8MiB
bad_case "shrink without --to" 2 "$G" shrink "$G" 1

# a mounted filesystem is refused
if have_loop && attach_loop "$G" && [ -b "${LOOP}p1" ]; then
	mkdir -p "$T/mnt"
	if mount -o ro "${LOOP}p1" "$T/mnt"; then
		track_mount "$T/mnt"
		bad_case "mounted partition is refused" 2 "$G" shrink "$G" 1 --to 60MiB
		umount "$T/mnt"
	else skip "mounted partition is refused" "mount failed"; fi
	losetup -d "$LOOP"
else skip "mounted partition is refused" "no loop device with partitions"; fi

# xfs and btrfs: inplace does not resize them
X=$T/other.img
fx_disk "$X" 460M 'label: gpt
start=1MiB, size=300MiB, type=linux
start=301MiB, size=150MiB, type=linux'
put_side() { # put_side IMG N MKFS ARGS...: format a side file, copy it in
	local img=$1 n=$2 start size side=$T/side.img
	shift 2
	read -r start size < <(fx_part_range "$img" "$n")
	rm -f "$side"; truncate -s "$size" "$side"
	"$@" "$side" >/dev/null 2>&1 || return 1
	dd if="$side" of="$img" bs=1M seek="$start" oflag=seek_bytes conv=notrunc,sparse status=none
	rm -f "$side"
}
if command -v mkfs.xfs >/dev/null && put_side "$X" 1 mkfs.xfs -f -q; then
	bad_case "xfs cannot be shrunk" 2 "$X" shrink "$X" 1 --to 200MiB
	msg=$("$INPLACE" part shrink "$X" 1 --to 200MiB 2>&1)
	case "$msg" in *"xfs cannot be shrunk"*) pass "xfs refusal says why" ;; *) fail "xfs refusal says why" "$msg" ;; esac
else skip "xfs cannot be shrunk" "mkfs.xfs unavailable (xfsprogs)"; fi
if command -v mkfs.btrfs >/dev/null && put_side "$X" 2 mkfs.btrfs -f -q; then
	bad_case "btrfs cannot be shrunk" 2 "$X" shrink "$X" 2 --to 130MiB
	bad_case "btrfs cannot be grown" 2 "$X" grow "$X" 2 --max
else skip "btrfs cannot be shrunk" "mkfs.btrfs unavailable (btrfs-progs)"; fi

# ---- MBR: NTFS primary, ext4 logical partitions ----------------------------------
M=$T/mbr.img
fx_disk "$M" 700M 'label: dos
start=1MiB, size=120MiB, type=7
start=121MiB, size=560MiB, type=5
start=122MiB, size=520MiB, type=83
start=643MiB, size=30MiB, type=83'
fx_mkfs "$M" 5 ext4 "$T/tree"
fx_mkfs "$M" 6 ext4 "$T/tree"
want=$((48 * MiB)) resize_case "mbr logical ext4 shrink" shrink "$M" 5 --to 48MiB
want=$((520 * MiB)) resize_case "mbr logical ext4 grow --max stops before the next logical" grow "$M" 5 --max
want=$((20 * MiB)) resize_case "mbr last logical ext4 (1 KiB blocks) shrink" shrink "$M" 6 --to 20MiB
want=$((38 * MiB)) resize_case "mbr last logical grow --max stops at the extended end" grow "$M" 6 --max
bad_case "extended container is refused" 2 "$M" shrink "$M" 2 --to 300MiB
if [ "$ntfs" = 1 ] && fx_mkfs "$M" 1 ntfs "$T/tree" 2>/dev/null; then
	want=$((30 * MiB)) resize_case "mbr primary ntfs shrink" shrink "$M" 1 --to 30MiB
	want=$((120 * MiB)) resize_case "mbr primary ntfs grow --max" grow "$M" 1 --max
fi
if [ -n "$(ls -A "$INPLACE_STATE_DIR" 2>/dev/null)" ]; then
	fail "no state left after finished shrinks" "$(ls "$INPLACE_STATE_DIR")"
else pass "no state left after finished shrinks"; fi
