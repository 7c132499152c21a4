#!/bin/bash
# t-image-http-limits — a hostile or careless HTTP source cannot fill the
# disk: a body that never ends is cut at the size HEAD announced, a source
# announcing more than an image of the target partition can be is refused
# before any GET, and a download that would leave the state directory's
# filesystem without its margin is refused before any GET.  The same for
# the download into the store that `run` makes (its stage-image step):
# the endless body is cut, a source announcing more than an image of the
# system partition can be is refused before any GET, and the store does
# not fill.  The server is a python3 http.server on 127.0.0.1 that counts
# every byte it sends.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
require_tool python3 || exit 1

fx_disk dst.img 64M 'label: gpt
size=48M, type=linux'
fx_mkfs dst.img 1 ext4 || { fail "fixture" "mke2fs failed"; exit 1; }
sha256sum dst.img > dst.sum
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# HEAD: the size the path announces; GET: an endless stream (Range ignored,
# no Content-Length), stopped by the server only after 256 MiB in all, so
# that a broken client cannot fill the machine.  Every GET and the bytes it
# got are appended to served.log.
cat > server.py <<'PY'
import http.server, sys
port = int(sys.argv[1])
sizes = {"/endless/os.img": 2 << 20, "/huge/os.img": 1 << 40, "/big/os.img": 40 << 20,
         "/stage-endless/os.img": 2 << 20, "/stage-huge/os.img": 160 << 20}
total = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        if self.path not in sizes:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Length", str(sizes[self.path]))
        self.end_headers()
    def do_GET(self):
        global total
        self.send_response(200); self.end_headers()
        chunk, sent = b"\xa5" * 65536, 0
        try:
            while total < 256 << 20:
                self.wfile.write(chunk); sent += len(chunk); total += len(chunk)
        except OSError:
            pass
        with open("served.log", "a") as f:
            f.write("%s %d\n" % (self.path, sent))
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
timeout 300 python3 server.py "$port" 2>/dev/null & track_pid $!
for _ in $(seq 50); do
	python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && break
	sleep 0.1
done
: > served.log
url=http://127.0.0.1:$port

served() { awk -v p="$1" '$1 == p { s += $2 } END { print s + 0 }' served.log; }
largest_part() { { echo 0; find "$1" -type f -printf '%s\n' 2>/dev/null; } | sort -n | tail -1; }

must_fail 1 "an endless body is stopped, exit 1" "$INPLACE" image deploy -q "$url/endless/os.img" dst.img 1
check "one line names the size announced" sh -c '[ "$("$1" image deploy -q "$2" dst.img 1 2>&1 | wc -l)" -eq 1 ] &&
	"$1" image deploy -q "$2" dst.img 1 2>&1 | grep -q "more than the 2097152 bytes it announced"' _ "$INPLACE" "$url/endless/os.img"
sleep 0.5   # the server logs a request once its socket is closed
check "no stored file grew past the announced 2 MiB ($(largest_part state) bytes)" \
	[ "$(largest_part state)" -le $((2 << 20)) ]
check "the server could send little more than it announced ($(served /endless/os.img) bytes in 3 runs)" \
	[ "$(served /endless/os.img)" -lt $((64 << 20)) ]
check "the disk is unchanged" sha256sum -c --quiet dst.sum

must_fail 1 "a source announcing 1 TiB for a 48 MiB partition is refused" \
	"$INPLACE" image deploy -q "$url/huge/os.img" dst.img 1
check "... before any GET" [ -z "$(grep '^/huge/' served.log)" ]

# the state directory on a 64 MiB filesystem: 40 MiB and the 64 MiB margin
# do not fit
mkdir small
if mount -t tmpfs -o size=64m tmpfs small; then
	track_mount "$T/small"
	must_fail 1 "a download the state filesystem has no room for is refused" \
		env INPLACE_STATE_DIR="$T/small" "$INPLACE" image deploy -q "$url/big/os.img" dst.img 1
	check "... before any GET" [ -z "$(grep '^/big/' served.log)" ]
	check "... and nothing is left in it" [ -z "$(find small -type f)" ]
else
	fail "tmpfs" "cannot mount a tmpfs for the small state directory"
fi
check "the disk is still unchanged" sha256sum -c --quiet dst.sum

# ---- run's stage-image step: the image goes into the store (store = DIR)
# A root with accounts only, on partition 1; `run` plays preflight, the
# first `resume` the prepare phase, which downloads the image.
mkdir -p root/etc root/root root/home
printf 'root:x:0:0:root:/root:/bin/sh\n' > root/etc/passwd
printf 'root:x:0:\n' > root/etc/group
printf 'root:*:19000:0:99999:7:::\n' > root/etc/shadow
printf 'root:*::\n' > root/etc/gshadow
fx_disk sys.img 64M 'label: gpt
size=48M, type=linux'
fx_mkfs sys.img 1 ext4 root || { fail "fixture" "mke2fs -d failed"; exit 1; }
# stage_run NAME: run and resume a job for $url/NAME/os.img with the store
# in store-NAME and the state in state-NAME; the resume's exit status
stage_run() {
	local n=$1
	mkdir -p "store-$n"
	fx_job "job-$n.ini" "$url/$n/os.img" "$T/sys.img" "store = $T/store-$n"
	INPLACE_STATE_DIR=$T/state-$n INPLACE_RUN_DIR=$T/run-$n "$INPLACE" run -q "job-$n.ini" >/dev/null 2>&1 || return 99
	INPLACE_STATE_DIR=$T/state-$n INPLACE_RUN_DIR=$T/run-$n "$INPLACE" resume -q --disk "$T/sys.img" 2>"err-$n"
}
stage_run stage-endless; r=$?
check "stage-image: an endless body is stopped, exit 1 (got $r: $(cat err-stage-endless))" [ "$r" -eq 1 ]
sleep 0.5
check "stage-image: no file in the store grew past the announced 2 MiB ($(largest_part store-stage-endless) bytes)" \
	[ "$(largest_part store-stage-endless)" -le $((2 << 20)) ]
check "stage-image: the server could send little more than it announced ($(served /stage-endless/os.img) bytes)" \
	[ "$(served /stage-endless/os.img)" -lt $((64 << 20)) ]
stage_run stage-huge; r=$?
check "stage-image: 160 MiB announced for a 48 MiB system partition is refused, exit 1 (got $r: $(cat err-stage-huge))" \
	[ "$r" -eq 1 ]
sleep 0.5
check "... before any GET ($(served /stage-huge/os.img) bytes sent)" [ -z "$(grep '^/stage-huge/' served.log)" ]
check "... and the store did not fill ($(largest_part store-stage-huge) bytes)" [ "$(largest_part store-stage-huge)" -lt $((1 << 20)) ]
