#!/usr/bin/env bash
# Installs the Debian 12 packages strokebox needs to build, test and demo, when missing.
# Safe to run repeatedly: does nothing when everything is present.
#   scripts/install-deps.sh          the build, test and demo packages
#   scripts/install-deps.sh image    those plus the box image's (scripts/image.sh, image_test.sh)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libdcmtk-dev dcmtk                       # DICOM (dcmdata, dcmnet, dcmseg) and storescu/echoscu
  libdnnl-dev ocl-icd-opencl-dev opencl-headers   # oneDNN (its CMake config needs OpenCL)
  libonnx-dev libprotobuf-dev              # ONNX model import
  libopenjp2-7-dev                         # JPEG 2000 pixel data (OpenJPEG; DCMTK has no codec)
  libnifti2-dev zlib1g-dev                 # NIfTI
  libeigen3-dev                            # geometry
  libsqlite3-dev sqlite3                   # index, jobs, results
  libsystemd-dev                           # sd_notify
  libgpiod-dev gpiod                       # status LED and button (libgpiod C++ API); gpioinfo
  libtomlplusplus-dev nlohmann-json3-dev   # config (TOML), reports (JSON)
  libgtest-dev libgmock-dev libbenchmark-dev
  mricron-data                             # Colin27 head for the phantoms
  dicom3tools orthanc curl                 # tests: dciodvfy validator, a real PACS and its REST API
  libcpp-httplib-dev libssl-dev            # status page (HTTP); TLS for DICOM (DCMTK dcmtls)
  chromium                                 # tests: the status page rendered in headless Chromium
  clang libclang-rt-14-dev                 # fuzzing (libFuzzer) and sanitizers
  python3-pydicom                          # tests: pydicom's test files sent to the node
  python3-torch python3-onnx python3-numpy python3-scipy python3-nibabel   # tools/ (training, checks)
  debhelper dpkg-dev fakeroot lintian      # scripts/package.sh and the packaging.deb test
)
# Optional: the arm64 box image (not needed by the build, the tests or CI).
IMAGE_PACKAGES=(
  g++-aarch64-linux-gnu qemu-user-static mmdebstrap arch-test   # scripts/package.sh arm64, the root's maintainer scripts
  e2fsprogs fdisk dosfstools mtools        # scripts/image.sh: partitions and file systems without loop devices
  qemu-system-arm                          # scripts/image_test.sh: qemu-system-aarch64 (TCG)
)
if [ "${1:-}" = image ]; then
  PACKAGES+=("${IMAGE_PACKAGES[@]}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
