# tests/vm/lib.sh — QEMU helpers and the cached Debian disks of the VM tests
# (sourced after tests/lib.sh, whose EXIT trap kills every QEMU started here).
#
#   vm_accel                  kvm when /dev/kvm answers within 5 s, else tcg
#   vm_boot DISK LOG [ARGS…]  start QEMU on DISK (raw, virtio) in the
#                             background, serial console logged to LOG and
#                             typed into through $VM_SOCK; sets $VM_PID.
#                             A reboot ends QEMU unless VM_REBOOT=yes;
#                             VM_NIC_OPTS adds to the user-mode NIC
#                             (hostfwd=tcp:127.0.0.1:PORT-:22)
#   vm_wait LOG PATTERN SECS [FROM]  wait until LOG (from byte FROM on)
#                             matches the extended regex PATTERN; fails
#                             early when QEMU ($VM_PID) is gone or LOG
#                             matches $VM_FAIL
#   vm_mark LOG               the byte offset to pass as FROM
#   vm_type TEXT              type TEXT on the serial console ($VM_SOCK)
#   vm_login USER PASS CMD    log in on the serial console, run CMD, log out
#   vm_exited SECS            wait for QEMU to exit by itself (poweroff)
#   vm_kill                   kill QEMU at once (a power cut)
#   vm_old_os_disk OUT        the "old OS" disk (cached, copied sparse)
#   vm_new_os_image OUT       the signed "new OS" image (OUT, OUT.minisig,
#                             OUT.pub; cached)
#
# The disks are built once and cached in $INPLACE_TEST_CACHE/vm-*, keyed by
# the Debian tree they come from and by the text of the functions that build
# them: change a builder and the next run builds afresh.
. "$TESTS_DIR/fixtures/debian.sh"

VM_MEM=${VM_MEM:-1024}

