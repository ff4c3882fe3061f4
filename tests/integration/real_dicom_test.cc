// Regression tests of `strokebox segment --study` on real scanner diffusion series
// (../shared/realdicom, README there: what each is and what the box should do with it), and on
// a real series stripped of its FrameOfReferenceUID; one real series also goes through the
// daemon (`strokebox run`) over DICOM with DCMTK's storescu. Each case checks the outcome and what
// report.json says the box found (b-values, trace given/computed, ADC given/derived), never
// timings. Skipped with a message when the folder is absent. The sliding window runs with step
// 1.0 to keep the suite short; selection and assembly are what is under test.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <nlohmann/json.hpp>

#include "tests/integration/process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string real_dir(const std::string& name) { return std::string(STROKEBOX_SHARED_DIR) + "/realdicom/" + name; }

class RealDicom : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("sb_real_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(tmp_);
  }

  /// Skips the test when a real folder is missing.
  bool have(const std::string& folder) {
    if (fs::is_directory(real_dir(folder))) return true;
    missing_ = real_dir(folder);
    return false;
  }

  /// Runs segment on `study` with extra flags; returns report.json (also printed on failure).
  json segment(const std::string& study, const std::string& flags = "") {
    out_ = tmp_ / "out";
    fs::remove_all(out_);
    const std::string cmd = std::string(STROKEBOX_BINARY) + " segment --study '" + study + "' --out '" +
                            out_.string() + "' --tile-step 1 " + flags + " 2>" + (tmp_ / "stderr.txt").string();
    const itest::CommandResult r = itest::run_command(cmd);
    exit_code_ = r.exit_code;
    std::ifstream f(out_ / "report.json");
    if (!f) {
      ADD_FAILURE() << "no report.json from: " << cmd;
      return json::object();
    }
    json report = json::parse(f, nullptr, false);
    if (report.is_discarded()) ADD_FAILURE() << "report.json is not JSON";
    return report;
  }

  /// A study folder made of several real series (symbolic links to their files).
  std::string combine(const std::vector<std::string>& folders) {
    const fs::path study = tmp_ / "study";
    for (const std::string& f : folders) {
      fs::create_directories(study / f);
      for (const auto& e : fs::directory_iterator(real_dir(f))) {
        fs::create_symlink(e.path(), study / f / e.path().filename());
      }
    }
    return study.string();
  }

  fs::path tmp_, out_;
  int exit_code_ = -1;
  std::string missing_;
};

#define REQUIRE_REAL(folder) \
  if (!have(folder)) GTEST_SKIP() << "real DICOM folder " << missing_ << " is absent (see ../shared/realdicom)"

void expect_done_with_outputs(const json& r, const fs::path& out, bool seg = true) {
  ASSERT_EQ(r.value("status", ""), "done") << r.dump(2);
  EXPECT_TRUE(fs::exists(out / "lesion_mask.nii.gz"));
  EXPECT_EQ(fs::exists(out / "seg.dcm"), seg);
  EXPECT_EQ(fs::exists(out / "sr.dcm"), seg);
  EXPECT_TRUE(fs::is_directory(out / "overlay"));
}

TEST_F(RealDicom, PhilipsIsotropicImageIsTheDwiAndTheAdcIsDerived) {
  REQUIRE_REAL("dcm_qa_philips__1201_DT_HIGH_32DIR");
  const json r = segment(real_dir("dcm_qa_philips__1201_DT_HIGH_32DIR"));
  expect_done_with_outputs(r, out_);
  EXPECT_EQ(exit_code_, 0);
  const json& d = r["diffusion"];
  EXPECT_EQ(d["trace"], "given") << d.dump();
  EXPECT_NE(d["dwi_source"].get<std::string>().find("ISOTROPIC"), std::string::npos) << d.dump();
  EXPECT_EQ(d["adc"], "derived");
  EXPECT_EQ(d["b_values_s_mm2"], json({0.0, 1000.0}));
  EXPECT_EQ(d["dwi_b_value_s_mm2"], 1000.0);
  EXPECT_EQ(d["b_value_source"], "Philips (2001,xx03)");
}

