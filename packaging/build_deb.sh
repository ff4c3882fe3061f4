#!/bin/sh
# Turns a built strokebox tree into a Debian package without rebuilding anything: stages
# packaging/debian/ in a temporary folder, writes its changelog from the CMake project version,
# and runs dpkg-buildpackage (debhelper compat 13) there; debian/rules fills the package root with
# `cmake --install BUILD_DIR`. Used by scripts/package.sh and by the packaging.deb test.
#   packaging/build_deb.sh BUILD_DIR OUT_DIR [ARCH]      (ARCH: default the host's)
# Writes OUT_DIR/strokebox_<version>_<arch>.deb (and strokebox-dbgsym_<version>_<arch>.deb unless
# DEB_BUILD_OPTIONS has noddebs); prints the .deb's path last.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 BUILD_DIR OUT_DIR [ARCH]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
host_arch=$(dpkg --print-architecture)
arch=${3:-$host_arch}
for tool in dpkg-buildpackage dh dpkg-shlibdeps cmake; do
  command -v $tool >/dev/null 2>&1 || { echo "build_deb: $tool is missing (apt-get install debhelper dpkg-dev cmake)" >&2; exit 3; }
done
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || { echo "build_deb: no CMAKE_PROJECT_VERSION in $build/CMakeCache.txt" >&2; exit 1; }
[ -x "$build/strokebox" ] || { echo "build_deb: $build/strokebox is not built" >&2; exit 1; }

stage=$(mktemp -d "${TMPDIR:-/tmp}/strokebox-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src"
cp -r "$root/packaging/debian" "$stage/src/debian"
maintainer=$(sed -n 's/^Maintainer: //p' "$root/packaging/debian/control")
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$stage/src/debian/changelog" <<END
strokebox ($version) bookworm; urgency=medium

  * Built from commit $commit.

 -- $maintainer  $(date -R)
END

cross=""
[ "$arch" != "$host_arch" ] && cross="--host-arch=$arch"
log=$stage/dpkg-buildpackage.log
# -b: binary only; -d: the build dependencies are those of the tree already built.
if ! (cd "$stage/src" && STROKEBOX_BUILD_DIR="$build" dpkg-buildpackage -b -us -uc -d $cross) >"$log" 2>&1; then
  cat "$log" >&2
  echo "build_deb: dpkg-buildpackage failed" >&2
  exit 1
fi
deb=strokebox_${version}_${arch}.deb
[ -f "$stage/$deb" ] || { cat "$log" >&2; echo "build_deb: no $deb" >&2; exit 1; }
cp "$stage/$deb" "$out/"
for ddeb in "$stage"/strokebox-dbgsym_*deb; do
  [ -f "$ddeb" ] && cp "$ddeb" "$out/"
done
echo "$out/$deb"
