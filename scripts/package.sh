#!/usr/bin/env bash
# Builds the Debian package of the box: dist/strokebox_<version>_<arch>.deb (and strokebox-dbgsym_<version>_<arch>.deb).
#   scripts/package.sh [amd64|arm64]          (default: this machine's architecture)
# Configures and builds a Release tree with Debian's hardening flags (dpkg-buildflags) in
# build-pkg-<arch>/ (BUILD_DIR to override; JOBS, default 2), then packages it with debhelper
# (packaging/build_deb.sh: CMake install() rules, dh_installsystemd, dh_installsysusers,
# dpkg-shlibdeps) and runs lintian on the result when it is installed.
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

if [ "$ARCH" != "$HOST_ARCH" ]; then
  echo "package: $ARCH on a $HOST_ARCH machine needs the cross-build (cmake/toolchain-$ARCH.cmake), not done yet" >&2
  exit 1
fi
for tool in dpkg-buildpackage dh dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || { echo "package: $tool missing: run scripts/install-deps.sh" >&2; exit 1; }
done

# Debian's build flags (hardening: stack protector, _FORTIFY_SOURCE, RELRO) on top of Release's -O3.
# Given as cache entries (not only the environment) so that a changed flag reaches an existing tree.
# bindnow too: with relro, a read-only GOT.
export DEB_BUILD_MAINT_OPTIONS=${DEB_BUILD_MAINT_OPTIONS:-hardening=+bindnow}
cppflags=$(dpkg-buildflags --get CPPFLAGS)
cflags="$(dpkg-buildflags --get CFLAGS) $cppflags"
cxxflags="$(dpkg-buildflags --get CXXFLAGS) $cppflags"
ldflags=$(dpkg-buildflags --get LDFLAGS)
echo "== configure and build $BUILD_DIR (Release, -j$JOBS)"
mkdir -p "$BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DSTROKEBOX_BUILD_TESTS=OFF -DSTROKEBOX_BUILD_BENCH=OFF -DCMAKE_C_FLAGS="$cflags" -DCMAKE_CXX_FLAGS="$cxxflags" \
  -DCMAKE_EXE_LINKER_FLAGS="$ldflags" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" >"$BUILD_DIR/package-configure.log" 2>&1 ||
  { cat "$BUILD_DIR/package-configure.log"; exit 1; }
cmake --build "$BUILD_DIR" --target strokebox -j "$JOBS" >"$BUILD_DIR/package-build.log" 2>&1 ||
  { tail -50 "$BUILD_DIR/package-build.log"; echo "package: build failed (log: $BUILD_DIR/package-build.log)" >&2; exit 1; }

echo "== package"
DEB=$(packaging/build_deb.sh "$BUILD_DIR" "$ROOT/dist" "$ARCH" | tail -n 1)
echo "$DEB ($(du -h "$DEB" | cut -f1))"
dpkg-deb -f "$DEB" Package Version Architecture Depends Installed-Size
if command -v lintian >/dev/null; then
  echo "== lintian"
  # lintian exits non-zero on errors; warnings (W:) and notes (I:) are printed.
  lintian --display-info "$DEB" && echo "lintian: no errors"
else
  echo "package: lintian not installed, not checked" >&2
fi
