// nnU-Net v2 preprocessing for inference (DefaultPreprocessor.run_case_npy,
// nnunetv2/preprocessing/preprocessors/default_preprocessor.py): float32 -> transpose_forward ->
// crop to the filled non-zero bounding box -> per-channel normalization on the cropped native
// grid -> resample to the target spacing. Each stage is callable on its own (golden tests).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "base/status.h"
#include "image/nnunet_resample.h"
#include "inference/model_spec.h"

namespace inference {

using image::Shape3;
using image::Spacing3;
using image::Tensor4f;

/// Half-open box [lo, hi) per axis, in the array order of the volume it refers to.
struct Bbox3 {
  Shape3 lo{0, 0, 0};
  Shape3 hi{0, 0, 0};
  Shape3 size() const { return {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]}; }
};

/// data.transpose([0, perm[0]+1, perm[1]+1, perm[2]+1]): output axis a is input axis perm[a].
Tensor4f transpose_spatial(const Tensor4f& data, const std::array<int, 3>& perm);

/// scipy.ndimage.binary_fill_holes with the default structure (6-connectivity): every voxel of
/// `mask` (1 byte per voxel, C order of `shape`) that is not reachable from the array border
/// through background voxels becomes 1. In place.
void fill_holes_3d(std::vector<uint8_t>& mask, const Shape3& shape);

/// nnU-Net create_nonzero_mask: OR over channels of (x != 0), holes filled.
std::vector<uint8_t> nonzero_mask(const Tensor4f& data);

/// Tight bounding box of the non-zero voxels of `mask`. Errors: kInvalidArgument when empty.
base::Result<Bbox3> bbox_of_mask(const std::vector<uint8_t>& mask, const Shape3& shape);

/// data[:, lo0:hi0, lo1:hi1, lo2:hi2].
Tensor4f crop(const Tensor4f& data, const Bbox3& box);

/// Same crop of a single-channel byte mask.
std::vector<uint8_t> crop_mask(const std::vector<uint8_t>& mask, const Shape3& shape, const Bbox3& box);

/// Normalizes each channel in place with its scheme (nnunetv2/preprocessing/normalization/
/// default_normalization_schemes.py), statistics in double:
/// ZScore: mean and population std over `mask` (use_mask_for_norm) or all voxels,
///   (x - mean) / max(std, 1e-8); with the mask, voxels outside it are left as they are (0).
/// CT: clip to [percentile_00_5, percentile_99_5], then (x - mean) / max(std, 1e-8) with the
///   model's intensity_properties. NoNormalization: unchanged.
///   RescaleTo01: (x - min) / max(max - min, 1e-8).
/// Errors: kInvalidArgument when the channel count differs from `channels`, or CT without
/// intensity properties.
base::Status normalize(Tensor4f& data, const std::vector<uint8_t>& mask, const std::vector<ChannelSpec>& channels);

/// Everything preprocessing produced, in transposed order, plus what export needs to invert it.
struct Preprocessed {
  Tensor4f data;                    // network input grid (C, d0, d1, d2), target spacing
  Spacing3 spacing_transposed{};    // input spacing permuted by transpose_forward (mm)
  Spacing3 target_spacing{};        // model target spacing (mm)
  Shape3 shape_before_cropping{};   // transposed
  Bbox3 bbox;                       // bbox_used_for_cropping (transposed, half-open)
  Shape3 shape_after_cropping{};    // = bbox.size()
  image::SeparateZ separate_z;      // what the data resampling used
  // Intermediates, kept only when requested (tests, debugging).
  Tensor4f cropped_normalized;
  std::vector<uint8_t> mask_cropped;  // filled non-zero mask in the cropped frame (nnU-Net seg >= 0)
};

/// Runs nnU-Net's run_case_npy on `raw` (C, z, y, x) in reader order with spacing (z, y, x) mm.
/// Errors: kInvalidArgument (channel count, non-positive spacing, all-zero input, bad order).
base::Result<Preprocessed> preprocess(const Tensor4f& raw, const Spacing3& spacing_zyx, const ModelSpec& spec,
                                      bool keep_intermediates = false);

}  // namespace inference
