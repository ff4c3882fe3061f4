#include "inference/cpu_engine.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <sstream>

#include "base/log.h"
#include "inference/engine_file.h"
#include "inference/graph.h"
#include "inference/layout_policy.h"
#include "inference/memory_planner.h"
#include "inference/norm_kernels.h"
#include "inference/onnx_model.h"

namespace inference {
namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;

constexpr size_t kArenaAlignment = 64;  // one cache line; also the AVX-512 vector size

memory::dims to_dims(const std::vector<int64_t>& v) { return memory::dims(v.begin(), v.end()); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

/// Plain (user) layout of an activation tensor of the given rank.
tag plain_tag(size_t rank) { return rank == 5 ? tag::ncdhw : tag::nchw; }
/// Channels-last layout of an activation tensor of the given rank.
tag channels_last_tag(size_t rank) { return rank == 5 ? tag::ndhwc : tag::nhwc; }

/// The same layout with another data type (strides and blocking are per element).
memory::desc with_type(const memory::desc& md, memory::data_type t) {
  dnnl_memory_desc_t d = md.data;
  d.data_type = static_cast<dnnl_data_type_t>(t);
  return memory::desc(d);
}

/// Channel-outer layouts: with N = 1 a channel range [c0, c1) of such a tensor is one
/// contiguous byte range when c0 and c1 are multiples of the block, which makes concat free.
struct ChannelOuterLayout {
  tag t;
  int block;
};
std::vector<ChannelOuterLayout> channel_outer_layouts(size_t rank) {
  if (rank == 5) return {{tag::ncdhw, 1}, {tag::nCdhw8c, 8}, {tag::nCdhw16c, 16}};
  return {{tag::nchw, 1}, {tag::nChw8c, 8}, {tag::nChw16c, 16}};
}

std::string layout_str(const memory::desc& md) {
  const auto& d = md.data;
  if (d.format_kind != dnnl_blocked) return "opaque";
  std::ostringstream os;
  // Outer dims sorted by stride (descending), then inner blocks: e.g. "abcde" or "aBcde8b".
  std::vector<int> order(d.ndims);
  for (int i = 0; i < d.ndims; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return d.format_desc.blocking.strides[a] > d.format_desc.blocking.strides[b];
  });
  const auto& blk = d.format_desc.blocking;
  for (int i : order) {
    bool blocked = false;
    for (int b = 0; b < blk.inner_nblks; ++b) blocked = blocked || blk.inner_idxs[b] == i;
    os << static_cast<char>((blocked ? 'A' : 'a') + i);
  }
  for (int b = 0; b < blk.inner_nblks; ++b) os << blk.inner_blks[b] << static_cast<char>('a' + blk.inner_idxs[b]);
  return os.str();
}

/// OpenMP thread count through the runtime oneDNN already loaded (libgomp); no link-time
/// dependency on OpenMP for this library.
void set_openmp_threads(int threads) {
  using SetFn = void (*)(int);
  auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (fn == nullptr) {
    SB_LOG(kWarning) << "threads=" << threads << " requested but no OpenMP runtime is loaded; using the default";
    return;
  }
  fn(threads);
}

int openmp_max_threads() {
  using GetFn = int (*)();
  auto fn = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
  return fn == nullptr ? 1 : fn();
}

}  // namespace

/// Everything the engine holds; built once by CpuEngine::load_model.
struct CpuEngine::Impl {
  /// One argument of a primitive: a graph tensor, an extra (scratch) buffer, or fixed memory.
  struct ArgSpec {
    int id = 0;
    int tensor = -1;
    int buffer = -1;
    memory fixed;
  };
  /// Instance norm + activation in place by our own kernel (norm_kernels.h) instead of a
  /// oneDNN primitive; `data` is resolved once the arena exists.
  struct NormStep {
    int tensor = -1;
    int64_t channels = 0, spatial = 0;
    int block = 1;
    const float* scale = nullptr;
    const float* shift = nullptr;
    float epsilon = 1e-5f;
    NormActivation activation = NormActivation::kNone;
    float alpha = 0.0f;
    NormStorage storage = NormStorage::kF32;      // of the tensor (the output)
    NormStorage src_storage = NormStorage::kF32;  // of the input: the tensor, or src_buffer
    int src_buffer = -1;  // extra buffer holding the conv's fp32 output; -1: in place
    KernelIsa kernel = KernelIsa::kGeneric;
    void* data = nullptr;
    const void* src = nullptr;
  };
  /// One primitive execution in run().
  struct Step {
    int op = -1;  // graph op index (-1: input / output copy)
    std::string label;
    std::string impl;
    dnnl::primitive prim;  // empty for a NormStep or a shuffle
    bool custom_norm = false;
    NormStep norm;
    /// Depth-to-space of a kernel == stride deconvolution (norm_kernels.h); resolved pointers.
    bool custom_shuffle = false;
    int shuffle_src_buffer = -1, shuffle_dst_tensor = -1;
    int64_t shuffle_c_out = 0, shuffle_in[3] = {1, 1, 1}, shuffle_kernel[3] = {1, 1, 1};
    int shuffle_block = 1;
    bool shuffle_channels_last = false;  // channels-last tensors of shuffle_elem_bytes elements
    size_t shuffle_elem_bytes = 4;
    const void* shuffle_src = nullptr;
    void* shuffle_dst = nullptr;
    std::vector<ArgSpec> specs;
    std::vector<dnnl_exec_arg_t> args;  // resolved once the arena exists
  };
  /// A buffer that is not a graph tensor: primitive scratchpads, instance-norm statistics.
  struct ExtraBuffer {
    memory::desc md;
    int first = 0, last = 0;
    std::string name;
    memory mem;
  };

  EngineOptions options;
  std::string storage = "fp32";  // resolved storage precision: fp32, bf16, fp16
  memory::data_type dt = memory::data_type::f32;  // compute type of activations and weights
  bool profiling = false;
  int profiled_runs = 0;
  std::vector<double> step_seconds;  // per entry of `steps` (+ input, output at the end)
  dnnl::engine eng;
  dnnl::stream strm;
  Graph graph;
  std::vector<memory::desc> tmd;  // per tensor
  std::vector<memory> tmem;       // per tensor, pointing into the arena
  std::vector<int> root;          // per tensor: the tensor whose buffer holds it
  std::vector<size_t> offset;     // per tensor: byte offset inside its root's buffer
  std::vector<bool> concat_root;  // per tensor: its buffer holds concat slices
  std::vector<Step> steps;
  std::vector<ExtraBuffer> extras;
  std::vector<memory> weights;  // reordered weights, biases, norm scales (own allocations)
  size_t weights_bytes = 0;
  memory user_in, user_out;  // plain float32 views of the caller's buffers (handle set per run)
  Step input_step, output_step;
  std::vector<BufferRequest> requests;
  std::vector<int> request_root;  // request index -> root tensor (-1 for extras)
  MemoryPlan plan;
  size_t naive = 0;
  void* arena = nullptr;
  int n_threads = 1;
  IsaTraits isa;                                       // of the oneDNN ISA in use (layout_policy.h)
  ActivationFormat format = ActivationFormat::kPlain;  // of every activation tensor
  KernelIsa kernel = KernelIsa::kGeneric;              // of the hand-written kernels
  int block = 1;  // channel block of a blocked format (8 or 16), else 1
  base::Status build_error;  // first layer that only got a slow implementation (checked per op)

  ~Impl() { std::free(arena); }

  int n_steps() const { return static_cast<int>(graph.ops.size()) + 2; }
  int first_use(int t) const {
    return graph.tensors[t].producer < 0 ? 0 : graph.tensors[t].producer + 1;
  }
  int last_use(int t) const {
    const GraphTensor& g = graph.tensors[t];
    if (g.is_graph_output) return n_steps() - 1;
    int last = first_use(t);
    for (int c : g.consumers) last = std::max(last, c + 1);
    return last;
  }
  bool is_live(int t) const {
    return graph.tensors[t].is_graph_input || graph.tensors[t].producer >= 0;
  }

