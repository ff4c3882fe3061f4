#!/usr/bin/env bash
# Runs hal_test's GpioKernel tests (hal/gpio.cc over libgpiod) against a real kernel GPIO chip:
# boots Debian's own kernel (the version linux-image-amd64 depends on) in a qemu/KVM VM whose
# initramfs holds busybox, hal_test with its shared libraries, and the kernel's gpio-mockup
# driver, and runs `hal_test --gtest_filter='GpioKernel.*:Gpio*'` there. Nothing is installed
# into the host's boot: the kernel and its module live under BUILD_DIR/gpio-vm/.
#
# Usage: scripts/gpio_kernel_check.sh [BUILD_DIR]   (default: build; hal_test is built there)
# Exits 0 only when the GpioKernel tests ran in the VM (none skipped) and every test passed.
# Environment: GPIO_VM_TIMEOUT (seconds for the VM, default 120); GPIO_VM_ACCEL (kvm, tcg or
# auto: KVM, falling back to TCG when KVM is absent or its guest hangs); GPIO_VM_GTEST_ARGS
# (more hal_test options, e.g. --gtest_repeat=20).
#
# Debian 12's kernels are built without gpio-mockup (and gpio-sim), so when the kernel has no
# gpio-mockup module the script builds it out of tree, for that exact kernel, from Debian's
# linux-source package (drivers/gpio/gpio-mockup.c plus kernel/irq/irq_sim.c, which it needs
# and which that kernel does not contain), against the matching linux-headers package.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=$(realpath -m "${1:-$ROOT/build}")
WORK=$BUILD_DIR/gpio-vm
TIMEOUT=${GPIO_VM_TIMEOUT:-120}
MARKER=STROKEBOX-GPIO-VM
start=$(date +%s)

say() { echo "gpio_kernel_check: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# install_missing PKG...: apt-get installs the packages that are not installed (as install-deps.sh).
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# 1. Tools, and the kernel the linux-image-amd64 meta-package currently points at.
install_missing qemu-system-x86 busybox-static cpio xz-utils gzip binutils
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kpkg" ] || die "cannot tell which kernel linux-image-amd64 depends on (apt-get update?)"
KVER=${kpkg#linux-image-}                       # 6.1.0-56-amd64
kdebver=$(apt-cache show --no-all-versions "$kpkg" | awk '/^Version:/ {print $2; exit}')
say "kernel $KVER (package $kpkg $kdebver)"

mkdir -p "$WORK/deb"
KROOT=$WORK/kernel-$KVER
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
if [ ! -f "$VMLINUZ" ]; then
  ( cd "$WORK/deb" && apt-get download "$kpkg=$kdebver" ) >/dev/null 2>&1 ||
    ( cd "$WORK/deb" && apt-get download "$kpkg" ) || die "apt-get download $kpkg failed"
  rm -rf "$KROOT.tmp"
  dpkg-deb -x "$(ls -t "$WORK"/deb/"$kpkg"_*.deb | head -1)" "$KROOT.tmp"
  mv "$KROOT.tmp" "$KROOT"
fi
MODDIR=$KROOT/lib/modules/$KVER

# ---------------------------------------------------------------------------------------------
# 2. gpio-mockup: the kernel's own module (and what it depends on), or one built for it.
MODULES=()   # in load order, decompressed, under $WORK/modules-$KVER
mods_out=$WORK/modules-$KVER
mkdir -p "$mods_out"
dep_line=$(grep -E '(^|/)gpio-mockup\.ko(\.xz|\.zst|\.gz)?:' "$MODDIR/modules.dep" 2>/dev/null || true)
if [ -n "$dep_line" ]; then
  # modules.dep: "target: dep1 dep2" with each dependency's own dependencies listed after it.
  rels=$(echo "$dep_line" | tr -d ':' | awk '{for (i = NF; i > 1; --i) print $i; print $1}')
  for rel in $rels; do
    src=$MODDIR/$rel
    base=$(basename "$rel"); base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
    case "$rel" in
      *.xz) xz -dc "$src" >"$mods_out/$base" ;;
      *.zst) zstd -dcq "$src" >"$mods_out/$base" ;;
      *.gz) gzip -dc "$src" >"$mods_out/$base" ;;
      *) cp "$src" "$mods_out/$base" ;;
    esac
    MODULES+=("$mods_out/$base")
  done
  say "using the kernel's gpio-mockup module (${#MODULES[@]} module(s) to load)"
