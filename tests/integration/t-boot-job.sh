#!/bin/bash
# t-boot-job.sh — `inplace run JOB.ini --dry-run` (preflight) and `inplace
# status` on a disk image whose root fills the disk: a good job prints the
# plan (shrink the root, create the store) and writes nothing; bad jobs
# (each kind of mistake), a missing or unreachable image, a bad signature,
# a store directory on the disk being reimaged and a disk too full for the
# store are refused, exit 2 (1 for a network failure), the disk's sha256
# unchanged and no state written.  Then run without --dry-run keeps state
# and events, status reads them, and a state of another job or a newer
# format is refused.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

cd "$T" || exit 1
bash "$TESTS_DIR/fixtures/profile-root.sh" old new small >/dev/null 2>&1 || { fail "fixture" "profile-root.sh failed"; exit 1; }
minisign -G -W -f -p k.pub -s k.key >/dev/null 2>&1 && minisign -G -W -f -p other.pub -s other.key >/dev/null 2>&1 ||
	{ skip "all" "minisign -G failed"; exit 0; }
# the old system: GPT, one ext4 root filling the disk, with users
fx_disk disk.img 256M 'label: gpt
start=1MiB, type=linux' && fx_mkfs disk.img 1 ext4 old ROOT || { fail "fixture" "disk"; exit 1; }
"$INPLACE" image build -q --from-dir new --size 48M -o new.img --sign k.key >/dev/null &&
"$INPLACE" image build -q --from-dir new --size 200M -o huge.img --sign k.key >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
cp new.img forged.img && minisign -S -s other.key -m forged.img >/dev/null 2>&1
sum=$(sha256sum < disk.img)

