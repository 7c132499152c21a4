#!/bin/bash
# t-part-grub.sh — make-storage on a BIOS/MBR disk whose gap below 1 MiB
# holds a real GRUB core.img, where the plan is: shrink partition 1, move
# partition 2 down, create partition 3.  The move journal must live in the
# gap's zero tail: make-storage succeeds, the boot code (bytes 0..445) and
# the whole gap (512 .. 1 MiB: core.img, and the journal's place zeroed
# again) are byte for byte unchanged, every file is intact and fsck is
# clean.  Then the same with kill -9 during make-storage, finished by part
# resume; a move that fails after the shrink (exit 1, resumable); a gap too
# full for the journal (it goes to free space the plan creates and no step
# touches); and a disk with neither: plan warns, make-storage refuses with
# the disk unchanged, --journal FILE works.
#
# GRUB is put in place the way grub-install does it (grub-mkimage builds
# core.img for (hd0,msdos1)/boot/grub with biosdisk, part_msdos and ext2;
# boot.img's code goes before the partition table, core.img from sector 1):
# grub-install itself cannot map a loop device's partition to a BIOS drive
# here ("cannot find a GRUB drive for /dev/loopNp1"), and the bytes in the
# gap are what this test is about.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

MiB=$((1024 * 1024))
FX_SRC=$T/src

grubdir=/usr/lib/grub/i386-pc
if ! command -v grub-mkimage >/dev/null || [ ! -f "$grubdir/boot.img" ]; then
	skip "make-storage with GRUB in the gap" "GRUB for i386-pc missing (grub-pc-bin, grub2-common)"
	exit 0
fi

boot_code() { head -c 446 "$1" | sha256sum; }
gap() { dd if="$1" bs=512 skip=1 count=2047 status=none | sha256sum; }

# ---- the disk, with GRUB in its boot code and gap ----------------------------
fx_disk_mbr_boot "$T/base.img" || { fail "fixture" "fx_disk_mbr_boot"; exit 1; }
if ! out=$(grub-mkimage -O i386-pc -d "$grubdir" -o "$T/core.img" -p '(hd0,msdos1)/boot/grub' \
		biosdisk part_msdos ext2 2>&1); then
	fail "grub-mkimage" "$(tail -1 <<<"$out")"; exit 1
fi
dd if="$grubdir/boot.img" of="$T/base.img" bs=440 count=1 conv=notrunc status=none
dd if="$T/core.img" of="$T/base.img" bs=512 seek=1 conv=notrunc status=none
# where core.img ends: the last non-zero byte below 1 MiB
core_end=$(dd if="$T/base.img" bs=512 skip=1 count=2047 status=none | od -An -v -tx1 -w1 |
	awk '$1 != "00" { last = NR } END { print last + 512 }')
check "core.img is in the gap (ends at byte $core_end)" [ "$core_end" -gt 4096 ]
h1=$(fx_hashes "$T/base.img" 1) h2=$(fx_hashes "$T/base.img" 2)
fx_parts_save "$T/base-files" "$T/base.img" 1 2
bc=$(boot_code "$T/base.img") gp=$(gap "$T/base.img")

# what asks for a move: more than shrinking partition 1 frees next to it,
# less than that plus the free space after partition 2
read -r size1 min1 < <("$INPLACE" part show --json "$T/base.img" | jq -r '.partitions[0] | "\(.size) \(.min_size)"')
keep1=$(( (min1 + min1 / 20 + 64 * MiB + MiB - 1) / MiB * MiB ))
need=$(( (size1 - keep1) / MiB + 40 ))MiB

# every check after a make-storage
after_storage() { # NAME IMG N
	local name=$1 img=$2 n=$3 start size
	read -r start size < <(fx_part_range "$img" "$n")
	if [ "$(blkid -p -O "$start" -o value -s LABEL "$img")" != INPLACE-STORE ]; then fail "$name" "no storage partition $n"; return 1; fi
	if [ "$size" -lt $(( ${need%MiB} * MiB )) ]; then fail "$name" "storage partition has $size bytes"; return 1; fi
	if [ "$(boot_code "$img")" != "$bc" ]; then fail "$name" "boot code (bytes 0..445) changed"; return 1; fi
	if [ "$(gap "$img")" != "${GAP_WANT:-$gp}" ]; then fail "$name" "the gap (core.img, bytes 512..1 MiB) changed"; return 1; fi
	if [ "$(fx_hashes "$img" 1)" != "$h1" ] || [ "$(fx_hashes "$img" 2)" != "$h2" ]; then fail "$name" "files changed"; return 1; fi
	for p in 1 2 "$n"; do fx_fsck "$img" "$p" || { fail "$name" "fsck of partition $p"; return 1; }; done
	pass "$name"
}

