#!/bin/bash
# t-image-import — third-party sources: raw filesystem images (plain, .gz,
# .xz, .zst) and directory trees become images that deploy to the same
# files; apply-files replaces a system tree from an archive, keeping
# /home, /root and /srv, and refuses archives that reach outside the root.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
export INPLACE_STATE_DIR=$T/state

fx_tree tree 3 >/dev/null 2>&1
fx_hash_tree tree > want.tree
fx_disk dst.img 100M 'label: gpt
size=64M, type=linux'

# a raw ext4 filesystem image, as a vendor would ship it
truncate -s 48M fs.raw
mke2fs -q -F -t ext4 -d tree fs.raw || { fail "fixture" "mke2fs failed"; exit 1; }
gzip -1 -k fs.raw && xz -0 -T2 -k fs.raw && zstd -q -1 -k fs.raw
for f in fs.raw fs.raw.gz fs.raw.xz fs.raw.zst; do
	ok "import $f" "$INPLACE" image import -q "$f" -o "$f.img"
	ok "deploy the import of $f" "$INPLACE" image deploy -q "$f.img" dst.img 1
	check "files of the import of $f equal the tree" cmp -s want.tree <(fx_hashes dst.img 1)
done
check "imports of every compression are the same content" \
	[ "$("$INPLACE" image info --json fs.raw.gz.img | grep content_hash)" = "$("$INPLACE" image info --json fs.raw.zst.img | grep content_hash)" ]
head -c 1000 fs.raw.xz > cut.raw.xz
must_fail 2 "import of a truncated .xz" "$INPLACE" image import -q cut.raw.xz -o cut.img
check "no partial image left behind" [ ! -e cut.img ]

# build from a directory tree
ok "build --from-dir" "$INPLACE" image build -q --from-dir tree --fs ext4 --size 40M -o built.img --name built
ok "deploy the built image with --grow" "$INPLACE" image deploy -q --grow built.img dst.img 1
check "files of the built image equal the tree" cmp -s want.tree <(fx_hashes dst.img 1)
ok "fsck clean" fx_fsck dst.img 1
mkdir -p big && head -c $((12 << 20)) /dev/urandom > big/blob
must_fail 2 "build refuses a size too small for the tree" "$INPLACE" image build -q --from-dir big --size 8M -o small.img
check "no partial image left behind" [ ! -e small.img ]
must_fail 2 "build refuses an unknown fs" "$INPLACE" image build -q --from-dir tree --fs xfs --size 40M -o x.img

# apply-files: an old system with users' files, a new OS as a tarball
mkdir -p old/etc old/usr/bin old/var/lib/stale old/home/alice old/root old/srv/www new/etc new/usr/bin new/usr/lib new/home/skel
echo "old os" > old/etc/os-release
echo "old tool" > old/usr/bin/oldtool
echo "stale" > old/var/lib/stale/file
echo "alice's thesis" > old/home/alice/thesis.txt
echo "root's notes" > old/root/notes
echo "site" > old/srv/www/index.html
echo "new os" > new/etc/os-release
cp /usr/bin/ls new/usr/bin/ls
echo "lib" > new/usr/lib/libnew.so
ln -s usr/bin new/bin
echo "would clobber" > new/home/skel/.profile
tar -C new -czf new-os.tar.gz .
keep_before=$(cd old && fx_hash_tree home; fx_hash_tree root; fx_hash_tree srv)
ok "apply-files" "$INPLACE" image apply-files new-os.tar.gz --root old
check "new files are the archive's" cmp -s new/usr/bin/ls old/usr/bin/ls
check "changed files replaced" grep -qx "new os" old/etc/os-release
check "symlinks extracted" [ "$(readlink old/bin)" = usr/bin ]
check "files the archive lacks are removed" [ ! -e old/usr/bin/oldtool ] && [ ! -e old/var/lib/stale ]
check "/home, /root and /srv untouched" [ "$keep_before" = "$(cd old && fx_hash_tree home; fx_hash_tree root; fx_hash_tree srv)" ]
check "archive entries under /home are not written" [ ! -e old/home/skel ]

mkdir -p evil victim && echo safe > victim/file
python3 -c "
import tarfile, io
t = tarfile.open('evil.tar', 'w')
i = tarfile.TarInfo('../victim/file'); d = b'owned\n'; i.size = len(d); t.addfile(i, io.BytesIO(d))
t.close()
t = tarfile.open('evil-link.tar', 'w')
i = tarfile.TarInfo('etc/link'); i.type = tarfile.SYMTYPE; i.linkname = '$T/victim'; t.addfile(i)
i = tarfile.TarInfo('etc/link/file'); d = b'owned\n'; i.size = len(d); t.addfile(i, io.BytesIO(d))
t.close()" 2>/dev/null || skip "hostile archives" "python3 tarfile unavailable"
if [ -s evil.tar ]; then
	must_fail 2 "an archive entry with .. is refused" "$INPLACE" image apply-files evil.tar --root old
	must_fail 2 "an archive writing through its own symlink is refused" "$INPLACE" image apply-files evil-link.tar --root old
	check "nothing written outside the root" grep -qx safe victim/file
fi
must_fail 2 "apply-files refuses the running root" "$INPLACE" image apply-files new-os.tar.gz --root /

# An output that is the input (issue 11 item 9): refused before anything is
# written, exit 2, the input byte for byte as it was.
for f in fs.raw fs.raw.zst; do
	sum=$(sha256sum < "$f")
	must_fail 2 "import $f -o $f is refused" "$INPLACE" image import -q "$f" -o "$f"
	check "import $f -o $f: the input is unchanged" test "$(sha256sum < "$f")" = "$sum"
done
ln -sf fs.raw.gz link.gz
sum=$(sha256sum < fs.raw.gz)
must_fail 2 "import -o a symlink to the input is refused" "$INPLACE" image import -q fs.raw.gz -o link.gz
check "import -o a symlink: the input is unchanged" test "$(sha256sum < fs.raw.gz)" = "$sum"
must_fail 2 "build -o inside the tree is refused" "$INPLACE" image build -q --from-dir tree --fs ext4 --size 40M -o tree/data/x.img
check "build -o inside the tree: the tree is unchanged" cmp -s want.tree <(fx_hash_tree tree)
must_fail 2 "build -o the tree itself is refused" "$INPLACE" image build -q --from-dir tree --fs ext4 --size 40M -o tree