  /// Weights as user memory in `user_tag`, reordered into `want` (owned by the engine).
  memory reorder_weights(const std::vector<float>& data, const memory::dims& dims, tag user_tag,
                         const memory::desc& want) {
    memory user(memory::desc(dims, memory::data_type::f32, user_tag), eng, const_cast<float*>(data.data()));
    memory out(want, eng);
    dnnl::reorder(user, out).execute(strm, user, out);
    strm.wait();
    weights_bytes += want.get_size();
    weights.push_back(out);
    return out;
  }

  memory vector_memory(const std::vector<float>& v) {
    memory m(memory::desc({static_cast<memory::dim>(v.size())}, memory::data_type::f32, tag::a), eng);
    std::memcpy(m.get_data_handle(), v.data(), v.size() * sizeof(float));
    weights_bytes += v.size() * sizeof(float);
    weights.push_back(m);
    return m;
  }

  /// The layout of an activation of `shape` in the engine's format (layout_policy.h):
  /// channel-blocked when the channel count fills whole blocks (else plain: convolutions then
  /// pick a padded block themselves), channels-last, or plain.
  memory::desc preferred_md(const std::vector<int64_t>& shape, memory::data_type type) const {
    const size_t rank = shape.size();
    if (format == ActivationFormat::kChannelsLast) return memory::desc(to_dims(shape), type, channels_last_tag(rank));
    for (const auto& l : channel_outer_layouts(rank)) {
      if (l.block == block && block > 1 && shape[1] % block == 0) return memory::desc(to_dims(shape), type, l.t);
    }
    return memory::desc(to_dims(shape), type, plain_tag(rank));
  }
  memory::desc preferred_md(const std::vector<int64_t>& shape) const { return preferred_md(shape, dt); }

  /// Records a build error when a convolution or deconvolution got a reference or GEMM
  /// implementation that no documented exception (layout_policy.h) allows.
  void check_implementation(int op_index, const std::string& kind, const std::string& impl,
                            const memory::desc& src, const memory::desc& dst, bool kernel_equals_stride) {
    if (!build_error.ok() || !is_slow_convolution(impl)) return;
    if (!slow_convolution_exception(isa, kind, kernel_equals_stride).empty()) return;
    const GraphOp& op = graph.ops[op_index];
    build_error = base::internal_error(
        "layer #" + std::to_string(op_index) + " '" + op.name + "' (" + kind + " " +
        shape_str(graph.tensors[op.inputs[0]].shape) + " -> " + shape_str(graph.tensors[op.output].shape) +
        ") got oneDNN's slow implementation '" + impl + "' on ISA " + isa.onednn_isa + " with src layout " +
        layout_str(src) + " and dst layout " + layout_str(dst) + " (activation format " +
        activation_format_name(format) + "); no documented exception allows it (inference/layout_policy.h)");
  }

  dnnl::primitive_attr base_attr() const {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
  }

  /// Adds the scratchpad of a primitive as an extra buffer alive only during `op`.
  void add_scratchpad(Step& s, const memory::desc& md, int op) {
    if (md.get_size() == 0) return;
    extras.push_back({md, op + 1, op + 1, "scratchpad #" + std::to_string(op) + " " + s.label, {}});
    s.specs.push_back({DNNL_ARG_SCRATCHPAD, -1, static_cast<int>(extras.size()) - 1, {}});
  }

  static dnnl::algorithm eltwise_alg(Activation a) {
    return a == Activation::kSigmoid ? dnnl::algorithm::eltwise_logistic : dnnl::algorithm::eltwise_relu;
  }
  static float eltwise_alpha(const GraphOp& op) {
    return op.activation == Activation::kLeakyRelu ? op.alpha : 0.0f;
  }

