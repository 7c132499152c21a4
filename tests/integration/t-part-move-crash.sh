#!/bin/bash
# t-part-move-crash.sh — kill -9 `inplace part move` at random instants (both
# directions, overlapping, 1 MiB shifts), then `inplace part resume`: every
# file intact, fsck clean, the partition at its old or its new place, and the
# journal gone.  Sometimes the resume is killed too and resumed again.
. "$TESTS_DIR/lib.sh"

MiB=$((1024 * 1024))
KILLS=${KILLS:-6}   # per scenario; 4 scenarios

fx_tree "$T/tree" 4 >/dev/null 2>&1
for i in 1 2 3 4; do head -c $((12 * MiB)) /dev/urandom > "$T/tree/data/blob$i.bin"; done

mkbase() { # IMG START_MIB
	fx_disk "$1" 200M "label: gpt
start=$2MiB, size=96MiB, type=linux"
	fx_mkfs "$1" 1 ext4 "$T/tree"
}
mkbase "$T/low.img" 1
mkbase "$T/high.img" 41
fx_hashes "$T/low.img" 1 > "$T/want"
[ -s "$T/want" ] || { fail "fixture" "no files hashed"; exit 1; }

now_ms() { date +%s%3N; }

# scenario NAME BASE TO_MIB
scenario() {
	local name=$1 base=$2 to=$3 img=$T/work.img from t0 dur i ms start out what bad=0
	read -r from _ < <(fx_part_range "$base" 1)
	# an uninterrupted run tells how long the move takes here
	cp --sparse=always "$base" "$img"
	t0=$(now_ms)
	"$INPLACE" part move -q "$img" 1 --to "${to}MiB" >/dev/null 2>&1 || { fail "$name" "uninterrupted move failed"; return 1; }
	dur=$(( $(now_ms) - t0 ))
	[ "$dur" -lt 20 ] && dur=20
	for i in $(seq 1 "$KILLS"); do
		cp --sparse=always "$base" "$img"
		ms=$(( RANDOM % dur ))
		"$INPLACE" part move -q "$img" 1 --to "${to}MiB" >/dev/null 2>&1 &
		local pid=$!
		track_pid "$pid"
		sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		# every other round, kill the first resume as well
		if [ $((i % 2)) -eq 0 ]; then
			"$INPLACE" part resume -q "$img" >/dev/null 2>&1 &
			pid=$!
			track_pid "$pid"
			sleep "0.0$((RANDOM % 10))"
			kill -9 "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
		fi
		if ! out=$("$INPLACE" part resume --json "$img" 2>&1); then
			fail "$name, kill $i after ${ms} ms" "resume: $out"; bad=1; continue
		fi
		read -r start _ < <(fx_part_range "$img" 1)
		if [ "$start" -ne "$from" ] && [ "$start" -ne $((to * MiB)) ]; then
			fail "$name, kill $i after ${ms} ms" "partition at $start"; bad=1; continue
		fi
		if ! fx_hashes "$img" 1 | cmp -s - "$T/want"; then
			fail "$name, kill $i after ${ms} ms" "files differ"; bad=1; continue
		fi
		if ! fx_fsck "$img" 1; then
			fail "$name, kill $i after ${ms} ms" "fsck found problems"; bad=1; continue
		fi
		if ! "$INPLACE" part resume --json "$img" 2>/dev/null | grep -q '"resumed": false'; then
			fail "$name, kill $i after ${ms} ms" "journal left behind"; bad=1; continue
		fi
		case $out in *'"resumed": true'*) what="resumed, now at" ;; *) what="nothing to resume, at" ;; esac
		pass "$name, kill $i after ${ms} ms ($what $((start / MiB)) MiB)"
	done
	return $bad
}

scenario "forward, overlapping"  "$T/low.img" 33
scenario "forward by 1 MiB"      "$T/low.img" 2
scenario "backward, overlapping" "$T/high.img" 9
scenario "backward by 1 MiB"     "$T/high.img" 40
rm -f "$T/work.img"
