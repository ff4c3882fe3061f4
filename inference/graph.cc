#include "inference/graph.h"

#include <cmath>
#include <map>
#include <sstream>

namespace inference {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

std::string node_label(const OnnxNode& n) { return "node '" + n.name + "' (" + n.op_type + ")"; }

/// Builds the graph node by node; holds the name -> tensor map while importing.
class GraphBuilder {
 public:
  GraphBuilder(const OnnxModel& model, Graph* g) : model_(model), g_(*g) {}

  base::Status add_input(const OnnxValueInfo& in) {
    if (in.elem_type != static_cast<int32_t>(OnnxDataType::kFloat)) {
      return base::invalid_argument("graph input '" + in.name + "' is not float32 (ONNX elem_type " +
                                    std::to_string(in.elem_type) + ")");
    }
    if (!in.is_fixed()) {
      return base::invalid_argument("graph input '" + in.name + "' has a dynamic shape " + shape_str(in.dims) +
                                    "; export the model with a fixed input shape (1 x C x patch)");
    }
    if (in.dims.size() != 4 && in.dims.size() != 5) {
      return base::unimplemented("graph input '" + in.name + "' has rank " + std::to_string(in.dims.size()) +
                                 "; only N x C x H x W and N x C x D x H x W are supported");
    }
    if (in.dims[0] != 1) {
      return base::unimplemented("graph input '" + in.name + "' has batch size " + std::to_string(in.dims[0]) +
                                 "; only batch size 1 is supported");
    }
    g_.input = new_tensor(in.name, in.dims, -1);
    g_.tensors[g_.input].is_graph_input = true;
    return base::ok_status();
  }

  base::Status add_node(const OnnxNode& n) {
    if (!n.domain.empty() && n.domain != "ai.onnx") {
      return base::unimplemented("unsupported ONNX operator '" + n.domain + "." + n.op_type + "' at node '" +
                                 n.name + "'");
    }
    const std::string& t = n.op_type;
    if (t == "Conv" || t == "ConvTranspose") return add_conv(n, t == "ConvTranspose");
    if (t == "InstanceNormalization") return add_instance_norm(n);
    if (t == "BatchNormalization") return add_batch_norm(n);
    if (t == "Relu" || t == "LeakyRelu" || t == "Sigmoid") return add_activation(n);
    if (t == "Add") return add_add(n);
    if (t == "Identity") return add_alias(n);
    if (t == "Concat") return add_concat(n);
    if (t == "Softmax") return add_softmax(n);
    if (t == "AveragePool") return add_avg_pool(n);
    if (t == "Pad") return add_pad(n);
    return base::unimplemented("unsupported ONNX operator '" + t + "' at node '" + n.name + "'");
  }

  base::Status set_output(const OnnxValueInfo& out) {
    auto it = by_name_.find(out.name);
    if (it == by_name_.end()) {
      return base::invalid_argument("graph output '" + out.name + "' is not produced by any supported node");
    }
    const GraphTensor& t = g_.tensors[it->second];
    if (out.has_shape && out.is_fixed() && out.dims != t.shape) {
      return base::invalid_argument("graph output '" + out.name + "' is declared " + shape_str(out.dims) +
                                    " but computes to " + shape_str(t.shape));
    }
    g_.output = it->second;
    g_.tensors[g_.output].is_graph_output = true;
    return base::ok_status();
  }

 private:
  int new_tensor(const std::string& name, std::vector<int64_t> shape, int producer) {
    GraphTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.producer = producer;
    g_.tensors.push_back(std::move(t));
    by_name_[name] = static_cast<int>(g_.tensors.size()) - 1;
    return static_cast<int>(g_.tensors.size()) - 1;
  }