# ---- the plan: shrink 1, move 2, create 3; the journal in the gap's tail --------
cp --sparse=always "$T/base.img" "$T/d.img"
ops=$("$INPLACE" part plan --json "$T/d.img" --need "$need" 2>/dev/null | jq -r '[.steps[].op] | join(" ")')
check "plan: shrink move create (got '$ops')" [ "$ops" = "shrink move create" ]
out=$("$INPLACE" part plan --json "$T/d.img" --need "$need" 2>/dev/null)
check "plan: the journal goes to the gap's tail, no warning" \
	[ "$(jq -r '.journal | test("bytes 917504-")' <<<"$out")" = true -a "$(jq -r .warning <<<"$out")" = null ]
if out=$("$INPLACE" part make-storage --json -q "$T/d.img" --need "$need" 2>&1); then
	after_storage "make-storage with GRUB's core.img in the gap" "$T/d.img" "$(jq -r .partition <<<"$out")"
else
	fail "make-storage with GRUB's core.img in the gap" "$(tail -1 <<<"$out")"
fi

# ---- a step failing after another was done: exit 1, named, resumable -----------
# Writes past the new start of partition 2 + 2 MiB fail (RLIMIT_FSIZE with
# SIGXFSZ ignored: EFBIG), so the shrink is done and the move fails.
cp --sparse=always "$T/base.img" "$T/fail.img"
to2=$("$INPLACE" part plan --json "$T/fail.img" --need "$need" | jq '.steps[1].to')
out=$(trap '' XFSZ; ulimit -f $(( (to2 + 2 * MiB) / 1024 )); "$INPLACE" part make-storage -q "$T/fail.img" --need "$need" 2>&1); rc=$?
check "a failed move after the shrink: exit 1 (got $rc)" [ "$rc" = 1 ]
said=yes
for w in "after 1 of 3 steps were done (shrink partition 1)" "step 2 (move partition 2)" "inplace part resume"; do
	grep -qF -- "$w" <<<"$out" || said="no '$w'"
done
check "… the message names the step done and how to resume ($said)" [ "$said" = yes ]
ok "… part resume finishes the move" "$INPLACE" part resume -q "$T/fail.img"
if out=$("$INPLACE" part make-storage --json -q "$T/fail.img" --need "$need" 2>&1); then
	after_storage "… and make-storage again completes" "$T/fail.img" "$(jq -r .partition <<<"$out")"
else
	fail "… and make-storage again completes" "$(tail -1 <<<"$out")"
fi
rm -f "$T/fail.img"

# ---- a gap too full for the journal: the free space the plan creates ------------
# core.img of 900 KiB leaves the gap's tail no room; the free space after
# partition 2 becomes part of the new partition and no step touches it
cp --sparse=always "$T/base.img" "$T/full.img"
head -c $((900 * 1024)) /dev/urandom | dd of="$T/full.img" bs=512 seek=1 conv=notrunc status=none
gp_full=$(gap "$T/full.img")
cp --sparse=always "$T/full.img" "$T/fullbase.img"
out=$("$INPLACE" part plan --json "$T/full.img" --need "$need" 2>/dev/null)
check "plan: the journal goes to free space no step touches, no warning" \
	[ "$(jq -r '.journal | test("free space no step touches")' <<<"$out")" = true -a "$(jq -r .warning <<<"$out")" = null ]
if out=$("$INPLACE" part make-storage --json -q "$T/full.img" --need "$need" 2>&1) &&
   [ "$(gap "$T/full.img")" = "$gp_full" ] && fx_parts_same "$T/base-files" "$T/full.img" 1 2 >/dev/null &&
   fx_fsck "$T/full.img" "$(jq -r .partition <<<"$out")"; then
	pass "make-storage with a full gap: journal in the free space, gap unchanged, files intact"
