#!/bin/bash
# t-boot-home — a separate /home partition is kept, not copied: the old
# root's fstab mounts /home from partition 2 of the disk.  The pipeline
# saves only the accounts of the homes there, leaves the partition where it
# is (same place, same filesystem UUID), carries its fstab line into the new
# root by UUID and re-owns its files for the remapped bob.  The job also
# turns two [machine] items off: hostname and SSH host keys stay the new
# OS's while the machine-id is carried.  The first boot is killed -9
# inside the re-own and resumed.  Last, "already deployed" by
# content: with the state gone, the same image is recognised on the disk
# and nothing changes; another image is not taken for it.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
have_loop || { skip "home" "no loop devices (the steps mount partitions)"; exit 0; }
export INPLACE_RUN_DIR=$T/run

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
"$INPLACE" image build -q --from-dir new --fs ext4 --size 160MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
# many small files of bob's (remapped): the re-own takes long enough for
# the kill below to land inside it
mkdir old/home/bob/many && for i in $(seq 1 3000); do echo "$i" > "old/home/bob/many/f$i"; done &&
	chown -R 1001:1001 old/home/bob/many
users='^(alice|bob|carol)/'
snap_home() { bash "$TESTS_DIR/fixtures/profile-root.sh" snap "$1" home | grep -E "$users" | grep -v '/\.cache/'; }
snap_home old > want.snap
[ -s want.snap ] || { fail "fixture" "empty snapshot of the old homes"; exit 1; }

# The homes move to their own tree (same filesystem: xattrs, ACLs and
# hardlinks stay as they are), the old root keeps an empty /home.
HOME_UUID=6b1b5e52-7d0c-4d8e-9a41-1f0e5c3a2b77
mkdir homes && mv old/home/* homes/
printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /home ext4 defaults,nodev 0 2\n' \
	"$(cat /proc/sys/kernel/random/uuid)" "$HOME_UUID" > old/etc/fstab

# GPT, 1 GiB: the root (partition 1), then /home (partition 2) to the end
D=$T/home.img S=$T/state
fx_disk "$D" 1G $'label: gpt\nname=system, size=700MiB, type=L\nname=home, type=L'
fx_mkfs "$D" 1 ext4 old system
read -r hs hz < <(fx_part_range "$D" 2)
mke2fs -q -F -t ext4 -U "$HOME_UUID" -d homes -E offset="$hs" "$D" $((hz / 1024))k ||
	{ fail "fixture" "mke2fs of /home"; exit 1; }
home_range=$(partx -g -n 2 -o START,SECTORS "$D")

cat > job.ini <<EOF
; the old root of partition 1 becomes the new OS; /home (partition 2) stays
[job]
image = $T/newos.img
require_signature = no
disk = $D
system_partition = 1
store_size = 200MiB

[machine]
hostname = no
ssh-host-keys = no

[boot]
method = none

[notify]
countdown = 0
EOF

export INPLACE_STATE_DIR=$S
ok "run stops where the first reboot comes" "$INPLACE" run job.ini
ok "resume plays the staging boot" "$INPLACE" resume --disk "$D"
# the first boot, killed -9 inside the re-own of /home (its marker seen
# on the mounted partition), then resumed until done: no file mapped twice
hit=0
for attempt in 1 2 3 4 5; do
	"$INPLACE" resume --disk "$D" >/dev/null 2>>kill.err &
	pid=$!
	for ((i = 0; i < 3000; i++)); do
		compgen -G "$T/run/*/newroot/home/.inplace-reown.json" >/dev/null && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.01
	done
	if compgen -G "$T/run/*/newroot/home/.inplace-reown.json" >/dev/null && kill -9 "$pid" 2>/dev/null; then
		wait "$pid" 2>/dev/null
		hit=$((hit + 1))
		[ "$hit" -ge 2 ] && break
	else
		wait "$pid" 2>/dev/null
		break
	fi
done
check "killed inside the re-own of /home ($hit times)" test "$hit" -ge 1
for i in 1 2 3; do
	[ "$("$INPLACE" status --json | jq -r .phase)" = done ] && break
	ok "resume plays the first boot of the new OS" "$INPLACE" resume --disk "$D"
