#!/bin/bash
# t-part-damaged — damaged ext filesystems, crafted here with debugfs and dd:
# show says "unknown" (JSON null and a reason) instead of 0 for what it
# cannot learn; a filesystem larger than its partition is refused by capture
# and shrink, naming both sizes; a filesystem whose block bitmap lost blocks
# in use is refused by capture (naming e2fsck) or captured whole with --raw;
# shrink says what e2fsck repaired, and --no-repair refuses to repair.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
require_tool debugfs jq || exit 1

OFF=1048576
# a fresh 32 MiB ext4 with a few files as partition 1 of d.img
fresh() {
	fx_disk d.img 40M 'label: gpt
size=32M, type=linux' && fx_mkfs d.img 1 ext4 tree
}
mkdir -p tree && head -c $((4 << 20)) /dev/urandom > tree/data.bin && echo hello > tree/hello.txt
field() { "$INPLACE" part show --json d.img | jq -c ".partitions[0].$1"; }

# ---- 17: unknown is not zero ----
fresh || { fail "fixture" "mke2fs"; exit 1; }
check "a clean filesystem: used known" [ "$(field used)" != null ] && [ "$(field used)" -gt 0 ]
check "... and no reason given" [ "$(field unknown)" = null ]

debugfs -w -R "ssv free_blocks_count 999999" "d.img?offset=$OFF" >/dev/null 2>&1
ok "more free blocks than blocks: show exits 0" "$INPLACE" part show d.img
check "... used is null, not 0" [ "$(field used)" = null ]
check "... min_size is null" [ "$(field min_size)" = null ]
check "... with the reason" sh -c '[ "$1" != null ]' _ "$(field unknown)"
check "... the table shows ? for it" sh -c '"$1" part show d.img | grep -q "^1 .* ? *? *$"' _ "$INPLACE"

fresh
debugfs -w -R "ssv blocks_per_group 7" "d.img?offset=$OFF" >/dev/null 2>&1
check "a superblock libext2fs cannot open: still ext4 to blkid" [ "$(field fs)" = '"ext4"' ]
check "... used is null" [ "$(field used)" = null ]
check "... min_size and min_bytes are null" [ "$(field min_size)$(field min_bytes)" = nullnull ]
must_fail 2 "... shrink refuses it" "$INPLACE" part shrink d.img 1 --to 24M
must_fail 1 "... capture refuses it" "$INPLACE" image capture -q d.img 1 -o out.img
check "... and writes no image" [ ! -e out.img ]

# ---- 18: a filesystem larger than its partition ----
fx_disk big.img 80M 'label: gpt
size=8M, type=linux'
mke2fs -q -F -t ext4 -d tree -E offset=$OFF big.img 65536k || { fail "fixture" "mke2fs 64M"; exit 1; }
sha256sum big.img > big.sum
must_fail 2 "a 64 MiB filesystem in an 8 MiB partition: capture refuses it" \
	"$INPLACE" image capture -q big.img 1 -o big-out.img
check "... naming both sizes" sh -c '"$1" image capture -q big.img 1 -o big-out.img 2>&1 | grep -q "67108864 bytes.*8388608 bytes"' _ "$INPLACE"
check "... and writes no image" [ ! -e big-out.img ]
must_fail 2 "... shrink refuses it" "$INPLACE" part shrink big.img 1 --to 4M
check "... naming both sizes" sh -c '"$1" part shrink big.img 1 --to 4M 2>&1 | grep -q "67108864 bytes.*8388608 bytes"' _ "$INPLACE"
check "... the disk is unchanged" sha256sum -c --quiet big.sum
check "... show names the fault in JSON" sh -c '"$1" part show --json big.img | jq -e ".partitions[0].fs_problem | test(\"larger than its partition\")" >/dev/null' _ "$INPLACE"

