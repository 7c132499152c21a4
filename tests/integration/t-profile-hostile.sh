#!/bin/bash
# t-profile-hostile — crafted stores (pax archives built with python3's
# tarfile, a manifest that matches them or not, a valid COMPLETE) try to
# write outside the root: "..", absolute paths, a symlink then a file
# through it, a directory replaced by a symlink, hardlinks pointing
# outside, device nodes, setuid bits and capabilities, a manifest that
# disagrees.  Each must be refused or neutralised, and a sentinel directory
# beside the root must keep its listing and hashes.
. "$(dirname "$0")/../lib.sh"
FX=$TESTS_DIR/fixtures/profile-root.sh
I=$INPLACE

bash "$FX" "$T/old" "$T/new" small >/dev/null || { fail "fixture" "profile-root.sh failed"; exit 1; }
cat > "$T/mkstore.py" <<'PY'
# mkstore.py STORE CASE SENTINEL: one user "alice" whose archive is hostile
import hashlib, io, json, os, subprocess, sys, tarfile, time
store, case, sentinel = sys.argv[1:4]
os.makedirs(store, mode=0o700, exist_ok=True)
entries, man = [], []
def b2(data): return hashlib.blake2b(data).hexdigest()
def add(name, kind="file", data=b"", mode=0o644, link="", owner="alice", group="alice", pax=None, mdata=None, mmode=None, listed=True):
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uname, ti.gname, ti.mtime = mode, owner, group, 1700000000
    ti.uid = ti.gid = 1000
    t = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    ti.type = t
    if kind == "file": ti.size = len(data)
    if kind in ("symlink", "hardlink"): ti.linkname = link
    if kind == "chardev": ti.devmajor, ti.devminor = 1, 3
    if pax: ti.pax_headers = pax
    entries.append((ti, data if kind == "file" else None))
    m = {"path": name.rstrip("/") if kind == "dir" else name, "type": kind, "size": len(data) if kind == "file" else 0,
         "mode": mmode if mmode is not None else mode, "owner": owner, "group": group, "mtime": 1700000000}
    if kind == "file": m["hash"] = b2(mdata if mdata is not None else data)
    if kind in ("symlink", "hardlink"): m["link"] = link
    if listed: man.append(m)
add("home", "dir", mode=0o750)
add("home/ok.txt", data=b"harmless\n")
up = os.path.relpath(sentinel, "/")  # the sentinel as seen from "/"
if case == "dotdot":
    add("home/../../../../../../../../" + up + "/file", data=b"pwned\n")
elif case == "absolute":
    add(sentinel + "/file", data=b"pwned\n")
elif case == "symlink-then-file":
    add("home/link", "symlink", link="../../../../../../../../" + up)
    add("home/link/file", data=b"pwned\n")
elif case == "abs-symlink-then-file":
    add("home/alink", "symlink", link=sentinel)
    add("home/alink/file", data=b"pwned\n")
elif case == "planted-symlink-dir":
    add("home/d", "dir", mode=0o755)
    add("home/d/file", data=b"pwned\n")
elif case == "dir-then-symlink":
    add("home/d", "dir", mode=0o755)
    add("home/d", "symlink", link=sentinel, listed=False)
    add("home/d/file", data=b"pwned\n")
elif case == "hardlink-outside":
    add("home/hl", "hardlink", link="home/../../../../../../../../" + up + "/file")
elif case == "hardlink-absolute":
    add("home/hl2", "hardlink", link=sentinel + "/file")
elif case == "hardlink-unrestored":
    add("home/hl3", "hardlink", link="home/never-restored")
elif case == "device":
    add("home/mem", "chardev", mode=0o666)
