#!/bin/bash
# t-image-http — deploy from a real web server (nginx on 127.0.0.1, started
# here): a first mirror that is down, a connection cut mid-transfer (nginx
# killed and restarted), a mirror serving a damaged copy, https with a CA of
# the test's own (trusted only through --ca-cert; a wrong host name is
# refused); every result has the source's files.
. "$TESTS_DIR/lib.sh"
cd "$T" || exit 1
export INPLACE_STATE_DIR=$T/state
require_tool nginx curl || exit 1

mkdir -p tree www/bad www/good
fx_tree tree/mix 2 >/dev/null 2>&1
head -c $((12 << 20)) /dev/urandom > tree/big.bin
fx_disk src.img 80M 'label: gpt
size=48M, type=linux'
fx_mkfs src.img 1 ext4 tree || { fail "fixture" "mke2fs failed"; exit 1; }
fx_disk dst.img 80M 'label: gpt
size=48M, type=linux'
minisign -G -W -f -p k.pub -s k.key >/dev/null 2>&1 || { skip "all" "minisign -G failed"; exit 0; }
"$INPLACE" image capture -q src.img 1 -o www/good/os.img --sign k.key >/dev/null || { fail "capture" "capture failed"; exit 1; }
fx_hashes src.img 1 > want

# a damaged copy: one byte of frame 2 flipped, same size
cp www/good/os.img www/bad/os.img
off=$(perl -e 'open F, "<", $ARGV[0] or die; binmode F; my $sz = -s F;
	seek F, $sz - 9, 0; read F, my $ft, 9; my $n = unpack("V", $ft); seek F, $sz - 9 - $n * 8, 0;
	my $o = 0; for my $i (0 .. 1) { read F, my $e, 8; $o += unpack("V", $e) } print $o + 100' www/bad/os.img)
printf 'Z' | dd of=www/bad/os.img bs=1 seek="$off" conv=notrunc status=none

port=$((20000 + RANDOM % 20000)) down=$((port + 1)) sport=$((port + 2))
# https: a CA of our own and a certificate for 127.0.0.1 only
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
	-days 2 -subj "/CN=inplace test CA" >/dev/null 2>&1 &&
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr \
	-subj "/CN=127.0.0.1" >/dev/null 2>&1 &&
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 \
	-extfile <(printf 'subjectAltName=IP:127.0.0.1\n') >/dev/null 2>&1 ||
	{ fail "fixture" "openssl could not make the test certificates"; exit 1; }
start_nginx() {
	mkdir -p tmp logs
	cat > nginx.conf <<EOF
daemon off;
master_process off;
pid $T/nginx.pid;
error_log $T/logs/error.log;
events { worker_connections 64; }
http {
	access_log $T/logs/access.log;
	client_body_temp_path $T/tmp; proxy_temp_path $T/tmp; fastcgi_temp_path $T/tmp;
	uwsgi_temp_path $T/tmp; scgi_temp_path $T/tmp;
	server {
		listen 127.0.0.1:$port;
		root $T/www;
		limit_rate ${1:-0};
	}
	server {
		listen 127.0.0.1:$sport ssl;
		ssl_certificate $T/srv.pem;
		ssl_certificate_key $T/srv.key;
		root $T/www;
	}
}
EOF
	# one process (no master/worker pair), so that kill -9 really cuts
	nginx -p "$T" -c "$T/nginx.conf" >>logs/nginx.out 2>&1 &
	NGINX=$!
	track_pid "$NGINX"
	for _ in $(seq 50); do
		curl -s -o /dev/null "http://127.0.0.1:$port/good/os.img.minisig" && return 0
		sleep 0.1
	done
	return 1
}
start_nginx || { fail "all" "nginx did not start: $(tail -n 2 logs/nginx.out | tr "\n" " ")"; exit 1; }
url=http://127.0.0.1:$port/good/os.img

ok "deploy from a URL after a first mirror that is down" \
	"$INPLACE" image deploy -q --key k.pub "http://127.0.0.1:$down/os.img" dst.img 1 --mirror "$url"
check "files equal" cmp -s want <(fx_hashes dst.img 1)
check "the downloaded copy is removed after the deploy" [ -z "$(ls -A state/images 2>/dev/null)" ]

# https: refused while the certificate is not trusted, nothing written;
# trusted through --ca-cert; a certificate for another name is refused
surl=https://127.0.0.1:$sport/good/os.img
fx_mkfs dst.img 1 ext4
sha256sum dst.img > dst.sum
must_fail 1 "https with an untrusted certificate is refused" "$INPLACE" image deploy -q "$surl" dst.img 1
check "the message names --ca-cert" sh -c '"$1" image deploy -q "$2" dst.img 1 2>&1 | grep -q -- "not trusted.*--ca-cert"' _ "$INPLACE" "$surl"
check "nothing was written" sha256sum -c --quiet dst.sum
must_fail 2 "--ca-cert of a missing file" "$INPLACE" image deploy -q --ca-cert nonexistent.pem "$surl" dst.img 1
ok "https deploy with --ca-cert, signature checked" "$INPLACE" image deploy -q --ca-cert ca.pem --key k.pub "$surl" dst.img 1
check "files equal after the https deploy" cmp -s want <(fx_hashes dst.img 1)
fx_mkfs dst.img 1 ext4
sha256sum dst.img > dst.sum
must_fail 1 "a certificate for another host name is refused" \
	"$INPLACE" image deploy -q --ca-cert ca.pem "https://localhost:$sport/good/os.img" dst.img 1
check "nothing was written after the name mismatch" sha256sum -c --quiet dst.sum
check "the refused downloads left no .part behind" [ -z "$(ls state/images/*.part 2>/dev/null)" ]

fx_mkfs dst.img 1 ext4
ok "a mirror serving a damaged copy: the bad bytes are fetched again from the next" \
	"$INPLACE" image deploy -q "http://127.0.0.1:$port/bad/os.img" dst.img 1 --mirror "$url" --max-rate 100M
check "files equal after the damaged mirror" cmp -s want <(fx_hashes dst.img 1)

# a connection cut mid-transfer: slow server, killed and restarted
kill "$NGINX"; wait "$NGINX" 2>/dev/null
start_nginx 3m || { fail "restart nginx" "did not start"; exit 1; }
fx_mkfs dst.img 1 ext4
: > logs/access.log
"$INPLACE" image deploy -q --key k.pub "$url" dst.img 1 > deploy.out 2>&1 &
dep=$!
track_pid "$dep"
for _ in $(seq 100); do
	part=$(ls state/images/*.part 2>/dev/null | head -1)
	[ -n "$part" ] && [ "$(stat -c %s "$part")" -gt $((2 << 20)) ] && break
	sleep 0.05
done
kill -9 "$NGINX"; wait "$NGINX" 2>/dev/null
sleep 1
start_nginx 3m || { fail "restart nginx" "did not start"; exit 1; }
wait "$dep"; rc=$?
check "deploy survives a connection cut mid-transfer (exit $rc: $(tr '\n' ' ' < deploy.out))" [ "$rc" -eq 0 ]
check "the download resumed with a Range request (206)" grep -q '" 206 ' logs/access.log
check "files equal after the cut" cmp -s want <(fx_hashes dst.img 1)
ok "fsck clean" fx_fsck dst.img 1

# kill -9 of inplace itself during the download, then run again
fx_mkfs dst.img 1 ext4
: > logs/access.log
"$INPLACE" image deploy -q "$url" dst.img 1 >/dev/null 2>&1 &
dep=$!
track_pid "$dep"
for _ in $(seq 100); do
	part=$(ls state/images/*.part 2>/dev/null | head -1)
	[ -n "$part" ] && [ "$(stat -c %s "$part")" -gt $((2 << 20)) ] && break
	sleep 0.05
done
kill -9 "$dep"; wait "$dep" 2>/dev/null
ok "deploy again after kill -9 during the download" "$INPLACE" image deploy -q "$url" dst.img 1
check "the second run resumed the download (206)" grep -q '" 206 ' logs/access.log
check "files equal after the kill" cmp -s want <(fx_hashes dst.img 1)
must_fail 1 "no source reachable: one line, exit 1" "$INPLACE" image deploy -q "http://127.0.0.1:$down/x.img" dst.img 1
