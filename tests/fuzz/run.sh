#!/bin/sh
# run.sh — build every libFuzzer target given (tests/fuzz/fuzz_*.c) with
# clang, ASan and libFuzzer against the project's libraries, and run each
# for a bounded time (FUZZ_TIME seconds, default 60) from its seed corpus.
# Not part of `make check`.  Usage: sh tests/fuzz/run.sh tests/fuzz/fuzz_*.c
set -eu
[ $# -gt 0 ] || { echo "fuzz: no targets"; exit 0; }
command -v clang >/dev/null || { echo "fuzz: clang is missing (apt-get install clang)"; exit 1; }
B=build-fuzz
PKGS="fdisk blkid smartcols ext2fs libntfs-3g libarchive libzstd libcurl inih json-c libsodium libacl libxxhash libelf libkmod"
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer"
# The libraries, instrumented (clang may warn where gcc does not: not fatal here).
make --no-print-directory BUILD=$B CC=clang OPT=-O1 SAN="$SAN" EXTRA_CFLAGS="-Wno-error -Wno-unknown-warning-option" \
	$B/libbootstage.a $B/libimager.a $B/libmigrate.a $B/libpartctl.a $B/libcommon.a >/dev/null 2>&1 || { echo "fuzz: building the libraries with clang failed"; exit 1; }
LIBS="$B/libbootstage.a $B/libimager.a $B/libmigrate.a $B/libpartctl.a $B/libcommon.a"
CFLAGS="-std=c17 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -O1 -g -I. $(pkg-config --cflags $PKGS)"
LDLIBS="$(pkg-config --libs $PKGS) -lcom_err -pthread"
for src in "$@"; do
	name=$(basename "$src" .c)
	bin=$B/fuzz/$name
	corpus=$B/fuzz/$name.corpus
	mkdir -p "$corpus"
	# seeds checked in next to the target, if any
	[ -d "tests/fuzz/$name.seeds" ] && cp "tests/fuzz/$name.seeds/"* "$corpus/" 2>/dev/null || true
	echo "  FUZZ    $name (${FUZZ_TIME:-60}s)"
	clang $CFLAGS -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -o "$bin" "$src" $LIBS $LDLIBS
	"$bin" -max_total_time="${FUZZ_TIME:-60}" -rss_limit_mb=2048 -max_len=262144 \
		-print_final_stats=0 "$corpus" 2>"$B/fuzz/$name.log" || { tail -40 "$B/fuzz/$name.log"; exit 1; }
	grep -E '^(#[0-9]+ *DONE|Done)' "$B/fuzz/$name.log" | tail -1 || true
done
echo "fuzz: every target ran without a finding"
