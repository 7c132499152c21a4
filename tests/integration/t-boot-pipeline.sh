#!/bin/bash
# t-boot-pipeline — one job file carries a disk image from the old system to
# the new one with its users: `inplace run` (old OS) and one `inplace resume`
# per boot ([boot] method = none).  The old root fills the disk; the new OS
# image has its own user dave at bob's UID.  Afterwards every saved file is
# equal (content, mode, owner by name, xattrs, ACLs), bob is remapped, the
# machine identity is the old one, the storage partition is gone and the
# root fills the disk again, and status.log tells every phase in order.
# Then: the same job run again changes nothing; kill -9 at many instants
# of the whole chain, each followed by resume, still ends done and equal.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
have_loop || { skip "pipeline" "no loop devices (the steps mount partitions)"; exit 0; }
export INPLACE_RUN_DIR=$T/run

bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
require_tool minisign || exit 1
minisign -G -W -f -p k.pub -s k.key >/dev/null 2>&1 || { fail "fixture" "minisign -G"; exit 1; }
"$INPLACE" image build -q --from-dir new --fs ext4 --size 160MiB -s k.key -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
users='^(alice|bob|carol)/'
snap_home() { bash "$TESTS_DIR/fixtures/profile-root.sh" snap "$1" home | grep -E "$users" | grep -v '/\.cache/'; }
snap_home old > want.snap
[ -s want.snap ] || { fail "fixture" "empty snapshot of the old homes"; exit 1; }

# make_disk IMG LABEL: the old root filling a 1 GiB disk
make_disk() {
	if [ "$2" = gpt ]; then fx_disk "$1" 1G $'label: gpt\nname=system, type=L'
	else fx_disk "$1" 1G $'label: dos\ntype=83'; fi
	fx_mkfs "$1" 1 ext4 old system
}

write_job() { # FILE DISK [signed]
	local sig="require_signature = no"
	[ "${3:-}" = signed ] && sig="key = $T/k.pub"
	cat > "$1" <<EOF
; a test job: the old root of partition 1 of $2 becomes the new OS image
[job]
image = $T/newos.img
$sig
disk = $2
system_partition = 1
store_size = 256MiB

[boot]
method = none

[notify]
countdown = 0
EOF
}

# mount partition 1 of IMG read-only at DIR (a loop device over its range)
mount_root() {
	local s z
	read -r s z < <(fx_part_range "$1" 1)
	mkdir -p "$2"
	LOOPDEV=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$1") || return 1
	track_loop "$LOOPDEV"
	mount -o ro "$LOOPDEV" "$2" || return 1
	track_mount "$2"
}

check_result() { # NAME IMG STATE [PARTS]: PARTS partitions left (1: the root fills the disk)
	local name=$1 img=$2 st=$3 parts=${4:-1} m=$T/chk-$RANDOM
	check "$name: the run is done" test "$(INPLACE_STATE_DIR=$st "$INPLACE" status --json | jq -r .phase)" = done
	check "$name: $parts partition(s) left" test "$(partx -g -o NR "$img" | wc -l)" = "$parts"
	[ "$parts" = 1 ] && check "$name: the root fills the disk again" \
		test "$(partx -g -n 1 -o SECTORS "$img" | tr -d ' ')" -ge $(( (1024 - 2) * 2048 ))
	ok "$name: fsck clean" fx_fsck "$img" 1
	mount_root "$img" "$m" || { fail "$name: mount the new root"; return; }
	check "$name: every saved file equal" diff want.snap <(snap_home "$m")
	check "$name: the new OS's own user is still there" grep -q '^dave:x:1001:' "$m/etc/passwd"
	check "$name: bob remapped off dave's UID" test "$(awk -F: '$1=="bob"{print $3}' "$m/etc/passwd")" != 1001
	check "$name: password hashes kept" \
		test "$(grep '^alice:' "$m/etc/shadow" | cut -d: -f2)" = "$(grep '^alice:' old/etc/shadow | cut -d: -f2)"
	check "$name: hostname kept" test "$(cat "$m/etc/hostname")" = oldhost
	check "$name: machine-id kept" test "$(cat "$m/etc/machine-id")" = 0123456789abcdef0123456789abcdef
	check "$name: ssh host keys kept" cmp -s old/etc/ssh/ssh_host_ed25519_key "$m/etc/ssh/ssh_host_ed25519_key"
	check "$name: the first-boot unit is gone" test ! -e "$m/etc/systemd/system/inplace-firstboot.service"
	check "$name: fstab names the root by UUID" \
		grep -q "^UUID=$(blkid -p -O "$(partx -g -n 1 -o START "$img" | awk '{print $1*512}')" -o value -s UUID "$img") / " "$m/etc/fstab"
	CHK_ROOT=$m  # still mounted: a caller may look further, then umount it
}

