#!/bin/bash
# t-profile-estimate — the store size `profile estimate` gives is one save
# really fits in: a home of 100 MiB of random data (incompressible), a home
# of text (compressible), a sparse file (holes are not stored).  The store
# is then saved into a tmpfs of exactly the estimated size.
. "$(dirname "$0")/../lib.sh"
FX=$TESTS_DIR/fixtures/profile-root.sh
I=$INPLACE

bash "$FX" "$T/old" "$T/new" small >/dev/null || { fail "fixture" "profile-root.sh failed"; exit 1; }
head -c 100M /dev/urandom > "$T/old/home/alice/random-100M.bin"
python3 - "$T/old/home/bob/notes.txt" <<'PY'
import random, sys
random.seed(7)
words = "the of and to in is was for on that with as by at from his her it an are this be which or".split()
words += ["w%d" % i for i in range(3000)]
with open(sys.argv[1], "w") as f:
    for _ in range(300000):
        f.write(" ".join(random.choice(words) for _ in range(9)) + "\n")
PY
truncate -s 2G "$T/old/home/carol/data/huge-sparse.img"
chown -R 1000:1000 "$T/old/home/alice"; chown -R 1001:1001 "$T/old/home/bob"; chown 1002:1002 "$T/old/home/carol/data/huge-sparse.img"

ok "estimate" sh -c '"$1" profile estimate --root "$2" --json > "$3"' _ "$I" "$T/old" "$T/est.json"
est=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["estimated_store_bytes"])' "$T/est.json")
check "the estimate says how it was made" python3 -c '
import json,sys; d=json.load(open(sys.argv[1]))
assert d["estimate"]["method"] == "sampled-zstd" and d["estimate"]["sampled_bytes"] > 0, d["estimate"]
for u in d["users"]:
    assert u["bytes"] > 0 and u["files"] > 0 and u["estimated_store_bytes"] > 0, u
assert d["total"]["estimated_store_bytes"] == d["estimated_store_bytes"]' "$T/est.json"

ok "save" "$I" profile save --root "$T/old" --store "$T/store"
check "estimate >= the store save wrote" python3 -c '
import json, os, sys
d = json.load(open(sys.argv[1])); store = sys.argv[2]
used = sum(os.path.getsize(os.path.join(store, f)) for f in os.listdir(store))
assert d["estimated_store_bytes"] >= used, (d["estimated_store_bytes"], used)
arch = {u: os.path.getsize(os.path.join(store, u + ".pax.zst")) for u in ("alice", "bob", "carol")}
est = {u["name"]: u["estimated_archive_bytes"] for u in d["users"]}
# random data: never under; text: within a sane factor either way
assert est["alice"] >= arch["alice"] * 0.99, (est, arch)
assert arch["bob"] * 0.7 <= est["bob"] <= arch["bob"] * 3, (est, arch)
# the 2 GiB hole is not data
assert est["carol"] < 16 << 20, est' "$T/est.json" "$T/store"

# save into exactly the estimated room
mkdir -p "$T/room"
if ! [ "$est" -gt 0 ] 2>/dev/null; then
	fail "save into the estimated room" "no estimated_store_bytes"
elif mount -t tmpfs -o size="$est",mode=0700 inplace-est "$T/room"; then
	track_mount "$T/room"
	ok "save into a tmpfs of exactly the estimated size" "$I" profile save --root "$T/old" --store "$T/room/store"
	ok "that store verifies" "$I" profile verify --store "$T/room/store"
else
	skip "save into the estimated room" "cannot mount a tmpfs"
fi