  /// Instance norm of tensor `src` into `dst` (may be the same tensor): oneDNN batch norm
  /// in training mode on N = 1 computes mean and biased variance per channel over the
  /// spatial dims, which is exactly ONNX InstanceNormalization.
  void add_instance_norm(int op_index, const GraphOp& op, int src, int dst) {
    const memory::desc& md = tmd[src];
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_training, md, op.norm.epsilon, flags);
    dnnl::batch_normalization_forward::primitive_desc pd(d, base_attr(), eng);
    Step s;
    s.op = op_index;
    s.label = "instance_norm";
    s.impl = pd.impl_info_str();
    s.prim = dnnl::batch_normalization_forward(pd);
    s.specs.push_back({DNNL_ARG_SRC, src, -1, {}});
    s.specs.push_back({DNNL_ARG_DST, dst, -1, {}});
    s.specs.push_back({DNNL_ARG_SCALE, -1, -1, vector_memory(op.norm.scale)});
    s.specs.push_back({DNNL_ARG_SHIFT, -1, -1, vector_memory(op.norm.shift)});
    extras.push_back({pd.mean_desc(), op_index + 1, op_index + 1, "mean #" + std::to_string(op_index), {}});
    s.specs.push_back({DNNL_ARG_MEAN, -1, static_cast<int>(extras.size()) - 1, {}});
    extras.push_back({pd.variance_desc(), op_index + 1, op_index + 1, "variance #" + std::to_string(op_index), {}});
    s.specs.push_back({DNNL_ARG_VARIANCE, -1, static_cast<int>(extras.size()) - 1, {}});
    add_scratchpad(s, pd.scratchpad_desc(), op_index);
    steps.push_back(std::move(s));
  }

  void add_eltwise(int op_index, Activation a, float alpha, int src, int dst) {
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, eltwise_alg(a), tmd[src], alpha, 0.0f);
    dnnl::eltwise_forward::primitive_desc pd(d, base_attr(), eng);
    Step s;
    s.op = op_index;
    s.label = std::string(activation_name(a));
    s.impl = pd.impl_info_str();
    s.prim = dnnl::eltwise_forward(pd);
    s.specs.push_back({DNNL_ARG_SRC, src, -1, {}});
    s.specs.push_back({DNNL_ARG_DST, dst, -1, {}});
    add_scratchpad(s, pd.scratchpad_desc(), op_index);
    steps.push_back(std::move(s));
  }

  /// A reorder step of op `op` between two layouts.
  Step make_reorder(int op, const std::string& label, const memory::desc& from, const memory::desc& to,
                    ArgSpec from_arg, ArgSpec to_arg) {
    dnnl::reorder::primitive_desc pd(eng, from, eng, to, base_attr());
    Step s;
    s.op = op;
    s.label = label;
    s.impl = pd.impl_info_str();
    s.prim = dnnl::reorder(pd);
    s.specs.push_back(from_arg);
    s.specs.push_back(to_arg);
    add_scratchpad(s, pd.scratchpad_desc(), op);
    return s;
  }

  /// `x` as the primitive of op `i` wants it (`want`): the tensor itself when it already has
  /// that layout and type, else a reorder step (appended to `before`) into a staging buffer
  /// alive only during op i.
  ArgSpec staged_input(int i, int arg, int x, const memory::desc& want, std::vector<Step>& before) {
    if (tmd[x] == want) return {arg, x, -1, {}};
    extras.push_back({want, i + 1, i + 1, "op #" + std::to_string(i) + " input as " + layout_str(want), {}});
    const int buf = static_cast<int>(extras.size()) - 1;
    before.push_back(make_reorder(i, "convert_input", tmd[x], want, {DNNL_ARG_FROM, x, -1, {}},
                                  {DNNL_ARG_TO, -1, buf, {}}));
    return {arg, -1, buf, {}};
  }

  /// A (de)convolution whose kernel equals its stride, without padding (nnU-Net's upsampling).
  static bool is_kernel_equals_stride(const GraphOp& op) {
    if (op.conv.kernel != op.conv.strides) return false;
    for (size_t k = 0; k < op.conv.pads_begin.size(); ++k) {
      if (op.conv.pads_begin[k] != 0 || op.conv.pads_end[k] != 0) return false;
    }
    return true;
  }

  /// Compute type of a convolution: the engine's, except that a bf16 engine keeps the
  /// convolutions reading the network input in fp32 (Bf16Policy).
  memory::data_type conv_compute_type(const GraphOp& op) const {
    if (dt == memory::data_type::bf16 && options.bf16_policy.first_conv_fp32 && op.inputs[0] == graph.input) {
      return memory::data_type::f32;
    }
    return dt;
  }

  void add_conv(int i, const GraphOp& op) {
    const bool transpose = op.kind == OpKind::kConvTranspose;
    const int x = op.inputs[0];
    const int y = op.output;
    const auto& out_shape = graph.tensors[y].shape;
    const size_t rank = out_shape.size();
    const memory::data_type cdt = conv_compute_type(op);
    // bf16 convolutions accumulate in fp32 and can write fp32: the head gives fp32 logits.
    memory::data_type odt =
        graph.tensors[y].is_graph_output && options.bf16_policy.head_fp32_output ? memory::data_type::f32 : cdt;
    // A bf16 engine keeps the norm's input in fp32 (Bf16Policy::norm_input_fp32): the
    // convolution writes fp32 into a staging buffer and the norm writes the bf16 tensor.
    const bool norm_from_fp32 = op.has_norm && dt == memory::data_type::bf16 &&
                                options.bf16_policy.norm_input_fp32 && format == ActivationFormat::kChannelsLast;
    if (norm_from_fp32) odt = memory::data_type::f32;
    const memory::dims wdims_onnx = to_dims(op.conv.weight_dims);
    // oneDNN weight dims are always {OC, IC, k...}; ONNX ConvTranspose stores [IC, OC, k...].
    memory::dims wdims = wdims_onnx;
    if (transpose) std::swap(wdims[0], wdims[1]);
    const tag user_wtag = transpose ? (rank == 5 ? tag::iodhw : tag::iohw) : (rank == 5 ? tag::oidhw : tag::oihw);
    const memory::desc w_any(wdims, cdt, tag::any);
    const memory::desc b_md({wdims[0]}, memory::data_type::f32, tag::a);
    const memory::dims strides = to_dims(op.conv.strides);
    const memory::dims pad_l = to_dims(op.conv.pads_begin);
    const memory::dims pad_r = to_dims(op.conv.pads_end);
    const bool kernel_equals_stride = is_kernel_equals_stride(op);
    dnnl::primitive_attr attr = base_attr();
    if (!op.has_norm && op.activation != Activation::kNone) {
      dnnl::post_ops po;
      po.append_eltwise(1.0f, eltwise_alg(op.activation), eltwise_alpha(op), 0.0f);
      attr.set_post_ops(po);
    }
    Step s;
    s.op = i;
    s.label = transpose ? "deconv" : "conv";
    const memory::desc dst_plain(to_dims(out_shape), odt, plain_tag(rank));
    memory::desc weights_md, scratch_md;
    std::vector<Step> before, after;
    // Where the primitive reads and writes: the graph tensors, or staging buffers.
    const memory::desc src_md = with_type(tmd[x], cdt);
    ArgSpec src_arg = staged_input(i, DNNL_ARG_SRC, x, src_md, before);
    ArgSpec dst_arg{DNNL_ARG_DST, y, -1, {}};
    if (transpose && before.empty() && odt == cdt && add_deconv_as_conv(i, op)) return;
    if (transpose) {
      auto make = [&](const memory::desc& s_md, const memory::desc& d_md) {
        dnnl::deconvolution_forward::desc d(dnnl::prop_kind::forward_inference,
                                            dnnl::algorithm::deconvolution_direct, s_md, w_any, b_md, d_md,
                                            strides, pad_l, pad_r);
        return dnnl::deconvolution_forward::primitive_desc(d, attr, eng);
      };
      // With dst `any` oneDNN 2.6 picks a channels-last dst for deconvolution: ask for the
      // engine's layout, so the following concat stays free where the format allows it.
      auto pd = make(src_md, preferred_md(out_shape, odt));
      tmd[y] = pd.dst_desc();
      if (is_slow_convolution(pd.impl_info_str()) && format != ActivationFormat::kChannelsLast &&
          before.empty()) {
        // oneDNN 2.6 has no optimized deconvolution for blocked layouts on AVX2 (its reference
        // one is ~100x slower than gemm on plain layouts): stage through plain buffers.
        const memory::desc src_plain(to_dims(graph.tensors[x].shape), cdt, plain_tag(rank));
        pd = make(src_plain, dst_plain);
        if (tmd[x] != src_plain) {
          src_arg = staged_input(i, DNNL_ARG_SRC, x, src_plain, before);
        }
        if (tmd[y] != dst_plain) {
          extras.push_back({dst_plain, i + 1, i + 1, "deconv #" + std::to_string(i) + " plain output", {}});
          dst_arg = {DNNL_ARG_DST, -1, static_cast<int>(extras.size()) - 1, {}};
          after.push_back(make_reorder(i, "to_blocked", dst_plain, tmd[y], {DNNL_ARG_FROM, -1, dst_arg.buffer, {}},
                                       {DNNL_ARG_TO, y, -1, {}}));
        }
      }
      weights_md = pd.weights_desc();
      scratch_md = pd.scratchpad_desc();
      s.impl = pd.impl_info_str();
      s.prim = dnnl::deconvolution_forward(pd);
      check_implementation(i, "deconv", s.impl, pd.src_desc(), pd.dst_desc(), kernel_equals_stride);
    } else {
      // Blocked formats let oneDNN pick the output block (padded channel blocks, e.g. 2 logits
      // in an 8-channel block, are fine: primitives write zeros into the padding); the other
      // formats are asked for explicitly.
      const memory::desc dst_md = format == ActivationFormat::kBlocked8 || format == ActivationFormat::kBlocked16
                                      ? memory::desc(to_dims(out_shape), odt, tag::any)
                                      : preferred_md(out_shape, odt);
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                        src_md, w_any, b_md, dst_md, strides, pad_l, pad_r);
      dnnl::convolution_forward::primitive_desc pd(d, attr, eng);
      tmd[y] = pd.dst_desc();
      if (norm_from_fp32) {
        tmd[y] = with_type(pd.dst_desc(), dt);
        extras.push_back({pd.dst_desc(), i + 1, i + 1, "conv #" + std::to_string(i) + " fp32 output", {}});
        dst_arg = {DNNL_ARG_DST, -1, static_cast<int>(extras.size()) - 1, {}};
      }
      weights_md = pd.weights_desc();
      scratch_md = pd.scratchpad_desc();
      s.impl = pd.impl_info_str();
      s.prim = dnnl::convolution_forward(pd);
      check_implementation(i, "conv", s.impl, pd.src_desc(), pd.dst_desc(), false);
    }
    memory w = reorder_weights(op.conv.weights, wdims, user_wtag, weights_md);
    s.specs.push_back(src_arg);
    s.specs.push_back({DNNL_ARG_WEIGHTS, -1, -1, w});
    s.specs.push_back({DNNL_ARG_BIAS, -1, -1, vector_memory(op.conv.bias)});
    s.specs.push_back(dst_arg);
    add_scratchpad(s, scratch_md, i);
    for (Step& b : before) steps.push_back(std::move(b));
    steps.push_back(std::move(s));
    for (Step& a : after) steps.push_back(std::move(a));
    if (op.has_norm) {
      if (dst_arg.buffer >= 0 && norm_from_fp32) {
        if (!add_fused_norm(i, op, y, dst_arg.buffer)) {
          build_error = base::internal_error("layer #" + std::to_string(i) + " '" + op.name +
                                             "': no fused instance norm for layout " + layout_str(tmd[y]));
        }
      } else if (!add_fused_norm(i, op, y)) {
        add_instance_norm(i, op, y, y);
        if (op.activation != Activation::kNone) add_eltwise(i, op.activation, eltwise_alpha(op), y, y);
      }
    }
  }

  /// ConvTranspose with kernel == stride and no padding (nnU-Net's upsampling) on blocked
  /// layouts, which oneDNN 2.6 only has as a reference kernel on AVX2: a 1x1 convolution to
  /// taps * C_out channels (oneDNN's fast 1x1 kernel; weights rearranged once here) into a
  /// scratch buffer, then a depth-to-space copy into the blocked output. False (nothing added)
  /// when the op does not qualify (padding, kernel != stride, fused norm, C_out not a multiple
  /// of the channel block, bf16).
  bool add_deconv_as_conv(int i, const GraphOp& op) {
    const int x = op.inputs[0];
    const int y = op.output;
    const auto& in_shape = graph.tensors[x].shape;
    const auto& out_shape = graph.tensors[y].shape;
    const size_t rank = out_shape.size();
    const bool channels_last = format == ActivationFormat::kChannelsLast;
    if (!channels_last && (dt != memory::data_type::f32 || block <= 1)) return false;
    if (op.has_norm || op.activation != Activation::kNone || tmd[x].data_type() != dt) return false;
    if (!is_kernel_equals_stride(op)) return false;
    const int64_t c_in = in_shape[1], c_out = out_shape[1];
    if (!channels_last && c_out % block != 0) return false;
    int64_t taps = 1;
    for (int64_t k : op.conv.kernel) taps *= k;
    // W1[(t * C_out + co)][ci] = W[ci][co][t] (ONNX ConvTranspose weights are [C_in, C_out, k...]).
    std::vector<float> w1(static_cast<size_t>(taps * c_out * c_in));
    std::vector<float> b1(static_cast<size_t>(taps * c_out));
    for (int64_t ci = 0; ci < c_in; ++ci) {
      for (int64_t co = 0; co < c_out; ++co) {
        for (int64_t t = 0; t < taps; ++t) {
          w1[static_cast<size_t>((t * c_out + co) * c_in + ci)] = op.conv.weights[static_cast<size_t>((ci * c_out + co) * taps + t)];
        }
      }
    }
    for (int64_t t = 0; t < taps; ++t) {
      for (int64_t co = 0; co < c_out; ++co) b1[static_cast<size_t>(t * c_out + co)] = op.conv.bias[static_cast<size_t>(co)];
    }
    std::vector<int64_t> mid_shape = in_shape;
    mid_shape[1] = taps * c_out;
    memory::dims wdims = {taps * c_out, c_in};
    for (size_t k = 2; k < rank; ++k) wdims.push_back(1);
    const memory::dims ones(rank - 2, 1), zeros(rank - 2, 0);
    const memory::desc mid_md = preferred_md(mid_shape);
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, tmd[x],
                                      memory::desc(wdims, dt, tag::any),
                                      memory::desc({taps * c_out}, memory::data_type::f32, tag::a), mid_md, ones,
                                      zeros, zeros);
    dnnl::convolution_forward::primitive_desc pd(d, base_attr(), eng);
    if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0) return false;
    tmd[y] = preferred_md(out_shape);
    memory w = reorder_weights(w1, wdims, rank == 5 ? tag::oidhw : tag::oihw, pd.weights_desc());
    extras.push_back({mid_md, i + 1, i + 1, "deconv #" + std::to_string(i) + " taps x C_out", {}});
    const int mid = static_cast<int>(extras.size()) - 1;
    Step s;
    s.op = i;
    s.label = "deconv_taps";
    s.impl = pd.impl_info_str();
    s.prim = dnnl::convolution_forward(pd);
    s.specs.push_back({DNNL_ARG_SRC, x, -1, {}});
    s.specs.push_back({DNNL_ARG_WEIGHTS, -1, -1, w});
    s.specs.push_back({DNNL_ARG_BIAS, -1, -1, vector_memory(b1)});
    s.specs.push_back({DNNL_ARG_DST, -1, mid, {}});
    add_scratchpad(s, pd.scratchpad_desc(), i);
    steps.push_back(std::move(s));
    Step sh;
    sh.op = i;
    sh.label = "depth_to_space";
    sh.impl = channels_last ? "strokebox:channels_last" : "strokebox:blk" + std::to_string(block);
    sh.custom_shuffle = true;
    sh.shuffle_channels_last = channels_last;
    sh.shuffle_elem_bytes = dt == memory::data_type::bf16 ? 2 : 4;
    sh.shuffle_src_buffer = mid;
    sh.shuffle_dst_tensor = y;
    sh.shuffle_c_out = c_out;
    sh.shuffle_block = block;
    for (size_t k = 0; k < rank - 2; ++k) {
      sh.shuffle_in[3 - (rank - 2) + k] = in_shape[2 + k];
      sh.shuffle_kernel[3 - (rank - 2) + k] = op.conv.kernel[k];
    }
    steps.push_back(std::move(sh));
    return true;
  }

  /// Channel block of tensor `t` when it is stored channel-outer (plain, channel-blocked with
  /// or without padding, or channels-last = one block of all channels) in fp32 or bf16, the
  /// layouts instance_norm_activation() takes; 0 otherwise.
  int norm_block(int t) const {
    const auto& shape = graph.tensors[t].shape;
    const memory::data_type type = tmd[t].data_type();
    if (type != memory::data_type::f32 && type != memory::data_type::bf16) return 0;
    const memory::dims dims = to_dims(shape);
    if (tmd[t] == memory::desc(dims, type, channels_last_tag(shape.size()))) return static_cast<int>(shape[1]);
    for (const auto& l : channel_outer_layouts(shape.size())) {
      if (tmd[t] == memory::desc(dims, type, l.t)) return l.block;
    }
    return 0;
  }

  /// Instance norm + activation of tensor `t` in place by one pass of our vectorized kernel
  /// (fp32 arithmetic, also for bf16 storage); false (nothing added) when `t` is not in a
  /// layout the kernel takes (norm_block()).
  /// `src_buffer` >= 0: read the conv output from that fp32 extra buffer (same layout as t)
  /// instead of normalizing t in place.
  bool add_fused_norm(int op_index, const GraphOp& op, int t, int src_buffer = -1) {
    const int blk = norm_block(t);
    if (blk <= 0) return false;
    const auto& shape = graph.tensors[t].shape;
    Step s;
    s.op = op_index;
    s.custom_norm = true;
    NormStep& n = s.norm;
    n.tensor = t;
    n.channels = shape[1];
    n.spatial = 1;
    for (size_t d = 2; d < shape.size(); ++d) n.spatial *= shape[d];
    n.block = blk;
    n.storage = tmd[t].data_type() == memory::data_type::bf16 ? NormStorage::kBf16 : NormStorage::kF32;
    n.src_buffer = src_buffer;
    n.src_storage = src_buffer >= 0 ? NormStorage::kF32 : n.storage;
    // Scale and shift padded with zeros to whole blocks: the padding channels stay zero.
    const size_t padded = static_cast<size_t>((n.channels + blk - 1) / blk * blk);
    std::vector<float> scale(op.norm.scale), shift(op.norm.shift);
    scale.resize(padded, 0.0f);
    shift.resize(padded, 0.0f);
    n.scale = static_cast<const float*>(vector_memory(scale).get_data_handle());
    n.shift = static_cast<const float*>(vector_memory(shift).get_data_handle());
    n.epsilon = op.norm.epsilon;
    n.activation = op.activation == Activation::kRelu        ? NormActivation::kRelu
                   : op.activation == Activation::kLeakyRelu ? NormActivation::kLeakyRelu
                   : op.activation == Activation::kSigmoid   ? NormActivation::kSigmoid
                                                             : NormActivation::kNone;
    n.alpha = op.alpha;
    n.kernel = kernel;
    s.label = op.activation == Activation::kNone ? "instance_norm"
                                                 : "instance_norm+" + std::string(activation_name(op.activation));
    auto type_name = [](NormStorage st) { return st == NormStorage::kBf16 ? "bf16" : "f32"; };
    s.impl = std::string("strokebox:") + kernel_isa_name(kernel) + ":" + type_name(n.src_storage) +
             (n.src_storage != n.storage ? std::string("->") + type_name(n.storage) : std::string()) + ":blk" +
             std::to_string(n.block);
    steps.push_back(std::move(s));
    return true;
  }

  void add_avg_pool(int i, const GraphOp& op) {
    const int x = op.inputs[0];
    const int y = op.output;
    const memory::desc dst_any(to_dims(graph.tensors[y].shape), dt, tag::any);
    const auto alg = op.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                          : dnnl::algorithm::pooling_avg_exclude_padding;
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, alg, tmd[x], dst_any, to_dims(op.conv.strides),
                                  to_dims(op.conv.kernel), to_dims(op.conv.pads_begin), to_dims(op.conv.pads_end));
    dnnl::pooling_forward::primitive_desc pd(d, base_attr(), eng);
    tmd[y] = pd.dst_desc();
    Step s;
    s.op = i;
    s.label = "avg_pool";
    s.impl = pd.impl_info_str();
    s.prim = dnnl::pooling_forward(pd);
    s.specs.push_back({DNNL_ARG_SRC, x, -1, {}});
    s.specs.push_back({DNNL_ARG_DST, y, -1, {}});
    add_scratchpad(s, pd.scratchpad_desc(), i);
    steps.push_back(std::move(s));
  }

  /// Index into channel_outer_layouts() when `t` is stored in one of them without
  /// channel padding, else -1.
  int channel_outer_index(int t) const {
    const auto& shape = graph.tensors[t].shape;
    const auto layouts = channel_outer_layouts(shape.size());
    for (size_t k = 0; k < layouts.size(); ++k) {
      if (shape[1] % layouts[k].block != 0) continue;
      if (tmd[t] == memory::desc(to_dims(shape), dt, layouts[k].t)) return static_cast<int>(k);
    }
    return -1;
  }

  /// Places every input of a concat as a channel slice of the concat's own buffer (their
  /// producers then write in place) when each input has a buffer of its own; returns false
  /// and changes nothing otherwise. Layouts were checked by the caller.
  bool try_free_concat(const GraphOp& op) {
    const int y = op.output;
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const int t = op.inputs[k];
      const GraphTensor& g = graph.tensors[t];
      if (g.is_graph_input || g.is_graph_output) return false;
      if (root[t] != t || concat_root[t]) return false;  // already placed inside another buffer
      for (size_t j = 0; j < k; ++j) {
        if (op.inputs[j] == t) return false;  // the same tensor twice
      }
    }
    size_t off = 0;
    for (int t : op.inputs) {
      root[t] = y;
      offset[t] = off;
      off += tmd[t].get_size();
    }
    concat_root[y] = true;
    return true;
  }

  void add_concat(int i, const GraphOp& op) {
    const int y = op.output;
    const auto& shape = graph.tensors[y].shape;
    // All inputs in the same channel-outer layout: the output takes it too, and the inputs
    // become slices of its buffer (no work at all in run()).
    const int li = channel_outer_index(op.inputs[0]);
    bool same = li >= 0;
    for (int t : op.inputs) same = same && channel_outer_index(t) == li;
    std::vector<memory::desc> srcs;
    for (int t : op.inputs) srcs.push_back(tmd[t]);
    std::unique_ptr<dnnl::concat::primitive_desc> pd;
    if (same) {
      tmd[y] = memory::desc(to_dims(shape), dt, channel_outer_layouts(shape.size())[li].t);
      if (options.reuse_memory && try_free_concat(op)) return;
      pd = std::make_unique<dnnl::concat::primitive_desc>(tmd[y], 1, srcs, eng, base_attr());
    } else {
      tmd[y] = preferred_md(shape);
      pd = std::make_unique<dnnl::concat::primitive_desc>(tmd[y], 1, srcs, eng, base_attr());
    }
    Step s;
    s.op = i;
    s.label = "concat";
    s.impl = pd->impl_info_str();
    s.prim = dnnl::concat(*pd);
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      s.specs.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k), op.inputs[k], -1, {}});
    }
    s.specs.push_back({DNNL_ARG_DST, y, -1, {}});
    add_scratchpad(s, pd->scratchpad_desc(), i);
    steps.push_back(std::move(s));
  }

  void add_op(int i) {
    const GraphOp& op = graph.ops[i];
    switch (op.kind) {
      case OpKind::kConv:
      case OpKind::kConvTranspose:
        add_conv(i, op);
        return;
      case OpKind::kInstanceNorm:
        tmd[op.output] = tmd[op.inputs[0]];
        add_instance_norm(i, op, op.inputs[0], op.output);
        if (op.activation != Activation::kNone) add_eltwise(i, op.activation, eltwise_alpha(op), op.output, op.output);
        return;
      case OpKind::kActivation:
        tmd[op.output] = tmd[op.inputs[0]];
        add_eltwise(i, op.activation, eltwise_alpha(op), op.inputs[0], op.output);
        return;
      case OpKind::kAvgPool:
        add_avg_pool(i, op);
        return;
      case OpKind::kAdd: {
        tmd[op.output] = tmd[op.inputs[0]];
        dnnl::binary::desc d(dnnl::algorithm::binary_add, tmd[op.inputs[0]], tmd[op.inputs[1]], tmd[op.output]);
        dnnl::primitive_attr attr = base_attr();
        if (op.activation != Activation::kNone) {  // residual block: add -> nonlin fused
          dnnl::post_ops po;
          po.append_eltwise(1.0f, eltwise_alg(op.activation), eltwise_alpha(op), 0.0f);
          attr.set_post_ops(po);
        }
        dnnl::binary::primitive_desc pd(d, attr, eng);
        Step s;
        s.op = i;
        s.label = "add";
        s.impl = pd.impl_info_str();
        s.prim = dnnl::binary(pd);
        s.specs.push_back({DNNL_ARG_SRC_0, op.inputs[0], -1, {}});
        s.specs.push_back({DNNL_ARG_SRC_1, op.inputs[1], -1, {}});
        s.specs.push_back({DNNL_ARG_DST, op.output, -1, {}});
        add_scratchpad(s, pd.scratchpad_desc(), i);
        steps.push_back(std::move(s));
        return;
      }
      case OpKind::kConcat:
        add_concat(i, op);
        return;
      case OpKind::kSoftmax: {
        tmd[op.output] = tmd[op.inputs[0]];
        dnnl::softmax_forward::desc d(dnnl::prop_kind::forward_inference, tmd[op.inputs[0]], 1);
        dnnl::softmax_forward::primitive_desc pd(d, base_attr(), eng);
        Step s;
        s.op = i;
        s.label = "softmax";
        s.impl = pd.impl_info_str();
        s.prim = dnnl::softmax_forward(pd);
        s.specs.push_back({DNNL_ARG_SRC, op.inputs[0], -1, {}});
        s.specs.push_back({DNNL_ARG_DST, op.output, -1, {}});
        add_scratchpad(s, pd.scratchpad_desc(), i);
        steps.push_back(std::move(s));
        return;
      }
    }
  }

  /// Members of the buffer group whose root is r.
  std::vector<int> group(int r) const {
    std::vector<int> out;
    for (int t = 0; t < static_cast<int>(root.size()); ++t) {
      if (is_live(t) && root[t] == r) out.push_back(t);
    }
    return out;
  }

  /// Norm, activation and add write over an input whose buffer nobody reads afterwards.
  void plan_in_place() {
    for (int i = 0; i < static_cast<int>(graph.ops.size()); ++i) {
      const GraphOp& op = graph.ops[i];
      if (op.kind != OpKind::kInstanceNorm && op.kind != OpKind::kActivation && op.kind != OpKind::kAdd) continue;
      const int y = op.output;
      for (int x : op.inputs) {
        if (tmd[x] != tmd[y]) continue;
        if (op.kind == OpKind::kAdd && op.inputs[0] == op.inputs[1]) break;
        const int rx = root[x];
        if (concat_root[rx] || offset[x] != 0) continue;
        std::vector<int> members = group(rx);
        bool read_later = false;
        for (int m : members) read_later = read_later || last_use(m) > i + 1 || graph.tensors[m].is_graph_output;
        if (read_later) continue;
        // Move x's group to where y lives (y may itself be a slice of a concat buffer).
        for (int m : members) {
          root[m] = root[y];
          offset[m] = offset[y];
        }
        break;
      }
    }
  }

  void build_requests() {
    requests.clear();
    request_root.clear();
    const int n = static_cast<int>(graph.tensors.size());
    for (int r = 0; r < n; ++r) {
      if (!is_live(r) || root[r] != r) continue;
      BufferRequest req;
      req.first_use = n_steps();
      req.last_use = 0;
      std::string names;
      for (int m : group(r)) {
        req.size_bytes = std::max(req.size_bytes, offset[m] + tmd[m].get_size());
        req.first_use = std::min(req.first_use, first_use(m));
        req.last_use = std::max(req.last_use, last_use(m));
        if (names.size() < 200) names += (names.empty() ? "" : " | ") + graph.tensors[m].name;
      }
      req.name = shape_str(graph.tensors[r].shape) + " " + names;
      requests.push_back(std::move(req));
      request_root.push_back(r);
    }
    for (const ExtraBuffer& e : extras) {
      requests.push_back({e.md.get_size(), e.first, e.last, e.name});
      request_root.push_back(-1);
    }
    naive = 0;
    for (int t = 0; t < n; ++t) {
      if (is_live(t)) naive += (tmd[t].get_size() + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
    }
    for (const ExtraBuffer& e : extras) {
      naive += (e.md.get_size() + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
    }
  }

  base::Status allocate_and_bind() {
    const size_t bytes = std::max<size_t>(plan.arena_bytes, 4096);
    arena = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (arena == nullptr) {
      return base::resource_exhausted("cannot allocate the engine arena of " + std::to_string(bytes) + " bytes");
    }
    std::memset(arena, 0, bytes);
    auto* base_ptr = static_cast<char*>(arena);
    std::vector<size_t> root_offset(graph.tensors.size(), 0);
    size_t extra_index = 0;
    for (size_t q = 0; q < requests.size(); ++q) {
      if (request_root[q] >= 0) {
        root_offset[request_root[q]] = plan.offsets[q];
      } else {
        ExtraBuffer& e = extras[extra_index++];
        e.mem = memory(e.md, eng, base_ptr + plan.offsets[q]);
      }
    }
    tmem.assign(graph.tensors.size(), memory());
    for (int t = 0; t < static_cast<int>(graph.tensors.size()); ++t) {
      if (!is_live(t)) continue;
      tmem[t] = memory(tmd[t], eng, base_ptr + root_offset[root[t]] + offset[t]);
    }
    auto resolve = [&](Step& s) {
      if (s.custom_norm) {
        s.norm.data = tmem[s.norm.tensor].get_data_handle();
        s.norm.src = s.norm.src_buffer >= 0 ? extras[s.norm.src_buffer].mem.get_data_handle() : s.norm.data;
      }
      if (s.custom_shuffle) {
        s.shuffle_src = extras[s.shuffle_src_buffer].mem.get_data_handle();
        s.shuffle_dst = tmem[s.shuffle_dst_tensor].get_data_handle();
      }
      s.args.clear();
      for (const ArgSpec& a : s.specs) {
        const memory& m = a.tensor >= 0 ? tmem[a.tensor] : a.buffer >= 0 ? extras[a.buffer].mem : a.fixed;
        s.args.push_back({a.id, m.get()});
      }
    };
    for (Step& s : steps) resolve(s);
    resolve(input_step);
    resolve(output_step);
    return base::ok_status();
  }

  base::Status compile() {
    const size_t nt = graph.tensors.size();
    tmd.assign(nt, memory::desc());
    root.resize(nt);
    offset.assign(nt, 0);
    concat_root.assign(nt, false);
    for (size_t t = 0; t < nt; ++t) root[t] = static_cast<int>(t);
    const auto& in_shape = graph.tensors[graph.input].shape;
    const auto& out_shape = graph.tensors[graph.output].shape;
    try {
      eng = dnnl::engine(dnnl::engine::kind::cpu, 0);
      strm = dnnl::stream(eng);
      isa = isa_traits(cpu_isa_name());
      format = inference::activation_format(isa, dt == memory::data_type::bf16);
      kernel = kernel_isa(isa);
      block = format == ActivationFormat::kBlocked8 ? 8 : format == ActivationFormat::kBlocked16 ? 16 : 1;
      // The input as the first convolutions read it: channels-last in that format (the input
      // copy converts), else plain (blocked convolutions read a plain input with few channels).
      const bool input_fp32 = dt == memory::data_type::f32 || options.bf16_policy.first_conv_fp32;
      const memory::data_type in_type = input_fp32 ? memory::data_type::f32 : dt;
      tmd[graph.input] = format == ActivationFormat::kChannelsLast
                             ? memory::desc(to_dims(in_shape), in_type, channels_last_tag(in_shape.size()))
                             : memory::desc(to_dims(in_shape), in_type, plain_tag(in_shape.size()));
      for (int i = 0; i < static_cast<int>(graph.ops.size()); ++i) {
        add_op(i);
        if (!build_error.ok()) return build_error;
        // The primitive holds its reordered copy: drop the imported weights now, so that the
        // peak during compilation is one copy of the weights plus one layer, not two copies.
        std::vector<float>().swap(graph.ops[i].conv.weights);
      }
      if (options.reuse_memory) plan_in_place();
      // Caller's buffers <-> arena: reorders also convert the precision later (bf16).
      user_in = memory(memory::desc(to_dims(in_shape), memory::data_type::f32, plain_tag(in_shape.size())), eng,
                       DNNL_MEMORY_NONE);
      user_out = memory(memory::desc(to_dims(out_shape), memory::data_type::f32, plain_tag(out_shape.size())), eng,
                        DNNL_MEMORY_NONE);
      auto make_copy = [&](Step& s, const memory::desc& from, const memory::desc& to, int arg_tensor, bool in) {
        dnnl::reorder::primitive_desc pd(eng, from, eng, to, base_attr());
        s.label = in ? "input" : "output";
        s.impl = pd.impl_info_str();
        s.prim = dnnl::reorder(pd);
        if (in) {
          s.specs.push_back({DNNL_ARG_FROM, -1, -1, user_in});
          s.specs.push_back({DNNL_ARG_TO, arg_tensor, -1, {}});
        } else {
          s.specs.push_back({DNNL_ARG_FROM, arg_tensor, -1, {}});
          s.specs.push_back({DNNL_ARG_TO, -1, -1, user_out});
        }
        const int step = in ? 0 : n_steps() - 1;
        if (pd.scratchpad_desc().get_size() > 0) {
          extras.push_back({pd.scratchpad_desc(), step, step, "scratchpad " + s.label, {}});
          s.specs.push_back({DNNL_ARG_SCRATCHPAD, -1, static_cast<int>(extras.size()) - 1, {}});
        }
      };
      make_copy(input_step, user_in.get_desc(), tmd[graph.input], graph.input, true);
      make_copy(output_step, tmd[graph.output], user_out.get_desc(), graph.output, false);
      build_requests();
      plan = options.reuse_memory ? plan_greedy(requests, kArenaAlignment) : plan_linear(requests, kArenaAlignment);
      SB_RETURN_IF_ERROR(verify_no_overlap(requests, plan));
      SB_RETURN_IF_ERROR(allocate_and_bind());
    } catch (const dnnl::error& e) {
      if (dt == memory::data_type::bf16 && e.status == dnnl_unimplemented) {
        return base::unimplemented(std::string("oneDNN has no bf16 implementation for a layer of this network on "
                                               "this CPU (ISA ") + cpu_isa_name() + "): " + e.what() +
                                   "; use --precision fp32");
      }
      return base::internal_error(std::string("oneDNN could not compile the network: ") + e.what() + " (status " +
                                  std::to_string(static_cast<int>(e.status)) + ")");
    }
    // The primitives hold their own (reordered) copies: drop the imported weights.
    for (GraphOp& op : graph.ops) {
      std::vector<float>().swap(op.conv.weights);
    }
    n_threads = openmp_max_threads();
    return base::ok_status();
  }

  base::Status execute(const Step& s) {
    if (s.custom_norm) {
      const NormStep& n = s.norm;
      instance_norm_activation(n.src, n.src_storage, n.data, n.storage, n.channels, n.spatial, n.block, n.scale,
                               n.shift, n.epsilon, n.activation, n.alpha, n.kernel);
      return base::ok_status();
    }
    if (s.custom_shuffle) {
      if (s.shuffle_channels_last) {
        depth_to_space_channels_last(s.shuffle_src, s.shuffle_dst, s.shuffle_c_out, s.shuffle_elem_bytes, s.shuffle_in,
                                     s.shuffle_kernel);
      } else {
        depth_to_space(static_cast<const float*>(s.shuffle_src), static_cast<float*>(s.shuffle_dst), s.shuffle_c_out,
                       s.shuffle_block, s.shuffle_in, s.shuffle_kernel);
      }
      return base::ok_status();
    }
    const dnnl_status_t st = dnnl_primitive_execute(s.prim.get(), strm.get(), static_cast<int>(s.args.size()),
                                                    s.args.data());
    if (st != dnnl_success) {
      return base::internal_error("oneDNN primitive '" + s.label + "' (" + s.impl + ") failed with status " +
                                  std::to_string(static_cast<int>(st)));
    }
    return base::ok_status();
  }
};

CpuEngine::CpuEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuEngine::~CpuEngine() = default;

base::Result<std::unique_ptr<CpuEngine>> CpuEngine::load_onnx(const std::string& onnx_path,
                                                              const EngineOptions& options) {
  SB_RETURN_IF_ERROR(resolve_precision(options.precision).status());
  base::Result<Graph> graph = base::internal_error("unset");
  {  // the imported model (another copy of the weights) is freed before compiling
    SB_ASSIGN_OR_RETURN(OnnxModel model, read_onnx_file(onnx_path));
    graph = build_graph(model, GraphOptions{options.fuse});
  }
  if (!graph.ok()) return graph.status().with_context(onnx_path);
  auto engine = load_graph(std::move(graph).value(), options);
  if (!engine.ok()) return engine.status().with_context(onnx_path);
  return engine;
}

base::Result<std::unique_ptr<CpuEngine>> CpuEngine::load_model(const OnnxModel& model, const EngineOptions& options) {
  // Check the options before the (slow) graph construction.
  SB_RETURN_IF_ERROR(resolve_precision(options.precision).status());
  SB_ASSIGN_OR_RETURN(Graph graph, build_graph(model, GraphOptions{options.fuse}));
  return load_graph(std::move(graph), options);
}

base::Result<std::unique_ptr<CpuEngine>> CpuEngine::load_graph(Graph graph, const EngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  SB_ASSIGN_OR_RETURN(impl->storage, resolve_precision(options.precision));
  if (options.threads < 0) return base::invalid_argument("threads must be >= 0");
  if (options.threads > 0) set_openmp_threads(options.threads);
  if (impl->storage != "fp32") SB_RETURN_IF_ERROR(round_weights_to_fp16(graph));
  // bf16 storage computes in bf16 (resolve_precision checked the CPU); fp16 storage computes
  // in bf16 where the CPU runs it natively, else in fp32 (oneDNN 2.6 has no fp16 on CPUs).
  const bool bf16 = impl->storage == "bf16" || (impl->storage == "fp16" && cpu_has_native_bf16());
  impl->dt = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  impl->graph = std::move(graph);
  SB_RETURN_IF_ERROR(impl->compile());
  return std::unique_ptr<CpuEngine>(new CpuEngine(std::move(impl)));
}

std::string cpu_isa_name() {
#if !defined(__x86_64__)
  // dnnl::cpu_isa names x86 instruction sets only; oneDNN's value on other CPUs is not one of
  // them (read as x86 it would say "sse41" on an Xavier). isa_traits() treats these names as
  // "no JIT convolutions".
#if defined(__aarch64__)
  return "aarch64";
#else
  return "generic";
#endif
#else
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "isa_" + std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa()));
  }
