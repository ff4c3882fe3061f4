// ONNX import: reads a serialized onnx::ModelProto (libonnx, protobuf) into plain C++ structs
// (nodes, attributes, initializers as float/int64 arrays, fixed value shapes), so that the
// rest of the engine never sees protobuf types. Usage: `SB_ASSIGN_OR_RETURN(auto m, read_onnx_file(p));`
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"

namespace inference {

/// ONNX TensorProto.DataType values this importer understands (onnx.proto, enum DataType).
enum class OnnxDataType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kInt32 = 6,
  kInt64 = 7,
  kDouble = 11,
};

/// A constant tensor (graph initializer or a Constant node's value). Floating point data
/// (FLOAT, DOUBLE) is converted to `f32`, integer data (INT32, INT64) to `i64`; C order.
struct OnnxTensor {
  std::string name;
  std::vector<int64_t> dims;
  OnnxDataType data_type = OnnxDataType::kUndefined;
  std::vector<float> f32;
  std::vector<int64_t> i64;
  /// Number of elements (product of dims; 1 for a scalar).
  int64_t num_elements() const;
};

/// One node attribute. Only the kinds this engine needs are kept; others set `kind = kOther`.
struct OnnxAttribute {
  enum class Kind { kInt, kFloat, kString, kInts, kFloats, kTensor, kOther };
  std::string name;
  Kind kind = Kind::kOther;
  int64_t i = 0;
  float f = 0.0f;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  OnnxTensor tensor;  // kind == kTensor
};

/// One graph node, in the file's (topological) order.
struct OnnxNode {
  std::string name;     // may be empty in the file; the importer then names it "<op_type>_<index>"
  std::string op_type;  // "Conv", "InstanceNormalization", ...
  std::string domain;   // "" or "ai.onnx" for the default domain
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;
  std::map<std::string, OnnxAttribute> attributes;

  const OnnxAttribute* attribute(const std::string& key) const;
};

/// A graph input or output. `dims[i] < 0` marks a dynamic (symbolic or unknown) dimension.
struct OnnxValueInfo {
  std::string name;
  int32_t elem_type = 0;  // OnnxDataType value
  std::vector<int64_t> dims;
  bool has_shape = false;
  /// True when every dimension is a known positive number.
  bool is_fixed() const;
};

/// The parts of a ModelProto the engine uses.
struct OnnxModel {
  int64_t ir_version = 0;
  int64_t opset = 0;  // version of the default ("" / "ai.onnx") domain
  std::string producer;
  std::string graph_name;
  std::vector<OnnxValueInfo> inputs;   // graph inputs that are not initializers
  std::vector<OnnxValueInfo> outputs;
  std::map<std::string, OnnxTensor> initializers;  // includes Constant node values and Identity copies
  std::vector<OnnxNode> nodes;                      // Constant nodes and Identity of constants removed
};

/// Parses a serialized ModelProto. Errors: kInvalidArgument (not a ModelProto, tensor data
/// inconsistent with its dims), kUnimplemented (external tensor data, unsupported data type
/// of an initializer, graph with subgraphs), naming the offending tensor or node.
base::Result<OnnxModel> parse_onnx_model(const std::string& bytes);

/// Reads and parses an .onnx file. Errors: kNotFound (missing/unreadable file), then as
/// parse_onnx_model with the path as context.
base::Result<OnnxModel> read_onnx_file(const std::string& path);

}  // namespace inference
