// Tests of the ONNX import (onnx_model.h) and of graph construction (graph.h): initializer
// data, attributes, shapes, fusion, and the errors for unsupported or malformed models.
#include "inference/onnx_model.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstdio>
#include <fstream>

#include "inference/cpu_engine.h"
#include "inference/graph.h"
#include "tests/support/shared_data.h"

namespace inference {
namespace {

const std::string kGoldenOnnx = std::string(STROKEBOX_SHARED_DIR) +
                                "/golden/model/Dataset990_GoldenTiny/nnUNetTrainer__nnUNetPlans__3d_fullres/"
                                "fold_0/model.onnx";

void set_value(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tt->mutable_shape();
  for (int64_t d : dims) {
    if (d < 0) {
      shape->add_dim()->set_dim_param("batch");
    } else {
      shape->add_dim()->set_dim_value(d);
    }
  }
}

void add_initializer(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
                     const std::vector<float>& values, bool raw) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  if (raw) {
    t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  } else {
    for (float v : values) t->add_float_data(v);
  }
}

void add_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

/// input [1,2,4,4,4] -> Conv(3x3x3, pad 1, 4 out; weights raw_data, bias float_data)
/// -> InstanceNormalization -> LeakyRelu(0.2) -> <extra op> -> output.
onnx::ModelProto tiny_model(const std::string& extra_op, const std::vector<int64_t>& input_dims = {1, 2, 4, 4, 4}) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("strokebox-test");
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("tiny");
  set_value(g->add_input(), "input", input_dims);
  std::vector<float> w(4 * 2 * 27);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i % 17) - 0.08f;
  add_initializer(g, "w", {4, 2, 3, 3, 3}, w, /*raw=*/true);
  add_initializer(g, "b", {4}, {0.1f, -0.2f, 0.3f, 0.0f}, /*raw=*/false);
  add_initializer(g, "scale", {4}, {1.0f, 2.0f, 0.5f, 1.5f}, true);
  add_initializer(g, "shift", {4}, {0.0f, 0.1f, -0.1f, 0.2f}, true);
  auto* conv = g->add_node();
  conv->set_name("Conv_0");
  conv->set_op_type("Conv");
  conv->add_input("input");
  conv->add_input("w");
  conv->add_input("b");
  conv->add_output("c0");
  add_ints(conv, "kernel_shape", {3, 3, 3});
  add_ints(conv, "pads", {1, 1, 1, 1, 1, 1});
  add_ints(conv, "strides", {1, 1, 1});
  auto* norm = g->add_node();
  norm->set_name("InstanceNormalization_1");
  norm->set_op_type("InstanceNormalization");
  norm->add_input("c0");
  norm->add_input("scale");
  norm->add_input("shift");
  norm->add_output("n0");
  auto* eps = norm->add_attribute();
  eps->set_name("epsilon");
  eps->set_type(onnx::AttributeProto::FLOAT);
  eps->set_f(1e-5f);
  auto* act = g->add_node();
  act->set_name("LeakyRelu_2");
  act->set_op_type("LeakyRelu");
  act->add_input("n0");
  act->add_output("a0");
  auto* alpha = act->add_attribute();
  alpha->set_name("alpha");
  alpha->set_type(onnx::AttributeProto::FLOAT);
  alpha->set_f(0.2f);
  std::string last = "a0";
  if (!extra_op.empty()) {
    add_initializer(g, "indices", {1}, {0.0f}, true);
    auto* x = g->add_node();
    x->set_name(extra_op + "_12");
    x->set_op_type(extra_op);
    x->add_input("a0");
    if (extra_op == "Gather") x->add_input("indices");
    x->add_output("x0");
    last = "x0";
  }
  set_value(g->add_output(), last, {});
  g->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
  return m;
}