# ---- one run, boot by boot -------------------------------------------------
for label in gpt dos; do
	D=$T/$label.img S=$T/state-$label
	make_disk "$D" "$label"
	# the GPT run checks the image's signature, the MBR run takes it unsigned
	write_job "$T/$label.ini" "$D" "$([ "$label" = gpt ] && echo signed)"
	export INPLACE_STATE_DIR=$S
	ok "$label: run stops where the first reboot comes" "$INPLACE" run "$T/$label.ini"
	check "$label: run changed nothing on the disk yet" test "$(partx -g -o NR "$D" | wc -l)" = 1
	check "$label: phase prepare" test "$("$INPLACE" status --json | jq -r .phase)" = prepare
	ok "$label: resume plays the staging boot" "$INPLACE" resume --disk "$D"
	check "$label: the store partition exists" test "$(partx -g -o NR "$D" | wc -l)" = 2
	check "$label: the store holds the state: phase restore" \
		test "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" = restore
	# (the store is mounted to read its state, as status does: only its
	# superblock's mount time may change)
	tbl_restore=$(sfdisk -d "$D"); sys_restore=$(fx_hashes "$D" 1 | sha256sum)
	must_fail 2 "$label: reclaim refused while the store holds profiles not restored" "$INPLACE" reclaim --disk "$D"
	check "$label: the refused reclaim changed no partition" test "$(sfdisk -d "$D")" = "$tbl_restore"
	check "$label: the refused reclaim left the new system as it was" test "$(fx_hashes "$D" 1 | sha256sum)" = "$sys_restore"
	check "$label: the refused reclaim left the phase restore" \
		test "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" = restore
	ok "$label: resume plays the first boot of the new OS" "$INPLACE" resume --disk "$D"
	check_result "$label" "$D" "$S"; umount "$CHK_ROOT"
	phases=$(jq -r .phase "$S/status.log" | uniq | tr '\n' ' ')
	check "$label: status.log tells every phase in order" \
		test "$phases" = "preflight notify prepare deploy restore finish done "
	out=$("$INPLACE" run --json "$T/$label.ini")
	check "$label: the same job again: already done" test "$(jq -r .already_done <<<"$out")" = true
	ok "$label: resume after done is a no-op" "$INPLACE" resume --disk "$D"
done
unset INPLACE_STATE_DIR

play_all() { # NAME JOB DISK: run, then one resume per boot
	ok "$1: run" "$INPLACE" run "$2" &&
	ok "$1: staging boot" "$INPLACE" resume --disk "$3" &&
	ok "$1: first boot of the new OS" "$INPLACE" resume --disk "$3"
}

