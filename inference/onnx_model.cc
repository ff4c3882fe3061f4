#include "inference/onnx_model.h"

#include <onnx/onnx_pb.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace inference {
namespace {

std::string tensor_label(const onnx::TensorProto& t) {
  return "initializer '" + t.name() + "'";
}

template <typename T>
base::Status copy_raw(const std::string& raw, int64_t n, std::vector<T>* out, const std::string& label) {
  if (static_cast<int64_t>(raw.size()) != n * static_cast<int64_t>(sizeof(T))) {
    return base::invalid_argument(label + ": raw_data has " + std::to_string(raw.size()) + " bytes, dims say " +
                                  std::to_string(n) + " elements of " + std::to_string(sizeof(T)) + " bytes");
  }
  out->resize(static_cast<size_t>(n));
  if (n > 0) std::memcpy(out->data(), raw.data(), raw.size());  // ONNX raw_data is little-endian, as is x86/Arm
  return base::ok_status();
}

base::Result<OnnxTensor> convert_tensor(const onnx::TensorProto& t) {
  OnnxTensor out;
  out.name = t.name();
  for (int64_t d : t.dims()) {
    if (d < 0) return base::invalid_argument(tensor_label(t) + " has a negative dimension");
    out.dims.push_back(d);
  }
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    return base::unimplemented(tensor_label(t) +
                               " stores its data in an external file; re-export the model with the weights embedded");
  }
  if (t.has_segment()) return base::unimplemented(tensor_label(t) + " is segmented");
  const int64_t n = out.num_elements();
  const std::string label = tensor_label(t);
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: {
      out.data_type = OnnxDataType::kFloat;
      if (t.has_raw_data()) {
        SB_RETURN_IF_ERROR(copy_raw(t.raw_data(), n, &out.f32, label));
      } else {
        if (t.float_data_size() != n) {
          return base::invalid_argument(label + ": float_data has " + std::to_string(t.float_data_size()) +
                                        " values, dims say " + std::to_string(n));
        }
        out.f32.assign(t.float_data().begin(), t.float_data().end());
      }
      break;
    }
    case onnx::TensorProto::DOUBLE: {
      out.data_type = OnnxDataType::kDouble;
      std::vector<double> d;
      if (t.has_raw_data()) {
        SB_RETURN_IF_ERROR(copy_raw(t.raw_data(), n, &d, label));
      } else {
        if (t.double_data_size() != n) return base::invalid_argument(label + ": double_data size does not match dims");
        d.assign(t.double_data().begin(), t.double_data().end());
      }
      out.f32.assign(d.begin(), d.end());
      break;
    }
    case onnx::TensorProto::INT64: {
      out.data_type = OnnxDataType::kInt64;
      if (t.has_raw_data()) {
        SB_RETURN_IF_ERROR(copy_raw(t.raw_data(), n, &out.i64, label));
      } else {
        if (t.int64_data_size() != n) return base::invalid_argument(label + ": int64_data size does not match dims");
        out.i64.assign(t.int64_data().begin(), t.int64_data().end());
      }
      break;
    }
    case onnx::TensorProto::INT32: {
      out.data_type = OnnxDataType::kInt32;
      std::vector<int32_t> v;
      if (t.has_raw_data()) {
        SB_RETURN_IF_ERROR(copy_raw(t.raw_data(), n, &v, label));
      } else {
        if (t.int32_data_size() != n) return base::invalid_argument(label + ": int32_data size does not match dims");
        v.assign(t.int32_data().begin(), t.int32_data().end());
      }
      out.i64.assign(v.begin(), v.end());
      break;
    }
    default:
      return base::unimplemented(label + " has ONNX data type " + std::to_string(t.data_type()) +
                                 "; only FLOAT, DOUBLE, INT32 and INT64 constants are supported");
  }
  return out;
}

base::Result<OnnxAttribute> convert_attribute(const onnx::AttributeProto& a, const std::string& node_label) {
  OnnxAttribute out;
  out.name = a.name();
  switch (a.type()) {
    case onnx::AttributeProto::INT:
      out.kind = OnnxAttribute::Kind::kInt;
      out.i = a.i();
      break;
    case onnx::AttributeProto::FLOAT:
      out.kind = OnnxAttribute::Kind::kFloat;
      out.f = a.f();
      break;
    case onnx::AttributeProto::STRING:
      out.kind = OnnxAttribute::Kind::kString;
      out.s = a.s();
      break;
    case onnx::AttributeProto::INTS:
      out.kind = OnnxAttribute::Kind::kInts;
      out.ints.assign(a.ints().begin(), a.ints().end());
      break;
    case onnx::AttributeProto::FLOATS:
      out.kind = OnnxAttribute::Kind::kFloats;
      out.floats.assign(a.floats().begin(), a.floats().end());
      break;
    case onnx::AttributeProto::TENSOR: {
      out.kind = OnnxAttribute::Kind::kTensor;
      auto t = convert_tensor(a.t());
      if (!t.ok()) return t.status().with_context(node_label + " attribute '" + a.name() + "'");
      out.tensor = std::move(t).value();
      break;
    }
    case onnx::AttributeProto::GRAPH:
    case onnx::AttributeProto::GRAPHS:
      return base::unimplemented(node_label + " has a subgraph attribute '" + a.name() +
                                 "' (control flow is not supported)");
    default:
      out.kind = OnnxAttribute::Kind::kOther;
      break;
  }
  return out;
}