elif case == "setuid":
    add("home/suid", data=b"#!/bin/sh\nid\n", mode=0o4755, owner="root", group="root")
    add("home/sgid", data=b"#!/bin/sh\nid\n", mode=0o2755)
    add("home/cap", data=b"\x7fELF", mode=0o755,
        pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"})
elif case == "manifest-hash":
    add("home/evil.txt", data=b"not what the manifest says\n", mdata=b"original\n")
elif case == "manifest-mode":
    add("home/mode.txt", data=b"x\n", mode=0o755, mmode=0o644)
elif case == "unlisted":
    add("home/extra.txt", data=b"x\n", listed=False)
elif case == "home-etc":
    add("home/evil", data=b"pwned\n")
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
    for ti, data in entries:
        tf.addfile(ti, io.BytesIO(data) if data is not None else None)
arch = subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(), stdout=subprocess.PIPE, check=True).stdout
open(os.path.join(store, "alice.pax.zst"), "wb").write(arch)
manifest = {"format": "inplace-profile-store", "format_version": 1, "created": int(time.time()),
            "users": [{"name": "alice", "uid": 1000, "home": "/home/alice", "archive": "alice.pax.zst",
                       "archive_bytes": len(arch), "archive_hash": b2(arch), "files": len(man), "bytes": 0, "entries": man}]}
acc = {"format_version": 1, "users": [{"name": "alice", "passwd": ["alice", "x", "1000", "1000", "", "/home/alice", "/bin/sh"],
       "shadow": ["alice", "$6$x$y", "19000", "0", "99999", "7", "", "", ""], "primary_group": "alice", "groups": []}],
       "groups": [{"name": "alice", "group": ["alice", "x", "1000", ""]}]}
machine = {"files": []}
if case == "home-etc":
    acc["users"][0]["passwd"][5] = "/etc"
# accounts: one rule each (trust.c)
U, G = acc["users"][0], acc["groups"]
def rename(n, uid, home):
    U["name"] = U["passwd"][0] = U["shadow"][0] = manifest["users"][0]["name"] = n
    U["passwd"][2], U["passwd"][5] = uid, home
    manifest["users"][0]["home"] = home
if case == "acct-root":
    rename("root", "0", "/root"); U["passwd"][3] = "0"; acc["include_root"] = True
elif case == "acct-daemon":
    rename("daemon", "1000", "/home/daemon")
elif case == "acct-lowuid":
    rename("mallory", "500", "/home/mallory")
elif case == "acct-sysexisting":
    rename("backupsvc", "1000", "/home/backupsvc")
elif case == "uid-huge":
    U["passwd"][2] = "4294967296"
elif case == "uid-neg":
    U["passwd"][2] = "-1"
elif case == "uid-nobody":
    U["passwd"][2] = "65535"
elif case == "gid-huge":
    G[0]["group"][2] = "4294967296"
elif case == "gid-neg":
    U["passwd"][3] = "-1"
elif case == "dup-user":
    manifest["users"].append(dict(manifest["users"][0]))
elif case == "dup-account":
    acc["users"].append(json.loads(json.dumps(U)))
elif case == "primary-root":
    U["primary_group"] = "root"; U["passwd"][3] = "0"
    G.append({"name": "root", "group": ["root", "x", "0", ""]})
elif case == "sup-admin":
    U["groups"] = ["sudo", "shadow", "disk", "root", "project"]
    G.append({"name": "disk", "group": ["disk", "x", "6", ""]})
    G.append({"name": "project", "group": ["project", "x", "1500", ""]})
if case == "machine-shadow":
    import base64
    machine["files"].append({"kind": "hostname", "path": "etc/shadow", "mode": 420, "owner": "root", "group": "root",
                             "data": base64.b64encode(b"root::0:0:pwned:::\n").decode()})
complete = {"format": "inplace-profile-store"}
for name, doc in (("manifest.json", manifest), ("accounts.json", acc), ("machine.json", machine)):
    s = json.dumps(doc).encode()
    open(os.path.join(store, name), "wb").write(s)
    complete[name] = b2(s)
open(os.path.join(store, "COMPLETE"), "w").write(json.dumps(complete))
for f in os.listdir(store): os.chmod(os.path.join(store, f), 0o600)
PY

