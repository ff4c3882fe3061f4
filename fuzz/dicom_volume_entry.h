// The dataset-to-volume path the pipeline runs on every received file, as one function of raw
// bytes: shared by the libFuzzer target (fuzz/dicom_volume_fuzzer.cc) and the unit test that
// replays fuzz/corpus/dicom_volume (tests/image/fuzz_regression_test.cc). Header-only; links
// against the image library only.
#pragma once

#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "image/dicom_series.h"
#include "image/series_classifier.h"

namespace fuzzentry {

/// A scratch file for the bytes under test, in /dev/shm when it exists (fast), one per process.
inline std::string scratch_path() {
  static const std::string path = [] {
    std::error_code ec;
    const std::filesystem::path dir =
        std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
    return (dir / ("strokebox-fuzz-" + std::to_string(::getpid()) + ".dcm")).string();
  }();
  return path;
}

/// Runs `bytes` through read_dicom_header -> classify_series -> select_diffusion_series ->
/// sort_slices/assemble_volume, the path of Pipeline::process_study. A single-frame file is
/// paired with a copy of itself one slice further along the normal, so that pixel decoding is
/// reached too. Every failure must come back as a Status; a crash, sanitizer report, leak or
/// hang is a bug. Returns 0 (libFuzzer's convention); `outcome`, when given, gets a one-line
/// summary ("header: ...", "volume: ok 4x3x2", ...).
inline int run_dicom_volume(const uint8_t* data, size_t size, std::string* outcome = nullptr) {
  const std::string path = scratch_path();
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return 0;
    if (size > 0) std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  auto header = image::read_dicom_header(path);
  if (!header.ok()) {
    if (outcome) *outcome = "header: " + std::string(base::code_name(header.status().code()));
    std::remove(path.c_str());
    return 0;
  }
  image::DicomSeries series = *header;
  (void)image::classify_series(series);
  (void)image::select_diffusion_series({series});
  if (series.instances.size() == 1) {
    image::DicomInstance copy = series.instances.front();
    if (copy.image_position_patient && copy.image_orientation_patient) {
      const auto& o = *copy.image_orientation_patient;
      const std::array<double, 3> n = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
      for (int a = 0; a < 3; ++a) (*copy.image_position_patient)[a] += n[a];
    }
    copy.instance_number += 1;
    series.instances.push_back(copy);
  }
  auto volume = image::assemble_volume(series);
  if (outcome) {
    *outcome = volume.ok() ? "volume: ok " + std::to_string(volume->grid.dims[0]) + "x" +
                                 std::to_string(volume->grid.dims[1]) + "x" + std::to_string(volume->grid.dims[2])
                           : "volume: " + std::string(base::code_name(volume.status().code()));
  }
  std::remove(path.c_str());
  return 0;
}

}  // namespace fuzzentry