#endif
}

bool cpu_has_native_bf16() {
#if defined(__x86_64__)
  const auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
#else
  return false;  // bf16 convolutions need AVX512-BF16 or AMX in oneDNN 2.6
#endif
}

base::Result<std::string> resolve_precision(const std::string& requested) {
  if (requested == "fp32" || requested == "fp16") return requested;
  if (requested == "auto") return std::string(cpu_has_native_bf16() ? "bf16" : "fp32");
  if (requested == "bf16") {
    if (cpu_has_native_bf16()) return requested;
    return base::unimplemented("precision bf16 needs a CPU with AVX512-BF16 or AMX (oneDNN ISA avx512_core_bf16 or "
                               "avx512_core_amx); this CPU's oneDNN ISA is " + cpu_isa_name() +
                               ". Use --precision fp32, fp16 (fp16 weights, fp32 compute) or auto");
  }
  return base::invalid_argument("unknown precision '" + requested + "' (expected fp32, bf16, fp16 or auto)");
}

base::Status round_weights_to_fp16(Graph& graph) {
  for (GraphOp& op : graph.ops) {
    for (float& w : op.conv.weights) {
      if (!(std::fabs(w) <= kFp16Max)) {
        return base::invalid_argument("weight " + std::to_string(w) + " of node '" + op.name +
                                      "' does not fit fp16 (|w| <= 65504); use precision fp32");
      }
      w = fp16_to_float(float_to_fp16(w));
    }
  }
  return base::ok_status();
}

