// Converting a real nnU-Net v2 results folder (../shared/golden/model, made by nnU-Net's own
// code) with tools/import_nnunet.py, then segmenting the golden inputs with the real binary,
// must reproduce nnU-Net's own segmentations (>= 99.9 % voxel agreement), without and with
// test-time mirroring. Skipped when /usr/bin/python3 has no torch/onnx.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "image/nifti_io.h"
#include "tests/integration/process.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = STROKEBOX_BINARY;
const std::string kSource = STROKEBOX_SOURCE_DIR;
const std::string kGolden = std::string(STROKEBOX_SHARED_DIR) + "/golden";
const std::string kResults = kGolden + "/model/Dataset990_GoldenTiny/nnUNetTrainer__nnUNetPlans__3d_fullres";

/// Fraction of voxels with the same label; -1 when the grids differ or a file cannot be read.
double voxel_agreement(const std::string& a_path, const std::string& b_path, std::string* why) {
  auto a = image::read_nifti(a_path);
  auto b = image::read_nifti(b_path);
  if (!a.ok() || !b.ok()) {
    *why = !a.ok() ? a.status().to_string() : b.status().to_string();
    return -1.0;
  }
  if (a->grid.dims != b->grid.dims || a->data.size() != b->data.size()) {
    *why = "grids differ";
    return -1.0;
  }
  size_t same = 0;
  for (size_t n = 0; n < a->data.size(); ++n) same += (a->data[n] > 0.5f) == (b->data[n] > 0.5f);
  return static_cast<double>(same) / static_cast<double>(a->data.size());
}

/// One conversion shared by the tests: the golden results folder into <work>/model (mirroring
/// off, to compare with the __nomirror goldens) and <work>/model_mirror (converter default).
class ImportNnunet : public ::testing::Test {
 protected:
  static inline fs::path work_;
  static inline std::string skip_reason_;
  static inline itest::CommandResult convert_, convert_mirror_;

  static void SetUpTestSuite() {
    if (itest::run_command("/usr/bin/python3 -c 'import torch, onnx' >/dev/null 2>&1").exit_code != 0) {
      skip_reason_ = "/usr/bin/python3 lacks torch or onnx (python3-torch, python3-onnx)";
      return;
    }
    if (!fs::exists(kResults + "/fold_0/checkpoint_final.pth")) {
      skip_reason_ = "no golden nnU-Net results folder at " + kResults;
      return;
    }
    work_ = fs::temp_directory_path() / ("strokebox-import-" + std::to_string(::getpid()));
    fs::remove_all(work_);
    fs::create_directories(work_);
    const std::string tool = "/usr/bin/python3 " + kSource + "/tools/import_nnunet.py " + kResults;
    convert_ = itest::run_command(tool + " --folds 0 --no-mirroring --out " + (work_ / "model").string());
    convert_mirror_ = itest::run_command(tool + " --out " + (work_ / "model_mirror").string());
  }

