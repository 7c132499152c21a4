#!/bin/bash
# t-media — the builders of `[boot] method = media` and `pxe`, without a VM.
# `media build` writes a hybrid image: an MBR with a BIOS boot record and
# a GPT naming an EFI system partition, El Torito entries for BIOS and
# UEFI, GRUB's grub.cfg booting our kernel and initramfs; the initramfs
# (cpio) holds /init, the bundle, the job and the usual disk drivers in
# dependency order, the image and its signature lie on the ISO beside it,
# and stage.json says how staging finds the disk and the image.  `netboot build` writes the kernel, the same
# initramfs, an iPXE script and a pxelinux config.  Refusals (bad job,
# method not media, unsigned or damaged image, URL, relative path, no
# system_partition, store directory): exit 2, nothing written.
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/fixtures/debian.sh"
cd "$T" || exit 1
require_tool jq zstd cpio xorriso grub-mkrescue mformat minisign || exit 1

tree=$(debian_tree "$DEBIAN_OS_PKGS") || { fail "fixture" "debian_tree"; exit 1; }
K=$(ls "$tree"/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$K" ] || { fail "fixture" "no kernel in $tree/boot"; exit 1; }
kver=${K##*/vmlinuz-}

mkdir new && echo "the new OS" > new/etc-marker && mkdir -p new/boot new/etc
"$INPLACE" image build -q --from-dir new --fs ext4 --size 32MiB -o newos.img >/dev/null ||
	{ fail "fixture" "image build"; exit 1; }
minisign -G -W -f -p k.pub -s k.key >/dev/null 2>&1 || { fail "fixture" "minisign -G"; exit 1; }
minisign -S -s k.key -m newos.img >/dev/null 2>&1 || { fail "fixture" "minisign -S"; exit 1; }

# job FILE METHOD [LINES…]: a media job for $T/newos.img, signed with k.pub
job() {
	local f=$1 m=$2
	shift 2
	{
		printf '[job]\nimage = %s/newos.img\nkey = %s/k.pub\ndisk = /dev/disk/by-id/virtio-target\n' "$T" "$T"
		printf 'system_partition = 1\n'
		[ $# -eq 0 ] || printf '%s\n' "$@"
		printf '\n[boot]\nmethod = %s\n\n[notify]\ncountdown = 0\n' "$m"
	} > "$f"
}

# ---- media build ---------------------------------------------------------------
job media.ini media
ok "media build" sh -c "'$INPLACE' media build media.ini -o usb.img --kernel '$K' --json > media.json" || exit 1
check "the JSON names the kernel and the checked signature" \
	test "$(jq -r '"\(.kernel_version) \(.signature_checked)"' media.json)" = "$kver true"
check "an MBR boot record (55aa) for BIOS booting from a stick" \
	test "$(od -An -tx1 -j510 -N2 usb.img | tr -d ' ')" = 55aa
check "a GPT with an EFI system partition for UEFI" \
	bash -c "sfdisk -d usb.img 2>/dev/null | grep -qi 'type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B'"
xorriso -indev usb.img -report_el_torito plain > eltorito.txt 2>/dev/null
check "El Torito: a BIOS entry and a UEFI entry" \
	bash -c "grep -q 'El Torito boot img :   1  BIOS' eltorito.txt && grep -q 'El Torito boot img :   2  UEFI' eltorito.txt"
xorriso -osirrox on -indev usb.img -extract /boot iso-boot >/dev/null 2>&1
check "the ISO holds the kernel as built" cmp -s iso-boot/vmlinuz "$K"
check "grub.cfg boots it with the initramfs and the staging arguments" \
	bash -c "grep -q '^	linux /boot/vmlinuz console=tty0 console=ttyS0,115200 inplace.stage inplace.media panic=30' iso-boot/grub/grub.cfg && grep -q '^	initrd /boot/initrd.img' iso-boot/grub/grub.cfg"
check "GRUB for both firmwares is on the ISO" test -d iso-boot/grub/i386-pc -a -d iso-boot/grub/x86_64-efi

mkdir x && (cd x && zstd -dc ../iso-boot/initrd.img | cpio -id --quiet 2>/dev/null)
check "the cpio holds /init, the bundle, the job and its key" \
	test -L x/init -a -x x/bundle/libexec/inplace -a -f x/state/job.ini -a -f "x$T/k.pub"
check "the image is not in the cpio (GRUB would read it all through the firmware)" test ! -e "x$T/newos.img"
xorriso -osirrox on -indev usb.img -extract /inplace iso-image >/dev/null 2>&1
check "the ISO holds the verified image and its signature" \
	bash -c "cmp -s iso-image/image newos.img && cmp -s iso-image/image.minisig newos.img.minisig"
check "stage.json: the image on the media, linked at the job's path" \
	test "$(jq -c '.media.image | [.on_media, .path, .bytes]' x/stage.json)" = "[\"/inplace/image\",\"$T/newos.img\",$(stat -c %s newos.img)]"
check "the job travels as written" cmp -s x/state/job.ini media.ini
check "no state: no old OS ran the job" test ! -e x/state/state.json
check "stage.json: how staging finds the disk" \
	test "$(jq -c '.media | [.kind, .disk, .system_partition, .wait_s]' x/stage.json)" = '["media","/dev/disk/by-id/virtio-target",1,60]'
check "stage.json: no disk id, no records area (made in staging)" \
	test "$(jq -c '[.disk, .records]' x/stage.json)" = '[null,null]'
check "the usual disk drivers of any x86_64 machine, and the media's" \
	bash -c "for m in virtio_blk virtio_pci ahci nvme sd_mod usb_storage ata_piix ext4 vfat isofs sr_mod; do jq -e --arg m \$m '[.modules[].name] | index(\$m)' x/stage.json >/dev/null || { echo \$m; exit 1; }; done"
order_ok() {
	local i=0 p dep
	declare -A at
	while read -r p; do at[$p]=$i; i=$((i + 1)); done < <(jq -r '.modules[].path' x/stage.json)
	for p in "${!at[@]}"; do
		[ -f "x/lib/modules/$kver/$p" ] || { echo "missing $p"; return 1; }
		for dep in $(awk -v m="$p:" '$1 == m { $1 = ""; print }' "$tree/lib/modules/$kver/modules.dep"); do
			[ -n "${at[$dep]:-}" ] && [ "${at[$dep]}" -lt "${at[$p]}" ] || { echo "$dep not before $p"; return 1; }
		done
	done
}
check "every module is in the cpio, dependencies first" order_ok

# ---- netboot build -------------------------------------------------------------
job pxe.ini pxe
ok "netboot build" "$INPLACE" netboot build pxe.ini -o tftp --kernel "$K" --cmdline "inplace.test=1"
check "the kernel as built" cmp -s tftp/vmlinuz "$K"
check "every file readable by a TFTP server's own user" \
	test "$(stat -c %a tftp/vmlinuz tftp/initrd.img tftp/boot.ipxe tftp/pxelinux.cfg/default | sort -u)" = 644
check "the iPXE script loads both, relative to itself, and boots" \
	test "$(grep -v '^#' tftp/boot.ipxe | sed 's/ .*//' | tr '\n' ' ')" = "kernel initrd boot "
check "iPXE script: the staging arguments and --cmdline" \
	grep -q '^kernel vmlinuz initrd=initrd.img console=tty0 console=ttyS0,115200 inplace.stage inplace.pxe panic=30 inplace.test=1$' tftp/boot.ipxe
check "iPXE script: the magic first line" test "$(head -n1 tftp/boot.ipxe)" = '#!ipxe'
check "pxelinux config" \
	bash -c "grep -q '^  KERNEL vmlinuz$' tftp/pxelinux.cfg/default && grep -q '^  APPEND initrd=initrd.img .*inplace.pxe' tftp/pxelinux.cfg/default"
check "the netboot initramfs carries the job and the image" \
	bash -c "zstd -dc tftp/initrd.img | cpio -t --quiet 2>/dev/null | grep -qx '${T#/}/newos.img'"

# ---- refusals: exit 2, nothing written -----------------------------------------
refuse() {
	local name=$1 ini=$2 out=$T/refused.img
	must_fail 2 "refused: $name" "$INPLACE" media build "$ini" -o "$out" --kernel "$K"
	check "refused: $name: nothing written" bash -c "! ls '$T'/refused.img* >/dev/null 2>&1"
}
printf '[job]\nimgae = x\n' > bad.ini
refuse "bad job (unknown key)" bad.ini
job grub.ini grub
refuse "method grub" grub.ini
job nopart.ini media
sed -i '/^system_partition/d' nopart.ini
refuse "no system_partition" nopart.ini
job dir.ini media "store = $T"
refuse "store directory" dir.ini
job url.ini media
sed -i 's|^image = .*|image = http://127.0.0.1:9/newos.img|' url.ini
refuse "image URL" url.ini
job rel.ini media
sed -i 's|^image = .*|image = newos.img|' rel.ini
refuse "relative image path" rel.ini
cp newos.img unsigned.img
job unsigned.ini media
sed -i "s|^image = .*|image = $T/unsigned.img|" unsigned.ini
refuse "unsigned image" unsigned.ini
cp newos.img damaged.img && cp newos.img.minisig damaged.img.minisig
printf 'X' | dd of=damaged.img bs=1 seek=$(($(stat -c %s damaged.img) / 2)) conv=notrunc status=none
job damaged.ini media
sed -i "s|^image = .*|image = $T/damaged.img|" damaged.ini
refuse "damaged image" damaged.ini
must_fail 2 "netboot build of a media job refused" "$INPLACE" netboot build media.ini -o tftp2 --kernel "$K"
check "netboot refusal: no directory made" test ! -e tftp2
job run.ini media
must_fail 2 "inplace run of a media job points at media build" "$INPLACE" run run.ini --state-dir "$T/st"
check "inplace run refusal: no state" test ! -e "$T/st/state.json"