else
  built=$WORK/mockup-build-$KVER/gpio-mockup.ko
  if [ ! -f "$built" ]; then
    say "$KVER has no gpio-mockup module (CONFIG_GPIO_MOCKUP unset): building it from linux-source"
    srcver=$(echo "$KVER" | cut -d. -f1,2)       # 6.1
    install_missing "linux-headers-$KVER" make gcc
    spkg=linux-source-$srcver
    if ! ls "$WORK"/deb/"$spkg"_"$kdebver"_all.deb >/dev/null 2>&1; then
      ( cd "$WORK/deb" && apt-get download "$spkg=$kdebver" ) >/dev/null 2>&1 ||
        die "apt-get download $spkg=$kdebver failed (the source must match the kernel exactly)"
    fi
    sdir=$WORK/mockup-build-$KVER
    rm -rf "$sdir" && mkdir -p "$sdir/src"
    # Only three files are needed; the tarball streams through once (about 30 s).
    dpkg-deb --fsys-tarfile "$WORK/deb/${spkg}_${kdebver}_all.deb" |
      tar -xO "./usr/src/$spkg.tar.xz" |
      tar -xJ -C "$sdir/src" --strip-components=1 \
        "$spkg/drivers/gpio/gpio-mockup.c" "$spkg/drivers/gpio/gpiolib.h" "$spkg/kernel/irq/irq_sim.c"
    cp "$sdir/src/drivers/gpio/gpio-mockup.c" "$sdir/gpio-mockup-main.c"
    cp "$sdir/src/drivers/gpio/gpiolib.h" "$sdir/gpiolib.h"
    # irq_sim.c runs the simulated interrupt with handle_simple_irq(irq_to_desc(irq)), and
    # irq_to_desc is not exported to modules; generic_handle_irq(irq) (exported) calls the same
    # handler, which irq_sim's domain installed, for the same descriptor.
    sed 's/handle_simple_irq(irq_to_desc(\([a-z_]*\)))/generic_handle_irq(\1)/' \
      "$sdir/src/kernel/irq/irq_sim.c" >"$sdir/irq_sim.c"
    printf 'obj-m := gpio-mockup.o\ngpio-mockup-y := gpio-mockup-main.o irq_sim.o\n' >"$sdir/Kbuild"
    make -s -C "/usr/src/linux-headers-$KVER" M="$sdir" modules >"$sdir/make.log" 2>&1 ||
      { cat "$sdir/make.log" >&2; die "building gpio-mockup.ko failed"; }
    [ -f "$built" ] || die "make did not produce $built"
  fi
  cp "$built" "$mods_out/gpio-mockup.ko"
  MODULES=("$mods_out/gpio-mockup.ko")
  say "using gpio-mockup built for $KVER from linux-source ($built)"
fi
MOCKUP_PARAMS="gpio_mockup_ranges=-1,8"
NAMED=0
if grep -aq 'parmtype=gpio_mockup_named_lines:' "${MODULES[-1]}"; then   # its .modinfo section
  MOCKUP_PARAMS="$MOCKUP_PARAMS gpio_mockup_named_lines=1"
  NAMED=1
fi

# ---------------------------------------------------------------------------------------------
# 3. hal_test, and the initramfs: busybox, hal_test + its libraries + the loader, the modules.
if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake --build "$BUILD_DIR" --target hal_test -j "${JOBS:-2}" >/dev/null || die "building hal_test failed"
else
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" --target hal_test -j "${JOBS:-2}" >/dev/null || die "building hal_test failed"
fi
HAL_TEST=$BUILD_DIR/tests/hal_test
[ -x "$HAL_TEST" ] || die "no $HAL_TEST"