done
check "the run is done" test "$("$INPLACE" status --json | jq -r .phase)" = done

# the /home partition: where it was, its filesystem the same one, clean
check "/home partition: same start and size" test "$(partx -g -n 2 -o START,SECTORS "$D")" = "$home_range"
check "/home partition: filesystem UUID unchanged" \
	test "$(blkid -p -O "$hs" -o value -s UUID "$D")" = "$HOME_UUID"
ok "/home partition: fsck clean" fx_fsck "$D" 2
ok "root: fsck clean" fx_fsck "$D" 1
saved=$(jq -r '[.steps[] | select(.step == "save") | .result.profile.total.bytes] | first' "$S/state.json")
# the homes hold 300 kB of random data each; what is left is alice's
# crontab and bob's mail, which live on the root
check "no home went into the store (saved: $saved bytes: crontab and mail)" test "$saved" -lt 4096
check "save recorded the kept /home by UUID" \
	test "$(jq -r '[.steps[] | select(.step == "save") | .result.kept_homes[].uuid] | first' "$S/state.json")" = "$HOME_UUID"

# the new root with /home mounted where its fstab mounts it
m=$T/new-root
read -r s z < <(fx_part_range "$D" 1)
mkdir -p "$m"
LOOPDEV=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") && track_loop "$LOOPDEV" &&
	mount -o ro "$LOOPDEV" "$m" && track_mount "$m" || { fail "mount the new root"; exit 1; }
LOOPDEV=$(losetup -f --show -r -o "$hs" --sizelimit "$hz" "$D") && track_loop "$LOOPDEV" &&
	mount -o ro "$LOOPDEV" "$m/home" && track_mount "$m/home" || { fail "mount /home in the new root"; exit 1; }
check "fstab carries /home by UUID with its options" \
	grep -qx "UUID=$HOME_UUID /home ext4 defaults,nodev 0 2" "$m/etc/fstab"
check "bob remapped off dave's UID" test "$(awk -F: '$1=="bob"{print $3}' "$m/etc/passwd")" != 1001
check "every home file equal, owners by name after the remap" diff want.snap <(snap_home "$m")
check "no re-own marker left" test ! -e "$m/home/.inplace-reown.json"
check "[machine] hostname = no: the new OS's hostname" test "$(cat "$m/etc/hostname")" = newos
check "[machine] ssh-host-keys = no: the new OS's host key" cmp -s new/etc/ssh/ssh_host_ed25519_key "$m/etc/ssh/ssh_host_ed25519_key"
check "[machine] machine-id (on by default) carried" test "$(cat "$m/etc/machine-id")" = 0123456789abcdef0123456789abcdef
umount "$m/home" "$m"

# ---- already deployed, known from the disk itself --------------------------
sha_done=$(sha256sum < "$D")
out=$(INPLACE_STATE_DIR=$T/state-lost "$INPLACE" run --json job.ini)
check "state lost: run says the disk already carries the image" test "$(jq -r .already_done <<<"$out")" = true
check "state lost: the disk is unchanged" test "$(sha256sum < "$D")" = "$sha_done"
check "state lost: no state written" test ! -e "$T/state-lost/state.json"
sed 's/^countdown = 0$/countdown = 0\nmessage = another wording, another job hash/' job.ini > job2.ini
out=$("$INPLACE" run --json job2.ini)
check "another job file, same image: already deployed" test "$(jq -r .already_done <<<"$out")" = true
check "another job file: the disk is unchanged" test "$(sha256sum < "$D")" = "$sha_done"
mkdir -p new2 && cp -a new/. new2/ && echo "a newer release" > new2/etc/issue
"$INPLACE" image build -q --from-dir new2 --fs ext4 --size 160MiB -o newos2.img >/dev/null ||
	{ fail "fixture" "image build of a second image"; exit 1; }
sed "s|^image = .*|image = $T/newos2.img|" job.ini > job3.ini
out=$(INPLACE_STATE_DIR=$T/state-other "$INPLACE" run --json job3.ini)
check "another image: not taken for the deployed one" test "$(jq -r .already_done <<<"$out")" = false
