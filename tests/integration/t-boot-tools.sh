#!/bin/bash
# t-boot-tools — issue 12 §5: a [boot] method whose tool this machine lacks
# is refused by `inplace run` before anything is written, in one line that
# names the tool and the Debian package that provides it: kexec
# (kexec-tools) for method kexec, grub-editenv (grub-common) for method
# grub.  PATH is every tool of this machine but that one.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
require_tool kexec grub-editenv || exit 1
export INPLACE_RUN_DIR=$T/run
bash "$TESTS_DIR/fixtures/profile-root.sh" old unused small >/dev/null || { fail "fixture" "profile-root.sh"; exit 1; }
# an image that passes preflight's boot check (a kernel and GRUB for BIOS
# by name): the refusal must come from the missing tool, not the image
mkdir -p new/boot new/usr/sbin new/usr/lib/grub/i386-pc new/etc && echo newhost > new/etc/hostname
touch new/boot/vmlinuz-6.1.0-1-amd64 && install -m 755 /dev/null new/usr/sbin/grub-install &&
	install -m 755 /dev/null new/usr/sbin/grub-mkconfig
"$INPLACE" image build -q --from-dir new --fs ext4 --size 64MiB -o new.img >/dev/null || { fail "fixture" "image build"; exit 1; }
fx_disk disk.img 512M $'label: dos\ntype=83' && fx_mkfs disk.img 1 ext4 old system || { fail "fixture" "disk"; exit 1; }
sum=$(sha256sum < disk.img)

# without TOOL METHOD: `run` with PATH lacking TOOL refused, exit 2, the
# package named, no state, the disk unchanged
without() {
	local tool=$1 method=$2 pkg=$3 d
	mkdir -p "bin-$method"
	for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
		# the first of PATH wins; one ln per directory (ln skips a name taken)
		[ -d "$d" ] && [ ! -L "$d" ] && ln -s -t "bin-$method" "$d"/* 2>/dev/null
	done
	rm -f "bin-$method/$tool"
	printf '[job]\nimage = %s/new.img\nrequire_signature = no\ndisk = %s/disk.img\nsystem_partition = 1\nstore_size = 200MiB\n\n[boot]\nmethod = %s\n\n[notify]\ncountdown = 0\n' \
		"$T" "$T" "$method" > "$method.ini"
	# the fixture's preflight passes with the tool there (a dry run writes nothing)
	ok "$method: the job passes preflight with $tool in PATH" \
		env INPLACE_STATE_DIR="$T/state-$method" "$INPLACE" run --dry-run "$method.ini"
	must_fail 2 "$method: refused without $tool" \
		env PATH="$T/bin-$method" INPLACE_STATE_DIR="$T/state-$method" "$INPLACE" run "$method.ini"
	env PATH="$T/bin-$method" INPLACE_STATE_DIR="$T/state-$method" "$INPLACE" run "$method.ini" > "$method.out" 2>&1
	check "$method: one line naming $tool and the Debian package $pkg" \
		bash -c "[ \$(wc -l < '$method.out') = 1 ] && grep -q '$tool.*not found.*Debian package $pkg' '$method.out'"
	check "$method: no state written" test ! -e "$T/state-$method/state.json"
	check "$method: the disk unchanged" test "$(sha256sum < disk.img)" = "$sum"
}
without kexec kexec kexec-tools
without grub-editenv grub grub-common
