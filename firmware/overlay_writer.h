// The overlay series: the DWI with the lesion outlined and tinted in colour and the result
// (lesion volume, count, model, "automated result" warning) burned into every image, as DICOM
// Secondary Capture (PS3.3 A.8.1) RGB images that any PACS viewer or scanner console shows.
// Usage: SB_RETURN_IF_ERROR(firmware::write_overlay_series(dwi, volume, mask, text, out_dir));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "image/dicom_series.h"
#include "image/volume.h"

namespace firmware {

/// Facts burned into each overlay image. Text is drawn in upper case with a built-in 5x7
/// bitmap font (A-Z, 0-9, space and . : - / ( ) % = , + _ # ' < > ^ ?; others become '?').
struct OverlayText {
  double lesion_volume_ml = 0.0;  // whole study, mL
  int lesion_count = 0;           // connected components
  std::string model_id;           // model package id
  std::string software_version;   // e.g. STROKEBOX_VERSION
  std::string disclaimer = "AUTOMATED RESULT - NOT FOR DIAGNOSIS ALONE";
  /// Drawn in cyan as the last line when not empty, e.g. lesions without restricted diffusion.
  std::string warning;
};

/// Mask value of a lesion voxel flagged implausible (image/lesion_plausibility.h): drawn with a
/// cyan outline and a blue tint instead of yellow and red. Any other non-zero value is a lesion.
inline constexpr uint8_t kOverlayFlaggedLesion = 2;

/// Mask value of a flagged lesion that the model's postprocessing left out of the lesion volume
/// (firmware::ModelPostprocessing): drawn as kOverlayFlaggedLesion, not counted in the slice's
/// volume.
inline constexpr uint8_t kOverlayExcludedLesion = 3;

/// Settings of the new series.
struct OverlayOptions {
  /// SeriesNumber; 0 picks source SeriesNumber + 2000.
  int series_number = 0;
  std::string series_description = "strokebox lesion overlay";
  std::string manufacturer = "strokebox";
  std::string model_name = "strokebox";
  /// Images narrower than this are enlarged by an integer factor (bilinear, at most
  /// kMaxOverlayZoom) so the burned-in text stays legible on a console.
  int min_width = 512;
};

/// Largest integer enlargement of the DWI in the overlay.
inline constexpr int kMaxOverlayZoom = 8;

/// One rendered overlay frame, 8-bit RGB, row-major, top row first (R, G, B per pixel).
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;
};

/// One DICOM file written, as the outbox needs it.
struct WrittenInstance {
  std::string path;
  std::string sop_class_uid;
  std::string sop_instance_uid;
};

/// Renders slice `k` of `dwi_volume` (grid dims (columns, rows, slices); pixel (i, j) -> image
/// column i, row j) as the overlay frame: DWI windowed linearly from 0 to twice the
/// median of the foreground of the whole volume (the same window on every slice; normal brain
/// mid-grey, restricted diffusion near white),
/// enlarged by zoom = clamp(ceil(min_width / columns), 1, kMaxOverlayZoom), lesion voxels
/// (mask != 0) tinted red and outlined in yellow (kOverlayFlaggedLesion: blue and cyan), and a black text band below the image with
/// the disclaimer, study lesion volume and count, this slice's lesion volume, slice number
/// and model. Errors: kInvalidArgument when the mask grid differs from the volume's or `k`
/// is out of range.
base::Result<RgbImage> render_overlay_slice(const image::VolumeF& dwi_volume, const image::VolumeU8& mask, int k,
                                            const OverlayText& text, const OverlayOptions& options = {});

/// The slice index with the most lesion voxels (0 when the mask is empty).
int slice_with_most_lesion(const image::VolumeU8& mask);

/// Writes one Secondary Capture Image Storage instance (1.2.840.10008.5.1.4.1.1.7) per sorted
/// DWI slice into `out_dir` (created if missing) as `0001.dcm`, `0002.dcm`, ... (InstanceNumber
/// = sorted slice number): Photometric RGB, 8 bits, the frame of render_overlay_slice();
/// a new series (Modality MR) in the DWI's study with the DWI's patient and study attributes;
/// ImageType DERIVED\SECONDARY; Burned In Annotation YES; Source Image Sequence naming the DWI
/// slice it shows; Patient Orientation from the slice orientation and Pixel Spacing (the DWI's,
/// divided by the zoom): the only geometry the SC IOD has. Why plain SC and not Multi-frame
/// True Color SC: see docs/dicom_outputs.md. `dwi_volume` and `mask` must lie on the grid of
/// image::sort_slices(dwi) (what assemble_volume() returns). Each file is written to
/// `<file>.tmp` and renamed. When `written` is not null it receives the files written, in
/// slice order. Errors: those of sort_slices(); kInvalidArgument (grid mismatch);
/// kInternal (DCMTK refused a value); kUnavailable (a file cannot be written).
base::Status write_overlay_series(const image::DicomSeries& dwi, const image::VolumeF& dwi_volume,
                                  const image::VolumeU8& mask, const OverlayText& text, const std::string& out_dir,
                                  const OverlayOptions& options = {}, std::vector<WrittenInstance>* written = nullptr);

}  // namespace firmware