  /// The activation tensor feeding input `i` of node n.
  base::Result<int> activation_input(const OnnxNode& n, size_t i) {
    if (i >= n.inputs.size() || n.inputs[i].empty()) {
      return base::invalid_argument(node_label(n) + " lacks input " + std::to_string(i));
    }
    auto it = by_name_.find(n.inputs[i]);
    if (it != by_name_.end()) return it->second;
    if (model_.initializers.count(n.inputs[i])) {
      return base::unimplemented(node_label(n) + ": input " + std::to_string(i) + " ('" + n.inputs[i] +
                                 "') is a constant; only activations are supported there");
    }
    return base::invalid_argument(node_label(n) + ": input '" + n.inputs[i] +
                                  "' is not defined before the node (graph not topologically sorted?)");
  }

  /// A float constant feeding input `i` of node n; nullptr when the input is omitted and optional.
  base::Result<const OnnxTensor*> constant_input(const OnnxNode& n, size_t i, bool optional) {
    if (i >= n.inputs.size() || n.inputs[i].empty()) {
      if (optional) return static_cast<const OnnxTensor*>(nullptr);
      return base::invalid_argument(node_label(n) + " lacks input " + std::to_string(i));
    }
    auto it = model_.initializers.find(n.inputs[i]);
    if (it == model_.initializers.end()) {
      return base::unimplemented(node_label(n) + ": input " + std::to_string(i) + " ('" + n.inputs[i] +
                                 "') must be a constant (initializer)");
    }
    if (it->second.f32.size() != static_cast<size_t>(it->second.num_elements())) {
      return base::invalid_argument(node_label(n) + ": constant '" + n.inputs[i] + "' is not floating point");
    }
    return &it->second;
  }

  base::Status one_output(const OnnxNode& n) {
    if (n.outputs.empty() || n.outputs[0].empty()) return base::invalid_argument(node_label(n) + " has no output");
    for (size_t i = 1; i < n.outputs.size(); ++i) {
      if (!n.outputs[i].empty()) {
        return base::unimplemented(node_label(n) + ": optional output " + std::to_string(i) + " is not supported");
      }
    }
    return base::ok_status();
  }

  base::Result<std::vector<int64_t>> ints_attr(const OnnxNode& n, const std::string& key, size_t len,
                                               int64_t fallback) {
    const OnnxAttribute* a = n.attribute(key);
    if (a == nullptr) return std::vector<int64_t>(len, fallback);
    if (a->kind != OnnxAttribute::Kind::kInts || a->ints.size() != len) {
      return base::invalid_argument(node_label(n) + ": attribute '" + key + "' must hold " + std::to_string(len) +
                                    " integers");
    }
    return a->ints;
  }

  int64_t int_attr(const OnnxNode& n, const std::string& key, int64_t fallback) {
    const OnnxAttribute* a = n.attribute(key);
    return (a != nullptr && a->kind == OnnxAttribute::Kind::kInt) ? a->i : fallback;
  }

  float float_attr(const OnnxNode& n, const std::string& key, float fallback) {
    const OnnxAttribute* a = n.attribute(key);
    return (a != nullptr && a->kind == OnnxAttribute::Kind::kFloat) ? a->f : fallback;
  }

  /// Rejects attributes the importer does not know, so that nothing is silently ignored.
  base::Status only_attributes(const OnnxNode& n, std::initializer_list<const char*> known) {
    for (const auto& [key, value] : n.attributes) {
      bool ok = false;
      for (const char* k : known) ok = ok || key == k;
      if (!ok) {
        return base::unimplemented("unsupported attribute '" + key + "' of ONNX operator '" + n.op_type +
                                   "' at node '" + n.name + "'");
      }
    }
    return base::ok_status();
  }

