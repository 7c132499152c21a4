#!/bin/bash
# t-man — the manual pages: generated from man/*.in by `inplace --help-man`
# as `make man` does, lint-clean (mandoc -T lint, groff -ww), every verb in
# exactly one page, and each verb's options the same in its man page, its
# --help and what getopt accepts (all three come from one table in cli/).
. "$TESTS_DIR/lib.sh"

src=$TESTS_DIR/../man
mkdir -p "$T/man"
gen_ok=1
for f in "$src"/*.in; do
	n=$(basename "$f" .in)
	"$INPLACE" --help-man "$f" > "$T/man/$n" || { fail "generate $n" "--help-man failed"; gen_ok=0; }
done
[ "$gen_ok" = 1 ] && pass "every page generates"
for p in inplace.8 inplace-part.8 inplace-image.8 inplace-profile.8 inplace-run.8 inplace-job.5; do
	check "page $p exists" test -s "$T/man/$p"
done

# lint: mandoc's strictest (style too), and groff's warnings
if command -v mandoc >/dev/null; then
	# all of it, style included, but for the pages' references to each
	# other: mandoc looks those up among installed pages
	out=$(mandoc -T lint -W style "$T"/man/* 2>&1 | grep -v 'STYLE: referenced manual not found: Xr inplace')
	if [ -z "$out" ]; then pass "mandoc -T lint clean"; else fail "mandoc -T lint clean" "$(head -5 <<<"$out" | tr '\n' ' ')"; fi
else
	skip "mandoc -T lint clean" "mandoc not installed (make deps)"
fi
out=$(for p in "$T"/man/*; do groff -mandoc -ww -z "$p" 2>&1; done)
if [ -z "$out" ]; then pass "groff -ww clean"; else fail "groff -ww clean" "$(head -5 <<<"$out" | tr '\n' ' ')"; fi

# every verb has its table (--help-check fails on one without) ...
cmds=$("$INPLACE" --help-check) && pass "every verb has a help table" || fail "every verb has a help table" "$cmds"

# man_opts CMD: "-x --long|ARG" or "--long|", sorted, from the .Ss of CMD
man_opts() {
	awk -v ss=".Ss inplace $1" '
		$0 == ss { on = 1; next }
		/^\.S[sh] / { on = 0 }
		on && /^\.It Fl / {
			s = ""
			if ($4 == ",") s = "-" $3 " "
			a = ""
			for (i = 2; i <= NF; i++) {
				if ($i == "Fl" && substr($(i + 1), 1, 1) == "-") s = s "-" $(i + 1)
				if ($i == "Ar") a = $(i + 1)
			}
			print s "|" a
		}' "$T"/man/* | sort
}
# help_opts CMD: the same from --help
help_opts() {
	"$INPLACE" $1 --help | sed -n '/^Options:/,/^$/p' |
		sed -nE 's/^ (-([a-zA-Z]), |    )(--[a-z0-9-]+).*/\2 \3/p' |
		sed -E 's/^ //; s/^([a-zA-Z]) /-\1 /' | sort
}

bad_man=() bad_help=() bad_getopt=() bad_pages=()
while read -r cmd; do
	[ -n "$cmd" ] || continue
	pages=$(grep -lx ".Ss inplace $cmd" "$T"/man/* | wc -l)
	[ "$pages" = 1 ] || bad_pages+=("$cmd ($pages pages)")
	m=$(man_opts "$cmd") h=$(help_opts "$cmd")
	[ -n "$h" ] || bad_help+=("$cmd")
	[ "$(sed 's/|.*//' <<<"$m" | sort)" = "$h" ] || bad_man+=("$cmd: man '$(tr '\n' ' ' <<<"$m")' help '$(tr '\n' ' ' <<<"$h")'")
	# getopt takes every option (with a value where it has one) and goes
	# on to --help: one call with them all, each alone only to name a culprit
	args=()
	while IFS='|' read -r names val; do
		read -r short long <<<"$names"
		[ -n "$short" ] || continue
		[ -n "$long" ] || { long=$short; short=; }
		case $long in --help) continue ;; esac
		[ "$val" = URL ] && val=http://example.invalid/ || val=${val:+1}
		for o in $short $long; do args+=("$o" ${val:+"$val"}); done
	done <<<"$m"
	# shellcheck disable=SC2086
	"$INPLACE" $cmd "${args[@]}" --help >/dev/null 2>&1 || bad_getopt+=("$cmd ${args[*]}")
done <<<"$cmds"
if [ ${#bad_pages[@]} = 0 ]; then pass "every verb in exactly one man page"; else fail "every verb in exactly one man page" "${bad_pages[*]}"; fi
if [ ${#bad_help[@]} = 0 ]; then pass "every verb's --help lists options"; else fail "every verb's --help lists options" "${bad_help[*]}"; fi
if [ ${#bad_man[@]} = 0 ]; then pass "man page options = --help options"; else fail "man page options = --help options" "${bad_man[*]}"; fi
if [ ${#bad_getopt[@]} = 0 ]; then pass "getopt takes every documented option"; else fail "getopt takes every documented option" "${bad_getopt[*]}"; fi
# and the check can fail: an option no table has is refused
must_fail 2 "getopt refuses an undocumented option" "$INPLACE" part shrink --no-such-option --help

# inplace-job(5) lists every key of the job table once
n=$(grep -c '^\.It Ic [a-z_-]* Ns = Ns Ar' "$T/man/inplace-job.5")
check "inplace-job(5) has the 28 job keys" test "$n" = 28