sentinel_state() { (cd "$1" && find . -printf '%p %y %m %s\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

run_case() { # case expected-exit [extra restore args]
	local c=$1 want=$2; shift 2
	local d=$T/$c
	mkdir -p "$d/sentinel"
	echo "precious" > "$d/sentinel/file"
	cp -a "$T/new" "$d/root"
	[ "$c" = planted-symlink-dir ] && mkdir -p "$d/root/home/alice" && ln -s "$d/sentinel" "$d/root/home/alice/d"
	[ "$c" = acct-sysexisting ] && echo "backupsvc:x:998:998::/home/backupsvc:/usr/sbin/nologin" >> "$d/root/etc/passwd"
	[ "$c" = existing-home-outside ] && echo "alice:x:1000:1000::/etc:/bin/sh" >> "$d/root/etc/passwd"
	cp -a "$d/root/etc" "$d/etc.before"
	sentinel_state "$d/sentinel" > "$d/before"
	python3 "$T/mkstore.py" "$d/store" "$c" "$d/sentinel" || { fail "$c: build store"; return; }
	must_fail "$want" "$c: restore exits $want" "$I" profile restore --store "$d/store" --root "$d/root" "$@"
	sentinel_state "$d/sentinel" > "$d/after"
	check "$c: sentinel beside the root unchanged" cmp -s "$d/before" "$d/after"
	check "$c: nothing named pwned anywhere in the test dir" sh -c '! grep -rqs pwned "$1" --exclude-dir=store --exclude=mkstore.py' _ "$d"
	# a refused store is refused before anything is written; only a new
	# root that is itself in the way (a planted symlink) is met later
	if [ "$want" != 0 ] && [ "$c" != planted-symlink-dir ]; then
		check "$c: passwd, shadow, group, gshadow byte-equal" sh -c 'for f in passwd shadow group gshadow; do cmp -s "$1/etc.before/$f" "$1/root/etc/$f" || exit 1; done' _ "$d"
		check "$c: no home created" sh -c '[ -z "$(ls -A "$1/root/home" | grep -v "^dave$")" ]' _ "$d"
	fi
}

run_case dotdot 1
run_case absolute 1
run_case symlink-then-file 1
check "symlink-then-file: refused before the symlink was made" test ! -e "$T/symlink-then-file/root/home/alice/link"
run_case abs-symlink-then-file 1
run_case planted-symlink-dir 1
run_case dir-then-symlink 1
run_case hardlink-outside 1
run_case hardlink-absolute 1
run_case hardlink-unrestored 1
run_case device 1
check "device: no device node created" sh -c '[ -z "$(find "$1" -type c -o -type b)" ]' _ "$T/device/root"
run_case setuid 0
check "setuid: bit dropped from an untrusted store" test "$(stat -c %a "$T/setuid/root/home/alice/suid")" = 755
check "setuid: setgid dropped too" test "$(stat -c %a "$T/setuid/root/home/alice/sgid")" = 755
check "setuid: capability dropped" sh -c '! getfattr -n security.capability "$1" >/dev/null 2>&1' _ "$T/setuid/root/home/alice/cap"
run_case manifest-hash 1
check "manifest-hash: the disagreeing file never landed" test ! -e "$T/manifest-hash/root/home/alice/evil.txt"
check "manifest-hash: no temporary left" sh -c '[ -z "$(find "$1" -name "*.inplace-tmp")" ]' _ "$T/manifest-hash/root"
run_case manifest-mode 1
run_case unlisted 1
run_case home-etc 1
check "home-etc: nothing written into the new root's /etc" test ! -e "$T/home-etc/root/etc/evil"
run_case machine-shadow 1
check "machine-shadow: /etc/shadow not replaced" sh -c '! grep -q pwned "$1" && grep -q "^root:.*:19500:" "$1"' _ "$T/machine-shadow/root/etc/shadow"

# accounts.json: one case per rule; every refusal leaves the account files
# byte-equal (checked in run_case)
run_case acct-root 1
check "acct-root: /root untouched" test ! -e "$T/acct-root/root/root/ok.txt"
run_case acct-daemon 1
run_case acct-lowuid 1
run_case acct-sysexisting 1
run_case uid-huge 1
run_case uid-neg 1
run_case uid-nobody 1
run_case gid-huge 1
run_case gid-neg 1
run_case dup-user 1
run_case dup-account 1
run_case existing-home-outside 1
run_case primary-root 0
check "primary-root: alice's primary group is not root without --trusted-store" \
	sh -c 'grep -q "^alice:x:1000:100:" "$1/etc/passwd"' _ "$T/primary-root/root"
withheld() { # root case-dir extra-args: the withheld list as user:group:kind
	"$I" profile restore --store "$1/store" --root "$1/root" --dry-run --json "${@:2}" |
		python3 -c 'import json,sys; print(" ".join(sorted("%s:%s:%s" % (w["user"], w["group"], w["kind"]) for w in json.load(sys.stdin)["withheld"])))'
}
check "primary-root: reported" test "$(withheld "$T/primary-root")" = "alice:root:primary"
run_case sup-admin 0
check "sup-admin: no admin membership without --trusted-store" \
	sh -c '! grep -E "^(sudo|shadow|disk|root):.*alice" "$1/etc/group" && grep -q "^project:x:1500:alice$" "$1/etc/group"' _ "$T/sup-admin/root"
check "sup-admin: each withheld membership reported" \
	test "$(withheld "$T/sup-admin")" = "alice:disk:supplementary alice:root:supplementary alice:shadow:supplementary alice:sudo:supplementary"
ok "sup-admin: restored with --trusted-store" "$I" profile restore --store "$T/sup-admin/store" --root "$T/sup-admin/root" --trusted-store
check "sup-admin: --trusted-store brings sudo back" grep -q "^sudo:x:27:alice$" "$T/sup-admin/root/etc/group"
check "sup-admin: nothing withheld with --trusted-store" test -z "$(withheld "$T/sup-admin" --trusted-store)"

# a FIFO in place of a store file must be refused, never block open()
python3 "$T/mkstore.py" "$T/fifo-base" harmless "$T/none"
for f in manifest.json accounts.json alice.pax.zst; do
	rm -rf "$T/fifo" "$T/fifo-root"; cp -a "$T/fifo-base" "$T/fifo"; cp -a "$T/new" "$T/fifo-root"
	rm "$T/fifo/$f"; mkfifo "$T/fifo/$f"
	must_fail 1 "a FIFO as $f: verify refuses it" timeout 20 "$I" profile verify --store "$T/fifo"
	must_fail 1 "a FIFO as $f: restore refuses it" timeout 20 "$I" profile restore --store "$T/fifo" --root "$T/fifo-root"
done
rm -rf "$T/fifo"; cp -a "$T/fifo-base" "$T/fifo"; rm "$T/fifo/COMPLETE"; mkfifo "$T/fifo/COMPLETE"
must_fail 2 "a FIFO as COMPLETE: verify says the marker is damaged" timeout 20 "$I" profile verify --store "$T/fifo"
check "a FIFO as COMPLETE: list says the store is not complete" sh -c 'timeout 20 "$1" profile list --store "$2" --json | python3 -c "import json,sys; assert json.load(sys.stdin)[\"complete\"] is False"' _ "$I" "$T/fifo"

# a manifest whose users is not a list (found by fuzz_manifest): a damaged
# store, refused in one line, never an abort
rm -rf "$T/nolist"; cp -a "$T/fifo-base" "$T/nolist"
python3 -c 'import json,sys; p=sys.argv[1]; d=json.load(open(p)); d["users"]=24; json.dump(d,open(p,"w"))' "$T/nolist/manifest.json"
must_fail 2 "manifest users not a list: list refuses it" timeout 20 "$I" profile list --store "$T/nolist"
check "manifest users not a list: one line naming the manifest" sh -c '"$1" profile list --store "$2" 2>&1 | grep -c . | grep -qx 1 && "$1" profile list --store "$2" 2>&1 | grep -q "manifest.json is damaged"' _ "$I" "$T/nolist"
