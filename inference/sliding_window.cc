// nnU-Net v2 sliding-window inference (see sliding_window.h for the semantics and sources).
#include "inference/sliding_window.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

namespace inference {
namespace {

using image::fp16_round;

std::string shape_str(const std::array<int64_t, 5>& s) {
  std::string r = "(";
  for (int k = 0; k < 5; ++k) r += std::to_string(s[k]) + (k < 4 ? ", " : ")");
  return r;
}

// Copies `src` (C, p0, p1, p2) to `dst`, reversing the axes whose flag is set.
void flip_patch(const float* src, float* dst, int64_t channels, const Shape3& p, const std::array<bool, 3>& flip) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* s = src + c * p[0] * p[1] * p[2];
    float* d = dst + c * p[0] * p[1] * p[2];
    for (int64_t a = 0; a < p[0]; ++a) {
      const int64_t sa = flip[0] ? p[0] - 1 - a : a;
      for (int64_t b = 0; b < p[1]; ++b) {
        const int64_t sb = flip[1] ? p[1] - 1 - b : b;
        const float* srow = s + (sa * p[1] + sb) * p[2];
        float* drow = d + (a * p[1] + b) * p[2];
        if (flip[2]) {
          for (int64_t x = 0; x < p[2]; ++x) drow[x] = srow[p[2] - 1 - x];
        } else {
          std::copy(srow, srow + p[2], drow);
        }
      }
    }
  }
}

// itertools.combinations(axes, r) for r = 1..n, in Python's order.
std::vector<std::array<bool, 3>> mirror_combinations(const std::vector<int>& axes) {
  std::vector<std::array<bool, 3>> out;
  const int n = static_cast<int>(axes.size());
  for (int r = 1; r <= n; ++r) {
    std::vector<int> idx(r);
    for (int k = 0; k < r; ++k) idx[k] = k;
    while (true) {
      std::array<bool, 3> f{false, false, false};
      for (int k = 0; k < r; ++k) f[axes[idx[k]]] = true;
      out.push_back(f);
      int k = r - 1;
      while (k >= 0 && idx[k] == n - r + k) --k;
      if (k < 0) break;
      ++idx[k];
      for (int q = k + 1; q < r; ++q) idx[q] = idx[q - 1] + 1;
    }
  }
  return out;
}

}  // namespace

std::vector<std::vector<int64_t>> compute_steps_for_sliding_window(const Shape3& image_size, const Shape3& tile_size,
                                                                   double tile_step_size) {
  std::vector<std::vector<int64_t>> steps(3);
  for (int a = 0; a < 3; ++a) {
    const double target_step = (double)tile_size[a] * tile_step_size;
    const int64_t num_steps =
        (int64_t)std::ceil((double)(image_size[a] - tile_size[a]) / target_step) + 1;
    const int64_t max_step_value = image_size[a] - tile_size[a];
    const double actual_step = num_steps > 1 ? (double)max_step_value / (double)(num_steps - 1) : 99999999999.0;
    for (int64_t i = 0; i < num_steps; ++i) steps[a].push_back((int64_t)std::nearbyint(actual_step * (double)i));
  }
  return steps;
}