# ---- 16, 19: a block bitmap that lost 1000 blocks of a file ----
# (debugfs freeb keeps the checksums right: only e2fsck sees the damage)
lose_blocks() {
	local b
	b=$(debugfs -R "blocks /data.bin" "d.img?offset=$OFF" 2>/dev/null | awk '{print $1}')
	[ -n "$b" ] && debugfs -w -R "freeb $b 1000" "d.img?offset=$OFF" >/dev/null 2>&1
}
fresh && lose_blocks || { fail "fixture" "debugfs freeb"; exit 1; }
fx_hashes d.img 1 > want
cp d.img damaged.img
must_fail 2 "capture refuses a filesystem e2fsck finds damaged" "$INPLACE" image capture -q d.img 1 -o out.img
check "... naming e2fsck and --raw" sh -c '"$1" image capture -q d.img 1 -o out.img 2>&1 | grep -q "e2fsck -fn: Block bitmap differences.*--raw"' _ "$INPLACE"
check "... and writes no image" [ ! -e out.img ]
ok "capture --raw takes every block" "$INPLACE" image capture -q --raw d.img 1 -o out.img
fx_disk dst.img 40M 'label: gpt
size=32M, type=linux'
ok "... deploy of the raw image" "$INPLACE" image deploy -q out.img dst.img 1
check "... every file is there" cmp -s want <(fx_hashes dst.img 1)
check "... byte for byte the partition" cmp -s <(dd if=d.img bs=1M skip=1 count=32 status=none) \
	<(dd if=dst.img bs=1M skip=1 count=32 status=none)

must_fail 2 "shrink --no-repair refuses a filesystem e2fsck would repair" \
	"$INPLACE" part shrink d.img 1 --to 24M --no-repair
check "... the disk is unchanged" cmp -s d.img damaged.img
J=$("$INPLACE" part shrink d.img 1 --to 24M --json)
check "shrink repairs it and says so in JSON ($(jq -c '[.repairs, .repaired]' <<<"$J"))" \
	jq -e '.repairs >= 1 and (.repaired | test("Block bitmap differences"))' <<<"$J"
ok "... fsck clean after" fx_fsck d.img 1
check "... every file is still there" cmp -s want <(fx_hashes d.img 1)
cp damaged.img d.img
check "... and in its output" sh -c '"$1" part shrink d.img 1 --to 24M | grep -q "^e2fsck repaired 1 problem .*Block bitmap differences"' _ "$INPLACE"
fresh
J=$("$INPLACE" part shrink d.img 1 --to 24M --json)
check "a clean filesystem: no repairs reported" jq -e '.repairs == 0 and .repaired == null' <<<"$J"

# ---- 21: a 4Kn GPT in an image file is not a damaged one ----
truncate -s 64M k.img
printf 'g\nn\n\n\n+32M\nw\n' | fdisk -b 4096 k.img >/dev/null 2>&1
mke2fs -q -F -t ext4 -d tree -E offset=$OFF k.img 32768k || { fail "fixture" "4Kn disk"; exit 1; }
J=$("$INPLACE" part show --json k.img)
check "4Kn GPT: show reads it, 4096-byte sectors" jq -e '.sector_size == 4096 and .label == "gpt"' <<<"$J"
check "... partition 1 at 1 MiB, 32 MiB, ext4 with its usage" \
	jq -e '.partitions[0] | .start == 1048576 and .size == 33554432 and .fs == "ext4" and .used > 0' <<<"$J"
ok "... capture works" "$INPLACE" image capture -q k.img 1 -o k-out.img
# both GPT headers gone: refused, naming the sector size as a possible cause
dd if=/dev/zero of=k.img bs=4096 seek=1 count=1 conv=notrunc status=none
dd if=/dev/zero of=k.img bs=4096 seek=$((16384 - 1)) count=1 conv=notrunc status=none
sha256sum k.img > k.sum
must_fail 2 "no GPT header at 512 or 4096: refused" "$INPLACE" part show k.img
check "... the message says the sector size may be another" sh -c '"$1" part show k.img 2>&1 | grep -q "sector size"' _ "$INPLACE"
must_fail 2 "... and shrink refuses it too" "$INPLACE" part shrink k.img 1 --to 16M
check "... nothing written" sha256sum -c --quiet k.sum
