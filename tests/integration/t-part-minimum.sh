#!/bin/bash
# t-part-minimum.sh — the ext minimum inplace counts is one resize2fs -f
# reaches: ext4 of 4 KiB and 1 KiB blocks filled to 50/60/75/85% with a
# realistic mix, made by mke2fs -d and filled through a loop mount (other
# layouts), each shrunk with `part shrink --to <min_bytes of part show>`:
# it ends within 10% + 64 MiB of the used bytes, e2fsck -fn is clean, every
# file's sha256 is equal.  A target below the true minimum is refused
# (exit 2, image sha256 unchanged), and when forced past our check
# (INPLACE_TEST_NO_MIN) resize2fs fails and is rolled back (exit 1, fsck
# clean, hashes equal, partition unchanged) through both undos (e2undo for
# 4 KiB blocks, the metadata undo for 1 KiB).
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/mix.sh"

MiB=$((1024 * 1024))

part_size() { local s; read -r _ s < <(fx_part_range "$1" "$2"); echo "$s"; }
# show IMG N FIELD...: fields of partition N in part show --json, one line
show() {
	local img=$1 n=$2 f q=
	shift 2
	for f; do q="$q${q:+, }.$f"; done
	"$INPLACE" part show --json "$img" | jq -r ".partitions[] | select(.number == $n) | [$q] | @tsv"
}

