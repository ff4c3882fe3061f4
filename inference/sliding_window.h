// nnU-Net v2 sliding-window prediction (nnunetv2/inference/predict_from_raw_data.py,
// predict_sliding_window_return_logits, and sliding_window_prediction.py): zero padding to the
// patch size, tiles from compute_steps_for_sliding_window, Gaussian importance weighting,
// optional test-time mirroring, averaging over folds; float32 or emulated float16 accumulation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "image/nnunet_resample.h"
#include "inference/model_spec.h"
#include "inference/patch_model.h"

namespace inference {

using image::Shape3;
using image::Tensor4f;

/// compute_steps_for_sliding_window(image_size, tile_size, tile_step_size): per axis,
/// n = ceil((size - tile) / (tile * step)) + 1 tiles evenly spread over [0, size - tile], start
/// offsets rounded half to even (np.round). Requires size >= tile on every axis (pad first).
std::vector<std::vector<int64_t>> compute_steps_for_sliding_window(const Shape3& image_size, const Shape3& tile_size,
                                                                   double tile_step_size);

/// compute_gaussian(tile_size, sigma_scale=1/8, value_scaling_factor=10): separable Gaussian
/// (scipy gaussian_filter of a unit impulse at tile//2, sigma = tile * sigma_scale, truncate 4)
/// scaled to a maximum of value_scaling_factor, rounded to float16 values; zeros are replaced by
/// the smallest non-zero value. C order over the tile, returned as float.
std::vector<float> compute_gaussian(const Shape3& tile_size, double sigma_scale = 1.0 / 8.0,
                                    double value_scaling_factor = 10.0);

/// Progress of a long computation, reported on the computing thread: `done` of `total` units of
/// `stage` ("preprocess", "inference", "export"; for "inference" the units are network runs).
/// Lets a watchdog see progress during a long study. Must be cheap and must not throw.
using ProgressFn = std::function<void(std::string_view stage, int64_t done, int64_t total)>;

/// Options of one sliding-window prediction.
struct SlidingWindowOptions {
  Shape3 patch_size{0, 0, 0};
  double tile_step_size = 0.5;
  bool use_gaussian = true;
  bool use_mirroring = false;
  std::vector<int> mirroring_axes{0, 1, 2};  // spatial axes 0..2 of the patch
  Accumulation accumulation = Accumulation::kFloat32;
  /// Also return the summed Gaussian weight per voxel (for comparing against goldens).
  bool return_weight_sum = false;
  /// Called after every network run as ("inference", runs so far, runs in all); may be empty.
  ProgressFn progress;
};

/// Output of predict_sliding_window.
struct SlidingWindowResult {
  Tensor4f logits;                             // (K, d0, d1, d2) on the unpadded input grid
  Shape3 padded_shape{0, 0, 0};
  Shape3 pad_low{0, 0, 0};                     // voxels of zero padding before the data per axis
  std::vector<std::vector<int64_t>> steps;     // tile starts per axis (padded grid)
  int tiles = 0;                               // tiles per network (mirrors not counted)
  int network_runs = 0;                        // total PatchModel::run calls
  std::vector<float> weight_sum;               // (d0, d1, d2) when requested (last network)
  /// Wall time in PatchModel::run, and in everything else of the call (padding, Gaussian,
  /// gathering tiles, mirroring, weighted accumulation, division, unpadding), seconds.
  double network_seconds = 0.0;
  double other_seconds = 0.0;
};

/// The buffers of predict_sliding_window (zero-padded input, summed Gaussian weight, logit
/// accumulators, fold sum, one tile in and out, mirrored tiles), allocated and touched once for
/// the largest padded volume a deployment accepts. A study then allocates nothing per tile and
/// cannot run out of memory half-way through its inference. One prediction at a time.
class SlidingWindowWorkspace {
 public:
  /// What the buffers are sized for. max_voxels counts voxels of one channel of the padded,
  /// preprocessed volume (d0 * d1 * d2 after cropping, resampling to the target spacing and
  /// padding to at least the patch).
  struct Limits {
    int64_t channels = 0;      // C, network input channels
    int64_t outputs = 0;       // K, network output channels
    Shape3 patch{0, 0, 0};     // (p0, p1, p2)
    int64_t max_voxels = 0;
    bool several_networks = false;  // room for the sum over folds
    bool mirroring = false;         // room for mirrored tiles
  };
  /// Allocates (C + K + 1) * max_voxels floats (+ K * max_voxels with several networks) plus the
  /// tile buffers, and writes every page so the memory is really there.
  /// Errors: kInvalidArgument (a size below 1, max_voxels below one patch), kResourceExhausted
  /// (the allocation failed; the message gives the MiB asked for).
  static base::Result<std::unique_ptr<SlidingWindowWorkspace>> create(const Limits& limits);

  const Limits& limits() const { return limits_; }
  /// Bytes held by the buffers.
  size_t bytes() const;

 private:
  friend base::Result<SlidingWindowResult> predict_sliding_window(const Tensor4f&, const std::vector<PatchModel*>&,
                                                                  const SlidingWindowOptions&, SlidingWindowWorkspace*);
  SlidingWindowWorkspace() = default;
  Limits limits_;
  std::vector<float> padded_input_, weight_, acc_, fold_sum_;
  std::vector<float> tile_weight_;  // Gaussian (or ones), one tile
  bool tile_weight_is_gaussian_ = false;
  std::vector<float> patch_in_, patch_out_, pred_, flipped_in_, flipped_out_;
};

/// Predicts logits for a preprocessed `input` (C, d0, d1, d2) with every network in
/// `networks` (folds; the result is their mean, as nnU-Net). Tiles are visited
/// `for s0: for s1: for s2`. With use_mirroring, each tile's prediction is the mean over the
/// original and every non-empty combination of flips over mirroring_axes, in nnU-Net's order.
/// Accumulation kFloat16 reproduces nnU-Net 2.8's torch.half accumulators: the weighted tile
/// is added into a half buffer (rounded after each add), the weight map too, then divided and
/// rounded; fold results are summed and divided in half as well.
/// Buffers come from `workspace` when given (nothing the size of the volume is allocated but
/// the returned logits), else from a workspace made for this call; none are allocated per tile.
/// Errors: kInvalidArgument (network input/output shape not (1, C, patch) / (1, K, patch),
/// inconsistent networks, bad options); kResourceExhausted (the padded volume, the channels,
/// the patch, folds or mirroring do not fit `workspace`; the message says which limit); the
/// network's own error (with the tile) when run fails.
base::Result<SlidingWindowResult> predict_sliding_window(const Tensor4f& input,
                                                         const std::vector<PatchModel*>& networks,
                                                         const SlidingWindowOptions& options,
                                                         SlidingWindowWorkspace* workspace = nullptr);

}  // namespace inference
