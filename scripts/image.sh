#!/usr/bin/env bash
# Builds the box's system image, dist/strokebox-arm64.img: a bootable Debian 12 (bookworm) arm64
# disk made with mmdebstrap from this machine's apt mirror and the arm64 package
# (scripts/package.sh arm64). Not part of CI; needs root. docs/box_image.md.
#   scripts/image.sh [DEB]      (default: the newest dist/strokebox_*_arm64.deb)
# Writes into dist/:
#   strokebox-arm64.img          GPT disk: 1 config (FAT, 16 MiB, the technician's
#                                strokebox-box.toml), 2 root (ext4, mounted read-only),
#                                3 data (ext4, the daemon's state and the journal)
#   strokebox-arm64.vmlinuz, strokebox-arm64.initrd.img, strokebox-arm64.cmdline
#                                Debian's linux-image-arm64 kernel and initramfs from the image's
#                                /boot, for qemu's direct kernel boot (-kernel/-initrd/-append):
#                                the image has no boot loader yet (docs/box_image.md)
#   strokebox-arm64.rootfs.tar   the root file system before partitioning (KEEP_TAR=1 only):
#                                what goes onto a Jetson with NVIDIA's boot chain
# No loop devices: the file systems are written into the image file at their partitions' offsets
# (mke2fs -d -E offset=, mkfs.fat --offset, mtools). Maintainer scripts of the arm64 packages run
# under qemu-user: with the kernel's binfmt_misc handler for aarch64 when one is registered,
# otherwise in a private user and mount namespace with its own binfmt_misc instance (Linux >= 6.7),
# so nothing is registered for the rest of the machine.
# Environment: WORK (default /tmp/strokebox-image, removed first), DATA_MIB (data partition,
# default 1536), ROOT_SPARE_MIB (free space on the root, default 256), KEEP_TAR=1.
# Host packages: mmdebstrap arch-test qemu-user-static e2fsprogs fdisk dosfstools mtools
# (scripts/install-deps.sh image).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OVERLAY=$ROOT/packaging/image

# --- inside the private namespace (see the end of the file): mmdebstrap only ----------------
if [ "${1:-}" = "--in-namespace" ]; then
  shift
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  # As Debian's qemu-user-static registers it (/usr/lib/binfmt.d/qemu-aarch64.conf), with F:
  # the interpreter is opened now, so it also works inside the chroot.
  magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  echo ":qemu-aarch64:M::$magic:$mask:$(command -v qemu-aarch64-static):OCF" >/proc/sys/fs/binfmt_misc/register
  exec "$@"
fi

[ "$(id -u)" -eq 0 ] || { echo "image: needs root (mmdebstrap, file ownership in the image)" >&2; exit 1; }
missing=()
for tool in mmdebstrap:mmdebstrap arch-test:arch-test qemu-aarch64-static:qemu-user-static mke2fs:e2fsprogs \
  sfdisk:fdisk mkfs.fat:dosfstools mcopy:mtools unshare:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] || { echo "image: missing ${missing[*]}: scripts/install-deps.sh image" >&2; exit 1; }
DEB=${1:-$(ls -t dist/strokebox_*_arm64.deb 2>/dev/null | head -n 1 || true)}
[ -n "$DEB" ] && [ -f "$DEB" ] || { echo "image: no arm64 package; run scripts/package.sh arm64 first" >&2; exit 1; }
DEB=$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")
[ "$(dpkg-deb -f "$DEB" Architecture)" = arm64 ] || { echo "image: $DEB is not an arm64 package" >&2; exit 1; }

WORK=${WORK:-/tmp/strokebox-image}
DATA_MIB=${DATA_MIB:-1536}
ROOT_SPARE_MIB=${ROOT_SPARE_MIB:-256}
CONFIG_MIB=16
OUT=$ROOT/dist
IMG=$OUT/strokebox-arm64.img
start=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"