  base::Status add_conv(const OnnxNode& n, bool transpose) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides",
                                           "output_padding", "output_shape"}));
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    SB_ASSIGN_OR_RETURN(const OnnxTensor* w, constant_input(n, 1, false));
    SB_ASSIGN_OR_RETURN(const OnnxTensor* b, constant_input(n, 2, true));
    const std::vector<int64_t> in_shape = g_.tensors[x].shape;
    const size_t rank = in_shape.size();
    const size_t sp = rank - 2;
    if (w->dims.size() != rank) {
      return base::invalid_argument(node_label(n) + ": weight rank " + std::to_string(w->dims.size()) +
                                    " does not match input rank " + std::to_string(rank));
    }
    if (int_attr(n, "group", 1) != 1) {
      return base::unimplemented("unsupported attribute group=" + std::to_string(int_attr(n, "group", 1)) +
                                 " of ONNX operator '" + n.op_type + "' at node '" + n.name + "'");
    }
    if (const OnnxAttribute* a = n.attribute("auto_pad"); a != nullptr && a->s != "NOTSET" && a->s != "VALID") {
      return base::unimplemented("unsupported attribute auto_pad=" + a->s + " of ONNX operator '" + n.op_type +
                                 "' at node '" + n.name + "'; export with explicit pads");
    }
    SB_ASSIGN_OR_RETURN(auto dil, ints_attr(n, "dilations", sp, 1));
    for (int64_t d : dil) {
      if (d != 1) {
        return base::unimplemented("unsupported attribute dilations=" + shape_str(dil) + " of ONNX operator '" +
                                   n.op_type + "' at node '" + n.name + "'");
      }
    }
    if (transpose) {
      SB_ASSIGN_OR_RETURN(auto opad, ints_attr(n, "output_padding", sp, 0));
      for (int64_t p : opad) {
        if (p != 0) {
          return base::unimplemented("unsupported attribute output_padding=" + shape_str(opad) +
                                     " of ONNX operator 'ConvTranspose' at node '" + n.name + "'");
        }
      }
      if (n.attribute("output_shape") != nullptr) {
        return base::unimplemented("unsupported attribute output_shape of ONNX operator 'ConvTranspose' at node '" +
                                   n.name + "'; export with pads instead");
      }
    } else if (n.attribute("output_padding") || n.attribute("output_shape")) {
      return base::invalid_argument(node_label(n) + ": output_padding/output_shape belong to ConvTranspose");
    }
    GraphOp op;
    op.kind = transpose ? OpKind::kConvTranspose : OpKind::kConv;
    op.name = n.name;
    op.onnx_nodes.push_back(n.name + " (" + n.op_type + ")");
    ConvParams& c = op.conv;
    c.kernel.assign(w->dims.begin() + 2, w->dims.end());
    SB_ASSIGN_OR_RETURN(auto ks, ints_attr(n, "kernel_shape", sp, 0));
    if (n.attribute("kernel_shape") != nullptr && ks != c.kernel) {
      return base::invalid_argument(node_label(n) + ": kernel_shape " + shape_str(ks) +
                                    " disagrees with the weight shape " + shape_str(w->dims));
    }
    SB_ASSIGN_OR_RETURN(c.strides, ints_attr(n, "strides", sp, 1));
    SB_ASSIGN_OR_RETURN(auto pads, ints_attr(n, "pads", 2 * sp, 0));
    c.pads_begin.assign(pads.begin(), pads.begin() + static_cast<long>(sp));
    c.pads_end.assign(pads.begin() + static_cast<long>(sp), pads.end());
    const int64_t c_in = transpose ? w->dims[0] : w->dims[1];
    const int64_t c_out = transpose ? w->dims[1] : w->dims[0];
    if (c_in != in_shape[1]) {
      return base::invalid_argument(node_label(n) + ": weights " + shape_str(w->dims) + " expect " +
                                    std::to_string(c_in) + " input channels, input is " + shape_str(in_shape));
    }
    c.weight_dims = w->dims;
    c.weights = w->f32;
    if (b != nullptr) {
      if (b->num_elements() != c_out) return base::invalid_argument(node_label(n) + ": bias length != C_out");
      c.bias = b->f32;
    } else {
      c.bias.assign(static_cast<size_t>(c_out), 0.0f);
    }
    std::vector<int64_t> out_shape = {1, c_out};
    for (size_t i = 0; i < sp; ++i) {
      if (c.strides[i] < 1 || c.kernel[i] < 1) return base::invalid_argument(node_label(n) + ": bad stride/kernel");
      const int64_t in = in_shape[2 + i];
      const int64_t o = transpose
                            ? (in - 1) * c.strides[i] + c.kernel[i] - c.pads_begin[i] - c.pads_end[i]
                            : (in + c.pads_begin[i] + c.pads_end[i] - c.kernel[i]) / c.strides[i] + 1;
      if (o < 1) {
        return base::invalid_argument(node_label(n) + ": output would be empty for input " + shape_str(in_shape));
      }
      out_shape.push_back(o);
    }
    return push_op(std::move(op), {x}, n.outputs[0], std::move(out_shape));
  }

  base::Status add_instance_norm(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"epsilon"}));
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    SB_ASSIGN_OR_RETURN(const OnnxTensor* scale, constant_input(n, 1, false));
    SB_ASSIGN_OR_RETURN(const OnnxTensor* shift, constant_input(n, 2, false));
    const int64_t c = g_.tensors[x].shape[1];
    if (scale->num_elements() != c || shift->num_elements() != c) {
      return base::invalid_argument(node_label(n) + ": scale/B length differs from the channel count " +
                                    std::to_string(c));
    }
    GraphOp op;
    op.kind = OpKind::kInstanceNorm;
    op.name = n.name;
    op.onnx_nodes.push_back(n.name + " (" + n.op_type + ")");
    op.has_norm = true;
    op.norm.scale = scale->f32;
    op.norm.shift = shift->f32;
    op.norm.epsilon = float_attr(n, "epsilon", 1e-5f);
    return push_op(std::move(op), {x}, n.outputs[0], g_.tensors[x].shape);
  }

  /// BatchNormalization (inference) folded into the preceding Conv:
  /// W'[o] = W[o] * g[o] / sqrt(var[o] + eps), b'[o] = (b[o] - mean[o]) * g[o] / sqrt(var[o] + eps) + beta[o].
  base::Status add_batch_norm(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"epsilon", "momentum", "training_mode", "spatial"}));
    if (int_attr(n, "training_mode", 0) != 0) {
      return base::unimplemented("unsupported attribute training_mode=1 of ONNX operator 'BatchNormalization' at "
                                 "node '" + n.name + "'");
    }
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    const OnnxTensor* p[4];
    for (size_t i = 0; i < 4; ++i) {
      SB_ASSIGN_OR_RETURN(p[i], constant_input(n, i + 1, false));
    }
    const int producer = g_.tensors[x].producer;
    GraphOp* conv = producer >= 0 ? &g_.ops[producer] : nullptr;
    if (conv == nullptr || conv->kind != OpKind::kConv || conv->has_norm || conv->activation != Activation::kNone ||
        !g_.tensors[x].consumers.empty() || is_declared_output(g_.tensors[x].name)) {
      return base::unimplemented("ONNX operator 'BatchNormalization' at node '" + n.name +
                                 "' does not directly follow a Conv whose only consumer it is; only that case "
                                 "(folded into the Conv) is supported");
    }
    const int64_t c = g_.tensors[x].shape[1];
    for (const OnnxTensor* t : p) {
      if (t->num_elements() != c) return base::invalid_argument(node_label(n) + ": parameter length != channels");
    }
    const float eps = float_attr(n, "epsilon", 1e-5f);
    const int64_t per_out = static_cast<int64_t>(conv->conv.weights.size()) / c;
    for (int64_t o = 0; o < c; ++o) {
      const double k = p[0]->f32[o] / std::sqrt(static_cast<double>(p[3]->f32[o]) + eps);
      for (int64_t i = 0; i < per_out; ++i) conv->conv.weights[o * per_out + i] *= static_cast<float>(k);
      conv->conv.bias[o] = static_cast<float>((conv->conv.bias[o] - p[2]->f32[o]) * k + p[1]->f32[o]);
    }
    conv->onnx_nodes.push_back(n.name + " (BatchNormalization, folded)");
    // The conv now produces the BN output: rename its tensor.
    by_name_.erase(g_.tensors[x].name);
    g_.tensors[x].name = n.outputs[0];
    by_name_[n.outputs[0]] = x;
    return base::ok_status();
  }

  base::Status add_activation(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"alpha"}));
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    GraphOp op;
    op.kind = OpKind::kActivation;
    op.name = n.name;
    op.onnx_nodes.push_back(n.name + " (" + n.op_type + ")");
    if (n.op_type == "Relu") {
      op.activation = Activation::kRelu;
    } else if (n.op_type == "LeakyRelu") {
      op.activation = Activation::kLeakyRelu;
      op.alpha = float_attr(n, "alpha", 0.01f);
    } else {
      op.activation = Activation::kSigmoid;
    }
    return push_op(std::move(op), {x}, n.outputs[0], g_.tensors[x].shape);
  }

  /// Identity computes nothing: its output names its input.
  base::Status add_alias(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {}));
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    if (by_name_.count(n.outputs[0])) return base::invalid_argument("tensor '" + n.outputs[0] + "' is produced twice");
    by_name_[n.outputs[0]] = x;
    return base::ok_status();
  }

  base::Status add_add(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {}));
    SB_RETURN_IF_ERROR(one_output(n));
    if (n.inputs.size() != 2) return base::invalid_argument(node_label(n) + " needs 2 inputs");
    SB_ASSIGN_OR_RETURN(int a, activation_input(n, 0));
    SB_ASSIGN_OR_RETURN(int b, activation_input(n, 1));
    if (g_.tensors[a].shape != g_.tensors[b].shape) {
      return base::unimplemented("ONNX operator 'Add' at node '" + n.name + "' broadcasts " +
                                 shape_str(g_.tensors[a].shape) + " + " + shape_str(g_.tensors[b].shape) +
                                 "; only equal shapes are supported");
    }
    GraphOp op;
    op.kind = OpKind::kAdd;
    op.name = n.name;
    op.onnx_nodes.push_back(n.name + " (Add)");
    return push_op(std::move(op), {a, b}, n.outputs[0], g_.tensors[a].shape);
  }

  base::Status add_concat(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"axis"}));
    SB_RETURN_IF_ERROR(one_output(n));
    std::vector<int> ins;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      SB_ASSIGN_OR_RETURN(int t, activation_input(n, i));
      ins.push_back(t);
    }
    if (ins.empty()) return base::invalid_argument(node_label(n) + " has no inputs");
    const auto& first = g_.tensors[ins[0]].shape;
    int64_t axis = int_attr(n, "axis", 1);
    if (axis < 0) axis += static_cast<int64_t>(first.size());
    if (axis != 1) {
      return base::unimplemented("unsupported attribute axis=" + std::to_string(int_attr(n, "axis", 1)) +
                                 " of ONNX operator 'Concat' at node '" + n.name + "'; only the channel axis");
    }
    std::vector<int64_t> out = first;
    out[1] = 0;
    for (int t : ins) {
      auto s = g_.tensors[t].shape;
      out[1] += s[1];
      s[1] = first[1];
      if (s != first) return base::invalid_argument(node_label(n) + ": inputs differ outside the channel axis");
    }
    GraphOp op;
    op.kind = OpKind::kConcat;
    op.name = n.name;
    op.onnx_nodes.push_back(n.name + " (Concat)");
    return push_op(std::move(op), ins, n.outputs[0], out);
  }

  base::Status add_softmax(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"axis"}));
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    const int64_t rank = static_cast<int64_t>(g_.tensors[x].shape.size());
    int64_t axis = int_attr(n, "axis", model_.opset >= 13 ? -1 : 1);
    if (axis < 0) axis += rank;
    if (model_.opset < 13 || axis != 1) {
      return base::unimplemented("unsupported attribute axis=" + std::to_string(int_attr(n, "axis", -1)) +
                                 " (opset " + std::to_string(model_.opset) + ") of ONNX operator 'Softmax' at node '" +
                                 n.name + "'; only the channel axis with opset >= 13");
    }
    GraphOp op;
    op.kind = OpKind::kSoftmax;
    op.name = n.name;
    op.onnx_nodes.push_back(n.name + " (Softmax)");
    return push_op(std::move(op), {x}, n.outputs[0], g_.tensors[x].shape);
  }

  /// AveragePool (opset 11+ attributes): mean over a window; ceil_mode 0, no dilation.
  /// Output = floor((in + pad_b + pad_e - k) / s) + 1 per spatial axis.
  base::Status add_avg_pool(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"auto_pad", "ceil_mode", "count_include_pad", "dilations",
                                           "kernel_shape", "pads", "strides"}));
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    const std::vector<int64_t> in_shape = g_.tensors[x].shape;
    const size_t sp = in_shape.size() - 2;
    if (int_attr(n, "ceil_mode", 0) != 0) {
      return base::unimplemented("unsupported attribute ceil_mode=1 of ONNX operator 'AveragePool' at node '" +
                                 n.name + "'");
    }
    if (const OnnxAttribute* a = n.attribute("auto_pad"); a != nullptr && a->s != "NOTSET" && a->s != "VALID") {
      return base::unimplemented("unsupported attribute auto_pad=" + a->s +
                                 " of ONNX operator 'AveragePool' at node '" + n.name + "'");
    }
    SB_ASSIGN_OR_RETURN(auto dil, ints_attr(n, "dilations", sp, 1));
    for (int64_t d : dil) {
      if (d != 1) {
        return base::unimplemented("unsupported attribute dilations=" + shape_str(dil) +
                                   " of ONNX operator 'AveragePool' at node '" + n.name + "'");
      }
    }
    if (n.attribute("kernel_shape") == nullptr) {
      return base::invalid_argument(node_label(n) + " lacks the required attribute kernel_shape");
    }
    GraphOp op;
    op.kind = OpKind::kAvgPool;
    op.name = n.name;
    op.onnx_nodes.push_back(n.name + " (AveragePool)");
    ConvParams& c = op.conv;
    SB_ASSIGN_OR_RETURN(c.kernel, ints_attr(n, "kernel_shape", sp, 1));
    SB_ASSIGN_OR_RETURN(c.strides, ints_attr(n, "strides", sp, 1));
    SB_ASSIGN_OR_RETURN(auto pads, ints_attr(n, "pads", 2 * sp, 0));
    c.pads_begin.assign(pads.begin(), pads.begin() + static_cast<long>(sp));
    c.pads_end.assign(pads.begin() + static_cast<long>(sp), pads.end());
    op.count_include_pad = int_attr(n, "count_include_pad", 0) != 0;
    std::vector<int64_t> out_shape = {in_shape[0], in_shape[1]};
    for (size_t i = 0; i < sp; ++i) {
      if (c.strides[i] < 1 || c.kernel[i] < 1 || c.pads_begin[i] < 0 || c.pads_end[i] < 0 ||
          c.pads_begin[i] >= c.kernel[i] || c.pads_end[i] >= c.kernel[i]) {
        return base::invalid_argument(node_label(n) + ": bad kernel/stride/pads");
      }
      const int64_t o = (in_shape[2 + i] + c.pads_begin[i] + c.pads_end[i] - c.kernel[i]) / c.strides[i] + 1;
      if (o < 1) return base::invalid_argument(node_label(n) + ": output would be empty for input " + shape_str(in_shape));
      out_shape.push_back(o);
    }
    return push_op(std::move(op), {x}, n.outputs[0], std::move(out_shape));
  }

  /// Pad: only the no-op case (all pads 0, constant mode), which torch.onnx emits in front of
  /// AvgPool; the output then names the input.
  base::Status add_pad(const OnnxNode& n) {
    SB_RETURN_IF_ERROR(only_attributes(n, {"mode", "pads", "value"}));
    SB_RETURN_IF_ERROR(one_output(n));
    SB_ASSIGN_OR_RETURN(int x, activation_input(n, 0));
    if (const OnnxAttribute* a = n.attribute("mode"); a != nullptr && a->s != "constant") {
      return base::unimplemented("unsupported attribute mode=" + a->s + " of ONNX operator 'Pad' at node '" +
                                 n.name + "'");
    }
    std::vector<int64_t> pads;
    if (const OnnxAttribute* a = n.attribute("pads"); a != nullptr) {  // opset < 11
      pads = a->ints;
    } else if (n.inputs.size() > 1 && !n.inputs[1].empty()) {
      auto it = model_.initializers.find(n.inputs[1]);
      if (it == model_.initializers.end()) {
        return base::unimplemented(node_label(n) + ": pads must be a constant");
      }
      pads = it->second.i64;
      if (pads.empty() && !it->second.f32.empty()) {
        for (float v : it->second.f32) pads.push_back(static_cast<int64_t>(v));
      }
    }
    for (int64_t p : pads) {
      if (p != 0) {
        return base::unimplemented("ONNX operator 'Pad' at node '" + n.name + "' pads by " + shape_str(pads) +
                                   "; only the no-op Pad (all pads 0) is supported");
      }
    }
    if (by_name_.count(n.outputs[0])) return base::invalid_argument("tensor '" + n.outputs[0] + "' is produced twice");
    by_name_[n.outputs[0]] = x;
    return base::ok_status();
  }

  bool is_declared_output(const std::string& name) const {
    for (const auto& o : model_.outputs) {
      if (o.name == name) return true;
    }
    return false;
  }

  base::Status push_op(GraphOp op, std::vector<int> inputs, const std::string& out_name,
                       std::vector<int64_t> out_shape) {
    if (by_name_.count(out_name)) return base::invalid_argument("tensor '" + out_name + "' is produced twice");
    const int index = static_cast<int>(g_.ops.size());
    op.inputs = inputs;
    op.output = new_tensor(out_name, std::move(out_shape), index);
    for (int t : inputs) g_.tensors[t].consumers.push_back(index);
    g_.ops.push_back(std::move(op));
    return base::ok_status();
  }

  const OnnxModel& model_;
  Graph& g_;
  std::map<std::string, int> by_name_;
};

