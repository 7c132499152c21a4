#!/bin/bash
# t-part-caches.sh — when the room is short and the system root of the disk
# is mounted read-write here (the old OS before the pipeline reboots), the
# refusal lists the system caches that could go, with sizes; `part plan
# --clean-caches --dry-run` only counts them; `part plan --clean-caches`
# deletes exactly them (apt packages, the systemd journal's oldest archived
# files above 64 MiB, /var/tmp, core dumps) and plans again, and the room
# is there.  User files, a .deb outside the cache, the active journal and a
# symlink in the cache stay.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"

MiB=$((1024 * 1024))
if ! have_loop; then
	skip "system caches" "no loop devices"
	exit 0
fi

# a system root about 85% full, most of it caches
r=$T/root
mkdir -p "$r"/etc "$r"/var/cache/apt/archives/partial "$r"/var/log/journal/0123 "$r"/var/tmp \
	"$r"/var/lib/systemd/coredump "$r"/home/user "$r"/usr/bin
printf 'ID=debian\nVERSION_ID=12\n' > "$r/etc/os-release"
cp /usr/bin/ls /usr/bin/cp "$r/usr/bin/"
for i in 1 2 3; do head -c $((20 * MiB)) /dev/urandom > "$r/var/cache/apt/archives/pkg$i.deb"; done
head -c $((2 * MiB)) /dev/urandom > "$r/var/cache/apt/archives/partial/pkg4.deb"
head -c $((4 * MiB)) /dev/urandom > "$r/var/cache/apt/pkgcache.bin"
head -c $((10 * MiB)) /dev/urandom > "$r/var/log/journal/0123/system.journal"
head -c $((40 * MiB)) /dev/urandom > "$r/var/log/journal/0123/system@0001-0001.journal"
head -c $((40 * MiB)) /dev/urandom > "$r/var/log/journal/0123/system@0002-0002.journal"
touch -d '2 days ago' "$r/var/log/journal/0123/system@0001-0001.journal"
touch -d '1 day ago' "$r/var/log/journal/0123/system@0002-0002.journal"
head -c $((8 * MiB)) /dev/urandom > "$r/var/tmp/leftover"
head -c $((8 * MiB)) /dev/urandom > "$r/var/lib/systemd/coredump/core.prog.1000.zst"
head -c $((3 * MiB)) /dev/urandom > "$r/home/user/keep.deb"
echo "a user's notes" > "$r/home/user/notes.txt"
ln -s /home/user/keep.deb "$r/var/cache/apt/archives/link.deb"

fx_disk "$T/d.img" 400M 'label: gpt
start=1MiB, size=200MiB, type=linux
type=linux'
fx_mkfs "$T/d.img" 1 ext4 "$r" ROOT
fx_mkfs "$T/d.img" 2 ext4 "" DATA && fx_ext_fill "$T/d.img" 2 92
user_before=$(cd "$r/home" && sha256sum user/keep.deb user/notes.txt)

attach_loop "$T/d.img" || { fail "loop device" "losetup"; exit 1; }
mkdir "$T/mnt"
mount "${LOOP}p1" "$T/mnt" || { fail "mount the root"; exit 1; }
track_mount "$T/mnt"
need=32MiB

out=$("$INPLACE" part plan "$LOOP" --need "$need" 2>&1 >/dev/null); rc=$?
check "short: plan exits 2 (got $rc)" [ "$rc" = 2 ]
check "short: one line" [ "$(printf '%s\n' "$out" | wc -l)" = 1 ]
listed=yes
for w in "apt package cache" "systemd journal above 64 MiB" "/var/tmp" "core dumps" "--clean-caches"; do
	grep -qF -- "$w" <<<"$out" || listed="no '$w'"
done
check "short: the message lists the caches that could go ($listed)" [ "$listed" = yes ]

out=$("$INPLACE" part plan --json --clean-caches --dry-run "$LOOP" --need "$need" 2>/dev/null)
check "--dry-run only counts them" [ -f "$T/mnt/var/cache/apt/archives/pkg1.deb" ] 
files=$(find "$T/mnt/var" -type f | wc -l)

out=$("$INPLACE" part plan --json --clean-caches "$LOOP" --need "$need" 2>&1); rc=$?
check "--clean-caches: plans again and finds the room (exit $rc: $(tail -1 <<<"$out" | cut -c1-300))" [ "$rc" = 0 ]
check "--clean-caches: the plan shrinks the root" [ "$(jq -r '.steps[0].op, .steps[0].partition' <<<"$out" 2>/dev/null | tr '\n' ' ')" = "shrink 1 " ]
gone=yes
for f in var/cache/apt/archives/pkg1.deb var/cache/apt/archives/partial/pkg4.deb var/cache/apt/pkgcache.bin \
	var/log/journal/0123/system@0001-0001.journal var/tmp/leftover var/lib/systemd/coredump/core.prog.1000.zst; do
	[ -e "$T/mnt/$f" ] && gone="no: $f"
done
check "the caches are gone ($gone)" [ "$gone" = yes ]
kept=yes
for f in var/log/journal/0123/system.journal var/log/journal/0123/system@0002-0002.journal etc/os-release usr/bin/ls; do
	[ -e "$T/mnt/$f" ] || kept="no: $f"
done
[ -L "$T/mnt/var/cache/apt/archives/link.deb" ] || kept="no: the symlink"
check "the active journal, the newest archive and the system stay ($kept)" [ "$kept" = yes ]
check "user files are untouched" [ "$(cd "$T/mnt/home" && sha256sum user/keep.deb user/notes.txt)" = "$user_before" ]
check "the JSON counts what was deleted" [ "$(jq -r '.caches_cleaned.deleted' <<<"$out" 2>/dev/null)" = true ]
check "files before the cleaning: $files" [ "$files" -gt 6 ]
umount "$T/mnt"
read -r start _ < <(fx_part_range "$T/d.img" 1)
ok "the root's fsck is clean" e2fsck -fn "$T/d.img?offset=$start"