std::array<int64_t, 5> CpuEngine::input_shape() const {
  const auto& s = impl_->graph.tensors[impl_->graph.input].shape;
  if (s.size() == 5) return {s[0], s[1], s[2], s[3], s[4]};
  return {s[0], s[1], 1, s[2], s[3]};
}

std::array<int64_t, 5> CpuEngine::output_shape() const {
  const auto& s = impl_->graph.tensors[impl_->graph.output].shape;
  if (s.size() == 5) return {s[0], s[1], s[2], s[3], s[4]};
  return {s[0], s[1], 1, s[2], s[3]};
}

std::string CpuEngine::precision() const {
  if (impl_->storage == "fp16") return "fp16-weights/" + compute_precision() + "-compute";
  return impl_->storage;
}
std::string CpuEngine::storage_precision() const { return impl_->storage; }
std::string CpuEngine::compute_precision() const {
  return impl_->dt == dnnl::memory::data_type::bf16 ? "bf16" : "fp32";
}
ActivationFormat CpuEngine::activation_format() const { return impl_->format; }
const std::vector<BufferRequest>& CpuEngine::plan_requests() const { return impl_->requests; }
const MemoryPlan& CpuEngine::memory_plan() const { return impl_->plan; }

void CpuEngine::enable_profiling(bool on) {
  impl_->profiling = on;
  impl_->profiled_runs = 0;
  impl_->step_seconds.assign(impl_->steps.size() + 2, 0.0);
}

