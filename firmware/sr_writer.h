// The structured report: a DICOM SR Measurement Report (DICOM PS3.16 TID 1500, written with
// DCMTK dcmsr's TID1500_MeasurementReport) stating the lesion volume in mL, the lesion count
// and the algorithm, referencing the SEG and the DWI series, in the DWI's study.
// Usage: SB_RETURN_IF_ERROR(firmware::write_sr(dwi_series, facts, out_dir + "/sr.dcm"));
#pragma once

#include <string>

#include "base/status.h"
#include "image/dicom_series.h"

namespace firmware {

/// What the report states.
struct SrFacts {
  double lesion_volume_ml = 0.0;
  int lesion_count = 0;
  std::string algorithm_name = "strokebox";
  std::string algorithm_version;  // software version; "unknown" when empty
  std::string model_id;           // model package id
  /// The SEG the volume was measured on (write_seg's output): SOP Instance UID; segment 1.
  std::string seg_sop_instance_uid;
  std::string seg_series_instance_uid;  // the SEG's series (for the evidence sequence)
  /// Plausibility against the ADC (image/lesion_plausibility.h), written as a qualitative
  /// evaluation (DCM 121106 "Comment") of the measurement group when not empty.
  std::string plausibility_comment;
};

/// Settings of the new SR series.
struct SrOptions {
  /// SeriesNumber; 0 picks source SeriesNumber + 3000.
  int series_number = 0;
  std::string series_description = "strokebox lesion report";
  std::string manufacturer = "strokebox";
  std::string model_name = "strokebox";
  std::string device_serial_number = "0";
};

/// Writes an Enhanced SR (1.2.840.10008.5.1.4.1.1.88.22: the least general SR class that
/// holds this content, no SCOORD/SCOORD3D; DCMTK's setTreeFromRootTemplate picks it and
/// viewers support it more widely than Comprehensive 3D SR) with root "Imaging Measurement Report"
/// (DCM 126000), English, a device observer (the box), procedure "MR Brain" (LN 24590-2),
/// an image library listing every DWI slice, and one Volumetric ROI Measurements group
/// (TID 1411): tracking id "Infarct" + UID, finding SCT 55641003 "Infarct", finding site SCT
/// 12738006 "Brain", referenced segment 1 of the SEG, source series = the DWI series,
/// algorithm identification (name, version; parameters "model_id=<id>"), and the measurements
/// Volume (SCT 118565006) in UCUM "ml" and the lesion count (NCIt C25463 "Count", UCUM "{lesions}").
/// Patient and study attributes come from the DWI's first file; Current Requested Procedure
/// Evidence lists the DWI and the SEG. Written to `path + ".tmp"` and renamed.
/// `sop_instance_uid`, when not null, receives the new SR's SOP Instance UID.
/// Errors: kInvalidArgument (no DWI instance, no SEG UID, negative values); kInternal (DCMTK
/// refused the content, with its message); kUnavailable (file cannot be written).
base::Status write_sr(const image::DicomSeries& dwi, const SrFacts& facts, const std::string& path,
                      const SrOptions& options = {}, std::string* sop_instance_uid = nullptr);

}  // namespace firmware
