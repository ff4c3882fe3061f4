// nnU-Net v2 inference pipeline for one case (see nnunet_predictor.h).
#include "inference/nnunet_predictor.h"

#include <algorithm>
#include <chrono>
#include <string>

namespace inference {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string shape_str(const std::array<int64_t, 5>& s) {
  std::string r = "(";
  for (int k = 0; k < 5; ++k) r += std::to_string(s[k]) + (k < 4 ? ", " : ")");
  return r;
}

}  // namespace

SlidingWindowOptions sliding_window_options(const ModelSpec& spec) {
  SlidingWindowOptions o;
  o.patch_size = spec.patch_size;
  o.tile_step_size = spec.tile_step_size;
  o.use_gaussian = true;
  o.use_mirroring = spec.use_mirroring;
  o.mirroring_axes = spec.mirroring_axes;
  o.accumulation = spec.accumulation;
  return o;
}

base::Result<std::unique_ptr<NnunetPredictor>> NnunetPredictor::create(const ModelSpec& spec,
                                                                       std::vector<PatchModel*> networks) {
  if (networks.empty()) return base::invalid_argument("nnU-Net predictor: no network given");
  const int64_t C = static_cast<int64_t>(spec.channels.size());
  const int64_t K = spec.num_outputs();
  const std::array<int64_t, 5> want_in{1, C, spec.patch_size[0], spec.patch_size[1], spec.patch_size[2]};
  const std::array<int64_t, 5> want_out{1, K, spec.patch_size[0], spec.patch_size[1], spec.patch_size[2]};
  for (size_t n = 0; n < networks.size(); ++n) {
    if (networks[n] == nullptr) return base::invalid_argument("nnU-Net predictor: network " + std::to_string(n) + " is null");
    if (networks[n]->input_shape() != want_in)
      return base::invalid_argument("nnU-Net predictor: network " + std::to_string(n) + " takes input " +
                                    shape_str(networks[n]->input_shape()) + " but model.json needs " +
                                    shape_str(want_in) + " (channels x patch_size)");
    if (networks[n]->output_shape() != want_out)
      return base::invalid_argument("nnU-Net predictor: network " + std::to_string(n) + " gives output " +
                                    shape_str(networks[n]->output_shape()) + " but model.json needs " +
                                    shape_str(want_out) + " (labels/regions x patch_size)");
  }
  return std::unique_ptr<NnunetPredictor>(new NnunetPredictor(spec, std::move(networks)));
}

base::Result<NnunetResult> NnunetPredictor::predict(const std::vector<image::VolumeF>& channels,
                                                    std::array<double, 3> spacing_ijk_mm) {
  return predict(channels, spacing_ijk_mm, nullptr);
}

base::Status NnunetPredictor::reserve(int64_t max_voxels) {
  const SlidingWindowOptions o = sliding_window_options(spec_);
  SlidingWindowWorkspace::Limits limits;
  limits.channels = networks_[0]->input_shape()[1];
  limits.outputs = networks_[0]->output_shape()[1];
  limits.patch = o.patch_size;
  limits.max_voxels = max_voxels;
  limits.several_networks = networks_.size() > 1;
  limits.mirroring = o.use_mirroring;
  SB_ASSIGN_OR_RETURN(workspace_, SlidingWindowWorkspace::create(limits));
  return base::ok_status();
}