else
	fail "make-storage with a full gap" "$(tail -1 <<<"$out")"
fi
rm -f "$T/full.img"

# ---- the rare disk with neither: refused before the first write, --journal FILE ---
# 1 and 3 have room, 2 is full, no free space: shrink 1, move 2, shrink 3,
# move 3 and the new (logical) partition where 3 ended: every MiB of it is
# touched
fx_disk "$T/neither.img" 502M 'label: dos
start=1MiB, size=200MiB, type=83
size=100MiB, type=83
type=83'
fx_mkfs "$T/neither.img" 1 ext4 "$FX_SRC" ONE && fx_mkfs "$T/neither.img" 2 ext4 "$FX_SRC" TWO &&
	fx_ext_fill "$T/neither.img" 2 60 && fx_mkfs "$T/neither.img" 3 ext4 "$FX_SRC" THREE
head -c $((900 * 1024)) /dev/urandom | dd of="$T/neither.img" bs=512 seek=1 conv=notrunc status=none
rooms=$("$INPLACE" part show --json "$T/neither.img" | jq -r '.partitions[] | select(.number != 2) | "\(.size) \(.min_size)"' |
	while read -r size min; do echo $(( (size - (min + min / 20 + 64 * MiB + MiB - 1) / MiB * MiB) / MiB )); done | sort -n | tr '\n' ' ')
read -r rs rl <<<"$rooms"
need2=$(( rl + rs / 2 ))MiB
ops=$("$INPLACE" part plan --json "$T/neither.img" --need "$need2" 2>/dev/null | jq -r '[.steps[].op] | join(" ")')
check "neither: the plan shrinks and moves both ($ops)" [ "$ops" = "shrink move shrink move create-extended create" ]
sum=$(sha256sum < "$T/neither.img")
out=$("$INPLACE" part plan "$T/neither.img" --need "$need2" 2>&1 >/dev/null); rc=$?
warned=no; [ "$rc" = 0 ] && grep -q "warning.*journal FILE" <<<"$out" && warned=yes
check "neither: plan warns" [ "$warned" = yes ]
out=$("$INPLACE" part make-storage -q "$T/neither.img" --need "$need2" 2>&1); rc=$?
check "neither: make-storage refuses with exit 2 (got $rc)" [ "$rc" = 2 ]
check "… before its first write: the disk is unchanged" [ "$(sha256sum < "$T/neither.img")" = "$sum" ]
ok "… and --journal FILE makes it work" "$INPLACE" part make-storage -q "$T/neither.img" --need "$need2" --journal "$T/side.journal"
rm -f "$T/neither.img"

# ---- kill -9 during make-storage, then part resume and make-storage again --------
# crash_series BASE WHAT K...: kill at K/7 of one measured run, for each K
crash_series() {
	local base=$1 what=$2 k name pid ms dur t0
	shift 2
	cp --sparse=always "$base" "$T/crash.img"
	t0=$EPOCHREALTIME
	"$INPLACE" part make-storage -q "$T/crash.img" --need "$need" >/dev/null 2>&1
	dur=$(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 )) # ms
	for k; do
		name="kill -9 at $k/7 of make-storage$what, then resume"
		cp --sparse=always "$base" "$T/crash.img"
		setsid "$INPLACE" part make-storage -q "$T/crash.img" --need "$need" >/dev/null 2>&1 &
		pid=$!
		track_pid "$pid"
		ms=$(( dur * k / 7 ))
		sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
		kill -9 -- "-$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		if ! out=$("$INPLACE" part resume -q "$T/crash.img" 2>&1); then fail "$name" "resume: $(tail -1 <<<"$out")"; continue; fi
		if ! out=$("$INPLACE" part make-storage --json -q "$T/crash.img" --need "$need" 2>&1); then
			fail "$name" "make-storage again: $(tail -1 <<<"$out")"; continue; fi
		after_storage "$name" "$T/crash.img" "$(jq -r .partition <<<"$out")"
	done
}
crash_series "$T/base.img" "" 2 4 6
# the journal in free space: the state directory leads resume to it
GAP_WANT=$gp_full crash_series "$T/fullbase.img" " (journal in free space)" 3 5