std::string CpuEngine::profile_report() const {
  const Impl& m = *impl_;
  if (m.profiled_runs == 0) return "no profiled runs\n";
  // Sum the steps of each graph op (conv + its norm + activation + reorders).
  const size_t n_ops = m.graph.ops.size();
  std::vector<double> per_op(n_ops + 2, 0.0);  // + input copy, output copy
  for (size_t k = 0; k < m.steps.size(); ++k) per_op[m.steps[k].op] += m.step_seconds[k];
  per_op[n_ops] = m.step_seconds[m.steps.size()];
  per_op[n_ops + 1] = m.step_seconds[m.steps.size() + 1];
  double total = 0.0;
  for (double t : per_op) total += t;
  std::vector<size_t> order(per_op.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return per_op[a] > per_op[b]; });
  std::ostringstream os;
  char line[320];
  std::snprintf(line, sizeof(line), "profile: %d runs, %.3f s per run (sum of steps), precision %s\n",
                m.profiled_runs, total / m.profiled_runs, precision().c_str());
  os << line;
  std::snprintf(line, sizeof(line), "  %-5s %-30s %-22s %-22s %10s %7s %9s\n", "op", "kind", "input", "output",
                "ms/run", "share", "GFLOP/s");
  os << line;
  const auto& g = m.graph;
  for (size_t i : order) {
    std::string kind, in, out;
    double gflop = 0.0;
    if (i < n_ops) {
      const GraphOp& op = g.ops[i];
      kind = std::string(op_kind_name(op.kind));
      if (op.has_norm && op.kind != OpKind::kInstanceNorm) kind += "+instance_norm";
      if (op.activation != Activation::kNone) kind += "+" + std::string(activation_name(op.activation));
      in = shape_str(g.tensors[op.inputs[0]].shape);
      out = shape_str(g.tensors[op.output].shape);
      gflop = 2.0 * op.macs(g.tensors) / 1e9;
    } else {
      kind = i == n_ops ? "input copy" : "output copy";
    }
    const double ms = per_op[i] / m.profiled_runs * 1e3;
    const double rate = per_op[i] > 0 ? gflop * m.profiled_runs / per_op[i] : 0.0;
    std::snprintf(line, sizeof(line), "  %-5s %-30s %-22s %-22s %10.2f %6.1f%% %9.1f\n",
                  i < n_ops ? ("#" + std::to_string(i)).c_str() : "-", kind.c_str(), in.c_str(), out.c_str(), ms,
                  total > 0 ? 100.0 * per_op[i] / total : 0.0, rate);
    os << line;
  }
  // Where the time goes by kind of step (conv, fused norm, depth-to-space, reorders, ...).
  std::vector<std::pair<std::string, double>> by_label;
  for (size_t k = 0; k < m.steps.size(); ++k) {
    const std::string label = m.steps[k].label + " (" + m.steps[k].impl + ")";
    auto it = std::find_if(by_label.begin(), by_label.end(), [&](const auto& p) { return p.first == label; });
    if (it == by_label.end()) {
      by_label.emplace_back(label, m.step_seconds[k]);
    } else {
      it->second += m.step_seconds[k];
    }
  }
  std::stable_sort(by_label.begin(), by_label.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  os << "  by step kind:\n";
  for (const auto& [label, sec] : by_label) {
    std::snprintf(line, sizeof(line), "    %-52s %10.2f ms/run %6.1f%%\n", label.c_str(), sec / m.profiled_runs * 1e3,
                  total > 0 ? 100.0 * sec / total : 0.0);
    os << line;
  }
  return os.str();
}

