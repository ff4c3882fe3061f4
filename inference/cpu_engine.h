// The CPU engine: runs a fixed-shape ONNX network (nnU-Net) on oneDNN. Everything is
// decided at load: primitives for the fixed shapes in oneDNN's preferred (blocked) layouts,
// weights reordered once, one arena for all activations and scratchpads from a static
// memory plan. run() then only executes the primitives: no heap allocation by this code.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "inference/layout_policy.h"
#include "inference/memory_planner.h"
#include "inference/patch_model.h"

namespace inference {

struct OnnxModel;
struct Graph;

/// How the engine computes.
struct EngineOptions {
  /// "fp32"; "bf16" (weights stored in fp16, computed in bf16: needs a CPU where oneDNN runs
  /// bf16 natively, AVX512-BF16 or AMX); "fp16" (weights rounded to fp16, the format of the
  /// engine file the Jetson backend consumes; computed in bf16 where native, else fp32);
  /// "auto" (bf16 where native, else fp32). See resolve_precision().
  std::string precision = "fp32";
  /// Worker threads for oneDNN's OpenMP runtime; 0 = all cores. Process-wide setting.
  int threads = 0;
  /// Fuse Conv -> InstanceNorm -> activation chains (turn off only to test the unfused path).
  bool fuse = true;
  /// Reuse memory between tensors (greedy plan, in-place norm/activation, concat by slices);
  /// false gives the linear never-reuse plan, for debugging.
  bool reuse_memory = true;
  /// Which layers of a bf16-computing engine keep fp32 (layout_policy.h; defaults measured in
  /// docs/engine.md, "bf16 precision policy").
  Bf16Policy bf16_policy;
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
  /// Same, from a built graph (e.g. read from an engine file). Reduced precisions round the
  /// graph's weights to fp16 first (idempotent), so ONNX and engine-file loads agree bit for bit.
  static base::Result<std::unique_ptr<CpuEngine>> load_graph(Graph graph, const EngineOptions& options);

  ~CpuEngine() override;
  CpuEngine(const CpuEngine&) = delete;
  CpuEngine& operator=(const CpuEngine&) = delete;

  std::array<int64_t, 5> input_shape() const override;
  std::array<int64_t, 5> output_shape() const override;
  /// One forward pass; `input`/`output` dense C-order float32 of the shapes above (for a 2D
  /// network d0 is 1). Errors: kInternal when a oneDNN primitive fails.
  base::Status run(const float* input, float* output) override;
  std::string backend() const override { return "cpu"; }
  /// "fp32", "bf16" (fp16-stored weights, bf16 compute), "fp16-weights/fp32-compute" or
  /// "fp16-weights/bf16-compute".
  std::string precision() const override;
  /// The resolved storage precision: "fp32", "bf16" or "fp16" (never "auto").
  std::string storage_precision() const;
  /// What the primitives compute in: "fp32" or "bf16".
  std::string compute_precision() const;
  /// The layout of the activations (layout_policy.h), chosen from the oneDNN ISA in use.
  ActivationFormat activation_format() const;
  /// The buffers of the static memory plan (tensor groups, scratchpads) and their placement.
  const std::vector<BufferRequest>& plan_requests() const;
  const MemoryPlan& memory_plan() const;
  /// Per-step time profile of the last runs since enable_profiling(true): one line per op
  /// (kind, shapes, milliseconds per run, share of the total), slowest first. Profiling adds a
  /// clock read around each primitive (and a stream wait, negligible on the CPU).
  void enable_profiling(bool on);
  std::string profile_report() const;

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

/// oneDNN's name of the instruction set it dispatches to on this CPU (after any
/// ONEDNN_MAX_CPU_ISA cap), e.g. "avx2", "avx512_core_bf16", "avx512_core_amx"; "aarch64" or
/// "generic" on other architectures.
std::string cpu_isa_name();
/// True when oneDNN runs bf16 convolutions natively here (AVX512-BF16 or AMX).
bool cpu_has_native_bf16();
/// Maps a requested precision ("fp32", "bf16", "fp16", "auto") to the one the engine stores:
/// auto -> bf16 where native, else fp32. Errors: kInvalidArgument (unknown name),
/// kUnimplemented (bf16 on a CPU without AVX512-BF16/AMX, naming the missing feature).
base::Result<std::string> resolve_precision(const std::string& requested);
/// Rounds every convolution weight of `graph` to the nearest fp16 value (round to nearest
/// even), the storage of reduced-precision engines. Errors: kInvalidArgument when a weight
/// is beyond fp16's range (|w| > 65504), naming the node.
base::Status round_weights_to_fp16(Graph& graph);

}  // namespace inference
