// The main job for one study: select series -> assemble volumes -> nnU-Net inference ->
// outputs (report.json, lesion_mask.nii.gz, seg.dcm). Used by `strokebox segment` and by the
// daemon's worker. Create once (loads the model and its engine), then process many studies.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "inference/sliding_window.h"

namespace firmware {

/// Which lesions flagged by the plausibility guard (image/lesion_plausibility.h) a model's
/// postprocessing leaves out of the reported mask (ModelPostprocessing).
enum class ImplausibleLesions {
  kKeep,                 ///< "keep": the mask as the network made it, flagged lesions included
  kExcludeBelowTissue,   ///< "exclude-below-tissue-adc": only those whose median ADC is below every
                         ///< brain tissue's (fat, the noise floor; PlausibilityOptions::min_tissue_adc)
  kExcludeAll,           ///< "exclude": every flagged lesion, also those without restricted diffusion
};

/// The model.json / command-line name of a mode ("keep", "exclude-below-tissue-adc", "exclude").
const char* implausible_lesions_name(ImplausibleLesions mode);

/// The accepted names, for messages: "keep, exclude-below-tissue-adc or exclude".
std::string implausible_lesions_choices();

/// The mode named `name`; empty when the name is unknown.
std::optional<ImplausibleLesions> parse_implausible_lesions(const std::string& name);

struct PipelineOptions {
  std::string model_dir;            // model package (docs/model_package.md)
  std::string precision = "fp32";   // engine precision: fp32 | bf16 | fp16 | auto
  /// Deployment overrides of model.json (trade minutes for accuracy, docs/nnunet_parity.md).
  std::optional<bool> use_mirroring;     // test-time mirroring over the model's axes
  std::optional<double> tile_step_size;  // sliding-window step as a fraction of the patch, (0, 1]
  /// Also write lesion_probability.nii.gz (float32 in [0, 1], the DWI grid): the input of
  /// `strokebox evaluate --prob` (voxel-wise average precision).
  bool write_probability = false;
  /// DICOM studies: also write the volumes given to the model, on the DWI's grid, before
  /// nnU-Net preprocessing: `dwi.nii.gz` (the trace) and `adc.nii.gz` (as the scanner stored it
  /// or as derived, in its own unit). For checking what the box read; `segment --save-inputs`.
  bool write_inputs = false;
  /// > 0: preallocate the sliding-window buffers at create() for preprocessed volumes of up to
  /// this many voxels per channel (after resampling to the target spacing and padding to the
  /// patch), so a study allocates none and a larger one fails with a reason naming the limit.
  /// 0: buffers are allocated per study. The daemon's `model.max_preprocessed_voxels`.
  int64_t max_preprocessed_voxels = 0;
  /// Not empty: where engine files go when the model folder is not writable (a packaged model
  /// under /usr/share, a read-only root, ProtectSystem=strict): `<dir>/engines/<model folder,
  /// '/' as '_'>/`, next to a symbolic link to the ONNX. Empty or a writable model folder: beside
  /// the ONNX, as before. The daemon passes its data directory (the unit's StateDirectory).
  std::string engine_cache_dir;
  /// Segment a study whose diffusion b-values all lie outside the model's accepted range
  /// (model.json "diffusion") at the b closest to the model's, with a warning in report.json,
  /// instead of refusing it. The daemon's `model.allow_b_outside_range`.
  bool allow_b_outside_range = false;
  /// Deployment override of model.json "postprocessing" (ModelPostprocessing): which lesions
  /// the plausibility guard flags are left out of the mask, SEG, SR and volume; empty: the model's.
  std::optional<ImplausibleLesions> implausible_lesions;
};

/// The b-values a model accepts (model.json "diffusion", docs/model_package.md), s/mm^2.
struct ModelDiffusion {
  double b_value = 1000.0;  ///< the b the model was trained with (the preferred one)
  double b_min = 700.0;     ///< accepted range, inclusive
  double b_max = 1500.0;
  bool from_model_json = false;  ///< false: model.json has no "diffusion" key, these are the defaults
};

/// Reads the "diffusion" object of `model_dir`/model.json: {"b_value_s_mm2": 1000,
/// "accepted_b_range_s_mm2": [700, 1500]}. Absent: the defaults above.
/// Errors: kInvalidArgument naming the field (not numbers, b outside its range, range
/// reaching down to b0 (<= 50 s/mm^2)); kNotFound without model.json.
base::Result<ModelDiffusion> read_model_diffusion(const std::string& model_dir);

/// What the box does with the network's mask before reporting it, for one model (model.json
/// "postprocessing", docs/model_package.md). Chosen per trained model on its validation data, as
/// nnU-Net chooses its postprocessing per model (nnunetv2/postprocessing/
/// remove_connected_components.py, determine_postprocessing); absent: nothing is removed, so an
/// imported nnU-Net model's mask stays nnU-Net's.
struct ModelPostprocessing {
  /// Which lesions flagged by the plausibility guard (image/lesion_plausibility.h) are left out
  /// of lesion_mask.nii.gz, seg.dcm, the SR, lesion_volume_ml and lesion_count; report.json
  /// still lists them ("excluded") and the overlay still draws them in blue.
  ImplausibleLesions implausible_lesions = ImplausibleLesions::kKeep;
};

/// Reads the "postprocessing" object of `model_dir`/model.json: {"implausible_lesions":
/// "keep" | "exclude-below-tissue-adc" | "exclude"}. Absent: the defaults above. Errors:
/// kInvalidArgument naming the field (unknown key or value); kNotFound without model.json.
base::Result<ModelPostprocessing> read_model_postprocessing(const std::string& model_dir);

/// What happened to one study; serialized as report.json (DESIGN.md "Outputs").
struct StudyReport {
  std::string status = "failed";    // "done" | "failed"
  std::string reason;               // for "failed": what a technician can act on
  std::string study_instance_uid;
  std::string dwi_series_instance_uid;
  std::string adc_series_instance_uid;
  double lesion_volume_ml = 0.0;
  int lesion_count = 0;
  std::string model_id, backend, precision;
  /// Wall time per stage in ms, in pipeline order: receive (daemon only), load, preprocess,
  /// inference, export, write.
  std::vector<std::pair<std::string, double>> timings_ms;
  nlohmann::json extra = nlohmann::json::object();  // anything else worth keeping

