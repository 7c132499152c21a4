#!/bin/bash
# t-part-powercut.sh — a power cut at any point of `inplace part move`.
# kill -9 keeps the page cache; a power cut does not.  The move runs once
# with INPLACE_IOLOG recording every write and flush of the disk (its data,
# its journal, and the table write, logged when durable).  For many flush
# points k, tests/tools/iolog-replay builds what the disk could hold after a
# power cut between flush k and k+1 — every write before flush k, plus a
# random subset (whole, lost or torn) of those in flight — and
# `inplace part resume` must leave every file intact and fsck clean.  Also
# a logical partition moving down, its boot record moved first (MBR).
. "$TESTS_DIR/lib.sh"

MiB=$((1024 * 1024))
REPLAY=${TOOLS:?}/iolog-replay
[ -x "$REPLAY" ] || { fail "iolog-replay tool" "not built: run make"; exit 1; }
POINTS=${POINTS:-30}  # flush points tested per move (all when fewer)

fx_tree "$T/tree" 3 >/dev/null 2>&1
head -c $((10 * MiB)) /dev/urandom > "$T/tree/data/blob.bin"

mkbase() { # IMG START_MIB
	fx_disk "$1" 96M "label: gpt
start=$2MiB, size=40MiB, type=linux"
	fx_mkfs "$1" 1 ext4 "$T/tree"
}
mkbase "$T/low.img" 1
mkbase "$T/high.img" 17
# logical 6 behind a small logical 5, 9 MiB of room between them
fx_disk "$T/log.img" 96M "label: dos
start=1MiB, size=94MiB, type=5
start=2MiB, size=4MiB, type=83
start=16MiB, size=40MiB, type=83"
fx_mkfs "$T/log.img" 6 ext4 "$T/tree"
fx_hashes "$T/low.img" 1 > "$T/want"
[ -s "$T/want" ] || { fail "fixture" "no files hashed"; exit 1; }

# powercut NAME BASE TO_MIB [PARTITION]
powercut() {
	local name=$1 base=$2 to=$3 p=${4:-1} img=$T/work.img log=$T/io.log from n k step out start bad=0 seed
	read -r from _ < <(fx_part_range "$base" "$p")
	cp --sparse=always "$base" "$img"
	rm -f "$log"
	if ! INPLACE_IOLOG=$log "$INPLACE" part move -q "$img" "$p" --to "${to}MiB" >/dev/null 2>&1; then
		fail "$name" "the recorded move failed"; return 1
	fi
	n=$("$REPLAY" "$log") || { fail "$name" "cannot read the log"; return 1; }
	[ "$n" -ge 2 ] || { fail "$name" "only $n flushes recorded"; return 1; }
	# k = 0 .. n: the first, the last and evenly spread ones between
	step=$(( (n + POINTS - 1) / POINTS )); [ "$step" -lt 1 ] && step=1
	local ks; ks=$(seq 0 "$step" "$n"; echo "$n")
	for k in $(printf '%s\n' $ks | sort -un); do
		seed=$((k * 7919 + ${#name}))
		cp --sparse=always "$base" "$img"
		if ! "$REPLAY" "$log" "$img" "$k" "$seed" >/dev/null; then
			fail "$name, cut after flush $k/$n" "replay failed"; bad=1; continue
		fi
		if ! out=$("$INPLACE" part resume -q "$img" 2>&1); then
			fail "$name, cut after flush $k/$n" "resume: $out"; bad=1; continue
		fi
		read -r start _ < <(fx_part_range "$img" "$p")
		if [ "$start" -ne "$from" ] && [ "$start" -ne $((to * MiB)) ]; then
			fail "$name, cut after flush $k/$n" "partition at $start"; bad=1; continue
		fi
		if ! fx_hashes "$img" "$p" | cmp -s - "$T/want"; then
			fail "$name, cut after flush $k/$n" "files differ"; bad=1; continue
		fi
		if ! fx_fsck "$img" "$p"; then
			fail "$name, cut after flush $k/$n" "fsck found problems"; bad=1; continue
		fi
		pass "$name, cut after flush $k/$n (at $((start / MiB)) MiB)"
	done
	rm -f "$log" "$img"
	return $bad
}

powercut "forward by 1 MiB"      "$T/low.img" 2
powercut "backward, overlapping" "$T/high.img" 5
powercut "logical, backward overlapping" "$T/log.img" 7 6
