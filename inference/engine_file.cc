#include "inference/engine_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/log.h"
#include "inference/onnx_model.h"

namespace inference {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kMagic[8] = {'S', 'B', 'E', 'N', 'G', 'I', 'N', 'E'};
// magic, u32 version, u32 reserved, u64 json length, u64 blob length.
constexpr size_t kPrefixBytes = 8 + 4 + 4 + 8 + 8;
constexpr size_t kChecksumBytes = 8;

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(b, sizeof(T));
}
template <typename T>
T get(const std::string& in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(T));
  return v;
}

/// Appends float arrays to the weight blob and returns their JSON references {o, n, t}.
struct BlobWriter {
  std::string blob;
  json add(const std::vector<float>& v, bool fp16) {
    while (blob.size() % 64) blob.push_back('\0');
    json ref = {{"o", blob.size()}, {"n", v.size()}, {"t", fp16 ? "f16" : "f32"}};
    if (fp16) {
      for (float f : v) put<uint16_t>(blob, float_to_fp16(f));
    } else {
      blob.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
    }
    return ref;
  }
};

base::Result<std::vector<float>> read_array(const std::string& bytes, size_t blob_at, size_t blob_len,
                                            const json& ref) {
  const size_t o = ref.at("o").get<size_t>();
  const size_t n = ref.at("n").get<size_t>();
  const std::string t = ref.at("t").get<std::string>();
  const size_t elem = t == "f16" ? 2 : t == "f32" ? 4 : 0;
  if (elem == 0) return base::data_loss("unknown array type '" + t + "'");
  if (o > blob_len || n > (blob_len - o) / elem) return base::data_loss("array outside the weight section");
  std::vector<float> v(n);
  const char* p = bytes.data() + blob_at + o;
  if (elem == 4) {
    std::memcpy(v.data(), p, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      v[i] = fp16_to_float(h);
    }
  }
  return v;
}

json header_to_json(const EngineFileHeader& h) {
  return {{"format_version", h.format_version}, {"model_hash", h.model_hash},
          {"onnx_name", h.onnx_name},           {"backend", h.backend},
          {"precision", h.precision},           {"compute_precision", h.compute_precision},
          {"weight_storage", h.weight_storage}, {"cpu_features", h.cpu_features},
          {"input_shape", h.input_shape},       {"output_shape", h.output_shape},
          {"arena_bytes", h.arena_bytes},       {"naive_bytes", h.naive_bytes}};
}

EngineFileHeader header_from_json(const json& j) {
  EngineFileHeader h;
  h.format_version = j.at("format_version").get<uint32_t>();
  h.model_hash = j.at("model_hash").get<std::string>();
  h.onnx_name = j.at("onnx_name").get<std::string>();
  h.backend = j.at("backend").get<std::string>();
  h.precision = j.at("precision").get<std::string>();
  h.compute_precision = j.at("compute_precision").get<std::string>();
  h.weight_storage = j.at("weight_storage").get<std::string>();
  h.cpu_features = j.at("cpu_features").get<std::vector<std::string>>();
  h.input_shape = j.at("input_shape").get<std::vector<int64_t>>();
  h.output_shape = j.at("output_shape").get<std::vector<int64_t>>();
  h.arena_bytes = j.at("arena_bytes").get<size_t>();
  h.naive_bytes = j.at("naive_bytes").get<size_t>();
  return h;
}

std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof(b), "%016llx", static_cast<unsigned long long>(v));
  return b;
}

