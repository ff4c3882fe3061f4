// Tests of engine files: fp16 conversion, build/load round trip (bit-identical outputs), the
// refusals (flipped byte, truncation, other model, other CPU features, other format version),
// load_or_build_engine's caching and rebuild, file naming, fp16-weight engines against fp32.
#include "inference/engine_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/support/npy.h"
#include "tests/support/shared_data.h"

namespace inference {
namespace {

namespace fs = std::filesystem;

const std::string kGolden = std::string(STROKEBOX_SHARED_DIR) + "/golden/model/";
const std::string kGoldenOnnx =
    kGolden + "Dataset990_GoldenTiny/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/model.onnx";

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// A fresh folder holding a copy of the golden model as model.onnx; removed at the end.
class EngineFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GOLDEN();
    dir_ = fs::temp_directory_path() /
           ("sb_engine_file_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    onnx_ = (dir_ / "model.onnx").string();
    fs::copy_file(kGoldenOnnx, onnx_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  /// Builds the fp32 engine file and returns its path.
  std::string build(const std::string& precision = "fp32") {
    EngineOptions o;
    o.precision = precision;
    const std::string path = engine_path_for(onnx_, precision);
    auto e = build_engine_file(onnx_, path, o);
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    return path;
  }
  fs::path dir_;
  std::string onnx_;
};

/// Runs `engine` on golden patch `p` (1 x 2 x 32^3).
std::vector<float> run_patch(CpuEngine& engine, int p) {
  static const testing_support::NpyArray input = testing_support::read_npy(kGolden + "onnx_reference/patch_input.npy");
  const size_t n = input.size() / input.shape[0];
  std::vector<float> out(n);
  EXPECT_TRUE(engine.run(input.data.data() + p * n, out.data()).ok());
  return out;
}

TEST(Fp16, ConvertsExactValuesRoundsToNearestEvenAndSaturatesToInfinity) {
  EXPECT_EQ(float_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(1e6f), 0x7c00);
  EXPECT_EQ(float_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -26)), 0x0000);  // below half of it
  EXPECT_EQ(float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even (up)
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite positive half round-trips
    ASSERT_EQ(float_to_fp16(fp16_to_float(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_FLOAT_EQ(fp16_to_float(0x3555), 0.333251953125f);
}

TEST(EngineFileNaming, SingleNetworkAndFoldsGetDistinctNames) {
  EXPECT_EQ(engine_path_for("/m/model.onnx", "fp32"), "/m/cpu-fp32.engine");
  EXPECT_EQ(engine_path_for("/m/fold_0.onnx", "fp16"), "/m/fold_0.cpu-fp16.engine");
  EXPECT_NE(engine_path_for("/m/fold_0.onnx", "fp32"), engine_path_for("/m/fold_1.onnx", "fp32"));
}

TEST_F(EngineFileTest, LoadedEngineGivesBitIdenticalOutputsAndKeepsThePlan) {
  const std::string path = build();
  ASSERT_TRUE(fs::exists(path));
  auto direct = CpuEngine::load_onnx(onnx_, {});
  ASSERT_TRUE(direct.ok());
  auto loaded = load_engine_file(path, model_hash(read_all(onnx_)), {});
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ((*loaded)->input_shape(), (*direct)->input_shape());
  EXPECT_EQ((*loaded)->arena_bytes(), (*direct)->arena_bytes());
  EXPECT_EQ((*loaded)->memory_plan().offsets, (*direct)->memory_plan().offsets);
  for (int p = 0; p < 2; ++p) {
    const auto a = run_patch(**direct, p), b = run_patch(**loaded, p);
    ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "patch " << p;
  }
  auto contents = parse_engine_file(read_all(path));
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(contents->header.precision, "fp32");
  EXPECT_EQ(contents->header.input_shape, (std::vector<int64_t>{1, 2, 32, 32, 32}));
  const std::string text = describe_engine_file(*contents);
  EXPECT_NE(text.find("model.onnx hash fnv1a64:"), std::string::npos) << text;
  EXPECT_NE(text.find("onednn_isa:"), std::string::npos);
  EXPECT_NE(text.find("stored memory plan"), std::string::npos);
}

TEST_F(EngineFileTest, FlippedByteIsRefusedAsCorrupt) {
  const std::string path = build();
  std::string bytes = read_all(path);
  for (size_t at : {bytes.size() / 2, size_t{40}, bytes.size() - 3}) {
    std::string bad = bytes;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    write_all(path, bad);
    auto e = load_engine_file(path, "", {});
    ASSERT_FALSE(e.ok()) << "byte " << at;
    EXPECT_EQ(e.status().code(), base::Code::kDataLoss) << e.status().to_string();
    EXPECT_NE(e.status().message().find("checksum"), std::string::npos) << e.status().to_string();
    EXPECT_NE(e.status().to_string().find(path), std::string::npos);
  }
}

TEST_F(EngineFileTest, TruncatedFileIsRefused) {
  const std::string path = build();
  const std::string bytes = read_all(path);
  for (size_t keep : {bytes.size() - 1, bytes.size() / 3, size_t{10}, size_t{0}}) {
    write_all(path, bytes.substr(0, keep));
    auto e = load_engine_file(path, "", {});
    ASSERT_FALSE(e.ok()) << keep;
    EXPECT_EQ(e.status().code(), base::Code::kDataLoss) << e.status().to_string();
  }
  write_all(path, bytes.substr(0, bytes.size() - 1));
  EXPECT_NE(load_engine_file(path, "", {}).status().message().find("truncated"), std::string::npos);
}

TEST_F(EngineFileTest, OtherModelOtherPrecisionOtherCpuAndOtherVersionAreRefused) {
  const std::string path = build();
  auto other_model = load_engine_file(path, "fnv1a64:0123456789abcdef", {});
  EXPECT_EQ(other_model.status().code(), base::Code::kFailedPrecondition);
  EXPECT_NE(other_model.status().message().find("another model"), std::string::npos);

  EngineOptions fp16;
  fp16.precision = "fp16";
  EXPECT_EQ(load_engine_file(path, "", fp16).status().code(), base::Code::kFailedPrecondition);

  // A valid file (good checksum) that says it needs another CPU.
  auto c = parse_engine_file(read_all(path));
  ASSERT_TRUE(c.ok());
  EngineFileHeader h = c->header;
  h.cpu_features = {"onednn_isa:some_future_isa"};
  auto bytes = serialize_engine(c->graph, h, c->requests, c->plan);
  ASSERT_TRUE(bytes.ok());
  write_all(path, *bytes);
  auto other_cpu = load_engine_file(path, "", {});
  EXPECT_EQ(other_cpu.status().code(), base::Code::kFailedPrecondition);
  EXPECT_NE(other_cpu.status().message().find("some_future_isa"), std::string::npos) << other_cpu.status().to_string();

  // Another format version.
  std::string v = read_all(path);
  v[8] = 99;
  write_all(path, v);
  auto other_version = load_engine_file(path, "", {});
  EXPECT_EQ(other_version.status().code(), base::Code::kFailedPrecondition);
  EXPECT_NE(other_version.status().message().find("version 99"), std::string::npos);

  EXPECT_EQ(load_engine_file((dir_ / "missing.engine").string(), "", {}).status().code(), base::Code::kNotFound);
}

TEST_F(EngineFileTest, LoadOrBuildWritesOnceReusesAndRebuildsWhenTheModelChanges) {
  bool built = false;
  auto first = load_or_build_engine(onnx_, {}, &built);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_TRUE(built);
  const std::string path = (dir_ / "cpu-fp32.engine").string();
  ASSERT_TRUE(fs::exists(path));
  for (const auto& entry : fs::directory_iterator(dir_)) {  // no temporary left behind
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
  }
  const auto reference = run_patch(**first, 0);

  auto second = load_or_build_engine(onnx_, {}, &built);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(built);
  EXPECT_EQ(run_patch(**second, 0), reference);

  // The same network with another doc_string (ModelProto field 6): another hash -> rebuilt.
  write_all(onnx_, read_all(onnx_) + std::string("\x32\x01x", 3));
  auto third = load_or_build_engine(onnx_, {}, &built);
  ASSERT_TRUE(third.ok()) << third.status().to_string();
  EXPECT_TRUE(built);
  EXPECT_EQ(run_patch(**third, 0), reference);

  // A corrupt engine file is replaced, not fatal.
  write_all(path, "garbage");
  auto fourth = load_or_build_engine(onnx_, {}, &built);
  ASSERT_TRUE(fourth.ok());
  EXPECT_TRUE(built);
  EXPECT_TRUE(parse_engine_file(read_all(path)).ok());
}

TEST_F(EngineFileTest, Fp16WeightEngineAgreesWithFp32AndSaysHowItComputes) {
  const std::string path = build("fp16");
  EXPECT_EQ(fs::path(path).filename(), "cpu-fp16.engine");
  const std::string fp32_path = build("fp32");
  EXPECT_LT(fs::file_size(path), fs::file_size(fp32_path));
  EngineOptions o;
  o.precision = "fp16";
  auto fp16 = load_engine_file(path, "", o);
  ASSERT_TRUE(fp16.ok()) << fp16.status().to_string();
  const std::string compute = cpu_has_native_bf16() ? "bf16" : "fp32";
  EXPECT_EQ((*fp16)->precision(), "fp16-weights/" + compute + "-compute");
  EXPECT_EQ((*fp16)->storage_precision(), "fp16");
  EXPECT_NE((*fp16)->describe().find("fp16-weights/"), std::string::npos);
  auto fp32 = CpuEngine::load_onnx(onnx_, {});
  ASSERT_TRUE(fp32.ok());
  size_t agree = 0, total = 0;
  double max_diff = 0.0;
  for (int p = 0; p < 2; ++p) {
    const auto a = run_patch(**fp16, p), b = run_patch(**fp32, p);
    const size_t n = a.size() / 2;
    for (size_t v = 0; v < n; ++v) {
      agree += (a[n + v] > a[v]) == (b[n + v] > b[v]);
      ++total;
    }
    for (size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, std::fabs(double(a[i]) - b[i]));
  }
  RecordProperty("fp16_vs_fp32_max_abs_logit_diff", std::to_string(max_diff));
  EXPECT_GE(static_cast<double>(agree) / total, 0.995) << agree << " of " << total;
  EXPECT_GT(max_diff, 0.0);  // the weights really were rounded
  std::printf("[ info ] fp16 weights vs fp32: argmax agreement %zu/%zu, max |logit diff| %.3g\n", agree, total,
              max_diff);
}

TEST(EnginePrecision, AutoPicksWhatTheCpuRunsNativelyAndBf16NeedsTheFeature) {
  auto a = resolve_precision("auto");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, cpu_has_native_bf16() ? "bf16" : "fp32");
  auto b = resolve_precision("bf16");
  if (cpu_has_native_bf16()) {
    EXPECT_TRUE(b.ok());
  } else {
    EXPECT_EQ(b.status().code(), base::Code::kUnimplemented);
    EXPECT_NE(b.status().message().find("AVX512-BF16"), std::string::npos) << b.status().to_string();
    EXPECT_NE(b.status().message().find(cpu_isa_name()), std::string::npos);
  }
  EXPECT_EQ(resolve_precision("int3").status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(*resolve_precision("fp16"), "fp16");
}

}  // namespace
}  // namespace inference
