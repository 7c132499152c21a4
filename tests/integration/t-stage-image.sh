#!/bin/bash
# t-stage-image — the image reaches staging on disk, not in RAM: `stage
# build` puts the job's image (320 MiB that does not compress) on the old
# root, verified, and the initramfs holds only the bundle, the state and
# the modules; QEMU with 256 MiB of RAM (where the image could never be
# unpacked from an initramfs) boots staging, which copies the image from
# the old root into the store and deploys it.  The first staging boot is
# cut (QEMU -9) while stage-image copies, the second while deploy writes;
# the third finishes, and the deployed root holds the image's file equal.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
have_loop || { skip "stage-image" "no loop devices (the steps mount partitions)"; exit 0; }
require_tool qemu-system-x86_64 jq zstd cpio debugfs || exit 1
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state

debian_kernel || exit 1

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
head -c 320M /dev/urandom > new/opt-blob
blob_sum=$(sha256sum < new/opt-blob | cut -c1-64)
"$INPLACE" image build -q --from-dir new --fs ext4 --size 400MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
rm -f new/opt-blob
img_bytes=$(stat -c %s newos.img)
D=$T/disk.img
fx_disk "$D" 1536M $'label: dos\ntype=83'
fx_mkfs "$D" 1 ext4 old system
fx_job job.ini "$T/newos.img" "$D"
ok "run stops where the staging boot comes" "$INPLACE" run job.ini || exit 1
ok "stage build" sh -c "'$INPLACE' stage build -o stage.cpio --kernel '$K' --json > build.json" || exit 1
cpio_bytes=$(stat -c %s stage.cpio)
echo "  initramfs: $((cpio_bytes >> 20)) MiB; image: $((img_bytes >> 20)) MiB"
check "the initramfs is smaller than the image by far (it does not carry it)" \
	test "$cpio_bytes" -lt $((img_bytes / 4))
check "no file of the initramfs is larger than 64 MiB" \
	sh -c "zstd -dc stage.cpio | cpio -itv --quiet 2>/dev/null | awk '\$5 > 64 * 1048576 { bad = 1 } END { exit bad }'"
check "build says the image waits on the old root" test "$(jq -r .image.bytes build.json)" = "$img_bytes"

# boot LOG [bg]: the staging kernel and initramfs with 256 MiB, the disk as
# a virtio drive, until our init reboots (-no-reboot: QEMU ends)
boot() {
	timeout 2400 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot -kernel "$K" -initrd stage.cpio \
		-append "console=ttyS0 panic=-1" -drive "file=$D,format=raw,if=virtio" \
		-serial "file:$1" -monitor none -display none </dev/null >/dev/null 2>&1 &
	QEMU_PID=$!
	track_pid "$QEMU_PID"
	[ -n "${2:-}" ] && return 0
	wait "$QEMU_PID"
}
# cut_after LOG LINE: a staging boot killed -9 (a power cut: the guest's
# caches are lost) a moment after the console says LINE; 1 if it ended first
cut_after() {
	local qemu
	boot "$1" bg
	# QEMU itself, once timeout has started it
	for _ in $(seq 1 100); do
		qemu=$(ps -o pid= --ppid "$QEMU_PID" | tr -d ' ')
		[ -n "$qemu" ] && break
		sleep 0.1
	done
	for _ in $(seq 1 6000); do
		if grep -q "$2" "$1" 2>/dev/null; then
			sleep 2
			kill -9 "$qemu" 2>/dev/null
			wait "$QEMU_PID" 2>/dev/null
			return 0
		fi
		kill -0 "$qemu" 2>/dev/null || break
		sleep 0.2
	done
	wait "$QEMU_PID" 2>/dev/null
	return 1
}
where() { "$INPLACE" status --disk "$D" --json | jq -r '.phase + "/" + .step'; }

# ---- a cut while the image is copied into the store ----------------------------
if cut_after copy.log "stage-image: started"; then
	check "cut 1 landed in stage-image" test "$(where)" = prepare/stage-image
else
	fail "cut 1" "the staging boot ended before stage-image began: $(tail -n 3 copy.log | tr '\n' ' ')"
fi
# ---- a cut while deploy writes ----------------------------------------------------
if cut_after deploy.log "deploy: started"; then
	check "cut 2 landed in deploy" test "$(where)" = deploy/deploy
	check "the boot after the cut copied again (stage-image done)" grep -q "stage-image: done" deploy.log
else
	fail "cut 2" "the staging boot ended before deploy began: $(tail -n 3 deploy.log | tr '\n' ' ')"
fi
# ---- the staging boot that finishes ---------------------------------------------
boot stage.log
check "staging boot ends by itself (reboot)" test $? = 0
check "the state is in the store: phase restore" test "$(where)" = restore/
ok "root fsck clean" fx_fsck "$D" 1
ok "store fsck clean" fx_fsck "$D" 2
mount_part_ro "$D" 1 m
check "the image is deployed: its 320 MiB file equal" test "$(sha256sum < m/opt-blob | cut -c1-64)" = "$blob_sum"
check "the new OS's own user is there" grep -q '^dave:x:1001:' m/etc/passwd
umount m
mount_part_ro "$D" 2 m
check "stage-image took the copy on the old root" \
	jq -e '.steps[] | select(.step == "stage-image") | .result.from == "the old root"' m/inplace/state/state.json
umount m
