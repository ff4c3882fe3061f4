#!/usr/bin/env bash
# Cross-builds strokebox for arm64 (the Jetson Xavier NX target) and runs the unit suites under
# qemu-user. Not part of CI (slow); see docs/cross_build.md.
# Usage: scripts/cross_check.sh arm64 [ctest options, e.g. -R Config]
#
# How (chosen so the host's own amd64 -dev packages are never touched):
#  - host: g++-aarch64-linux-gnu (the compilers of crossbuild-essential-arm64, without
#    dpkg-cross, which would only upgrade perl), qemu-user-static, mmdebstrap. None of them
#    replaces anything; the install is simulated first and refused if apt would remove a package.
#  - no dpkg multiarch: a `libfoo-dev:arm64` that is not Multi-Arch: same would remove
#    `libfoo-dev:amd64`. Instead the :arm64 -dev packages are unpacked (mmdebstrap
#    --variant=extract, no maintainer scripts, so no emulation needed) into a separate sysroot,
#    build-arm64/sysroot, from the mirror the host's apt uses. Absolute symlinks in it are made
#    relative so the cross linker never follows them into the host's /usr.
#  - cmake/toolchain-arm64.cmake: CMAKE_SYSROOT, find-root-path modes and pkg-config all point
#    into the sysroot; CMAKE_CROSSCOMPILING_EMULATOR runs the test binaries (and gtest test
#    discovery) with `qemu-aarch64-static -L build-arm64/sysroot`.
#  - tests: `ctest -L unit -LE packaging` (the issue asks for the unit suites; the integration
#    suites start the real daemon and amd64 peers and need an arm64 machine; packaging.deb makes
#    a host-architecture package). A unit test that needs a host
#    program (dcmtk tools, dciodvfy, python3 with torch, systemd-analyze) finds it through
#    qemu's fallback to host paths or skips itself; see docs/cross_build.md for the list.
# Prints ctest's summary and the wall time; exits non-zero when a unit test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=${1:-}
if [ "$ARCH" != arm64 ]; then
  echo "usage: scripts/cross_check.sh arm64 [ctest options]" >&2
  exit 2
fi
shift
start=$(date +%s)
BUILD=build-arm64
SYSROOT=$PWD/$BUILD/sysroot
JOBS=${JOBS:-2}

HOST_PACKAGES=(g++-aarch64-linux-gnu qemu-user-static mmdebstrap cmake pkg-config)
# The arm64 build dependencies: install-deps.sh's -dev packages, plus the C/C++ runtime.
SYSROOT_PACKAGES=(
  libc6-dev libstdc++-12-dev
  libdcmtk-dev libopenjp2-7-dev libdnnl-dev ocl-icd-opencl-dev opencl-headers libonnx-dev libprotobuf-dev
  libnifti2-dev zlib1g-dev libeigen3-dev libsqlite3-dev libsystemd-dev libgpiod-dev
  libtomlplusplus-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcpp-httplib-dev libssl-dev
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# apt is shared with other users of this machine: wait for its locks instead of failing
# (never kill whoever holds them); any other apt error stops the script.
apt_get() {
  local attempt errors
  errors=$(mktemp)
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 "$@" 2>"$errors"; then
      rm -f "$errors"
      return 0
    fi
    cat "$errors" >&2
    grep -qi 'lock' "$errors" || break
    echo "cross_check: apt is busy (attempt $attempt of 10), retrying in 30 s" >&2
    sleep 30
  done
  rm -f "$errors"
  return 1
}

# 1. Host tools, only when missing, never at the price of removing a package.
missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross_check: installing ${missing[*]}" >&2
  apt_get update -qq
  plan=$(apt_get install -s --no-install-recommends "${missing[@]}")
  if grep -q '^Remv ' <<<"$plan"; then
    echo "cross_check: refusing, apt would remove:" >&2
    grep '^Remv ' <<<"$plan" >&2
    exit 1
  fi
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The arm64 sysroot, remade when the package list or its place changes (rm -rf it to refresh).
stamp="$SYSROOT/.strokebox-packages"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$SYSROOT ${SYSROOT_PACKAGES[*]}" ]; then
  echo "cross_check: making the arm64 sysroot in $BUILD/sysroot" >&2
  mkdir -p "$BUILD"
  rm -rf "$SYSROOT" "$SYSROOT.tmp"
  sources=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -s "$f" ] && grep -q 'debian' "$f"; then sources+=("$f"); fi
  done
  include=$(IFS=,; echo "${SYSROOT_PACKAGES[*]}")
  $SUDO mmdebstrap --quiet --variant=extract --architectures=arm64 --include="$include" \
    bookworm "$SYSROOT.tmp" "${sources[@]}"
  if [ -n "$SUDO" ]; then $SUDO chown -R "$(id -u):$(id -g)" "$SYSROOT.tmp"; fi
  # Debian's -dev symlinks point at absolute paths (libz.so -> /lib/...): make them relative.
  (cd "$SYSROOT.tmp" && find usr lib -type l -lname '/*' | while read -r link; do
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" ".$(readlink "$link")")" "$link"
  done)
  # DCMTK's exported targets name their dependencies by absolute path
  # (/usr/lib/aarch64-linux-gnu/libtiff.so): point those into the sysroot.
  find "$SYSROOT.tmp/usr/lib/aarch64-linux-gnu/cmake" "$SYSROOT.tmp/usr/share/cmake" -name '*.cmake' \
    -exec sed -i "/INTERFACE_LINK_LIBRARIES/ s#\\([\";]\\)/usr/lib/aarch64-linux-gnu/#\\1$SYSROOT/usr/lib/aarch64-linux-gnu/#g" {} +
  echo "$SYSROOT ${SYSROOT_PACKAGES[*]}" >"$SYSROOT.tmp/.strokebox-packages"
  mv "$SYSROOT.tmp" "$SYSROOT"
fi

# 3. Build everything (library, binary, tests, benchmarks) for arm64.
cmake --no-warn-unused-cli -S . -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-arm64.cmake -DCMAKE_SYSROOT="$SYSROOT" \
  -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build "$BUILD" -j "$JOBS"
file "$BUILD/strokebox" 2>/dev/null || true

# 4. The unit suites under qemu-user.
cd "$BUILD"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
status=0
# -LE packaging: packaging.deb packages a tree for the host's architecture (amd64 tools, dh_strip
# and dpkg-shlibdeps, cannot read arm64 binaries); the arm64 package has its own check.
ctest -L unit -LE packaging --output-on-failure --timeout 3600 -j "$JOBS" "$@" || status=$?
echo "cross_check: arm64 build and unit suites under qemu-user took $(( $(date +%s) - start )) s"
exit $status
