#!/bin/bash
# t-part-table.sh — `inplace part show/create/delete` on GPT and MBR images
# (extended and logical partitions too), formatting ext4 and NTFS: fsck of
# every new filesystem, file hashes of the untouched ones unchanged; bad
# input exits 2 with one line and leaves the image byte-for-byte unchanged.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

MiB=$((1024 * 1024))
FX_SRC=$T/src

# refuse NAME IMG CMD...: exit 2, one line on stderr, IMG unchanged (CRC
# per case, which is fast; sha256 around each batch with sha_begin/sha_end).
refuse() {
	local name=$1 img=$2 sum="" out rc
	shift 2
	[ -f "$img" ] && sum=$(cksum < "$img")
	out=$("$@" 2>&1 >/dev/null); rc=$?
	if [ "$rc" -ne 2 ]; then fail "$name" "exit $rc, wanted 2: $out"; return 1; fi
	if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then fail "$name" "not one line: $out"; return 1; fi
	if [ -f "$img" ] && [ "$(cksum < "$img")" != "$sum" ]; then fail "$name" "image changed"; return 1; fi
	pass "$name"
}
sha_begin() { SHA=$(sha256sum < "$1"); }
sha_end() { check "$1: sha256 unchanged by the refusals" test "$(sha256sum < "$2")" = "$SHA"; }

# created NAME IMG N START_MIB SIZE_MIB FS LABEL: the partition is where
# asked, and its filesystem is clean and labelled.
created() {
	local name=$1 img=$2 n=$3 s=$4 z=$5 fs=$6 label=$7 start size got
	read -r start size < <(fx_part_range "$img" "$n")
	if [ "${start:-0}" -ne $((s * MiB)) ] || [ "${size:-0}" -ne $((z * MiB)) ]; then
		fail "$name" "partition $n at ${start:-?}+${size:-?}"; return 1; fi
	if [ "$fs" != none ]; then
		got=$(blkid -p -O "$start" -o value -s TYPE "$img" 2>/dev/null)
		if [ "$got" != "$fs" ]; then fail "$name" "fs is '$got', wanted $fs"; return 1; fi
		got=$(blkid -p -O "$start" -o value -s LABEL "$img" 2>/dev/null)
		if [ "$got" != "$label" ]; then fail "$name" "label is '$got'"; return 1; fi
		if ! fx_fsck "$img" "$n"; then fail "$name" "fsck found problems"; return 1; fi
	fi
	pass "$name"
}

# same NAME IMG N HASHES: files of partition N unchanged and fsck clean.
same() {
	if [ "$(fx_hashes "$2" "$3")" != "$4" ]; then fail "$1" "files changed"; return 1; fi
	if ! fx_fsck "$2" "$3"; then fail "$1" "fsck found problems"; return 1; fi
	pass "$1"
}

for verb in show create delete plan make-storage; do
	ok "part $verb --help" "$INPLACE" part "$verb" --help
done

# ---- GPT ----------------------------------------------------------------------
G=$T/gpt.img
fx_disk_gpt_free "$G" || { fail "gpt fixture" "could not build"; exit 1; }
g1=$(fx_hashes "$G" 1) g2=$(fx_hashes "$G" 2)

ok "gpt: show" "$INPLACE" part show "$G"
J=$("$INPLACE" part show --json "$G")
check "gpt: show --json" test "$(jq -r '[.version, .label, (.partitions|length), .partitions[0].fs, .partitions[0].label,
	.partitions[1].fs, (.partitions[0].used > 0), (.partitions[0].min_size > 0), (.free[0].size >= 254 * 1048576)] | @tsv' <<<"$J")" \
	= "$(printf '1\tgpt\t2\text4\tROOT\tntfs\ttrue\ttrue\ttrue')"

sum=$(cksum < "$G")
ok "gpt: create --dry-run" "$INPLACE" part create "$G" --start 300MiB --size 64MiB --fs ext4 --dry-run
check "gpt: dry run wrote nothing" test "$(cksum < "$G")" = "$sum"

J=$("$INPLACE" part create --json "$G" --start 300MiB --size 64MiB --fs ext4 --label NEWEXT)
check "gpt: create ext4 reports partition 3" test "$(jq -r .partition <<<"$J")" = 3
created "gpt: ext4 partition made" "$G" 3 300 64 ext4 NEWEXT
ok "gpt: create ntfs" "$INPLACE" part create -q "$G" --start 400MiB --size 64MiB --fs ntfs --label NEWNTFS
created "gpt: ntfs partition made" "$G" 4 400 64 ntfs NEWNTFS
ok "gpt: create unformatted" "$INPLACE" part create "$G" --start 470MiB --size 8MiB
created "gpt: unformatted partition made" "$G" 5 470 8 none ""
same "gpt: partition 1 untouched" "$G" 1 "$g1"
same "gpt: partition 2 untouched" "$G" 2 "$g2"

