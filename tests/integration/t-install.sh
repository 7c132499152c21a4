#!/bin/bash
# t-install.sh — `make install`: with DESTDIR and PREFIX=/usr the staged
# tree holds the binary, the systemd units, the man pages and completion
# (when the tree has them), and per module its header, archive and
# pkg-config file, nothing else; installed under a PREFIX, a C program built
# with `pkg-config --cflags --libs inplace-partctl` lists a fixture disk's
# partitions as `inplace part show --json` does, and every module's .pc
# names all the libraries its whole archive needs.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/disks.sh"
require_tool make gcc pkg-config jq sfdisk || exit 1

SRC=$(cd "$TESTS_DIR/.." && pwd)
BUILD=$(dirname "$INPLACE")
MODULES="common partctl imager migrate bootstage"
inst() { make -s -C "$SRC" BUILD="$BUILD" install "$@" > "$T/install.log" 2>&1; }

# ---- DESTDIR: the file list ------------------------------------------------
D=$T/dest
ok "make install DESTDIR PREFIX=/usr" inst DESTDIR="$D" PREFIX=/usr || { tail "$T/install.log"; exit 1; }
{
	echo usr/sbin/inplace
	for m in $MODULES; do
		echo "usr/include/inplace/$m/$m.h"
		echo "usr/lib/libinplace-$m.a"
		echo "usr/lib/pkgconfig/inplace-$m.pc"
	done
	echo usr/lib/systemd/system/inplace-firstboot.service
	echo usr/lib/systemd/system/inplace-postpone.service
	echo usr/lib/systemd/system/inplace-postpone.timer
	# every page man/*.in makes, and the completion
	for f in "$SRC"/man/*.in; do
		f=$(basename "$f" .in)
		echo "usr/share/man/man${f##*.}/$f"
	done
	echo usr/share/bash-completion/completions/inplace
} | sort > "$T/want"
(cd "$D" && find . -type f | sed 's|^\./||' | sort) > "$T/got"
check "installed files: exactly the expected ones" diff "$T/want" "$T/got"
check "the installed binary runs" "$D/usr/sbin/inplace" --version
check "the binary is mode 0755, the rest 0644" test "$(stat -c %a "$D/usr/sbin/inplace")" = 755 -a \
	"$(cd "$D" && find . -type f ! -path ./usr/sbin/inplace ! -perm 0644 | wc -l)" = 0
check "the units are the tree's own" cmp "$SRC/contrib/systemd/inplace-firstboot.service" \
	"$D/usr/lib/systemd/system/inplace-firstboot.service"
check ".pc files relocate: prefix=/usr, dirs under it" \
	grep -qx 'includedir=${prefix}/include' "$D/usr/lib/pkgconfig/inplace-partctl.pc"

# ---- PREFIX: build against the installed partctl ---------------------------
P=$T/prefix
ok "make install PREFIX=$P" inst PREFIX="$P" || { tail "$T/install.log"; exit 1; }
export PKG_CONFIG_PATH=$P/lib/pkgconfig
ok "pkg-config --cflags --libs inplace-partctl" pkg-config --cflags --libs inplace-partctl
check "pkg-config: the flags point into PREFIX" sh -c \
	"pkg-config --cflags --libs inplace-partctl | grep -q -- '-I$P/include/inplace .*-L$P/lib .*-linplace-partctl'"

cat > "$T/lsparts.c" <<'C'
/* Lists a disk's partitions through the installed libinplace-partctl:
 * number, start, size, type, filesystem and its uuid, one line each. */
#include <partctl/partctl.h>

int main(int argc, char **argv)
{
	partctl_table *t = NULL;
	ip_disk *d = NULL;
	ip_error e = { 0 };

	if (argc != 2 || partctl_table_open(argv[1], false, &t, &e) < 0 ||
	    ip_disk_open(argv[1], IP_DISK_RDONLY, &d, &e) < 0) {
		fprintf(stderr, "lsparts: %s\n", e.msg);
		return 1;
	}
	for (size_t i = 0; i < partctl_table_count(t); i++) {
		const struct partctl_part *p = partctl_table_at(t, i);
		struct partctl_fsinfo fi = { 0 };

		if (!p->extended)
			partctl_fs_probe(d, p->start, p->size, &fi, NULL);
		printf("%u %llu %llu %s %s %s\n", p->n, (unsigned long long)p->start,
		       (unsigned long long)p->size, p->type, fi.type[0] ? fi.type : "-",
		       fi.uuid[0] ? fi.uuid : "-");
	}
	ip_disk_free(d);
	partctl_table_free(t);
	return 0;
}
C
# shellcheck disable=SC2046 # pkg-config's words are separate flags
ok "a C program builds against the installed partctl" \
	gcc -std=c17 -Wall -Wextra -Werror -o "$T/lsparts" "$T/lsparts.c" $(pkg-config --cflags --libs inplace-partctl)

IMG=$T/mbr.img
FX_SRC=$T/src
fx_disk_mbr_ext "$IMG" || { fail "fixture" "fx_disk_mbr_ext"; exit 1; }
ok "it runs on the fixture disk" sh -c "'$T/lsparts' '$IMG' > '$T/lsparts.out'"
"$INPLACE" part show --json "$IMG" | jq -r '.partitions[] |
	"\(.number) \(.start) \(.size) \(.type) \(.fs // "-") \(if (.uuid // "") == "" then "-" else .uuid end)"' \
	> "$T/show.out"
check "its list is part show's (4 partitions, a logical one, ext4 and ntfs)" sh -c \
	"diff '$T/show.out' '$T/lsparts.out' && [ \$(wc -l < '$T/lsparts.out') -eq 4 ] && grep -q '^5 ' '$T/lsparts.out' &&
	 grep -q ' ext4 ' '$T/lsparts.out' && grep -q ' ntfs ' '$T/lsparts.out'"

# Each module's whole archive links with its .pc's flags alone: a library
# missing from Requires/Libs would leave an undefined reference.
echo 'int main(void) { return 0; }' > "$T/empty.c"
for m in $MODULES; do
	# shellcheck disable=SC2046
	ok "inplace-$m.pc: its whole archive links" gcc -o "$T/whole-$m" "$T/empty.c" \
		$(pkg-config --cflags inplace-$m) -Wl,--whole-archive "$P/lib/libinplace-$m.a" \
		-Wl,--no-whole-archive $(pkg-config --libs inplace-$m)
done

# ---- uninstall ---------------------------------------------------------------
ok "make uninstall" make -s -C "$SRC" BUILD="$BUILD" uninstall DESTDIR="$D" PREFIX=/usr
check "uninstall leaves no file" test "$(find "$D" -type f | wc -l)" = 0
