#!/bin/bash
# t-notify — `inplace notify` in a real terminal (a tmux pane, keys sent
# with send-keys, the --json answer written to a file): install now,
# postpone within and beyond the maximum, decline allowed and not allowed,
# countdown expiry, the terminal restored after SIGTERM; the message reaches
# a login terminal listed in utmp and a user's session bus.
. "$(dirname "$0")/../lib.sh"
I=$INPLACE
require_tool tmux jq || exit 1

# A tmux server of our own; its pid is tracked so that the EXIT trap ends it
# and every session in it.
TM=(tmux -L "inplace-notify-$$" -f /dev/null)
"${TM[@]}" new-session -d -s idle -x 200 -y 40 "sleep 3600" || { fail "tmux" "cannot start a tmux server"; exit 1; }
track_pid "$("${TM[@]}" display-message -p -t idle '#{pid}')"
# no users are told during the prompt cases: an empty utmp and no buses
: > "$T/utmp.empty"
mkdir -p "$T/norun"
export INPLACE_UTMP=$T/utmp.empty INPLACE_RUN_USER_DIR=$T/norun

# Polls, bounded (not timing assertions): a non-empty file, a socket, a
# text on a pane.
wait_until() { local i; for ((i = 0; i < 300; i++)); do "$@" && return 0; sleep 0.1; done; return 1; }
wait_file() { wait_until test -s "$1"; }
wait_pane() { # SESSION TEXT
	local i
	for ((i = 0; i < 300; i++)); do
		"${TM[@]}" capture-pane -p -t "$1" 2>/dev/null | grep -qF -- "$2" && return 0
		sleep 0.1
	done
	return 1
}

# start NAME ARGS…: run `inplace notify ARGS --json` in a new pane; the JSON
# goes to $T/NAME.json and the exit status to $T/NAME.rc; stdin and stderr
# stay on the terminal, where the prompt is.
start() {
	local name=$1; shift
	printf '%q ' "$I" notify --json "$@" > "$T/$name.cmd"
	"${TM[@]}" new-session -d -s "$name" -x 200 -y 40 \
		"$(cat "$T/$name.cmd") > $T/$name.json; echo \$? > $T/$name.rc; sleep 3600"
}
keys() { # NAME KEY…: one key at a time, each after the previous was taken
	local name=$1 k; shift
	for k in "$@"; do "${TM[@]}" send-keys -t "$name" -l "$k"; sleep 0.3; done
}
answer_is() { # NAME JQ-EXPR
	wait_file "$T/$1.rc" && [ "$(cat "$T/$1.rc")" = 0 ] && jq -e "$2" "$T/$1.json" >/dev/null
}

start install --countdown 60
wait_pane install "Reimaging starts in" && keys install i
check "install now: 'i' answers install at once" answer_is install \
	'.answer == "install" and .answered and .prompted'

start within --countdown 60 --max-postpone 8h
wait_pane within "[p]ostpone" && keys within p 2
check "postpone within the maximum: 4h of 8h" answer_is within \
	'.answer == "postpone" and .postpone_s == 14400 and .rearmed == false and (.rerun_at | length) > 0'

start beyond --countdown 60 --max-postpone 2h --postponed 30m
wait_pane beyond "[p]ostpone" && keys beyond p 2 3
check "postpone beyond the maximum is refused and says how much is left" \
	wait_pane beyond "only 1h 30m of the 2h allowed is left"
keys beyond 1
check "then another answer: 1h is taken, 1h 30m used in total" answer_is beyond \
	'.answer == "postpone" and .postpone_s == 3600 and .postponed_total_s == 5400'

start usedup --countdown 60 --max-postpone 1h --postponed 1h
wait_pane usedup "Reimaging starts in" && keys usedup p
check "no postponement left: 'p' is refused" wait_pane usedup "no postponement left"
keys usedup i
check "and install is still the answer" answer_is usedup '.answer == "install" and .answered'

start decline --countdown 60 --allow-decline
wait_pane decline "[d]ecline" && keys decline d
check "decline when allowed" answer_is decline '.answer == "decline" and .answered'

start nodecline --countdown 60
wait_pane nodecline "Reimaging starts in" && keys nodecline d
check "decline not allowed: the key is refused and says so" \
	wait_pane nodecline "declining is not allowed by this job"
check "decline not allowed: no answer yet after 'd'" test ! -s "$T/nodecline.rc"
keys nodecline i
check "decline not allowed: the next key decides" answer_is nodecline '.answer == "install" and .answered'

start expiry --countdown 2 --allow-decline --allow-postpone
check "countdown expiry: no answer means install" answer_is expiry \
	'.answer == "install" and (.answered | not) and .prompted'

# Ctrl-S would stop the terminal's output, and the countdown with a blocked
# write: flow control is off while asking, so the countdown still ends.
start xoff --countdown 2
wait_pane xoff "Reimaging starts in" && "${TM[@]}" send-keys -t xoff C-s
check "Ctrl-S at the prompt does not stop the countdown" answer_is xoff '.answer == "install" and (.answered | not)'