MIRRORS=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && grep -qE '^(deb |Types:.*\bdeb\b)' "$f" && MIRRORS+=("$f")
done
[ ${#MIRRORS[@]} -gt 0 ] || { echo "image: no apt sources under /etc/apt" >&2; exit 1; }

# Run mmdebstrap where arm64 programs can be executed.
EMU=()
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  # uids/gids 0-65535 mapped to themselves: files in the root get their real owners.
  EMU=("$ROOT/scripts/image.sh" --in-namespace)
  run_emulated() {
    local fifo pid
    fifo=$WORK/.userns-go
    mkfifo "$fifo"
    unshare --user --mount --propagation private bash -c 'read -r _ <"$0"; exec "$@"' "$fifo" "$@" &
    pid=$!
    for _ in $(seq 50); do [ "$(readlink /proc/$pid/ns/user)" != "$(readlink /proc/self/ns/user)" ] && break; sleep 0.1; done
    echo "0 0 65536" >/proc/$pid/uid_map
    echo "0 0 65536" >/proc/$pid/gid_map
    echo go >"$fifo"
    rm -f "$fifo"
    wait $pid
  }
else
  run_emulated() { "$@"; }
fi

# --- 1. root file system -----------------------------------------------------------------------
PACKAGES=(
  systemd systemd-sysv udev dbus kmod            # init
  systemd-timesyncd systemd-resolved iproute2    # time from NTP, DNS, networkd's ip tools
  linux-image-arm64 initramfs-tools              # Debian's kernel (virtio, Jetson needs L4T's)
  e2fsprogs mawk                                 # fsck of root/data at boot; the config renderer
)
echo "== mmdebstrap bookworm arm64 into $WORK/root (maintainer scripts under qemu-user; several minutes)"
include=$(IFS=,; echo "${PACKAGES[*]}")
# shellcheck disable=SC2016  # the hooks are evaluated by mmdebstrap with "$1" = the root
# The package is given by path in --include: the host side of mmdebstrap downloads its Depends
# (apt inside the chroot has no name service here); apt in the chroot reads the file by that path.
# initramfs-tools' settings go in before the kernel is installed (essential hook).
run_emulated "${EMU[@]}" mmdebstrap --architectures=arm64 --variant=apt --quiet --include="$include,$DEB" \
  --setup-hook='mkdir -p "$1'"$(dirname "$DEB")"'" && cp "'"$DEB"'" "$1'"$DEB"'"' \
  --essential-hook="mkdir -p \"\$1/etc/initramfs-tools\"" \
  --essential-hook="sync-in $OVERLAY/rootfs/etc/initramfs-tools /etc/initramfs-tools" \
  --customize-hook='rm -f "$1'"$DEB"'"' \
  --customize-hook="sync-in $OVERLAY/rootfs /" \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service systemd-timesyncd.service systemd-resolved.service strokebox-box-config.service strokebox.service' \
  --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service' \
  --customize-hook='chroot "$1" systemd-tmpfiles --create --prefix=/var >/dev/null 2>&1 || true' \
  --customize-hook='chroot "$1" dpkg-query -W -f="\${Package} \${Version}\n" strokebox linux-image-arm64 systemd' \
  bookworm "$WORK/root" "${MIRRORS[@]}"
R=$WORK/root

echo "== layout: read-only root, mount points, state on the data partition"
# Kernel and initramfs for qemu's direct kernel boot (kept in /boot too).
vmlinuz=$(ls "$R"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$R/boot/initrd.img-${vmlinuz##*/vmlinuz-}
[ -f "$initrd" ] || { echo "image: no initramfs for $vmlinuz" >&2; exit 1; }
cp "$vmlinuz" "$OUT/strokebox-arm64.vmlinuz"
cp "$initrd" "$OUT/strokebox-arm64.initrd.img"
echo "console=ttyAMA0 root=LABEL=sbroot ro rootwait panic=10" >"$OUT/strokebox-arm64.cmdline"
# One machine id per image build (the root is read-only: systemd cannot commit one at first boot).
tr -d '-' </proc/sys/kernel/random/uuid >"$R/etc/machine-id"
# Mount points; /var/lib/strokebox is what systemd makes for StateDirectory= with DynamicUser=yes
# (a link into /var/lib/private, which is bound from the data partition).
mkdir -p "$R/data" "$R/config" "$R/var/lib/private" "$R/var/log/journal" "$R/var/lib/systemd/timesync"
# StateDirectory= of units that cannot create it on the read-only root (systemd-logind).
mkdir -p "$R/var/lib/systemd/linger"
# What systemd-tmpfiles would link at boot (dbus' machine id).
mkdir -p "$R/var/lib/dbus"
ln -sfn /etc/machine-id "$R/var/lib/dbus/machine-id"
chmod 0700 "$R/var/lib/private"
rm -rf "$R/var/lib/strokebox"
ln -s private/strokebox "$R/var/lib/strokebox"
# /dev is devtmpfs at boot; mmdebstrap leaves placeholders.
find "$R/dev" -mindepth 1 -delete
rm -f "$R/etc/resolv.conf"
ln -s ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
uid_of() { awk -F: -v u="$1" '$1 == u {print $3}' "$R/etc/passwd"; }
gid_of() { awk -F: -v g="$1" '$1 == g {print $3}' "$R/etc/group"; }
sb_uid=$(uid_of strokebox); sb_gid=$(gid_of strokebox)
ts_uid=$(uid_of systemd-timesync); ts_gid=$(gid_of systemd-timesync)
jr_gid=$(gid_of systemd-journal)
[ -n "$sb_uid" ] && [ -n "$ts_uid" ] && [ -n "$jr_gid" ] || { echo "image: users strokebox/systemd-timesync/group systemd-journal missing" >&2; exit 1; }

# The data partition's initial tree.
D=$WORK/data
install -d -m 0755 "$D" "$D/box"
install -d -m 0700 "$D/private"
install -d -m 0700 -o "$sb_uid" -g "$sb_gid" "$D/private/strokebox"
install -d -m 2755 -g "$jr_gid" "$D/journal"
install -d -m 0755 -o "$ts_uid" -g "$ts_gid" "$D/timesync"
# The config partition's file.
C=$WORK/config
mkdir -p "$C"
cp "$OVERLAY/strokebox-box.toml" "$C/strokebox-box.toml"

if [ "${KEEP_TAR:-0}" = 1 ]; then
  tar -C "$R" --numeric-owner --xattrs -cf "$OUT/strokebox-arm64.rootfs.tar" .
fi

# --- 2. disk ------------------------------------------------------------------------------------
echo "== partitions and file systems in $IMG"
root_kib=$(du -sk --apparent-size "$R" | cut -f1)
root_mib=$(( (root_kib * 12 / 10) / 1024 + ROOT_SPARE_MIB ))
root_mib=$(( (root_mib + 63) / 64 * 64 ))
total_mib=$(( 1 + CONFIG_MIB + root_mib + DATA_MIB + 1 ))
rm -f "$IMG"
truncate -s "${total_mib}M" "$IMG"
sfdisk --quiet "$IMG" <<END
label: gpt
start=1MiB, size=${CONFIG_MIB}MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=config
size=${root_mib}MiB, type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE, name=root
size=${DATA_MIB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data
END
# Start sectors (512-byte) of partitions 1..3.
mapfile -t starts < <(sfdisk --dump "$IMG" | sed -n 's/^.*start= *\([0-9]*\),.*$/\1/p')
[ ${#starts[@]} -eq 3 ] || { echo "image: unexpected partition table" >&2; sfdisk --dump "$IMG"; exit 1; }
mkfs.fat -F 16 -n SBCONFIG --offset "${starts[0]}" "$IMG" $(( CONFIG_MIB * 1024 )) >/dev/null
mcopy -i "$IMG@@$(( starts[0] * 512 ))" "$C/strokebox-box.toml" ::/strokebox-box.toml
mke2fs -q -F -t ext4 -b 4096 -L sbroot -d "$R" -E offset=$(( starts[1] * 512 )) "$IMG" "${root_mib}M"
mke2fs -q -F -t ext4 -b 4096 -L sbdata -d "$D" -E offset=$(( starts[2] * 512 )) "$IMG" "${DATA_MIB}M"
# mke2fs must not have grown the file past the table's end (the backup GPT).
[ "$(stat -c %s "$IMG")" -eq $(( total_mib * 1024 * 1024 )) ] || { echo "image: image size changed" >&2; exit 1; }
sfdisk --verify "$IMG" >/dev/null

rm -rf "$WORK"
echo
sfdisk --list "$IMG" | sed -n '/^Device/,$p'
size=$(stat -c %s "$IMG")
echo "image: $IMG: $size bytes ($(( size / 1048576 )) MiB; $(du -m "$IMG" | cut -f1) MiB allocated, sparse)"
echo "kernel: $OUT/strokebox-arm64.vmlinuz, $OUT/strokebox-arm64.initrd.img, cmdline: $(cat "$OUT/strokebox-arm64.cmdline")"
echo "image: done in $(( $(date +%s) - start )) s"
