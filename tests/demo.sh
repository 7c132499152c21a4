#!/bin/bash
# make demo — the whole pipeline, step by step, on a generated demo disk:
# an "old OS" whose system partition fills the disk, three users with data.
#   1. make room: plan and make-storage (shrink the system partition, create
#      and format the storage partition)
#   2. save the users and the machine identity into the store
#   3. write a new OS image over the system partition (grown to fit)
#   4. restore the users into the new OS, remapping a taken UID
#   5. reclaim: delete the storage partition, grow the system partition back
# Every step is the real `inplace` binary on a real disk image; loop devices
# and mounts only where a kernel mount is the point (reading the old root,
# writing the new one).  Everything is released on exit.
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

step "1. Making room for a 256 MiB storage partition"
run profile estimate --root "$D/old"
run part plan "$DISK" --need 256MiB
run part make-storage "$DISK" --need 256MiB
run part show "$DISK"

step "2. Saving the users and the machine identity into the store"
partloop oldp "$DISK" 1
mnt "$oldp" "$D/mnt/old" ro
partloop storep "$DISK" 2
mnt "$storep" "$D/mnt/store"
run profile save --root "$D/mnt/old" --store "$D/mnt/store/profile"
run profile verify --store "$D/mnt/store/profile"
run profile list --store "$D/mnt/store/profile"
bash "$here/fixtures/profile-root.sh" snap "$D/mnt/old" home > "$D/before.snap"
umnt "$D/mnt/old"

step "3. Writing the new OS image over the system partition"
run image build --from-dir "$D/new" --fs ext4 --size 128MiB -o "$D/newos.img"
run image info "$D/newos.img"
# The store stays mounted: only the target partition has to be free.
run image deploy "$D/newos.img" "$DISK" 1 --grow

step "4. First boot of the new OS: restoring the users"
partloop newp "$DISK" 1  # a fresh loop device: no cached blocks of the old fs
mnt "$newp" "$D/mnt/new"
# The store is the one we just made, so setuid bits and file capabilities
# may come back (--trusted-store); the default profile spec leaves caches out.
run profile restore --store "$D/mnt/store/profile" --root "$D/mnt/new" --trusted-store
bash "$here/fixtures/profile-root.sh" snap "$D/mnt/new" home > "$D/after.snap"
echo "accounts in the new OS (name:uid:gid:home); bob's old UID belongs to dave there:"
grep -E '^(alice|bob|carol|dave):' "$D/mnt/new/etc/passwd" | cut -d: -f1,3,4,6 | sed 's/^/  /'
users='^(alice|bob|carol)/'
if diff <(grep -E "$users" "$D/before.snap" | grep -v '/\.cache/') \
	<(grep -E "$users" "$D/after.snap") >/dev/null; then
	echo "every restored file of alice, bob and carol: content, mode, owner by name, xattrs and ACLs equal"
else
	echo "demo: the restored homes differ from the saved ones:" >&2
	diff <(grep -E "$users" "$D/before.snap" | grep -v '/\.cache/') <(grep -E "$users" "$D/after.snap") | head -20 >&2
	exit 1
fi
umnt "$D/mnt/new"
umnt "$D/mnt/store"

step "5. Reclaiming the storage space"
run part delete "$DISK" 2
run part grow "$DISK" 1 --max
run part show "$DISK"
fx_fsck "$DISK" 1 && echo "e2fsck: the system partition is clean"
printf '\n\033[1mdemo: done\033[0m\n'
