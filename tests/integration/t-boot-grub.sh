#!/bin/bash
# t-boot-grub — a new OS deployed by the pipeline boots by design.  A Debian
# 12 tree (kernel, grub-pc, systemd) captured as an image replaces the old
# root of an MBR disk that has no boot loader at all (run, then one resume
# per boot, [boot] method = none); the configure step's boot fix must put
# GRUB in the MBR and write a grub.cfg naming the root by UUID, so that
# QEMU (BIOS, no -kernel) boots the disk to multi-user in the new system,
# under the old machine's hostname the restore brought back.
# An image without a kernel is refused at preflight when a real reboot
# would follow.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
have_loop || { skip "boot" "no loop devices (the steps mount partitions)"; exit 0; }
require_tool qemu-system-x86_64 jq || exit 1
export INPLACE_RUN_DIR=$T/run
bash "$TESTS_DIR/fixtures/profile-root.sh" old unused small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }

write_job() { # FILE DISK IMAGE METHOD
	cat > "$1" <<EOF
[job]
image = $3
require_signature = no
disk = $2
system_partition = 1
store_size = 768MiB

[boot]
method = $4

[notify]
countdown = 0
EOF
}

# ---- an image that cannot boot: refused before anything is written -------
mkdir -p nokernel/etc && echo nokernel > nokernel/etc/hostname
"$INPLACE" image build -q --from-dir nokernel --fs ext4 --size 64MiB -o nokernel.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
fx_disk nk.img 512M $'label: dos\ntype=83'
fx_mkfs nk.img 1 ext4 old system
sha_before=$(sha256sum < nk.img)
write_job nk.ini "$T/nk.img" "$T/nokernel.img" grub
must_fail 2 "an image without a kernel is refused at preflight (method grub)" \
	env INPLACE_STATE_DIR="$T/state-nk" "$INPLACE" run nk.ini
check "the refusal names the missing kernel and its package" \
	bash -c "INPLACE_STATE_DIR='$T/state-nk' '$INPLACE' run nk.ini 2>&1 | grep -q 'no kernel in /boot.*linux-image-amd64'"
check "the refused run wrote no state" test ! -e "$T/state-nk/state.json"
check "the refused run left the disk as it was" test "$(sha256sum < nk.img)" = "$sha_before"
rm -f nk.img

# ---- apply-files: the kept filesystem's UUID, not the image's ------------
# The new tree names its root by the UUID of the filesystem it was made
# from; applied over another filesystem, fstab and grub.cfg must name that
# one, else the initramfs stops at "ALERT! UUID=... does not exist".
img_uuid=0b2e6a8c-1111-4222-8333-944455556666
mkdir -p af/etc af/boot/grub af/usr/bin
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$img_uuid" > af/etc/fstab
printf 'search --no-floppy --fs-uuid --set=root %s\nlinux /boot/vmlinuz root=UUID=%s ro\n' "$img_uuid" "$img_uuid" \
	> af/boot/grub/grub.cfg
echo new > af/usr/bin/tool
tar -C af -czf af.tar.gz .
fx_disk af.img 256M $'label: dos\ntype=83'
fx_mkfs af.img 1 ext4 old system
read -r s z < <(fx_part_range af.img 1)
kept=$(blkid -p -O "$s" -o value -s UUID af.img)
mkdir afroot
AFLOOP=$(losetup -f --show -o "$s" --sizelimit "$z" af.img) && track_loop "$AFLOOP" &&
	mount "$AFLOOP" afroot && track_mount "$T/afroot" || { fail "mount for apply-files"; exit 1; }
ok "apply-files over a mounted filesystem" "$INPLACE" image apply-files af.tar.gz --root afroot
check "apply-files: fstab names the kept filesystem's UUID" grep -q "^UUID=$kept / " afroot/etc/fstab
check "apply-files: grub.cfg boots root=UUID= of the kept filesystem" grep -q "root=UUID=$kept " afroot/boot/grub/grub.cfg
check "apply-files: grub.cfg searches the kept filesystem" grep -q -- "--fs-uuid --set=root $kept" afroot/boot/grub/grub.cfg
check "apply-files: the image's UUID is gone" bash -c "! grep -rq $img_uuid afroot/etc/fstab afroot/boot/grub/grub.cfg"
check "apply-files: the users' homes were kept" test -d afroot/home/alice
umount afroot
rm -f af.img

# ---- the new OS image -------------------------------------------------------
tree=$(debian_tree "$DEBIAN_OS_PKGS") || { fail "fixture" "debian_tree (see its log in $INPLACE_TEST_CACHE)"; exit 1; }

# The new OS: the tree with a serial console.  The console is the test's
# choice, never the product's: the image's own /etc/default/grub says it.
mkdir deb && cp -a "$tree/." deb/ || { fail "fixture" "copy of the Debian tree"; exit 1; }
cat >> deb/etc/default/grub <<'EOF'
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_TIMEOUT=1
EOF
echo newos > deb/etc/hostname
# The sign of a boot that reached multi-user: a line on the serial port,
# written by a unit of the test (a getty on ttyS0 waits for udev's device,
# which a machine shared with builds may not deliver within its timeout).
cat > deb/etc/systemd/system/test-booted.service <<'EOF'
[Unit]
Description=test: say on the serial console that the boot reached multi-user
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "test-booted: $(cat /etc/hostname)" > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
EOF
ln -s ../test-booted.service deb/etc/systemd/system/multi-user.target.wants/test-booted.service
rm -rf deb/boot/grub/grub.cfg
fx_disk src.img 1600M $'label: dos\ntype=83'
fx_mkfs src.img 1 ext4 deb || { fail "fixture" "mke2fs -d of the Debian tree"; exit 1; }
rm -rf deb
ok "capture the Debian tree as an image" "$INPLACE" image capture -q src.img 1 -o newos.img || exit 1
rm -f src.img