/// Recomputes producer/consumer links after ops were merged or removed.
void relink(Graph& g) {
  for (auto& t : g.tensors) {
    t.producer = -1;
    t.consumers.clear();
  }
  for (int i = 0; i < static_cast<int>(g.ops.size()); ++i) {
    for (int t : g.ops[i].inputs) {
      auto& c = g.tensors[t].consumers;
      if (c.empty() || c.back() != i) c.push_back(i);
    }
    g.tensors[g.ops[i].output].producer = i;
  }
}

/// Fuses Conv/ConvTranspose/InstanceNorm -> InstanceNorm -> activation chains (and Add ->
/// activation, the residual block's nonlin2) whose
/// intermediate tensors have exactly one consumer and are not the graph output.
void fuse(Graph& g) {
  std::vector<bool> dead(g.ops.size(), false);
  auto sole_consumer = [&](int t) -> int {
    const GraphTensor& tt = g.tensors[t];
    if (tt.is_graph_output || tt.consumers.size() != 1) return -1;
    return tt.consumers[0];
  };
  for (size_t i = 0; i < g.ops.size(); ++i) {
    if (dead[i]) continue;
    GraphOp& op = g.ops[i];
    const bool is_conv = op.kind == OpKind::kConv || op.kind == OpKind::kConvTranspose;
    if (is_conv && !op.has_norm && op.activation == Activation::kNone) {
      const int c = sole_consumer(op.output);
      if (c >= 0 && g.ops[c].kind == OpKind::kInstanceNorm && g.ops[c].activation == Activation::kNone) {
        GraphOp& norm = g.ops[c];
        op.has_norm = true;
        op.norm = norm.norm;
        op.onnx_nodes.insert(op.onnx_nodes.end(), norm.onnx_nodes.begin(), norm.onnx_nodes.end());
        op.output = norm.output;
        dead[c] = true;
      }
    }
    if ((is_conv || op.kind == OpKind::kInstanceNorm || op.kind == OpKind::kAdd) &&
        op.activation == Activation::kNone) {
      const int c = sole_consumer(op.output);
      if (c >= 0 && !dead[c] && g.ops[c].kind == OpKind::kActivation) {
        GraphOp& act = g.ops[c];
        op.activation = act.activation;
        op.alpha = act.alpha;
        op.onnx_nodes.insert(op.onnx_nodes.end(), act.onnx_nodes.begin(), act.onnx_nodes.end());
        op.output = act.output;
        dead[c] = true;
      }
    }
  }
  std::vector<GraphOp> kept;
  for (size_t i = 0; i < g.ops.size(); ++i) {
    if (!dead[i]) kept.push_back(std::move(g.ops[i]));
  }
  g.ops = std::move(kept);
  relink(g);
}

}  // namespace

