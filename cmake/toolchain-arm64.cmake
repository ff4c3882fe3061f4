# Cross-compiles strokebox for arm64 (Jetson Xavier NX, Debian 12) with Debian's
# g++-aarch64-linux-gnu against an arm64 sysroot made by scripts/cross_check.sh (mmdebstrap,
# the :arm64 -dev packages). Every header, library, CMake package and .pc file comes from the
# sysroot, never from the host; only programs (protoc, ...) are the host's.
# Sysroot: -DCMAKE_SYSROOT=DIR, else $STROKEBOX_ARM64_SYSROOT, else build-arm64/sysroot.
# Test binaries run through qemu-user (CMAKE_CROSSCOMPILING_EMULATOR), also for gtest discovery.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

if(NOT CMAKE_SYSROOT)
  if(DEFINED ENV{STROKEBOX_ARM64_SYSROOT})
    set(CMAKE_SYSROOT "$ENV{STROKEBOX_ARM64_SYSROOT}")
  else()
    get_filename_component(CMAKE_SYSROOT "${CMAKE_CURRENT_LIST_DIR}/../build-arm64/sysroot" ABSOLUTE)
  endif()
endif()
# try_compile projects re-read this file: hand them the same sysroot.
set(ENV{STROKEBOX_ARM64_SYSROOT} "${CMAKE_SYSROOT}")

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads only the sysroot's .pc files and prefixes their paths with it.
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${CMAKE_SYSROOT}")
set(ENV{PKG_CONFIG_LIBDIR}
    "${CMAKE_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${CMAKE_SYSROOT}/usr/lib/pkgconfig:${CMAKE_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# GCC's note that C++17 changed how some structs are passed on aarch64 concerns only code
# mixing pre-GCC-10 objects; everything here is built by one compiler.
set(CMAKE_CXX_FLAGS_INIT "-Wno-psabi")

# qemu's default CPU ("max") has SVE, which oneDNN would use and the Xavier NX's Carmel cores
# (ARMv8.2-A) lack: emulate an ARMv8.2-A core without SVE instead.
set(STROKEBOX_QEMU_CPU cortex-a76 CACHE STRING "CPU that qemu-user emulates for the tests")
find_program(STROKEBOX_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64 REQUIRED)
set(CMAKE_CROSSCOMPILING_EMULATOR "${STROKEBOX_QEMU_AARCH64};-cpu;${STROKEBOX_QEMU_CPU};-L;${CMAKE_SYSROOT}")
