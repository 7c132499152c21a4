#!/bin/bash
# t-stage-image-host — the image's way to staging, signed, on the host
# (no QEMU): `stage build` puts the image and its signature on the old
# root and verifies them there (a source changed since the run and now
# badly signed is refused, and no manifest is left for staging to trust);
# built again, a good copy is kept; a copy on the old root damaged after
# the build is caught by the signature in the store before deploy, and
# the next build makes it again.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
have_loop || { skip "stage-image-host" "no loop devices (the steps mount partitions)"; exit 0; }
require_tool jq debugfs minisign || exit 1
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state

debian_kernel || exit 1

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
minisign -G -W -f -p k.pub -s k.key >/dev/null 2>&1 || { fail "fixture" "minisign -G"; exit 1; }
"$INPLACE" image build -q --from-dir new --fs ext4 --size 160MiB -s k.key -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
cp newos.img good.img
D=$T/disk.img
fx_disk "$D" 1G $'label: dos\ntype=83'
fx_mkfs "$D" 1 ext4 old system
fx_job job.ini "$T/newos.img" "$D" "store_size = 256MiB"
sed -i "s|^require_signature = no|key = $T/k.pub|" job.ini
ok "run (signed image)" "$INPLACE" run job.ini || exit 1
root_cat() { # PATH on the old root
	local l s z
	read -r s z < <(fx_part_range "$D" 1)
	l=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") || return 1
	debugfs -R "cat $1" "$l" 2>/dev/null
	losetup -d "$l"
}
dir=/var/lib/inplace/staged-image

# the source changed after the run, its signature no longer matches
printf 'X' | dd of=newos.img bs=1 seek=5000 conv=notrunc status=none
must_fail 2 "stage build: a source whose signature fails is refused" \
	"$INPLACE" stage build -o stage.cpio --kernel "$K" --no-records
check "no manifest is left on the old root for staging to trust" test -z "$(root_cat $dir/image.json)"
cp good.img newos.img

ok "stage build: the image and its signature on the old root, verified" \
	sh -c "'$INPLACE' stage build -o stage.cpio --kernel '$K' --no-records --json > b1.json"
check "the old root's copy is signed, whole" sh -c "jq -e '.image.signed and (.image.kept | not)' b1.json >/dev/null &&
	test \"\$(jq -r .image.bytes b1.json)\" = $(stat -c %s newos.img)"
check "its signature is beside it" test -n "$(root_cat $dir/os.img.minisig)"
ok "stage build again" sh -c "'$INPLACE' stage build -o stage.cpio --kernel '$K' --no-records --json > b2.json"
check "built again: the good copy is kept" jq -e .image.kept b2.json

# the copy on the old root damaged after the build: staging's copy in
# the store fails its signature, before deploy writes a byte
read -r s z < <(fx_part_range "$D" 1)
l=$(losetup -f --show -o "$s" --sizelimit "$z" "$D") && track_loop "$l" && mkdir -p m && mount "$l" m &&
	track_mount "$T/m" && printf 'X' | dd of="m$dir/os.img" bs=1 seek=5000 conv=notrunc status=none && umount m
losetup -d "$l"
must_fail 1 "resume: the damaged copy fails its signature in the store (exit 1: the disk has changed by then)" "$INPLACE" resume --disk "$D"
check "the run stopped at stage-image" test "$("$INPLACE" status --disk "$D" --json | jq -r '.phase + "/" + .step')" = \
	prepare/stage-image
ok "stage build makes the copy again" sh -c "'$INPLACE' stage build -o stage.cpio --kernel '$K' --no-records --json > b3.json"
check "made again, not kept" jq -e '.image.kept | not' b3.json
