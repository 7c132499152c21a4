#!/bin/bash
# t-part-resize-crash.sh — kill -9 during `inplace part shrink`, then
# `inplace part resume`: every file intact, fsck clean, the shrink finished.
#
# ext4: 20 kills at random instants (half of them spread over the whole
# command, half timed from the moment the metadata undo is complete and
# resize2fs starts), plus the kill right after resize2fs finished and before inplace
# recorded it.  The whole process group is killed, as a crash would: a
# resize2fs left running would keep writing.  NTFS (ntfsresize has no undo):
# kills just before and just after ntfsresize, through a wrapper in PATH.
. "$TESTS_DIR/lib.sh"

MiB=$((1024 * 1024))
export INPLACE_STATE_DIR=$T/state
KILLS=${CRASH_KILLS:-20}

if ! have_loop; then skip "shrink crash test" "no loop devices"; exit 0; fi

part_size() { local s; read -r _ s < <(fx_part_range "$1" "$2"); echo "$s"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# ---- an ext4 partition whose files lie beyond the new end ------------------
# Written through the kernel after a filler took the front, so that
# resize2fs has ~80 MB to move and runs about a second.
fx_tree "$T/tree" 4 >/dev/null 2>&1
mkdir -p "$T/tree/bulk"
for i in $(seq 1 32); do head -c 2500000 /dev/urandom > "$T/tree/bulk/f$i"; done
IMG=$T/crash.img
fx_disk "$IMG" 1100M 'label: gpt
start=1MiB, size=1000MiB, type=linux
start=1001MiB, size=50MiB, type=linux'
fx_mkfs "$IMG" 1 ext4
mkdir -p "$T/mnt"
# fill_behind IMG FILLER_MIB [BLOCK_SIZE]: through the kernel, a filler
# takes the front, the tree goes behind it, the filler goes; with
# BLOCK_SIZE, partition 1 must have blocks of that size.
fill_behind() {
	attach_loop "$1" || return 1
	if [ ! -b "${LOOP}p1" ] || { [ -n "${3:-}" ] && [ "$(dumpe2fs -h "${LOOP}p1" 2>/dev/null | sed -n 's/^Block size: *//p')" != "$3" ]; } ||
	   ! mount "${LOOP}p1" "$T/mnt"; then
		losetup -d "$LOOP"; return 1
	fi
	track_mount "$T/mnt"
	dd if=/dev/zero of="$T/mnt/filler" bs=1M count="$2" status=none
	cp -a "$T/tree/." "$T/mnt/"
	rm "$T/mnt/filler"
	umount "$T/mnt"
	losetup -d "$LOOP"
}
fill_behind "$IMG" 700 || { skip "shrink crash test" "cannot attach and mount a loop device"; exit 0; }
H0=$(fx_hashes "$IMG" 1)
cp --sparse=always "$IMG" "$T/pristine.img"
TO=$((400 * MiB))

# check NAME: the shrink is complete and nothing is lost or left behind.
check_done() {
	local name=$1 size
	size=$(part_size "$IMG" 1)
	if [ "$size" -ne "$TO" ]; then fail "$name" "partition is $size bytes, wanted $TO"; return 1; fi
	if ! fx_fsck "$IMG" 1; then fail "$name" "fsck found problems"; return 1; fi
	if [ "$(fx_hashes "$IMG" 1)" != "$H0" ]; then fail "$name" "files changed"; return 1; fi
	if [ -n "$(losetup -j "$IMG")" ]; then fail "$name" "loop devices left: $(losetup -j "$IMG")"; return 1; fi
	if [ -n "$(ls -A "$INPLACE_STATE_DIR" 2>/dev/null)" ]; then fail "$name" "state left: $(ls "$INPLACE_STATE_DIR")"; return 1; fi
	return 0
}

# resume_and_check NAME: resume, then the same shrink again (a no-op when
# resume finished it; the whole shrink when the kill came before the journal).
resume_and_check() {
	local name=$1 out rc
	out=$("$INPLACE" part resume --json "$IMG" 2>&1); rc=$?
	if [ "$rc" -ne 0 ]; then fail "$name" "resume exit $rc: $out"; return 1; fi
	RESUMED=$(printf '%s' "$out" | jq -r '.resumed' 2>/dev/null)
	out=$("$INPLACE" part shrink -q "$IMG" 1 --to "$TO" 2>&1); rc=$?
	if [ "$rc" -ne 0 ]; then fail "$name" "shrink after resume exit $rc: $out"; return 1; fi
	check_done "$name" && pass "$name"
}

# Start a shrink in its own process group; $PID.
start_shrink() {
	setsid "$INPLACE" part shrink -q "$IMG" 1 --to "$TO" >/dev/null 2>&1 &
	PID=$!
}
kill_shrink() {
	kill -9 -- -"$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
}
# wait_for GLOB: until a file matches GLOB, or the shrink ($PID) has ended.
wait_for() {
	for _ in $(seq 1 1000); do
		compgen -G "$1" >/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || return 1
		sleep 0.005
	done
	return 1
}

# baseline: the uninterrupted shrink, and how long it takes
t0=$(now_ms)
if out=$("$INPLACE" part shrink -q "$IMG" 1 --to "$TO" 2>&1) && check_done "uninterrupted shrink"; then
	pass "uninterrupted shrink"
else fail "uninterrupted shrink" "$out"; exit 1; fi
DUR=$(( $(now_ms) - t0 ))
[ "$DUR" -lt 50 ] && DUR=50

interrupted=0
for i in $(seq 1 "$KILLS"); do
	cp --sparse=always "$T/pristine.img" "$IMG"
	start_shrink
	if [ $((i % 2)) -eq 1 ]; then
		delay=$((RANDOM % DUR)); what="at ${delay} ms"
	else
		# from the moment the metadata undo is complete: resize2fs starts
		wait_for "$INPLACE_STATE_DIR/*.metaundo"
		delay=$((RANDOM % (DUR / 2 + 1))); what="${delay} ms into resize2fs"
	fi
	sleep "$(printf '0.%03d' "$delay")" 2>/dev/null || sleep $((delay / 1000))
	kill_shrink
	RESUMED=
	resume_and_check "kill -9 #$i $what, resume: files intact, fsck clean, shrink done" &&
		[ "$RESUMED" = true ] && interrupted=$((interrupted + 1))
done
echo "  ($interrupted of $KILLS kills interrupted a shrink that resume then finished)"

# kill -9 of inplace alone: its resize2fs runs on, orphaned; resume waits
# for it to end before it rolls back.
for i in 1 2; do
	cp --sparse=always "$T/pristine.img" "$IMG"
	start_shrink
	wait_for "$INPLACE_STATE_DIR/*.metaundo"
	delay=$((RANDOM % (DUR / 2 + 1)))
	sleep "$(printf '0.%03d' "$delay")" 2>/dev/null || sleep $((delay / 1000))
	kill -9 "$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
	resume_and_check "kill -9 of inplace alone ${delay} ms into resize2fs, resume waits for the orphan"
done

# ---- deterministic windows, through wrappers in PATH ---------------------------
# WRAP_MODE=before: the resizer is about to run (journal says fs-resizing,
# nothing written); after: it finished, inplace has not recorded it yet.
mkdir -p "$T/wrap"
for tool in resize2fs ntfsresize; do
	real=$(command -v "$tool") || continue
	cat > "$T/wrap/$tool" <<WRAP
#!/bin/bash
case " \$* " in *" -P "*|*" --info "*|*" --no-action "*) exec "$real" "\$@" ;; esac
[ "\$WRAP_MODE" = before ] && { touch "$T/wrap/reached"; sleep 1000; }
"$real" "\$@"; rc=\$?
[ "\$WRAP_MODE" = after ] && { touch "$T/wrap/reached"; sleep 1000; }
exit \$rc
WRAP
	chmod +x "$T/wrap/$tool"