base::Result<NnunetResult> NnunetPredictor::predict(const std::vector<image::VolumeF>& channels,
                                                    std::array<double, 3> spacing_ijk_mm, Tensor4f* logits_out,
                                                    bool with_probability, const ProgressFn& progress) {
  auto report = [&progress](std::string_view stage, int64_t done) {
    if (progress) progress(stage, done, 1);
  };
  if (channels.size() != spec_.channels.size())
    return base::invalid_argument("nnU-Net predictor: model '" + spec_.model_id + "' expects " +
                                  std::to_string(spec_.channels.size()) + " channels, got " +
                                  std::to_string(channels.size()));
  const image::Grid& grid = channels[0].grid;
  for (size_t c = 0; c < channels.size(); ++c) {
    if (channels[c].data.size() != static_cast<size_t>(channels[c].grid.voxel_count()) || channels[c].data.empty())
      return base::invalid_argument("nnU-Net predictor: channel " + std::to_string(c) + " (" + spec_.channels[c].name +
                                    ") is empty or its data does not match its grid");
    if (c > 0 && !channels[c].grid.same_as(grid))
      return base::invalid_argument("nnU-Net predictor: channel " + std::to_string(c) + " (" + spec_.channels[c].name +
                                    ") is not on the grid of channel 0 (" + spec_.channels[0].name +
                                    "); resample it first");
  }
  NnunetResult result;
  auto t0 = std::chrono::steady_clock::now();
  // Volume memory order [k][j][i] is nnU-Net's reader order (z, y, x).
  Tensor4f raw(static_cast<int64_t>(channels.size()), {grid.dims[2], grid.dims[1], grid.dims[0]});
  for (size_t c = 0; c < channels.size(); ++c) std::copy(channels[c].data.begin(), channels[c].data.end(), raw.channel(c));
  const Spacing3 spacing_zyx{spacing_ijk_mm[2], spacing_ijk_mm[1], spacing_ijk_mm[0]};
  report("preprocess", 0);
  SB_ASSIGN_OR_RETURN(Preprocessed pre, preprocess(raw, spacing_zyx, spec_));
  raw = Tensor4f();
  result.timings_ms.emplace_back("preprocess", ms_since(t0));
  report("preprocess", 1);

  t0 = std::chrono::steady_clock::now();
  SlidingWindowOptions sw_options = sliding_window_options(spec_);
  sw_options.progress = progress;
  SB_ASSIGN_OR_RETURN(SlidingWindowResult sw,
                      predict_sliding_window(pre.data, networks_, sw_options, workspace_.get()));
  result.timings_ms.emplace_back("inference", ms_since(t0));
  result.tiles = sw.tiles;

  t0 = std::chrono::steady_clock::now();
  report("export", 0);
  SB_ASSIGN_OR_RETURN(ExportResult ex, export_prediction(sw.logits, ExportGeometry::from(pre), spec_, with_probability));
  if (ex.shape_zyx != Shape3{grid.dims[2], grid.dims[1], grid.dims[0]})
    return base::internal_error("nnU-Net predictor: exported segmentation shape does not match the input grid");
  result.labels.grid = grid;
  result.labels.data = std::move(ex.labels);
  if (with_probability) {
    if (ex.probabilities.channels() < 1 || ex.probabilities.channel_size() != grid.voxel_count())
      return base::internal_error("nnU-Net predictor: exported probabilities do not match the input grid");
    image::VolumeF p;
    p.grid = grid;
    p.data.resize(static_cast<size_t>(grid.voxel_count()));
    // Label models: foreground = 1 - P(background); region models: the first (outermost) region.
    const bool regions = spec_.has_regions();
    const float* src = ex.probabilities.channel(0);
    for (size_t v = 0; v < p.data.size(); ++v) p.data[v] = std::clamp(regions ? src[v] : 1.0f - src[v], 0.0f, 1.0f);
    result.foreground_probability = std::move(p);
  }
  result.timings_ms.emplace_back("export", ms_since(t0));
  report("export", 1);

  auto box = nlohmann::json::array();
  for (int a = 0; a < 3; ++a) box.push_back({pre.bbox.lo[a], pre.bbox.hi[a]});
  result.details = {
      {"spacing_zyx_mm", spacing_zyx},
      {"spacing_transposed_mm", pre.spacing_transposed},
      {"target_spacing_mm", pre.target_spacing},
      {"shape_before_cropping", pre.shape_before_cropping},
      {"bbox_used_for_cropping", box},
      {"shape_after_cropping", pre.shape_after_cropping},
      {"preprocessed_shape", pre.data.shape},
      {"separate_z", pre.separate_z.do_separate_z ? nlohmann::json(pre.separate_z.axis) : nlohmann::json(nullptr)},
      {"padded_shape", sw.padded_shape},
      {"steps_per_axis", sw.steps},
      {"tiles_per_network", sw.tiles},
      {"networks", networks_.size()},
      {"network_runs", sw.network_runs},
      {"mirroring", spec_.use_mirroring ? nlohmann::json(spec_.mirroring_axes) : nlohmann::json(nullptr)},
      {"accumulation", spec_.accumulation == Accumulation::kFloat16 ? "fp16" : "fp32"},
  };
  if (logits_out != nullptr) *logits_out = std::move(sw.logits);
  return result;
}

}  // namespace inference
