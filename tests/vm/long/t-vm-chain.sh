#!/bin/bash
# t-vm-chain — the real thing: inside the old OS, booted under QEMU, a unit
# starts `inplace run job.ini` ([boot] method = grub) from a bundle, and
# the machine crosses its own reboots: GRUB's one-shot entry into the
# staging environment (make room, save, deploy, boot fix), the new OS's
# first boot (restore, reclaim), done.  Then, from the host: every home
# equal, password hashes, hostname, machine-id and host keys kept, the
# store gone and wiped, the root grown back, status.log complete; and the
# new OS's boot ended with no unit failed and the old users log in.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "chain" "no loop devices"; exit 0; }
vm_reimage_fixtures || exit 1
vm_chain_prepare grub || exit 1

vm_chain_boot chain "GRUB's one-shot entry boots the staging kernel" || exit 1
vm_chain_first_boot chain || exit 1
# the restored hostname is the kernel's from the next boot on (the first
# one set the image's before the restore ran)
from=$(vm_mark "$VM_LOG")
vm_login root newrootpw 'systemctl reboot'
vm_check_new_os_boots "chain" "$from" 1200 || exit 1
vm_login root newrootpw 'systemctl poweroff'
vm_exited 120 || vm_kill
vm_check_reimaged "chain" "$D" want.id root