# ---- the deploy ------------------------------------------------------------
D=$T/disk.img
fx_disk "$D" 4G $'label: dos\ntype=83'
fx_mkfs "$D" 1 ext4 old system
check "the old disk has no boot loader" test "$(dd if="$D" bs=512 count=1 status=none | tr -d '\0' | wc -c)" -lt 100
write_job job.ini "$D" "$T/newos.img" none
export INPLACE_STATE_DIR=$T/state
ok "run" "$INPLACE" run job.ini &&
ok "resume: the staging boot (make room, save, deploy, configure)" "$INPLACE" resume --disk "$D" &&
ok "resume: the first boot of the new OS (restore, reclaim)" "$INPLACE" resume --disk "$D" || exit 1
check "the run is done" test "$("$INPLACE" status --json | jq -r .phase)" = done
ok "fsck clean" fx_fsck "$D" 1

read -r s z < <(fx_part_range "$D" 1)
uuid=$(blkid -p -O "$s" -o value -s UUID "$D")
mkdir m
LOOPDEV=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") && track_loop "$LOOPDEV" &&
	mount -o ro "$LOOPDEV" m && track_mount "$T/m" || { fail "mount the new root"; exit 1; }
check "grub.cfg boots the kernel with root=UUID= of the root" grep -q "linux.*root=UUID=$uuid " m/boot/grub/grub.cfg
check "grub.cfg names no loop device" bash -c "! grep -q 'root=/dev/loop' m/boot/grub/grub.cfg"
check "fstab names the root by UUID" grep -q "^UUID=$uuid / " m/etc/fstab
check "the restore kept the old hostname" test "$(cat m/etc/hostname)" = oldhost
umount m
check "GRUB is in the MBR" bash -c "dd if='$D' bs=512 count=1 status=none | grep -aq GRUB"

# ---- the real boot ----------------------------------------------------------
# BIOS (SeaBIOS) reads the MBR: GRUB, its grub.cfg, the kernel and the
# initramfs of the new system, which must find its root by UUID.  No KVM
# (it hangs on these machines): TCG.  The wait is an upper bound for a slow
# machine, not a timing assertion.
# Called directly, never inside check (a subshell): QEMU must be tracked
# by this shell, whose exit trap ends it.
boot_until() { # LOG PATTERN: boot disk $D until PATTERN is on the serial console
	local log=$1 pat=$2 qpid i
	qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -display none -monitor none -no-reboot -net none \
		-drive file="$D",format=raw,if=virtio,cache=unsafe -serial file:"$log" 2>"$log.err" &
	qpid=$!
	track_pid "$qpid"
	# about 50 s alone; many times that on a machine shared with builds
	for ((i = 0; i < 2400; i++)); do
		grep -aq "$pat" "$log" 2>/dev/null && break
		kill -0 "$qpid" 2>/dev/null || break
		sleep 1
	done
	kill "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
	grep -aq "$pat" "$log" || { tail -20 "$log" | tr -d '\r' | sed 's/^/    /'; return 1; }
}
booted() { # NAME LOG PATTERN
	if boot_until "$2" "$3"; then pass "$1"; else fail "$1" "not on the serial console: $3"; fi
}
booted "the new system boots from the disk to multi-user, with the old hostname" serial.log "test-booted: oldhost"

# ---- the GRUB one-shot: staging once, then the old system again -------------
# The disk now holds a system that boots; a job with [boot] method grub
# arms the staging boot on it (its root mounted, as the running system's /
# would be): the kernel and initramfs in /boot/inplace, a marked entry in
# custom.cfg, grubenv's next_entry.  GRUB must boot that entry once and
# clear next_entry first, so that the boot after it (here: a staging boot
# cut short) is the old system again.
mkdir o2
mount_o2() { # [ro]
	O2LOOP=$(losetup -f --show ${1:+-r} -o "$s" --sizelimit "$z" "$D") && track_loop "$O2LOOP" &&
		mount ${1:+-o ro} "$O2LOOP" o2 && track_mount "$T/o2"
}
mount_o2 || { fail "mount the deployed root"; exit 1; }
kern=$(ls o2/boot/vmlinuz-* | sort -V | tail -n1)
write_job job2.ini "$D" "$T/newos.img" grub
ok "run (method grub, --no-reboot): the staging boot is armed" \
	env INPLACE_STATE_DIR="$T/state2" "$INPLACE" run --no-reboot --boot-root o2 --kernel "$kern" \
	--cmdline console=ttyS0,115200 job2.ini
check "custom.cfg holds the staging entry" grep -q "^menuentry .* --id inplace-staging" o2/boot/grub/custom.cfg
check "the entry finds /boot by its filesystem's UUID" \
	grep -q "search --no-floppy --fs-uuid --set=root $uuid" o2/boot/grub/custom.cfg
check "grubenv: next_entry is the staging entry" \
	bash -c "grub-editenv '$T/o2/boot/grub/grubenv' list | grep -qx next_entry=inplace-staging"
check "the staging kernel is in /boot/inplace" cmp -s "$kern" o2/boot/inplace/vmlinuz
check "the staging initramfs is in /boot/inplace" test -s o2/boot/inplace/initrd.img
umount o2
booted "GRUB boots the staging entry once" serial2.log "Command line:.*inplace\.stage"
mount_o2 ro || { fail "mount the root again"; exit 1; }
check "GRUB cleared next_entry before it booted the entry" \
	bash -c "! grub-editenv '$T/o2/boot/grub/grubenv' list | grep -q next_entry=inplace-staging"
umount o2
booted "the boot after a staging boot cut short is the old system" serial3.log "test-booted: oldhost"