std::vector<float> compute_gaussian(const Shape3& tile_size, double sigma_scale, double value_scaling_factor) {
  // 1D kernels as scipy's _gaussian_kernel1d (radius int(4 * sigma + 0.5), exp of the Horner
  // polynomial, normalised by the sum), evaluated at offsets (index - tile // 2).
  std::array<std::vector<double>, 3> w;
  for (int a = 0; a < 3; ++a) {
    const double sigma = (double)tile_size[a] * sigma_scale;
    const int64_t radius = (int64_t)(4.0 * sigma + 0.5);
    const double c2 = -0.5 / (sigma * sigma);
    std::vector<double> phi(2 * radius + 1);
    double sum = 0.0;
    for (int64_t x = -radius; x <= radius; ++x) {
      phi[x + radius] = std::exp((c2 * (double)x) * (double)x);
      sum += phi[x + radius];
    }
    for (double& v : phi) v /= sum;
    const int64_t centre = tile_size[a] / 2;
    w[a].resize(tile_size[a]);
    for (int64_t i = 0; i < tile_size[a]; ++i) {
      const int64_t off = i - centre;
      w[a][i] = (off >= -radius && off <= radius) ? phi[off + radius] : 0.0;
    }
  }
  const int64_t n = tile_size[0] * tile_size[1] * tile_size[2];
  std::vector<double> g(n);
  double mx = 0.0;
  for (int64_t a = 0; a < tile_size[0]; ++a)
    for (int64_t b = 0; b < tile_size[1]; ++b)
      for (int64_t d = 0; d < tile_size[2]; ++d) {
        // gaussian_filter filters axis 0, then 1, then 2: ((1 * w0) * w1) * w2.
        const double v = (w[0][a] * w[1][b]) * w[2][d];
        g[(a * tile_size[1] + b) * tile_size[2] + d] = v;
        mx = std::max(mx, v);
      }
  const double scale = mx / value_scaling_factor;
  std::vector<float> out(n);
  float min_nonzero = std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < n; ++k) {
    // torch: float64 division, then .to(float16) (through float).
    out[k] = fp16_round((double)(float)(g[k] / scale));
    if (out[k] > 0.0f) min_nonzero = std::min(min_nonzero, out[k]);
  }
  for (float& v : out)
    if (v == 0.0f) v = min_nonzero;
  return out;
}

namespace {

// Inner loops of the per-tile work, written so that the compiler vectorizes them (restrict,
// omp simd): they run once per row of every tile.
inline void weighted_add_row(float* __restrict acc, const float* __restrict pred, const float* __restrict w,
                             int64_t n) {
#pragma omp simd
  for (int64_t x = 0; x < n; ++x) acc[x] += pred[x] * w[x];
}
inline void add_row(float* __restrict acc, const float* __restrict v, int64_t n) {
#pragma omp simd
  for (int64_t x = 0; x < n; ++x) acc[x] += v[x];
}

size_t mib(size_t floats) { return (floats * sizeof(float) + (1u << 20) - 1) >> 20; }

std::string shape3_str(const Shape3& s) {
  return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
}

}  // namespace

base::Result<std::unique_ptr<SlidingWindowWorkspace>> SlidingWindowWorkspace::create(const Limits& limits) {
  const Shape3& p = limits.patch;
  if (limits.channels < 1 || limits.outputs < 1 || p[0] < 1 || p[1] < 1 || p[2] < 1)
    return base::invalid_argument("sliding-window workspace: channels, outputs and patch must be positive");
  const int64_t tvox = p[0] * p[1] * p[2];
  if (limits.max_voxels < tvox)
    return base::invalid_argument("sliding-window workspace: max_voxels " + std::to_string(limits.max_voxels) +
                                  " is below one patch (" + shape3_str(p) + " = " + std::to_string(tvox) + " voxels)");
  const int64_t C = limits.channels, K = limits.outputs, V = limits.max_voxels;
  std::unique_ptr<SlidingWindowWorkspace> ws(new SlidingWindowWorkspace());
  ws->limits_ = limits;
  size_t floats = 0;
  try {
    // std::vector value-initializes: every page is written now, not during a study.
    auto take = [&floats](std::vector<float>& v, int64_t n) {
      floats += static_cast<size_t>(n);
      v.assign(static_cast<size_t>(n), 0.0f);
    };
    take(ws->padded_input_, C * V);
    take(ws->weight_, V);
    take(ws->acc_, K * V);
    if (limits.several_networks) take(ws->fold_sum_, K * V);
    take(ws->tile_weight_, tvox);
    take(ws->patch_in_, C * tvox);
    take(ws->patch_out_, K * tvox);
    take(ws->pred_, K * tvox);
    if (limits.mirroring) {
      take(ws->flipped_in_, C * tvox);
      take(ws->flipped_out_, K * tvox);
    }
  } catch (const std::exception&) {  // bad_alloc, or length_error for absurd sizes
    return base::resource_exhausted("sliding-window workspace: cannot allocate " + std::to_string(mib(floats)) +
                                    " MiB for " + std::to_string(V) + " voxels (C=" + std::to_string(C) +
                                    ", K=" + std::to_string(K) + "); lower model.max_preprocessed_voxels");
  }
  const std::vector<float> g = compute_gaussian(p);
  std::copy(g.begin(), g.end(), ws->tile_weight_.begin());
  ws->tile_weight_is_gaussian_ = true;
  return ws;
}

