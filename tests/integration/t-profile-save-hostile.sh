#!/bin/bash
# t-profile-save-hostile — what a user of the old system could plant so that
# save hands system secrets to a profile: a home that is a symlink
# (/home/mallory -> ../etc), a passwd home of /etc, symlinks out of a home;
# and a store placed under --root, where save must never write.
. "$(dirname "$0")/../lib.sh"
FX=$TESTS_DIR/fixtures/profile-root.sh
I=$INPLACE

bash "$FX" "$T/old" "$T/new" small >/dev/null || { fail "fixture" "profile-root.sh failed"; exit 1; }
echo "mallory:x:1003:1003:Mallory:/home/mallory:/bin/sh" >> "$T/old/etc/passwd"
echo "eve:x:1004:1004:Eve:/etc:/bin/sh" >> "$T/old/etc/passwd"
printf 'mallory:x:1003:\neve:x:1004:\n' >> "$T/old/etc/group"
ln -s ../etc "$T/old/home/mallory"
ln -s /etc "$T/old/home/alice/etc-abs"
ln -s ../../etc "$T/old/home/alice/etc-rel"
mkdir -p "$T/old/home/bob/sub" && ln -s ../../../etc/shadow "$T/old/home/bob/sub/shadow"
echo "marker:SECRET-SHADOW-MARKER:19000:0:99999:7:::" >> "$T/old/etc/shadow"

ok "save (default spec)" sh -c '"$1" profile save --root "$2" --store "$3" --json > "$4" 2> "$5"' _ "$I" "$T/old" "$T/store" "$T/save.json" "$T/save.err"
check "mallory (home a symlink) and eve (home /etc) not saved, and reported" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
names = sorted(u["name"] for u in d["users"])
assert names == ["alice", "bob", "carol"], names
sk = {s["name"]: s["reason"] for s in d["skipped"]}
assert set(sk) == {"mallory", "eve"}, sk
assert "symlink" in sk["mallory"] and "outside /home" in sk["eve"], sk' "$T/save.json"
check "a warning line for each" test "$(grep -c "^inplace: warning: user .* not saved" "$T/save.err")" = 2
check "no archive for mallory or eve" sh -c '[ ! -e "$1/mallory.pax.zst" ] && [ ! -e "$1/eve.pax.zst" ]' _ "$T/store"
check "no archive holds /etc/shadow's content" sh -c 'for a in "$1"/*.pax.zst; do zstd -dc "$a" | grep -q SECRET-SHADOW-MARKER && exit 1; done; exit 0' _ "$T/store"
check "symlinks out of a home stay symlinks" sh -c 'zstd -dc "$1/alice.pax.zst" | tar -tvf - 2>/dev/null | grep -q "^l.* home/etc-abs -> /etc"' _ "$T/store"
ok "the store verifies" "$I" profile verify --store "$T/store"

printf '[profile]\nusers = alice, mallory\n' > "$T/mallory.ini"
must_fail 2 "a spec naming a user whose home is a symlink is refused" "$I" profile save --root "$T/old" --store "$T/store2" --spec "$T/mallory.ini"
check "... and nothing was written" test ! -e "$T/store2"
printf '[profile]\nusers = eve\n' > "$T/eve.ini"
must_fail 2 "a spec naming a user whose home is /etc is refused" "$I" profile save --root "$T/old" --store "$T/store3" --spec "$T/eve.ini"

# a store under --root: refused before anything is written
(cd "$T/old" && find . -printf '%p %m %s\n' | sort) > "$T/old.before"
must_fail 2 "--store under --root refused" "$I" profile save --root "$T/old" --store "$T/old/tmp/store"
must_fail 2 "--store inside a home under --root refused" "$I" profile save --root "$T/old" --store "$T/old/home/alice/store"
must_fail 2 "--store given through .. under --root refused" "$I" profile save --root "$T/old" --store "$T/old/home/../var/store"
ln -s "$T/old/home" "$T/link-to-home"
must_fail 2 "--store reached through a symlink into --root refused" "$I" profile save --root "$T/old" --store "$T/link-to-home/st"
(cd "$T/old" && find . -printf '%p %m %s\n' | sort) > "$T/old.after"
check "the root is unchanged" cmp -s "$T/old.before" "$T/old.after"
mkdir -p "$T/ro"
if mount --bind "$T/old" "$T/ro"; then
	track_mount "$T/ro"
	must_fail 2 "--store under the same root seen through a bind mount refused" "$I" profile save --root "$T/ro" --store "$T/old/st"
else
	skip "bind mount of the root" "mount --bind not possible"
fi
