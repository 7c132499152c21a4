#!/bin/sh
# run.sh — build every libFuzzer target given (tests/fuzz/fuzz_*.c) with
# clang, ASan and libFuzzer against the project's libraries, and run each
# from its seed corpus for FUZZ_RUNS executions (default 10^6, what issue
# 11 asks of every target) or FUZZ_TIME seconds (default 1200), whichever
# comes first; prints the executions and seconds per target, says which
# stopped at the time cap, and fails on the first finding (crash, leak,
# hang of more than FUZZ_TIMEOUT seconds, default 30).  Not part of
# `make check`.  Usage: sh tests/fuzz/run.sh tests/fuzz/fuzz_*.c
set -eu
[ $# -gt 0 ] || { echo "fuzz: no targets"; exit 0; }
command -v clang >/dev/null || { echo "fuzz: clang is missing (apt-get install clang)"; exit 1; }
B=build-fuzz
RUNS=${FUZZ_RUNS:-1000000}
PKGS="fdisk blkid smartcols ext2fs libntfs-3g libarchive libzstd libcurl inih json-c libsodium libacl libxxhash libelf libkmod"
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer"
# The libraries, instrumented (clang may warn where gcc does not: not fatal here).
make --no-print-directory BUILD=$B CC=clang OPT=-O1 SAN="$SAN" EXTRA_CFLAGS="-Wno-error -Wno-unknown-warning-option" \
	$B/libbootstage.a $B/libimager.a $B/libmigrate.a $B/libpartctl.a $B/libcommon.a >/dev/null 2>&1 || { echo "fuzz: building the libraries with clang failed"; exit 1; }
LIBS="$B/libbootstage.a $B/libimager.a $B/libmigrate.a $B/libpartctl.a $B/libcommon.a"
CFLAGS="-std=c17 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -O1 -g -I. $(pkg-config --cflags $PKGS)"
LDLIBS="$(pkg-config --libs $PKGS) -lcom_err -pthread"
# A smaller quarantine than ASan's 256 MiB: a use after free is still
# caught among the recent frees, and targets that allocate large buffers
# per input run twice as fast.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=16}"
mkdir -p $B/fuzz
# every target builds before any runs: a broken one is known at once
for src in "$@"; do
	name=$(basename "$src" .c)
	clang $CFLAGS -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -o "$B/fuzz/$name" "$src" $LIBS $LDLIBS
done
short=""
for src in "$@"; do
	name=$(basename "$src" .c)
	bin=$B/fuzz/$name
	corpus=$B/fuzz/$name.corpus
	mkdir -p "$corpus"
	# seeds checked in next to the target, if any
	[ -d "tests/fuzz/$name.seeds" ] && cp "tests/fuzz/$name.seeds/"* "$corpus/" 2>/dev/null || true
	"$bin" -runs="$RUNS" -max_total_time="${FUZZ_TIME:-1200}" -timeout="${FUZZ_TIMEOUT:-30}" \
		-rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 "$corpus" 2>"$B/fuzz/$name.log" ||
		{ tail -40 "$B/fuzz/$name.log"; echo "fuzz: $name found a problem: $B/fuzz/$name.log, the input in ./crash-*, leak-* or timeout-*"; exit 1; }
	n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$B/fuzz/$name.log")
	s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$B/fuzz/$name.log")
	if [ "${n:-0}" -ge "$RUNS" ]; then
		printf '  FUZZ    %-22s %8s runs in %5ss\n' "$name" "$n" "$s"
	else
		printf '  FUZZ    %-22s %8s runs in %5ss (stopped at the time cap)\n' "$name" "$n" "$s"
		short="$short $name"
	fi
done
[ -z "$short" ] || echo "fuzz: no finding, but fewer than $RUNS runs:$short (raise FUZZ_TIME)"
[ -n "$short" ] || echo "fuzz: every target ran $RUNS times without a finding"