ok "gpt: delete 3" "$INPLACE" part delete "$G" 3
check "gpt: 3 gone" test "$(partx -g -n 3 -o NR "$G" 2>/dev/null)" = ""
created "gpt: 4 still there" "$G" 4 400 64 ntfs NEWNTFS
same "gpt: partition 1 untouched after delete" "$G" 1 "$g1"

sha_begin "$G"
refuse "gpt: overlapping start" "$G" "$INPLACE" part create "$G" --start 100MiB --size 10MiB
refuse "gpt: unaligned start" "$G" "$INPLACE" part create "$G" --start $((300 * MiB + 512)) --size 10MiB
refuse "gpt: size beyond disk" "$G" "$INPLACE" part create "$G" --start 300MiB --size 1GiB
refuse "gpt: extended on GPT" "$G" "$INPLACE" part create "$G" --start 300MiB --size 10MiB --type extended
refuse "gpt: xfs not supported" "$G" "$INPLACE" part create "$G" --start 300MiB --size 10MiB --fs xfs
refuse "gpt: btrfs not supported" "$G" "$INPLACE" part create "$G" --start 300MiB --size 10MiB --fs btrfs
refuse "gpt: delete N out of range" "$G" "$INPLACE" part delete "$G" 9
refuse "gpt: delete N=0" "$G" "$INPLACE" part delete "$G" 0
refuse "gpt: delete N not a number" "$G" "$INPLACE" part delete "$G" two
refuse "gpt: create without --size" "$G" "$INPLACE" part create "$G" --start 300MiB
sha_end gpt "$G"

# ---- MBR with extended and logical partitions -----------------------------------
M=$T/mbr.img
fx_disk_mbr_ext "$M" || { fail "mbr fixture" "could not build"; exit 1; }
m1=$(fx_hashes "$M" 1) m2=$(fx_hashes "$M" 2) m5=$(fx_hashes "$M" 5)
ok "mbr: show" "$INPLACE" part show "$M"
check "mbr: show --json sees the container" test \
	"$("$INPLACE" part show --json "$M" | jq -r '[.label, (.partitions[] | select(.number == 3) | .extended),
		(.partitions[] | select(.number == 5) | .logical), (.free[0].inside_extended)] | @tsv')" = "$(printf 'dos\ttrue\ttrue\ttrue')"
ok "mbr: create logical ext4" "$INPLACE" part create "$M" --type logical --start 330MiB --size 64MiB --fs ext4 --label LOG6
created "mbr: logical 6 made" "$M" 6 330 64 ext4 LOG6
ok "mbr: create logical ntfs" "$INPLACE" part create "$M" --type logical --start 400MiB --size 64MiB --fs ntfs --label LOG7
created "mbr: logical 7 made" "$M" 7 400 64 ntfs LOG7
same "mbr: partition 1 untouched" "$M" 1 "$m1"
same "mbr: partition 2 untouched" "$M" 2 "$m2"
same "mbr: logical 5 untouched" "$M" 5 "$m5"
sha_begin "$M"
refuse "mbr: logical outside the container" "$M" "$INPLACE" part create "$M" --type logical --start 1MiB --size 8MiB
refuse "mbr: a second extended" "$M" "$INPLACE" part create "$M" --type extended --start 470MiB --size 8MiB
refuse "mbr: delete the container of logicals" "$M" "$INPLACE" part delete "$M" 3
sha_end mbr "$M"
# MBR logical numbers follow the chain: deleting 6 makes the old 7 the new 6
ok "mbr: delete logical 6" "$INPLACE" part delete "$M" 6
created "mbr: logical 7 renumbered 6" "$M" 6 400 64 ntfs LOG7
same "mbr: logical 5 untouched after delete" "$M" 5 "$m5"

M2=$T/mbr2.img
fx_disk "$M2" 256M 'label: dos
start=1MiB, size=64MiB, type=83'
ok "mbr: create extended" "$INPLACE" part create "$M2" --type extended --start 100MiB --size 150MiB
created "mbr: extended made" "$M2" 2 100 150 none ""
ok "mbr: create logical in the new container" "$INPLACE" part create "$M2" --type logical --start 101MiB --size 32MiB --fs ext4 --label L5
created "mbr: logical 5 made" "$M2" 5 101 32 ext4 L5
ok "mbr: create primary after it" "$INPLACE" part create "$M2" --start 66MiB --size 32MiB --fs ext4 --label P3
created "mbr: primary 3 made" "$M2" 3 66 32 ext4 P3

