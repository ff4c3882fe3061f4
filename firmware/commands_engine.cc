// `strokebox engine build|info|bench`: compile a model package's networks into engine files
// (inference/engine_file.h), describe an engine file or ONNX model, time forward passes
// (optionally with a per-layer profile).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "inference/cpu_engine.h"
#include "inference/engine_file.h"
#include "inference/model_spec.h"
#include "inference/sliding_window.h"

namespace firmware {
namespace {

constexpr const char* kEngineUsage = R"(Usage: strokebox engine <verb> [options]

Verbs:
  build  --model DIR [--precision fp32|bf16|fp16|auto] [--threads N]
         compiles every network of a model package into an engine file beside it
  info   FILE.engine | --onnx FILE [--precision P] [--threads N] [--linear-plan]
         layers with shapes and oneDNN implementations, the memory plan, the arena size
  bench  --onnx FILE | --engine FILE [--precision P] [--runs N] [--warmup N] [--threads N] [--profile]
         [--sliding-window D,H,W [--mirroring]]
         times forward passes on random input; prints one JSON object (and a per-layer profile)

`strokebox engine <verb> --help` for details.
)";

constexpr const char* kBuildUsage = R"(Usage: strokebox engine build --model DIR [--precision fp32|bf16|fp16|auto] [--threads N]

Compiles each network listed in DIR/model.json into an engine file beside it:
`cpu-<precision>.engine` for `model.onnx`, `<stem>.cpu-<precision>.engine` for any other
network (e.g. fold_0.cpu-fp32.engine). The file holds the model hash, precision, CPU
features, shapes, the fused graph, the memory plan and the weights (fp16 for bf16/fp16).
  --precision P  fp32 (default); bf16 (needs AVX512-BF16 or AMX); fp16 (fp16 weights,
                 computed in bf16 where native, else fp32); auto (bf16 where native, else fp32)
Exit codes: 0 ok, 1 a network could not be compiled or written, 2 bad usage.
)";

constexpr const char* kInfoUsage = R"(Usage: strokebox engine info FILE.engine
       strokebox engine info --onnx FILE [--precision P] [--threads N] [--linear-plan]

With an engine file: prints its header (model hash, precision, CPU features, shapes), then
loads it and prints the compiled layers and the memory plan; when it cannot be loaded on this
CPU, prints the stored graph and plan and the reason.
With --onnx: loads a fixed-shape ONNX model into the CPU engine (oneDNN) and prints its
layers (fused ops, shapes, output layout, GFLOP, oneDNN implementation), the static memory
plan (offset, size, lifetime of every buffer) and the arena size against the naive sum.
  --precision P    fp32 (default), bf16, fp16 or auto
  --threads N      OpenMP threads for oneDNN, 0 = all cores (default)
  --linear-plan    never reuse memory (debugging)
Exit codes: 0 ok, 1 the model could not be loaded, 2 bad usage.
)";

constexpr const char* kBenchUsage = R"(Usage: strokebox engine bench --onnx FILE | --engine FILE [--precision P] [--runs N] [--warmup N] [--threads N] [--profile] [--sliding-window D,H,W [--mirroring]]

Times CpuEngine::run() on a fixed pseudo-random input and prints one JSON object:
  backend, precision, onnx, input_shape, output_shape, threads, runs, warmup,
  median_s, min_s, mean_s, median_cpu_s (process CPU time per run, all threads), load_s, gflop (conv + deconv, 2 x MACs per run),
  gflop_per_s (at the median), arena_mib, naive_mib, weights_mib,
  peak_rss_mib (VmHWM from /proc/self/status).
  --runs N      timed runs (default 10)
  --warmup N    untimed runs first (default 2)
  --profile     also time each layer (after the timed runs, over `runs` more runs) and print
                the per-layer table on stderr, slowest first
  --precision P fp32 (default), bf16, fp16 or auto (with --onnx)
  --sliding-window D,H,W  also run nnU-Net's sliding window (step 0.5, Gaussian) over a random
                volume of that size and add "sliding_window": tiles, network runs, seconds in
                the network and around it (gather, mirroring, Gaussian accumulation,
                padding), and the overhead in percent of the network time
  --mirroring   with --sliding-window: test-time mirroring over all 3 axes
