#!/bin/bash
# t-bundle — `inplace bundle -o DIR`: a directory that runs inplace and its
# tools on any x86_64 Linux.  Every library each program needs resolves
# inside the bundle; it runs from another directory, through a symlink and
# from a read-only mount, and copies itself from there; an existing
# directory that is not a bundle is refused, an old bundle replaced, and a
# kill -9 during a write leaves the old bundle or the new one whole.  In a
# chroot of a Debian 12 minbase tree stripped of its C library and loader
# (so nothing of the tree can run, no shell either), the bundle saves and
# restores a real profile (every file equal by hash) and shrinks an ext4
# partition with its own e2fsck and resize2fs.  In the pipeline, prepare
# leaves a bundle in the store, and that copy plays the new OS's first boot.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
FX=$TESTS_DIR/fixtures/profile-root.sh
. "$TESTS_DIR/fixtures/debian.sh"
B=$T/b

ok "bundle written" "$INPLACE" bundle -q -o "$B" || exit 1
check "its manifest is there" test -s "$B/BUNDLE"
check "one launcher under every name (hardlinks)" \
	test "$(stat -c %i "$B/inplace")" = "$(stat -c %i "$B/bin/e2fsck")" -a "$(stat -c %h "$B/inplace")" -ge 8
# the bundled loader's own view: every library found, all of them inside
listing=$(for p in "$B"/libexec/*; do "$B/lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$B/lib" --list "$p"; done)
check "every library of every program resolves inside the bundle" \
	sh -c '! printf "%s\n" "$1" | grep -v "linux-vdso" | grep "=>" | grep -v "=> $2/lib/"' _ "$listing" "$B"
check "no library is missing" sh -c '! printf "%s\n" "$1" | grep -q "not found"' _ "$listing"
check "the tools: e2fsck resize2fs e2undo mke2fs ntfsresize ntfsfix mkntfs kexec" \
	sh -c 'for t in e2fsck resize2fs e2undo mke2fs ntfsresize ntfsfix mkntfs kexec; do [ -x "$1/libexec/$t" ] && [ -x "$1/bin/$t" ] || exit 1; done' _ "$B"

ok "--version from another directory" sh -c 'cd / && "$1/inplace" --version | grep -q "^inplace "' _ "$B"
ok "--version by a relative path" sh -c 'cd "$1" && ./b/inplace --version | grep -q "^inplace "' _ "$T"
mkdir -p "$T/sbin" && ln -s "$B/inplace" "$T/sbin/inplace"
ok "--version through a symlink" sh -c 'cd / && "$1/sbin/inplace" --version | grep -q "^inplace "' _ "$T"
ok "a bundled tool runs" sh -c '"$1/bin/e2fsck" -V 2>&1 | grep -q "^e2fsck "' _ "$B"

mkdir -p "$T/ro"
if mount --bind "$B" "$T/ro" && track_mount "$T/ro" && mount -o remount,bind,ro "$T/ro"; then
	ok "--version from a read-only mount" sh -c 'cd / && "$1/inplace" --version | grep -q "^inplace "' _ "$T/ro"
	out=$(cd / && "$T/ro/inplace" bundle -o "$T/b2" --json)
	check "a bundle on read-only media copies itself" test "$(jq -r .copied <<<"$out")" = true
	check "the copy holds the same programs and libraries" \
		sh -c 'diff -r "$1/lib" "$2/lib" && diff -r "$1/libexec" "$2/libexec"' _ "$B" "$T/b2"
else
	skip "read-only mount" "bind mount not possible here"
fi

# a bundle that is a whole root (an initramfs): nothing else there
R=$T/asroot
cp -a "$B" "$R" && mkdir -p "$R/proc" && mount -t proc proc "$R/proc" && track_mount "$R/proc"
ok "a bundle as the root: inplace runs" chroot "$R" /inplace --version
ok "a bundle as the root: a tool runs" chroot "$R" /bin/e2fsck -V
out=$(chroot "$R" /inplace bundle -o /copy --json)
check "a bundle as the root knows itself and copies itself" test "$(jq -r .copied <<<"$out")" = true -a -s "$R/copy/BUNDLE"
umount "$R/proc"; rm -rf "$R"

mkdir -p "$T/mine" && echo precious > "$T/mine/keep"
must_fail 2 "a directory that is not a bundle is refused" "$INPLACE" bundle -o "$T/mine"
check "and left as it was" test "$(cat "$T/mine/keep")" = precious -a ! -e "$T/mine.tmp"
must_fail 2 "a file in the way is refused" "$INPLACE" bundle -o "$T/mine/keep"
touch "$B/lib/stale.so"
ok "an old bundle is replaced" "$INPLACE" bundle -q -o "$B/"
check "by a whole new one, nothing left beside" test ! -e "$B/lib/stale.so" -a ! -e "$B.tmp" -a -s "$B/BUNDLE"
mkdir -p "$T/c.tmp/lib" && touch "$T/c.tmp/lib/half"
ok "a bundle cut short is redone" "$INPLACE" bundle -q -o "$T/c"
check "its leftovers gone" test ! -e "$T/c.tmp" -a ! -e "$T/c/lib/half" -a -s "$T/c/BUNDLE"
# kill -9 at instants spread over a write (over an old bundle): DIR is
# always the old bundle or the new one, whole, and the next write completes
"$INPLACE" bundle -q -o "$T/k" >/dev/null
whole=0 mid=0
for d in 0.2 0.35 0.5 0.65 0.8 1.0; do
	"$INPLACE" bundle -q -o "$T/k" >/dev/null 2>&1 & pid=$!
	sleep "$d"; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
	[ -e "$T/k.tmp" ] && mid=$((mid + 1))
	[ -s "$T/k/BUNDLE" ] && [ -x "$T/k/libexec/inplace" ] && "$T/k/inplace" --version >/dev/null && whole=$((whole + 1))
done
echo "   kills: 6, of which $mid landed while DIR.tmp was being written or removed"
check "after each kill the bundle in place is whole and runs" test "$whole" = 6
ok "the next write completes" "$INPLACE" bundle -q -o "$T/k"
check "and leaves nothing beside" test ! -e "$T/k.tmp"
check "the resumed writes hold the same programs and libraries, no more" \
	sh -c 'diff -r "$1/lib" "$2/lib" && diff -r "$1/libexec" "$2/libexec" && diff -r "$1/bin" "$2/bin"' _ "$B" "$T/k"
rm -rf "$T/c" "$T/b2" "$T/k"

# ---- in a chroot with none of our libraries, no libc, no loader, no shell --
tree=$(debian_tree "") || { fail "fixture" "debian_tree (debootstrap)"; exit 1; }
C=$T/root
mkdir -p "$C"
mount -t tmpfs -o size=1G,mode=0755 inplace-test "$C" && track_mount "$C" || { fail "fixture" "tmpfs"; exit 1; }
cp -a "$tree/." "$C/"
L=$C/usr/lib/x86_64-linux-gnu
check "the tree has no libarchive, json-c, libfdisk, libntfs-3g" \
	sh -c '! ls "$1"/libarchive.so* "$1"/libjson-c.so* "$1"/libfdisk.so* "$1"/libntfs-3g.so* 2>/dev/null | grep -q .' _ "$L"
# what it has of ours (e2fsprogs' libext2fs), its C library and its loader go
rm -f "$L"/libext2fs.so* "$L"/libc.so.6 "$L"/libc.so "$C"/usr/lib64/ld-linux-x86-64.so.2 "$L"/ld-linux-x86-64.so.2
must_fail 127 "nothing of the tree runs any more (no loader, no libc)" chroot "$C" /bin/sh -c true
cp -a "$B" "$C/bundle"
ok "chroot: runs before /proc is mounted (as an init would)" chroot "$C" /bundle/inplace --version
ln "$C/bundle/inplace" "$C/bundle/init"
check "chroot: under another name (an initramfs's /init) it is inplace told that argv[0]" \
	test "$(chroot "$C" /bundle/init --version)" = "$("$B/inplace" --version)"
rm "$C/bundle/init"
mkdir -p "$C/work" "$C/proc" "$C/dev"
# what the staging env's init mounts too (migrate opens through /proc/self/fd)
mount -t proc proc "$C/proc" && track_mount "$C/proc"
mount --bind /dev "$C/dev" && track_mount "$C/dev"
bash "$FX" "$C/work/old" "$C/work/new" small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
ok "chroot: profile save" chroot "$C" /bundle/inplace profile save --root /work/old --store /work/store
ok "chroot: profile verify" chroot "$C" /bundle/inplace profile verify --store /work/store
ok "chroot: profile restore" chroot "$C" /bundle/inplace profile restore --store /work/store --root /work/new --trusted-store
for u in alice bob carol; do
	bash "$FX" snap "$C/work/old" "home/$u" | grep -v '^\.cache/' > "$T/a.$u"
	bash "$FX" snap "$C/work/new" "home/$u" > "$T/b.$u"
	check "chroot: home of $u equal (hash, mode, owner, xattrs, ACLs)" sh -c '[ -s "$1" ] && cmp -s "$1" "$2"' _ "$T/a.$u" "$T/b.$u"
	check "chroot: password hash of $u kept" \
		test "$(grep "^$u:" "$C/work/old/etc/shadow" | cut -d: -f2)" = "$(grep "^$u:" "$C/work/new/etc/shadow" | cut -d: -f2)"
done
check "chroot: machine-id kept" cmp -s "$C/work/old/etc/machine-id" "$C/work/new/etc/machine-id"

# inplace runs the bundled tools: the tree's own e2fsck and resize2fs
# cannot run (no loader), so a shrink that works used the bundle's
fx_disk "$C/work/disk.img" 96M $'label: gpt\nname=data, type=L' && fx_mkfs "$C/work/disk.img" 1 ext4 "$C/work/old" data
ok "chroot: a bundled tool runs (e2fsck)" chroot "$C" /bundle/bin/e2fsck -V
ok "chroot: part shrink through the bundled e2fsck and resize2fs" \
	chroot "$C" /bundle/inplace part shrink /work/disk.img 1 --to 64MiB
check "chroot: the partition is 64 MiB" test "$(partx -g -n 1 -o SECTORS "$C/work/disk.img" | tr -d ' ')" = $((64 * 2048))
ok "chroot: the shrunk filesystem is clean" fx_fsck "$C/work/disk.img" 1
umount "$C/dev" "$C/proc" 2>/dev/null

# ---- the pipeline: prepare leaves the bundle in the store ----------------
have_loop || { skip "pipeline bundle" "no loop devices (the steps mount partitions)"; exit 0; }
export INPLACE_RUN_DIR=$T/run INPLACE_STATE_DIR=$T/state
"$INPLACE" image build -q --from-dir "$C/work/new" --fs ext4 --size 160MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
D=$T/disk.img
fx_disk "$D" 1G $'label: gpt\nname=system, type=L' && fx_mkfs "$D" 1 ext4 "$C/work/old" system
umount "$C"
fx_job job.ini "$T/newos.img" "$D" "store_size = 256MiB"
ok "pipeline: run" "$INPLACE" run job.ini
ok "pipeline: resume plays the staging boot (prepare, deploy)" "$INPLACE" resume --disk "$D"
read -r s z < <(fx_part_range "$D" 2)
mkdir -p "$T/store"
LOOPDEV=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$D") && track_loop "$LOOPDEV" &&
	mount -o ro "$LOOPDEV" "$T/store" && track_mount "$T/store" || { fail "pipeline: mount the store"; exit 1; }
ok "pipeline: STORE/inplace/bundle/inplace --version (read-only store)" \
	sh -c 'cd / && "$1/inplace/bundle/inplace" --version | grep -q "^inplace "' _ "$T/store"
cp -a "$T/store/inplace/bundle" "$T/fromstore"
umount "$T/store" && losetup -d "$LOOPDEV"
# the first boot as the unit plays it: the store's bundle, not $INPLACE
ok "pipeline: the store's bundle plays the first boot (restore, reclaim)" "$T/fromstore/inplace" resume --disk "$D"
check "pipeline: done" test "$("$INPLACE" status --json | jq -r .phase)" = done
check "pipeline: one partition left" test "$(partx -g -o NR "$D" | wc -l)" = 1
ok "pipeline: fsck clean" fx_fsck "$D" 1