RFS=$WORK/initramfs
rm -rf "$RFS"
mkdir -p "$RFS"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,modules}
cp /bin/busybox "$RFS/bin/busybox"
strip --strip-debug -o "$RFS/hal_test" "$HAL_TEST"
for lib in $(ldd "$HAL_TEST" | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(/ {print $1}'); do
  cp -L --parents "$lib" "$RFS/"
done
: >"$RFS/modules/order"
for m in "${MODULES[@]}"; do
  cp "$m" "$RFS/modules/"
  params=""
  [ "$m" = "${MODULES[-1]}" ] && params=$MOCKUP_PARAMS
  echo "$(basename "$m") $params" >>"$RFS/modules/order"
done
cat >"$RFS/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
exec </dev/console >/dev/console 2>&1
echo "$MARKER: kernel \$(uname -r)"
result=FAIL
while read -r mod params; do
  insmod /modules/\$mod \$params || echo "$MARKER: insmod \$mod failed"
done </modules/order
chip=\$(ls /sys/kernel/debug/gpio-mockup 2>/dev/null | head -n 1)
i=0
while [ -n "\$chip" ] && [ ! -e /dev/\$chip ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i + 1)); done
if [ -n "\$chip" ] && [ -e /dev/\$chip ]; then
  echo "$MARKER: gpio-mockup chip \$chip (\$(cat /sys/kernel/debug/gpio | grep "^\$chip:"))"
  export STROKEBOX_GPIO_MOCKUP_CHIP=\$chip
  export STROKEBOX_GPIO_MOCKUP_DEBUGFS=/sys/kernel/debug/gpio-mockup/\$chip
  export STROKEBOX_GPIO_MOCKUP_NAMED_LINES=$NAMED
  export HOME=/tmp TMPDIR=/tmp
  /hal_test --gtest_color=no --gtest_filter='GpioKernel.*:Gpio*' ${GPIO_VM_GTEST_ARGS:-}
  rc=\$?
  [ \$rc -eq 0 ] && result=PASS
  echo "$MARKER: hal_test exit code \$rc"
else
  echo "$MARKER: no gpio-mockup chip appeared"
fi
echo "$MARKER: RESULT \$result"
poweroff -f
EOF
chmod +x "$RFS/init"
( cd "$RFS" && find . -print0 | cpio --null -o -H newc -R +0:+0 --quiet ) | gzip -1 >"$WORK/initrd.gz"
say "initramfs $(du -h "$WORK/initrd.gz" | cut -f1)"

# ---------------------------------------------------------------------------------------------
# 4. Boot, capture the console, judge.
LOG=$WORK/console.log
# run_vm ACCEL_ARGS...: boots the VM in the background (pid in $vm_pid), console to $LOG.raw.
run_vm() {
  : >"$LOG.raw"
  timeout "$TIMEOUT" qemu-system-x86_64 "$@" -m 512 -smp 1 -nographic -no-reboot \
    -kernel "$VMLINUZ" -initrd "$WORK/initrd.gz" \
    -append 'console=ttyS0 quiet panic=-1' </dev/null >"$LOG.raw" 2>&1 &
  vm_pid=$!
}
ACCEL=${GPIO_VM_ACCEL:-auto}   # kvm | tcg | auto (KVM, or TCG when KVM is absent or hangs)
if [ "$ACCEL" = auto ]; then
  ACCEL=tcg
  [ -r /dev/kvm ] && [ -w /dev/kvm ] && ACCEL=kvm-probe
fi
vm_start=$(date +%s)
case "$ACCEL" in
  kvm | kvm-probe) run_vm -enable-kvm ;;
  tcg) run_vm -accel tcg ;;
  *) die "GPIO_VM_ACCEL must be kvm, tcg or auto, not '$ACCEL'" ;;
esac
if [ "$ACCEL" = kvm-probe ]; then
  # Nested KVM without the host's CPU features (some cloud VMs) hangs after the boot loader
  # instead of failing; the VM's init prints its first line within seconds on working KVM.
  for _ in $(seq 1 "${GPIO_VM_KVM_PROBE_S:-30}"); do
    grep -q "^$MARKER: kernel" "$LOG.raw" 2>/dev/null && break
    kill -0 "$vm_pid" 2>/dev/null || break
    sleep 1
  done
  if ! grep -q "^$MARKER: kernel" "$LOG.raw" 2>/dev/null; then
    kill "$vm_pid" 2>/dev/null || true
    wait "$vm_pid" 2>/dev/null || true
    say "the KVM guest did not reach its init in ${GPIO_VM_KVM_PROBE_S:-30} s (broken nested KVM?); using TCG"
    cp "$LOG.raw" "$LOG.kvm"
    vm_start=$(date +%s)
    run_vm -accel tcg
    ACCEL=tcg
  fi
fi
set +e
wait "$vm_pid"
qemu_rc=$?
set -e
say "VM ran with ${ACCEL%-probe}"
tr -d '\r' <"$LOG.raw" >"$LOG"
vm_s=$(( $(date +%s) - vm_start ))
[ $qemu_rc -eq 124 ] && say "the VM did not finish within ${TIMEOUT} s"

grep -E "^$MARKER:|^\[  (FAILED|SKIPPED) +\] Gpio|^\[==========\]|^\[  (PASSED|FAILED|SKIPPED) +\]" "$LOG" || true
ran=$(grep -cE '^\[ +OK \] GpioKernel\.' "$LOG" || true)
skipped=$(grep -cE '^\[  SKIPPED \] GpioKernel\.' "$LOG" || true)
say "VM ${vm_s} s, whole check $(( $(date +%s) - start )) s; console log: $LOG"
if ! grep -q "^$MARKER: RESULT PASS" "$LOG"; then
  say "FAIL: the tests in the VM did not pass (see $LOG)"
  exit 1
fi
if [ "$ran" -eq 0 ] || [ "$skipped" -ne 0 ]; then
  say "FAIL: GpioKernel tests passed=$ran skipped=$skipped; they must all run against the chip"
  exit 1
fi
say "PASS: $ran GpioKernel tests ran against the kernel's gpio-mockup chip and passed"