OnnxValueInfo convert_value_info(const onnx::ValueInfoProto& v) {
  OnnxValueInfo out;
  out.name = v.name();
  if (v.type().has_tensor_type()) {
    const auto& tt = v.type().tensor_type();
    out.elem_type = tt.elem_type();
    if (tt.has_shape()) {
      out.has_shape = true;
      for (const auto& d : tt.shape().dim()) {
        out.dims.push_back(d.has_dim_value() ? d.dim_value() : -1);
      }
    }
  }
  return out;
}

}  // namespace

int64_t OnnxTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

const OnnxAttribute* OnnxNode::attribute(const std::string& key) const {
  auto it = attributes.find(key);
  return it == attributes.end() ? nullptr : &it->second;
}

bool OnnxValueInfo::is_fixed() const {
  if (!has_shape) return false;
  for (int64_t d : dims) {
    if (d <= 0) return false;
  }
  return true;
}

base::Result<OnnxModel> parse_onnx_model(const std::string& bytes) {
  onnx::ModelProto proto;
  bool parsed = false;
  try {
    parsed = proto.ParseFromString(bytes);
  } catch (const std::exception& e) {
    return base::invalid_argument(std::string("not an ONNX model: ") + e.what());
  }
  if (!parsed || !proto.has_graph() || proto.ir_version() <= 0) {
    return base::invalid_argument("not an ONNX model (the bytes do not parse as an onnx.ModelProto with a graph)");
  }
  OnnxModel m;
  m.ir_version = proto.ir_version();
  m.producer = proto.producer_name() + (proto.producer_version().empty() ? "" : " " + proto.producer_version());
  for (const auto& op : proto.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") m.opset = op.version();
  }
  const auto& g = proto.graph();
  m.graph_name = g.name();
  for (const auto& t : g.initializer()) {
    SB_ASSIGN_OR_RETURN(OnnxTensor tensor, convert_tensor(t));
    m.initializers[tensor.name] = std::move(tensor);
  }
  if (g.sparse_initializer_size() > 0) return base::unimplemented("sparse initializers are not supported");
  for (const auto& in : g.input()) {
    if (m.initializers.count(in.name())) continue;  // IR < 4 lists initializers as inputs too
    m.inputs.push_back(convert_value_info(in));
  }
  for (const auto& out : g.output()) m.outputs.push_back(convert_value_info(out));
  int index = 0;
  for (const auto& n : g.node()) {
    OnnxNode node;
    node.name = n.name().empty() ? n.op_type() + "_" + std::to_string(index) : n.name();
    node.op_type = n.op_type();
    node.domain = n.domain();
    node.inputs.assign(n.input().begin(), n.input().end());
    node.outputs.assign(n.output().begin(), n.output().end());
    const std::string label = "node '" + node.name + "' (" + node.op_type + ")";
    for (const auto& a : n.attribute()) {
      SB_ASSIGN_OR_RETURN(OnnxAttribute attr, convert_attribute(a, label));
      node.attributes[attr.name] = std::move(attr);
    }
    ++index;
    // Constant nodes become initializers: the graph then only holds computing nodes.
    if (node.op_type == "Constant" && (node.domain.empty() || node.domain == "ai.onnx")) {
      const OnnxAttribute* value = node.attribute("value");
      if (value == nullptr || value->kind != OnnxAttribute::Kind::kTensor || node.outputs.size() != 1) {
        return base::unimplemented(label + ": only Constant nodes with a 'value' tensor are supported");
      }
      OnnxTensor t = value->tensor;
      t.name = node.outputs[0];
      m.initializers[t.name] = std::move(t);
      continue;
    }
    // Identity of a constant (torch emits these for de-duplicated initializers): a copy.
    if (node.op_type == "Identity" && (node.domain.empty() || node.domain == "ai.onnx") && node.inputs.size() == 1 &&
        node.outputs.size() == 1 && m.initializers.count(node.inputs[0])) {
      OnnxTensor t = m.initializers.at(node.inputs[0]);
      t.name = node.outputs[0];
      m.initializers[t.name] = std::move(t);
      continue;
    }
    m.nodes.push_back(std::move(node));
  }
  return m;
}

base::Result<OnnxModel> read_onnx_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return base::not_found("cannot open ONNX model '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (!f.good() && !f.eof()) return base::not_found("cannot read ONNX model '" + path + "'");
  auto m = parse_onnx_model(ss.str());
  if (!m.ok()) return m.status().with_context(path);
  return m;
}

}  // namespace inference
