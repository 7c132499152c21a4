#!/bin/bash
# t-part-damaged — damaged ext filesystems, crafted here with debugfs and dd:
# show says "unknown" (JSON null and a reason) instead of 0 for what it
# cannot learn; a filesystem larger than its partition is refused by capture
# and shrink, naming both sizes.
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
