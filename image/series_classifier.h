// Picks the diffusion series of a stroke study: the DWI series (b about 1000 s/mm^2, only the
// instances at that b-value) and the ADC map, from the series found by scan_dicom_folder().
// Usage: SB_ASSIGN_OR_RETURN(auto sel, image::select_diffusion_series(scan.series));
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "image/dicom_series.h"
#include "image/diffusion_volumes.h"

namespace image {

/// Accepted b-values (s/mm^2): the one closest to `b_target` within [b_min, b_max] wins.
struct ClassifierOptions {
  double b_target = 1000.0;
  double b_min = 700.0;
  double b_max = 1500.0;
  /// Images with b at most this (s/mm^2) count as b=0 (S0) when an ADC must be derived.
  double b0_max = 50.0;
  /// When no diffusion image has a b-value in [b_min, b_max]: false refuses the study
  /// (kOutOfRange naming the b-values and the range); true takes the b closest to b_target
  /// and says so in DiffusionSelection::warnings.
  bool allow_b_outside_range = false;
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

/// The chosen DWI and ADC, and how the DWI and ADC are to be made from them.
struct DiffusionSelection {
  /// The DWI images at the chosen b-value, one per position: the scanner's trace (isotropic)
  /// image when the study has one; otherwise the first of `dwi_directions` (the geometry and
  /// the instances the SEG and overlay refer to).
  DicomSeries dwi;
  /// The chosen b-value (s/mm^2); empty when the series carries none (picked by its description).
  std::optional<double> dwi_b_value;
  /// True when the trace is to be computed as the voxelwise geometric mean of `dwi_directions`
  /// (image/diffusion_volumes.h), because the scanner sent no trace image at that b.
  bool trace_computed = false;
  /// The directional (or directionality-unstated) volumes at dwi_b_value, one DicomSeries per
  /// volume (repeats included); empty unless trace_computed.
  std::vector<DicomSeries> dwi_directions;
  /// Number of distinct gradient directions among dwi_directions.
  int trace_direction_count = 0;
  /// What the DWI is, in words: "scanner trace (ISOTROPIC)", "geometric mean of 6 directions"...
  std::string dwi_source;
  /// The ADC series (or the ADC volume of a series); empty (no instances) when adc_derived.
  DicomSeries adc;
  /// True when the study has no ADC: it is then computed from `b0` and the DWI
  /// (image/adc_map.h) and report.json says so.
  bool adc_derived = false;
  /// The b=0 volumes (b <= b0_max, the lowest b of their series; repeats averaged by the
  /// caller) the ADC is derived from; empty unless adc_derived. `b0` is the first of them.
  DicomSeries b0;
  std::vector<DicomSeries> b0_volumes;
  double b0_value = 0.0;
  /// True when the b0 images carry no b-value and were taken as b0 because the other images
  /// of their series carry one (Canon/Toshiba).
  bool b0_untagged = false;
  /// Distinct b-values (s/mm^2, rounded) of the DWI series chosen, ascending (untagged b0 as 0).
  std::vector<double> b_values;
  /// Where the DWI's b-value was read from, e.g. "(0018,9087)", "Siemens CSA B_value".
  std::string b_value_source;
  /// True when the chosen b lies outside [b_min, b_max] (only with allow_b_outside_range).
  bool b_outside_range = false;
  /// Things a reader of report.json should know (b outside the range, untagged b0, a single
  /// direction standing for the trace, several ADC series...).
  std::vector<std::string> warnings;
  /// Why these were chosen (and which others were passed over), for logs and report.json.
  std::string reason;
};

/// Chooses the DWI and the ADC of a study. Every diffusion series is split into volumes
/// (split_diffusion_volumes(): b-value, direction, trace/ADC flags; several images per position
/// allowed). The b-value is the one in [b_min, b_max] closest to b_target over all series (ties:
/// a series with the scanner's trace first, then the highest SeriesNumber). At that b, the DWI is
/// the scanner's trace image when present, else the directional volumes to be combined by
/// geometric mean (trace_computed). The ADC is the scanner's (an ADC series of the same Frame of
/// Reference, slice count and matrix first, then the nearest SeriesNumber; or ADC images in the
/// DWI series itself); without one, b0 volumes (from the DWI series, else another diffusion series
/// on the same Frame of Reference and geometry) make the selection adc_derived.
/// Errors: kNotFound "no DWI/ADC series found in study X: series were [...]"; kOutOfRange when
/// the only b-values are outside [b_min, b_max] and allow_b_outside_range is false (the message
/// names them and the range); kInvalidArgument when the series belong to more than one study.
base::Result<DiffusionSelection> select_diffusion_series(const std::vector<DicomSeries>& series,
                                                         const ClassifierOptions& options = {});

}  // namespace image
