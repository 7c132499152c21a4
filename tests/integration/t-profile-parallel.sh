#!/bin/bash
# t-profile-parallel — users are saved in parallel threads, and libarchive's
# disk reader reads a directory's default ACL by a path relative to the
# process's working directory, which every walker changes (fchdir).  Three
# homes with hundreds of directories each, alice's with one default ACL,
# bob's with none, carol's with another: after save and restore every
# directory has the default ACL it had, never a neighbour's.
. "$(dirname "$0")/../lib.sh"
FX=$TESTS_DIR/fixtures/profile-root.sh
I=$INPLACE

bash "$FX" "$T/old" "$T/new" small >/dev/null || { fail "fixture" "profile-root.sh failed"; exit 1; }
for u in alice:1000 bob:1001 carol:1002; do
	n=${u%%:*}; id=${u##*:}
	for i in $(seq 1 400); do
		d=$T/old/home/$n/acl/d$i
		mkdir -p "$d" && echo "$n $i" > "$d/f"
	done
	chown -R "$id:$id" "$T/old/home/$n/acl"
done
for i in $(seq 1 400); do
	setfacl -d -m u:1001:rx "$T/old/home/alice/acl/d$i"
	setfacl -d -m g:1500:r "$T/old/home/carol/acl/d$i"
done
# the default ACL of every directory, qualifiers as names (owners differ by
# number between the roots: bob is remapped in the new one)
defaults() { # ROOT
	for n in alice bob carol; do
		(cd "$1/home/$n/acl" && for d in d*; do
			printf '%s/%s %s\n' "$n" "$d" "$(getfacl -d -c -p "$d" 2>/dev/null | sed 's/:[0-9][0-9]*:/:id:/' | sort | tr '\n' ' ')"
		done)
	done | sort
}
defaults "$T/old" > "$T/want"
check "the fixture has default ACLs on alice's and carol's directories" sh -c '[ "$(grep -c "^alice/.*user:" "$1")" = 400 ] && [ "$(grep -c "^carol/.*group:" "$1")" = 400 ] && ! grep -q "^bob/.*user:" "$1"' _ "$T/want"
ok "save" "$I" profile save --root "$T/old" --store "$T/store"
ok "restore" "$I" profile restore --store "$T/store" --root "$T/new"
defaults "$T/new" > "$T/got"
check "every directory has its own default ACL back" cmp -s "$T/want" "$T/got"
if ! cmp -s "$T/want" "$T/got"; then diff "$T/want" "$T/got" | head -5; fi
