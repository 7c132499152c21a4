#!/bin/bash
# t-profile-roundtrip — save an old root's profiles, restore them into a new
# OS where bob's UID is taken, and compare every file (content, mode, owner
# by name, xattrs, ACLs, mtime), accounts, machine identity; a second
# restore changes nothing; the root may be read-only; bad input is refused.
. "$(dirname "$0")/../lib.sh"
FX=$TESTS_DIR/fixtures/profile-root.sh
I=$INPLACE

bash "$FX" "$T/old" "$T/new" full || { fail "fixture" "profile-root.sh failed"; exit 1; }
cp -a "$T/new" "$T/new.orig"

# estimate: per user and total, and a store size
est=$("$I" profile estimate --root "$T/old" --json)
check "estimate lists alice, bob, carol" python3 -c '
import json,sys; d=json.loads(sys.argv[1])
assert sorted(u["name"] for u in d["users"]) == ["alice","bob","carol"], d
assert d["total"]["files"] == sum(u["files"] for u in d["users"])
assert d["users"][2]["bytes"] >= 4 << 30 and d["store_bytes"] < 1 << 30' "$est"

# save from a read-only view of the root
mkdir -p "$T/ro"
if mount --bind "$T/old" "$T/ro" && mount -o remount,bind,ro "$T/ro"; then
	track_mount "$T/ro"
	src=$T/ro
else
	skip "read-only root" "bind mount not possible"; src=$T/old
fi
(cd "$T/old" && find . -printf '%p %m %U %G %s %T@ %C@\n' | sort) > "$T/old.before"
ok "save" "$I" profile save --root "$src" --store "$T/store"
(cd "$T/old" && find . -printf '%p %m %U %G %s %T@ %C@\n' | sort) > "$T/old.after"
check "save wrote nothing under the root" cmp -s "$T/old.before" "$T/old.after"
check "store is 0700, its files 0600" sh -c '[ "$(stat -c %a "$1")" = 700 ] && [ -z "$(find "$1" -type f ! -perm 600)" ]' _ "$T/store"
check "COMPLETE written" test -s "$T/store/COMPLETE"
check "no secret in the save output" sh -c '! "$1" profile list --store "$2" --json | grep -q "\\$6\\$\|PRIVATE"' _ "$I" "$T/store"
ok "verify" "$I" profile verify --store "$T/store"
ok "restore" "$I" profile restore --store "$T/store" --root "$T/new" --trusted-store

# every file equal (owners by name through each root's own passwd/group)
for u in alice bob carol; do
	bash "$FX" snap "$T/old" "home/$u" | grep -v '^\.cache/' > "$T/a.$u"
	bash "$FX" snap "$T/new" "home/$u" > "$T/b.$u"
	check "home of $u equal (hash, mode, owner, xattrs, ACLs, mtime)" cmp -s "$T/a.$u" "$T/b.$u" ||
		diff "$T/a.$u" "$T/b.$u" | head -5
done
check "4 GiB sparse file stays sparse" sh -c '[ $(stat -c %b "$1") -lt 1024 ]' _ "$T/new/home/carol/data/vm-disk.img"
check "file capability kept (trusted store)" sh -c 'getfattr -n security.capability "$1" >/dev/null 2>&1' _ "$T/new/home/alice/bin/ping-ish"
uid_of() { awk -F: -v n="$2" '$1 == n {print $3}' "$1/etc/passwd"; }
check "bob remapped off dave's UID" sh -c '[ "$1" != 1001 ] && [ -n "$1" ]' _ "$(uid_of "$T/new" bob)"
check "dave keeps 1001" test "$(uid_of "$T/new" dave)" = 1001
check "bob owns his files by number" sh -c '[ -z "$(find "$1/home/bob" ! -uid "$2")" ]' _ "$T/new" "$(uid_of "$T/new" bob)"
check "alice keeps 1000" test "$(uid_of "$T/new" alice)" = 1000
for u in alice bob carol; do
	check "password hash of $u equal" test "$(grep "^$u:" "$T/old/etc/shadow" | cut -d: -f2)" = "$(grep "^$u:" "$T/new/etc/shadow" | cut -d: -f2)"
