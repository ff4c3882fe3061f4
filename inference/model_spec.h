// ModelSpec: the parsed and validated model.json of a model package (docs/model_package.md), i.e.
// everything nnU-Net v2 inference needs around the network. load_model_spec() reads a package;
// spec_from_nnunet_plans() builds the same from an nnU-Net results folder's plans/dataset JSON.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace inference {

/// The model.json "format" this code reads.
inline constexpr const char* kModelFormat = "strokebox-model/1";

/// nnU-Net's foreground intensity statistics of one channel (plans'
/// foreground_intensity_properties_per_channel), used by CTNormalization.
struct IntensityProperties {
  double mean = 0.0;
  double std = 1.0;
  double percentile_00_5 = 0.0;
  double percentile_99_5 = 0.0;
};

/// Normalization schemes of nnU-Net (nnunetv2/preprocessing/normalization).
enum class Normalization { kZScore, kCT, kNone, kRescaleTo01 };

/// nnU-Net's class name of a scheme ("ZScoreNormalization", ...).
std::string normalization_name(Normalization n);

/// One input channel, in network input order.
struct ChannelSpec {
  std::string name;  // "DWI", "ADC", ...
  Normalization normalization = Normalization::kZScore;
  bool use_mask_for_norm = false;
  std::optional<IntensityProperties> intensity_properties;  // required for kCT
  /// The unit the network expects the channel in, "" when the values are used as given. Only
  /// kAdcMicroUnit is known: an ADC channel the box brings to 10^-6 mm^2/s before normalizing
  /// (needed by CTNormalization, whose intensity_properties are absolute; docs/model_package.md).
  std::string unit;
};

/// ChannelSpec::unit of an ADC channel in 10^-6 mm^2/s.
inline constexpr const char* kAdcMicroUnit = "1e-6 mm2/s";

/// nnU-Net's resampling_fn_data_kwargs / resampling_fn_probabilities_kwargs.
struct ResamplingSpec {
  int data_order = 3;
  int data_order_z = 0;
  int probabilities_order = 1;
  int probabilities_order_z = 0;
  std::optional<bool> force_separate_z;  // null in the plans = decide from the spacing
};

/// How the sliding window accumulates Gaussian-weighted tiles.
enum class Accumulation {
  kFloat32,  // float32 accumulators (more accurate where the summed weight is tiny)
  kFloat16,  // emulate nnU-Net v2's torch.half accumulators bit for bit
};

/// A label of dataset.json: a name and one value (label models) or several (region models).
struct LabelSpec {
  std::string name;
  std::vector<int> values;
};

/// Parsed model.json. Array-order quantities are in nnU-Net's transposed order.
struct ModelSpec {
  std::string format = kModelFormat;
  std::string model_id;
  std::vector<std::string> networks;      // ONNX files relative to model_dir, one per fold
  std::string model_dir;                  // folder of model.json (set by load_model_spec)
  std::vector<ChannelSpec> channels;
  std::array<double, 3> target_spacing_mm{1.0, 1.0, 1.0};
  std::array<int64_t, 3> patch_size{0, 0, 0};
  std::array<int, 3> transpose_forward{0, 1, 2};
  std::array<int, 3> transpose_backward{0, 1, 2};
  std::vector<LabelSpec> labels;          // sorted by first value; "background" = 0 first
  std::optional<std::vector<int>> regions_class_order;
  bool use_mirroring = false;
  std::vector<int> mirroring_axes{0, 1, 2};
  double tile_step_size = 0.5;
  ResamplingSpec resampling;
  Accumulation accumulation = Accumulation::kFloat32;
  nlohmann::json provenance = nlohmann::json::object();

  bool has_regions() const { return regions_class_order.has_value(); }
  /// Number of network output channels: classes (label models) or regions.
  int num_outputs() const;
  /// Largest label value written into the segmentation.
  int max_label() const;
};

/// Validates a model.json document. Errors: kInvalidArgument whose message names the bad field
/// ("model.json: channels[1].normalization: ...").
base::Result<ModelSpec> parse_model_spec(const nlohmann::json& doc);

/// Reads and validates `model_dir`/model.json; sets model_dir. Errors: kNotFound (no file),
/// kInvalidArgument (not JSON or invalid field).
base::Result<ModelSpec> load_model_spec(const std::string& model_dir);

/// The model.json document of a spec (round-trips through parse_model_spec).
nlohmann::json model_spec_to_json(const ModelSpec& spec);

/// Builds a spec from an nnU-Net v2 results folder's plans.json and dataset.json for one
/// configuration (e.g. "3d_fullres"), as tools/import_nnunet.py does. networks and model_id are
/// left for the caller. Errors: kInvalidArgument naming the missing or unsupported plans field.
base::Result<ModelSpec> spec_from_nnunet_plans(const nlohmann::json& plans, const nlohmann::json& dataset,
                                               const std::string& configuration);

}  // namespace inference
