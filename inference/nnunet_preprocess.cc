// nnU-Net v2 inference preprocessing (default_preprocessor.py, cropping.py,
// default_normalization_schemes.py).
#include "inference/nnunet_preprocess.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace inference {

Tensor4f transpose_spatial(const Tensor4f& data, const std::array<int, 3>& perm) {
  if (perm == std::array<int, 3>{0, 1, 2}) return data;
  const Shape3 in = data.spatial();
  const Shape3 out_shape{in[perm[0]], in[perm[1]], in[perm[2]]};
  Tensor4f out(data.channels(), out_shape);
  // Input strides; output index (a, b, c) reads input index with axis perm[q] = out index q.
  const int64_t in_stride[3] = {in[1] * in[2], in[2], 1};
  const int64_t s0 = in_stride[perm[0]], s1 = in_stride[perm[1]], s2 = in_stride[perm[2]];
  for (int64_t c = 0; c < data.channels(); ++c) {
    const float* src = data.channel(c);
    float* dst = out.channel(c);
    for (int64_t a = 0; a < out_shape[0]; ++a)
      for (int64_t b = 0; b < out_shape[1]; ++b)
        for (int64_t d = 0; d < out_shape[2]; ++d) *dst++ = src[a * s0 + b * s1 + d * s2];
  }
  return out;
}

void fill_holes_3d(std::vector<uint8_t>& mask, const Shape3& shape) {
  const int64_t n0 = shape[0], n1 = shape[1], n2 = shape[2];
  const int64_t n = n0 * n1 * n2;
  // reached[v] = 1 for background voxels connected to the border (6-connectivity).
  std::vector<uint8_t> reached(n, 0);
  std::vector<int64_t> stack;
  auto push = [&](int64_t v) {
    if (!mask[v] && !reached[v]) {
      reached[v] = 1;
      stack.push_back(v);
    }
  };
  for (int64_t a = 0; a < n0; ++a)
    for (int64_t b = 0; b < n1; ++b)
      for (int64_t d = 0; d < n2; ++d) {
        if (a == 0 || a == n0 - 1 || b == 0 || b == n1 - 1 || d == 0 || d == n2 - 1)
          push((a * n1 + b) * n2 + d);
      }
  while (!stack.empty()) {
    const int64_t v = stack.back();
    stack.pop_back();
    const int64_t d = v % n2, b = (v / n2) % n1, a = v / (n1 * n2);
    if (a > 0) push(v - n1 * n2);
    if (a < n0 - 1) push(v + n1 * n2);
    if (b > 0) push(v - n2);
    if (b < n1 - 1) push(v + n2);
    if (d > 0) push(v - 1);
    if (d < n2 - 1) push(v + 1);
  }
  for (int64_t v = 0; v < n; ++v) mask[v] = reached[v] ? 0 : 1;
}

std::vector<uint8_t> nonzero_mask(const Tensor4f& data) {
  const int64_t n = data.channel_size();
  std::vector<uint8_t> mask(n, 0);
  for (int64_t c = 0; c < data.channels(); ++c) {
    const float* x = data.channel(c);
    for (int64_t v = 0; v < n; ++v) mask[v] |= (x[v] != 0.0f) ? 1 : 0;
  }
  fill_holes_3d(mask, data.spatial());
  return mask;
}

base::Result<Bbox3> bbox_of_mask(const std::vector<uint8_t>& mask, const Shape3& shape) {
  Bbox3 box;
  box.lo = shape;
  box.hi = {0, 0, 0};
  bool any = false;
  for (int64_t a = 0; a < shape[0]; ++a)
    for (int64_t b = 0; b < shape[1]; ++b)
      for (int64_t d = 0; d < shape[2]; ++d) {
        if (!mask[(a * shape[1] + b) * shape[2] + d]) continue;
        any = true;
        const int64_t idx[3] = {a, b, d};
        for (int q = 0; q < 3; ++q) {
          box.lo[q] = std::min(box.lo[q], idx[q]);
          box.hi[q] = std::max(box.hi[q], idx[q] + 1);
        }
      }
  if (!any) return base::invalid_argument("nnU-Net preprocessing: every input channel is zero everywhere (no image)");
  return box;
}

Tensor4f crop(const Tensor4f& data, const Bbox3& box) {
  const Shape3 in = data.spatial();
  const Shape3 sz = box.size();
  Tensor4f out(data.channels(), sz);
  for (int64_t c = 0; c < data.channels(); ++c) {
    const float* src = data.channel(c);
    float* dst = out.channel(c);
    for (int64_t a = 0; a < sz[0]; ++a)
      for (int64_t b = 0; b < sz[1]; ++b) {
        const float* row = src + ((a + box.lo[0]) * in[1] + (b + box.lo[1])) * in[2] + box.lo[2];
        std::copy(row, row + sz[2], dst + (a * sz[1] + b) * sz[2]);
      }
  }
  return out;
}

std::vector<uint8_t> crop_mask(const std::vector<uint8_t>& mask, const Shape3& shape, const Bbox3& box) {
  const Shape3 sz = box.size();
  std::vector<uint8_t> out(sz[0] * sz[1] * sz[2]);
  for (int64_t a = 0; a < sz[0]; ++a)
    for (int64_t b = 0; b < sz[1]; ++b) {
      const uint8_t* row = mask.data() + ((a + box.lo[0]) * shape[1] + (b + box.lo[1])) * shape[2] + box.lo[2];
      std::copy(row, row + sz[2], out.data() + (a * sz[1] + b) * sz[2]);
    }
  return out;
}