  static void TearDownTestSuite() {
    if (!work_.empty() && ::testing::UnitTest::GetInstance()->Passed() && !std::getenv("STROKEBOX_KEEP_TEST_DATA"))
      fs::remove_all(work_);
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  static json read_json(const fs::path& p) {
    std::ifstream f(p);
    return json::parse(f, nullptr, /*allow_exceptions=*/false);
  }

  /// Segments golden case `name` with `model`; returns the mask path (empty on failure).
  static std::string segment(const std::string& model, const std::string& name) {
    const std::string in = kGolden + "/inputs/" + name + "/" + name;
    const fs::path out = work_ / ("out_" + fs::path(model).filename().string() + "_" + name);
    auto r = itest::run_command(kBin + " segment --model " + model + " --image " + in + "_0000.nii.gz --image " + in +
                                "_0001.nii.gz --out " + out.string());
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.output;
    return r.exit_code == 0 ? (out / "lesion_mask.nii.gz").string() : std::string();
  }
};

TEST_F(ImportNnunet, ConverterWritesOneOnnxPerFoldAndAValidModelJson) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const json doc = read_json(work_ / "model" / "model.json");
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["format"], "strokebox-model/1");
  EXPECT_EQ(doc["networks"], json::array({"fold_0.onnx"}));
  EXPECT_TRUE(fs::exists(work_ / "model" / "fold_0.onnx"));
  EXPECT_EQ(doc["patch_size"], json::array({32, 32, 32}));
  EXPECT_EQ(doc["target_spacing_mm"], json::array({2.0, 1.5, 1.5}));
  EXPECT_EQ(doc["channels"][0]["name"], "DWI");
  EXPECT_EQ(doc["channels"][1]["name"], "ADC");
  EXPECT_EQ(doc["channels"][1]["use_mask_for_norm"], true);
  EXPECT_EQ(doc["accumulation"], "fp16");
  EXPECT_EQ(doc["use_mirroring"], false);
  EXPECT_EQ(doc["mirroring_axes"], json::array({0, 1, 2}));
  EXPECT_EQ(doc["provenance"]["trainer_name"], "nnUNetTrainer");
  EXPECT_EQ(doc["provenance"]["networks"]["fold_0.onnx"]["checkpoint_sha256"].get<std::string>().size(), 64u);
  EXPECT_LE(doc["provenance"]["networks"]["fold_0.onnx"]["onnx_vs_torch_max_abs_diff"].get<double>(), 1e-3);

  ASSERT_EQ(convert_mirror_.exit_code, 0) << convert_mirror_.output;
  const json mirror = read_json(work_ / "model_mirror" / "model.json");
  EXPECT_EQ(mirror["use_mirroring"], true);  // nnU-Net's default, axes from the checkpoint
}

TEST_F(ImportNnunet, SegmentationsMatchNnunetWithoutMirroringOnEveryGoldenCase) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  for (const std::string name : {"case01", "case02", "case03", "case04"}) {
    const std::string mask = segment((work_ / "model").string(), name);
    ASSERT_FALSE(mask.empty());
    std::string why;
    const double agree =
        voxel_agreement(mask, kGolden + "/prediction/" + name + "__nomirror/" + name + ".nii.gz", &why);
    std::printf("[ parity   ] %s no mirroring: voxel agreement with nnU-Net %.5f %%\n", name.c_str(), 100.0 * agree);
    EXPECT_GE(agree, 0.999) << name << " " << why;
  }
}

/// Several folds become one package with one engine per fold, averaged by the box. fold_1 is a
/// copy of fold_0 (the golden folder has one fold), so the average must equal nnU-Net's output.
TEST_F(ImportNnunet, TwoFoldsBecomeOnePackageWithOneEnginePerFold) {
  const fs::path results = work_ / "two_folds";
  auto copied = itest::run_command("cp -r '" + kResults + "' '" + results.string() + "' && cp -r '" +
                                   (results / "fold_0").string() + "' '" + (results / "fold_1").string() + "' 2>&1");
  ASSERT_EQ(copied.exit_code, 0) << copied.output;
  const fs::path pkg = work_ / "model_two_folds";
  auto conv = itest::run_command("OMP_WAIT_POLICY=passive /usr/bin/python3 " + kSource + "/tools/import_nnunet.py " +
                                 results.string() + " --folds 0,1 --no-mirroring --out " + pkg.string() + " 2>&1");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  const json doc = read_json(pkg / "model.json");
  EXPECT_EQ(doc["networks"], json::array({"fold_0.onnx", "fold_1.onnx"})) << doc.dump(2);
  const std::string mask = segment(pkg.string(), "case01");
  ASSERT_FALSE(mask.empty());
  EXPECT_TRUE(fs::exists(pkg / "fold_0.cpu-fp32.engine"));
  EXPECT_TRUE(fs::exists(pkg / "fold_1.cpu-fp32.engine"));
  std::string why;
  const double agree = voxel_agreement(mask, kGolden + "/prediction/case01__nomirror/case01.nii.gz", &why);
  std::printf("[ parity   ] case01, 2 folds averaged: voxel agreement with nnU-Net %.5f %%\n", 100.0 * agree);
  EXPECT_GE(agree, 0.999) << why;
}

TEST_F(ImportNnunet, SegmentationMatchesNnunetWithMirroring) {
  ASSERT_EQ(convert_mirror_.exit_code, 0) << convert_mirror_.output;
  const std::string mask = segment((work_ / "model_mirror").string(), "case01");
  ASSERT_FALSE(mask.empty());
  std::string why;
  const double agree = voxel_agreement(mask, kGolden + "/prediction/case01__mirror/case01.nii.gz", &why);
  std::printf("[ parity   ] case01 mirroring: voxel agreement with nnU-Net %.5f %%\n", 100.0 * agree);
  EXPECT_GE(agree, 0.999) << why;
}