done
check "supplementary groups kept" sh -c 'grep -q "^project:x:1500:alice,bob$" "$1/etc/group" && grep -q "^sudo:x:27:alice$" "$1/etc/group"' _ "$T/new"
check "group password kept" test "$(grep '^project:' "$T/old/etc/gshadow" | cut -d: -f2)" = "$(grep '^project:' "$T/new/etc/gshadow" | cut -d: -f2)"
for f in etc/hostname etc/machine-id etc/ssh/ssh_host_ed25519_key etc/ssh/ssh_host_ed25519_key.pub \
	 etc/NetworkManager/system-connections/wired.nmconnection etc/netplan/01-netcfg.yaml etc/timezone \
	 etc/default/locale etc/default/keyboard; do
	check "machine state $f equal" cmp -s "$T/old/$f" "$T/new/$f"
done
check "host key stays 0600" test "$(stat -c %a "$T/new/etc/ssh/ssh_host_ed25519_key")" = 600
check "localtime link kept" test "$(readlink "$T/new/etc/localtime")" = /usr/share/zoneinfo/Europe/Paris
check "hosts merged" sh -c 'grep -q fileserver "$1" && grep -q "127.0.1.1.*oldhost" "$1" && ! grep -q newos "$1"' _ "$T/new/etc/hosts"
check "crontab restored" sh -c 'cmp -s "$1/var/spool/cron/crontabs/alice" "$2/var/spool/cron/crontabs/alice" && [ "$(stat -c %u:%g "$2/var/spool/cron/crontabs/alice")" = 1000:105 ]' _ "$T/old" "$T/new"
check "mail spool restored to remapped bob" sh -c 'cmp -s "$1/var/mail/bob" "$2/var/mail/bob" && [ "$(stat -c %u "$2/var/mail/bob")" = "$3" ]' _ "$T/old" "$T/new" "$(uid_of "$T/new" bob)"

# idempotent: a second restore changes nothing (ctime included)
snap_all() { (cd "$1" && find . -printf '%p %i %m %U %G %s %T@ %C@\n' | sort); }  # ctime: any write shows
snap_all "$T/new" > "$T/r1"
out=$("$I" profile restore --store "$T/store" --root "$T/new" --trusted-store --json)
snap_all "$T/new" > "$T/r2"
check "second restore changes nothing" cmp -s "$T/r1" "$T/r2"
check "second restore reports nothing written" python3 -c '
import json,sys; d=json.loads(sys.argv[1])
assert all(u["written"] == 0 for u in d["users"]) and not d["accounts_changed"] and not d["machine_changed"], d' "$out"

# untrusted store: setuid and capabilities dropped, the rest equal
cp -a "$T/new.orig" "$T/new2"
ok "restore --users alice (untrusted)" "$I" profile restore --store "$T/store" --root "$T/new2" --users alice
check "setuid bit dropped without --trusted-store" test "$(stat -c %a "$T/new2/home/alice/bin/ls")" = 755
check "capability dropped without --trusted-store" sh -c '! getfattr -n security.capability "$1" >/dev/null 2>&1' _ "$T/new2/home/alice/bin/ping-ish"
check "only alice restored" sh -c '[ -d "$1/home/alice" ] && [ ! -e "$1/home/bob" ] && ! grep -q ^bob: "$1/etc/passwd"' _ "$T/new2"
cp -a "$T/new.orig" "$T/new3"
ok "dry run" "$I" profile restore --store "$T/store" --root "$T/new3" --dry-run
check "dry run wrote nothing" diff -r "$T/new.orig" "$T/new3"