# ---- the admin at a terminal: postpone, then install -----------------------
# `inplace run` in a tmux pane: the notify phase asks; 'p' '1' postpones by
# an hour (the disk untouched, the run still in phase notify, the answer in
# status.log), then a second run answered 'i' goes on to prepare.
require_tool tmux || exit 1
TM=(tmux -L "inplace-pipe-$$" -f /dev/null)
"${TM[@]}" new-session -d -s idle -x 200 -y 30 "sleep 3600" && track_pid "$("${TM[@]}" display-message -p -t idle '#{pid}')"
D=$T/ask.img S=$T/state-ask
make_disk "$D" gpt
write_job ask.ini "$D"
sed -i 's/^countdown = 0$/countdown = 60\nallow_postpone = yes\nmax_postpone = 1d/' ask.ini
sha_before=$(sha256sum < "$D")
pane_has() { local i; for ((i = 0; i < 300; i++)); do "${TM[@]}" capture-pane -p -t "$1" 2>/dev/null | grep -qF -- "$2" && return 0; sleep 0.1; done; return 1; }
ask() { # NAME KEY…
	local name=$1 k i; shift
	"${TM[@]}" new-session -d -s "$name" -x 200 -y 30 \
		"INPLACE_STATE_DIR=$S INPLACE_UTMP=/dev/null INPLACE_RUN_USER_DIR=$T/norun $(printf '%q' "$INPLACE") run $T/ask.ini > $T/$name.out; echo \$? > $T/$name.rc; sleep 3600"
	pane_has "$name" "[p]ostpone" || { fail "$name: no prompt" "$("${TM[@]}" capture-pane -p -t "$name" | tail -3)"; return 1; }
	for k; do "${TM[@]}" send-keys -t "$name" -l "$k"; sleep 0.3; done
	for ((i = 0; i < 600; i++)); do [ -s "$T/$name.rc" ] && return 0; sleep 0.1; done
	return 1
}
mkdir -p "$T/norun"
if ask later p 1; then
	check "ask: postpone answered at the terminal" grep -q '^postponed: nothing was changed' later.out
	check "ask: the disk is untouched" test "$(sha256sum < "$D")" = "$sha_before"
	check "ask: the run waits in phase notify" \
		test "$(INPLACE_STATE_DIR=$S "$INPLACE" status --json | jq -r .phase)" = notify
	check "ask: status.log holds the answer" grep -q 'answer: postpone' "$S/status.log"
fi
if ask now i; then
	check "ask: install answered, the run goes on to prepare" \
		test "$(INPLACE_STATE_DIR=$S "$INPLACE" status --json | jq -r .phase)" = prepare
fi

# ---- on_failure = rollback: a store damaged before the first boot --------
# The old system is captured into the store (rollback_image = yes); an
# archive of the store is then damaged, so the restore refuses it: the old
# system is written back, file for file, and the run ends rolled back.
D=$T/rb.img S=$T/state-rb
make_disk "$D" gpt
old_hashes=$(fx_hashes "$D" 1)
write_job rb.ini "$D"
sed -i 's|^store_size = .*|store_size = 400MiB\non_failure = rollback\nrollback_image = yes|' rb.ini
export INPLACE_STATE_DIR=$S
ok "rollback: run" "$INPLACE" run rb.ini
ok "rollback: staging boot (the rollback image captured)" "$INPLACE" resume --disk "$D"
read -r s z < <(fx_part_range "$D" 2)
mkdir -p "$T/rbstore"
LOOPDEV=$(losetup -f --show -o "$s" --sizelimit "$z" "$D") && track_loop "$LOOPDEV" &&
	mount "$LOOPDEV" "$T/rbstore" && track_mount "$T/rbstore"
arch=$(ls "$T"/rbstore/inplace/profile/alice*.zst 2>/dev/null | head -1)
check "rollback: the store holds the rollback image" test -s "$T/rbstore/inplace/image/rollback.img"
printf 'X' | dd of="$arch" bs=1 seek=200 conv=notrunc status=none
umount "$T/rbstore"
must_fail 1 "rollback: the restore refuses the damaged store and rolls back" "$INPLACE" resume --disk "$D"
check "rollback: phase rolled-back" test "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" = rolled-back
check "rollback: the old system is back, every file equal" test "$(fx_hashes "$D" 1)" = "$old_hashes"
ok "rollback: fsck clean" fx_fsck "$D" 1
unset INPLACE_STATE_DIR

# ---- the store in a directory on a second disk -----------------------------
D=$T/dir.img S=$T/state-dir
make_disk "$D" gpt
truncate -s 400M second.img && mkfs.ext4 -q -F second.img && mkdir -p second &&
	LOOPDEV=$(losetup -f --show second.img) && track_loop "$LOOPDEV" && mount "$LOOPDEV" second && track_mount "$T/second" && mkdir second/store
write_job dir.ini "$D"
sed -i "s|^store_size = .*|store = $T/second/store|" dir.ini
export INPLACE_STATE_DIR=$S
sha_before=$(sha256sum < "$D")
play_all "store dir" dir.ini "$D"
check_result "store dir" "$D" "$S"; umount "$CHK_ROOT"
check "store dir: no password hash or image left in the directory" \
	test -z "$(ls -A second/store 2>/dev/null)"
check "store dir: the disk was reimaged in place" test "$(sha256sum < "$D")" != "$sha_before"