TEST_F(RealDicom, GeDirectionsAreCombinedButImagesWithoutDiffusionWeightingAreRefused) {
  // The GE series is read (b-value from GE's private tag, 6 directions combined into the
  // trace), but this public copy's b=1000 images are byte-identical to its b=0 images: no
  // diffusion weighting, so the box refuses to segment what would be a T2-weighted image.
  REQUIRE_REAL("dcm_qa_ge__4_Ax_DWI_TENSOR_R2MB2");
  const json r = segment(real_dir("dcm_qa_ge__4_Ax_DWI_TENSOR_R2MB2"));
  EXPECT_EQ(exit_code_, 1);
  EXPECT_EQ(r.value("status", ""), "failed") << r.dump(2);
  EXPECT_EQ(r.value("error_code", ""), "failed_precondition") << r.dump(2);
  EXPECT_NE(r.value("reason", "").find("no diffusion weighting"), std::string::npos) << r.dump(2);
  EXPECT_FALSE(fs::exists(out_ / "seg.dcm"));
  const json& d = r["diffusion"];
  EXPECT_EQ(d["trace"], "computed") << d.dump();
  EXPECT_EQ(d["trace_directions"], 6);
  EXPECT_EQ(d["adc"], "derived");
  EXPECT_EQ(d["b_values_s_mm2"], json({0.0, 1000.0}));
  EXPECT_LT(d["median_head_adc"].get<double>(), 1.0);
}

TEST_F(RealDicom, CanonEnhancedFileIsSplitByItsFunctionalGroups) {
  REQUIRE_REAL("dcm_qa_canon_61__3000_DTI_PA-ortho__enh");
  const json r = segment(real_dir("dcm_qa_canon_61__3000_DTI_PA-ortho__enh"));
  expect_done_with_outputs(r, out_);
  const json& d = r["diffusion"];
  EXPECT_EQ(d["trace"], "computed") << d.dump();
  EXPECT_EQ(d["trace_directions"], 12);
  EXPECT_EQ(d["adc"], "derived");
  EXPECT_EQ(d["b_values_s_mm2"], json({0.0, 1500.0}));
}

TEST_F(RealDicom, SiemensSagittalMosaicAtB2000IsRefusedOrSegmentedWithAWarning) {
  REQUIRE_REAL("dcm_qa_sag__4_DWI_SagAPmosaic");
  json r = segment(real_dir("dcm_qa_sag__4_DWI_SagAPmosaic"));
  EXPECT_EQ(exit_code_, 1);
  EXPECT_EQ(r.value("status", ""), "failed");
  EXPECT_EQ(r.value("error_code", ""), "out_of_range") << r.dump(2);
  const std::string reason = r.value("reason", "");
  EXPECT_NE(reason.find("b = 2000 s/mm^2"), std::string::npos) << reason;
  EXPECT_NE(reason.find("700 to 1500 s/mm^2"), std::string::npos) << reason;
  EXPECT_NE(reason.find("--allow-b-outside-range"), std::string::npos) << reason;

  r = segment(real_dir("dcm_qa_sag__4_DWI_SagAPmosaic"), "--allow-b-outside-range");
  expect_done_with_outputs(r, out_);
  const json& d = r["diffusion"];
  EXPECT_EQ(d["trace"], "computed") << d.dump();
  EXPECT_EQ(d["trace_directions"], 20);
  EXPECT_EQ(d["adc"], "derived");
  EXPECT_EQ(d["b_outside_model_range"], true);
  EXPECT_EQ(d["b_value_source"], "Siemens CSA B_value");
  ASSERT_TRUE(r.contains("warnings")) << r.dump(2);
  EXPECT_NE(r["warnings"][0].get<std::string>().find("outside the b-value range"), std::string::npos);
}

TEST_F(RealDicom, SiemensXaTraceAndAdcAreUsedAsTheScannerMadeThem) {
  REQUIRE_REAL("dcm_qa_xa30i__12001_DWI_dir80_AP_ADC");
  REQUIRE_REAL("dcm_qa_xa30i__13001_DWI_dir80_AP_TRACEW");
  const std::string study =
      combine({"dcm_qa_xa30i__12001_DWI_dir80_AP_ADC", "dcm_qa_xa30i__13001_DWI_dir80_AP_TRACEW"});
  json r = segment(study);
  EXPECT_EQ(r.value("error_code", ""), "out_of_range") << r.dump(2);
  EXPECT_NE(r.value("reason", "").find("b = 2500 s/mm^2"), std::string::npos) << r.dump(2);

  r = segment(study, "--allow-b-outside-range");
  expect_done_with_outputs(r, out_);
  const json& d = r["diffusion"];
  EXPECT_EQ(d["trace"], "given") << d.dump();
  EXPECT_EQ(d["adc"], "given");
  EXPECT_EQ(d["dwi_b_value_s_mm2"], 2500.0);
  EXPECT_FALSE(r["adc_series_instance_uid"].get<std::string>().empty());
}

