#!/usr/bin/env bash
# Install check of the amd64 package (not part of CI; needs root and the Debian mirror):
# mmdebstrap makes a clean, minimal Debian 12 root (variant apt: Essential packages and apt
# only) from this machine's apt sources, `apt-get install ./strokebox_*.deb` resolves the
# Depends there and runs the maintainer scripts, then, inside the root (chroot, own network
# namespace): `strokebox --help`, the system user, the unit's enablement, `strokebox status`, a
# first start of the daemon as the service user (the engine is built into
# /var/lib/strokebox/engines/: the packaged model's folder is read-only to that user),
# `strokebox status` again, and a second start that reuses the engine file. Prints each step's
# output and "package check ok" at the end (about 1.5 minutes with a nearby mirror).
#   scripts/package_check.sh [amd64|arm64|DEB]   (default: the newest dist/strokebox_*_amd64.deb)
# arm64 on an amd64 machine (no binfmt_misc here, so no arm64 maintainer script can run): a
# smaller check. mmdebstrap --variant=extract unpacks the package with the closure of its
# Depends into an arm64 root, and qemu-user runs the binary from it (-L root: every library
# must come from that root, so a missing Depends shows): --help, a first start of the daemon
# as an unprivileged user (engine built into the data dir, DICOM node listening), status.
# Environment: WORK (default /tmp/strokebox-package-check, removed first), KEEP=1 keeps the root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "package_check: needs root (mmdebstrap, chroot)" >&2; exit 1; }
case "${1:-amd64}" in
  amd64 | arm64) DEB=$(ls -t dist/strokebox_*_"${1:-amd64}".deb 2>/dev/null | head -n 1 || true) ;;
  *) DEB=$1 ;;
esac
[ -n "$DEB" ] && [ -f "$DEB" ] || { echo "package_check: no package; run scripts/package.sh ${1:-amd64} first" >&2; exit 1; }
DEB=$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")
for tool in mmdebstrap unshare ip; do
  command -v "$tool" >/dev/null || { echo "package_check: $tool is missing (apt-get install mmdebstrap iproute2)" >&2; exit 1; }
done
WORK=${WORK:-/tmp/strokebox-package-check}
rm -rf "$WORK"
mkdir -p "$WORK"
ROOTFS=$WORK/root