# bad input: one line, exit 2 (or 1 when the operation itself fails)
must_fail 2 "missing root" "$I" profile save --root "$T/nonexistent" --store "$T/s2"
must_fail 2 "unknown user in --users" "$I" profile restore --store "$T/store" --root "$T/new3" --users alice,mallory
printf '[profile]\nusers = all\nexlcude = .cache\n' > "$T/bad.ini"
must_fail 2 "spec with an unknown key" "$I" profile estimate --root "$T/old" --spec "$T/bad.ini"
check "the message names the key and line" sh -c '"$1" profile estimate --root "$2" --spec "$3" 2>&1 | grep -q "exlcude.*line 3"' _ "$I" "$T/old" "$T/bad.ini"
mkdir -p "$T/incomplete" && cp "$T/store/manifest.json" "$T/incomplete/"
must_fail 2 "store without COMPLETE refused" "$I" profile restore --store "$T/incomplete" --root "$T/new3"
must_fail 2 "verify of a store without COMPLETE" "$I" profile verify --store "$T/incomplete"
mkdir -p "$T/rostore"
if mount -t tmpfs -o ro,size=1m tmpfs "$T/rostore" 2>/dev/null; then
	track_mount "$T/rostore"
	must_fail 1 "store not writable" "$I" profile save --root "$T/old" --store "$T/rostore/s"
else
	skip "store not writable" "cannot mount a read-only tmpfs"
fi
must_fail 2 "save over a complete store" "$I" profile save --root "$T/old" --store "$T/store"
printf '[profile]\nusers = alice\n[user alice]\nexclude = data\n' > "$T/spec.ini"
est=$("$I" profile estimate --root "$T/old" --spec "$T/spec.ini" --json)
check "spec selects users and excludes" python3 -c '
import json,sys; d=json.loads(sys.argv[1])
assert [u["name"] for u in d["users"]] == ["alice"] and d["users"][0]["bytes"] < 1 << 20, d' "$est"

