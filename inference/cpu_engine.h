// The CPU engine: runs a fixed-shape ONNX network (nnU-Net) on oneDNN. Everything is
// decided at load: primitives for the fixed shapes in oneDNN's preferred (blocked) layouts,
// weights reordered once, one arena for all activations and scratchpads from a static
// memory plan. run() then only executes the primitives: no heap allocation by this code.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "inference/patch_model.h"

namespace inference {

struct OnnxModel;

/// How the engine computes.
struct EngineOptions {
  /// "fp32" (implemented). "bf16" is planned (oneDNN bf16 primitives on AMX/AVX512-BF16).
  std::string precision = "fp32";
  /// Worker threads for oneDNN's OpenMP runtime; 0 = all cores. Process-wide setting.
  int threads = 0;
  /// Fuse Conv -> InstanceNorm -> activation chains (turn off only to test the unfused path).
  bool fuse = true;
  /// Reuse memory between tensors (greedy plan, in-place norm/activation, concat by slices);
  /// false gives the linear never-reuse plan, for debugging.
  bool reuse_memory = true;
};

/// A network compiled for the CPU with oneDNN. Not thread-safe: one run() at a time.
class CpuEngine final : public PatchModel {
 public:
  /// Loads and compiles an ONNX file. Errors: kNotFound (file), kInvalidArgument (not ONNX,
  /// dynamic input shape, malformed graph), kUnimplemented (operator, attribute or
  /// precision, with the node and operator named), kInternal (oneDNN failure).
  static base::Result<std::unique_ptr<CpuEngine>> load_onnx(const std::string& onnx_path,
                                                            const EngineOptions& options);
  /// Same, from an already imported model.
  static base::Result<std::unique_ptr<CpuEngine>> load_model(const OnnxModel& model, const EngineOptions& options);

  ~CpuEngine() override;
  CpuEngine(const CpuEngine&) = delete;
  CpuEngine& operator=(const CpuEngine&) = delete;

  std::array<int64_t, 5> input_shape() const override;
  std::array<int64_t, 5> output_shape() const override;
  /// One forward pass; `input`/`output` dense C-order float32 of the shapes above (for a 2D
  /// network d0 is 1). Errors: kInternal when a oneDNN primitive fails.
  base::Status run(const float* input, float* output) override;
  std::string backend() const override { return "cpu"; }
  std::string precision() const override;

  /// Bytes of the activation arena (tensors and scratchpads) from the memory plan.
  size_t arena_bytes() const;
  /// Bytes every tensor and scratchpad would take without any reuse (for comparison).
  size_t naive_bytes() const;
  /// Bytes of the weights after reordering into the primitives' layouts.
  size_t weight_bytes() const;
  /// Convolution and deconvolution work of one run: 2 * MACs / 1e9.
  double gflop_per_run() const;
  /// Layers with shapes, oneDNN implementations and layouts, then the memory plan.
  std::string describe() const;

 private:
  struct Impl;
  explicit CpuEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace inference
