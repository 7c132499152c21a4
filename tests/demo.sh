#!/bin/bash
# make demo — the whole pipeline from one job file, on a generated demo
# disk: an "old OS" whose system partition fills the disk, three users with
# data; a signed image of a new OS that has a user of its own at bob's UID.
#   inplace run JOB      the old OS: checks (image, signature, room), the plan
#   inplace resume       the staging boot: make room (shrink the system
#                        partition, create the store), save the users and the
#                        machine identity, write the new OS
#   inplace resume       the new OS's first boot: restore the users (bob is
#                        remapped), give the space back
# [boot] method = none: each `resume` stands in for one reboot.  Everything
# is the real `inplace` binary on a real disk image; loop devices and mounts
# are released on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${INPLACE:=$here/../build/inplace}"
. "$here/fixtures/lib.sh"

D=$(mktemp -d "${TMPDIR:-/tmp}/inplace-demo.XXXXXX")
loops=() mounts=()
cleanup() {
	local i
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do mountpoint -q "${mounts[i]}" && umount "${mounts[i]}"; done
	for ((i = ${#loops[@]} - 1; i >= 0; i--)); do losetup -d "${loops[i]}" 2>/dev/null || true; done
	rm -rf "$D"
}
trap cleanup EXIT
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ inplace %s\n' "$*"; "$INPLACE" "$@"; }
mnt() { mkdir -p "$2"; mount ${3:+-o "$3"} "$1" "$2"; mounts+=("$2"); }
umnt() { umount "$1"; }
partloop() { # VAR IMG N: VAR= a loop device over partition N only (as a kernel would see it)
	local s z
	read -r s z < <(fx_part_range "$2" "$3")
	printf -v "$1" '%s' "$(losetup -f --show -o "$s" --sizelimit "$z" "$2")"
	loops+=("${!1}")
}

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it uses loop devices and mounts)" >&2; exit 2; }

step "Building the demo: an old OS with users alice, bob, carol on a 1 GiB disk"
bash "$here/fixtures/profile-root.sh" "$D/old" "$D/new" small >/dev/null
DISK=$D/disk.img
fx_disk "$DISK" 1G "label: gpt
name=system, type=L"
fx_mkfs "$DISK" 1 ext4 "$D/old" system
run part show "$DISK"

bash "$here/fixtures/profile-root.sh" snap "$D/old" home > "$D/before.snap"

step "The job: one INI file says what to do (see \"Job file\" in the README)"
minisign -G -W -f -p "$D/k.pub" -s "$D/k.key" >/dev/null 2>&1
run image build --from-dir "$D/new" --fs ext4 --size 128MiB -s "$D/k.key" -o "$D/newos.img"
cat > "$D/job.ini" <<EOF
[job]
image = $D/newos.img
key = $D/k.pub              ; the image must carry a good minisign signature
disk = $DISK
system_partition = 1
store_size = 256MiB

[profile]
users = all                 ; every account with a home and UID >= 1000

[boot]
method = none               ; stop where a reboot comes: 'inplace resume' plays each boot

[notify]
countdown = 10s             ; logged-in users are told; at a terminal you may postpone
EOF
sed 's/^/  /' "$D/job.ini"
export INPLACE_STATE_DIR=$D/state INPLACE_RUN_DIR=$D/run

step "1. The old system: inplace run checks everything, read-only, and plans"
run run "$D/job.ini"

step "2. First reboot, into the staging environment: make room, save the users, write the new OS"
run resume --disk "$DISK"
run part show "$DISK"
run status --disk "$DISK"

step "3. First boot of the new OS: restore the users, give the space back"
run resume --disk "$DISK"
run part show "$DISK"

step "Checking the result"
partloop newp "$DISK" 1
mnt "$newp" "$D/mnt/new" ro
bash "$here/fixtures/profile-root.sh" snap "$D/mnt/new" home > "$D/after.snap"
echo "accounts in the new OS (name:uid:gid:home); bob's old UID belongs to dave there:"
grep -E '^(alice|bob|carol|dave):' "$D/mnt/new/etc/passwd" | cut -d: -f1,3,4,6 | sed 's/^/  /'
echo "hostname: $(cat "$D/mnt/new/etc/hostname") (the old system's), machine-id $(cat "$D/mnt/new/etc/machine-id")"
users='^(alice|bob|carol)/'
if diff <(grep -E "$users" "$D/before.snap" | grep -v '/\.cache/') \
	<(grep -E "$users" "$D/after.snap") >/dev/null; then
	echo "every file of alice, bob and carol: content, mode, owner by name, xattrs and ACLs equal"
else
	echo "demo: the restored homes differ from the saved ones:" >&2
	diff <(grep -E "$users" "$D/before.snap" | grep -v '/\.cache/') <(grep -E "$users" "$D/after.snap") | head -20 >&2
	exit 1
fi
umnt "$D/mnt/new"
fx_fsck "$DISK" 1 && echo "e2fsck: the system partition is clean"
echo "the story, from status.log:"
jq -r '"  \(.time) \(.phase)\(if .step then "/" + .step else "" end) \(.level): \(.message)"' "$D/state/status.log"
printf '\n\033[1mdemo: done\033[0m\n'
