// A model-independent plausibility check of predicted ischemic lesions against the physics of
// diffusion: an acute infarct restricts diffusion, so its ADC is low (cytotoxic oedema). A
// "lesion" without restricted diffusion is bright on DWI for another reason (T2 shine-through,
// a chronic lesion, CSF pulsation, susceptibility artefact) and is flagged, whatever model
// predicted it. Usage:
//   SB_ASSIGN_OR_RETURN(auto unit, image::infer_adc_unit(adc));   // NIfTI: the unit is unstated
//   VolumeF adc_um = image::adc_to_micro(adc, unit);                // 10^-6 mm^2/s
//   SB_ASSIGN_OR_RETURN(auto cc, image::label_components(mask));
//   SB_ASSIGN_OR_RETURN(auto lesions, image::assess_lesions(cc, adc_um));
#pragma once

#include <array>
#include <string>
#include <vector>

#include "base/status.h"
#include "image/connected_components.h"
#include "image/volume.h"

namespace image {

/// Units an ADC map may be stored in. DICOM ADC maps of every vendor use 10^-6 mm^2/s; NIfTI
/// files converted by various tools also come in mm^2/s or 10^-3 mm^2/s.
enum class AdcUnit { kMm2PerS, kMilliMm2PerS, kMicroMm2PerS };

/// "mm2/s", "1e-3 mm2/s" or "1e-6 mm2/s".
const char* adc_unit_name(AdcUnit unit);

/// The unit of an ADC map, recognised from the median of its positive voxels: brain tissue and
/// CSF lie between about 300 and 3500 x 10^-6 mm^2/s, so the median falls within
/// [1.5e-4, 5e-3] in mm^2/s, [0.15, 5] in 10^-3 mm^2/s and [150, 5000] in 10^-6 mm^2/s.
/// Errors: kInvalidArgument when the map has no positive voxel or its median fits no unit
/// (the message gives the median and the expected ranges).
base::Result<AdcUnit> infer_adc_unit(const VolumeF& adc);

/// A copy of `adc` in 10^-6 mm^2/s.
VolumeF adc_to_micro(const VolumeF& adc, AdcUnit unit);

/// Thresholds of assess_lesions().
struct PlausibilityOptions {
  /// ADC below which tissue counts as restricted (the ischemic core), 10^-6 mm^2/s: 620, the
  /// threshold of RAPID (Straka et al., J Magn Reson Imaging 2010; 32:1024-1037).
  double core_threshold = 620.0;
  /// A lesion is plausible when at least this fraction of its volume is core and that exceeds
  /// the core fraction of the normal-appearing tissue in its shell by at least as much, or when
  /// its median ADC is below core_threshold, or when it is restricted relative to its
  /// surroundings (max_adc_ratio). The comparison with the shell keeps the test meaningful in
  /// noise: at a trace SNR of 5 (1.5 T) a quarter of normal voxels read below 620
  /// (models/demo/TRAINING.md, "Lower SNR"), so any lesion there would pass an absolute
  /// fraction. Without a shell the absolute fraction alone decides.
  double min_core_fraction = 0.1;
  /// A lesion whose median ADC is below this fraction of the surrounding normal-appearing
  /// tissue's is restricted relative to that tissue, even where the tissue's own ADC is high
  /// enough that the infarct stays above core_threshold (the absolute threshold misses it).
  /// Acute lesions lie at about 0.74 of the contralateral tissue's ADC (Nagesh et al., Stroke
  /// 1998; 29:1778-1782: 627 against 843 x 10^-6 mm^2/s) and 0.77 in the persistent core
  /// (diffusion tensor time course, PMC6399390); 0.80 sits just above those means. Needs a
  /// shell (surrounding_median_adc > 0); 0 turns the relative test off.
  double max_adc_ratio = 0.80;
  /// Width of the shell around a lesion whose ADC is its "surrounding" reference, mm.
  double shell_mm = 5.0;
  /// A lesion whose median ADC is below this, 10^-6 mm^2/s, is below every brain tissue and
  /// every acute infarct (350-620; issue 14): fat of the scalp, orbit or marrow (its water
  /// barely diffuses; ADC near 0-200) or the noise floor. Flagged as implausible.
  double min_tissue_adc = 250.0;
  /// Shell voxels above this ADC (CSF) or at most 0 (background) are not normal-appearing tissue.
  double max_tissue_adc = 1500.0;
};

/// What assess_lesions() found for one connected component of the mask.
struct LesionAssessment {
  int label = 0;                       ///< the component's label in Components::labels
  int64_t voxels = 0;
  double volume_ml = 0.0;
  std::array<double, 3> centroid_lps_mm{0.0, 0.0, 0.0};
  double median_adc = 0.0;             ///< inside the lesion, 10^-6 mm^2/s
  double surrounding_median_adc = 0.0; ///< normal-appearing tissue in the shell; 0 when none
  double adc_ratio = 0.0;              ///< median_adc / surrounding_median_adc; 0 when no shell
  double core_volume_ml = 0.0;         ///< voxels with ADC < core_threshold
  double surrounding_core_fraction = 0.0;  ///< share of the shell's tissue below core_threshold; 0 when none
  bool plausible = true;               ///< restricted diffusion (absolute or relative) within tissue's range
  bool below_tissue_adc = false;       ///< implausible because median_adc < min_tissue_adc (fat, noise floor)
  std::string reason;                  ///< why it is implausible; empty when plausible
};

/// Assesses every lesion of `lesions` (connected components of the predicted mask, from
/// image::label_components) against `adc_micro` (10^-6 mm^2/s) on the same grid; the result
/// holds one LesionAssessment per label, in label order. Errors: kInvalidArgument when the
/// grids differ.
base::Result<std::vector<LesionAssessment>> assess_lesions(const Components& lesions, const VolumeF& adc_micro,
                                                           const PlausibilityOptions& options = {});

}  // namespace image