# SIGTERM at the prompt: the terminal gets its settings back, exit 1
"${TM[@]}" new-session -d -s term -x 200 -y 40 \
	"stty -g > $T/stty.before; sh -c 'echo \$\$ > $T/term.pid; exec \"\$0\" notify --countdown 60' $(printf '%q' "$I"); echo \$? > $T/term.rc; stty -g > $T/stty.after; sleep 3600"
wait_pane term "Reimaging starts in"
term_pty=$("${TM[@]}" display-message -p -t term '#{pane_tty}')
check "the prompt takes single keys without echo" sh -c 'stty -F "$1" -a | grep -qw -- -icanon && stty -F "$1" -a | grep -qw -- -echo' _ "$term_pty"
kill -TERM "$(cat "$T/term.pid")"
check "SIGTERM at the prompt: exit 1" sh -c 'f=$1; i=0; while [ ! -s "$f" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; [ "$(cat "$f")" = 1 ]' _ "$T/term.rc"
check "SIGTERM at the prompt: the terminal settings are restored" \
	sh -c 'i=0; while [ ! -s "$2" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; cmp -s "$1" "$2"' _ "$T/stty.before" "$T/stty.after"

# Ctrl-C at the prompt: the same
"${TM[@]}" new-session -d -s intr -x 200 -y 40 \
	"stty -g > $T/intr.before; $(printf '%q' "$I") notify --countdown 60; echo \$? > $T/intr.rc; stty -g > $T/intr.after; sleep 3600"
wait_pane intr "Reimaging starts in" && "${TM[@]}" send-keys -t intr C-c
check "Ctrl-C at the prompt: exit 1, the terminal settings restored" \
	sh -c 'i=0; while [ ! -s "$3" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; [ "$(cat "$1")" = 1 ] && cmp -s "$2" "$3"' \
	_ "$T/intr.rc" "$T/intr.before" "$T/intr.after"

# A terminal narrower than the prompt: the line is cut to fit, so each
# second's redraw replaces it instead of piling wrapped rows up.
start narrow --countdown 60 --allow-postpone --allow-decline
"${TM[@]}" resize-window -t narrow -x 40 -y 20 2>/dev/null || "${TM[@]}" kill-session -t narrow
wait_pane narrow "starts in 0:57"
check "a narrow terminal keeps one prompt line" \
	sh -c '[ "$("$@" capture-pane -p -t narrow | grep -c "Reimaging starts")" = 1 ]' _ "${TM[@]}"

# Non-interactive (no terminal): no prompt, install after the countdown
check "no terminal: install after telling users, without a prompt" \
	sh -c '"$1" notify --countdown 1 --allow-decline --json < /dev/null | jq -e ".answer == \"install\" and (.prompted | not)" >/dev/null' _ "$I"
must_fail 2 "a bad duration is bad input" "$I" notify --countdown 5x
must_fail 2 "an empty message is bad input" "$I" notify --message "" --countdown 0 --no-prompt

# ---- telling users -------------------------------------------------------
# A login terminal: a tmux pane entered in a utmp file of our own (tmux
# records its panes through utempter only where the system keeps a utmp),
# plus an entry whose terminal does not exist.
"${TM[@]}" new-session -d -s victim -x 200 -y 40 "sleep 3600"
pty=$("${TM[@]}" display-message -p -t victim '#{pane_tty}')
now=$(date -u +%Y-%m-%dT%H:%M:%S,000000+00:00)
{
	printf '[7] [00001] [ts/a] [alice   ] [%-12s] [                    ] [0.0.0.0        ] [%s]\n' "${pty#/dev/}" "$now"
	printf '[7] [00002] [ts/b] [bob     ] [%-12s] [                    ] [0.0.0.0        ] [%s]\n' "pts/9999" "$now"
	printf '[8] [00003] [ts/c] [carol   ] [%-12s] [                    ] [0.0.0.0        ] [%s]\n' "${pty#/dev/}" "$now"
} | utmpdump -r -o "$T/utmp" 2>/dev/null
token="notify-test-$$-$RANDOM"
INPLACE_UTMP=$T/utmp "$I" notify --dry-run --countdown 60 --message "dry $token" --json > "$T/dry.json"
check "--dry-run: the terminals are counted, none told, the answer is install" \
	jq -e '.terminals.found == 2 and .terminals.told == 0 and .dry_run and .answer == "install"' "$T/dry.json"
INPLACE_UTMP=$T/utmp "$I" notify --countdown 0 --no-prompt --message "save your work $token" --json > "$T/wall.json"
check "utmp: one live login terminal told, the dead one found but not told" \
	jq -e '.terminals.found == 2 and .terminals.told == 1' "$T/wall.json"
