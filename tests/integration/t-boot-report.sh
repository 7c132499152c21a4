#!/bin/bash
# t-boot-report.sh — [report] url: every event of status.log reaches a real
# HTTP server on 127.0.0.1 exactly once and in order, including the events
# logged while the server was down (it is started later) and while it
# answered 500; with spool = no, events the server missed are dropped; an
# https server with a CA of its own is trusted only through ca_cert.
. "$TESTS_DIR/lib.sh"

cd "$T" || exit 1
mkdir -p tree/etc && echo new > tree/etc/hostname
fx_disk disk.img 64M 'label: gpt
start=1MiB, size=40MiB, type=linux' && fx_mkfs disk.img 1 ext4 tree ROOT &&
"$INPLACE" image build -q --from-dir tree --size 16M -o new.img >/dev/null ||
	{ fail "fixture" "disk or image"; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The server: appends each POST body as one line to received.jsonl; answers
# 500 while the file "refuse" exists.  It stops by itself after 5 minutes.
cat > server.py <<'PY'
import http.server, os, ssl, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if os.path.exists("refuse"):
            self.send_response(500); self.end_headers(); return
        if self.headers.get("Content-Type") != "application/json":
            self.send_response(415); self.end_headers(); return
        with open(out, "ab") as f:
            f.write(body.rstrip(b"\n") + b"\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", port), H)
if len(sys.argv) > 3:  # https with the given certificate and key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
PY
# start_server [OUT PORT CERT KEY]
start_server() {
	local port=${2:-$port}
	timeout 300 python3 server.py "$port" "${1:-received.jsonl}" ${3:+"$3" "$4"} 2>/dev/null & track_pid $!
	for _ in $(seq 50); do
		python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

cat > job.ini <<EOF
[job]
image = $T/new.img
require_signature = no
disk = $T/disk.img
system_partition = 1
store_size = 8M
[boot]
method = none
[notify]
countdown = 0
[report]
url = http://127.0.0.1:$port/events
EOF
log=$INPLACE_STATE_DIR/status.log
# every event of the log received once, in the same order, and nothing else
all_received() { cmp -s "$log" received.jsonl; }
seqs_ok() { [ "$(jq -s '[.[].seq] == [range(1; length + 1)]' received.jsonl)" = true ]; }

ok "server down: run goes on to where the first reboot comes" "$INPLACE" run job.ini
check "server down: events kept in status.log" [ "$(wc -l < "$log")" -ge 5 ]
check "server down: nothing received" [ ! -s received.jsonl ]
"$INPLACE" run job.ini >/dev/null 2>&1
n_down=$(wc -l < "$log")

start_server || { fail "server" "did not start"; exit 1; }
ok "server up: run again" "$INPLACE" run job.ini
check "every event received once, in order, spooled ones first" all_received
check "sequence numbers 1..N without gaps" seqs_ok
check "the spooled events were among them" [ "$(wc -l < received.jsonl)" -gt "$n_down" ]

touch refuse
"$INPLACE" run job.ini >/dev/null 2>&1
check "server answers 500: events stay spooled" [ "$(wc -l < received.jsonl)" -lt "$(wc -l < "$log")" ]
rm refuse
"$INPLACE" run job.ini >/dev/null 2>&1
check "after the 500s: every event once, in order" all_received
check "… sequence numbers still 1..N" seqs_ok

# status reads the same story, and sends nothing
before=$(wc -l < received.jsonl)
check "status: the last event is the last received" \
	[ "$("$INPLACE" status --json | jq -c '.events[-1]')" = "$(tail -1 received.jsonl | jq -c .)" ]
check "status sends nothing" [ "$(wc -l < received.jsonl)" -eq "$before" ]

# spool = no: what the server misses is dropped, the rest still arrives once
sed -i 's|^url = .*|&\nspool = no|' job.ini
rm -rf "$INPLACE_STATE_DIR" received.jsonl
touch refuse
"$INPLACE" run job.ini >/dev/null 2>&1
rm refuse
"$INPLACE" run job.ini >/dev/null 2>&1
got=$(wc -l < received.jsonl 2>/dev/null || echo 0)
check "spool = no: missed events dropped, later ones sent once" \
	bash -c "[ $got -gt 0 ] && [ $got -lt \$(wc -l < '$log') ] && [ \"\$(tail -n $got '$log')\" = \"\$(cat received.jsonl)\" ]"

# https: a CA of our own; without ca_cert the server is not trusted and the
# events wait, with it they all arrive, once each, in order
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
	-days 2 -subj "/CN=inplace test CA" >/dev/null 2>&1 &&
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr \
	-subj "/CN=127.0.0.1" >/dev/null 2>&1 &&
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 \
	-extfile <(printf 'subjectAltName=IP:127.0.0.1\n') >/dev/null 2>&1 ||
	{ fail "fixture" "openssl could not make the test certificates"; exit 1; }
sport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_server tls.jsonl "$sport" srv.pem srv.key || { fail "https server" "did not start"; exit 1; }
rm -rf "$INPLACE_STATE_DIR"
sed -i -e "s|^url = .*|url = https://127.0.0.1:$sport/events|" -e '/^spool = no$/d' job.ini
"$INPLACE" run job.ini >/dev/null 2>&1
check "https, CA not trusted: nothing received" [ ! -s tls.jsonl ]
sed -i "s|^url = .*|&\nca_cert = $T/ca.pem|" job.ini
"$INPLACE" run job.ini >/dev/null 2>&1
check "https with ca_cert: every event once, in order, the untrusted run's too" cmp -s "$log" tls.jsonl
check "… more than one run's worth" [ "$(jq -s '[.[] | select(.message | startswith("run"))] | length' tls.jsonl)" -eq 2 ]
