#!/usr/bin/env bash
# Builds the Debian package of the box: dist/strokebox_<version>_<arch>.deb (and
# strokebox-dbgsym_<version>_<arch>.deb, the debug symbols).
#   scripts/package.sh [amd64|arm64]          (default: this machine's architecture)
# Configures and builds a Release tree with Debian's hardening flags (dpkg-buildflags) in
# build-pkg-<arch>/ (BUILD_DIR to override; JOBS, default 2), then packages it with debhelper
# (packaging/build_deb.sh: CMake install() rules, dh_installsystemd, dh_installsysusers,
# dpkg-shlibdeps) and runs lintian on the result when it is installed.
# arm64 on an amd64 machine: a cross-build with cmake/toolchain-arm64.cmake (docs/cross_build.md)
# against an arm64 sysroot made here with mmdebstrap (build-pkg-arm64/sysroot: the -dev packages
# unpacked, plus the symbols/shlibs files of every library package, which dpkg-shlibdeps reads
# to compute Depends); needs root for mmdebstrap the first time and g++-aarch64-linux-gnu,
# qemu-user-static (scripts/cross_check.sh installs them).
# Installing: apt install ./dist/strokebox_<version>_<arch>.deb (README, "Install on a box").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
HOST_ARCH=$(dpkg --print-architecture)
ARCH=${1:-$HOST_ARCH}
case "$ARCH" in
  amd64 | arm64) ;;
  *) echo "usage: $0 [amd64|arm64]" >&2; exit 2 ;;
esac
BUILD_DIR=${BUILD_DIR:-$ROOT/build-pkg-$ARCH}
JOBS=${JOBS:-2}
start=$(date +%s)

for tool in dpkg-buildpackage dh dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || { echo "package: $tool missing: run scripts/install-deps.sh" >&2; exit 1; }
done

