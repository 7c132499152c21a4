#!/bin/bash
# t-part-plan-multi.sh — make-storage when no single filesystem can give the
# room: MBR with three primaries (the issue's case, scaled down, half full),
# GPT with root, /home and swap, and MBR with three logical partitions
# (two shrink, the last moves down with its boot record, the room joins at
# the container's end); every filesystem filled through a loop mount.  The size asked is computed from
# the minimums `part show` reports, so that one filesystem is not enough and
# two are, whatever the minimum's estimator: the plan shrinks two, every
# file stays, every fs is clean.  A disk where used + asked exceeds what
# shrinking everything frees is refused in one line naming the shortfall,
# the image byte for byte unchanged.  kill -9 in the move of a logical
# partition, then `part resume`: every logical's files intact, fsck clean.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

MiB=$((1024 * 1024))
FX_SRC=$T/src

# room IMG: "NUMBER RECLAIM_MIB" per shrinkable partition, most room first,
# as the planner counts it (minimum + 5% + 64 MiB, rounded up to 1 MiB)
room() {
	"$INPLACE" part show --json "$1" | jq -r '.partitions[] | select(.resizable and .min_size > 0) |
		"\(.number) \(.size) \(.min_size)"' |
	while read -r n size min; do
		keep=$(( (min + min / 20 + 64 * MiB + MiB - 1) / MiB * MiB ))
		[ "$keep" -lt "$size" ] && echo "$n $(( (size - keep) / MiB ))"
	done | sort -k2,2nr
}

# multi_case NAME IMG OVERHEAD_MIB PARTS...: ask for more than the roomiest
# filesystem frees, less than the two roomiest; make-storage must shrink two
multi_case() {
	local name=$1 img=$2 ovh=$3 r1 r2 need out n shrinks why
	shift 3
	{ read -r _ r1; read -r _ r2; } < <(room "$img")
	if [ -z "${r2:-}" ] || [ "$r2" -le $((ovh + 4)) ]; then fail "$name" "fixture: not two filesystems with room ($r1, ${r2:-none})"; return 1; fi
	need=$(( r1 + r2 / 2 - ovh ))MiB
	fx_parts_save "$T/before" "$img" "$@"
	shrinks=$("$INPLACE" part plan --json "$img" --need "$need" | jq '[.steps[] | select(.op == "shrink")] | length')
	check "$name: plan shrinks two filesystems for $need (got $shrinks)" [ "$shrinks" = 2 ]
	if ! out=$("$INPLACE" part make-storage --json -q "$img" --need "$need" 2>&1); then
		fail "$name: make-storage" "$(tail -1 <<<"$out")"; return 1; fi
	n=$(jq -r .partition <<<"$out")
	read -r start size < <(fx_part_range "$img" "$n")
	if [ "$size" -lt $(( ${need%MiB} * MiB )) ]; then fail "$name: make-storage" "partition $n has $size bytes"; return 1; fi
	if ! fx_fsck "$img" "$n"; then fail "$name: make-storage" "storage fsck"; return 1; fi
	if ! why=$(fx_parts_same "$T/before" "$img" "$@"); then fail "$name: make-storage" "$why"; return 1; fi
	pass "$name: make-storage, files intact, fsck clean"
}

# Half full, through the kernel (a layout mke2fs -d does not make): with
# the true minimum (fs_ext_min.c) the half-full disks have room.
FILL=50

# fill_mount IMG N...: each ext4 partition N filled through a loop mount
# (a loop device over its range: partition nodes of logicals may not
# appear): the tree, a copy deleted again (holes), random data up to FILL%.
fill_mount() {
	local img=$1 n m=$T/mnt dev start size total used
	_fx_src || return 1
	shift
	mkdir -p "$m"
	for n; do
		read -r start size < <(fx_part_range "$img" "$n")
		dev=$(losetup -f --show -o "$start" --sizelimit "$size" "$img") || return 1
		track_loop "$dev"
		mount "$dev" "$m" || return 1
		track_mount "$m"
		mkdir -p "$m/a" && cp -a "$FX_SRC/." "$m/a/" && cp -a "$FX_SRC/." "$m/junk" || return 1
		sync; rm -rf "$m/junk"
		read -r total used < <(df -B1 --output=size,used "$m" | tail -1)
		[ $((total * FILL / 100)) -gt "$used" ] && head -c $((total * FILL / 100 - used)) /dev/urandom > "$m/top-up.bin"
		umount "$m" && losetup -d "$dev" || return 1
	done
}
have_loop || { skip "make-storage on half-full disks" "no loop devices"; exit 0; }