std::string_view op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kConv: return "conv";
    case OpKind::kConvTranspose: return "deconv";
    case OpKind::kInstanceNorm: return "instance_norm";
    case OpKind::kActivation: return "activation";
    case OpKind::kAdd: return "add";
    case OpKind::kConcat: return "concat";
    case OpKind::kSoftmax: return "softmax";
    case OpKind::kAvgPool: return "avg_pool";
  }
  return "?";
}

std::string_view activation_name(Activation a) {
  switch (a) {
    case Activation::kNone: return "none";
    case Activation::kRelu: return "relu";
    case Activation::kLeakyRelu: return "leaky_relu";
    case Activation::kSigmoid: return "sigmoid";
  }
  return "?";
}

int64_t GraphTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

double GraphOp::macs(const std::vector<GraphTensor>& tensors) const {
  if (kind != OpKind::kConv && kind != OpKind::kConvTranspose) return 0.0;
  double k = 1.0;
  for (int64_t d : conv.kernel) k *= static_cast<double>(d);
  const auto& in = tensors[inputs[0]].shape;
  const auto& out = tensors[output].shape;
  // Conv: every output voxel takes C_in * K MACs per output channel.
  // ConvTranspose: every input voxel scatters into C_out * K outputs per input channel.
  if (kind == OpKind::kConv) return static_cast<double>(tensors[output].num_elements()) * in[1] * k;
  return static_cast<double>(tensors[inputs[0]].num_elements()) * out[1] * k;
}

