#!/bin/bash
# t-image-bad — bad images and bad targets: one line, exit 2 (or 1), and the
# target partition's sha256 unchanged.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
export INPLACE_STATE_DIR=$T/state

fx_tree tree 4 >/dev/null 2>&1
fx_disk src.img 120M 'label: gpt
size=48M, type=linux
size=32M, type=linux'
fx_mkfs src.img 1 ext4 tree || { fail "fixture" "mke2fs failed"; exit 1; }
fx_disk dst.img 120M 'label: gpt
size=48M, type=linux
size=32M, type=linux'
fx_mkfs dst.img 1 ext4 || { fail "fixture" "mke2fs failed"; exit 1; }
fx_mkfs dst.img 2 ext4 || { fail "fixture" "mke2fs failed"; exit 1; }
minisign -G -W -f -p k.pub -s k.key >/dev/null 2>&1 && minisign -G -W -f -p other.pub -s other.key >/dev/null 2>&1 ||
	{ skip "all" "minisign -G failed"; exit 0; }
"$INPLACE" image capture -q src.img 1 -o good.img --sign k.key >/dev/null || { fail "capture" "capture failed"; exit 1; }

part_sum() {
	local start size
	read -r start size < <(fx_part_range "$1" "$2")
	dd if="$1" bs=1M skip="$start" count="$size" iflag=skip_bytes,count_bytes status=none | sha256sum
}
before=$(part_sum dst.img 1)

# deploy must fail with status $1 in one line and leave partition 1 as it was
refused() {
	local want=$1 name=$2 out rc; shift 2
	out=$("$INPLACE" image deploy -q "$@" 2>&1); rc=$?
	if [ "$rc" -ne "$want" ]; then fail "$name" "wanted exit $want, got $rc: $out"; return; fi
	if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then fail "$name" "not one line: $out"; return; fi
	if [ "$(part_sum dst.img 1)" != "$before" ]; then fail "$name" "the target changed"; return; fi
	pass "$name"
}

frame_off() { # byte offset of the middle of frame $2 of image $1, from the seek table
	perl -e 'open F, "<", $ARGV[0] or die; binmode F; my $sz = -s F;
		seek F, $sz - 9, 0; read F, my $ft, 9; my $n = unpack("V", $ft);
		seek F, $sz - 9 - $n * 8, 0; my $off = 0;
		for my $i (0 .. $n - 1) { read F, my $e, 8; my ($c) = unpack("V", $e);
			if ($i == $ARGV[1]) { print $off + int($c / 2), "\n"; exit 0 } $off += $c }
		exit 1' "$1" "$2"
}

