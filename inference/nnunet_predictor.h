// NnunetPredictor: nnU-Net v2 inference of one case around fixed-shape networks: preprocessing
// (nnunet_preprocess.h) -> sliding window over every fold (sliding_window.h) -> export to the
// input grid (nnunet_export.h). Create once per model, then predict() per study.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "image/volume.h"
#include "inference/model_spec.h"
#include "inference/nnunet_export.h"
#include "inference/nnunet_preprocess.h"
#include "inference/patch_model.h"
#include "inference/sliding_window.h"

namespace inference {

/// Result of one prediction.
struct NnunetResult {
  image::VolumeU8 labels;                                  // on the grid of the input channels (same Grid)
  std::vector<std::pair<std::string, double>> timings_ms;  // "preprocess", "inference", "export"
  int tiles = 0;                                           // patches run (per network, mirrors not counted)
  nlohmann::json details;                                  // bbox, shapes, steps: useful for report.json
  /// When asked for: the lesion probability on the same grid, in [0, 1]: 1 - P(background)
  /// for label models, the first region's sigmoid for region models (nnU-Net's
  /// --save_probabilities, reduced to foreground).
  std::optional<image::VolumeF> foreground_probability;
};

class NnunetPredictor {
 public:
  /// networks: one PatchModel per fold, not owned (must outlive the predictor); their input
  /// shape must be (1, C, patch) and output (1, K, patch) with C channels and K outputs of `spec`.
  /// Errors: kInvalidArgument naming the network and the shape mismatch.
  static base::Result<std::unique_ptr<NnunetPredictor>> create(const ModelSpec& spec,
                                                               std::vector<PatchModel*> networks);

  /// channels: one volume per model channel, in model.json channel order, all on the same Grid.
  /// spacing_ijk_mm: voxel spacing along (i, j, k) (for NIfTI input pass pixdim exactly; nnU-Net's
  /// spacing is this reversed, (k, j, i) = (z, y, x)).
  /// Errors: kInvalidArgument (channel count, grids differ, data size, spacing, all-zero input);
  /// errors of the networks with the tile that failed.
  base::Result<NnunetResult> predict(const std::vector<image::VolumeF>& channels, std::array<double, 3> spacing_ijk_mm);

  /// Same, also returning the logits on the preprocessed grid (tests, debugging) when
  /// `logits_out` is not null. `progress` hears ("preprocess", 0|1, 1), ("inference", run, runs)
  /// after every network run and ("export", 0|1, 1), on the calling thread.
  base::Result<NnunetResult> predict(const std::vector<image::VolumeF>& channels, std::array<double, 3> spacing_ijk_mm,
                                     Tensor4f* logits_out, bool with_probability = false,
                                     const ProgressFn& progress = {});

  /// Preallocates the sliding-window buffers (SlidingWindowWorkspace) for padded preprocessed
  /// volumes of up to `max_voxels` voxels per channel, with room for the model's folds and
  /// mirroring; predict() then uses them, and a larger study fails with kResourceExhausted
  /// naming the limit. Errors: SlidingWindowWorkspace::create's.
  base::Status reserve(int64_t max_voxels);
  /// Bytes preallocated by reserve(); 0 without it.
  size_t reserved_bytes() const { return workspace_ ? workspace_->bytes() : 0; }

  const ModelSpec& spec() const { return spec_; }

 private:
  NnunetPredictor(ModelSpec spec, std::vector<PatchModel*> networks)
      : spec_(std::move(spec)), networks_(std::move(networks)) {}
  ModelSpec spec_;
  std::vector<PatchModel*> networks_;
  std::unique_ptr<SlidingWindowWorkspace> workspace_;  // null: buffers per study
};

/// Reads `model_dir`/model.json (see model_spec.h).
base::Result<ModelSpec> load_model_spec(const std::string& model_dir);

/// Sliding-window options of a model (patch, step, mirroring, accumulation).
SlidingWindowOptions sliding_window_options(const ModelSpec& spec);

}  // namespace inference
