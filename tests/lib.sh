# lib.sh — helpers for integration tests (sourced).  Every loop device,
# mount and process a test starts is registered here and released by the
# EXIT trap, on failure too: a leaked loop device breaks the next run.
#
#   ok "name" cmd...          run cmd; PASS if it exits 0
#   must_fail N "name" cmd... PASS if cmd exits with status N
#   check "name" test...      same as ok, for [ ] style assertions
#   skip "name" "why"         a visible skip
#   pass "name" / fail "name" "why"
#   scratch                   $T, a fresh directory removed at exit
#   track_loop DEV, track_mount DIR, track_pid PID
set -u
: "${INPLACE:?}" "${RESULTS:?}"
TESTS_DIR=${TESTS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
. "$TESTS_DIR/fixtures/lib.sh"

_t_name=$(basename "$0" .sh)
_loops=() _mounts=() _pids=()
T=$(mktemp -d "${TMPDIR:-/tmp}/inplace-$_t_name.XXXXXX")
# Journals and resume records of the tests stay in the scratch directory,
# never in the host's /var/lib/inplace.
export INPLACE_STATE_DIR=$T/state

cleanup() {
	local i
	for ((i = ${#_pids[@]} - 1; i >= 0; i--)); do kill "${_pids[i]}" 2>/dev/null; wait "${_pids[i]}" 2>/dev/null; done
	for ((i = ${#_mounts[@]} - 1; i >= 0; i--)); do umount "${_mounts[i]}" 2>/dev/null || umount -l "${_mounts[i]}" 2>/dev/null; done
	for ((i = ${#_loops[@]} - 1; i >= 0; i--)); do losetup -d "${_loops[i]}" 2>/dev/null; done
	# and any loop device over a file of this test that the binary under
	# test left behind (a killed process): it would break the next run
	local l
	for l in $(losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v t="$T/" 'index($2, t) == 1 {print $1}'); do
		umount "$l" 2>/dev/null; losetup -d "$l" 2>/dev/null
	done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

track_loop() { _loops+=("$1"); }
track_mount() { _mounts+=("$1"); }
track_pid() { _pids+=("$1"); }

pass() { echo "PASS $_t_name: $1" >> "$RESULTS"; echo "  ok   $1"; }
fail() { echo "FAIL $_t_name: $1${2:+ ($2)}" >> "$RESULTS"; echo "  FAIL $1${2:+ ($2)}"; }
skip() { echo "SKIP $_t_name: $1 ($2)" >> "$RESULTS"; echo "  skip $1 ($2)"; }

ok() {
	local name=$1; shift
	local out
	if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "exit $?: $(printf '%s' "$out" | tail -3 | tr '\n' ' ')"; return 1; fi
}
check() { ok "$@"; }

must_fail() {
	local want=$1 name=$2; shift 2
	local out rc
	out=$("$@" 2>&1); rc=$?
	if [ "$rc" -eq "$want" ]; then pass "$name"
	else fail "$name" "wanted exit $want, got $rc: $(printf '%s' "$out" | tail -2 | tr '\n' ' ')"; return 1; fi
}

# Attach an image with partitions and set $LOOP (not echoed: a command
# substitution would run in a subshell and lose the tracking).  Partition
# nodes come from partx -u (losetup -P alone does not create them here).
attach_loop() {
	LOOP=$(losetup -f --show -P "$1") || return 1
	track_loop "$LOOP"
	partx -u "$LOOP" 2>/dev/null || true
}

# Mount partition N of image DISK read-only at DIR through a loop device
# over its range (both tracked, released by the EXIT trap; umount DIR when
# done).  Sets $LOOPDEV.
mount_part_ro() {
	local s z
	read -r s z < <(partx -g -n "$2" -o START,SECTORS "$1" | awk '{printf "%.0f %.0f\n", $1 * 512, $2 * 512}')
	mkdir -p "$3"
	LOOPDEV=$(losetup -f --show -r -o "$s" --sizelimit "$z" "$1") || return 1
	track_loop "$LOOPDEV"
	mount -o ro "$LOOPDEV" "$3" || return 1
	track_mount "$(realpath "$3")"
}

# A tool that mk/packages.txt installs must be there: its absence is a
# broken setup (make deps), a failure, never a skip.
require_tool() {
	local t missing=""
	for t; do command -v "$t" >/dev/null 2>&1 || missing="$missing $t"; done
	[ -z "$missing" ] && return 0
	fail "required tools" "missing:$missing (make deps installs them from mk/packages.txt)"
	return 1
}

have_loop() { [ -e /dev/loop-control ] && losetup -f >/dev/null 2>&1; }
