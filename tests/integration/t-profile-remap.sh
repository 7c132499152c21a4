#!/bin/bash
# t-profile-remap — UIDs and GIDs are remapped in two passes: every id the
# new OS leaves free is kept, and only then do the taken ones get new ids,
# so one taken id never pushes another account off a free one.  The
# fixture's new OS holds 1001 (dave); bob's group used to take 1002 and
# push carol's group to 1003.  Every remap is reported.
. "$(dirname "$0")/../lib.sh"
FX=$TESTS_DIR/fixtures/profile-root.sh
I=$INPLACE

bash "$FX" "$T/old" "$T/new" small >/dev/null || { fail "fixture" "profile-root.sh failed"; exit 1; }
ok "save" "$I" profile save --root "$T/old" --store "$T/store"
id_of() { awk -F: -v n="$3" '$1 == n { print $3 }' "$1/etc/$2"; }

cp -a "$T/new" "$T/a"
ok "restore (1001 taken)" sh -c '"$1" profile restore --store "$2" --root "$3" --trusted-store --json > "$4"' _ "$I" "$T/store" "$T/a" "$T/a.json"
check "carol's group keeps 1002" test "$(id_of "$T/a" group carol)" = 1002
check "carol keeps uid 1002" test "$(id_of "$T/a" passwd carol)" = 1002
check "alice keeps 1000/1000" test "$(id_of "$T/a" passwd alice)/$(id_of "$T/a" group alice)" = 1000/1000
check "bob's group moves to the first id nobody wants (1003)" test "$(id_of "$T/a" group bob)" = 1003
check "bob moves to 1003, primary group his own" sh -c '[ "$(awk -F: "\$1 == \"bob\" { print \$3 \":\" \$4 }" "$1/etc/passwd")" = 1003:1003 ]' _ "$T/a"
check "dave keeps 1001" test "$(id_of "$T/a" passwd dave)/$(id_of "$T/a" group dave)" = 1001/1001
check "every remap reported, users and groups" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
got = sorted((m["name"], m["kind"], m["from"], m["to"]) for m in d["remapped"])
assert got == [("bob", "group", 1001, 1003), ("bob", "user", 1001, 1003)], got' "$T/a.json"
check "bob's files belong to the remapped bob" test "$(stat -c %u:%g "$T/a/home/bob/.profile")" = 1003:1003

# the same for UIDs: 1000 and 1001 taken, 1002 free: carol keeps it
cp -a "$T/new" "$T/b"
echo "erin:x:1000:1000:Erin:/home/erin:/bin/bash" >> "$T/b/etc/passwd"
echo "erin:x:1000:" >> "$T/b/etc/group"
ok "restore (1000 and 1001 taken)" sh -c '"$1" profile restore --store "$2" --root "$3" --trusted-store --json > "$4"' _ "$I" "$T/store" "$T/b" "$T/b.json"
check "carol keeps 1002/1002 though alice and bob are remapped" \
	test "$(id_of "$T/b" passwd carol)/$(id_of "$T/b" group carol)" = 1002/1002
check "alice and bob get 1003 and 1004" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
got = sorted((m["name"], m["kind"], m["from"], m["to"]) for m in d["remapped"])
assert got == [("alice", "group", 1000, 1003), ("alice", "user", 1000, 1003),
               ("bob", "group", 1001, 1004), ("bob", "user", 1001, 1004)], got' "$T/b.json"
check "human output names each remap" sh -c '"$1" profile restore --store "$2" --root "$3" --dry-run --trusted-store | grep -q "^remap .*alice .*user id 1000 -> 1003"' _ "$I" "$T/store" "$T/b"
