#!/bin/bash
# t-image-kill — kill -9 a deploy at 20 instants spread over its run, run it
# again, and compare the partition with an uninterrupted deploy: identical
# bytes (used ranges rewritten exactly, unused ones untouched).
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
export INPLACE_STATE_DIR=$T/state

mkdir -p tree
fx_tree tree/mix 4 >/dev/null 2>&1
head -c $((64 << 20)) /dev/urandom > tree/big.bin   # incompressible: real work per frame
fx_disk src.img 200M 'label: gpt
size=150M, type=linux'
fx_mkfs src.img 1 ext4 tree || { fail "fixture" "mke2fs failed"; exit 1; }
"$INPLACE" image capture -q src.img 1 -o os.img >/dev/null || { fail "capture" "capture failed"; exit 1; }
fx_disk base.img 200M 'label: gpt
size=150M, type=linux'
fx_mkfs base.img 1 ext4 tree/mix   # an old OS the deploy overwrites

part_sum() {
	local start size
	read -r start size < <(fx_part_range "$1" "$2")
	dd if="$1" bs=4M skip="$start" count="$size" iflag=skip_bytes,count_bytes status=none | sha256sum
}

cp --sparse=always base.img ref.img
t0=$(date +%s%N)
ok "uninterrupted deploy" "$INPLACE" image deploy -q os.img ref.img 1
dur=$(( ($(date +%s%N) - t0) / 1000 ))   # microseconds
want=$(part_sum ref.img 1)
fx_hashes src.img 1 > want.files

kills=20 resumed=0 bad=0 i=0
# the instants are spread over the uninterrupted run's time, which the
# machine's load makes a poor guide: when none of them landed after the
# first frame was recorded, up to ten more rounds, each a little later
while [ "$i" -lt "$kills" ] || { [ "$resumed" -eq 0 ] && [ "$i" -lt $((kills + 10)) ]; }; do
	i=$((i + 1))
	cp --sparse=always base.img t.img
	"$INPLACE" image deploy -q -t $(( i % 2 + 1 )) os.img t.img 1 >/dev/null 2>&1 &
	pid=$!
	track_pid "$pid"
	# instants spread over the uninterrupted run (2x: the kills also land late)
	sleep "$(awk -v d="$dur" -v i="$i" -v n="$kills" 'BEGIN { if (i > n) i = n / 2 + (i - n) * n / 10; printf "%.4f", d * 2 * i / (n + 1) / 1e6 }')"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	out=$("$INPLACE" image deploy --json os.img t.img 1 2>&1) || { bad=$((bad + 1)); echo "  run $i: $out"; continue; }
	case "$out" in *'"resumed_at_frame": 0,'*) ;; *) resumed=$((resumed + 1)) ;; esac
	[ "$(part_sum t.img 1)" = "$want" ] || { bad=$((bad + 1)); echo "  run $i: partition differs"; }
done
echo "  ($i kills, $resumed resumed from a recorded frame)"
check "after kill -9 at $i instants, deploy again gives identical bytes" [ "$bad" -eq 0 ]
check "some kills resumed from the journal" [ "$resumed" -gt 0 ]
check "the files are the source's" cmp -s want.files <(fx_hashes t.img 1)
ok "fsck clean" fx_fsck t.img 1
check "the resume record is removed when done" [ -z "$(ls -A state 2>/dev/null)" ]
