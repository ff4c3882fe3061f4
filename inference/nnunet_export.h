// nnU-Net v2 export (nnunetv2/inference/export_prediction.py,
// convert_predicted_logits_to_segmentation_with_correct_shape): logits on the network grid ->
// resampled to the cropped native shape (order 1, separate-z rules with the spacings swapped) ->
// softmax + argmax or sigmoid + regions_class_order -> pasted into the uncropped volume ->
// transpose_backward. The result is in reader order (z, y, x) = Volume memory order.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "inference/model_spec.h"
#include "inference/nnunet_preprocess.h"

namespace inference {

/// What export needs from preprocessing (all in transposed order; see Preprocessed).
struct ExportGeometry {
  Shape3 shape_before_cropping{0, 0, 0};
  Bbox3 bbox;
  Shape3 shape_after_cropping{0, 0, 0};
  Spacing3 spacing_transposed{0, 0, 0};  // the input's spacing, transposed (mm)

  static ExportGeometry from(const Preprocessed& p) {
    return {p.shape_before_cropping, p.bbox, p.shape_after_cropping, p.spacing_transposed};
  }
};

/// Export output.
struct ExportResult {
  Shape3 shape_zyx{0, 0, 0};      // reader order: (k, j, i) of the input volume
  std::vector<uint8_t> labels;    // C order over shape_zyx (i fastest)
  Tensor4f probabilities;         // (K, z, y, x) when requested: softmax/sigmoid, uncropped
                                  // (label models: background 1 outside the bbox)
};

/// Softmax over channel 0 of (K, ...) in float32 (torch.softmax(dim=0)) for label models, the
/// logistic sigmoid for region models. In place.
void apply_inference_nonlin(Tensor4f& logits, bool regions);

/// Label models: argmax over channels (ties -> lowest class). Region models: 0, then for each
/// region i in order, label regions_class_order[i] where probability_i > 0.5.
std::vector<uint8_t> probabilities_to_segmentation(const Tensor4f& probabilities, const ModelSpec& spec);

/// Full export of `logits` (K, d0, d1, d2) on the preprocessed grid. Logits are resampled with
/// the model's probabilities order from the target spacing to spacing_transposed; with
/// Accumulation::kFloat16 the resampled values are rounded to float16 as nnU-Net stores them.
/// Errors: kInvalidArgument (channel count not the model's outputs, inconsistent geometry).
base::Result<ExportResult> export_prediction(const Tensor4f& logits, const ExportGeometry& geometry,
                                             const ModelSpec& spec, bool return_probabilities = false);

}  // namespace inference