# The serial logs outlive the scratch directory: a failed boot is read there
VM_LOG_DIR=${VM_LOG_DIR:-${TMPDIR:-/tmp}/inplace-vm-logs}
_vm_save_logs() {
	local f
	mkdir -p "$VM_LOG_DIR" || return 0
	for f in "$T"/*.log; do [ -f "$f" ] && cp "$f" "$VM_LOG_DIR/$_t_name-$(basename "$f")"; done
	return 0
}
trap '_vm_save_logs; cleanup' EXIT

vm_accel() {
	if [ -z "${VM_ACCEL:-}" ]; then
		VM_ACCEL=tcg
		# /dev/kvm exists on some of these machines and hangs the guest:
		# a second of SeaBIOS under KVM, then quit, within 5 s or not at all
		if [ -w /dev/kvm ] && { sleep 1; echo quit; } |
			timeout 5 qemu-system-x86_64 -accel kvm -display none -nodefaults -monitor stdio >/dev/null 2>&1; then
			VM_ACCEL=kvm
		fi
	fi
	echo "$VM_ACCEL"
}

vm_boot() {
	local disk=$1 log=$2; shift 2
	local accel
	accel=$(vm_accel)
	VM_SOCK=${log%.log}.sock
	rm -f "$VM_SOCK"
	: > "$log"
	# the serial console is a socket (typed into by vm_type) that QEMU
	# also copies to LOG, whether or not anyone is connected
	qemu-system-x86_64 -accel "$accel" -cpu max -m "$VM_MEM" -smp 2 \
		-display none -vga none -monitor none $([ "${VM_REBOOT:-}" = yes ] || echo -no-reboot) \
		-chardev "socket,id=ser0,path=$VM_SOCK,server=on,wait=off,logfile=$log" -serial chardev:ser0 \
		-drive "file=$disk,format=raw,if=none,id=disk0,cache=unsafe" \
		-device virtio-blk-pci,drive=disk0,serial=inplace-vm-disk \
		-nic "user,model=virtio-net-pci${VM_NIC_OPTS:+,$VM_NIC_OPTS}" \
		"$@" < /dev/null > "$log.qemu" 2>&1 &
	VM_PID=$!
	track_pid "$VM_PID"
}

vm_mark() { stat -c %s "$1" 2>/dev/null || echo 0; }

vm_wait() {
	local log=$1 pat=$2 secs=$3 from=${4:-0} end
	end=$(($(date +%s) + secs))
	while [ "$(date +%s)" -lt "$end" ]; do
		tail -c +$((from + 1)) "$log" 2>/dev/null | tr -d '\r' | grep -aqE -- "$pat" && return 0
		# a sign that what is awaited will not come: stop waiting
		[ -n "${VM_FAIL:-}" ] && tail -c +$((from + 1)) "$log" | tr -d '\r' | grep -aE -- "$VM_FAIL" >&2 && return 1
		kill -0 "$VM_PID" 2>/dev/null || {
			tail -c +$((from + 1)) "$log" 2>/dev/null | tr -d '\r' | grep -aqE -- "$pat"
			return
		}
		sleep 1
	done
	return 1
}

vm_type() {
	python3 - "$VM_SOCK" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
# a serial line at 115200 baud takes a keystroke at a time; a burst would
# be read before the getty has switched the terminal's mode
for ch in sys.argv[2]:
    s.sendall(ch.encode())
    time.sleep(0.01)
time.sleep(0.2)
s.close()
PY
}

# Log in on the serial console (the getty's "login:" prompt must be on
# screen), run CMD in the login shell, then log out.  CMD's output is in
# the log; the caller waits for what it prints.
vm_login() {
	local user=$1 pass=$2 cmd=$3 log=$VM_LOG from
	from=$(vm_mark "$log")
	vm_type $'\r'
	vm_wait "$log" 'login: *$' 60 "$from" || return 1
	from=$(vm_mark "$log")
	vm_type "$user"$'\r'
	vm_wait "$log" 'Password: *$' 30 "$from" || return 1
	from=$(vm_mark "$log")
	vm_type "$pass"$'\r'
	vm_wait "$log" '[$#] *$' 60 "$from" || return 1
	vm_type "$cmd"$'\r'
}

vm_exited() {
	local i
	for ((i = 0; i < $1; i++)); do
		kill -0 "$VM_PID" 2>/dev/null || { wait "$VM_PID" 2>/dev/null; return 0; }
		sleep 1
	done
	return 1
}

vm_kill() {
	kill -9 "$VM_PID" 2>/dev/null
	wait "$VM_PID" 2>/dev/null
	return 0
}

# ---- the disks ----------------------------------------------------------------

# The harness inside every disk: a unit that tells the host over the serial
# console how the boot went, once the boot is over.  It must not wait for
# the boot itself (is-system-running --wait inside the boot transaction
# deadlocks), so the waiting half runs as a transient unit of its own.
_vm_harness() {
	local root=$1
	mkdir -p "$root/usr/local/sbin" "$root/etc/systemd/system/multi-user.target.wants"
	cat > "$root/usr/local/sbin/vm-report" <<'EOF'
#!/bin/sh
# VM tests: report the boot on the serial console (a line the host waits for)
if [ "${1:-}" = late ]; then
	state=$(systemctl is-system-running --wait)
	failed=$(systemctl --failed --plain --no-legend | awk '{printf "%s%s", s, $1; s = ","}')
	os=old; [ -e /etc/inplace-new-os ] && os=new
	echo "VM-REPORT os=$os host=$(hostname) state=$state failed=[$failed] id=$(cat /etc/machine-id)" > /dev/ttyS0
	exit 0
fi
exec systemd-run --no-block --unit=vm-report-late /usr/local/sbin/vm-report late
EOF
	chmod 755 "$root/usr/local/sbin/vm-report"
	cat > "$root/etc/systemd/system/vm-report.service" <<'EOF'
[Unit]
Description=VM tests: report the boot on the serial console
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vm-report

[Install]
WantedBy=multi-user.target
EOF
	ln -sf ../vm-report.service "$root/etc/systemd/system/multi-user.target.wants/vm-report.service"
	ln -sf /lib/systemd/system/serial-getty@.service "$root/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
	# GRUB on the serial line too, quick, and the kernel talking there
	sed -i -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/' \
		-e 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT=""/' \
		-e 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="console=ttyS0,115200 net.ifnames=0"/' "$root/etc/default/grub"
	printf 'GRUB_TERMINAL="serial console"\nGRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n' >> "$root/etc/default/grub"
	mkdir -p "$root/etc/network/interfaces.d"
	printf 'allow-hotplug eth0\niface eth0 inet dhcp\n' > "$root/etc/network/interfaces.d/eth0"
	# the first boot of a fresh disk runs this instead of init: GRUB into
	# the MBR from inside the machine, where /dev/vda is a BIOS drive
	cat > "$root/usr/local/sbin/vm-grub-setup" <<'EOF'
#!/bin/sh
# VM tests: first boot of a fresh disk (init=): GRUB into the MBR, then off
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mount -o remount,rw /
# no udev here: the link grub-mkconfig looks for to write root=UUID=
uuid=$(blkid -s UUID -o value /dev/vda1)
mkdir -p /dev/disk/by-uuid && ln -sf ../../vda1 "/dev/disk/by-uuid/$uuid"
if [ -d /sys/firmware/efi ]; then
	# UEFI: the ESP (partition 2) formatted with the ID fstab names,
	# GRUB for EFI there with its firmware entry (efivarfs for efibootmgr)
	mount -t efivarfs efivarfs /sys/firmware/efi/efivars
	esp=$(awk '$2 == "/boot/efi" { sub("UUID=", "", $1); sub("-", "", $1); print $1 }' /etc/fstab)
	mkfs.vfat -F 32 -i "$esp" /dev/vda2 && mkdir -p /boot/efi && mount /boot/efi &&
		grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian &&
		update-grub && efibootmgr -v && umount /boot/efi && ok=1
else
	echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | debconf-set-selections
	grub-install /dev/vda && update-grub && ok=1
fi
if [ -n "${ok:-}" ]; then echo VM-GRUB-OK; else echo VM-GRUB-FAILED; fi
sync
# read-only before the power goes: sysrq's emergency remount is
# asynchronous, and a poweroff that came first left the journal to replay
# (image capture refuses such a root)
mount -o remount,ro / || echo u > /proc/sysrq-trigger
sync
echo o > /proc/sysrq-trigger
sleep 30
EOF
	chmod 755 "$root/usr/local/sbin/vm-grub-setup"
}

_vm_hash() { openssl passwd -6 -salt "$(printf %s "$1" | sha256sum | cut -c1-16)" "$1"; }

# user NAME UID [GROUPS]: an account with the password NAMEpw
_vm_user() {
	local root=$1 name=$2 uid=$3 groups=${4:-}
	chroot "$root" groupadd -g "$uid" "$name" &&
		chroot "$root" useradd -m -u "$uid" -g "$uid" ${groups:+-G "$groups"} -s /bin/bash \
			-p "$(_vm_hash "${name}pw")" "$name"
}

# a home with every kind of file the profile must carry
_vm_home() {
	local root=$1 name=$2 h=$1/home/$2 uid
	uid=$(awk -F: -v n="$name" '$1 == n { print $3 }' "$root/etc/passwd")
	mkdir -p "$h"/{docs,data,bin,deep/a/b,"unicodé ✓"}
	echo "notes of $name" > "$h/docs/notes.txt"
	for i in $(seq 1 30); do printf 'file %d of %s\n' "$i" "$name" > "$h/deep/a/b/small-$i.cfg"; done
	head -c 200000 /dev/urandom > "$h/data/random.bin"
	cp "$root/usr/bin/true" "$h/bin/tool"
	ln "$h/bin/tool" "$h/bin/tool.hardlink"
	ln -s ../docs/notes.txt "$h/docs/notes.symlink"
	echo "naïve" > "$h/unicodé ✓/résumé.txt"
	truncate -s 64M "$h/data/sparse.img"
	printf 'sparse-middle' | dd of="$h/data/sparse.img" bs=1 seek=$((32 * 1024 * 1024)) conv=notrunc status=none
	setfattr -n user.origin -v "home of $name" "$h/docs/notes.txt"
	setfattr -n user.bin -v "$(printf 'a\001b')" "$h/data/random.bin"
	chown -R "$uid:$uid" "$h"
	chmod 0750 "$h"
}

_vm_customize_old() {
	local root=$1
	echo oldhost > "$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\toldhost\n' > "$root/etc/hosts"
	echo 0123456789abcdef0123456789abcdef > "$root/etc/machine-id"
	chroot "$root" usermod -p "$(_vm_hash rootpw)" root
	chroot "$root" groupadd -g 1500 project
	_vm_user "$root" alice 1000 project
	_vm_user "$root" bob 1001 project
	_vm_user "$root" carol 1002
	_vm_home "$root" alice; _vm_home "$root" bob; _vm_home "$root" carol
	# shared work: bob's file in alice's home, ACLs by number of this root
	echo "bob wrote this" > "$root/home/alice/docs/from-bob.txt"
	chown 1001:1500 "$root/home/alice/docs/from-bob.txt"
	setfacl -m u:1001:rw,g:1500:r "$root/home/alice/docs/notes.txt"
	setfacl -m d:u:1001:rx,d:g:1500:rx,u:1001:rx "$root/home/alice/deep"
	setfacl -m u:1000:r "$root/home/bob/data/random.bin"
}

_vm_customize_new() {
	local root=$1
	echo newhost > "$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tnewhost\n' > "$root/etc/hosts"
	echo fedcba9876543210fedcba9876543210 > "$root/etc/machine-id"
	echo "the new OS of the VM tests" > "$root/etc/inplace-new-os"
	chroot "$root" usermod -p "$(_vm_hash newrootpw)" root
	# dave holds bob's UID: restore must remap bob
	_vm_user "$root" dave 1001
	_vm_home "$root" dave
}

# _vm_build_disk OUT SIZE FLAVOR [FIRMWARE]: a raw MBR disk, one ext4 root
# filling it, GRUB in the MBR put there by a first boot of the disk itself;
# FIRMWARE uefi: GPT, the root partition 1 up to the end, an ESP partition
# 2 in front, GRUB for EFI installed by a first boot under OVMF whose
# NVRAM (its "debian" entry) is kept in OUT.vars
_vm_build_disk() {
	local out=$1 size=$2 flavor=$3 fw=${4:-bios} tree root start bytes kver log rc esp fwargs=
	tree=$(debian_tree "$([ "$fw" = uefi ] && echo "$DEBIAN_UEFI_PKGS" || echo "$DEBIAN_OS_PKGS")") || return 1
	root=$out.root
	rm -rf "$root"
	cp -a "$tree" "$root" || return 1
	rm -f "$root/.inplace-tree-done"
	# fresh host keys per disk: the new OS must not share the old one's
	rm -f "$root"/etc/ssh/ssh_host_*
	mkdir -p "$root/etc/ssh" && ssh-keygen -A -f "$root" >/dev/null || return 1
	_vm_harness "$root"
	"_vm_customize_$flavor" "$root" || return 1
	local uuid
	uuid=$(cat /proc/sys/kernel/random/uuid)
	printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$uuid" > "$root/etc/fstab"
	if [ "$fw" = uefi ]; then
		esp=$(printf '%s' "$uuid" | tr a-f A-F | cut -c1-8)
		printf 'UUID=%s-%s /boot/efi vfat umask=0077 0 1\n' "${esp:0:4}" "${esp:4:4}" >> "$root/etc/fstab"
		mkdir -p "$root/boot/efi"
		fx_disk "$out" "$size" $'label: gpt\nstart=65MiB, type=linux\nstart=1MiB, size=64MiB, type=uefi' || return 1
		cp /usr/share/OVMF/OVMF_VARS.fd "$out.vars" && fwargs=$(vm_uefi_args "$out.vars") || return 1
	else
		fx_disk "$out" "$size" $'label: dos\ntype=83, bootable' || return 1
	fi
	read -r start bytes < <(fx_part_range "$out" 1)
	mke2fs -q -F -t ext4 -U "$uuid" -L root -d "$root" -E offset="$start" "$out" $((bytes / 1024))k || return 1
	kver=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')
	cp "$root/boot/vmlinuz-$kver" "$out.vmlinuz" && cp "$root/boot/initrd.img-$kver" "$out.initrd" || return 1
	rm -rf "$root"
	log=$out.grub.log
	# shellcheck disable=SC2086 # $fwargs: the firmware's words
	vm_boot "$out" "$log" $fwargs -kernel "$out.vmlinuz" -initrd "$out.initrd" \
		-append "root=/dev/vda1 rw console=ttyS0,115200 panic=-1 init=/usr/local/sbin/vm-grub-setup"
	vm_exited 600 || vm_kill
	rm -f "$out.vmlinuz" "$out.initrd"
	grep -aq VM-GRUB-OK "$log" && rc=0 || rc=1
	[ "$rc" = 0 ] || echo "vm: the GRUB boot of $out failed, see $log" >&2
	return $rc
}

# _vm_cached NAME BUILDER ARGS…: path of the cached file NAME-KEY.img,
# built by "BUILDER FILE ARGS…" when missing; under a lock of its own
# (debian_tree holds the cache's .lock while building a tree)
_vm_cached() {
	local name=$1 builder=$2 key file; shift 2
	key=$(printf '%s|%s|%s|%s' "$(debian_tree "$DEBIAN_OS_PKGS")" "$*" "$DEBIAN_OS_PKGS $DEBIAN_UEFI_PKGS" \
		"$(declare -f _vm_cached _vm_build_disk _vm_harness _vm_hash _vm_user _vm_home _vm_customize_old _vm_customize_new "$builder")" |
		sha256sum | cut -c1-16)
	file=$INPLACE_TEST_CACHE/vm-$name-$key.img
	if [ ! -e "$file" ]; then
		debian_tree "$DEBIAN_OS_PKGS" >/dev/null || return 1
		(
			flock 8
			[ -e "$file" ] && exit 0
			echo "vm: building $file (a QEMU boot, minutes)" >&2
			rm -f "$file.tmp"*
			"$builder" "$file.tmp" "$@" || exit 1
			for f in "$file.tmp".*; do [ -e "$f" ] && mv "$f" "$file${f#"$file.tmp"}"; done
			mv "$file.tmp" "$file"
		) 8> "$INPLACE_TEST_CACHE/.vm-lock" || return 1
	fi
	echo "$file"
}

vm_old_os_disk() {
	local c fw=${2:-bios}
	# VM_OLD_DISK: another old OS disk to start from (a diagnosis)
	if [ "$fw" = uefi ]; then
		c=$(_vm_cached old-uefi _vm_build_disk 4G old uefi) && cp "$c.vars" "$1.vars" || return 1
	else
		c=${VM_OLD_DISK:-$(_vm_cached old _vm_build_disk 4G old)} || return 1
	fi
	cp --sparse=always "$c" "$1"
}

# the new OS: a disk built the same way, its root captured and signed
_vm_build_image() {
	local out=$1 d=$1.disk
	_vm_build_disk "$d" "$2" new "${3:-bios}" || return 1
	minisign -G -W -f -p "$out.pub" -s "$out.key" >/dev/null 2>&1 || return 1
	"$INPLACE" image capture -q "$d" 1 -o "$out" --name debian-12-new -s "$out.key" >/dev/null || return 1
	rm -f "$d" "$d.vars" "$out.key"
}

vm_new_os_image() {
	local c n=new${2:+-$2}
	c=$(_vm_cached "$n" _vm_build_image 1536M ${2:+"$2"}) || return 1
	# an image of an older format than $INPLACE reads is built again
	if ! "$INPLACE" image verify "$c" --key "$c.pub" >/dev/null 2>&1; then
		rm -f "$c" "$c.pub" "$c.minisig"
		c=$(_vm_cached "$n" _vm_build_image 1536M ${2:+"$2"}) || return 1
	fi
	cp "$c" "$1" && cp "$c.minisig" "$1.minisig" && cp "$c.pub" "$1.pub"
}

# vm_mount_part IMG N DIR: partition N of IMG mounted read-only at DIR
# (a loop device over its range, released by the EXIT trap)
vm_mount_part() {
	local s z l
	read -r s z < <(fx_part_range "$1" "$2")
	mkdir -p "$3"
	l=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$1") || return 1
	track_loop "$l"
	mount -o ro,noload "$l" "$3" || return 1
	track_mount "$3"
}

# vm_identity ROOT: what the reimage must keep, one line each (the homes
# with owners by name, modes, xattrs and ACLs; password hashes; identity)
vm_identity() {
	local r=$1 u
	bash "$TESTS_DIR/fixtures/profile-root.sh" snap "$r" home | grep -E '^(alice|bob|carol)(/|\|)'
	for u in alice bob carol; do grep "^$u:" "$r/etc/shadow" | cut -d: -f1,2; done
	echo "groups: $(grep '^project:' "$r/etc/group" | cut -d: -f1,4)"
	echo "hostname: $(cat "$r/etc/hostname")"
	echo "machine-id: $(cat "$r/etc/machine-id")"
	(cd "$r/etc/ssh" && sha256sum ssh_host_*)
}

# vm_check_reimaged NAME DISK WANT STATE_DIR: the host's checks of a disk
# reimaged to the new OS, WANT being vm_identity of the old root and
# STATE_DIR where the run's state.json and status.log ended (a directory
# of the host, or "root" for the new root's /var/lib/inplace)
vm_check_reimaged() {
	local name=$1 d=$2 want=$3 st=$4 m=$T/chk-$RANDOM at len salt sectors
	sectors=$(($(stat -c %s "$d") / 512))
	# the ESP in front of the root stays (a UEFI disk)
	check "$name: one partition left (and the ESP), the store gone" \
		test "$(partx -g -o TYPE "$d" | grep -vic c12a7328-f81f-11d2-ba4b-00a0c93ec93b)" = 1
	check "$name: the root ends at the disk's end again" test "$(partx -g -n 1 -o END "$d" | tr -d ' ')" -ge $((sectors - 2 * 2048))
	ok "$name: the new root is fsck clean" fx_fsck "$d" 1
	vm_mount_part "$d" 1 "$m" || { fail "$name: mount the new root"; return 1; }
	[ "$st" = root ] && st=$m/var/lib/inplace
	check "$name: the run is done" test "$(jq -r .phase "$st/state.json")" = done
	check "$name: status.log tells every phase in order" \
		test "$(jq -r .phase "$st/status.log" | uniq | tr '\n' ' ')" = "preflight notify prepare deploy restore finish done "
	# alice's hash up to its salt (accounts.json escapes the '/' of the rest)
	salt=$(grep '^alice:' "$want" | cut -d: -f2 | cut -d'$' -f1-3)
	read -r at len < <(jq -r '.steps[] | select(.step == "make-storage") | .result | "\(.start) \(.size)"' "$st/state.json")
	check "$name: the store was wiped (no password hash where it was)" \
		bash -c "[ -n '$len' ] && ! dd if='$d' bs=1M skip=$at count=$len iflag=skip_bytes,count_bytes status=none | grep -aqF '$salt'"
	vm_identity "$m" > "$T/got.id"
	check "$name: homes, password hashes, group, hostname, machine-id, host keys kept" diff "$want" "$T/got.id"
	check "$name: it is the new OS" test -e "$m/etc/inplace-new-os"
	check "$name: the new OS's dave kept UID 1001" grep -q '^dave:x:1001:' "$m/etc/passwd"
	check "$name: bob remapped off dave's UID" test "$(awk -F: '$1 == "bob" { print $3 }' "$m/etc/passwd")" != 1001
	check "$name: the first-boot unit is gone" test ! -e "$m/etc/systemd/system/inplace-firstboot.service"
	umount "$m"
}

# vm_check_new_os_boots NAME [FROM [SECS]]: $VM_LOG from byte FROM on
# shows the reimaged system's boot within SECS: the new OS under the old
# name, no unit failed, the old users log in with their old passwords,
# dave of the new OS too
vm_check_new_os_boots() {
	local name=$1 from=${2:-0} secs=${3:-900} log=$VM_LOG
	check "$name: the new OS's boot ends running under the old hostname, no unit failed, the old machine-id" \
		vm_wait "$log" 'VM-REPORT os=new host=oldhost state=running failed=\[\] id=0123456789abcdef0123456789abcdef' "$secs" "$from" ||
		return 1
	vm_login alice alicepw 'unset HISTFILE; echo "VM-LOGIN $(id -un) $(id -Gn | tr " " ,) $(cat /etc/inplace-new-os)"; exit'
	check "$name: alice logs in with her old password" vm_wait "$log" 'VM-LOGIN alice alice,project the new OS' 60
	vm_login bob bobpw 'unset HISTFILE; echo "VM-LOGIN $(id -un) $(id -u) $(stat -c %U ~/docs/notes.txt)"; exit'
	check "$name: bob logs in, remapped, owning his files" vm_wait "$log" 'VM-LOGIN bob 1[0-9]{3} bob' 60
	vm_login dave davepw 'echo "VM-LOGIN $(id -un) $(id -u)"; exit'
	check "$name: dave of the new OS logs in at 1001" vm_wait "$log" 'VM-LOGIN dave 1001' 60
}

# vm_reimage_fixtures [FIRMWARE]: in $T, old.img (the old OS disk, $D;
# uefi: with its NVRAM old.img.vars) and new.img (the signed new OS image)
# with the tools they need; a failure is reported
vm_reimage_fixtures() {
	require_tool qemu-system-x86_64 debootstrap minisign python3 jq || return 1
	export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state
	vm_old_os_disk "$T/old.img" "${1:-bios}" || { fail "fixture" "the old OS disk"; return 1; }
	vm_new_os_image "$T/new.img" ${1:+"$1"} || { fail "fixture" "the new OS image"; return 1; }
	D=$T/old.img
}

# --- the job put into the old root (run by its own boot) ---

# vm_install_job DISK ROOT_MNT METHOD: into the old root of DISK (mounted at
# ROOT_MNT for the time of the call, released by the EXIT trap otherwise):
# the bundle ($T/bundle), the image the old OS has already downloaded
# ($T/new.img, its signature and key), /root/job.ini ([boot] method METHOD)
# and a unit that starts `inplace run` once, at the next boot.  The old
# root's vm_identity goes to $T/want.id.
vm_install_job() {
	local d=$1 r=$2 method=$3 s z l
	read -r s z < <(fx_part_range "$d" 1)
	mkdir -p "$r" && l=$(losetup -f --show -o "$s" --sizelimit "$z" "$d") && track_loop "$l" &&
		mount "$l" "$r" && track_mount "$r" || return 1
	vm_identity "$r" > "$T/want.id"
	mkdir -p "$r/opt" && cp -a "$T/bundle" "$r/opt/inplace" &&
		cp "$T/new.img" "$T/new.img.minisig" "$T/new.img.pub" "$r/root/" &&
		printf '; the VM reimages itself: the disk and partition of its running root\n[job]\nimage = /root/new.img\nkey = /root/new.img.pub\n\n[boot]\nmethod = %s\n\n[notify]\ncountdown = 0\n' \
			"$method" > "$r/root/job.ini" &&
		cat > "$r/etc/systemd/system/vm-inplace-job.service" <<'EOF2' &&
[Unit]
Description=VM tests: start the reimaging job, once
After=multi-user.target
ConditionPathExists=!/var/lib/vm-inplace-job.started

[Service]
Type=oneshot
ExecStartPre=/bin/touch /var/lib/vm-inplace-job.started
ExecStart=/opt/inplace/inplace run /root/job.ini
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF2
		ln -s ../vm-inplace-job.service "$r/etc/systemd/system/multi-user.target.wants/vm-inplace-job.service" ||
		return 1
	umount "$r" && losetup -d "$l"
}

# --- boot media and network boot ---
#   vm_media_job OUT DISK        a job ([boot] method = media) for $T/new.img
#                                on the VM's disk named DISK (a by-id name)
#   vm_media_kernel              the Debian tree's kernel (the staging one)
#   vm_tiny_image OUT            a small signed image (never deployed)
#   vm_boot_media DISK MEDIA LOG [ARGS…]  vm_boot with MEDIA as a second,
#                                read-only virtio drive that boots first
vm_media_job() {
	cat > "$1" <<EOF2
; the VM's old OS disk reimaged from boot media: the disk by its stable id
[job]
image = $T/new.img
key = $T/new.img.pub
disk = $2
system_partition = 1

[boot]
method = media

[notify]
countdown = 0
EOF2
}

vm_media_kernel() {
	local tree
	tree=$(debian_tree "$DEBIAN_OS_PKGS") || return 1
	ls "$tree"/boot/vmlinuz-* 2>/dev/null | head -n1 | grep .
}

vm_boot_media() {
	local disk=$1 media=$2 log=$3
	shift 3
	vm_boot "$disk" "$log" -drive "file=$media,format=raw,if=none,id=media0,readonly=on" \
		-device virtio-blk-pci,drive=media0,bootindex=0 "$@"
}

# vm_tiny_image OUT: a small signed image (OUT, OUT.minisig, OUT.pub) for
# boots that never deploy it (a disk that is absent): less to carry
vm_tiny_image() {
	local d
	d=$(mktemp -d "$T/tiny.XXXXXX") && echo tiny > "$d/marker" &&
		"$INPLACE" image build -q --from-dir "$d" --size 16MiB -o "$1" >/dev/null &&
		minisign -G -W -f -p "$1.pub" -s "$d.key" >/dev/null 2>&1 &&
		minisign -S -s "$d.key" -m "$1" >/dev/null 2>&1
}

# --- the chain across the VM's own reboots ---
#   vm_chain_prepare [METHOD] into the old root of $D, from the host: the
#                             bundle, the image the old OS has downloaded,
#                             a job ([boot] method = METHOD, grub when not
#                             given; the running root) and a unit that
#                             starts `inplace run` once (vm_install_job);
#                             $T/want.id the identity to keep
#   vm_chain_boot LOG [ARGS…] boot $D letting it cross its own reboots,
#                             ARGS given to QEMU (sets VM_LOG, VM_FAIL)
#   vm_chain_cuts_landed STATE  where the cuts of a run landed, from its
#                             status.log: the steps begun and not ended
#                             when a boot resumed, one line each
vm_chain_prepare() {
	ok "bundle: inplace and its tools for the old OS" "$INPLACE" bundle -o "$T/bundle" || return 1
	vm_install_job "$D" "$T/r" "${1:-grub}" || { fail "fixture" "install the job into the old root"; return 1; }
}

vm_chain_boot() {
	VM_LOG=$1
	shift
	# the staging initramfs carries the bundle in RAM
	VM_MEM=2048 VM_REBOOT=yes vm_boot "$D" "$VM_LOG" "$@"
	# a boot ending with a failed unit: the job did not start (old), the
	# first-boot unit failed (new)
	VM_FAIL='VM-REPORT os=(old|new) .*failed=\[[^]]|Kernel panic'
}

vm_chain_cuts_landed() {
	jq -r 'select(.step != null or (.message | startswith("resume on"))) |
		if .step == null then "RESUME" elif (.message | endswith(": started")) then "B \(.step)"
		elif (.message | test(": (done|skipped)")) then "E \(.step)" else empty end' "$1/status.log" |
	awk '$1 == "B" { open[$2] = 1 } $1 == "E" { delete open[$2] }
		$1 == "RESUME" { s = ""; for (k in open) s = s " " k; if (s != "") print "cut in:" s; split("", open) }'
}

# vm_chain_start NAME: the fixtures, the job put in, the old OS booted up
# to GRUB's one-shot entry starting the staging kernel (fails otherwise)
vm_chain_start() {
	vm_reimage_fixtures && vm_chain_prepare || return 1
	vm_chain_boot "$T/chain.log"
	check "$1: the old OS runs the job, GRUB's one-shot entry boots the staging kernel" \
		vm_wait "$VM_LOG" 'Command line:.* inplace\.stage' 1200
}

# vm_chain_finish NAME: after a first boot of the new OS reported no unit
# failed: the next boot under the restored hostname with the old users
# logging in, then from the host the reimaged disk's checks and no copy of
# the bundle left in the new root
vm_chain_finish() {
	local from
	# the restored hostname is the kernel's from the next boot on (the
	# first one set the image's before the restore ran)
	from=$(vm_mark "$VM_LOG")
	vm_login root newrootpw 'systemctl reboot'
	vm_check_new_os_boots "$1" "$from" 1200 || return 1
	vm_login root newrootpw 'systemctl poweroff'
	vm_exited 120 || vm_kill
	vm_check_reimaged "$1" "$D" "$T/want.id" root
	vm_mount_part "$D" 1 "$T/m" || return 1
	check "$1: the new root's copy of the bundle is gone" \
		test ! -e "$T/m/var/lib/inplace/bundle" -a ! -e "$T/m/var/lib/inplace/bundle.new"
	vm_chain_cuts_landed "$T/m/var/lib/inplace" | sed 's/^/  info /'
	umount "$T/m"
}

# --- the chain's first boot; UEFI firmware ---

# vm_chain_first_boot NAME: after vm_chain_boot reached staging, the new
# OS's first boot ends with no unit failed (its restore and reclaim done)
vm_chain_first_boot() {
	# the old OS's own reports came before: look only from here
	check "$1: the new OS's first boot restores and reclaims, no unit failed" \
		vm_wait "$VM_LOG" 'VM-REPORT os=new host=[^ ]* state=running failed=\[\]' 2400 "$(vm_mark "$VM_LOG")"
}

# vm_uefi_args VARS: QEMU's words for OVMF with its NVRAM in the file VARS
# (a copy of OVMF_VARS.fd per disk: the firmware writes its entries there)
vm_uefi_args() {
	[ -r /usr/share/OVMF/OVMF_CODE.fd ] && [ -w "$1" ] ||
		{ echo "vm: no OVMF firmware (/usr/share/OVMF/OVMF_CODE.fd): apt-get install ovmf" >&2; return 1; }
	echo "-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd -drive if=pflash,format=raw,file=$1"
}
