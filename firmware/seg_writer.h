// Writes the lesion mask as a DICOM Segmentation (binary SEG, PS3.3 A.51) that references the
// DWI series it was computed on, so PACS viewers overlay it slice by slice. Uses DCMTK dcmseg.
// Usage: SB_RETURN_IF_ERROR(firmware::write_seg(dwi_series, mask, {"strokebox", ver, id}, out));
#pragma once

#include <string>

#include "base/status.h"
#include "image/dicom_series.h"
#include "image/volume.h"

namespace firmware {

/// Identifies the algorithm in the SEG (Segmentation Algorithm Identification Sequence).
struct SegAlgorithm {
  std::string name = "strokebox";
  std::string version;   // software version, e.g. STROKEBOX_VERSION; "unknown" when empty
  std::string model_id;  // model package id; written as AlgorithmParameters "model_id=<id>"
};

/// Optional settings of the new SEG series.
struct SegWriteOptions {
  /// SeriesNumber of the SEG; 0 picks source SeriesNumber + 1000.
  int series_number = 0;
  std::string series_description = "strokebox lesion SEG";
  /// General Equipment Module (all must be non-empty).
  std::string manufacturer = "strokebox";
  std::string model_name = "strokebox";
  std::string device_serial_number = "0";
};

/// Writes `mask` (non-zero = infarct) as a binary SEG with one segment, label "Infarct",
/// category SCT 49755003 "Morphologically Altered Structure", type SCT 55641003 "Infarct",
/// algorithm type AUTOMATIC. `mask` must lie on the grid of image::sort_slices(source) (the
/// grid assemble_volume() returns): dims (Columns, Rows, slices), affine within 1e-3 mm.
/// Frames: one per source slice, in sorted order, empty frames included, so frame k+1 overlays
/// sorted slice k; each frame carries its Plane Position (the slice's own
/// ImagePositionPatient), a Derivation Image reference to that slice's SOP instance and the
/// dimension indices (segment number, slice position). Patient, study and Frame of Reference
/// come from the first slice's file (DcmSegmentation::importFromSourceImage), or from the
/// scanned metadata when that file cannot be read. The file is written as Explicit VR Little
/// Endian to `path + ".tmp"` and renamed to `path`.
/// Errors: those of sort_slices(); kInvalidArgument when the mask does not match the grid;
/// kInternal when DCMTK refuses the object (its message included); kUnavailable when the
/// file cannot be written.
base::Status write_seg(const image::DicomSeries& source, const image::VolumeU8& mask, const SegAlgorithm& algo,
                       const std::string& path, const SegWriteOptions& options = {});

}  // namespace firmware