std::string write_temp(const onnx::ModelProto& m, const std::string& name) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::string bytes;
  EXPECT_TRUE(m.SerializeToString(&bytes));
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(OnnxImport, ReadsInitializersFromRawDataAndFloatData) {
  std::string bytes;
  ASSERT_TRUE(tiny_model("").SerializeToString(&bytes));
  auto m = parse_onnx_model(bytes);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->opset, 17);
  const OnnxTensor& w = m->initializers.at("w");
  EXPECT_EQ(w.dims, (std::vector<int64_t>{4, 2, 3, 3, 3}));
  ASSERT_EQ(w.f32.size(), 216u);
  EXPECT_FLOAT_EQ(w.f32[5], 0.01f * 5 - 0.08f);
  EXPECT_EQ(m->initializers.at("b").f32, (std::vector<float>{0.1f, -0.2f, 0.3f, 0.0f}));
}

TEST(OnnxImport, ReadsNodesAttributesAndValueShapes) {
  std::string bytes;
  ASSERT_TRUE(tiny_model("").SerializeToString(&bytes));
  auto m = parse_onnx_model(bytes);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->nodes.size(), 3u);
  EXPECT_EQ(m->nodes[0].op_type, "Conv");
  ASSERT_NE(m->nodes[0].attribute("pads"), nullptr);
  EXPECT_EQ(m->nodes[0].attribute("pads")->ints, (std::vector<int64_t>{1, 1, 1, 1, 1, 1}));
  EXPECT_FLOAT_EQ(m->nodes[2].attribute("alpha")->f, 0.2f);
  ASSERT_EQ(m->inputs.size(), 1u);
  EXPECT_EQ(m->inputs[0].dims, (std::vector<int64_t>{1, 2, 4, 4, 4}));
  EXPECT_TRUE(m->inputs[0].is_fixed());
}

TEST(OnnxImport, RejectsRawDataOfTheWrongLength) {
  onnx::ModelProto m = tiny_model("");
  m.mutable_graph()->mutable_initializer(0)->mutable_raw_data()->resize(10);
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  auto r = parse_onnx_model(bytes);
  EXPECT_EQ(r.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'w'"), std::string::npos) << r.status().message();
}

TEST(OnnxImport, MissingFileIsNotFound) {
  auto r = read_onnx_file("/nonexistent/model.onnx");
  EXPECT_EQ(r.status().code(), base::Code::kNotFound);
}

TEST(OnnxImport, GarbageIsInvalidArgument) {
  const std::string path = ::testing::TempDir() + "/garbage.onnx";
  std::ofstream(path) << "this is not a protobuf at all \xff\xff\xff";
  auto r = read_onnx_file(path);
  EXPECT_EQ(r.status().code(), base::Code::kInvalidArgument) << r.status().to_string();
}

TEST(OnnxImport, ReadsTheGoldenNnUnetExport) {
  SKIP_WITHOUT_GOLDEN();
  auto m = read_onnx_file(kGoldenOnnx);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->nodes.size(), 49u);
  ASSERT_EQ(m->inputs.size(), 1u);
  EXPECT_EQ(m->inputs[0].name, "input");
  EXPECT_EQ(m->inputs[0].dims, (std::vector<int64_t>{1, 2, 32, 32, 32}));
  EXPECT_EQ(m->outputs[0].name, "logits");
  EXPECT_EQ(m->initializers.at("encoder.stages.0.0.convs.0.conv.weight").f32.size(), 8u * 2 * 27);
}

TEST(Graph, FusesConvInstanceNormLeakyReluChainsOfTheGoldenModel) {
  SKIP_WITHOUT_GOLDEN();
  auto m = read_onnx_file(kGoldenOnnx);
  ASSERT_TRUE(m.ok());
  auto g = build_graph(*m);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  // 14 conv+norm+act blocks, 3 deconvs, 3 concats, 1 final 1x1 conv.
  EXPECT_EQ(g->ops.size(), 21u);
  int fused = 0;
  for (const auto& op : g->ops) fused += op.kind == OpKind::kConv && op.has_norm && op.activation == Activation::kLeakyRelu;
  EXPECT_EQ(fused, 14);
  EXPECT_EQ(g->tensors[g->output].shape, (std::vector<int64_t>{1, 2, 32, 32, 32}));
  auto unfused = build_graph(*m, GraphOptions{false});
  ASSERT_TRUE(unfused.ok());
  EXPECT_EQ(unfused->ops.size(), 49u);
  EXPECT_NEAR(g->gflop(), unfused->gflop(), 1e-12);
  EXPECT_GT(g->gflop(), 0.8);
  EXPECT_LT(g->gflop(), 1.0);
}

