// Synthetic acute-stroke diffusion studies (DWI b=1000 and ADC) for demos, training data and
// end-to-end tests: a randomly deformed Colin27 head with 0-5 irregular lesions, sampled onto a
// clinical axial grid with partial volume, Rician noise and a bias field. Deterministic per seed.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/status.h"
#include "image/volume.h"

namespace image {

/// Diffusion weighting of the simulated DWI, s/mm^2.
inline constexpr double kPhantomBValue = 1000.0;
/// Most lesions `PhantomOptions::lesion_count` may force.
inline constexpr int kMaxPhantomLesions = 10;

/// What to simulate.
struct PhantomOptions {
  /// Everything random derives from this seed (std::mt19937_64 + our own distributions, so the
  /// output is the same with every standard library).
  uint64_t seed = 0;
  /// Forces this many lesions (0 = none, at most kMaxPhantomLesions). Unset: 0 for about 15% of
  /// seeds, else 1 to 5.
  std::optional<int> lesion_count;
  /// Colin27 skull-stripped T1 (Debian package mricron-data): anatomy and tissue classes.
  std::string colin27_path = "/usr/share/mricron/templates/ch2better.nii.gz";
  /// AAL atlas in the same MNI space (labels 91-116: cerebellum and vermis), used to place
  /// infratentorial lesions. Optional: when missing, a coordinate rule stands in.
  std::string aal_path = "/usr/share/mricron/templates/aal.nii.gz";
};

/// One simulated study. All three volumes share one axial acquisition grid (LPS).
struct PhantomStudy {
  /// Diffusion-weighted magnitude image at b = kPhantomBValue, arbitrary units (>= 0).
  VolumeF dwi;
  /// Apparent diffusion coefficient in 10^-6 mm^2/s, computed from noisy b=0 and b=1000
  /// signals like a scanner does; 0 where the b=0 signal is noise (background).
  VolumeF adc;
  /// Lesion mask: 1 where the lesion fraction of the voxel (partial volume) is >= 0.5.
  VolumeU8 truth;
  /// Everything drawn for this seed: "seed", "b_value", "grid" (dims, spacing_mm, affine_lps,
  /// slice_thickness_mm, tilt_deg), "tissue", "deformation", "lesions" (each with "region",
  /// "centre_lps_mm", "centre_voxel", "target_volume_ml", "volume_ml", "adc", "s0_factor"),
  /// "lesion_count", "total_lesion_volume_ml".
  nlohmann::json params;
};

/// Builds the study for `options.seed`. About 1 s per study on one core after the template
/// (Colin27, downsampled to 1 mm once per process and path) is cached.
/// Errors: kNotFound when the Colin27 file is missing (message says to install the Debian
/// package mricron-data), kInvalidArgument for a bad lesion_count or an unusable template.
base::Result<PhantomStudy> make_phantom(const PhantomOptions& options);

/// Writes the study in nnU-Net's file convention into `dir` (created if needed):
/// `image_0000.nii.gz` (DWI, float32), `image_0001.nii.gz` (ADC, float32), `truth.nii.gz`
/// (uint8) and `phantom.json` (params). Errors: those of write_nifti, or kInternal when the
/// folder cannot be created or the JSON file written.
base::Status write_phantom_nifti(const PhantomStudy& study, const std::string& dir);

/// Writes the study as two DICOM MR Image Storage series, one file per slice, explicit VR
/// little endian: `DWI/0001.dcm...` (ImageType ORIGINAL\PRIMARY\DIFFUSION\NONE, b-value
/// (0018,9087) = 1000) and `ADC/0001.dcm...` (DERIVED\PRIMARY\DIFFUSION\ADC), same patient,
/// study and frame of reference, UIDs derived from the seed; plus `truth.nii.gz` and
/// `phantom.json`. Pixels are uint16 with RescaleSlope/RescaleIntercept.
/// Errors: kInternal when a file cannot be written (with the path), kInvalidArgument when the
/// volumes do not share one grid.
base::Status write_phantom_dicom(const PhantomStudy& study, const std::string& dir);

}  // namespace image