done

# wrapped_kill NAME MODE: run the shrink with the wrapper, kill it where the
# wrapper stops, resume, check.
wrapped_kill() {
	local name=$1 mode=$2
	rm -f "$T/wrap/reached"
	PATH="$T/wrap:$PATH" WRAP_MODE=$mode start_shrink
	for _ in $(seq 1 1500); do
		[ -e "$T/wrap/reached" ] && break
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.02
	done
	if [ ! -e "$T/wrap/reached" ]; then kill_shrink; fail "$name" "the wrapper was not reached"; return 1; fi
	kill_shrink
	resume_and_check "$name"
}

cp --sparse=always "$T/pristine.img" "$IMG"
wrapped_kill "ext4: kill -9 right after resize2fs finished, resume rolls back and redoes" after

# ---- ext4 of 1 KiB blocks: resize2fs -z corrupts those, so inplace saves -----
# every metadata block first (*.metaundo) and a resume writes them back.
# Kills timed from the moment that undo is complete, inside resize2fs.
IMG=$T/crash1k.img
fx_disk "$IMG" 480M 'label: gpt
start=1MiB, size=400MiB, type=linux'
fx_mkfs "$IMG" 1 ext4
fill_behind "$IMG" 280 1024 || { fail "1 KiB fixture" "not a mountable ext4 of 1 KiB blocks"; exit 1; }
H0=$(fx_hashes "$IMG" 1)
cp --sparse=always "$IMG" "$T/pristine.img"
TO=$((200 * MiB))
# the uninterrupted shrink, timed from the moment the undo is complete
start_shrink
wait_for "$INPLACE_STATE_DIR/*.metaundo"
t0=$(now_ms)
wait "$PID"; rc=$?
DUR=$(( $(now_ms) - t0 ))
[ "$DUR" -lt 20 ] && DUR=20
if [ "$rc" -eq 0 ] && check_done "1 KiB blocks: uninterrupted shrink"; then
	pass "1 KiB blocks: uninterrupted shrink"
