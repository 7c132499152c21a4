#!/bin/bash
# t-stage — the RAM-only staging environment on a real kernel.  `inplace
# run` (method none) leaves the job waiting for the staging boot; `inplace
# stage build` writes the initramfs for Debian 12's kernel; QEMU boots that
# kernel and initramfs with the disk as a virtio drive, and our /init loads
# the modules, finds the disk by its partition table id, runs the staging
# phases (shrink, store, save, deploy) and reboots; the first staging boot
# is cut (kill -9 of QEMU) in the middle of the shrink, and the next one
# finishes from the records area.  Afterwards, on the
# host: the state in the store says restore, the disk is clean, the image
# is deployed, and the first boot played by `resume` restores every user
# equal.  Also: the modules in the cpio come dependencies first, and a
# staging boot without its disk changes nothing and reboots.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
have_loop || { skip "stage" "no loop devices (the steps mount partitions)"; exit 0; }
require_tool qemu-system-x86_64 jq zstd cpio || exit 1
export INPLACE_RUN_DIR=$T/run

debian_kernel || exit 1
kver=${K##*/vmlinuz-}

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
"$INPLACE" image build -q --from-dir new --fs ext4 --size 160MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
users='^(alice|bob|carol)/'
snap_home() { bash "$TESTS_DIR/fixtures/profile-root.sh" snap "$1" home | grep -E "$users" | grep -v '/\.cache/'; }
snap_home old > want.snap

D=$T/disk.img
fx_disk "$D" 1G $'label: dos\ntype=83'
fx_mkfs "$D" 1 ext4 old system
fx_job job.ini "$T/newos.img" "$D" "store_size = 256MiB"
export INPLACE_STATE_DIR=$T/state
ok "run stops where the staging boot comes" "$INPLACE" run job.ini || exit 1

# boot KERNEL INITRD LOG DRIVE [bg]: QEMU until our init reboots (-no-reboot:
# QEMU ends), killed by the trap if the test dies; exit status of QEMU
boot() {
	# software emulation: a boot takes about a minute alone, longer
	# while others build; the steps themselves take a few more
	timeout 1500 qemu-system-x86_64 -accel tcg -m 1024 -nographic -no-reboot -kernel "$1" -initrd "$2" \
		-append "console=ttyS0 panic=-1" -drive "file=$4,format=raw,if=virtio" \
		-serial "file:$3" -monitor none -display none </dev/null >/dev/null 2>&1 &
	QEMU_PID=$!
	track_pid "$QEMU_PID"
	[ -n "${5:-}" ] && return 0   # the caller waits
	wait "$QEMU_PID"
}

# ---- a staging boot that does not find its disk ------------------------------
ok "stage build (no records, short wait)" "$INPLACE" stage build -o nodisk.cpio --kernel "$K" --no-records --disk-wait 5
fx_disk other.img 64M $'label: dos\ntype=83'
h_other=$(sha256sum < other.img) h_disk=$(sha256sum < "$D") h_state=$(sha256sum < state/state.json)
boot "$K" nodisk.cpio nodisk.log other.img
check "no disk: the staging boot ends by itself (reboot)" test $? = 0
check "no disk: the other disk untouched" test "$(sha256sum < other.img)" = "$h_other"
check "no disk: the run's disk and state untouched" \
	test "$(sha256sum < "$D")" = "$h_disk" -a "$(sha256sum < state/state.json)" = "$h_state"

# ---- the initramfs ---------------------------------------------------------
ok "stage build" sh -c "'$INPLACE' stage build -o stage.cpio --kernel '$K' --json > build.json" || exit 1
mkdir x && (cd x && zstd -dc ../stage.cpio | cpio -id --quiet 2>/dev/null)
check "the cpio holds /init, the bundle, the state" \
	test -L x/init -a -x x/bundle/libexec/inplace -a -f x/state/state.json
# the image waits on the old root, not in RAM: no file of the cpio is it
# (before: the image travelled at its own path inside the initramfs)
img_sum=$(sha256sum < newos.img | cut -c1-64)
check "the image does not travel in the initramfs" \
	sh -c "test ! -e 'x$T/newos.img' && ! find x -type f -exec sha256sum {} + | grep -q '^$img_sum '"
check "stage.json says where the image waits" test "$(jq -r .image.path x/stage.json)" = /var/lib/inplace/staged-image/os.img
read -r s z < <(fx_part_range "$D" 1)
l=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") && track_loop "$l"
check "the old root holds the image, whole, with its manifest" sh -c "
	debugfs -R 'dump /var/lib/inplace/staged-image/os.img $T/root-copy.img' '$l' 2>/dev/null &&
	cmp -s '$T/root-copy.img' newos.img &&
	debugfs -R 'cat /var/lib/inplace/staged-image/image.json' '$l' 2>/dev/null | jq -e '.source == \"$T/newos.img\"' >/dev/null"
losetup -d "$l"; rm -f root-copy.img
# every module's dependencies (modules.dep) come before it in stage.json,
# and every module listed is in the cpio
order_ok() {
	local i=0 m p dep
	declare -A at
	while read -r p; do at[$p]=$i; i=$((i + 1)); done < <(jq -r '.modules[].path' x/stage.json)
	[ "$i" -gt 3 ] || return 1
	for p in "${!at[@]}"; do
		[ -f "x/lib/modules/$kver/$p" ] || { echo "missing $p"; return 1; }
		for dep in $(awk -v m="$p:" '$1 == m { $1 = ""; print }' "$tree/lib/modules/$kver/modules.dep"); do
			[ -n "${at[$dep]:-}" ] && [ "${at[$dep]}" -lt "${at[$p]}" ] || { echo "$dep not before $p"; return 1; }
		done
	done
}
check "modules: dependencies first, all in the cpio" order_ok
check "modules: the virtio disk driver and ext4 are there" \
	sh -c "jq -r '.modules[].name' x/stage.json | grep -qx virtio_blk && jq -r '.modules[].name' x/stage.json | grep -qx ext4"
check "the records area is made below the shrink's end" test "$(jq -r '.records.offset' build.json)" -gt 0
rm -rf x

# ---- a power cut in the middle of the shrink -----------------------------------
# The records area is read from the host (QEMU writes the image through
# the host's page cache): a copy of its bytes, its journal replayed by
# e2fsck, listed by debugfs.  Once partctl's shrink journal and metadata
# undo are in it, QEMU is killed (-9: the guest's caches are lost as in a
# power cut).  The next staging boot must find the state and the undo
# there and finish the job.
off=$(jq -r '.records.offset' build.json) size=$(jq -r '.records.size' build.json)
records_copy() {
	dd if="$D" of=rec.img bs=4M iflag=skip_bytes,count_bytes skip="$off" count="$size" status=none &&
		e2fsck -fy rec.img >/dev/null 2>&1
	[ $? -lt 4 ]
}
records_ls() { records_copy && debugfs -R "ls /" rec.img 2>/dev/null; }
# The undo lives only while resize2fs runs (a second or two on this disk):
# a look can miss it on a fast machine, so the boot is tried again from a
# copy of the disk as it was, up to three times; never cut is a visible skip.
cp --sparse=always "$D" before-cut.img
cut=no
for attempt in 1 2 3; do
	boot "$K" stage.cpio cut.log "$D" bg
	# QEMU itself, once timeout has started it
	for _ in $(seq 1 100); do
		qemu=$(ps -o pid= --ppid "$QEMU_PID" | tr -d ' ')
		[ -n "$qemu" ] && break
		sleep 0.1
	done
	for _ in $(seq 1 3000); do
		if records_ls | grep -q 'shrink_.*\.metaundo'; then
			kill -9 "$qemu" 2>/dev/null && cut=yes
			break
		fi
		kill -0 "$qemu" 2>/dev/null || break
		sleep 0.2
	done
	wait "$QEMU_PID" 2>/dev/null
	[ "$cut" = yes ] && break
	cp --sparse=always before-cut.img "$D"
done
rm -f before-cut.img
if [ "$cut" = yes ]; then
	check "power cut: QEMU killed while the shrink's undo was in the records area" true
	check "power cut: the records area holds the state at make-storage" \
		test "$(records_copy && debugfs -R 'cat /state.json' rec.img 2>/dev/null | jq -r '.phase + "/" + .step')" = prepare/make-storage
else
	skip "power cut" "the shrink's undo came and went between two looks, three boots in a row"
fi

# ---- the staging boot (again, after the cut) ------------------------------------
boot "$K" stage.cpio stage.log "$D"
check "staging boot ends by itself (reboot)" test $? = 0
check "two partitions: root and store" test "$(partx -g -o NR "$D" | wc -l)" = 2
check "the state is in the store: phase restore" \
	test "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" = restore
ok "root fsck clean" fx_fsck "$D" 1
ok "store fsck clean" fx_fsck "$D" 2
mount_part_ro "$D" 1 m
check "the new OS is deployed (its own user dave)" grep -q '^dave:x:1001:' m/etc/passwd
umount m
mount_part_ro "$D" 2 m
check "staging took the image from the old root into the store" \
	sh -c "jq -e '.steps[] | select(.step == \"stage-image\") | .result.from == \"the old root\"' m/inplace/state/state.json >/dev/null && cmp -s m/inplace/image/os.img newos.img"
umount m
check "status.log tells the staging phases" \
	sh -c "'$INPLACE' status --disk '$D' --json --events 200 | jq -r '.events[].phase' | uniq | tr '\n' ' ' | grep -q 'prepare deploy restore'"

# ---- the first boot of the new OS, played on the host -------------------------
ok "resume plays the first boot" "$INPLACE" resume --disk "$D"
check "the run is done" test "$("$INPLACE" status --json | jq -r .phase)" = done
ok "fsck clean after the run" fx_fsck "$D" 1
mount_part_ro "$D" 1 m
check "every saved file equal" diff want.snap <(snap_home m)
check "password hashes kept" \
	test "$(grep '^alice:' m/etc/shadow | cut -d: -f2)" = "$(grep '^alice:' old/etc/shadow | cut -d: -f2)"
check "hostname kept" test "$(cat m/etc/hostname)" = oldhost
umount m