CROSS_ARGS=()
export STROKEBOX_SYSROOT=""
if [ "$ARCH" != "$HOST_ARCH" ]; then
  [ "$ARCH" = arm64 ] && [ "$HOST_ARCH" = amd64 ] || { echo "package: cannot build $ARCH on $HOST_ARCH" >&2; exit 1; }
  for tool in aarch64-linux-gnu-g++ aarch64-linux-gnu-strip mmdebstrap; do
    command -v "$tool" >/dev/null ||
      { echo "package: $tool missing (apt-get install g++-aarch64-linux-gnu qemu-user-static mmdebstrap)" >&2; exit 1; }
  done
  SYSROOT=${STROKEBOX_ARM64_SYSROOT:-$BUILD_DIR/sysroot}
  # The build dependencies (as scripts/cross_check.sh, without the test-only ones).
  SYSROOT_PACKAGES=(
    libc6-dev libstdc++-12-dev
    libdcmtk-dev libopenjp2-7-dev libdnnl-dev ocl-icd-opencl-dev opencl-headers libonnx-dev libprotobuf-dev
    libnifti2-dev zlib1g-dev libeigen3-dev libsqlite3-dev libsystemd-dev libgpiod-dev
    libtomlplusplus-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev
  )
  stamp=$SYSROOT/.strokebox-package-sysroot
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$SYSROOT ${SYSROOT_PACKAGES[*]}" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "package: making the arm64 sysroot needs root (mmdebstrap)" >&2; exit 1; }
    echo "== arm64 sysroot in $SYSROOT (mmdebstrap --variant=extract)"
    rm -rf "$SYSROOT" "$SYSROOT.tmp"
    mkdir -p "$(dirname "$SYSROOT")"
    sources=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
      if [ -s "$f" ] && grep -q 'debian' "$f"; then sources+=("$f"); fi
    done
    include=$(IFS=,; echo "${SYSROOT_PACKAGES[*]}")
    # Keep the downloaded .debs (cleanup/apt/cache): their symbols and shlibs files are needed.
    mmdebstrap --quiet --variant=extract --architectures=arm64 --include="$include" \
      --skip=cleanup/apt/cache bookworm "$SYSROOT.tmp" "${sources[@]}"
    # Debian's -dev symlinks point at absolute paths (libz.so -> /lib/...): make them relative.
    (cd "$SYSROOT.tmp" && find usr lib -type l -lname '/*' | while read -r link; do
      ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" ".$(readlink "$link")")" "$link"
    done)
    # DCMTK's exported targets name their dependencies by absolute path: point them into the sysroot.
    find "$SYSROOT.tmp/usr/lib/aarch64-linux-gnu/cmake" "$SYSROOT.tmp/usr/share/cmake" -name '*.cmake' \
      -exec sed -i "/INTERFACE_LINK_LIBRARIES/ s#\\([\";]\\)/usr/lib/aarch64-linux-gnu/#\\1$SYSROOT/usr/lib/aarch64-linux-gnu/#g" {} +
    # dpkg-shlibdeps finds a library's package root by the DEBIAN/ folder above it: one
    # DEBIAN/symbols and DEBIAN/shlibs at the top of the sysroot, concatenated from every
    # library package, give it the packages' own dependency information (no dpkg database here).
    mkdir -p "$SYSROOT.tmp/DEBIAN"
    : >"$SYSROOT.tmp/DEBIAN/symbols"
    : >"$SYSROOT.tmp/DEBIAN/shlibs"
    for deb in "$SYSROOT.tmp"/var/cache/apt/archives/*.deb; do
      ctrl=$(mktemp -d)
      dpkg-deb -e "$deb" "$ctrl"
      [ -f "$ctrl/symbols" ] && { cat "$ctrl/symbols"; echo; } >>"$SYSROOT.tmp/DEBIAN/symbols"
      [ -f "$ctrl/shlibs" ] && cat "$ctrl/shlibs" >>"$SYSROOT.tmp/DEBIAN/shlibs"
      rm -rf "$ctrl"
    done
    sed -i '/^$/d' "$SYSROOT.tmp/DEBIAN/symbols"
    rm -f "$SYSROOT.tmp"/var/cache/apt/archives/*.deb
    echo "$SYSROOT ${SYSROOT_PACKAGES[*]}" >"$SYSROOT.tmp/.strokebox-package-sysroot"
    mv "$SYSROOT.tmp" "$SYSROOT"
  fi
  export STROKEBOX_SYSROOT=$SYSROOT   # debian/rules: dpkg-shlibdeps -l into it
  export DEB_HOST_ARCH=$ARCH          # dpkg-buildflags for the target
  export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++
  CROSS_ARGS=(-DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchain-arm64.cmake" -DCMAKE_SYSROOT="$SYSROOT")
fi

# Debian's build flags (hardening: stack protector, _FORTIFY_SOURCE, RELRO) on top of Release's -O3.
# Given as cache entries (not only the environment) so that a changed flag reaches an existing tree.
# bindnow too: with relro, a read-only GOT.
export DEB_BUILD_MAINT_OPTIONS=${DEB_BUILD_MAINT_OPTIONS:-hardening=+bindnow}
cppflags=$(dpkg-buildflags --get CPPFLAGS)
cflags="$(dpkg-buildflags --get CFLAGS) $cppflags"
cxxflags="$(dpkg-buildflags --get CXXFLAGS) $cppflags"
# GCC's note about an aarch64 ABI change of GCC 10 (the toolchain file's flag, replaced here).
[ "$ARCH" = arm64 ] && cxxflags="$cxxflags -Wno-psabi"
ldflags=$(dpkg-buildflags --get LDFLAGS)
echo "== configure and build $BUILD_DIR (Release, $ARCH, -j$JOBS)"
mkdir -p "$BUILD_DIR"
cmake -S . -B "$BUILD_DIR" "${CROSS_ARGS[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DSTROKEBOX_BUILD_TESTS=OFF -DSTROKEBOX_BUILD_BENCH=OFF -DCMAKE_C_FLAGS="$cflags" -DCMAKE_CXX_FLAGS="$cxxflags" \
  -DCMAKE_EXE_LINKER_FLAGS="$ldflags" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" >"$BUILD_DIR/package-configure.log" 2>&1 ||
  { cat "$BUILD_DIR/package-configure.log"; exit 1; }
cmake --build "$BUILD_DIR" --target strokebox -j "$JOBS" >"$BUILD_DIR/package-build.log" 2>&1 ||
  { tail -50 "$BUILD_DIR/package-build.log"; echo "package: build failed (log: $BUILD_DIR/package-build.log)" >&2; exit 1; }

echo "== package"
DEB=$(packaging/build_deb.sh "$BUILD_DIR" "$ROOT/dist" "$ARCH" | tail -n 1)
echo "$DEB ($(du -h "$DEB" | cut -f1))"
dpkg-deb -f "$DEB" Package Version Architecture Depends Installed-Size
dpkg-deb -c "$DEB" | awk '$6 == "./usr/bin/strokebox" {print "usr/bin/strokebox: " $3 " bytes"}'
if command -v lintian >/dev/null; then
  echo "== lintian"
  # lintian exits non-zero on errors; warnings (W:) and notes (I:) are printed.
  lintian --display-info "$DEB" && echo "lintian: no errors"
else
  echo "package: lintian not installed, not checked" >&2
fi
echo "package: done in $(( $(date +%s) - start )) s"