// The default model on healthy volunteers' studies (issue 14), at the box's own sliding-window
// settings. In the model's b range this is the goal, < 2 mL per study
// (`strokebox-demo-2026.12.07-ensemble`: 0.11 mL Philips, 0.00 mL Canon; models/demo/TRAINING.md).
// Outside it a regression guard (the ensemble: 2.3 mL at b = 2000, 0.0 mL at b = 2500; bound
// 5 mL; the single network before it gave 2.0 and 0.24). `-adc` gave 2.8 and 1.5 mL in range and
// fails the in-range bound on Philips, and 11.2 mL at b = 2000; the
// ZScore default before it gave 8.9 mL on Canon and 94 mL at b = 2500; the model that learned one
// phantom generator's look called 134-241 mL of infarct on each. Studies outside the model's b
// range go through --allow-b-outside-range, as a user would after reading the refusal.
TEST_F(RealDicom, HealthyVolunteersStayFarBelowTheOldModelsVolumes) {
  struct Case {
    std::vector<std::string> folders;
    std::string flags;
    double max_ml;  // in the model's b range: 2 mL (the goal); outside it: 5 mL
  };
  const std::vector<Case> cases = {
      {{"dcm_qa_philips__1201_DT_HIGH_32DIR"}, "", 2.0},
      {{"dcm_qa_canon_61__3000_DTI_PA-ortho__enh"}, "", 2.0},
      {{"dcm_qa_sag__4_DWI_SagAPmosaic"}, "--allow-b-outside-range", 5.0},
      {{"dcm_qa_xa30i__12001_DWI_dir80_AP_ADC", "dcm_qa_xa30i__13001_DWI_dir80_AP_TRACEW"}, "--allow-b-outside-range",
       5.0},
  };
  int ran = 0;
  for (const Case& c : cases) {
    bool present = true;
    for (const std::string& f : c.folders) present = present && have(f);
    if (!present) continue;
    fs::remove_all(tmp_ / "study");
    const std::string study = c.folders.size() == 1 ? real_dir(c.folders[0]) : combine(c.folders);
    const json r = segment(study, "--tile-step 0.5 " + c.flags);
    ASSERT_EQ(r.value("status", ""), "done") << c.folders[0] << ": " << r.dump(2);
    const double ml = r["lesion_volume_ml"].get<double>();
    std::printf("[ info ] %s: %.2f mL predicted\n", c.folders[0].c_str(), ml);
    EXPECT_LT(ml, c.max_ml) << c.folders[0] << ": " << r.dump(2);
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "no healthy real study present (see ../shared/realdicom)";
}

TEST_F(RealDicom, SiemensXaAdcAloneHasNoDwi) {
  REQUIRE_REAL("dcm_qa_xa30i__12001_DWI_dir80_AP_ADC");
  const json r = segment(real_dir("dcm_qa_xa30i__12001_DWI_dir80_AP_ADC"));
  EXPECT_EQ(r.value("error_code", ""), "not_found") << r.dump(2);
  EXPECT_NE(r.value("reason", "").find("no DWI series"), std::string::npos) << r.dump(2);
}

TEST_F(RealDicom, SiemensXaTraceAloneHasNoAdcAndNoB0) {
  REQUIRE_REAL("dcm_qa_xa30i__13001_DWI_dir80_AP_TRACEW");
  const json r = segment(real_dir("dcm_qa_xa30i__13001_DWI_dir80_AP_TRACEW"), "--allow-b-outside-range");
  EXPECT_EQ(r.value("error_code", ""), "not_found") << r.dump(2);
  EXPECT_NE(r.value("reason", "").find("no b=0 images"), std::string::npos) << r.dump(2);
}

TEST_F(RealDicom, NibabelMosaicIsUnpackedButItsPixelsAreBlank) {
  // nibabel ships these headers with the pixel data zeroed: the box must find b0 + b1000 in
  // two mosaics and then say plainly that there is no image.
  REQUIRE_REAL("nibabel__12_CBU_DTI_64D_1A");
  const json r = segment(real_dir("nibabel__12_CBU_DTI_64D_1A"));
  EXPECT_EQ(r.value("error_code", ""), "failed_precondition") << r.dump(2);
  EXPECT_NE(r.value("reason", "").find("zero in every voxel"), std::string::npos) << r.dump(2);
  const json& d = r["diffusion"];
  EXPECT_EQ(d["b_values_s_mm2"], json({0.0, 1000.0})) << d.dump();
  EXPECT_EQ(d["adc"], "derived");
  EXPECT_EQ(d["b_value_source"], "Siemens CSA B_value");
}

TEST_F(RealDicom, StudyWithoutFrameOfReferenceIsSegmentedWithoutSegAndSr) {
  REQUIRE_REAL("dcm_qa_canon_61__3000_DTI_PA-ortho__enh");
  const fs::path study = tmp_ / "noframe";
  fs::copy(real_dir("dcm_qa_canon_61__3000_DTI_PA-ortho__enh"), study);
  for (const auto& e : fs::directory_iterator(study)) {
    fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
  }
  const itest::CommandResult strip =
      itest::run_command("dcmodify -q -nb -ea '(0020,0052)' '" + study.string() + "'/* 2>&1");
  ASSERT_EQ(strip.exit_code, 0) << strip.output;
  const json r = segment(study.string());
  expect_done_with_outputs(r, out_, /*seg=*/false);
  ASSERT_TRUE(r.contains("warnings")) << r.dump(2);
  bool named = false;
  for (const json& w : r["warnings"]) named = named || w.get<std::string>().find("FrameOfReferenceUID") != std::string::npos;
  EXPECT_TRUE(named) << r["warnings"].dump();
  EXPECT_EQ(r["outputs"], json({"lesion_mask.nii.gz", "overlay/"}));
}

TEST_F(RealDicom, CanonEnhancedFileSentOverDicomToTheDaemonIsSegmented) {
  REQUIRE_REAL("dcm_qa_canon_61__3000_DTI_PA-ortho__enh");
  const std::string folder = real_dir("dcm_qa_canon_61__3000_DTI_PA-ortho__enh");
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile((*fs::directory_iterator(folder)).path().c_str()).good());
  OFString study_uid;
  ff.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study_uid);

  const int port = itest::free_port();
  const std::string log = (tmp_ / "daemon.log").string();
  itest::Child daemon({STROKEBOX_BINARY, "run", "--port", std::to_string(port), "--bind", "127.0.0.1", "--ae-title",
                       "STROKEBOX", "--data-dir", (tmp_ / "data").string(), "--model",
                       std::string(STROKEBOX_SOURCE_DIR) + "/models/demo", "--quiet-s", "1"},
                      log);
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    up = itest::run_command("echoscu -aec STROKEBOX 127.0.0.1 " + std::to_string(port) + " 2>/dev/null").exit_code == 0;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(up) << "daemon did not answer C-ECHO:\n" << itest::read_file(log);
  const itest::CommandResult sent =
      itest::run_command("storescu -aec STROKEBOX +sd +r 127.0.0.1 " + std::to_string(port) + " '" + folder + "' 2>&1");
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  // The daemon processes the study once it is quiet; no timing is asserted, only a generous
  // bound so a broken daemon cannot hang the suite.
  const fs::path report = tmp_ / "data" / "results" / study_uid.c_str() / "report.json";
  for (int i = 0; i < 4800 && !fs::exists(report); ++i) {
    ASSERT_TRUE(daemon.running()) << "daemon died:\n" << itest::read_file(log);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_TRUE(fs::exists(report)) << itest::read_file(log);
  const json r = json::parse(itest::read_file(report.string()), nullptr, false);
  ASSERT_EQ(r.value("status", ""), "done") << r.dump(2);
  EXPECT_EQ(r["diffusion"]["trace"], "computed");
  EXPECT_EQ(r["diffusion"]["trace_directions"], 12);
  EXPECT_EQ(r["diffusion"]["adc"], "derived");
  EXPECT_TRUE(fs::exists(report.parent_path() / "seg.dcm"));
  EXPECT_EQ(WEXITSTATUS(daemon.stop()), 0);
}

}  // namespace