# new_img IMG SIZE_MiB: one GPT partition from 1 MiB to the end.
new_img() { fx_disk "$1" "$2M" 'label: gpt
start=1MiB, type=linux'; }

# mkfs_d IMG BS: mke2fs -d from the tree
mkfs_d() { local start size; read -r start size < <(fx_part_range "$1" 1)
	mke2fs -q -F -t ext4 -b "$2" -d "$T/tree$2" -E offset="$start" "$1" $((size / 1024))k; }

# mkfs_mount IMG BS PCT: an empty ext4 filled through the kernel: the tree,
# a second copy deleted again (holes), then random data up to PCT.
mkfs_mount() {
	local img=$1 bs=$2 pct=$3 start size m=$T/mnt total free want
	read -r start size < <(fx_part_range "$img" 1)
	mke2fs -q -F -t ext4 -b "$bs" -E offset="$start" "$img" $((size / 1024))k || return 1
	attach_loop "$img" && [ -b "${LOOP}p1" ] || return 1
	mkdir -p "$m"
	mount "${LOOP}p1" "$m" || return 1
	track_mount "$m"
	mkdir -p "$m/a" && cp -a "$T/tree$bs/." "$m/a/" || return 1
	cp -a "$T/tree$bs/data-0" "$m/junk" 2>/dev/null; sync; rm -rf "$m/junk"
	read -r total free < <(df -B1 --output=size,avail "$m" | tail -1)
	want=$(( total * pct / 100 - $(df -B1 --output=used "$m" | tail -1) ))
	[ "$want" -gt 0 ] && head -c "$want" /dev/urandom > "$m/top-up.bin"
	umount "$m"
	losetup -d "$LOOP" 2>/dev/null
	return 0
}

# sized IMG BS PCT MAKER: an image whose filesystem is about PCT full.
# Used bytes grow with the size (inode tables, bitmaps), so they are learnt
# once per block size at two sizes, used = C + k * size, and the size for
# PCT is C / (PCT - k).
declare -A fix_c fix_k
sized() {
	local img=$1 bs=$2 pct=$3 maker=$4 mib u1 u2
	if [ -z "${fix_c[$bs]:-}" ]; then
		new_img "$img" 400 && mkfs_d "$img" "$bs" || return 1
		u1=$(show "$img" 1 used)
		new_img "$img" 200 && mkfs_d "$img" "$bs" || return 1
		u2=$(show "$img" 1 used)
		fix_k[$bs]=$(( (u1 - u2) * 1000000 / (200 * MiB) ))       # per million
		fix_c[$bs]=$(( u1 - fix_k[$bs] * 400 * MiB / 1000000 ))
	fi
	mib=$(( fix_c[$bs] * 1000000 / (pct * 10000 - fix_k[$bs]) / MiB + 2 ))
	new_img "$img" "$mib"
	if [ "$maker" = mkfs ]; then mkfs_d "$img" "$bs"; else mkfs_mount "$img" "$bs" "$pct"; fi
}

# shrink_case NAME IMG: shrink to the reported minimum; record the row.
shrink_case() {
	local name=$1 img=$2 before used min est size orig
	before=$(fx_hashes "$img" 1) orig=$(part_size "$img" 1)
	read -r used min est < <(show "$img" 1 used min_bytes min_estimate_bytes)
	if ! out=$("$INPLACE" part shrink -q "$img" 1 --to "$min" 2>&1); then
		fail "$name" "shrink to $min failed: $out"; return 1
	fi
	size=$(part_size "$img" 1)
	echo "  row: $name | $((orig / MiB)) MiB, $((used * 100 / orig))% | used $((used / MiB)) MiB | ours $((min / MiB)) MiB | resize2fs -P $((est / MiB)) MiB | now $((size / MiB)) MiB"
	if [ "$size" -gt $((used * 110 / 100 + 64 * MiB)) ]; then
		fail "$name" "partition $size bytes, more than 10% + 64 MiB above the used $used"; return 1
	fi
	if ! fx_fsck "$img" 1; then fail "$name" "e2fsck -fn finds problems"; return 1; fi
	if [ -z "$before" ] || [ "$before" != "$(fx_hashes "$img" 1)" ]; then fail "$name" "contents changed"; return 1; fi
	pass "$name"
}

# below_case NAME IMG: a target below the true minimum: refused, and when
# forced past the check, rolled back.
below_case() {
	local name=$1 img=$2 used size sum before rc
	used=$(show "$img" 1 used) size=$(part_size "$img" 1)
	sum=$(sha256sum < "$img")
	"$INPLACE" part shrink -q "$img" 1 --to $((used * 80 / 100)) >/dev/null 2>&1; rc=$?
	if [ "$rc" -eq 2 ] && [ "$(sha256sum < "$img")" = "$sum" ]; then pass "$name: refused, image unchanged"
	else fail "$name: refused, image unchanged" "exit $rc"; fi
	before=$(fx_hashes "$img" 1)
	INPLACE_TEST_NO_MIN=1 "$INPLACE" part shrink -q "$img" 1 --to $((used * 80 / 100)) >/dev/null 2>&1; rc=$?
	if [ "$rc" -ne 1 ]; then fail "$name: forced, rolled back" "exit $rc, wanted 1"; return 1; fi
	if [ "$(part_size "$img" 1)" -ne "$size" ]; then fail "$name: forced, rolled back" "the partition changed"; return 1; fi
	if ! fx_fsck "$img" 1; then fail "$name: forced, rolled back" "e2fsck -fn finds problems"; return 1; fi
	if [ "$before" != "$(fx_hashes "$img" 1)" ]; then fail "$name: forced, rolled back" "contents changed"; return 1; fi
	if [ -n "$(ls -A "$INPLACE_STATE_DIR" 2>/dev/null)" ]; then fail "$name: forced, rolled back" "state left behind"; return 1; fi
	pass "$name: forced, rolled back"
}

# 4 KiB blocks: several 128 MiB groups, so that shrinking drops some; 1 KiB
# blocks have groups of 8 MiB, a smaller tree drops many
fx_mix "$T/tree4096" 100 >/dev/null 2>&1
fx_mix "$T/tree1024" 40 >/dev/null 2>&1

for bs in 4096 1024; do
	for pct in 50 60 75 85; do
		img=$T/d-$bs-$pct.img
		if sized "$img" "$bs" "$pct" mkfs; then
			shrink_case "mke2fs -d, $bs-byte blocks, $pct% full" "$img"
		else fail "mke2fs -d, $bs-byte blocks, $pct% full" "cannot build the image"; fi
		rm -f "$img"
	done
done

if have_loop; then
	for bs in 4096 1024; do
		for pct in 50 60 75 85; do
			img=$T/m-$bs-$pct.img
			if sized "$img" "$bs" "$pct" mount; then
				shrink_case "filled through a mount, $bs-byte blocks, $pct% full" "$img"
			else fail "filled through a mount, $bs-byte blocks, $pct% full" "cannot build the image"; fi
			rm -f "$img"
		done
	done
else skip "filled through a mount" "no loop devices"; fi

for bs in 4096 1024; do
	img=$T/b-$bs.img
	if sized "$img" "$bs" 75 mkfs; then below_case "below the minimum, $bs-byte blocks" "$img"
	else fail "below the minimum, $bs-byte blocks" "cannot build the image"; fi
	rm -f "$img"
done