# a corrupted archive fails verify, naming the file
cp -a "$T/store" "$T/bad"
python3 - "$T/bad/bob.pax.zst" <<'PY'
import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[len(b)//2]^=0xff; open(p,"wb").write(b)
PY
check "altered archive fails verify naming it" sh -c '"$1" profile verify --store "$2" 2>&1 | grep -q bob.pax.zst; [ "$?" = 0 ] && ! "$1" profile verify --store "$2" >/dev/null 2>&1' _ "$I" "$T/bad"
cp -a "$T/store" "$T/trunc"
truncate -s 100000 "$T/trunc/carol.pax.zst"
must_fail 1 "truncated archive fails verify" "$I" profile verify --store "$T/trunc"

# [system] paths: saved by glob, restored only from a trusted store
mkdir -p "$T/old/srv/www/site" "$T/old/opt/app/data" "$T/old/opt/other"
echo hi > "$T/old/srv/www/site/index.html"; echo tmp > "$T/old/srv/www/site/x.tmp"
echo conf > "$T/old/etc/myapp.conf"; echo d > "$T/old/opt/app/data/x"; echo no > "$T/old/opt/other/y"
printf '[profile]\nusers = bob\n[system]\ninclude = srv/www, etc/myapp.conf, opt/*/data\nexclude = *.tmp\n' > "$T/sys.ini"
ok "save with [system] paths" "$I" profile save --root "$T/old" --store "$T/sys" --spec "$T/sys.ini"
cp -a "$T/new.orig" "$T/new4"; cp -a "$T/new.orig" "$T/new5"
ok "restore without trust" "$I" profile restore --store "$T/sys" --root "$T/new4"
check "untrusted store: system paths skipped" test ! -e "$T/new4/srv/www/site/index.html"
ok "restore --trusted-store" "$I" profile restore --store "$T/sys" --root "$T/new5" --trusted-store
check "system paths restored, excludes honoured" sh -c 'cmp -s "$1/srv/www/site/index.html" "$2/srv/www/site/index.html" &&
	cmp -s "$1/etc/myapp.conf" "$2/etc/myapp.conf" && cmp -s "$1/opt/app/data/x" "$2/opt/app/data/x" &&
	[ ! -e "$2/srv/www/site/x.tmp" ] && [ ! -e "$2/opt/other" ]' _ "$T/old" "$T/new5"

# hash algorithms: the manifest's digests are what xxh128sum (the default)
# and b2sum (hash = blake2b-512) print of the saved files; a store of format
# 1 (BLAKE2b, no "hash" key) still verifies and restores; a newer format or
# an unknown hash is refused as bad input
cat > "$T/sums.py" <<'PY'
# sums.py STORE ROOT TOOL: every saved file's manifest hash against TOOL's
import json, os, subprocess, sys
store, root, tool = sys.argv[1:4]
m = json.load(open(os.path.join(store, "manifest.json")))
want = {}
for u in m["users"]:
    for e in u["entries"]:
        if e["type"] == "file" and e["path"].startswith("home/") and e["size"] < 64 << 20:
            want[os.path.join(root, u["home"].lstrip("/"), e["path"][5:])] = e["hash"]
assert len(want) > 20, len(want)
out = subprocess.run([tool, "--"] + sorted(want), stdout=subprocess.PIPE, check=True, text=True).stdout
got = {l.split("  ", 1)[1]: l.split("  ", 1)[0] for l in out.splitlines()}
bad = [p for p in want if got.get(p) != want[p]]
assert not bad, bad[:3]
PY
check "format 2 store names xxh3-128" python3 -c '
import json, sys; c = json.load(open(sys.argv[1] + "/COMPLETE")); m = json.load(open(sys.argv[1] + "/manifest.json"))
assert c["hash"] == m["hash"] == "xxh3-128" and c["format_version"] == m["format_version"] == 2, (c, m["hash"])' "$T/store"
check "manifest hashes are what xxh128sum prints" python3 "$T/sums.py" "$T/store" "$T/old" xxh128sum
printf '[profile]\nusers = alice, bob\nhash = blake2b-512\n' > "$T/b2.ini"
ok "save with hash = blake2b-512" "$I" profile save --root "$T/old" --store "$T/b2" --spec "$T/b2.ini"
check "manifest hashes are what b2sum prints" python3 "$T/sums.py" "$T/b2" "$T/old" b2sum
ok "verify a blake2b-512 store" "$I" profile verify --store "$T/b2"
printf '[profile]\nhash = sha1\n' > "$T/sha1.ini"
must_fail 2 "spec with an unknown hash" "$I" profile estimate --root "$T/old" --spec "$T/sha1.ini"
cat > "$T/restamp.py" <<'PY'
# restamp.py STORE KEY=VALUE...: edit COMPLETE ("c.") or manifest ("m.") keys
# ("-" deletes), then write COMPLETE's hashes again as a saver would
import hashlib, json, os, subprocess, sys
store = sys.argv[1]
docs = {f: json.load(open(os.path.join(store, f))) for f in ("COMPLETE", "manifest.json")}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    d = docs["COMPLETE" if k[0] == "c" else "manifest.json"]
    if v == "-": d.pop(k[2:], None)
    else: d[k[2:]] = json.loads(v)
open(os.path.join(store, "manifest.json"), "w").write(json.dumps(docs["manifest.json"]))
c = docs["COMPLETE"]
for f in ("manifest.json", "accounts.json", "machine.json"):
    data = open(os.path.join(store, f), "rb").read()
    if c.get("hash", "blake2b-512") == "blake2b-512": c[f] = hashlib.blake2b(data).hexdigest()
    else: c[f] = subprocess.run(["xxh128sum", "-"], input=data, stdout=subprocess.PIPE, check=True).stdout.split()[0].decode()
open(os.path.join(store, "COMPLETE"), "w").write(json.dumps(c))
PY
cp -a "$T/b2" "$T/v1"
python3 "$T/restamp.py" "$T/v1" c.hash=- c.format_version=- m.hash=- m.format_version=1
ok "a format 1 store (BLAKE2b) verifies" "$I" profile verify --store "$T/v1"
cp -a "$T/new.orig" "$T/new6"
ok "a format 1 store restores" "$I" profile restore --store "$T/v1" --root "$T/new6" --users alice
check "format 1 restore: alice's files equal" sh -c 'cmp -s "$1/home/alice/data/random.bin" "$2/home/alice/data/random.bin" && cmp -s "$1/home/alice/data/sparse.img" "$2/home/alice/data/sparse.img"' _ "$T/old" "$T/new6"
cp -a "$T/store" "$T/v3"
python3 "$T/restamp.py" "$T/v3" c.format_version=3
must_fail 2 "a newer store format is refused" "$I" profile verify --store "$T/v3"
check "the message says it is newer" sh -c '"$1" profile restore --store "$2" --root "$3" 2>&1 | grep -q "newer than this inplace"' _ "$I" "$T/v3" "$T/new6"
cp -a "$T/store" "$T/md5"
python3 "$T/restamp.py" "$T/md5" 'c.hash="md5"'
must_fail 2 "an unknown hash is refused" "$I" profile verify --store "$T/md5"
cp -a "$T/store" "$T/mixed"
python3 "$T/restamp.py" "$T/mixed" 'm.hash="blake2b-512"'
must_fail 1 "manifest and COMPLETE naming other hashes" "$I" profile verify --store "$T/mixed"
cp -a "$T/store" "$T/nullhash"
python3 "$T/restamp.py" "$T/nullhash" 'm.hash=null'
must_fail 1 "a manifest whose hash is null: damaged, no crash" "$I" profile verify --store "$T/nullhash"

# JSON nulls (and numbers) where a store holds names: refused as damaged or
# skipped, never a crash (exit 139 before mig_json_str)
cat > "$T/nulls.py" <<'PY'
# nulls.py STORE CASE: put a null where a name belongs, then write COMPLETE's
# hashes again as a saver would (except in the COMPLETE case)
import json, os, subprocess, sys
store, case = sys.argv[1:3]
docs = {f: json.load(open(os.path.join(store, f))) for f in ("manifest.json", "accounts.json", "machine.json", "COMPLETE")}
m, a, x, c = docs["manifest.json"], docs["accounts.json"], docs["machine.json"], docs["COMPLETE"]
if case == "group": a["users"][0]["groups"] = [None, 7]
if case == "entry": m["users"][0]["entries"][1]["type"] = None
if case == "link":
    links = [f for f in x["files"] if "link" in f]
    assert links, "the fixture has a machine file that is a link"
    links[0]["link"] = None
for f in ("manifest.json", "accounts.json", "machine.json"):
    data = json.dumps(docs[f]).encode()
    open(os.path.join(store, f), "wb").write(data)
    c[f] = subprocess.run(["xxh128sum", "-"], input=data, stdout=subprocess.PIPE, check=True).stdout.split()[0].decode()
if case == "complete": c["manifest.json"] = None
open(os.path.join(store, "COMPLETE"), "w").write(json.dumps(c))
PY
for c in group entry link complete; do
	cp -a "$T/store" "$T/null-$c"; rm -rf "$T/new-null"; cp -a "$T/new.orig" "$T/new-null"
	python3 "$T/nulls.py" "$T/null-$c" "$c" || { fail "null in the store ($c)" "could not edit the store"; continue; }
	"$I" profile restore --store "$T/null-$c" --root "$T/new-null" --trusted-store >/dev/null 2>&1; rc=$?
	want=1   # accounts.json is checked whole before anything is written: a damaged group name refuses it
	check "a null where a name belongs ($c): exit $want, not a crash (got $rc)" [ "$rc" -eq "$want" ]
done