else fail "1 KiB blocks: uninterrupted shrink" "exit $rc"; fi
interrupted=0 inresize=0
for i in $(seq 1 $(( (KILLS + 1) / 2 ))); do
	cp --sparse=always "$T/pristine.img" "$IMG"
	start_shrink
	wait_for "$INPLACE_STATE_DIR/*.metaundo"
	delay=$((RANDOM % DUR))
	sleep "$(printf '0.%03d' "$delay")" 2>/dev/null || sleep $((delay / 1000))
	kill_shrink
	# the journal's two slots: killed inside resize2fs when one says
	# fs-resizing and none fs-resized yet
	j=$(cat "$INPLACE_STATE_DIR"/*.journal 2>/dev/null | tr -d '\0')
	case $j in *phase=fs-resized*) ;; *phase=fs-resizing*) inresize=$((inresize + 1)) ;; esac
	RESUMED=
	resume_and_check "1 KiB blocks: kill -9 #$i ${delay} ms after the metadata undo, resume: files intact, fsck clean, shrink done" &&
		[ "$RESUMED" = true ] && interrupted=$((interrupted + 1))
done
echo "  ($interrupted 1 KiB-block shrinks interrupted and finished by resume, $inresize of them inside resize2fs)"
check "a 1 KiB-block shrink was killed inside resize2fs and rolled back at least once" [ "$inresize" -gt 0 ]

# NTFS
IMG=$T/ntfs.img
fx_disk "$IMG" 200M 'label: gpt
start=1MiB, size=150MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7'
if fx_mkfs "$IMG" 1 ntfs "$T/tree" 2>/dev/null; then
	H0=$(fx_hashes "$IMG" 1)
	cp --sparse=always "$IMG" "$T/pristine.img"
	TO=$((130 * MiB))
	wrapped_kill "ntfs: kill -9 just before ntfsresize, resume redoes the shrink" before
	cp --sparse=always "$T/pristine.img" "$IMG"
	wrapped_kill "ntfs: kill -9 just after ntfsresize, resume writes the table" after
else skip "ntfs shrink crash windows" "mkntfs/ntfs-3g unavailable"; fi
