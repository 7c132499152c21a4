#!/bin/bash
# t-cli-options — an unknown option (or one missing its value) is refused
# with exit 2 and exactly one stderr line that names it, in every module:
# getopt's own message is silenced once, in main.c.
. "$TESTS_DIR/lib.sh"

# one_line NAME WANT_WORD CMD...: exit 2, one line on stderr naming WANT_WORD
one_line() {
	local name=$1 want=$2 out rc; shift 2
	out=$("$@" 2>&1 >/dev/null); rc=$?
	if [ "$rc" -ne 2 ]; then fail "$name" "exit $rc, wanted 2: $out"; return; fi
	if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then fail "$name" "not one line: $out"; return; fi
	case $out in *"'$want'"*) pass "$name" ;; *) fail "$name" "does not name $want: $out" ;; esac
}

one_line "part show --bogus" --bogus "$INPLACE" part show --bogus x.img
one_line "part create -Z" -Z "$INPLACE" part create -Z x.img
one_line "part shrink --to=… with a typo" --tooo "$INPLACE" part shrink x.img 1 --tooo=1G
one_line "part move --bogus" --bogus "$INPLACE" part move x.img 1 --bogus
one_line "part create --start without a value" --start "$INPLACE" part create x.img --start
one_line "image info --bogus" --bogus "$INPLACE" image info --bogus x.img
one_line "image capture -Z" -Z "$INPLACE" image capture -Z x.img 1 -o y.img
one_line "image deploy --bogus" --bogus "$INPLACE" image deploy --bogus x y 1
one_line "profile list --bogus" --bogus "$INPLACE" profile list --bogus
one_line "profile list --root (another verb's option)" --root "$INPLACE" profile list --root /x
one_line "profile verify --store without a value" --store "$INPLACE" profile verify --store
out=$("$INPLACE" image info --json --bogus x.img 2>/dev/null)
check "--json: the error document names the option" test "$(jq -r .error.message <<<"$out" | grep -c "'--bogus'")" = 1
