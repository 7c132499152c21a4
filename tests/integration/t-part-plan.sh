#!/bin/bash
# t-part-plan.sh — `inplace part plan` and `part make-storage` on the named
# layouts: free tail space, a full disk where shrinking the last partition
# suffices (ext4, NTFS), a full disk where a middle partition shrinks and
# the next one moves, MBR with an extended partition (free space inside it,
# or after it: the container grows), MBR with three
# primaries (a new extended one), and the refusals (four primaries, a
# 95%-full filesystem, xfs).  After make-storage: every old filesystem
# clean with the same files, the storage partition ext4, labelled, of the
# size asked; plan and --dry-run write nothing.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

MiB=$((1024 * 1024))
FX_SRC=$T/src

# ops IMG NEED: the plan's operations, e.g. "shrink move create".
ops() { "$INPLACE" part plan --json "$1" --need "$2" | jq -r '[.steps[].op] | join(" ")'; }

# storage_case NAME IMG NEED "OPS" PARTS...: plan shows OPS and writes
# nothing; make-storage carries it out; PARTS keep their files and fsck.
storage_case() {
	local name=$1 img=$2 need=$3 want=$4 sum got out n start size label fs
	shift 4
	local parts=("$@") why
	fx_parts_save "$T/before" "$img" "${parts[@]}"
	sum=$(cksum < "$img")
	got=$(ops "$img" "$need")
	if [ "$got" != "$want" ]; then fail "$name: plan" "steps '$got', wanted '$want'"; return 1; fi
	"$INPLACE" part make-storage --dry-run "$img" --need "$need" >/dev/null
	if [ "$(cksum < "$img")" != "$sum" ]; then fail "$name: plan" "plan or --dry-run wrote"; return 1; fi
	pass "$name: plan"
	if ! out=$("$INPLACE" part make-storage --json -q "$img" --need "$need" 2>&1); then
		fail "$name: make-storage" "$(tail -1 <<<"$out")"; return 1; fi
	n=$(jq -r .partition <<<"$out")
	read -r start size < <(fx_part_range "$img" "$n")
	fs=$(blkid -p -O "$start" -o value -s TYPE "$img")
	label=$(blkid -p -O "$start" -o value -s LABEL "$img")
	if [ "$fs" != ext4 ] || [ "$label" != INPLACE-STORE ]; then fail "$name: make-storage" "partition $n is '$fs' '$label'"; return 1; fi
	if [ "$size" -lt "$(numfmt --from=iec-i "${need%B}")" ]; then fail "$name: make-storage" "partition $n has $size bytes"; return 1; fi
	if ! fx_fsck "$img" "$n"; then fail "$name: make-storage" "storage fsck"; return 1; fi
	if ! why=$(fx_parts_same "$T/before" "$img" "${parts[@]}"); then fail "$name: make-storage" "$why"; return 1; fi
	pass "$name: make-storage"
	# idempotent: a second run finds the storage partition and writes nothing
	sum=$(cksum < "$img")
	got=$("$INPLACE" part make-storage --json -q "$img" --need "$need" 2>/dev/null | jq -r '[.existing, .partition] | @tsv')
	if [ "$got" != "$(printf 'true\t%s' "$(jq -r .partition <<<"$out")")" ] || [ "$(cksum < "$img")" != "$sum" ]; then
		fail "$name: make-storage again" "got '$got'"; return 1; fi
	pass "$name: make-storage again is a no-op"
}

# refuse_case NAME IMG NEED: plan and make-storage exit 2, one line, image unchanged.
refuse_case() {
	local name=$1 img=$2 need=$3 sum out rc verb
	sum=$(sha256sum < "$img")
	for verb in plan make-storage; do
		out=$("$INPLACE" part "$verb" "$img" --need "$need" 2>&1 >/dev/null); rc=$?
		if [ "$rc" -ne 2 ]; then fail "$name: $verb" "exit $rc: $out"; return 1; fi
		if [ "$(wc -l <<<"$out")" -ne 1 ]; then fail "$name: $verb" "not one line: $out"; return 1; fi
	done
	if [ "$(sha256sum < "$img")" != "$sum" ]; then fail "$name" "image changed"; return 1; fi
	pass "$name"
}

fx_disk_gpt_free "$T/free.img"
storage_case "gpt free tail" "$T/free.img" 200MiB "create" 1 2

