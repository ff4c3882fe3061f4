// Apparent diffusion coefficient computed from two diffusion-weighted images, for studies that
// arrive with DWI at b=0 and b=1000 but without the scanner's ADC series. Usage:
//   SB_ASSIGN_OR_RETURN(VolumeF adc, image::derive_adc(s0, s1000, 1000.0));
#pragma once

#include "base/status.h"
#include "image/volume.h"

namespace image {

/// Guards of derive_adc().
struct AdcOptions {
  /// b-value of the low-b image (s/mm^2); 0 for a true S0.
  double b_low = 0.0;
  /// Voxels whose low-b signal is at most this fraction of its 99th percentile are background
  /// and get ADC 0 (as in scanner ADC maps).
  double background_fraction = 0.05;
  /// Largest ADC written, 10^-6 mm^2/s (free water at 37 C is about 3000); where the high-b
  /// signal is 0 or below in tissue the ADC is this value.
  double max_adc = 4000.0;
};

/// What derive_adc() measured on its input (optional output).
struct AdcStats {
  /// Median apparent ADC of the foreground (the voxels not called background),
  /// ln(median(S_low / S_high)) / (b_high - b_low) in 10^-6 mm^2/s, before clamping; 0 when
  /// there is no foreground. Why: every brain tissue gives 300 or more (free water about 3000),
  /// so a median near 0 means the high-b images carry no diffusion weighting (e.g. b=0 images
  /// exported under a b=1000 tag): the DWI is T2-weighted and the ADC meaningless.
  double median_foreground_adc = 0.0;
};

/// Mono-exponential ADC per voxel: ADC = ln(S_low / S_high) / (b_high - b_low) mm^2/s
/// (Stejskal-Tanner, S(b) = S0 exp(-b ADC)), returned in 10^-6 mm^2/s, the unit of scanner ADC
/// maps. Guards: background (see AdcOptions) and S_low <= 0 give 0; S_high <= 0 gives max_adc;
/// a negative ADC (noise, S_high > S_low) is clamped to 0, a larger one to max_adc.
/// `low` and `high` must share one grid (the result's grid). `stats` (may be null) receives
/// the median foreground ADC. Errors: kInvalidArgument for different grids or b_high <= b_low.
base::Result<VolumeF> derive_adc(const VolumeF& low, const VolumeF& high, double b_high,
                                 const AdcOptions& options = {}, AdcStats* stats = nullptr);

}  // namespace image