# ---- keep_storage = yes: the store stays as a data partition --------------
D=$T/keep.img S=$T/state-keep
make_disk "$D" gpt
write_job keep.ini "$D"
sed -i 's|^store_size = .*|&\nkeep_storage = yes|' keep.ini
export INPLACE_STATE_DIR=$S
play_all "keep yes" keep.ini "$D"
check_result "keep yes" "$D" "$S" 2
check "keep yes: the new fstab mounts it by label" grep -q '^LABEL=INPLACE-STORE ' "$CHK_ROOT/etc/fstab"
umount "$CHK_ROOT"
check "keep yes: its profile (password hashes) is gone" \
	bash -c "debugfs -R 'ls -l /inplace' '$D?offset=$(partx -g -n 2 -o START "$D" | awk '{print $1*512}')' 2>/dev/null | grep -qv profile"

# ---- inplace reclaim: the kept store given back by hand ---------------------
read -r ks kz < <(fx_part_range "$D" 2)
hash_alice=$(grep '^alice:' old/etc/shadow | cut -d: -f2)
hash_json=$(printf '%s' "$hash_alice" | sed 's|/|\\/|g')   # json-c writes / as \/
in_store() { dd if="$D" bs=1M iflag=skip_bytes,count_bytes skip="$ks" count="$kz" status=none | grep -qaF -e "$hash_alice" -e "$hash_json"; }
check "reclaim: alice's hash is still in the kept store's blocks (deleted, not wiped)" in_store
ok "reclaim: the kept store given back" sh -c '"$1" reclaim --disk "$2" --json > reclaim.json' _ "$INPLACE" "$D"
check "reclaim: says it reclaimed" test "$(jq -r .reclaimed reclaim.json)" = true
check "reclaim: 1 partition left" test "$(partx -g -o NR "$D" | wc -l)" = 1
check "reclaim: the root fills the disk again" test "$(partx -g -n 1 -o SECTORS "$D" | tr -d ' ')" -ge $(( (1024 - 2) * 2048 ))
ok "reclaim: fsck clean" fx_fsck "$D" 1
check "reclaim: alice's hash is nowhere in the store's former range" bash -c "! dd if='$D' bs=1M iflag=skip_bytes,count_bytes skip=$ks count=$kz status=none | grep -qaF -e '$hash_alice' -e '$hash_json'"
mount_root "$D" "$T/reclaimed" || fail "reclaim: mount the root"
check "reclaim: the fstab line of the store is gone" sh -c "! grep -q 'LABEL=INPLACE-STORE' '$T/reclaimed/etc/fstab'"
check "reclaim: the root's own fstab line stays" grep -q '^UUID=.* / ' "$T/reclaimed/etc/fstab"
umount "$T/reclaimed"
ok "reclaim again: nothing to reclaim" sh -c '"$1" reclaim --disk "$2" --json > reclaim2.json' _ "$INPLACE" "$D"
check "reclaim again: nothing reclaimed" test "$(jq -r .reclaimed reclaim2.json)" = false

# ---- keep_storage = image: captured into the new system, then deleted ------
D=$T/img.img S=$T/state-img
make_disk "$D" gpt
write_job img.ini "$D"
sed -i 's|^store_size = .*|&\nkeep_storage = image|' img.ini
export INPLACE_STATE_DIR=$S
play_all "keep image" img.ini "$D"
check_result "keep image" "$D" "$S"
ok "keep image: the store's image in the new system verifies" "$INPLACE" image verify "$CHK_ROOT/var/lib/inplace/storage.img"
umount "$CHK_ROOT"
unset INPLACE_STATE_DIR

