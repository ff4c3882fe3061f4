// The engine's op-level graph: built from an imported ONNX model for its one fixed input
// shape (shape inference), with BatchNormalization folded into the preceding Conv and
// Conv/ConvTranspose -> InstanceNormalization -> activation chains fused into one op.
// Backends (cpu_engine.h) walk `ops` in order; every tensor has a fixed shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "inference/onnx_model.h"

namespace inference {

/// What one graph op computes. Convolutions may carry a fused norm and activation.
enum class OpKind {
  kConv,           // ONNX Conv (2D or 3D), optionally + InstanceNorm + activation
  kConvTranspose,  // ONNX ConvTranspose, optionally + InstanceNorm + activation
  kInstanceNorm,   // ONNX InstanceNormalization not fused into a convolution (+ activation)
  kActivation,     // ONNX Relu / LeakyRelu / Sigmoid on its own
  kAdd,            // ONNX Add of two activations of the same shape
  kConcat,         // ONNX Concat along the channel axis
  kSoftmax,        // ONNX Softmax over the channel axis (opset >= 13)
  kAvgPool,        // ONNX AveragePool (ResidualEncoderUNet's strided skip); geometry in `conv`
};

/// Pointwise nonlinearity applied at the end of an op.
enum class Activation { kNone, kRelu, kLeakyRelu, kSigmoid };

std::string_view op_kind_name(OpKind kind);
std::string_view activation_name(Activation a);

/// An activation tensor: fixed shape (N, C, spatial...), float32 in ONNX.
struct GraphTensor {
  std::string name;
  std::vector<int64_t> shape;
  int producer = -1;           // op index; -1 for the graph input
  std::vector<int> consumers;  // op indices, ascending
  bool is_graph_input = false;
  bool is_graph_output = false;
  int64_t num_elements() const;
};

/// Convolution (and kAvgPool window) parameters, ONNX conventions. Weights are C order:
/// Conv [C_out, C_in, k...], ConvTranspose [C_in, C_out, k...] (group 1 only).
struct ConvParams {
  std::vector<int64_t> kernel;      // spatial kernel size, length 2 or 3
  std::vector<int64_t> strides;     // same length
  std::vector<int64_t> pads_begin;  // same length
  std::vector<int64_t> pads_end;    // same length
  std::vector<int64_t> weight_dims;
  std::vector<float> weights;
  std::vector<float> bias;  // length C_out (zeros when the model has none)
};

/// Per-channel affine normalization over the spatial dims of each instance:
/// y = (x - mean_c) / sqrt(var_c + epsilon) * scale_c + shift_c (ONNX InstanceNormalization).
struct NormParams {
  std::vector<float> scale;
  std::vector<float> shift;
  float epsilon = 1e-5f;
};

/// One step of the forward pass.
struct GraphOp {
  OpKind kind = OpKind::kConv;
  std::string name;                     // first ONNX node's name
  std::vector<std::string> onnx_nodes;  // "<name> (<op_type>)" of every fused ONNX node
  std::vector<int> inputs;              // activation tensor indices
  int output = -1;
  ConvParams conv;  // kConv, kConvTranspose
  bool has_norm = false;
  NormParams norm;  // has_norm (always for kInstanceNorm)
  Activation activation = Activation::kNone;
  float alpha = 0.0f;  // LeakyRelu slope
  int axis = 1;        // kConcat, kSoftmax
  bool count_include_pad = false;  // kAvgPool: padded zeros count in the mean (ONNX attribute)
  /// Multiply-accumulates of a convolution / deconvolution (0 for other ops).
  double macs(const std::vector<GraphTensor>& tensors) const;
};

/// The whole network for one fixed input shape.
struct Graph {
  std::vector<GraphTensor> tensors;
  std::vector<GraphOp> ops;  // execution order (topological)
  int input = -1;
  int output = -1;
  int64_t opset = 0;
  /// Sum of GraphOp::macs * 2 / 1e9.
  double gflop() const;
  /// One line per op: index, kind, fused ONNX nodes, input and output shapes.
  std::string describe() const;
};

/// Options of graph construction (fusion can be switched off to test the unfused path).
struct GraphOptions {
  bool fuse = true;
};

/// Builds the graph of `model`. Errors:
/// - kInvalidArgument: not exactly one float input, a dynamic input shape, malformed nodes
///   (missing weights, shape mismatch with a declared output shape, not topologically sorted);
/// - kUnimplemented: any operator outside Conv, ConvTranspose, InstanceNormalization,
///   BatchNormalization (foldable into a preceding Conv), LeakyRelu, Relu, Sigmoid, Add,
///   Concat (axis 1), Softmax (axis 1), AveragePool (ceil_mode 0, no dilation), Pad (only with
///   all pads 0, as torch exports AvgPool's skip in ResidualEncoderUNet), Identity, or an
///   unsupported attribute value (group != 1, dilations != 1, auto_pad SAME_*, output_padding,
///   batch size != 1). The message names the
///   node and the operator, e.g. "unsupported ONNX operator 'Gather' at node 'Gather_12'".
base::Result<Graph> build_graph(const OnnxModel& model, const GraphOptions& options = {});

}  // namespace inference
