// Engine files: a network compiled once for this machine and stored beside its ONNX file, so
// that the appliance starts without re-importing ONNX. A file holds a versioned header (model
// hash, backend, precision, CPU features, shapes), the graph after fusion, the memory plan
// and the weights (fp16 for reduced precisions), closed by a checksum. Format: docs/engine.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "inference/cpu_engine.h"
#include "inference/graph.h"
#include "inference/memory_planner.h"

namespace inference {

/// Version of the engine file layout; a file of another version is refused (rebuild it).
inline constexpr uint32_t kEngineFormatVersion = 2;
/// Largest finite fp16 value.
inline constexpr float kFp16Max = 65504.0f;

/// IEEE 754 binary16 conversions (round to nearest even; overflow gives infinity).
uint16_t float_to_fp16(float f);
float fp16_to_float(uint16_t h);

/// 64-bit FNV-1a hash (http://www.isthe.com/chongo/tech/comp/fnv/) of `size` bytes,
/// continuing from `seed` (the FNV offset basis by default).
uint64_t fnv1a64(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ull);
/// The model hash recorded in engine files: FNV-1a 64 of the ONNX bytes, 16 hex digits.
std::string model_hash(const std::string& onnx_bytes);

/// What an engine file says about itself (everything except the graph and the weights).
struct EngineFileHeader {
  uint32_t format_version = kEngineFormatVersion;
  std::string model_hash;         // model_hash() of the ONNX the file was built from
  std::string onnx_name;          // file name of that ONNX (information only)
  std::string backend = "cpu";
  std::string precision;          // storage precision: fp32, bf16 or fp16
  std::string compute_precision;  // fp32 or bf16 (on the building machine)
  std::string weight_storage;     // "fp32" or "fp16"
  /// CPU features the file needs, e.g. {"onednn_isa:avx2"}; loading on a CPU whose oneDNN
  /// ISA differs is refused (layouts and the memory plan depend on it).
  std::vector<std::string> cpu_features;
  std::vector<int64_t> input_shape, output_shape;
  size_t arena_bytes = 0;
  size_t naive_bytes = 0;
};

/// The CPU features an engine of `storage_precision` built on this machine requires.
std::vector<std::string> required_cpu_features(const std::string& storage_precision);

/// Serializes a compiled engine: `graph` is the graph the engine was loaded from, with its
/// weights (CpuEngine drops its own copy); the header fields come from the engine and
/// `onnx_bytes`. Errors: kInvalidArgument (weights beyond fp16 for reduced precisions).
base::Result<std::string> serialize_engine(const Graph& graph, const CpuEngine& engine, const std::string& onnx_bytes,
                                           const std::string& onnx_name);
/// Same with an explicit header (tests use it to write files for other CPUs or models).
base::Result<std::string> serialize_engine(const Graph& graph, const EngineFileHeader& header,
                                           const std::vector<BufferRequest>& requests, const MemoryPlan& plan);

/// A parsed engine file (checked: magic, version, lengths, checksum).
struct EngineFileContents {
  EngineFileHeader header;
  Graph graph;
  std::vector<BufferRequest> requests;
  MemoryPlan plan;
};

/// Parses engine file bytes. Errors: kDataLoss (not an engine file, truncated, checksum
/// mismatch, malformed sections), kFailedPrecondition (another format version).
base::Result<EngineFileContents> parse_engine_file(const std::string& bytes);

/// Reads and checks an engine file and compiles it for this CPU. `expected_model_hash` (when
/// not empty) must match the file's. Errors: kNotFound (no file), those of parse_engine_file,
/// kFailedPrecondition (other model, other CPU features, a memory plan that differs from the
/// stored one), then CpuEngine's. Messages name the file and say to rebuild.
base::Result<std::unique_ptr<CpuEngine>> load_engine_file(const std::string& path,
                                                          const std::string& expected_model_hash,
                                                          const EngineOptions& options);

/// Where the engine of `onnx_path` at `storage_precision` lives: `cpu-<precision>.engine`
/// beside it for the package's single network `model.onnx`, `<stem>.cpu-<precision>.engine`
/// for any other name (the folds `fold_N.onnx` of a multi-fold package).
std::string engine_path_for(const std::string& onnx_path, const std::string& storage_precision);

/// Builds the engine of an ONNX file and writes it atomically (temporary file + rename) to
/// `engine_path`. Returns the engine. Errors: those of CpuEngine::load_onnx, kInternal when
/// the file cannot be written.
base::Result<std::unique_ptr<CpuEngine>> build_engine_file(const std::string& onnx_path,
                                                           const std::string& engine_path,
                                                           const EngineOptions& options);

/// The pipeline's entry point: resolves options.precision ("auto" included), uses the engine
/// file beside `onnx_path` when it is present and valid for this model and CPU, else builds
/// the engine and writes the file atomically (a write failure is logged, not fatal).
/// `*built` (optional) tells whether it was built. Errors: as CpuEngine::load_onnx.
base::Result<std::unique_ptr<CpuEngine>> load_or_build_engine(const std::string& onnx_path,
                                                              const EngineOptions& options, bool* built = nullptr);

/// Human-readable header, graph layers and the stored memory plan of an engine file.
std::string describe_engine_file(const EngineFileContents& contents);

}  // namespace inference
