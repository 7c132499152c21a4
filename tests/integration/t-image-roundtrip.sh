#!/bin/bash
# t-image-roundtrip — capture ext4 and NTFS partitions, deploy them onto
# other partitions (same size, and larger with --grow), compare every file's
# sha256 and fsck; stock `zstd -d` gives the source in every used range;
# minisign signatures verify both ways.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
export INPLACE_STATE_DIR=$T/state

fx_tree tree 6 >/dev/null 2>&1
fx_disk src.img 300M 'label: gpt
size=96M, type=linux
size=96M, type=linux'
fx_disk dst.img 420M 'label: gpt
size=96M, type=linux
size=160M, type=linux
size=100M, type=linux'

# used ranges from `image info --json` as "OFF LEN" lines
ranges() { "$INPLACE" image info --json "$1" | tr -d ' \n' | grep -o '"used":\[\[[0-9,\[\]*\]\]' |
	grep -o '\[[0-9]*,[0-9]*\]' | tr -d '[]' | tr ',' ' '; }

# every used range of partition N of IMG equals the same range of RAW
same_used() {
	local img=$1 n=$2 raw=$3 image=$4 start size off len
	read -r start size < <(fx_part_range "$img" "$n")
	while read -r off len; do
		cmp -s -n "$len" -i "$((start + off)):$off" "$img" "$raw" || { echo "range $off+$len differs"; return 1; }
	done < <(ranges "$image")
}

roundtrip() {
	local fs=$1 part=$2
	local label="$fs"
	if ! fx_mkfs src.img "$part" "$fs" tree; then skip "$label: build fixture" "mkfs/mount of $fs failed"; return; fi
	if [ "$fs" = ext4 ]; then
		# leave stale data in free blocks: it must not reach the image
		read -r s _ < <(fx_part_range src.img "$part")
		debugfs -w -R "rm /data/random.bin" "src.img?offset=$s" >/dev/null 2>&1
	fi
	fx_hashes src.img "$part" > "want.$fs"
	ok "$label: capture" "$INPLACE" image capture -q src.img "$part" -o "$fs.img" --name "$label test" --sign k.key
	ok "$label: info" "$INPLACE" image info "$fs.img"
	ok "$label: verify with key" "$INPLACE" image verify -q --key k.pub "$fs.img"
	ok "$label: minisign -V accepts our signature" minisign -Vq -p k.pub -m "$fs.img"
	ok "$label: zstd -d decompresses it" zstd -q -d -f "$fs.img" -o "$fs.raw"
	ok "$label: zstd -d output equals the source in every used range" same_used src.img "$part" "$fs.raw" "$fs.img"
	ok "$label: deploy onto an equal partition" "$INPLACE" image deploy -q --key k.pub "$fs.img" dst.img 1
	check "$label: every file's sha256 equal" cmp -s "want.$fs" <(fx_hashes dst.img 1)
	ok "$label: fsck clean" fx_fsck dst.img 1
	ok "$label: deploy onto a larger partition with --grow" "$INPLACE" image deploy -q --grow "$fs.img" dst.img 2
	check "$label: files equal after --grow" cmp -s "want.$fs" <(fx_hashes dst.img 2)
	ok "$label: fsck clean after --grow" fx_fsck dst.img 2
	check "$label: deployed partition equals zstd -d output in every used range" same_used dst.img 1 "$fs.raw" "$fs.img"
	rm -f "$fs.raw"
}

minisign -G -W -f -p k.pub -s k.key >/dev/null 2>&1 || { skip "all" "minisign -G failed"; exit 0; }
roundtrip ext4 1
# the grown ext4 fills its 160 MiB partition
read -r s _ < <(fx_part_range dst.img 2)
check "ext4: grown to the partition" [ "$(dumpe2fs -h "dst.img?offset=$s" 2>/dev/null | awk -F: '/^Block count/ {print $2 * 1}')" -ge $((150 * 1024)) ]
roundtrip ntfs 2
ntfs_size() {
	local start size
	read -r start size < <(fx_part_range "$1" "$2")
	dd if="$1" of=part.tmp bs=1M skip="$start" count="$size" iflag=skip_bytes,count_bytes conv=sparse status=none
	ntfsresize --info --force --no-progress-bar part.tmp 2>/dev/null | awk '/Current volume size:/ {print $4}'
	rm -f part.tmp
}
check "ntfs: grown to the partition" [ "$(ntfs_size dst.img 2)" -ge $((150 << 20)) ]


# images signed by minisign -S verify with our verifier, legacy too
cp ext4.img other.img
ok "minisign -S signature verifies with image verify --key" bash -c "minisign -S -s k.key -m other.img >/dev/null && '$INPLACE' image verify -q --key k.pub other.img"
ok "legacy minisign -S -l signature verifies" bash -c "minisign -S -l -s k.key -m other.img >/dev/null && '$INPLACE' image verify -q --key k.pub other.img"
ok "info --json is one document with a version" bash -c "'$INPLACE' image info --json ext4.img | tr -d ' \n' | grep -q '^{\"version\":1,.*\"fs_type\":\"ext4\"'"
