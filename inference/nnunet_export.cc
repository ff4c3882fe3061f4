// nnU-Net v2 export of logits to a segmentation on the input grid (see nnunet_export.h).
#include "inference/nnunet_export.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace inference {

void apply_inference_nonlin(Tensor4f& t, bool regions) {
  const int64_t K = t.channels();
  const int64_t n = t.channel_size();
  if (regions) {
    for (float& v : t.data) v = 1.0f / (1.0f + std::exp(-v));
    return;
  }
  for (int64_t v = 0; v < n; ++v) {
    float mx = t.data[v];
    for (int64_t k = 1; k < K; ++k) mx = std::max(mx, t.data[k * n + v]);
    float sum = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const float e = std::exp(t.data[k * n + v] - mx);
      t.data[k * n + v] = e;
      sum += e;
    }
    for (int64_t k = 0; k < K; ++k) t.data[k * n + v] /= sum;
  }
}

std::vector<uint8_t> probabilities_to_segmentation(const Tensor4f& p, const ModelSpec& spec) {
  const int64_t K = p.channels();
  const int64_t n = p.channel_size();
  std::vector<uint8_t> seg(n, 0);
  if (spec.has_regions()) {
    const auto& order = *spec.regions_class_order;
    for (size_t i = 0; i < order.size() && (int64_t)i < K; ++i) {
      const float* pi = p.channel(i);
      for (int64_t v = 0; v < n; ++v)
        if (pi[v] > 0.5f) seg[v] = static_cast<uint8_t>(order[i]);
    }
    return seg;
  }
  for (int64_t v = 0; v < n; ++v) {
    int best = 0;
    float bv = p.data[v];
    for (int64_t k = 1; k < K; ++k) {
      const float x = p.data[k * n + v];
      if (x > bv) {  // strict: ties keep the lowest class (numpy argmax)
        bv = x;
        best = static_cast<int>(k);
      }
    }
    seg[v] = static_cast<uint8_t>(best);
  }
  return seg;
}

namespace {

// Pastes `cropped` (C order over box.size()) into a `full`-shaped array at `box`; the rest is `fill`.
template <typename T>
void paste(const T* cropped, const Bbox3& box, const Shape3& full, T* out, T fill) {
  std::fill(out, out + full[0] * full[1] * full[2], fill);
  const Shape3 sz = box.size();
  for (int64_t a = 0; a < sz[0]; ++a)
    for (int64_t b = 0; b < sz[1]; ++b) {
      const T* src = cropped + (a * sz[1] + b) * sz[2];
      std::copy(src, src + sz[2], out + ((a + box.lo[0]) * full[1] + (b + box.lo[1])) * full[2] + box.lo[2]);
    }
}

// seg.transpose(perm) for a single-channel array.
std::vector<uint8_t> transpose_u8(const std::vector<uint8_t>& in, const Shape3& s, const std::array<int, 3>& perm,
                                  Shape3* out_shape) {
  *out_shape = {s[perm[0]], s[perm[1]], s[perm[2]]};
  if (perm == std::array<int, 3>{0, 1, 2}) return in;
  const int64_t stride[3] = {s[1] * s[2], s[2], 1};
  const int64_t s0 = stride[perm[0]], s1 = stride[perm[1]], s2 = stride[perm[2]];
  std::vector<uint8_t> out(in.size());
  size_t k = 0;
  for (int64_t a = 0; a < (*out_shape)[0]; ++a)
    for (int64_t b = 0; b < (*out_shape)[1]; ++b)
      for (int64_t d = 0; d < (*out_shape)[2]; ++d) out[k++] = in[a * s0 + b * s1 + d * s2];
  return out;
}

}  // namespace

base::Result<ExportResult> export_prediction(const Tensor4f& logits, const ExportGeometry& g, const ModelSpec& spec,
                                             bool return_probabilities) {
  if (logits.channels() != spec.num_outputs())
    return base::invalid_argument("export: logits have " + std::to_string(logits.channels()) +
                                  " channels, the model defines " + std::to_string(spec.num_outputs()) + " outputs");
  for (int a = 0; a < 3; ++a) {
    if (g.bbox.lo[a] < 0 || g.bbox.hi[a] > g.shape_before_cropping[a] || g.bbox.size()[a] != g.shape_after_cropping[a] ||
        g.shape_after_cropping[a] < 1)
      return base::invalid_argument("export: bounding box does not fit the volume on axis " + std::to_string(a));
    if (!(g.spacing_transposed[a] > 0.0)) return base::invalid_argument("export: spacing must be positive");
  }
  const bool fp16 = spec.accumulation == Accumulation::kFloat16;
  // resampling_fn_probabilities(logits, shape_after_cropping, current = plans spacing,
  // new = the image's transposed spacing).
  SB_ASSIGN_OR_RETURN(Tensor4f probs,
                      image::resample_data_or_seg_to_shape(
                          logits, g.shape_after_cropping, spec.target_spacing_mm, g.spacing_transposed,
                          spec.resampling.probabilities_order, spec.resampling.probabilities_order_z,
                          spec.resampling.force_separate_z, fp16));
  apply_inference_nonlin(probs, spec.has_regions());
  const std::vector<uint8_t> seg_cropped = probabilities_to_segmentation(probs, spec);

  ExportResult r;
  const Shape3 full = g.shape_before_cropping;
  std::vector<uint8_t> seg(full[0] * full[1] * full[2]);
  paste<uint8_t>(seg_cropped.data(), g.bbox, full, seg.data(), 0);
  r.labels = transpose_u8(seg, full, spec.transpose_backward, &r.shape_zyx);
  if (return_probabilities) {
    const auto& tb = spec.transpose_backward;
    Tensor4f uncropped(probs.channels(), full);
    for (int64_t k = 0; k < probs.channels(); ++k) {
      const float fill = (!spec.has_regions() && k == 0) ? 1.0f : 0.0f;
      paste<float>(probs.channel(k), g.bbox, full, uncropped.channel(k), fill);
    }
    r.probabilities = transpose_spatial(uncropped, tb);
  }
  return r;
}

}  // namespace inference