TEST(Graph, InfersShapesOfStridedConvAndTransposedConv) {
  SKIP_WITHOUT_GOLDEN();
  auto m = read_onnx_file(kGoldenOnnx);
  ASSERT_TRUE(m.ok());
  auto g = build_graph(*m);
  ASSERT_TRUE(g.ok());
  bool saw_deconv = false;
  for (const auto& op : g->ops) {
    if (op.kind == OpKind::kConvTranspose && !saw_deconv) {
      saw_deconv = true;
      EXPECT_EQ(g->tensors[op.inputs[0]].shape, (std::vector<int64_t>{1, 32, 4, 4, 4}));
      EXPECT_EQ(g->tensors[op.output].shape, (std::vector<int64_t>{1, 32, 8, 8, 8}));
    }
  }
  EXPECT_TRUE(saw_deconv);
}

TEST(Graph, UnsupportedOperatorFailsTheLoadNamingNodeAndOperator) {
  const std::string path = write_temp(tiny_model("Gather"), "gather.onnx");
  auto engine = CpuEngine::load_onnx(path, EngineOptions{});
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), base::Code::kUnimplemented);
  EXPECT_NE(engine.status().message().find("unsupported ONNX operator 'Gather' at node 'Gather_12'"),
            std::string::npos)
      << engine.status().message();
  std::remove(path.c_str());
}

TEST(Graph, UnsupportedAttributeFailsTheLoad) {
  onnx::ModelProto m = tiny_model("");
  auto* group = m.mutable_graph()->mutable_node(0)->add_attribute();
  group->set_name("group");
  group->set_type(onnx::AttributeProto::INT);
  group->set_i(2);
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  auto parsed = parse_onnx_model(bytes);
  ASSERT_TRUE(parsed.ok());
  auto g = build_graph(*parsed);
  EXPECT_EQ(g.status().code(), base::Code::kUnimplemented);
  EXPECT_NE(g.status().message().find("group=2"), std::string::npos) << g.status().message();
  EXPECT_NE(g.status().message().find("Conv_0"), std::string::npos) << g.status().message();
}

TEST(Graph, DynamicInputShapeIsInvalidArgument) {
  std::string bytes;
  ASSERT_TRUE(tiny_model("", {-1, 2, 4, 4, 4}).SerializeToString(&bytes));
  auto parsed = parse_onnx_model(bytes);
  ASSERT_TRUE(parsed.ok());
  auto g = build_graph(*parsed);
  EXPECT_EQ(g.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(g.status().message().find("dynamic"), std::string::npos) << g.status().message();
}

TEST(Graph, ConvertsConstantNodesToInitializers) {
  onnx::ModelProto m = tiny_model("");
  // Move the bias into a Constant node in front of the graph.
  auto* g = m.mutable_graph();
  onnx::TensorProto bias = g->initializer(1);
  g->mutable_initializer()->DeleteSubrange(1, 1);
  onnx::NodeProto constant;
  constant.set_op_type("Constant");
  constant.add_output("b");
  auto* value = constant.add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  *value->mutable_t() = bias;
  *g->add_node() = constant;
  // Constant nodes must precede their users: rotate it to the front.
  for (int i = g->node_size() - 1; i > 0; --i) g->mutable_node()->SwapElements(i, i - 1);
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  auto parsed = parse_onnx_model(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  EXPECT_EQ(parsed->nodes.size(), 3u);
  EXPECT_EQ(parsed->initializers.at("b").f32, (std::vector<float>{0.1f, -0.2f, 0.3f, 0.0f}));
  EXPECT_TRUE(build_graph(*parsed).ok());
}

}  // namespace
}  // namespace inference