base::Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return base::not_found("cannot open " + path);
  std::ostringstream os;
  os << f.rdbuf();
  if (f.bad()) return base::data_loss("read error in " + path);
  return os.str();
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
base::Status write_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return base::internal_error("cannot create " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return base::internal_error("cannot write " + tmp + ": " + err);
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return base::internal_error("cannot flush " + tmp + ": " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return base::internal_error("cannot rename " + tmp + " to " + path + ": " + err);
  }
  return base::ok_status();
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out.empty() ? "(none)" : out;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

uint16_t float_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN, inf
  if (abs >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {                       // below the smallest normal fp16 (2^-14)
    if (abs < 0x33000000u) return sign;          // below half the smallest subnormal: zero
    // Subnormal: mantissa with the implicit bit, shifted; round to nearest even.
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 113 - e + 13
    const uint32_t half = m >> shift;
    const uint32_t rest = m & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    const uint32_t r = half + (rest > mid || (rest == mid && (half & 1u)));
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: rebias the exponent (127 -> 15), round the mantissa from 23 to 10 bits.
  const uint32_t v = abs - 0x38000000u;  // exponent - 112
  const uint32_t rest = v & 0x1fffu;
  uint32_t h = v >> 13;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carry into the exponent is right
  return sign | static_cast<uint16_t>(h);
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  uint32_t x;
  if (e == 0x1f) {
    x = sign | 0x7f800000u | (m << 13);
  } else if (e != 0) {
    x = sign | ((e + 112) << 23) | (m << 13);
  } else if (m == 0) {
    x = sign;
  } else {  // subnormal: normalize
    int shift = 0;
    while (!(m & 0x400u)) {
      m <<= 1;
      ++shift;
    }
    x = sign | (static_cast<uint32_t>(113 - shift) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint64_t fnv1a64(const void* data, size_t size, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string model_hash(const std::string& onnx_bytes) {
  return "fnv1a64:" + hex64(fnv1a64(onnx_bytes.data(), onnx_bytes.size()));
}

std::vector<std::string> required_cpu_features(const std::string& storage_precision) {
  std::vector<std::string> f = {"onednn_isa:" + cpu_isa_name()};
  if (storage_precision == "bf16") f.push_back("bf16");
  return f;
}

base::Result<std::string> serialize_engine(const Graph& graph, const EngineFileHeader& header,
                                           const std::vector<BufferRequest>& requests, const MemoryPlan& plan) {
  const bool fp16 = header.weight_storage == "fp16";
  BlobWriter blob;
  json tensors = json::array();
  for (const GraphTensor& t : graph.tensors) {
    tensors.push_back({{"name", t.name},
                       {"shape", t.shape},
                       {"producer", t.producer},
                       {"consumers", t.consumers},
                       {"in", t.is_graph_input},
                       {"out", t.is_graph_output}});
  }
  json ops = json::array();
  for (const GraphOp& op : graph.ops) {
    if (fp16) {
      for (float w : op.conv.weights) {
        if (!(std::fabs(w) <= kFp16Max)) {
          return base::invalid_argument("weight of node '" + op.name + "' does not fit fp16; build in fp32");
        }
      }
    }
    json o = {{"kind", static_cast<int>(op.kind)},
              {"name", op.name},
              {"onnx_nodes", op.onnx_nodes},
              {"inputs", op.inputs},
              {"output", op.output},
              {"has_norm", op.has_norm},
              {"activation", static_cast<int>(op.activation)},
              {"alpha", op.alpha},
              {"axis", op.axis}};
    if (op.kind == OpKind::kConv || op.kind == OpKind::kConvTranspose) {
      o["conv"] = {{"kernel", op.conv.kernel},         {"strides", op.conv.strides},
                   {"pads_begin", op.conv.pads_begin}, {"pads_end", op.conv.pads_end},
                   {"weight_dims", op.conv.weight_dims}, {"weights", blob.add(op.conv.weights, fp16)},
                   {"bias", blob.add(op.conv.bias, false)}};
    }
    if (op.kind == OpKind::kAvgPool) {
      o["pool"] = {{"kernel", op.conv.kernel},         {"strides", op.conv.strides},
                   {"pads_begin", op.conv.pads_begin}, {"pads_end", op.conv.pads_end},
                   {"count_include_pad", op.count_include_pad}};
    }
    if (op.has_norm) {
      o["norm"] = {{"scale", blob.add(op.norm.scale, false)},
                   {"shift", blob.add(op.norm.shift, false)},
                   {"epsilon", op.norm.epsilon}};
    }
    ops.push_back(std::move(o));
  }
  json buffers = json::array();
  for (size_t i = 0; i < requests.size(); ++i) {
    buffers.push_back({{"size", requests[i].size_bytes},
                       {"first", requests[i].first_use},
                       {"last", requests[i].last_use},
                       {"name", requests[i].name},
                       {"offset", i < plan.offsets.size() ? plan.offsets[i] : 0}});
  }
  json doc = {{"header", header_to_json(header)},
              {"graph",
               {{"input", graph.input}, {"output", graph.output}, {"opset", graph.opset}, {"tensors", tensors},
                {"ops", ops}}},
              {"plan", {{"alignment", plan.alignment}, {"arena_bytes", plan.arena_bytes}, {"buffers", buffers}}}};
  const std::string text = doc.dump();
  std::string out;
  out.reserve(kPrefixBytes + text.size() + blob.blob.size() + kChecksumBytes);
  out.append(kMagic, sizeof(kMagic));
  put<uint32_t>(out, header.format_version);
  put<uint32_t>(out, 0);
  put<uint64_t>(out, text.size());
  put<uint64_t>(out, blob.blob.size());
  out += text;
  out += blob.blob;
  put<uint64_t>(out, fnv1a64(out.data(), out.size()));
  return out;
}

base::Result<std::string> serialize_engine(const Graph& graph, const CpuEngine& engine, const std::string& onnx_bytes,
                                           const std::string& onnx_name) {
  EngineFileHeader h;
  h.model_hash = model_hash(onnx_bytes);
  h.onnx_name = onnx_name;
  h.backend = engine.backend();
  h.precision = engine.storage_precision();
  h.compute_precision = engine.compute_precision();
  h.weight_storage = h.precision == "fp32" ? "fp32" : "fp16";
  h.cpu_features = required_cpu_features(h.precision);
  h.input_shape = graph.tensors[graph.input].shape;
  h.output_shape = graph.tensors[graph.output].shape;
  h.arena_bytes = engine.arena_bytes();
  h.naive_bytes = engine.naive_bytes();
  return serialize_engine(graph, h, engine.plan_requests(), engine.memory_plan());
}

base::Result<EngineFileContents> parse_engine_file(const std::string& bytes) {
  if (bytes.size() < kPrefixBytes || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return base::data_loss("not a strokebox engine file (bad magic or shorter than its header)");
  }
  const uint32_t version = get<uint32_t>(bytes, 8);
  if (version != kEngineFormatVersion) {
    return base::failed_precondition("engine file format version " + std::to_string(version) +
                                     ", this build reads version " + std::to_string(kEngineFormatVersion));
  }
  const uint64_t json_len = get<uint64_t>(bytes, 16);
  const uint64_t blob_len = get<uint64_t>(bytes, 24);
  const uint64_t limit = uint64_t{1} << 40;
  if (json_len > limit || blob_len > limit) return base::data_loss("engine file section lengths are corrupt");
  const uint64_t expected = kPrefixBytes + json_len + blob_len + kChecksumBytes;
  if (bytes.size() != expected) {
    return base::data_loss("engine file is " + std::string(bytes.size() < expected ? "truncated" : "too long") +
                           ": " + std::to_string(bytes.size()) + " bytes, its header says " +
                           std::to_string(expected));
  }
  const uint64_t stored = get<uint64_t>(bytes, bytes.size() - kChecksumBytes);
  const uint64_t actual = fnv1a64(bytes.data(), bytes.size() - kChecksumBytes);
  if (stored != actual) {
    return base::data_loss("engine file checksum mismatch (stored " + hex64(stored) + ", computed " + hex64(actual) +
                           "): the file is corrupt");
  }
  EngineFileContents c;
  try {
    const json doc = json::parse(bytes.substr(kPrefixBytes, json_len));
    c.header = header_from_json(doc.at("header"));
    const size_t blob_at = kPrefixBytes + json_len;
    const json& g = doc.at("graph");
    c.graph.input = g.at("input").get<int>();
    c.graph.output = g.at("output").get<int>();
    c.graph.opset = g.at("opset").get<int64_t>();
    for (const json& t : g.at("tensors")) {
      GraphTensor gt;
      gt.name = t.at("name").get<std::string>();
      gt.shape = t.at("shape").get<std::vector<int64_t>>();
      gt.producer = t.at("producer").get<int>();
      gt.consumers = t.at("consumers").get<std::vector<int>>();
      gt.is_graph_input = t.at("in").get<bool>();
      gt.is_graph_output = t.at("out").get<bool>();
      c.graph.tensors.push_back(std::move(gt));
    }
    const int nt = static_cast<int>(c.graph.tensors.size());
    auto tensor_ok = [nt](int t) { return t >= 0 && t < nt; };
    if (!tensor_ok(c.graph.input) || !tensor_ok(c.graph.output)) return base::data_loss("bad graph input/output");
    for (const json& o : g.at("ops")) {
      GraphOp op;
      const int kind = o.at("kind").get<int>();
      const int act = o.at("activation").get<int>();
      if (kind < 0 || kind > static_cast<int>(OpKind::kAvgPool) || act < 0 ||
          act > static_cast<int>(Activation::kSigmoid)) {
        return base::data_loss("unknown op kind or activation in the engine file");
      }
      op.kind = static_cast<OpKind>(kind);
      op.activation = static_cast<Activation>(act);
      op.name = o.at("name").get<std::string>();
      op.onnx_nodes = o.at("onnx_nodes").get<std::vector<std::string>>();
      op.inputs = o.at("inputs").get<std::vector<int>>();
      op.output = o.at("output").get<int>();
      op.has_norm = o.at("has_norm").get<bool>();
      op.alpha = o.at("alpha").get<float>();
      op.axis = o.at("axis").get<int>();
      for (int t : op.inputs) {
        if (!tensor_ok(t)) return base::data_loss("op '" + op.name + "' refers to a missing tensor");
      }
      if (!tensor_ok(op.output)) return base::data_loss("op '" + op.name + "' refers to a missing tensor");
      if (o.contains("conv")) {
        const json& cv = o.at("conv");
        op.conv.kernel = cv.at("kernel").get<std::vector<int64_t>>();
        op.conv.strides = cv.at("strides").get<std::vector<int64_t>>();
        op.conv.pads_begin = cv.at("pads_begin").get<std::vector<int64_t>>();
        op.conv.pads_end = cv.at("pads_end").get<std::vector<int64_t>>();
        op.conv.weight_dims = cv.at("weight_dims").get<std::vector<int64_t>>();
        SB_ASSIGN_OR_RETURN(op.conv.weights, read_array(bytes, blob_at, blob_len, cv.at("weights")));
        SB_ASSIGN_OR_RETURN(op.conv.bias, read_array(bytes, blob_at, blob_len, cv.at("bias")));
        int64_t n = 1;
        for (int64_t d : op.conv.weight_dims) n *= d;
        if (n != static_cast<int64_t>(op.conv.weights.size())) {
          return base::data_loss("weights of op '" + op.name + "' do not match their dims");
        }
      }
      if (op.kind == OpKind::kAvgPool) {
        const json& pl = o.at("pool");
        op.conv.kernel = pl.at("kernel").get<std::vector<int64_t>>();
        op.conv.strides = pl.at("strides").get<std::vector<int64_t>>();
        op.conv.pads_begin = pl.at("pads_begin").get<std::vector<int64_t>>();
        op.conv.pads_end = pl.at("pads_end").get<std::vector<int64_t>>();
        op.count_include_pad = pl.at("count_include_pad").get<bool>();
        const size_t sp = c.graph.tensors[op.output].shape.size() - 2;
        if (op.conv.kernel.size() != sp || op.conv.strides.size() != sp || op.conv.pads_begin.size() != sp ||
            op.conv.pads_end.size() != sp) {
          return base::data_loss("pooling geometry of op '" + op.name + "' does not match its rank");
        }
      }
      if (op.has_norm) {
        const json& nm = o.at("norm");
        SB_ASSIGN_OR_RETURN(op.norm.scale, read_array(bytes, blob_at, blob_len, nm.at("scale")));
        SB_ASSIGN_OR_RETURN(op.norm.shift, read_array(bytes, blob_at, blob_len, nm.at("shift")));
        op.norm.epsilon = nm.at("epsilon").get<float>();
      }
      c.graph.ops.push_back(std::move(op));
    }
    const json& p = doc.at("plan");
    c.plan.alignment = p.at("alignment").get<size_t>();
    c.plan.arena_bytes = p.at("arena_bytes").get<size_t>();
    for (const json& b : p.at("buffers")) {
      c.requests.push_back({b.at("size").get<size_t>(), b.at("first").get<int>(), b.at("last").get<int>(),
                            b.at("name").get<std::string>()});
      c.plan.offsets.push_back(b.at("offset").get<size_t>());
    }
  } catch (const json::exception& e) {
    return base::data_loss(std::string("malformed engine file description: ") + e.what());
  }
  return c;
}

base::Result<std::unique_ptr<CpuEngine>> load_engine_file(const std::string& path,
                                                          const std::string& expected_model_hash,
                                                          const EngineOptions& options) {
  auto fail = [&](const base::Status& s) { return s.with_context("engine file " + path + " (rebuild it)"); };
  SB_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  auto parsed = parse_engine_file(bytes);
  if (!parsed.ok()) return fail(parsed.status());
  EngineFileContents c = std::move(parsed).value();
  std::string().swap(bytes);
  const EngineFileHeader& h = c.header;
  if (h.backend != "cpu") return fail(base::failed_precondition("built for backend '" + h.backend + "', not cpu"));
  if (!expected_model_hash.empty() && h.model_hash != expected_model_hash) {
    return fail(base::failed_precondition("built from another model (hash " + h.model_hash + ", the ONNX file has " +
                                          expected_model_hash + ")"));
  }
  if (options.precision != "auto" && options.precision != h.precision) {
    return fail(base::failed_precondition("holds precision " + h.precision + ", " + options.precision +
                                          " was requested"));
  }
  const std::vector<std::string> here = required_cpu_features(h.precision);
  if (h.cpu_features != here) {
    return fail(base::failed_precondition("built for CPU features " + join(h.cpu_features) + ", this CPU has " +
                                          join(here)));
  }
  EngineOptions o = options;
  o.precision = h.precision;
  auto engine = CpuEngine::load_graph(std::move(c.graph), o);
  if (!engine.ok()) return fail(engine.status());
  const MemoryPlan& plan = (*engine)->memory_plan();
  const auto& req = (*engine)->plan_requests();
  bool same = plan.offsets == c.plan.offsets && plan.arena_bytes == c.plan.arena_bytes && req.size() == c.requests.size();
  for (size_t i = 0; same && i < req.size(); ++i) {
    same = req[i].size_bytes == c.requests[i].size_bytes && req[i].first_use == c.requests[i].first_use &&
           req[i].last_use == c.requests[i].last_use;
  }
  if (!same) {
    return fail(base::failed_precondition("the memory plan compiled here (arena " + std::to_string(plan.arena_bytes) +
                                          " bytes) differs from the stored one (" +
                                          std::to_string(c.plan.arena_bytes) + " bytes): another oneDNN or options"));
  }
  return engine;
}

std::string engine_path_for(const std::string& onnx_path, const std::string& storage_precision) {
  const fs::path p(onnx_path);
  const std::string file = "cpu-" + storage_precision + ".engine";
  if (p.filename() == "model.onnx") return (p.parent_path() / file).string();
  return (p.parent_path() / (p.stem().string() + "." + file)).string();
}

namespace {

base::Result<std::unique_ptr<CpuEngine>> build_from_bytes(const std::string& onnx_path, const std::string& onnx_bytes,
                                                          const std::string& engine_path,
                                                          const EngineOptions& options, bool write_errors_fatal) {
  SB_RETURN_IF_ERROR(resolve_precision(options.precision).status());
  base::Result<Graph> graph = base::internal_error("unset");
  {  // the imported model (a copy of the weights) is freed at the end of this scope
    auto model = parse_onnx_model(onnx_bytes);
    if (!model.ok()) return model.status().with_context(onnx_path);
    graph = build_graph(*model, GraphOptions{options.fuse});
  }
  if (!graph.ok()) return graph.status().with_context(onnx_path);
  Graph kept = *graph;
  auto engine = CpuEngine::load_graph(std::move(graph).value(), options);
  if (!engine.ok()) return engine.status().with_context(onnx_path);
  // The file holds what the engine computes with: fp16-rounded weights for reduced precisions.
  if ((*engine)->storage_precision() != "fp32") SB_RETURN_IF_ERROR(round_weights_to_fp16(kept));
  auto bytes = serialize_engine(kept, **engine, onnx_bytes, fs::path(onnx_path).filename().string());
  if (!bytes.ok()) return bytes.status().with_context(onnx_path);
  const base::Status written = write_atomically(engine_path, *bytes);
  if (!written.ok()) {
    if (write_errors_fatal) return written;
    SB_LOG(kWarning) << "engine built but not cached: " << written.to_string();
  }
  return engine;
}

}  // namespace

base::Result<std::unique_ptr<CpuEngine>> build_engine_file(const std::string& onnx_path,
                                                           const std::string& engine_path,
                                                           const EngineOptions& options) {
  SB_ASSIGN_OR_RETURN(std::string onnx_bytes, read_file(onnx_path));
  return build_from_bytes(onnx_path, onnx_bytes, engine_path, options, true);
}

base::Result<std::unique_ptr<CpuEngine>> load_or_build_engine(const std::string& onnx_path,
                                                              const EngineOptions& options, bool* built) {
  if (built != nullptr) *built = false;
  SB_ASSIGN_OR_RETURN(const std::string storage, resolve_precision(options.precision));
  SB_ASSIGN_OR_RETURN(std::string onnx_bytes, read_file(onnx_path));
  const std::string path = engine_path_for(onnx_path, storage);
  EngineOptions o = options;
  o.precision = storage;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    auto engine = load_engine_file(path, model_hash(onnx_bytes), o);
    if (engine.ok()) {
      SB_LOG(kInfo) << "engine loaded from " << path;
      return engine;
    }
    SB_LOG(kWarning) << "engine file not usable, rebuilding: " << engine.status().to_string();
  }
  SB_LOG(kInfo) << "building engine " << path << " from " << onnx_path;
  auto engine = build_from_bytes(onnx_path, onnx_bytes, path, o, false);
  if (engine.ok() && built != nullptr) *built = true;
  return engine;
}

std::string describe_engine_file(const EngineFileContents& c) {
  const EngineFileHeader& h = c.header;
  std::ostringstream os;
  os << "engine file format " << h.format_version << ", backend " << h.backend << ", precision " << h.precision
     << " (compute " << h.compute_precision << ", weights stored " << h.weight_storage << ")\n";
  os << "model " << h.onnx_name << " hash " << h.model_hash << "\n";
  os << "cpu features required: " << join(h.cpu_features) << "\n";
  os << "input " << shape_str(h.input_shape) << ", output " << shape_str(h.output_shape) << "\n";
  char line[160];
  std::snprintf(line, sizeof(line), "arena %.2f MiB (naive sum %.2f MiB), %.3f GFLOP per run\n",
                h.arena_bytes / 1048576.0, h.naive_bytes / 1048576.0, c.graph.gflop());
  os << line << "\ngraph after fusion:\n" << c.graph.describe() << "\nstored memory plan:\n"
     << format_plan(c.requests, c.plan);
  return os.str();
}

}  // namespace inference