F=$T/four.img
fx_disk_mbr_four "$F"
sha_begin "$F"
refuse "mbr: no fifth primary" "$F" "$INPLACE" part create "$F" --start 300MiB --size 16MiB
sha_end "four primaries" "$F"

# ---- not a disk, no table, a damaged table ------------------------------------------
refuse "missing disk: show" "" "$INPLACE" part show "$T/nonexistent.img"
refuse "missing disk: create" "" "$INPLACE" part create "$T/nonexistent.img" --start 1MiB --size 1MiB
refuse "missing disk: delete" "" "$INPLACE" part delete "$T/nonexistent.img" 1
refuse "a directory is not a disk" "" "$INPLACE" part show "$T"
refuse "/dev/null is not a disk" "" "$INPLACE" part show /dev/null
: > "$T/empty.img"
refuse "an empty file is not a disk" "$T/empty.img" "$INPLACE" part show "$T/empty.img"
B=$T/blank.img
truncate -s 64M "$B"
refuse "no table: show" "$B" "$INPLACE" part show "$B"
refuse "no table: create" "$B" "$INPLACE" part create "$B" --start 1MiB --size 8MiB
C=$T/corrupt.img
fx_disk "$C" 64M 'label: gpt
start=1MiB, size=16MiB, type=linux'
# both GPT headers damaged: the primary at LBA 1, the backup at the last LBA
printf 'garbage!' | dd of="$C" bs=1 seek=512 conv=notrunc status=none
printf 'garbage!' | dd of="$C" bs=1 seek=$((64 * MiB - 512)) conv=notrunc status=none
SHA_C=$(sha256sum < "$C")
refuse "damaged table: show" "$C" "$INPLACE" part show "$C"
refuse "damaged table: create" "$C" "$INPLACE" part create "$C" --start 20MiB --size 8MiB
refuse "damaged table: delete" "$C" "$INPLACE" part delete "$C" 1
check "damaged table: sha256 unchanged" test "$(sha256sum < "$C")" = "$SHA_C"

# ---- a GPT whose entries overlap (issue 11 item 10) ----------------------------------
# sfdisk refuses to write overlapping entries: move entry N's first LBA in
# both entry arrays and fix the header CRCs, as a damaged disk would have it.
gpt_set_first_lba() {
	python3 - "$@" <<'PY'
import struct, sys, zlib
img, n, lba = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(img, 'r+b') as f:
    f.seek(0, 2)
    for hdr in (1, f.tell() // 512 - 1):
        f.seek(hdr * 512); h = bytearray(f.read(92))
        assert h[:8] == b'EFI PART'
        elba, nent, esz = struct.unpack_from('<QII', h, 72)
        f.seek(elba * 512); ents = bytearray(f.read(nent * esz))
        struct.pack_into('<Q', ents, (n - 1) * esz + 32, lba)
        f.seek(elba * 512); f.write(ents)
        struct.pack_into('<I', h, 88, zlib.crc32(ents))
        struct.pack_into('<I', h, 16, 0)
        struct.pack_into('<I', h, 16, zlib.crc32(bytes(h)))
        f.seek(hdr * 512); f.write(h)
PY
}
O=$T/overlap.img
fx_disk "$O" 256M 'label: gpt
start=1MiB, size=100MiB, type=linux
start=101MiB, size=50MiB, type=linux'
fx_mkfs "$O" 1 ext4 "$FX_SRC" ROOT
if gpt_set_first_lba "$O" 2 $((80 * 2048)); then
	sha_begin "$O"
	refuse "overlapping GPT: shrink refused before resize2fs" "$O" "$INPLACE" part shrink "$O" 1 --to 60MiB
	refuse "overlapping GPT: create refused" "$O" "$INPLACE" part create "$O" --start 200MiB --size 16MiB
	refuse "overlapping GPT: move refused" "$O" "$INPLACE" part move "$O" 2 --to 200MiB
	refuse "overlapping GPT: delete refused" "$O" "$INPLACE" part delete "$O" 2
	refuse "overlapping GPT: make-storage refused" "$O" "$INPLACE" part make-storage "$O" --need 32MiB
	sha_end "overlapping GPT" "$O"
	check "overlapping GPT: show names the overlap" test \
		"$("$INPLACE" part show --json "$O" 2>/dev/null | jq -r .problem)" != null
else
	fail "overlapping GPT fixture" "python3 could not rewrite the entries"
fi
