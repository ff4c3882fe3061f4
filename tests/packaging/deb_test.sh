#!/bin/sh
# ctest packaging.deb: builds the Debian package from this build tree (packaging/build_deb.sh:
# `cmake --install` + debhelper, nothing recompiled) and checks its file list (dpkg-deb -c),
# control fields (dpkg-deb -f), conffiles and maintainer scripts. Exit 77 (skipped) when
# debhelper or dpkg-dev is not installed (scripts/install-deps.sh installs them).
#   tests/packaging/deb_test.sh BUILD_DIR
set -eu
build=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
for tool in dpkg-buildpackage dh dpkg-deb dpkg-shlibdeps; do
  if ! command -v $tool >/dev/null 2>&1; then
    echo "SKIP: $tool is not installed (apt-get install debhelper dpkg-dev; scripts/install-deps.sh)"
    exit 77
  fi
done
[ -x "$build/strokebox" ] || { echo "FAIL: $build/strokebox is not built"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/strokebox-deb-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

start=$(date +%s)
# noddebs: strip without keeping a -dbgsym package (xz of the debug info is the slow part).
deb=$(DEB_BUILD_OPTIONS="noddebs${DEB_BUILD_OPTIONS:+ $DEB_BUILD_OPTIONS}" "$root/packaging/build_deb.sh" "$build" "$work/out" | tail -n 1)
echo "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) in $(( $(date +%s) - start )) s"

# File list: every path the box relies on, and nothing outside the expected folders.
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | sort >"$work/files"
for f in /usr/bin/strokebox /lib/systemd/system/strokebox.service /etc/strokebox/strokebox.toml \
         /usr/share/strokebox/models/default/model.onnx /usr/share/strokebox/models/default/model.json \
         /usr/lib/sysusers.d/strokebox.conf /usr/share/doc/strokebox/copyright \
         /usr/share/doc/strokebox/operations.md /usr/share/man/man1/strokebox.1.gz; do
  grep -qx "$f" "$work/files" || fail "$f is not in the package"
done
unexpected=$(grep -vE '^/$|^/(etc|etc/strokebox(/.*)?|lib|lib/systemd|lib/systemd/system(/.*)?|usr|usr/bin(/.*)?|usr/lib|usr/lib/sysusers\.d(/.*)?|usr/share|usr/share/(strokebox|doc/strokebox|man|man/man1)(/.*)?|usr/share/doc)$' "$work/files" || true)
[ -z "$unexpected" ] || fail "unexpected paths in the package: $unexpected"
mode=$(dpkg-deb -c "$deb" | awk '$6 == "./usr/bin/strokebox" {print $1 " " $2}')
[ "$mode" = "-rwxr-xr-x root/root" ] || fail "/usr/bin/strokebox is '$mode', want -rwxr-xr-x root/root"

# Control fields.
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = strokebox ] || fail "Package is '$(field Package)'"
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ "$(field Version)" = "$version" ] || fail "Version is '$(field Version)', the project's is '$version'"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is '$(field Architecture)'"
depends=$(field Depends)
# dpkg-shlibdeps: the libraries the binary links, not a hand-written list.
for dep in libc6 libstdc++6 libdnnl libdcmtk libsqlite3-0 libsystemd0 systemd; do
  echo "$depends" | grep -q "\\b$dep" || fail "Depends lacks $dep: $depends"
done
[ -n "$(field Maintainer)" ] && [ -n "$(field Description)" ] || fail "Maintainer or Description missing"

# Conffile and maintainer scripts (debhelper's systemd and sysusers snippets).
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/strokebox/strokebox.toml "$work/control/conffiles" || fail "strokebox.toml is not a conffile"
grep -q 'deb-systemd-helper' "$work/control/postinst" || fail "postinst does not enable the unit (dh_installsystemd)"
grep -q 'systemd-sysusers' "$work/control/postinst" || fail "postinst does not create the user (dh_installsysusers)"
grep -q 'deb-systemd-invoke' "$work/control/prerm" || fail "prerm does not stop the service"

# The packaged unit and configuration agree on the paths.
dpkg-deb -x "$deb" "$work/root"
grep -q -- '--config /etc/strokebox/strokebox.toml' "$work/root/lib/systemd/system/strokebox.service" ||
  fail "the unit does not read /etc/strokebox/strokebox.toml"
grep -q '^dir = "/usr/share/strokebox/models/default"' "$work/root/etc/strokebox/strokebox.toml" ||
  fail "the configuration's [model] dir is not the packaged model"
# Every network the packaged model.json names is packaged beside it (an ensemble has several).
nets=$(grep -o '"[A-Za-z0-9_.-]*\.onnx"' "$work/root/usr/share/strokebox/models/default/model.json" | tr -d '"' | sort -u)
[ -n "$nets" ] || fail "the packaged model.json names no network"
for net in $nets; do
  [ -f "$work/root/usr/share/strokebox/models/default/$net" ] || fail "network $net of model.json is not in the package"
done

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed; files in the package:"; cat "$work/files"
  exit 1
fi
echo "PASS: $(wc -l <"$work/files") paths, Depends: $depends ($(( $(date +%s) - start )) s)"
