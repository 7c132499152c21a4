#!/bin/bash
# t-deb.sh — `make deb`: dpkg-buildpackage makes inplace and libinplace-dev
# with Depends from dpkg-shlibdeps and no lintian error; in a fresh Debian
# 12 chroot (a copy of the cached debootstrap tree) `apt install
# ./inplace_*.deb` pulls its dependencies from the mirror, and there
# `inplace --version` runs and `inplace part show` reads a fixture disk as
# the tree's own binary does.  The packages are cached by the hash of the
# tree they were built from (the build takes minutes).
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
require_tool dpkg-buildpackage dh lintian debootstrap chroot jq sfdisk mkfs.ext4 || exit 1

SRC=$(cd "$TESTS_DIR/.." && pwd)

# ---- the package, built once per tree --------------------------------------
# (the tests, benchmarks and documents do not go into the package)
key=$(cd "$SRC" && tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
	--exclude='./build*' --exclude=./.git --exclude=./tests --exclude=./bench --exclude='*.md' . |
	sha256sum | cut -c1-16)
C=$INPLACE_TEST_CACHE/deb-$key
if [ ! -e "$C/.done" ]; then
	mkdir -p "$INPLACE_TEST_CACHE"
	rm -rf "$C.tmp"
	ok "make deb" make -s -C "$SRC" BUILD="$T/b" deb || { tail -30 "$T/b/deb/build.log"; exit 1; }
	mkdir -p "$C.tmp"
	cp "$T"/b/deb/*.deb "$T/b/deb/lintian.log" "$C.tmp/"
	touch "$C.tmp/.done"
	rm -rf "$C"; mv "$C.tmp" "$C"
else
	echo "  (packages of this tree cached in $C)"
fi
deb=$(ls "$C"/inplace_*.deb 2>/dev/null | head -n1)
check "two packages: inplace and libinplace-dev" test -n "$deb" -a -n "$(ls "$C"/libinplace-dev_*.deb 2>/dev/null)"
check "lintian: no error" sh -c "! grep '^E:' '$C/lintian.log'"
dep=$(dpkg-deb -f "$deb" Depends)
check "Depends computed by dpkg-shlibdeps (libfdisk1, libext2fs2, libjson-c5, libsodium23)" sh -c \
	"for l in libfdisk1 libext2fs2 libjson-c5 libsodium23 libc6; do echo '$dep' | grep -q \"\$l \" || exit 1; done"
dpkg-deb -c "$deb" | awk '{print $6}' > "$T/files"
check "inplace holds the binary and the units" sh -c "grep -qx './usr/sbin/inplace' '$T/files' &&
	grep -qx './lib/systemd/system/inplace-firstboot.service' '$T/files' &&
	grep -qx './lib/systemd/system/inplace-postpone.timer' '$T/files'"
dpkg-deb -c "$C"/libinplace-dev_*.deb | awk '{print $6}' > "$T/devfiles"
check "libinplace-dev holds headers, archives and .pc files" sh -c "
	grep -qx './usr/include/inplace/partctl/partctl.h' '$T/devfiles' &&
	grep -q '^./usr/lib/[^/]*/libinplace-partctl.a$' '$T/devfiles' &&
	grep -q '^./usr/lib/[^/]*/pkgconfig/inplace-partctl.pc$' '$T/devfiles'"

# ---- apt install in a fresh chroot -----------------------------------------
tree=$(debian_tree "") || { fail "fixture" "debian_tree (see its log in $INPLACE_TEST_CACHE)"; exit 1; }
R=$T/root
ok "a copy of the cached minbase tree" cp -a "$tree" "$R" || exit 1
mirror=$(debian_mirror) || { fail "apt source" "no bookworm mirror in apt's configuration"; exit 1; }
echo "deb $mirror bookworm main" > "$R/etc/apt/sources.list"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
for d in proc dev; do
	mount --bind "/$d" "$R/$d" && track_mount "$R/$d" || { fail "bind /$d" "mount failed"; exit 1; }
done
cp "$deb" "$R/root/"
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	DEBIAN_FRONTEND=noninteractive "$@"; }
ok "apt-get update in the chroot" in_root apt-get -q update || exit 1
check "the chroot lacks libntfs-3g89 before" sh -c "! chroot '$R' dpkg -s libntfs-3g89 >/dev/null 2>&1"
# without Recommends: Depends alone must make part show work (and the
# install stays short: ca-certificates' and ntfs-3g's setup are slow)
ok "apt install ./inplace_*.deb" in_root sh -c 'cd /root && apt install -y -q --no-install-recommends ./inplace_*.deb' || exit 1
check "installed: inplace, and libntfs-3g89 pulled from the mirror" in_root sh -c \
	'dpkg -s inplace >/dev/null && dpkg -s libntfs-3g89 >/dev/null'
check "inplace --version" sh -c "chroot '$R' inplace --version | grep -qx 'inplace [0-9][0-9.]*'"
check "no unit enabled by the install" sh -c "! ls '$R'/etc/systemd/system/*.wants/inplace-* 2>/dev/null | grep -q ."

IMG=$R/root/disk.img
fx_disk "$IMG" 64M 'label: gpt
start=1MiB, size=24MiB, type=linux
size=24MiB, type=linux' && mkfs.ext4 -q -L ROOT -E offset=1048576 "$IMG" 24M ||
	{ fail "fixture" "disk image"; exit 1; }
ok "inplace part show in the chroot" sh -c "chroot '$R' inplace part show /root/disk.img > '$T/show.txt'"
in_root inplace part show --json /root/disk.img | jq 'del(.disk)' > "$T/chroot.json"
"$INPLACE" part show --json "$IMG" | jq 'del(.disk)' > "$T/host.json"
check "part show --json in the chroot: the tree's own result (2 partitions, ext4 ROOT)" sh -c \
	"diff '$T/host.json' '$T/chroot.json' && jq -e '(.partitions | length) == 2 and .partitions[0].fs == \"ext4\" and .partitions[0].label == \"ROOT\"' '$T/chroot.json' >/dev/null"