base::Status CpuEngine::run(const float* input, float* output) {
  Impl& m = *impl_;
  if (input == nullptr || output == nullptr) return base::invalid_argument("run: null input or output buffer");
  // Both calls only store the pointer for plain layouts (no zero padding, no allocation).
  m.user_in.set_data_handle(const_cast<float*>(input));
  m.user_out.set_data_handle(output);
  if (m.profiling) {
    using clock = std::chrono::steady_clock;
    auto timed = [&](const Impl::Step& s, size_t k) -> base::Status {
      const auto t0 = clock::now();
      SB_RETURN_IF_ERROR(m.execute(s));
      dnnl_stream_wait(m.strm.get());
      m.step_seconds[k] += std::chrono::duration<double>(clock::now() - t0).count();
      return base::ok_status();
    };
    SB_RETURN_IF_ERROR(timed(m.input_step, m.steps.size()));
    for (size_t k = 0; k < m.steps.size(); ++k) SB_RETURN_IF_ERROR(timed(m.steps[k], k));
    SB_RETURN_IF_ERROR(timed(m.output_step, m.steps.size() + 1));
    ++m.profiled_runs;
  } else {
    SB_RETURN_IF_ERROR(m.execute(m.input_step));
    for (const auto& s : m.steps) SB_RETURN_IF_ERROR(m.execute(s));
    SB_RETURN_IF_ERROR(m.execute(m.output_step));
  }
  const dnnl_status_t st = dnnl_stream_wait(m.strm.get());
  if (st != dnnl_success) return base::internal_error("oneDNN stream wait failed");
  return base::ok_status();
}

