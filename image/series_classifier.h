// Picks the diffusion series of a stroke study: the DWI series (b about 1000 s/mm^2, only the
// instances at that b-value) and the ADC map, from the series found by scan_dicom_folder().
// Usage: SB_ASSIGN_OR_RETURN(auto sel, image::select_diffusion_series(scan.series));
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "image/dicom_series.h"

namespace image {

/// Accepted b-values (s/mm^2): the one closest to `b_target` within [b_min, b_max] wins.
struct ClassifierOptions {
  double b_target = 1000.0;
  double b_min = 700.0;
  double b_max = 1500.0;
  /// Images with b at most this (s/mm^2) count as b=0 (S0) when an ADC must be derived.
  double b0_max = 50.0;
};

enum class SeriesKind { kOther, kDwi, kAdc };

/// What one series looks like, with the evidence.
struct SeriesClassification {
  SeriesKind kind = SeriesKind::kOther;
  /// Distinct b-values found in the series (rounded to 1 s/mm^2), ascending.
  std::vector<double> b_values;
  /// Evidence in words, e.g. "ImageType has ADC" or "b-values 0, 1000".
  std::string why;
};

/// Classifies one series from ImageType (ADC, DIFFUSION, TRACEW), b-values (standard and
/// vendor tags, see DicomInstance::b_value) and SeriesDescription hints ("ADC", "Apparent
/// Diffusion", "DWI", "TRACE", "b1000"). Series that are not MR images (SEG, SR, localizer
/// without hints, exponential ADC, FA) are kOther.
SeriesClassification classify_series(const DicomSeries& series);

/// The chosen pair.
struct DiffusionSelection {
  /// The DWI series, restricted to the instances at the chosen b-value.
  DicomSeries dwi;
  /// The chosen b-value; empty when the series carries none (picked by its description).
  std::optional<double> dwi_b_value;
  /// The ADC series; empty (no instances) when adc_derived.
  DicomSeries adc;
  /// True when the study has no ADC series: the ADC is then computed from `b0` and `dwi`
  /// (image/adc_map.h) and report.json says so.
  bool adc_derived = false;
  /// The b=0 images (b <= b0_max) the ADC is derived from, restricted to that b-value; empty
  /// unless adc_derived.
  DicomSeries b0;
  double b0_value = 0.0;
  /// Why these two were chosen (and which others were passed over), for logs and report.json.
  std::string reason;
};

/// Chooses the DWI (b closest to options.b_target within [b_min, b_max]; then one image per
/// position; then the latest series, i.e. the highest SeriesNumber, with a note in `reason`
/// when several are equally good) and the ADC (same Frame of Reference, same slice count and
/// matrix as the DWI, then the nearest SeriesNumber). A series holding several b-values (b0
/// and b1000 mixed, single-frame or Enhanced MR frames) is split by b-value. Without an ADC
/// series, b=0 images (from the DWI series itself, else from the DWI series with the same
/// Frame of Reference, slice count and matrix) make the selection adc_derived.
/// Errors: kNotFound "no DWI/ADC series found in study X: series were [...]";
/// kInvalidArgument when the series belong to more than one study.
base::Result<DiffusionSelection> select_diffusion_series(const std::vector<DicomSeries>& series,
                                                         const ClassifierOptions& options = {});

}  // namespace image
