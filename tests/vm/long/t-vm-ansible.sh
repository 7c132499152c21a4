#!/bin/bash
# t-vm-ansible — the Ansible role of contrib/ansible reimages the VM over
# SSH: ansible-playbook on the host reaches the old OS through QEMU's
# user-network port forward, pushes the bundle, the image and the job,
# runs it, crosses the reboots (GRUB's one-shot entry, staging, the new
# OS's first boot), waits for `inplace status` to say done and fetches
# status.log; a second run on the reimaged host changes nothing.  Then,
# from the host, the disk is checked as t-vm-chain checks it.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/vm/lib.sh"
cd "$T" || exit 1
have_loop || { skip "ansible" "no loop devices"; exit 0; }
require_tool ansible-playbook ssh ssh-keygen || exit 1
# Ansible's modules run in the host's Python: the VM's Debian carries it
case ",$DEBIAN_OS_PKGS," in *,python3,*) ;; *) DEBIAN_OS_PKGS=$DEBIAN_OS_PKGS,python3 ;; esac
vm_reimage_fixtures || exit 1
ok "bundle: inplace and its tools" "$INPLACE" bundle -o "$T/bundle" || exit 1
ssh-keygen -q -t ed25519 -N '' -f "$T/id" || { fail "fixture" "an SSH key"; exit 1; }

# The old OS lets the control node in as root with that key (the job
# carries root's home, so the new OS does too)
vm_mount_part "$D" 1 "$T/was" && vm_identity "$T/was" > want.id && umount "$T/was" ||
	{ fail "fixture" "read the old OS"; exit 1; }
read -r s z < <(fx_part_range "$D" 1)
mkdir -p r && l=$(losetup -f --show -o "$s" --sizelimit "$z" "$D") && track_loop "$l" &&
	mount "$l" r && track_mount "$T/r" &&
	install -d -m 700 r/root/.ssh && install -m 600 "$T/id.pub" r/root/.ssh/authorized_keys &&
	umount r && losetup -d "$l" || { fail "fixture" "the control node's key into the old root"; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > inventory <<EOF
[reimage]
vm ansible_host=127.0.0.1 ansible_port=$port ansible_user=root ansible_ssh_private_key_file=$T/id ansible_python_interpreter=/usr/bin/python3
EOF
cat > playbook.yml <<EOF
- hosts: reimage
  gather_facts: false
  roles:
    - role: inplace
      inplace_bundle: $T/bundle
      inplace_image: $T/new.img
      inplace_image_key: $T/new.img.pub
      inplace_fetch_dir: $T/logs
      inplace_job:
        profile: {include_root: true}
        notify: {countdown: 0}
EOF
export ANSIBLE_ROLES_PATH=$TESTS_DIR/../contrib/ansible/roles ANSIBLE_HOST_KEY_CHECKING=False \
	ANSIBLE_SSH_ARGS="-o UserKnownHostsFile=$T/known_hosts -o ControlMaster=auto -o ControlPersist=30s -o ServerAliveInterval=5 -o ServerAliveCountMax=3" \
	ANSIBLE_SSH_CONTROL_PATH_DIR=$T/cp ANSIBLE_PIPELINING=True ANSIBLE_NOCOLOR=1 \
	ANSIBLE_LOCAL_TEMP=$T/ansible-tmp ANSIBLE_REMOTE_TEMP=/var/tmp/.ansible-tmp

VM_LOG=$T/ansible.log
VM_FAIL='VM-REPORT os=(old|new) .*failed=\[[^]]|Kernel panic'
VM_MEM=2048 VM_REBOOT=yes VM_NIC_OPTS="hostfwd=tcp:127.0.0.1:$port-:22" vm_boot "$D" "$VM_LOG"
check "the old OS boots, no unit failed" \
	vm_wait "$VM_LOG" 'VM-REPORT os=old host=oldhost state=running failed=\[\]' 1200 || exit 1

ansible-playbook -i inventory playbook.yml > play1.out 2>&1
rc=$?
cat play1.out >> "$T/ansible-play.log"
check "ansible-playbook reimages the host (exit 0)" test "$rc" = 0
check "the recap: changed, nothing failed or unreachable" \
	grep -Eq '^vm +: ok=[0-9]+ +changed=[1-9][0-9]* +unreachable=0 +failed=0' play1.out
check "the staging kernel ran in between" grep -aq 'Command line:.* inplace\.stage' "$VM_LOG"
check "status.log fetched to the control node, the job done" \
	test "$(jq -r .phase "$T/logs/vm/status.log" 2>/dev/null | tail -1)" = done
ansible-playbook -i inventory playbook.yml > play2.out 2>&1
rc=$?
cat play2.out >> "$T/ansible-play.log"
check "a second run: exit 0" test "$rc" = 0
check "a second run changes nothing (changed=0)" \
	grep -Eq '^vm +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' play2.out
check "a second run pushed nothing" bash -c "! grep -q 'inplace | push the bundle' play2.out"
vm_ssh() { ssh -i "$T/id" -p "$port" -o UserKnownHostsFile="$T/known_hosts" -o StrictHostKeyChecking=yes \
	-o BatchMode=yes root@127.0.0.1 "$@"; }
check "the role left no bundle on the new system" vm_ssh 'test ! -e /var/tmp/inplace-ansible'
check "the new OS answers over SSH with the old host key" vm_ssh 'test -e /etc/inplace-new-os'
vm_ssh 'systemctl poweroff' > /dev/null 2>&1
vm_exited 180 || vm_kill
vm_check_reimaged "ansible" "$D" want.id root
