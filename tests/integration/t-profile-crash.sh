#!/bin/bash
# t-profile-crash — kill -9 `profile save` at 24 random instants: the store
# either has COMPLETE and verifies, or lacks it and restore refuses it
# (exit 2); a re-run of save over the remains completes and verifies.
. "$(dirname "$0")/../lib.sh"
FX=$TESTS_DIR/fixtures/profile-root.sh
I=$INPLACE

bash "$FX" "$T/old" "$T/new" small >/dev/null || { fail "fixture" "profile-root.sh failed"; exit 1; }
# more data so that a save lasts long enough to be interrupted in every phase
for u in alice:1000 bob:1001 carol:1002; do
	n=${u%%:*}; id=${u##*:}
	head -c $((12 << 20)) /dev/urandom > "$T/old/home/$n/data/big.bin"
	for i in $(seq 1 300); do echo "$n $i $RANDOM" > "$T/old/home/$n/deep/many-$i"; done
	chown -R "$id:$id" "$T/old/home/$n"
done
start=$(date +%s%N)
"$I" profile save --root "$T/old" --store "$T/probe" >/dev/null || fail "probe save"
dur=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$dur" -lt 20 ] && dur=20
echo "  (a save takes ${dur} ms)"

complete=0 incomplete=0 bad=0
for k in $(seq 1 24); do
	s=$T/store
	rm -rf "$s"
	# instants spread over the whole save, a little beyond its end
	delay=$(( RANDOM % (dur * 11 / 10 + 1) ))
	"$I" profile save --root "$T/old" --store "$s" >/dev/null 2>&1 &
	pid=$!
	sleep "$(printf '0.%03d' "$delay")" 2>/dev/null || sleep "$((delay / 1000))"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	if [ -e "$s/COMPLETE" ]; then
		complete=$((complete + 1))
		"$I" profile verify --store "$s" >/dev/null 2>&1 || { bad=$((bad + 1)); fail "kill $k after ${delay}ms: COMPLETE but verify fails"; }
	else
		incomplete=$((incomplete + 1))
		if [ -d "$s" ]; then
			"$I" profile restore --store "$s" --root "$T/new" >/dev/null 2>&1; rc=$?
			[ "$rc" -eq 2 ] || { bad=$((bad + 1)); fail "kill $k after ${delay}ms: restore of an incomplete store exited $rc, not 2"; }
		fi
		"$I" profile save --root "$T/old" --store "$s" >/dev/null 2>&1 &&
			"$I" profile verify --store "$s" >/dev/null 2>&1 ||
			{ bad=$((bad + 1)); fail "kill $k after ${delay}ms: re-run of save did not complete and verify"; }
	fi
done
echo "  ($complete kills left a complete store, $incomplete an incomplete one)"
check "24 kills: every store complete and verified, or refused and completed by a re-run" test "$bad" -eq 0
check "some kills interrupted the save" test "$incomplete" -gt 0