# ---- kill -9 anywhere ------------------------------------------------------
# Runs killed again and again: each command (run, then resume) is killed
# after a delay taken in turn from a list, and started again.  The same step
# killed again waits a little longer each time, so that every step, however
# slow on a loaded machine, ends in the end.  Rounds on fresh disks until 30
# kills have landed; every round must end done with every file equal.
delays=(0.02 0.3 0.05 0.5 0.1 0.8 0.15 1.2 0.2 0.4 0.08 0.6 1.6 0.25 0.12)
kills=0 phases="" round=0
while [ "$kills" -lt 30 ] && [ "$round" -lt 10 ]; do
	round=$((round + 1))
	D=$T/kill$round.img S=$T/state-kill$round
	make_disk "$D" gpt
	write_job "$T/kill$round.ini" "$D"
	export INPLACE_STATE_DIR=$S
	i=0 again=0 last_at=""
	while [ "$i" -lt 100 ]; do
		i=$((i + 1))
		st=$("$INPLACE" status --disk "$D" --json 2>/dev/null)
		phase=$(jq -r .phase <<<"$st"); phase=${phase:-unknown}
		[ "$phase" = done ] && break
		at="$phase/$(jq -r .step <<<"$st")"
		if [ "$at" = "$last_at" ]; then again=$((again + 1)); else again=0; fi
		last_at=$at
		if [ "$phase" = none ] || [ "$phase" = preflight ] || [ "$phase" = notify ]; then cmd=(run "$T/kill$round.ini"); else cmd=(resume --disk "$D"); fi
		"$INPLACE" "${cmd[@]}" >/dev/null 2>>kill.err &
		pid=$!
		if [ "$kills" -lt 30 ]; then
			sleep "$(awk -v d="${delays[$((i % ${#delays[@]}))]}" -v a="$again" 'BEGIN{print d * (1 + a / 2)}')"
			if kill -9 "$pid" 2>/dev/null; then
				wait "$pid" 2>/dev/null
				kills=$((kills + 1))
				# where the kill landed: the phase the state was in
				phases="$phases $("$INPLACE" status --disk "$D" --json 2>/dev/null | jq -r .phase)"
			fi
		fi
		wait "$pid" 2>/dev/null
	done
	check "kill round $round: nothing left mounted" test -z "$(grep " $T/run" /proc/self/mountinfo)"
	check "kill round $round: no loop device left over the disk" test -z "$(losetup -j "$D")"
	check_result "kill round $round" "$D" "$S"; umount "$CHK_ROOT"
	rm -f "$D"
done
echo "   kills: $kills in $round rounds, by the phase they landed in:$(printf "%s\n" $phases | sort | uniq -c | awk '{printf " %s×%s", $2, $1}')"
check "kill: 30 kills landed" test "$kills" -ge 30

# And one run killed inside each step in turn, found by watching its
# state.json (in the state directory, then in the mounted store): kill -9
# the moment the step is recorded running, then go on.
D=$T/aim.img S=$T/state-aim
make_disk "$D" gpt
write_job "$T/aim.ini" "$D"
export INPLACE_STATE_DIR=$S
step_now() { cat "$S/state.json" "$T"/run/*/store/inplace/state/state.json 2>/dev/null | jq -r 'select(.step != "") | .phase + "/" + .step' 2>/dev/null | tail -1; }
"$INPLACE" run "$T/aim.ini" >/dev/null 2>>kill.err
hit=""
# the steps long enough to be seen by polling, in the order they come
# (a resume that stops where a reboot comes before the target is followed
# by another)
for target in prepare/make-storage prepare/save deploy/deploy restore/restore finish/reclaim; do
	for attempt in 1 2 3; do
		"$INPLACE" resume --disk "$D" >/dev/null 2>>kill.err &
		pid=$!
		for ((i = 0; i < 3000; i++)); do
			[ "$(step_now)" = "$target" ] && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.01
		done
		if kill -9 "$pid" 2>/dev/null && [ "$(step_now)" = "$target" ]; then
			wait "$pid" 2>/dev/null
			hit="$hit $target"
			break
		fi
		wait "$pid" 2>/dev/null
	done
done
while "$INPLACE" resume --disk "$D" >/dev/null 2>>kill.err &&
	[ "$("$INPLACE" status --disk "$D" --json | jq -r .phase)" != done ]; do :; done
echo "   killed inside:$hit"
check "aimed kills: inside make-storage, save, deploy, restore and reclaim at least" \
	bash -c "for s in prepare/make-storage prepare/save deploy/deploy restore/restore finish/reclaim; do grep -qw \"\$s\" <<<'$hit' || exit 1; done"
check "aimed kills: no loop device left over the disk" test -z "$(losetup -j "$D")"
check_result "aimed kills" "$D" "$S"; umount "$CHK_ROOT"
unset INPLACE_STATE_DIR