size_t CpuEngine::arena_bytes() const { return impl_->plan.arena_bytes; }
size_t CpuEngine::naive_bytes() const { return impl_->naive; }
size_t CpuEngine::weight_bytes() const { return impl_->weights_bytes; }
double CpuEngine::gflop_per_run() const { return impl_->graph.gflop(); }

std::string CpuEngine::describe() const {
  const Impl& m = *impl_;
  std::ostringstream os;
  char line[256];
  const auto& g = m.graph;
  os << "engine: cpu (oneDNN " << dnnl_version()->major << "." << dnnl_version()->minor << "."
     << dnnl_version()->patch << "), precision " << precision() << " (ISA " << m.isa.onednn_isa << "), "
     << m.n_threads << " threads\n";
  os << "activations " << activation_format_name(m.format) << ", hand-written kernels " << kernel_isa_name(m.kernel);
  if (m.dt == dnnl::memory::data_type::bf16) {
    os << ", bf16 policy: first convolutions " << (m.options.bf16_policy.first_conv_fp32 ? "fp32" : "bf16")
       << ", head output " << (m.options.bf16_policy.head_fp32_output ? "fp32" : "bf16");
  }
  os << "\n";
  os << "input " << shape_str(g.tensors[g.input].shape) << " '" << g.tensors[g.input].name << "', output "
     << shape_str(g.tensors[g.output].shape) << " '" << g.tensors[g.output].name << "'\n";
  std::snprintf(line, sizeof(line), "%.3f GFLOP per run (conv + deconv, 2 x MACs), weights %.2f MiB\n",
                g.gflop(), m.weights_bytes / 1048576.0);
  os << line << "\nlayers:\n";
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const GraphOp& op = g.ops[i];
    std::string kind(op_kind_name(op.kind));
    if (op.has_norm && op.kind != OpKind::kInstanceNorm) kind += "+instance_norm";
    if (op.activation != Activation::kNone) kind += "+" + std::string(activation_name(op.activation));
    std::string ins;
    for (int t : op.inputs) ins += (ins.empty() ? "" : " + ") + shape_str(g.tensors[t].shape);
    std::string impls;
    for (const auto& s : m.steps) {
      if (s.op == static_cast<int>(i)) impls += (impls.empty() ? "" : ", ") + s.label + ":" + s.impl;
    }
    if (impls.empty()) impls = "free (slices of one buffer)";
    std::snprintf(line, sizeof(line), "  #%-3zu %-28s %-34s -> %-18s %-8s %6.3f GFLOP  ", i, kind.c_str(),
                  ins.c_str(), shape_str(g.tensors[op.output].shape).c_str(),
                  layout_str(m.tmd[op.output]).c_str(), 2.0 * op.macs(g.tensors) / 1e9);
    os << line << impls << "  [" << op.name << "]\n";
  }
  os << "\nmemory plan (" << (m.options.reuse_memory ? "greedy" : "linear") << "):\n";
  os << format_plan(m.requests, m.plan);
  std::snprintf(line, sizeof(line),
                "arena %.2f MiB vs %.2f MiB naive sum of all tensors and scratchpads (no reuse, no in-place, "
                "no free concat)\n",
                m.plan.arena_bytes / 1048576.0, m.naive / 1048576.0);
  os << line;
  return os.str();
}

}  // namespace inference