double Graph::gflop() const {
  double macs = 0.0;
  for (const auto& op : ops) macs += op.macs(tensors);
  return 2.0 * macs / 1e9;
}

std::string Graph::describe() const {
  std::ostringstream os;
  for (size_t i = 0; i < ops.size(); ++i) {
    const GraphOp& op = ops[i];
    os << "#" << i << " " << op_kind_name(op.kind);
    if (op.has_norm && op.kind != OpKind::kInstanceNorm) os << "+instance_norm";
    if (op.activation != Activation::kNone) os << "+" << activation_name(op.activation);
    os << "  ";
    for (size_t j = 0; j < op.inputs.size(); ++j) os << (j ? " + " : "") << shape_str(tensors[op.inputs[j]].shape);
    os << " -> " << shape_str(tensors[op.output].shape);
    if (op.kind == OpKind::kConv || op.kind == OpKind::kConvTranspose || op.kind == OpKind::kAvgPool) {
      os << "  k" << shape_str(op.conv.kernel) << " s" << shape_str(op.conv.strides) << " p"
         << shape_str(op.conv.pads_begin) << shape_str(op.conv.pads_end);
    }
    os << "  [" << op.name << "]\n";
  }
  return os.str();
}

base::Result<Graph> build_graph(const OnnxModel& model, const GraphOptions& options) {
  Graph g;
  g.opset = model.opset;
  if (model.inputs.size() != 1) {
    return base::unimplemented("the model has " + std::to_string(model.inputs.size()) +
                               " graph inputs; exactly one image input is supported");
  }
  if (model.outputs.size() != 1) {
    return base::unimplemented("the model has " + std::to_string(model.outputs.size()) +
                               " graph outputs; exactly one (the logits) is supported");
  }
  GraphBuilder b(model, &g);
  SB_RETURN_IF_ERROR(b.add_input(model.inputs[0]));
  for (const OnnxNode& n : model.nodes) SB_RETURN_IF_ERROR(b.add_node(n));
  SB_RETURN_IF_ERROR(b.set_output(model.outputs[0]));
  if (g.output == g.input) return base::unimplemented("the graph output is its input; nothing to compute");
  relink(g);
  if (options.fuse) fuse(g);
  return g;
}

}  // namespace inference