size_t SlidingWindowWorkspace::bytes() const {
  size_t n = 0;
  for (const auto* v : {&padded_input_, &weight_, &acc_, &fold_sum_, &tile_weight_, &patch_in_, &patch_out_, &pred_,
                        &flipped_in_, &flipped_out_})
    n += v->size() * sizeof(float);
  return n;
}

base::Result<SlidingWindowResult> predict_sliding_window(const Tensor4f& input,
                                                         const std::vector<PatchModel*>& networks,
                                                         const SlidingWindowOptions& options,
                                                         SlidingWindowWorkspace* workspace) {
  const Shape3 patch = options.patch_size;
  const int64_t C = input.channels();
  const Shape3 shape = input.spatial();
  if (networks.empty()) return base::invalid_argument("sliding window: no network given");
  for (int a = 0; a < 3; ++a) {
    if (patch[a] < 1) return base::invalid_argument("sliding window: patch size must be positive");
    if (shape[a] < 1) return base::invalid_argument("sliding window: empty input");
  }
  if (!(options.tile_step_size > 0.0 && options.tile_step_size <= 1.0))
    return base::invalid_argument("sliding window: tile_step_size must be in (0, 1]");
  for (int a : options.mirroring_axes)
    if (a < 0 || a > 2) return base::invalid_argument("sliding window: mirroring axes must be 0, 1 or 2");
  if (input.data.size() != static_cast<size_t>(C * input.channel_size()))
    return base::invalid_argument("sliding window: input data size does not match its shape");
  const std::array<int64_t, 5> want_in{1, C, patch[0], patch[1], patch[2]};
  const int64_t K = networks[0]->output_shape()[1];
  const std::array<int64_t, 5> want_out{1, K, patch[0], patch[1], patch[2]};
  for (size_t n = 0; n < networks.size(); ++n) {
    if (networks[n] == nullptr) return base::invalid_argument("sliding window: network " + std::to_string(n) + " is null");
    if (networks[n]->input_shape() != want_in)
      return base::invalid_argument("sliding window: network " + std::to_string(n) + " takes input " +
                                    shape_str(networks[n]->input_shape()) + ", the model needs " + shape_str(want_in));
    if (networks[n]->output_shape() != want_out)
      return base::invalid_argument("sliding window: network " + std::to_string(n) + " gives output " +
                                    shape_str(networks[n]->output_shape()) + ", expected " + shape_str(want_out));
  }
  if (K < 1) return base::invalid_argument("sliding window: network has no output channel");

  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  SlidingWindowResult r;
  // acvl_utils pad_nd_image: pad to at least the patch, centred, odd extra voxel on the high side.
  for (int a = 0; a < 3; ++a) {
    r.padded_shape[a] = std::max(shape[a], patch[a]);
    r.pad_low[a] = (r.padded_shape[a] - shape[a]) / 2;
  }
  const Shape3 P = r.padded_shape;
  const int64_t pvox = P[0] * P[1] * P[2];
  const int64_t tvox = patch[0] * patch[1] * patch[2];
  const bool padded = P != shape;
  const bool fp16 = options.accumulation == Accumulation::kFloat16;
  const bool several = networks.size() > 1;

  // The buffers: the caller's workspace, or one made for this call.
  std::unique_ptr<SlidingWindowWorkspace> own;
  if (workspace == nullptr) {
    SB_ASSIGN_OR_RETURN(own, SlidingWindowWorkspace::create({C, K, patch, pvox, several, options.use_mirroring}));
    workspace = own.get();
  }
  SlidingWindowWorkspace& ws = *workspace;
  const SlidingWindowWorkspace::Limits& lim = ws.limits();
  if (lim.channels != C || lim.outputs != K || lim.patch != patch)
    return base::resource_exhausted("sliding window: the workspace is for C=" + std::to_string(lim.channels) +
                                    ", K=" + std::to_string(lim.outputs) + ", patch " + shape3_str(lim.patch) +
                                    ", not C=" + std::to_string(C) + ", K=" + std::to_string(K) + ", patch " +
                                    shape3_str(patch));
  if (pvox > lim.max_voxels)
    return base::resource_exhausted("sliding window: the preprocessed volume " + shape3_str(P) + " (" +
                                    std::to_string(pvox) + " voxels) is larger than the " +
                                    std::to_string(lim.max_voxels) +
                                    " voxels preallocated (model.max_preprocessed_voxels); raise that limit");
  if (several && !lim.several_networks)
    return base::resource_exhausted("sliding window: the workspace has no room for averaging several networks");
  if (options.use_mirroring && !lim.mirroring)
    return base::resource_exhausted("sliding window: the workspace has no room for mirrored tiles");
  if (ws.tile_weight_is_gaussian_ != options.use_gaussian) {
    if (options.use_gaussian) {
      const std::vector<float> g = compute_gaussian(patch);
      std::copy(g.begin(), g.end(), ws.tile_weight_.begin());
    } else {
      std::fill(ws.tile_weight_.begin(), ws.tile_weight_.end(), 1.0f);
    }
    ws.tile_weight_is_gaussian_ = options.use_gaussian;
  }

  // Times a network run into r.network_seconds and reports progress.
  const auto combos = options.use_mirroring ? mirror_combinations(options.mirroring_axes)
                                            : std::vector<std::array<bool, 3>>{};
  r.steps = compute_steps_for_sliding_window(P, patch, options.tile_step_size);
  r.tiles = static_cast<int>(r.steps[0].size() * r.steps[1].size() * r.steps[2].size());
  const int64_t total_runs = static_cast<int64_t>(networks.size()) * r.tiles * static_cast<int64_t>(combos.size() + 1);
  auto timed_run = [&r, &options, total_runs](PatchModel* net, const float* in, float* out) {
    const auto t0 = Clock::now();
    base::Status st = net->run(in, out);
    r.network_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    ++r.network_runs;
    if (options.progress) options.progress("inference", r.network_runs, total_runs);
    return st;
  };

  // The (padded) input, channel c at data + c * pvox.
  const float* data = input.data.data();
  if (padded) {
    std::fill_n(ws.padded_input_.begin(), C * pvox, 0.0f);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t a = 0; a < shape[0]; ++a)
        for (int64_t b = 0; b < shape[1]; ++b) {
          const float* src = input.channel(c) + (a * shape[1] + b) * shape[2];
          float* dst = ws.padded_input_.data() + c * pvox +
                       ((a + r.pad_low[0]) * P[1] + (b + r.pad_low[1])) * P[2] + r.pad_low[2];
          std::copy(src, src + shape[2], dst);
        }
    data = ws.padded_input_.data();
  }
  const float* gaussian = ws.tile_weight_.data();
  float* weight = ws.weight_.data();
  float* acc = ws.acc_.data();
  float* fold_sum = several ? ws.fold_sum_.data() : nullptr;
  float* patch_in = ws.patch_in_.data();
  float* patch_out = ws.patch_out_.data();
  float* pred = ws.pred_.data();
  std::fill_n(weight, pvox, 0.0f);
  if (several) std::fill_n(fold_sum, K * pvox, 0.0f);

  auto add = [fp16](float a, float b) { return fp16 ? fp16_round((double)(a + b)) : a + b; };

  // Summed Gaussian weight (n_predictions), identical for every network.
  for (int64_t s0 : r.steps[0])
    for (int64_t s1 : r.steps[1])
      for (int64_t s2 : r.steps[2])
        for (int64_t a = 0; a < patch[0]; ++a)
          for (int64_t b = 0; b < patch[1]; ++b) {
            float* wrow = weight + ((s0 + a) * P[1] + (s1 + b)) * P[2] + s2;
            const float* grow = gaussian + (a * patch[1] + b) * patch[2];
            if (fp16) {
              for (int64_t x = 0; x < patch[2]; ++x) wrow[x] = add(wrow[x], grow[x]);
            } else {
              add_row(wrow, grow, patch[2]);
            }
          }

  for (size_t n = 0; n < networks.size(); ++n) {
    PatchModel* net = networks[n];
    std::fill_n(acc, K * pvox, 0.0f);
    for (int64_t s0 : r.steps[0])
      for (int64_t s1 : r.steps[1])
        for (int64_t s2 : r.steps[2]) {
          // Gather the tile.
          for (int64_t c = 0; c < C; ++c)
            for (int64_t a = 0; a < patch[0]; ++a)
              for (int64_t b = 0; b < patch[1]; ++b) {
                const float* src = data + c * pvox + ((s0 + a) * P[1] + (s1 + b)) * P[2] + s2;
                std::copy(src, src + patch[2], patch_in + ((c * patch[0] + a) * patch[1] + b) * patch[2]);
              }
          auto tile_error = [&](const base::Status& st) {
            return st.with_context("network " + std::to_string(n) + ", tile at (" + std::to_string(s0) + ", " +
                                   std::to_string(s1) + ", " + std::to_string(s2) + ")");
          };
          base::Status st = timed_run(net, patch_in, pred);
          if (!st.ok()) return tile_error(st);
          if (!combos.empty()) {
            // _internal_maybe_mirror_and_predict: sum in float32 in combination order, then divide.
            for (const auto& flip : combos) {
              flip_patch(patch_in, ws.flipped_in_.data(), C, patch, flip);
              st = timed_run(net, ws.flipped_in_.data(), ws.flipped_out_.data());
              if (!st.ok()) return tile_error(st);
              flip_patch(ws.flipped_out_.data(), patch_out, K, patch, flip);
              add_row(pred, patch_out, K * tvox);
            }
            // Division, not multiplication by the inverse: torch divides.
            const float count = static_cast<float>(combos.size() + 1);
#pragma omp simd
            for (int64_t k = 0; k < K * tvox; ++k) pred[k] /= count;
          }
          // prediction *= gaussian; predicted_logits[sl] += prediction.
          for (int64_t k = 0; k < K; ++k)
            for (int64_t a = 0; a < patch[0]; ++a)
              for (int64_t b = 0; b < patch[1]; ++b) {
                float* arow = acc + k * pvox + ((s0 + a) * P[1] + (s1 + b)) * P[2] + s2;
                const float* prow = pred + ((k * patch[0] + a) * patch[1] + b) * patch[2];
                const float* grow = gaussian + (a * patch[1] + b) * patch[2];
                if (fp16) {
                  for (int64_t x = 0; x < patch[2]; ++x) arow[x] = fp16_round((double)(arow[x] + prow[x] * grow[x]));
                } else {
                  weighted_add_row(arow, prow, grow, patch[2]);
                }
              }
        }
    // torch.div(predicted_logits, n_predictions).
    for (int64_t k = 0; k < K; ++k) {
      float* ak = acc + k * pvox;
      if (fp16) {
        for (int64_t v = 0; v < pvox; ++v) ak[v] = fp16_round((double)(ak[v] / weight[v]));
      } else {
#pragma omp simd
        for (int64_t v = 0; v < pvox; ++v) ak[v] = ak[v] / weight[v];
      }
    }
    if (several) {
      for (int64_t v = 0; v < K * pvox; ++v) fold_sum[v] = add(fold_sum[v], acc[v]);
    }
  }
  const float* result = acc;
  if (several) {
    const float nf = static_cast<float>(networks.size());
    for (int64_t v = 0; v < K * pvox; ++v)
      fold_sum[v] = fp16 ? fp16_round((double)(fold_sum[v] / nf)) : fold_sum[v] / nf;
    result = fold_sum;
  }
  // Remove the padding (slicer_revert_padding).
  r.logits = Tensor4f(K, shape);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t a = 0; a < shape[0]; ++a)
      for (int64_t b = 0; b < shape[1]; ++b) {
        const float* src = result + k * pvox + ((a + r.pad_low[0]) * P[1] + (b + r.pad_low[1])) * P[2] + r.pad_low[2];
        std::copy(src, src + shape[2], r.logits.channel(k) + (a * shape[1] + b) * shape[2]);
      }
  if (options.return_weight_sum) {
    r.weight_sum.resize(shape[0] * shape[1] * shape[2]);
    for (int64_t a = 0; a < shape[0]; ++a)
      for (int64_t b = 0; b < shape[1]; ++b) {
        const float* src = weight + ((a + r.pad_low[0]) * P[1] + (b + r.pad_low[1])) * P[2] + r.pad_low[2];
        std::copy(src, src + shape[2], r.weight_sum.data() + (a * shape[1] + b) * shape[2]);
      }
  }
  r.other_seconds = std::chrono::duration<double>(Clock::now() - t_start).count() - r.network_seconds;
  return r;
}

}  // namespace inference