  nlohmann::json to_json() const;
};

class Pipeline {
 public:
  /// Loads the model package and builds its engine for the fixed patch shape.
  /// Errors: kNotFound (no model.json/model.onnx), kInvalidArgument (bad package),
  /// kUnimplemented (unsupported operator or precision).
  static base::Result<std::unique_ptr<Pipeline>> create(const PipelineOptions& options);
  ~Pipeline();

  /// Segments the DICOM study in `study_dir` (any layout, files found recursively) and writes
  /// report.json, lesion_mask.nii.gz and seg.dcm into `out_dir` (created if missing).
  /// Never throws; an unusable study gives status "failed" with a reason (and report.json).
  /// `progress` hears each stage start and end ("load", "preprocess", "inference" after every
  /// network run, "export", "write") on the calling thread: the daemon's worker heartbeat.
  StudyReport process_study(const std::string& study_dir, const std::string& out_dir,
                            const inference::ProgressFn& progress = {});

  /// Bytes of the preallocated sliding-window buffers (0 when max_preprocessed_voxels is 0).
  size_t reserved_bytes() const;

  /// Research path: channel NIfTI files in the model's channel order -> report.json and
  /// lesion_mask.nii.gz on the first image's grid.
  StudyReport process_nifti(const std::vector<std::string>& images, const std::string& out_dir);

 private:
  struct Impl;
  explicit Pipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace firmware