# MBR: the new partition is the fourth primary slot, so an extended
# container around a logical one (1 MiB for its boot record)
fx_disk_mbr_three "$T/mbr3.img" 0 && fill_mount "$T/mbr3.img" 1 2 3 || { fail "fixture" "fx_disk_mbr_three"; exit 1; }
cp --sparse=always "$T/mbr3.img" "$T/mbr3-full.img"
multi_case "mbr, three primaries half full" "$T/mbr3.img" 1 1 2 3

fx_disk_gpt_root_home_swap "$T/gpt.img" 0 && fill_mount "$T/gpt.img" 1 2 || { fail "fixture" "fx_disk_gpt_root_home_swap"; exit 1; }
check "swap is on partition 3" [ "$(blkid -p -O $((541 * MiB)) -o value -s TYPE "$T/gpt.img")" = swap ]
multi_case "gpt, root + /home + swap" "$T/gpt.img" 0 1 2

# used + asked exceeds the disk: refused, one line, the shortfall named
total=$("$INPLACE" part show --json "$T/mbr3-full.img" | jq '.size / 1048576 | floor')
sum=$(sha256sum < "$T/mbr3-full.img")
out=$("$INPLACE" part make-storage -q "$T/mbr3-full.img" --need "$((total / 2))MiB" 2>&1 >/dev/null); rc=$?
check "too full: exit 2 (got $rc)" [ "$rc" = 2 ]
check "too full: one line naming the shortfall" sh -c '[ "$(printf "%s\n" "$1" | wc -l)" = 1 ] && printf "%s" "$1" | grep -q " short"' _ "$out"
check "too full: the image is unchanged" [ "$(sha256sum < "$T/mbr3-full.img")" = "$sum" ]

# MBR, three logical partitions filling the container, the primary before
# it too small to give room: two logicals shrink and the one behind moves
# down, its boot record along
fx_disk "$T/log.img" 1024M 'label: dos
start=1MiB, size=64MiB, type=83
type=5
size=300MiB, type=83
size=300MiB, type=83
type=83' && fx_mkfs "$T/log.img" 1 ext4 && fx_mkfs "$T/log.img" 5 ext4 && fx_mkfs "$T/log.img" 6 ext4 &&
	fx_mkfs "$T/log.img" 7 ext4 && fill_mount "$T/log.img" 1 5 6 7 || { fail "fixture" "three logicals"; exit 1; }
cp --sparse=always "$T/log.img" "$T/log-base.img"
moves=$("$INPLACE" part plan --json "$T/log.img" --need "$(( $(room "$T/log.img" | head -1 | cut -d' ' -f2) + 8 ))MiB" |
	jq '[.steps[] | select(.op == "move")] | length')
check "logicals: the plan moves a logical partition (got $moves)" [ "${moves:-0}" -ge 1 ]
multi_case "mbr, three logicals half full" "$T/log.img" 0 1 5 6 7

# kill -9 in the move of logical 7 down behind a shrunk 6, then resume
now_ms() { date +%s%3N; }
fx_parts_save "$T/lbefore" "$T/log-base.img" 6 7
"$INPLACE" part shrink -q "$T/log-base.img" 6 --to 240MiB >/dev/null || fail "logicals: shrink 6"
read -r from _ < <(fx_part_range "$T/log-base.img" 7)
read -r s6 z6 < <(fx_part_range "$T/log-base.img" 6)
to=$(( (s6 + z6 + 2 * MiB - 1) / MiB * MiB ))
cp --sparse=always "$T/log-base.img" "$T/lwork.img"
t0=$(now_ms)
"$INPLACE" part move -q "$T/lwork.img" 7 --to "$to" >/dev/null 2>&1 || fail "logicals: uninterrupted move"
dur=$(( $(now_ms) - t0 )); [ "$dur" -lt 20 ] && dur=20
for i in 1 2 3; do
	cp --sparse=always "$T/log-base.img" "$T/lwork.img"
	ms=$(( i == 1 ? 5 : RANDOM % dur ))
	"$INPLACE" part move -q "$T/lwork.img" 7 --to "$to" >/dev/null 2>&1 &
	pid=$!; track_pid "$pid"
	sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
	kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
	name="logicals: kill -9 $ms ms into the move of 7, resume"
	if ! out=$("$INPLACE" part resume --json "$T/lwork.img" 2>&1); then fail "$name" "resume: $out"; continue; fi
	read -r start _ < <(fx_part_range "$T/lwork.img" 7)
	if [ "$start" != "$from" ] && [ "$start" != "$to" ]; then fail "$name" "partition 7 at $start"; continue; fi
	if ! why=$(fx_parts_same "$T/lbefore" "$T/lwork.img" 6 7); then fail "$name" "$why"; continue; fi
	pass "$name: files intact, fsck clean, 7 at $((start / MiB)) MiB"
done
rm -f "$T/lwork.img" "$T/log-base.img"