flip() { # flip one byte of file $1 at offset $2
	local b
	b=$(dd if="$1" bs=1 skip="$2" count=1 status=none | od -An -tu1 | tr -d ' ')
	printf "$(printf '\\%03o' $(( (b ^ 0x55) & 255 )))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

cp good.img trunc.img; truncate -s -1000 trunc.img
refused 2 "truncated image" trunc.img dst.img 1
cp good.img short.img; truncate -s $(( $(stat -c %s good.img) / 2 )) short.img
refused 2 "image cut in half" short.img dst.img 1

cp good.img flip.img
off=$(frame_off flip.img 3)
flip flip.img "$off"
refused 2 "one flipped byte in frame 3" flip.img dst.img 1
check "verify names the damaged frame and its offset" bash -c "'$INPLACE' image verify -q flip.img 2>&1 | grep -q 'frame 3 at byte offset'"
cp good.img flip0.img; flip flip0.img "$(frame_off flip0.img 0)"
must_fail 2 "verify refuses a flipped byte in frame 0" "$INPLACE" image verify -q flip0.img
refused 2 "one flipped byte in frame 0" flip0.img dst.img 1

cp good.img magic.img; flip magic.img $(( $(stat -c %s magic.img) - 1 ))
refused 2 "wrong footer magic" magic.img dst.img 1
cp good.img notzstd.img; printf 'XXXX' | dd of=notzstd.img bs=1 seek=$(( $(stat -c %s good.img) - 17 )) conv=notrunc status=none
refused 2 "damaged seek table" notzstd.img dst.img 1
printf 'not an image at all, just text\n' > text.img
refused 2 "not an image" text.img dst.img 1

cp good.img version.img
perl -0777 -pi -e 's/"format_version":1,/"format_version":7,/ or die' version.img 2>/dev/null ||
	perl -0777 -pi -e 's/"format_version": 1,/"format_version": 7,/ or die' version.img
refused 2 "unknown format version" version.img dst.img 1

cp good.img unsigned.img
refused 2 "unsigned image when a key is given" unsigned.img dst.img 1 --key k.pub
cp good.img wrongkey.img; minisign -S -s other.key -m wrongkey.img >/dev/null 2>&1
refused 2 "image signed by another key" wrongkey.img dst.img 1 --key k.pub
cp good.img tampered.img; cp good.img.minisig tampered.img.minisig; flip tampered.img "$(frame_off tampered.img 1)"
refused 2 "signed image changed after signing" tampered.img dst.img 1 --key k.pub
refused 2 "image larger than the target partition" good.img dst.img 2 --key k.pub
refused 2 "no such partition" good.img dst.img 7

if have_loop; then
	attach_loop dst.img
	mkdir -p mnt
	if [ -e "${LOOP}p1" ] && mount "${LOOP}p1" mnt; then
		track_mount "$T/mnt"
		before=$(part_sum dst.img 1)
		refused 2 "target mounted (image file)" good.img dst.img 1
		refused 2 "target mounted (loop device)" good.img "$LOOP" 1
		must_fail 2 "capture refuses a read-write mount" "$INPLACE" image capture -q "$LOOP" 1 -o mounted.img
		check "no partial image left behind" [ ! -e mounted.img ]
		umount mnt
		mount -o ro "${LOOP}p1" mnt
		ok "capture accepts a read-only mount" "$INPLACE" image capture -q "$LOOP" 1 -o ro.img
		umount mnt
	else
		skip "target mounted" "cannot mount ${LOOP}p1"
	fi
else
	skip "target mounted" "no loop device"
fi

ok "the good image still deploys" "$INPLACE" image deploy -q --key k.pub good.img dst.img 1
check "capture to an unwritable place leaves nothing" bash -c "! '$INPLACE' image capture -q src.img 1 -o /nonexistent/dir/x.img 2>/dev/null"
must_fail 2 "capture of a missing partition" "$INPLACE" image capture -q src.img 9 -o x.img
must_fail 2 "bad usage" "$INPLACE" image deploy good.img

# Ctrl-C during a capture removes the partial image (level 19: slow enough)
"$INPLACE" image capture -q -t 1 -l 19 src.img 1 -o int.img >/dev/null 2>&1 &
cap=$!
track_pid "$cap"
sleep 0.5
kill -INT "$cap"
wait "$cap"; rc=$?
if [ "$rc" -eq 0 ]; then
	skip "SIGINT during capture" "the capture finished before the signal"
else
	int_clean() { [ "$rc" -eq 1 ] && [ ! -e int.img ] && [ -z "$(ls int.img.tmp-* 2>/dev/null)" ]; }
	check "SIGINT during capture: exit 1, no image, no temporary file" int_clean
fi

# A FIFO or a device node in place of an image or a key: refused at once
# (open with O_NONBLOCK, then fstat), never a hang in open().  timeout 10
# turns a hang into exit 124.
mkfifo fifo.img fifo.pub
before=$(part_sum dst.img 1)
quick() { # NAME CMD...: exit 2 in one line, within the timeout
	local name=$1 out rc; shift
	out=$(timeout 10 "$@" 2>&1 >/dev/null); rc=$?
	if [ "$rc" -ne 2 ]; then fail "$name" "exit $rc, wanted 2 (124: it hung): $out"; return; fi
	if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then fail "$name" "not one line: $out"; return; fi
	pass "$name"
}
quick "image info of a FIFO" "$INPLACE" image info fifo.img
quick "image verify of a FIFO" "$INPLACE" image verify fifo.img
quick "image deploy of a FIFO" "$INPLACE" image deploy -q fifo.img dst.img 1
quick "image verify with a FIFO as the key" "$INPLACE" image verify --key fifo.pub good.img
quick "image info of a character device" "$INPLACE" image info /dev/zero
quick "image info of a directory" "$INPLACE" image info .
check "a FIFO in place of an image: target unchanged" test "$(part_sum dst.img 1)" = "$before"

# An output that is the input (issue 11 item 9): the same name, a hardlink,
# a symlink, a loop device of it.  Refused before anything is written:
# exit 2, one line, the disk byte for byte as it was.
src_sum=$(sha256sum < src.img)
ln src.img hard.img
ln -s src.img soft.img
clobber() { # NAME OUT [DISK]: capture DISK 1 -o OUT refused, src.img unchanged
	local name=$1 out rc; shift
	out=$(timeout 60 "$INPLACE" image capture -q "${2:-src.img}" 1 -o "$1" 2>&1 >/dev/null); rc=$?
	if [ "$rc" -ne 2 ]; then fail "$name" "exit $rc, wanted 2: $out"; return; fi
	if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then fail "$name" "not one line: $out"; return; fi
	if [ "$(sha256sum < src.img)" != "$src_sum" ]; then fail "$name" "the disk changed"; return; fi
	pass "$name"
}
clobber "capture -o the disk itself" src.img
clobber "capture -o a hardlink of the disk" hard.img
clobber "capture -o a symlink to the disk" soft.img
clobber "capture -o ./the disk" ./src.img
if have_loop && attach_loop src.img; then
	clobber "capture -o a loop device of the disk" "$LOOP"
	clobber "capture of a loop device -o itself" "$LOOP" "$LOOP"
	clobber "capture of a loop device -o its partition" "${LOOP}p1" "$LOOP"
	clobber "capture of a loop device -o its backing file" src.img "$LOOP"
	losetup -d "$LOOP"
else
	skip "capture -o a loop device of the disk" "no loop device"
fi
check "no temporary file left next to the disk" test -z "$(ls src.img.tmp-* hard.img.tmp-* 2>/dev/null)"
