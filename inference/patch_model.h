// PatchModel: what the nnU-Net sliding window needs from an engine: run one fixed-shape
// patch. The CPU engine (engine.h) implements it; tests implement it with fakes.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace inference {

/// A network compiled for one fixed input shape.
class PatchModel {
 public:
  virtual ~PatchModel() = default;
  /// Input shape (N=1, C_in, d0, d1, d2): d0..d2 in nnU-Net's transposed array order.
  virtual std::array<int64_t, 5> input_shape() const = 0;
  /// Output shape (N=1, C_out, d0, d1, d2): raw logits, one channel per class or region.
  virtual std::array<int64_t, 5> output_shape() const = 0;
  /// Runs one forward pass. `input` and `output` are dense C-order float32 buffers of the
  /// shapes above, owned by the caller. Must not allocate on the heap after construction.
  /// Errors: kInternal when the backend fails.
  virtual base::Status run(const float* input, float* output) = 0;
  /// "cpu" (oneDNN), "tensorrt", ...
  virtual std::string backend() const = 0;
  /// "fp32", "bf16", "fp16": the precision the network actually computes in.
  virtual std::string precision() const = 0;
};

}  // namespace inference