fx_disk_gpt_full_last "$T/last.img"
storage_case "gpt full, shrink last ext4" "$T/last.img" 200MiB "shrink create" 1 2

fx_disk_gpt_ntfs_last "$T/ntfs.img"
storage_case "gpt full, shrink last ntfs" "$T/ntfs.img" 200MiB "shrink create" 1 2

fx_disk_gpt_full_middle "$T/middle.img"
storage_case "gpt, shrink middle and move next" "$T/middle.img" 280MiB "shrink move create" 1 2 3

fx_disk_mbr_ext "$T/mbr.img"
storage_case "mbr, logical in the extended" "$T/mbr.img" 150MiB "create" 1 2 5

fx_disk_mbr_ext_end "$T/extend.img"
storage_case "mbr, no slot: grow the extended partition" "$T/extend.img" 100MiB "grow-extended create" 5

fx_disk_mbr_four "$T/three.img"
"$INPLACE" part delete "$T/three.img" 4 >/dev/null
storage_case "mbr, last primary slot becomes extended" "$T/three.img" 150MiB "create-extended create" 1 2 3

fx_disk_mbr_four "$T/four.img"
refuse_case "mbr with four primaries" "$T/four.img" 100MiB

fx_disk_gpt_95full "$T/full95.img"
refuse_case "95%-full filesystem" "$T/full95.img" 64MiB

if fx_disk_gpt_xfs "$T/xfs.img" 2>/dev/null; then
	refuse_case "xfs cannot shrink" "$T/xfs.img" 64MiB
else
	skip "xfs cannot shrink" "mkfs.xfs unavailable (xfsprogs)"
fi

refuse_case "no room even after shrinking" "$T/free.img" 2GiB
out=$("$INPLACE" part plan "$T/nonexistent.img" --need 1G 2>&1); rc=$?
check "plan: missing disk exits 2" test "$rc" = 2
out=$("$INPLACE" part plan "$T/free.img" --need 0 2>&1); rc=$?
check "plan: --need 0 exits 2" test "$rc" = 2

# ---- kill -9 during make-storage, then run it again ------------------------------
# The whole process group goes (inplace and the resize2fs or e2fsck it runs),
# at instants spread over one measured run: the second run finishes the
# interrupted shrink or move (part resume) and plans again from there, or
# finds the storage partition made.  Every file stays, every fs is clean.
fx_disk_gpt_full_middle "$T/crash0.img"
c2=$(fx_hashes "$T/crash0.img" 2) c3=$(fx_hashes "$T/crash0.img" 3)
cp --sparse=always "$T/crash0.img" "$T/crash.img"
t0=$EPOCHREALTIME
"$INPLACE" part make-storage -q "$T/crash.img" --need 280MiB >/dev/null 2>&1
dur=$(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 )) # ms
for k in 1 2 3 4 5 6; do
	name="kill -9 at $k/7 of make-storage"
	cp --sparse=always "$T/crash0.img" "$T/crash.img"
	setsid "$INPLACE" part make-storage -q "$T/crash.img" --need 280MiB >/dev/null 2>&1 &
	pid=$!
	track_pid "$pid"
	sleep "$(printf '0.%03d' $(( dur * k / 7 % 1000 )))"
	[ $(( dur * k / 7 )) -ge 1000 ] && sleep $(( dur * k / 7 / 1000 ))
	kill -9 -- "-$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rerun=ok n=""
	out=$("$INPLACE" part make-storage --json -q "$T/crash.img" --need 280MiB 2>&1) || rerun="failed (exit $?)"
	if [ "$rerun" != ok ]; then
		fail "$name" "second run $rerun: $(grep "^inplace" <<<"$out" | tail -1)"
		continue
	fi
	n=$(jq -r .partition <<<"$out")
	if [ "$(fx_hashes "$T/crash.img" 2)" != "$c2" ] || [ "$(fx_hashes "$T/crash.img" 3)" != "$c3" ]; then
		fail "$name" "files changed"; continue; fi
	bad=""
	for p in 2 3 "$n"; do fx_fsck "$T/crash.img" "$p" || bad="$bad $p"; done
	if [ -n "$bad" ]; then fail "$name" "fsck found problems on partition(s)$bad"; continue; fi
	pass "$name"
done
