#!/bin/bash
# t-completion — bash completion of inplace: the completion file is sourced
# and its function driven as bash's programmable completion calls it
# (COMP_WORDS, COMP_CWORD), then COMPREPLY checked: verbs, the options of
# one verb, the partition numbers of the DISK given earlier, and files.
. "$TESTS_DIR/lib.sh"

comp_file=$TESTS_DIR/../contrib/bash-completion/inplace
# the completion calls COMP_WORDS[0], as an admin's shell would call inplace
PATH=$(dirname "$INPLACE"):$PATH
. "$comp_file"

# complete WORD...: the line up to the cursor (the last word is the one being
# completed, "" right after a space); COMPREPLY sorted on one line
complete_line() {
	COMP_WORDS=(inplace "$@")
	COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
	COMPREPLY=()
	_inplace
	printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}

# want NAME EXPECTED WORD...
want() {
	local name=$1 exp=$2 got; shift 2
	got=$(complete_line "$@")
	if [ "$got" = "$exp" ]; then pass "$name"; else fail "$name" "got '$got', wanted '$exp'"; fi
}

want "top verbs by prefix" "part profile" p
want "every top verb" "$(printf '%s\n' bundle image media netboot notify part profile reclaim resume run stage status | tr '\n' ' ' | sed 's/ $//')" ""
want "verbs of part" "show shrink" part sh
want "options of part shrink" "--no-repair" part shrink --n
want "options of image capture" "--raw" image capture x.img 1 --r
got=$(complete_line part grow --)
case " $got " in
*" --max "*" --to "*) case " $got " in *" --no-repair "*) fail "part grow: no shrink-only option" "$got" ;; *) pass "part grow: its own options" ;; esac ;;
*) fail "part grow: its own options" "$got" ;;
esac

# partition numbers: of the disk given before N, read from its table
fx_disk "$T/disk.img" 64M $'label: gpt\nsize=8MiB\nsize=8MiB\nsize=8MiB'
want "partition numbers of DISK" "1 2 3" part shrink "$T/disk.img" ""
want "partition numbers, after options" "1 2 3" part shrink --to 4M "$T/disk.img" ""
want "partition numbers by prefix" "2" image capture -o "$T/x.img" "$T/disk.img" 2
fx_disk "$T/mbr.img" 64M $'label: dos\nsize=8MiB\ntype=5\nsize=4MiB'
want "partition numbers of an MBR disk (logical too)" "1 2 5" image deploy img "$T/mbr.img" ""

# files: a positional DISK and an option's value
touch "$T/alpha.img" "$T/alpine.iso"
want "files for DISK" "$T/alpha.img $T/alpine.iso" part show "$T/alp"
want "files for an option's value" "$T/alpha.img" image capture -o "$T/alpha"
want "files for a JOB.ini" "$T/alpine.iso" run "$T/alpi"