# body IMAGE KEY PART [LINE...]: a [job] body on disk.img ("-": no such key)
body() {
	local img=$1 key=$2 part=$3
	shift 3
	[ "$img" = - ] || echo "image = $img"
	[ "$key" = - ] || echo "key = $key"
	echo "disk = $T/disk.img"
	echo "system_partition = $part"
	[ $# -eq 0 ] || printf '%s\n' "$@"
}

# job NAME [EXTRA [JOB-KEYS]]: a job file; JOB-KEYS replace the default [job] body
job() {
	local body=${3:-$(body "$T/new.img" "$T/k.pub" 1)}
	printf '[job]\n%s\n%s\n[boot]\nmethod = none\n' "$body" "${2:-}" > "$T/$1.ini"
	# nobody to ask here: the notify phase goes on at once
	grep -q '^\[notify\]' "$T/$1.ini" || printf '[notify]\ncountdown = 0\n' >> "$T/$1.ini"
}

unchanged() { [ "$(sha256sum < disk.img)" = "$sum" ] && [ ! -e "$INPLACE_STATE_DIR/state.json" ]; }

# refuse WANT NAME JOB: run --dry-run and run both exit WANT, one line on
# stderr, nothing written
refuse() {
	local want=$1 name=$2 jobf=$3 out rc mode
	for mode in --dry-run ""; do
		out=$("$INPLACE" run $mode "$jobf" 2>&1 >/dev/null); rc=$?
		if [ "$rc" -ne "$want" ]; then fail "$name" "run $mode: exit $rc, wanted $want: $out"; return 1; fi
		if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then fail "$name" "not one line: $out"; return 1; fi
	done
	if ! unchanged; then fail "$name" "wrote something"; return 1; fi
	pass "$name"
}

if ! have_loop; then
	skip "preflight estimate" "no loop device to mount the root read-only"
else
	job good
	out=$("$INPLACE" run --dry-run --json good.ini)
	check "good job: --dry-run plans shrink + create" [ "$(jq -r '[.plan.steps[].op] | join(" ")' <<<"$out")" = "shrink create" ]
	check "good job: the estimate saw the users" [ "$(jq -r '[.estimate.users[].name] | join(",")' <<<"$out")" = "alice,bob,carol" ]
	check "good job: store = estimate + 10% + image + bundle" \
		[ "$(jq '.store.bytes >= .store.profile_bytes * 1.1 + .image.bytes' <<<"$out")" = true ]
	check "good job: signature good, image fits" [ "$(jq -r '.image.signature, (.system_bytes_after >= .image.partition_bytes)' <<<"$out" | tr '\n' ' ')" = "good true " ]
	out=$("$INPLACE" run --dry-run good.ini)
	check "good job: the plan is printed" grep -q "shrink partition 1 from" <<<"$out"
	job rollback_room "rollback_image = yes"
	good_store=$("$INPLACE" run --dry-run --json good.ini | jq .store.bytes)
	check "rollback_image = yes: the store also holds the old system's used bytes" \
		[ "$("$INPLACE" run --dry-run --json rollback_room.ini | jq ".store.rollback_bytes > 0 and .store.bytes > $good_store and .store.bytes >= .store.profile_bytes * 1.1 + .image.bytes + .store.rollback_bytes")" = true ]
	check "good job: --dry-run wrote nothing, left no mount or loop" \
		bash -c "[ '$(sha256sum < disk.img)' = '$sum' ] && [ ! -e '$INPLACE_STATE_DIR/state.json' ] && ! losetup -j '$T/disk.img' | grep -q . && ! grep -q inplace-root /proc/self/mountinfo"

	# a disk too full for the store: the 95% full fixture, store auto
	fx_disk_gpt_95full full.img >/dev/null 2>&1
	fullsum=$(sha256sum < full.img)
	job full "" "image = $T/new.img
key = $T/k.pub
disk = $T/full.img
system_partition = 1"
	must_fail 2 "disk too full for the store: refused" "$INPLACE" run --dry-run full.ini
	check "disk too full: unchanged" [ "$(sha256sum < full.img)" = "$fullsum" ]

	# the image does not fit the root once the store has its room
	job huge "" "$(body "$T/huge.img" "$T/k.pub" 1)"
	refuse 2 "an image too large for the shrunk root: refused" huge.ini
fi

# bad jobs: each kind of mistake
job typo "imgae = x"
refuse 2 "unknown key: refused" typo.ini
check "unknown key: line and suggestion" bash -c "'$INPLACE' run --dry-run typo.ini 2>&1 | grep -qx \"inplace: typo.ini:6: unknown key 'imgae' in \\[job\\] (did you mean 'image'?)\""
job badbool "require_signature = perhaps"
refuse 2 "bad boolean: refused" badbool.ini
job badsize "store_size = lots"
refuse 2 "bad size: refused" badsize.ini
job badenum "[notify]
countdown = soon"
refuse 2 "bad duration: refused" badenum.ini
job nosection "[wheather]"
refuse 2 "unknown section: refused" nosection.ini
job dup "system_partition = 1"
refuse 2 "duplicate key: refused" dup.ini
job noimage "" "$(body "-" "$T/k.pub" 1)"
refuse 2 "no image: refused" noimage.ini
job nokey "" "$(body "$T/new.img" "-" 1)"
refuse 2 "require_signature without key: refused" nokey.ini
job rollback "on_failure = rollback"
refuse 2 "rollback without rollback_image: refused" rollback.ini
job badspec "[profile]
users = alice
levle = 3"
refuse 2 "profile spec typo: refused" badspec.ini
job nopart "" "$(body "$T/new.img" "$T/k.pub" 7)"
refuse 2 "missing system partition: refused" nopart.ini
job nokeyfile "" "$(body "$T/new.img" "$T/missing.pub" 1)"
refuse 2 "missing key file: refused" nokeyfile.ini
must_fail 2 "missing job file" "$INPLACE" run --dry-run "$T/none.ini"

# the image: missing, unreachable, badly signed
job missing "" "$(body "$T/missing.img" "$T/k.pub" 1 "store_size = 64M")"
refuse 2 "missing image: refused" missing.ini
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
job url "" "$(body "http://127.0.0.1:$port/new.img" "$T/k.pub" 1 "mirror = http://127.0.0.1:$port/mirror.img" "store_size = 64M")"
refuse 1 "unreachable image URL and mirror: failed" url.ini
job forged "" "$(body "$T/forged.img" "$T/k.pub" 1 "store_size = 64M")"
refuse 2 "image signed with another key: refused" forged.ini
job unsigned "" "$(body "$T/forged.img" "-" 1 "require_signature = no" "store_size = 64M")"
ok "require_signature = no: the same image passes" "$INPLACE" run --dry-run unsigned.ini
job toolarge "" "$(body "$T/new.img" "$T/k.pub" 1 "store_size = 1G")"
refuse 2 "store_size larger than the disk can give: refused" toolarge.ini

# store = a directory: on another filesystem fine, on the disk refused
mkdir -p "$T/second"
job storedir "" "$(body "$T/new.img" "$T/k.pub" 1 "store = $T/second" "store_size = 1M")"
out=$("$INPLACE" run --dry-run --json storedir.ini)
check "store directory elsewhere: accepted, no plan" [ "$(jq -r '.store.kind, .plan' <<<"$out" | tr '\n' ' ')" = "directory null " ]
if have_loop && attach_loop "$T/disk.img" && [ -b "${LOOP}p1" ] && mkdir -p "$T/mnt" && mount -o ro "${LOOP}p1" "$T/mnt"; then
	track_mount "$T/mnt"
	job ondisk "" "$(body "$T/new.img" "$T/k.pub" 1 "store = $T/mnt/home" "store_size = 1M")"
	out=$("$INPLACE" run --dry-run ondisk.ini 2>&1); rc=$?
	check "store directory on the disk being reimaged: refused" [ "$rc" -eq 2 ]
	check "… naming the disk" grep -q "is on $T/disk.img, the disk being reimaged" <<<"$out"
	umount "$T/mnt"
	losetup -d "$LOOP"
else
	skip "store directory on the disk" "no loop device or partition node"
fi
check "after all refusals: disk unchanged, no state" unchanged

# status without state, then a run that keeps state and events
out=$("$INPLACE" status --json)
check "status without state: phase none, exit 0" [ "$(jq -r '.version, .phase, .ok' <<<"$out" | tr '\n' ' ')" = "1 none true " ]
job store64 "" "$(body "$T/new.img" "$T/k.pub" 1 "store_size = 64M")"
# one writer at a time: a run while another holds the state directory
mkdir -p "$INPLACE_STATE_DIR"
python3 -c 'import fcntl, sys, time; f = open(sys.argv[1], "a"); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(60)' \
	"$INPLACE_STATE_DIR/run.lock" & holder=$!; track_pid $holder
for _ in $(seq 100); do flock -n "$INPLACE_STATE_DIR/run.lock" true || break; sleep 0.1; done
must_fail 1 "a run while another runs: refused" "$INPLACE" run store64.ini
check "… and it wrote no state" [ ! -e "$INPLACE_STATE_DIR/state.json" ]
kill $holder; wait $holder 2>/dev/null
ok "run without --dry-run: preflight, notify, then stops where the first reboot comes" "$INPLACE" run store64.ini
check "run wrote nothing to the disk" [ "$(sha256sum < disk.img)" = "$sum" ]
out=$("$INPLACE" status --json)
check "status: phase prepare, events in order" \
	[ "$(jq -r '.phase, .ok, ([.events[].seq] == ([.events[].seq] | sort)), (.events | length > 3)' <<<"$out" | tr '\n' ' ')" = "prepare true true true " ]
check "status.log: every line JSON with time, host, boot_id" \
	bash -c "jq -e 'select(.time and .host and .boot_id and .level and .message) | .seq' '$INPLACE_STATE_DIR/status.log' | wc -l | grep -qx \$(wc -l < '$INPLACE_STATE_DIR/status.log')"
check "status --disk of another disk: none" [ "$("$INPLACE" status --json --disk "$T/new.img" | jq -r .phase)" = none ]
out=$("$INPLACE" run --json store64.ini)
check "run again: the same job is under way, nothing changed" \
	[ "$(jq -r '.under_way, .phase' <<<"$out" | tr '\n' ' ')" = "true prepare " ]
check "run again: seq in order" [ "$(jq -s '[.[].seq] == [range(1; length + 1)]' "$INPLACE_STATE_DIR/status.log")" = true ]
# another job's state that changed something (a step of prepare begun)
# is refused; one that changed nothing yet is replaced
job other "" "$(body "$T/new.img" "$T/k.pub" 1 "store_size = 65M")"
ok "a state of another job that changed nothing (phase prepare, no step begun): replaced" "$INPLACE" run other.ini
check "… now the other job's" [ "$("$INPLACE" status --json | jq -r .job)" = "$("$INPLACE" run --dry-run --json other.ini | jq -r .job_hash)" ]
jq '.steps += [{"phase": "prepare", "step": "make-storage", "status": "running"}]' "$INPLACE_STATE_DIR/state.json" > s &&
	mv s "$INPLACE_STATE_DIR/state.json"
must_fail 2 "a state of another job (a step of prepare begun): refused" "$INPLACE" run store64.ini
check "… in one line naming the other job" [ "$("$INPLACE" run store64.ini 2>&1 | grep -c 'belongs to another job')" -eq 1 ]
jq '.phase = "preflight" | .steps |= map(select(.phase != "prepare"))' "$INPLACE_STATE_DIR/state.json" > s &&
	mv s "$INPLACE_STATE_DIR/state.json"
ok "a state of another job still in preflight: replaced" "$INPLACE" run store64.ini
check "… now this job's" [ "$("$INPLACE" status --json | jq -r .job)" = "$("$INPLACE" run --dry-run --json store64.ini | jq -r .job_hash)" ]
jq '.format = 99' "$INPLACE_STATE_DIR/state.json" > s && mv s "$INPLACE_STATE_DIR/state.json"
must_fail 2 "status: a newer state format is refused" "$INPLACE" status
must_fail 2 "run: a newer state format is refused" "$INPLACE" run other.ini
check "disk unchanged at the end" [ "$(sha256sum < disk.img)" = "$sum" ]
