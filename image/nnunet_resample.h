// nnU-Net v2's resampling (nnunetv2/preprocessing/resampling/default_resampling.py) re-implemented
// bit-compatibly: skimage `resize(mode="edge", anti_aliasing=False)` = scipy.ndimage.zoom(float64,
// grid_mode=True, mode="nearest") + clip, the separate-z path, compute_new_shape and
// determine_do_sep_z_and_axis. Used by nnU-Net preprocessing (data) and export (logits).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/status.h"

namespace image {

/// Three sizes or indices in array order (d0, d1, d2), d2 fastest in memory.
using Shape3 = std::array<int64_t, 3>;
/// Three spacings in mm, in the same array order as the Shape3 they go with.
using Spacing3 = std::array<double, 3>;

/// A dense 4D float32 array, C order (C, d0, d1, d2): C = channel or class.
struct Tensor4f {
  std::array<int64_t, 4> shape{0, 0, 0, 0};
  std::vector<float> data;

  Tensor4f() = default;
  /// Zero-filled tensor of shape (c, s[0], s[1], s[2]).
  Tensor4f(int64_t c, const Shape3& s, float fill = 0.0f)
      : shape{c, s[0], s[1], s[2]}, data(static_cast<size_t>(c * s[0] * s[1] * s[2]), fill) {}
  int64_t channels() const { return shape[0]; }
  Shape3 spatial() const { return {shape[1], shape[2], shape[3]}; }
  int64_t channel_size() const { return shape[1] * shape[2] * shape[3]; }
  float* channel(int64_t c) { return data.data() + c * channel_size(); }
  const float* channel(int64_t c) const { return data.data() + c * channel_size(); }
  float& at(int64_t c, int64_t a, int64_t b, int64_t d) {
    return data[static_cast<size_t>(((c * shape[1] + a) * shape[2] + b) * shape[3] + d)];
  }
  float at(int64_t c, int64_t a, int64_t b, int64_t d) const {
    return data[static_cast<size_t>(((c * shape[1] + a) * shape[2] + b) * shape[3] + d)];
  }
};

/// nnU-Net's ANISO_THRESHOLD: separate-z resampling when max/min spacing exceeds it.
inline constexpr double kAnisoThreshold = 3.0;

/// `compute_new_shape`: int(round(old_spacing / new_spacing * old_shape)) per axis, in double,
/// Python round (half to even). All three in the same (transposed) array order.
Shape3 compute_new_shape(const Shape3& old_shape, const Spacing3& old_spacing, const Spacing3& new_spacing);

/// Result of determine_do_sep_z_and_axis.
struct SeparateZ {
  bool do_separate_z = false;
  int axis = -1;  // the low-resolution axis when do_separate_z, else -1
};

/// `determine_do_sep_z_and_axis(force_separate_z, current_spacing, new_spacing)`: with no force,
/// the current spacing is tested first (max/min > kAnisoThreshold), then the new one; the axis is
/// the unique one whose spacing equals the maximum (two or three such axes: no separate z).
SeparateZ determine_do_sep_z_and_axis(std::optional<bool> force_separate_z, const Spacing3& current_spacing,
                                      const Spacing3& new_spacing);

/// skimage.transform.resize(x, out_shape, order, mode="edge", anti_aliasing=False) of one 3D
/// volume: scipy.ndimage.zoom(x as float64, out/in, order, mode="nearest", grid_mode=True)
/// (input coordinate c = in/out * (i + 0.5) - 0.5; cubic B-spline with scipy's edge-padded
/// prefilter), then clipped to [min, max] of `in`. Computed separably, one axis at a time, in
/// double; `out` receives the float64 result (size out_shape product). A shape of 1 along an axis
/// is allowed. Errors: kInvalidArgument for an order other than 0, 1, 3 or an empty shape.
base::Status resize_volume(const double* in, const Shape3& in_shape, double* out, const Shape3& out_shape,
                           int order);

/// Per-channel `resample_data_or_seg(data, new_shape, is_seg=False, axis, order, do_separate_z,
/// order_z)`: without separate z, resize_volume on each channel; with it, resize_volume on every
/// 2D slice perpendicular to `axis` (clip per slice) and then order_z (0 or 1) interpolation along
/// `axis` at c = old/new * (i + 0.5) - 0.5 (order 0: index floor(c + 0.5), clamped). When the
/// shape does not change the data is returned unchanged. Result values are rounded to float16
/// when `round_output_to_fp16` (nnU-Net keeps the input dtype: fp16 logits stay fp16).
/// Errors: kInvalidArgument (bad order, axis, or shape).
base::Result<Tensor4f> resample_data_or_seg(const Tensor4f& data, const Shape3& new_shape, int order,
                                            SeparateZ separate_z, int order_z,
                                            bool round_output_to_fp16 = false);

/// `resample_data_or_seg_to_shape(data, new_shape, current_spacing, new_spacing, is_seg=False,
/// order, order_z, force_separate_z)`: determine_do_sep_z_and_axis then resample_data_or_seg.
base::Result<Tensor4f> resample_data_or_seg_to_shape(const Tensor4f& data, const Shape3& new_shape,
                                                     const Spacing3& current_spacing,
                                                     const Spacing3& new_spacing, int order, int order_z,
                                                     std::optional<bool> force_separate_z,
                                                     bool round_output_to_fp16 = false);

/// IEEE binary16 helpers (round to nearest even, subnormals, overflow to inf), for emulating
/// nnU-Net's float16 tensors on any CPU. `fp16_round` = the double rounded to the nearest half
/// (as numpy's float64 -> float16 cast), returned as float.
uint16_t fp16_bits_from_double(double x);
float fp16_bits_to_float(uint16_t h);
inline float fp16_round(double x) { return fp16_bits_to_float(fp16_bits_from_double(x)); }

}  // namespace image