# This machine's apt sources (one-line .list or deb822 .sources files) are the mirror.
MIRRORS=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && grep -qE '^(deb |Types:.*\bdeb\b)' "$f" && MIRRORS+=("$f")
done
[ ${#MIRRORS[@]} -gt 0 ] || { echo "package_check: no apt sources under /etc/apt" >&2; exit 1; }

DEB_ARCH=$(dpkg-deb -f "$DEB" Architecture)
if [ "$DEB_ARCH" != "$(dpkg --print-architecture)" ]; then
  [ "$DEB_ARCH" = arm64 ] || { echo "package_check: cannot check a $DEB_ARCH package here" >&2; exit 1; }
  QEMU=$(command -v qemu-aarch64-static || true)
  [ -n "$QEMU" ] || { echo "package_check: qemu-aarch64-static is missing (apt-get install qemu-user-static)" >&2; exit 1; }
  start=$(date +%s)
  echo "== mmdebstrap bookworm arm64 (variant extract: the package and its Depends, unpacked) into $ROOTFS"
  # apt inside reads the .deb by its outside path: copy it there (mmdebstrap's file-mirror-automount
  # hook would bind-mount it, and its unmount does not run in the extract variant).
  mmdebstrap --variant=extract --architectures=arm64 --quiet --include="$DEB" \
    --setup-hook='mkdir -p "$1'"$(dirname "$DEB")"'" && cp "'"$DEB"'" "$1'"$DEB"'"' bookworm "$ROOTFS" "${MIRRORS[@]}" ||
    { echo "package_check: FAILED: the Depends of $(basename "$DEB") do not resolve on Debian 12 arm64"; exit 1; }
  rm -f "$ROOTFS$DEB"
  echo "root $(du -sh "$ROOTFS" | cut -f1)"
  # qemu-user, an ARMv8.2-A core without SVE as on the Xavier NX (docs/cross_build.md); -L: the
  # loader and every library from the arm64 root, and absolute paths that exist there
  # (/etc/strokebox, /usr/share/strokebox) read from it too.
  SB=("$QEMU" -cpu cortex-a76 -L "$ROOTFS" "$ROOTFS/usr/bin/strokebox")
  rc=0
  echo; echo "== strokebox --help (arm64, qemu-user)"
  "${SB[@]}" --help; echo "(exit $?)"
  echo; echo "== shared libraries (the arm64 loader's list, LD_TRACE_LOADED_OBJECTS, all from the root)"
  LD_TRACE_LOADED_OBJECTS=1 "${SB[@]}" >"$WORK/ldd.txt" 2>&1 || true
  echo "$(grep -c '=> /' "$WORK/ldd.txt") found, $(grep -c 'not found' "$WORK/ldd.txt") not found"
  grep 'not found' "$WORK/ldd.txt" && rc=1
  # --model by its real path: the engine cache links to the model's files, and the kernel, not
  # qemu's -L, resolves a link's target.
  echo; echo "== first start under qemu-user as uid 65534 (data in $WORK/data, model from the root)"
  install -d -o 65534 -g 65534 -m 0700 "$WORK/data"
  export OMP_WAIT_POLICY=PASSIVE
  t0=$(date +%s)
  unshare --net sh -c 'ip link set lo up && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"' sh \
    "${SB[@]}" run --config /etc/strokebox/strokebox.toml --data-dir "$WORK/data" \
    --model "$ROOTFS/usr/share/strokebox/models/default" >"$WORK/daemon.log" 2>&1 &
  pid=$!
  ready=0
  for _ in $(seq 1 1200); do
    grep -q "listening on" "$WORK/daemon.log" && { ready=1; break; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  if [ $ready -eq 1 ]; then echo "daemon ready after $(( $(date +%s) - t0 )) s (emulated)"; else echo "daemon did not start"; rc=1; fi
  sed 's/^/  daemon: /' "$WORK/daemon.log" | head -40
  ls -l "$WORK"/data/engines/* || rc=1
  echo; echo "== strokebox status --data-dir $WORK/data (arm64, qemu-user)"
  "${SB[@]}" status --data-dir "$WORK/data" || rc=1
  kill -TERM $pid 2>/dev/null; wait $pid; echo "daemon exit code after SIGTERM: $?"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$ROOTFS"
  if [ $rc -ne 0 ]; then echo "package_check: FAILED ($(( $(date +%s) - start )) s)"; exit 1; fi
  echo "package check ok (arm64, emulated, no maintainer scripts): $(basename "$DEB") in $(( $(date +%s) - start )) s"
  exit 0
fi

cat >"$WORK/inside.sh" <<'INSIDE'
#!/bin/sh
# Runs inside the new root, as root, in a network namespace with only loopback.
set -u
step() { echo; echo "== $*"; }
rc=0
step "strokebox --help"
strokebox --help; echo "(exit $?)"
step "dpkg-query: the installed package"
dpkg-query -W -f='${Package} ${Version} ${Architecture} ${Status}\n' strokebox
step "system user (systemd-sysusers in postinst)"
id strokebox || rc=1
step "unit (deb-systemd-helper in postinst)"
ls -l /etc/systemd/system/multi-user.target.wants/strokebox.service || rc=1
step "conffile"
dpkg-query -W -f='${Conffiles}\n' strokebox
step "strokebox status --config /etc/strokebox/strokebox.toml (before the first start)"
strokebox status --config /etc/strokebox/strokebox.toml; echo "(exit $?)"
step "first start: strokebox run as user strokebox, as the unit does"
# What StateDirectory=strokebox does before ExecStart (systemd is not running in a chroot).
install -d -o strokebox -g strokebox -m 0700 /var/lib/strokebox
start=$(date +%s)
setpriv --reuid=strokebox --regid=strokebox --init-groups \
  strokebox run --config /etc/strokebox/strokebox.toml --data-dir /var/lib/strokebox >/tmp/daemon.log 2>&1 &
pid=$!
ready=0
for _ in $(seq 1 600); do
  grep -q "listening on" /tmp/daemon.log && { ready=1; break; }
  kill -0 $pid 2>/dev/null || break
  sleep 0.5
done
if [ $ready -eq 1 ]; then echo "daemon ready after $(( $(date +%s) - start )) s"; else echo "daemon did not start"; rc=1; fi
sed 's/^/  daemon: /' /tmp/daemon.log | head -40
step "engine file (built on first start, read-only model folder)"
ls -l /usr/share/strokebox/models/default /var/lib/strokebox/engines/* || rc=1
step "strokebox status --config /etc/strokebox/strokebox.toml"
strokebox status --config /etc/strokebox/strokebox.toml || rc=1
kill -TERM $pid 2>/dev/null; wait $pid; echo "daemon exit code after SIGTERM: $?"
step "second start: the engine file is reused"
setpriv --reuid=strokebox --regid=strokebox --init-groups \
  strokebox run --config /etc/strokebox/strokebox.toml --data-dir /var/lib/strokebox >/tmp/daemon2.log 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "listening on" /tmp/daemon2.log && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.5
done
grep "engine" /tmp/daemon2.log | sed 's/^/  daemon: /'
grep -q "engine loaded from /var/lib/strokebox/engines/" /tmp/daemon2.log || { echo "the engine was not reused"; rc=1; }
kill -TERM $pid 2>/dev/null; wait $pid; echo "daemon exit code after SIGTERM: $?"
exit $rc
INSIDE
chmod +x "$WORK/inside.sh"

start=$(date +%s)
echo "== mmdebstrap bookworm (variant apt) into $ROOTFS, mirror: ${MIRRORS[*]}"
mmdebstrap --variant=apt --quiet \
  --customize-hook="copy-in $DEB $WORK/inside.sh /tmp" \
  --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /tmp/'"$(basename "$DEB")"' >"$1/tmp/apt.log" 2>&1 || { cat "$1/tmp/apt.log"; exit 1; }' \
  --customize-hook='tail -n 25 "$1/tmp/apt.log"' \
  --customize-hook='unshare --net sh -c "ip link set lo up && chroot \"$1\" /tmp/inside.sh"' \
  bookworm "$ROOTFS" "${MIRRORS[@]}" || { echo "package_check: FAILED ($(( $(date +%s) - start )) s)"; exit 1; }
echo
echo "root size $(du -sh "$ROOTFS" | cut -f1), $(chroot "$ROOTFS" dpkg-query -W | wc -l) packages"
[ "${KEEP:-0}" = 1 ] || rm -rf "$ROOTFS"
echo "package check ok: $(basename "$DEB") installed into a clean Debian 12 root in $(( $(date +%s) - start )) s"
