#!/bin/bash
# t-stage-cuts — power cuts in the staging boot beyond the shrink (issue 12
# §4): QEMU (kill -9: the guest's caches are lost) in the middle of the
# save (profiles being written into the store), of the deploy (the image
# being written over the root) and of the configure step (fstab, first-boot
# unit, the boot fix), each on its own staging boot of the same disk; a
# last staging boot finishes the job, and the first boot played by
# `resume` on the host restores every user equal by hash.  The cut instant
# is read from the disk: the store's state.json (copied out, its journal
# replayed by e2fsck) says the step is running, and after the kill it still
# does, so the cut fell between the step's begin and its end.  The guest's
# disk is throttled on the cut boots (QEMU's block throttling), so that
# each step lasts seconds; a cut that missed its step is tried again from a
# copy of the disk, and a visible skip when never cut.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
have_loop || { skip "stage-cuts" "no loop devices (the steps mount partitions)"; exit 0; }
require_tool qemu-system-x86_64 jq debugfs || exit 1
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state

tree=$(debian_tree "$DEBIAN_OS_PKGS") || { fail "fixture" "debian_tree"; exit 1; }
K=$(ls "$tree"/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$K" ] || { fail "fixture" "no kernel in $tree/boot"; exit 1; }

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
# data that does not compress, so that the save and the deploy write for
# seconds through the throttled disk
head -c 16M /dev/urandom > old/home/alice/big.bin && chown 1000:1000 old/home/alice/big.bin
head -c 16M /dev/urandom > new/opt-blob
"$INPLACE" image build -q --from-dir new --fs ext4 --size 160MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
users='^(alice|bob|carol)/'
snap_home() { bash "$TESTS_DIR/fixtures/profile-root.sh" snap "$1" home | grep -E "$users" | grep -v '/\.cache/'; }
snap_home old > want.snap

D=$T/disk.img
fx_disk "$D" 1G $'label: dos\ntype=83'
fx_mkfs "$D" 1 ext4 old system
fx_job job.ini "$T/newos.img" "$D" "store_size = 256MiB"
ok "run stops where the staging boot comes" "$INPLACE" run job.ini || exit 1
ok "stage build" "$INPLACE" stage build -o stage.cpio --kernel "$K" || exit 1

# boot LOG [QEMU DRIVE OPTIONS]: a staging boot of $D in the background
# ($QEMU_PID); -no-reboot: QEMU ends when our init reboots.  $tcg_s sums
# the seconds QEMU ran (said at the end: the cost of this test)
tcg_s=0
boot() {
	boot_at=$SECONDS
	qemu-system-x86_64 -accel tcg -m 1024 -nographic -no-reboot -kernel "$K" -initrd stage.cpio \
		-append "console=ttyS0 panic=-1" -drive "file=$D,format=raw,if=virtio${2:+,$2}" \
		-serial "file:$1" -monitor none -display none </dev/null >/dev/null 2>&1 &
	QEMU_PID=$!
	track_pid "$QEMU_PID"
}
# ended SECS: wait for QEMU to end by itself; 0 when it did
ended() {
	local i
	for ((i = 0; i < $1; i++)); do
		kill -0 "$QEMU_PID" 2>/dev/null || { wait "$QEMU_PID"; return; }
		sleep 1
	done
	return 124
}

# The store's state as the disk holds it now: its bytes copied, the copy's
# journal replayed; "STEP STATUS" of the state's current step
store_step() {
	local s z
	read -r s z < <(fx_part_range "$D" 2 2>/dev/null) && [ -n "$z" ] || return 1
	dd if="$D" of=store.img bs=4M iflag=skip_bytes,count_bytes skip="$s" count="$z" status=none || return 1
	e2fsck -fy store.img >/dev/null 2>&1
	[ $? -lt 4 ] || return 1
	debugfs -R 'cat /inplace/state/state.json' store.img 2>/dev/null |
		jq -r '.step as $s | .phase + "/" + $s + " " + ([.steps[] | select(.step == $s) | .status] | last)' 2>/dev/null
}

# cut_in STEP NAME: a throttled staging boot killed while the state says STEP
# (phase/step) is running; tried up to three times from a copy of the disk
# as it was; sets $cut
throttle="throttling.bps-write=2097152,throttling.iops-total=60"
cut_in() {
	local want=$1 name=$2 attempt now i
	cut=no
	cp --sparse=always "$D" before-cut.img
	for attempt in 1 2 3; do
		boot "cut-${name// /-}-$attempt.log" "$throttle"
		for ((i = 0; i < 1500; i++)); do
			now=$(store_step)
			if [ "$now" = "$want running" ]; then
				# inside the step: let it work a moment, then the cut
				sleep 1
				kill -9 "$QEMU_PID" 2>/dev/null
				wait "$QEMU_PID" 2>/dev/null
				# still running on disk: the cut fell inside the step
				[ "$(store_step)" = "$want running" ] && cut=yes
				break
			fi
			kill -0 "$QEMU_PID" 2>/dev/null || break
			sleep 0.3
		done
		kill -9 "$QEMU_PID" 2>/dev/null
		wait "$QEMU_PID" 2>/dev/null
		tcg_s=$((tcg_s + SECONDS - boot_at))
		[ "$cut" = yes ] && break
		echo "  ($name: no cut inside $want on attempt $attempt, last seen: ${now:-nothing}; $(grep -a "inplace staging" "cut-${name// /-}-$attempt.log" | tail -n 1))"
		cp --sparse=always before-cut.img "$D"
	done
	rm -f before-cut.img
	if [ "$cut" = yes ]; then
		check "power cut in the $name: QEMU killed while $want ran" true
	else
		skip "power cut in the $name" "$want was never seen running, three boots in a row"
	fi
}

cut_in prepare/save save
cut_in deploy/deploy deploy
cut_in deploy/configure "boot fix"

# ---- the staging boot that finishes -----------------------------------------------
boot stage.log
ended 1500
check "the last staging boot ends by itself (reboot)" test $? = 0
tcg_s=$((tcg_s + SECONDS - boot_at))
echo "  (QEMU ran $tcg_s s in all)"
check "the state is in the store: phase restore" \
	test "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" = restore
ok "root fsck clean" fx_fsck "$D" 1
ok "store fsck clean" fx_fsck "$D" 2
read -r s z < <(fx_part_range "$D" 2)
debugfs -R "dump /inplace/image/os.img store-os.img" "$D?offset=$s" >/dev/null 2>&1
check "the image copied into the store is the image, and verifies" \
	sh -c "cmp -s store-os.img newos.img && '$INPLACE' image verify store-os.img"
read -r s z < <(fx_part_range "$D" 1)
mkdir -p m
LOOPDEV=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") && track_loop "$LOOPDEV" &&
	mount -o ro "$LOOPDEV" m && track_mount "$T/m"
check "the deployed root holds the image's files" \
	sh -c "grep -q '^dave:x:1001:' m/etc/passwd && cmp -s m/opt-blob new/opt-blob"
umount m

# ---- the first boot of the new OS, played on the host -------------------------
ok "resume plays the first boot" "$INPLACE" resume --disk "$D"
check "the run is done" test "$("$INPLACE" status --json | jq -r .phase)" = done
ok "fsck clean after the run" fx_fsck "$D" 1
read -r s z < <(fx_part_range "$D" 1)
LOOPDEV=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") && track_loop "$LOOPDEV" &&
	mount -o ro "$LOOPDEV" m && track_mount "$T/m"
check "every saved file equal (homes by hash)" diff want.snap <(snap_home m)
check "password hashes kept" \
	test "$(grep '^alice:' m/etc/shadow | cut -d: -f2)" = "$(grep '^alice:' old/etc/shadow | cut -d: -f2)"
umount m