base::Status normalize(Tensor4f& data, const std::vector<uint8_t>& mask, const std::vector<ChannelSpec>& channels) {
  if (static_cast<size_t>(data.channels()) != channels.size())
    return base::invalid_argument("normalize: the model has " + std::to_string(channels.size()) +
                                  " channels, the data " + std::to_string(data.channels()));
  const int64_t n = data.channel_size();
  for (int64_t c = 0; c < data.channels(); ++c) {
    float* x = data.channel(c);
    const ChannelSpec& ch = channels[c];
    switch (ch.normalization) {
      case Normalization::kZScore: {
        const bool masked = ch.use_mask_for_norm;
        if (masked && mask.size() != static_cast<size_t>(n))
          return base::invalid_argument("normalize: mask size does not match the data");
        double sum = 0.0;
        int64_t count = 0;
        for (int64_t v = 0; v < n; ++v) {
          if (masked && !mask[v]) continue;
          sum += x[v];
          ++count;
        }
        if (count == 0) break;  // nothing to normalize (numpy would give nan; no voxel uses it)
        const double mean = sum / (double)count;
        double ss = 0.0;
        for (int64_t v = 0; v < n; ++v) {
          if (masked && !mask[v]) continue;
          const double d = x[v] - mean;
          ss += d * d;
        }
        const double std_dev = std::max(std::sqrt(ss / (double)count), 1e-8);
        for (int64_t v = 0; v < n; ++v) {
          if (masked && !mask[v]) continue;
          x[v] = static_cast<float>((x[v] - mean) / std_dev);
        }
        break;
      }
      case Normalization::kCT: {
        if (!ch.intensity_properties)
          return base::invalid_argument("normalize: channel '" + ch.name + "' uses CTNormalization but has no intensity_properties");
        const auto& p = *ch.intensity_properties;
        const float lo = static_cast<float>(p.percentile_00_5), hi = static_cast<float>(p.percentile_99_5);
        const double sd = std::max(p.std, 1e-8);
        for (int64_t v = 0; v < n; ++v) {
          const float clipped = std::clamp(x[v], lo, hi);
          x[v] = static_cast<float>((clipped - p.mean) / sd);
        }
        break;
      }
      case Normalization::kNone:
        break;
      case Normalization::kRescaleTo01: {
        float mn = x[0], mx = x[0];
        for (int64_t v = 1; v < n; ++v) {
          mn = std::min(mn, x[v]);
          mx = std::max(mx, x[v]);
        }
        const float range = std::max(mx - mn, 1e-8f);
        for (int64_t v = 0; v < n; ++v) x[v] = (x[v] - mn) / range;
        break;
      }
    }
  }
  return base::ok_status();
}

base::Result<Preprocessed> preprocess(const Tensor4f& raw, const Spacing3& spacing_zyx, const ModelSpec& spec,
                                      bool keep_intermediates) {
  if (static_cast<size_t>(raw.channels()) != spec.channels.size())
    return base::invalid_argument("nnU-Net preprocessing: the model expects " + std::to_string(spec.channels.size()) +
                                  " channels, got " + std::to_string(raw.channels()));
  if (raw.data.size() != static_cast<size_t>(raw.channels() * raw.channel_size()) || raw.channel_size() == 0)
    return base::invalid_argument("nnU-Net preprocessing: empty input or data size not matching its shape");
  for (int a = 0; a < 3; ++a)
    if (!(spacing_zyx[a] > 0.0) || !std::isfinite(spacing_zyx[a]))
      return base::invalid_argument("nnU-Net preprocessing: voxel spacing must be positive, got " +
                                    std::to_string(spacing_zyx[a]) + " mm on axis " + std::to_string(a));
  Preprocessed p;
  const auto& tf = spec.transpose_forward;
  Tensor4f data = transpose_spatial(raw, tf);
  p.spacing_transposed = {spacing_zyx[tf[0]], spacing_zyx[tf[1]], spacing_zyx[tf[2]]};
  p.target_spacing = spec.target_spacing_mm;
  p.shape_before_cropping = data.spatial();
  {
    std::vector<uint8_t> mask = nonzero_mask(data);
    SB_ASSIGN_OR_RETURN(p.bbox, bbox_of_mask(mask, p.shape_before_cropping));
    p.mask_cropped = crop_mask(mask, p.shape_before_cropping, p.bbox);
  }
  data = crop(data, p.bbox);
  p.shape_after_cropping = data.spatial();
  const Shape3 new_shape = image::compute_new_shape(p.shape_after_cropping, p.spacing_transposed, p.target_spacing);
  SB_RETURN_IF_ERROR(normalize(data, p.mask_cropped, spec.channels));
  p.separate_z = image::determine_do_sep_z_and_axis(spec.resampling.force_separate_z, p.spacing_transposed,
                                                     p.target_spacing);
  SB_ASSIGN_OR_RETURN(p.data, image::resample_data_or_seg(data, new_shape, spec.resampling.data_order, p.separate_z,
                                                          spec.resampling.data_order_z));
  if (keep_intermediates) {
    p.cropped_normalized = std::move(data);
  } else {
    p.mask_cropped.clear();
    p.mask_cropped.shrink_to_fit();
  }
  return p;
}

}  // namespace inference