TEST_F(ImportNnunet, UnknownConfigurationFailsWithAReason) {
  auto r = itest::run_command("/usr/bin/python3 " + kSource + "/tools/import_nnunet.py " + kResults +
                              " --configuration 3d_lowres --out " + (work_ / "bad").string() + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no configuration '3d_lowres'"), std::string::npos) << r.output;
}

/// The golden results folder turned into a ResidualEncoderUNet one (same plans, architecture
/// switched, seeded random weights in nnU-Net's checkpoint format): SRC DST TOOLS_DIR.
constexpr const char* kMakeResEncResults = R"PY(import json, os, shutil, sys, torch
sys.path.insert(0, sys.argv[3])
from nnunet_architectures import RESENC_UNET, build_network
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.onnx", "*.engine"))
plans = json.load(open(os.path.join(src, "plans.json")))
arch = plans["configurations"]["3d_fullres"]["architecture"]
kw = arch["arch_kwargs"]
kw["n_blocks_per_stage"] = [1, 2, 2, 2]
kw.pop("n_conv_per_stage")
kw["n_conv_per_stage_decoder"] = [1, 1, 1]
arch["network_class_name"] = RESENC_UNET
json.dump(plans, open(os.path.join(dst, "plans.json"), "w"), indent=2)
ck = torch.load(os.path.join(src, "fold_0", "checkpoint_final.pth"), map_location="cpu")
torch.manual_seed(0)
net = build_network(arch, 2, 2)
ck["network_weights"] = {k: v for k, v in net.state_dict().items()}
torch.save(ck, os.path.join(dst, "fold_0", "checkpoint_final.pth"))
print(dst)
)PY";

/// nnU-Net's ResidualEncoderUNet (AvgPool + 1x1 conv skips, exported with no-op Pads) goes
/// through the converter and the engine end to end: import (which checks ONNX against torch),
/// `strokebox engine build`, then `strokebox engine bench` on the engine file.
TEST(ImportNnunetResEnc, ResidualEncoderPackageConvertsBuildsAndRuns) {
  if (itest::run_command("/usr/bin/python3 -c 'import torch, onnx' >/dev/null 2>&1").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 lacks torch or onnx";
  }
  if (!fs::exists(kResults + "/plans.json")) GTEST_SKIP() << "no golden nnU-Net results folder at " << kResults;
  const fs::path work = fs::temp_directory_path() / ("sb_resenc_import_" + std::to_string(::getpid()));
  fs::create_directories(work);
  const fs::path script = work / "make_resenc_results.py";
  std::ofstream(script) << kMakeResEncResults;
  const fs::path results = work / "results" / "Dataset990_GoldenTiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres";
  auto made = itest::run_command("OMP_WAIT_POLICY=passive /usr/bin/python3 " + script.string() + " " + kResults + " " +
                                 results.string() + " " + kSource + "/tools 2>&1");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const fs::path pkg = work / "model";
  auto conv = itest::run_command("OMP_WAIT_POLICY=passive /usr/bin/python3 " + kSource + "/tools/import_nnunet.py " +
                                 results.string() + " --out " + pkg.string() + " 2>&1");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  EXPECT_NE(conv.output.find("AveragePool"), std::string::npos) << conv.output;
  auto build = itest::run_command("OMP_WAIT_POLICY=passive " + kBin + " engine build --model " + pkg.string() +
                                  " --precision fp32 2>&1");
  ASSERT_EQ(build.exit_code, 0) << build.output;
  const fs::path engine = pkg / "fold_0.cpu-fp32.engine";
  ASSERT_TRUE(fs::exists(engine)) << build.output;
  auto bench = itest::run_command("OMP_WAIT_POLICY=passive " + kBin + " engine bench --engine " + engine.string() +
                                  " --runs 1 --warmup 0 2>&1");
  ASSERT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("\"median_s\""), std::string::npos) << bench.output;
  if (::testing::Test::HasFailure()) return;
  fs::remove_all(work);
}

}  // namespace