Exit codes: 0 ok, 1 the model could not be loaded or run, 2 bad usage.
)";

/// Peak resident set size (VmHWM) in MiB, or -1 when /proc is unavailable.
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // value in kB
  }
  return -1.0;
}

bool parse_int(const std::string& s, int* out) {
  try {
    size_t pos = 0;
    const int v = std::stoi(s, &pos);
    if (pos != s.size() || v < 0) return false;
    *out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

int usage_error(const std::string& message, const char* usage) {
  std::fprintf(stderr, "strokebox engine: %s\n\n%s", message.c_str(), usage);
  return 2;
}

/// Parses the options shared by info and bench. Returns an exit code >= 0 on error/help.
int load_common(int argc, char** argv, const char* usage, const std::set<std::string>& extra_values,
                const std::set<std::string>& extra_flags, Args* args, inference::EngineOptions* options) {
  std::set<std::string> values = {"onnx", "engine", "precision", "threads"};
  values.insert(extra_values.begin(), extra_values.end());
  std::set<std::string> flags = {"help"};
  flags.insert(extra_flags.begin(), extra_flags.end());
  auto parsed = Args::parse(argc, argv, 3, values, flags);
  if (!parsed.ok()) return usage_error(parsed.status().message(), usage);
  *args = std::move(parsed).value();
  if (args->has("help")) {
    std::fputs(usage, stdout);
    return 0;
  }
  if (args->positional().size() > (usage == kInfoUsage ? 1u : 0u)) {
    return usage_error("unexpected argument '" + args->positional().back() + "'", usage);
  }
  const bool have_file = !args->positional().empty() || args->get("engine");
  if (!args->get("onnx") && !have_file) return usage_error("--onnx FILE (or an engine file) is required", usage);
  if (args->get("onnx") && have_file) return usage_error("give either --onnx or an engine file", usage);
  options->precision = args->get_or("precision", "fp32");
  if (args->get("threads") && !parse_int(*args->get("threads"), &options->threads)) {
    return usage_error("--threads needs a number >= 0", usage);
  }
  return -1;
}

int cmd_info(int argc, char** argv) {
  Args args;
  inference::EngineOptions options;
  if (int rc = load_common(argc, argv, kInfoUsage, {}, {"linear-plan"}, &args, &options); rc >= 0) return rc;
  options.reuse_memory = !args.has("linear-plan");
  if (!args.positional().empty()) {
    const std::string path = args.positional()[0];
    std::ifstream f(path, std::ios::binary);
    if (!f) {
      std::fprintf(stderr, "strokebox engine info: cannot open %s\n", path.c_str());
      return 1;
    }
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto contents = inference::parse_engine_file(bytes);
    if (!contents.ok()) {
      std::fprintf(stderr, "strokebox engine info: %s: %s\n", path.c_str(), contents.status().to_string().c_str());
      return 1;
    }
    const inference::EngineFileHeader& h = contents->header;
    if (!args.get("precision")) options.precision = "auto";  // whatever the file holds
    auto engine = inference::load_engine_file(path, "", options);
    if (!engine.ok()) {
      std::fputs(inference::describe_engine_file(*contents).c_str(), stdout);
      std::fprintf(stderr, "strokebox engine info: cannot load on this CPU: %s\n", engine.status().to_string().c_str());
      return 1;
    }
    std::printf("engine file %s: format %u, precision %s (weights stored %s), model %s hash %s, cpu features",
                path.c_str(), h.format_version, h.precision.c_str(), h.weight_storage.c_str(), h.onnx_name.c_str(),
                h.model_hash.c_str());
    for (const auto& feature : h.cpu_features) std::printf(" %s", feature.c_str());
    std::printf("\n");
    std::fputs((*engine)->describe().c_str(), stdout);
    return 0;
  }
  auto engine = inference::CpuEngine::load_onnx(*args.get("onnx"), options);
  if (!engine.ok()) {
    std::fprintf(stderr, "strokebox engine info: %s\n", engine.status().to_string().c_str());
    return 1;
  }
  std::fputs((*engine)->describe().c_str(), stdout);
  return 0;
}

int cmd_bench(int argc, char** argv) {
  Args args;
  inference::EngineOptions options;
  if (int rc = load_common(argc, argv, kBenchUsage, {"runs", "warmup", "sliding-window"}, {"profile", "mirroring"}, &args,
                           &options); rc >= 0) {
    return rc;
  }
  int runs = 10, warmup = 2;
  if (args.get("runs") && (!parse_int(*args.get("runs"), &runs) || runs < 1)) {
    return usage_error("--runs needs a number >= 1", kBenchUsage);
  }
  if (args.get("warmup") && !parse_int(*args.get("warmup"), &warmup)) {
    return usage_error("--warmup needs a number >= 0", kBenchUsage);
  }
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const bool from_file = args.get("engine").has_value();
  if (from_file && !args.get("precision")) options.precision = "auto";
  auto loaded = from_file ? inference::load_engine_file(*args.get("engine"), "", options)
                          : inference::CpuEngine::load_onnx(*args.get("onnx"), options);
  if (!loaded.ok()) {
    std::fprintf(stderr, "strokebox engine bench: %s\n", loaded.status().to_string().c_str());
    return 1;
  }
  const double load_s = std::chrono::duration<double>(clock::now() - t0).count();
  inference::CpuEngine& engine = **loaded;
  auto numel = [](const std::array<int64_t, 5>& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return static_cast<size_t>(n);
  };
  std::vector<float> input(numel(engine.input_shape())), output(numel(engine.output_shape()));
  std::mt19937 rng(12345);
  std::normal_distribution<float> normal(0.0f, 1.0f);  // z-scored MRI intensities look like this
  for (float& v : input) v = normal(rng);
  // Process CPU time (all threads) next to wall time: on a machine shared with other work the
  // wall time mostly measures the neighbours, the CPU time is the work this engine does.
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  std::vector<double> times, cpu_times;
  for (int i = 0; i < warmup + runs; ++i) {
    const auto start = clock::now();
    const double cpu_start = cpu_now();
    const base::Status st = engine.run(input.data(), output.data());
    const double s = std::chrono::duration<double>(clock::now() - start).count();
    if (i >= warmup) cpu_times.push_back(cpu_now() - cpu_start);
    if (!st.ok()) {
      std::fprintf(stderr, "strokebox engine bench: %s\n", st.to_string().c_str());
      return 1;
    }
    if (i >= warmup) times.push_back(s);
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  double mean = 0.0;
  for (double t : times) mean += t / static_cast<double>(n);
  nlohmann::json j;
  j["backend"] = engine.backend();
  j["precision"] = engine.precision();
  j[from_file ? "engine" : "onnx"] = from_file ? *args.get("engine") : *args.get("onnx");
  j["input_shape"] = engine.input_shape();
  j["output_shape"] = engine.output_shape();
  j["threads"] = options.threads;
  j["runs"] = runs;
  j["warmup"] = warmup;
  j["median_s"] = median;
  j["min_s"] = sorted.front();
  j["mean_s"] = mean;
  std::sort(cpu_times.begin(), cpu_times.end());
  j["median_cpu_s"] = n % 2 ? cpu_times[n / 2] : 0.5 * (cpu_times[n / 2 - 1] + cpu_times[n / 2]);
  j["load_s"] = load_s;
  j["gflop"] = engine.gflop_per_run();
  j["gflop_per_s"] = median > 0 ? engine.gflop_per_run() / median : 0.0;
  j["arena_mib"] = engine.arena_bytes() / 1048576.0;
  j["naive_mib"] = engine.naive_bytes() / 1048576.0;
  j["weights_mib"] = engine.weight_bytes() / 1048576.0;
  if (args.get("sliding-window")) {
    inference::Shape3 volume{0, 0, 0};
    if (std::sscanf(args.get("sliding-window")->c_str(), "%ld,%ld,%ld", &volume[0], &volume[1], &volume[2]) != 3 ||
        volume[0] < 1 || volume[1] < 1 || volume[2] < 1) {
      return usage_error("--sliding-window needs D,H,W (voxels)", kBenchUsage);
    }
    const auto in = engine.input_shape();
    inference::Tensor4f image(in[1], volume);
    for (float& v : image.data) v = normal(rng);
    inference::SlidingWindowOptions sw;
    sw.patch_size = {in[2], in[3], in[4]};
    sw.use_mirroring = args.has("mirroring");
    auto r = inference::predict_sliding_window(image, {&engine}, sw);
    if (!r.ok()) {
      std::fprintf(stderr, "strokebox engine bench: %s\n", r.status().to_string().c_str());
      return 1;
    }
    j["sliding_window"] = {{"volume", volume},
                           {"mirroring", sw.use_mirroring},
                           {"tiles", r->tiles},
                           {"network_runs", r->network_runs},
                           {"network_s", r->network_seconds},
                           {"other_s", r->other_seconds},
                           {"overhead_pct", 100.0 * r->other_seconds / r->network_seconds}};
  }
  j["peak_rss_mib"] = peak_rss_mib();
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  if (args.has("profile")) {
    engine.enable_profiling(true);
    for (int i = 0; i < runs; ++i) {
      const base::Status st = engine.run(input.data(), output.data());
      if (!st.ok()) {
        std::fprintf(stderr, "strokebox engine bench: %s\n", st.to_string().c_str());
        return 1;
      }
    }
    std::fputs(engine.profile_report().c_str(), stderr);
  }
  return 0;
}

int cmd_build(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv, 3, {"model", "precision", "threads"}, {"help"});
  if (!parsed.ok()) return usage_error(parsed.status().message(), kBuildUsage);
  const Args& args = *parsed;
  if (args.has("help")) {
    std::fputs(kBuildUsage, stdout);
    return 0;
  }
  if (!args.positional().empty()) return usage_error("unexpected argument '" + args.positional()[0] + "'", kBuildUsage);
  if (!args.get("model")) return usage_error("--model DIR is required", kBuildUsage);
  inference::EngineOptions options;
  options.precision = args.get_or("precision", "fp32");
  if (args.get("threads") && !parse_int(*args.get("threads"), &options.threads)) {
    return usage_error("--threads needs a number >= 0", kBuildUsage);
  }
  auto storage = inference::resolve_precision(options.precision);
  if (!storage.ok()) {
    std::fprintf(stderr, "strokebox engine build: %s\n", storage.status().to_string().c_str());
    return storage.status().code() == base::Code::kInvalidArgument ? 2 : 1;
  }
  options.precision = *storage;
  auto spec = inference::load_model_spec(*args.get("model"));
  if (!spec.ok()) {
    std::fprintf(stderr, "strokebox engine build: %s\n", spec.status().to_string().c_str());
    return 1;
  }
  for (const std::string& network : spec->networks) {
    const std::string onnx = spec->model_dir + "/" + network;
    const std::string path = inference::engine_path_for(onnx, *storage);
    const auto t0 = std::chrono::steady_clock::now();
    auto engine = inference::build_engine_file(onnx, path, options);
    if (!engine.ok()) {
      std::fprintf(stderr, "strokebox engine build: %s\n", engine.status().to_string().c_str());
      return 1;
    }
    std::printf("%s: %s, precision %s, arena %.1f MiB (naive %.1f MiB), %.1f s\n", path.c_str(), network.c_str(),
                (*engine)->precision().c_str(), (*engine)->arena_bytes() / 1048576.0,
                (*engine)->naive_bytes() / 1048576.0,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 0;
}

}  // namespace

int cmd_engine(int argc, char** argv) {
  if (argc < 3 || !std::strcmp(argv[2], "--help") || !std::strcmp(argv[2], "-h") || !std::strcmp(argv[2], "help")) {
    std::fputs(kEngineUsage, argc < 3 ? stderr : stdout);
    return argc < 3 ? 2 : 0;
  }
  const std::string verb = argv[2];
  if (verb == "info") return cmd_info(argc, argv);
  if (verb == "bench") return cmd_bench(argc, argv);
  if (verb == "build") return cmd_build(argc, argv);
  return usage_error("unknown verb '" + verb + "'", kEngineUsage);
}

}  // namespace firmware