check "the message reached the login terminal" wait_pane victim "save your work $token"
check "--dry-run told it nothing" sh -c '! "${@:2}" capture-pane -p -t victim | grep -qF "dry $1"' _ "$token" "${TM[@]}"

# The system's own utmp, when it has the pane (not in containers without one)
if [ -s /var/run/utmp ] && who | grep -q "${pty#/dev/}"; then
	"$I" notify --countdown 0 --no-prompt --message "system utmp $token" > /dev/null
	check "the message reached a terminal listed in the system's utmp" wait_pane victim "system utmp $token"
else
	skip "system utmp" "no utmp entry for a tmux pane here (/var/run/utmp missing or utempter not allowed)"
fi

# Users' session buses, laid out the way systemd-logind makes /run/user:
# RUN/65534 with a dbus-daemon running as nobody and, when python3-dbus is
# there, a stand-in notification server on it (as nobody too: a session bus
# only talks to its owner); RUN/65533 with a dead socket (a session whose
# bus is gone: found, not told, no error); RUN/65532 with no bus at all.
if command -v dbus-daemon >/dev/null && command -v gdbus >/dev/null && command -v dbus-monitor >/dev/null; then
	nob=$(id -u nobody) nog=$(id -g nobody)
	rd=$T/run/$nob
	mkdir -p "$rd" "$T/run/65533" "$T/run/65532" && chown "$nob:$nog" "$rd" && chmod 700 "$rd"
	chown 65533:65533 "$T/run/65533" && chown 65532:65532 "$T/run/65532"
	/usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$T/run/65533/bus"
	chmod 755 "$T"
	# exec: a background function is a subshell, and the pid tracked for
	# the EXIT trap must be the daemon's own
	as_nobody() { DBUS_SESSION_BUS_ADDRESS=unix:path=$rd/bus exec setpriv --reuid="$nob" --regid="$nog" --clear-groups "$@"; }
	as_nobody dbus-daemon --session --nofork --address="unix:path=$rd/bus" 2>/dev/null &
	track_pid $!
	wait_until test -S "$rd/bus" || true
	msg="desktop $token: it's \"quoted\", [1, 2] {x}"
	if /usr/bin/python3 -c 'import dbus, dbus.mainloop.glib, gi' 2>/dev/null; then
		cat > "$T/server.py" <<'PY'
# A stand-in org.freedesktop.Notifications server: logs each Notify call
# (typed as the specification says, so a wrongly typed call fails).
import sys, dbus, dbus.service, dbus.mainloop.glib
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.SessionBus()
log = open(sys.argv[1], "a")
class Server(dbus.service.Object):
    @dbus.service.method("org.freedesktop.Notifications", in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app, replaces, icon, summary, body, actions, hints, timeout):
        log.write("%s|%s|%s|%d\n" % (app, summary, body.replace("\n", "\\n"), int(hints.get("urgency", -1))))
        log.flush()
        return 1
name = dbus.service.BusName("org.freedesktop.Notifications", bus)
Server(bus, "/org/freedesktop/Notifications")
open(sys.argv[2], "w").close()
GLib.MainLoop().run()
PY
		as_nobody /usr/bin/python3 "$T/server.py" "$rd/notes.log" "$rd/ready" 2>/dev/null &
		track_pid $!
		wait_until test -e "$rd/ready" || true
		INPLACE_RUN_USER_DIR=$T/run "$I" notify --countdown 0 --no-prompt --message "$msg" --json > "$T/bus.json"
		check "two session buses found, the live one told" jq -e '.desktops.found == 2 and .desktops.told == 1' "$T/bus.json"
		check "the notification server got the message, critical, from inplace" \
			grep -qF "inplace|Reimaging|$msg\\nReimaging starts now.|2" "$rd/notes.log"
	else
		# No python3-dbus: a monitor at least sees the call go out.
		touch "$T/monitor.log" && chown "$nob" "$T/monitor.log"
		as_nobody dbus-monitor --session "interface='org.freedesktop.Notifications'" > "$T/monitor.log" 2>/dev/null &
		track_pid $!
		sleep 0.5 # the monitor subscribes asynchronously; a late one only makes the check below fail
		INPLACE_RUN_USER_DIR=$T/run "$I" notify --countdown 0 --no-prompt --message "$msg" --json > "$T/bus.json"
		check "two session buses found" jq -e '.desktops.found == 2' "$T/bus.json"
		check "the desktop notification was sent on the live one" \
			sh -c 'i=0; while ! grep -qF "$2" "$1" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; grep -q "member=Notify" "$1"' _ "$T/monitor.log" "desktop $token"
		skip "desktop notification accepted" "python3-dbus or python3-gi missing for a stand-in notification server (mk/packages.txt)"
	fi
else
	skip "desktop notification" "dbus-daemon, dbus-monitor or gdbus missing (mk/packages.txt)"
fi
