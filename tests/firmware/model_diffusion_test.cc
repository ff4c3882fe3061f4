// Tests of the model's accepted b-values (model.json "diffusion", docs/model_package.md), of
// the daemon's [model] allow_b_outside_range key and of the model's postprocessing
// (model.json "postprocessing").
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "firmware/config.h"
#include "firmware/pipeline.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

class ModelDiffusionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_model_diffusion_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& text) { std::ofstream(dir_ / "model.json") << text; }
  fs::path dir_;
};

TEST_F(ModelDiffusionTest, AbsentKeyGivesTheDefaults) {
  write(R"({"format": "strokebox-model/1"})");
  auto d = read_model_diffusion(dir_.string());
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_FALSE(d->from_model_json);
  EXPECT_DOUBLE_EQ(d->b_value, 1000.0);
  EXPECT_DOUBLE_EQ(d->b_min, 700.0);
  EXPECT_DOUBLE_EQ(d->b_max, 1500.0);
}

TEST_F(ModelDiffusionTest, ReadsTheBValueAndTheRange) {
  write(R"({"diffusion": {"b_value_s_mm2": 2000, "accepted_b_range_s_mm2": [1500, 2500]}})");
  auto d = read_model_diffusion(dir_.string());
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_TRUE(d->from_model_json);
  EXPECT_DOUBLE_EQ(d->b_value, 2000.0);
  EXPECT_DOUBLE_EQ(d->b_min, 1500.0);
  EXPECT_DOUBLE_EQ(d->b_max, 2500.0);
}

TEST_F(ModelDiffusionTest, BadValuesNameTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"diffusion": {"b_value_s_mm2": "1000", "accepted_b_range_s_mm2": [700, 1500]}})", "b_value_s_mm2"},
      {R"({"diffusion": {"b_value_s_mm2": 1000, "accepted_b_range_s_mm2": [700]}})", "accepted_b_range_s_mm2"},
      {R"({"diffusion": {"b_value_s_mm2": 1000, "accepted_b_range_s_mm2": [0, 1500]}})", "above 50"},
      {R"({"diffusion": {"b_value_s_mm2": 3000, "accepted_b_range_s_mm2": [700, 1500]}})", "outside"},
      {R"({"diffusion": {"b_value_s_mm2": 1000, "accepted_b_range_s_mm2": [700, 1500], "bmax": 3}})", "unknown key"},
  };
  for (const auto& [text, expected] : cases) {
    write(text);
    auto d = read_model_diffusion(dir_.string());
    ASSERT_EQ(d.status().code(), base::Code::kInvalidArgument) << text;
    EXPECT_NE(d.status().message().find(expected), std::string::npos) << d.status().message();
    EXPECT_NE(d.status().message().find("model.json: diffusion"), std::string::npos) << d.status().message();
  }
}

TEST_F(ModelDiffusionTest, TheDemoModelStatesItsRange) {
  auto d = read_model_diffusion(std::string(STROKEBOX_SOURCE_DIR) + "/models/demo");
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_TRUE(d->from_model_json);
  EXPECT_DOUBLE_EQ(d->b_value, 1000.0);
  // Its postprocessing, chosen on validation data (models/demo/TRAINING.md): fat and noise-floor
  // false positives out, lesions without restricted diffusion kept (flagged).
  auto p = read_model_postprocessing(std::string(STROKEBOX_SOURCE_DIR) + "/models/demo");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->implausible_lesions, ImplausibleLesions::kExcludeBelowTissue);
}

TEST_F(ModelDiffusionTest, PostprocessingKeepsImplausibleLesionsUnlessTheModelSaysExclude) {
  write(R"({"format": "strokebox-model/1"})");
  auto absent = read_model_postprocessing(dir_.string());
  ASSERT_TRUE(absent.ok()) << absent.status().to_string();
  // An imported nnU-Net model's mask stays nnU-Net's.
  EXPECT_EQ(absent->implausible_lesions, ImplausibleLesions::kKeep);
  for (auto mode : {ImplausibleLesions::kKeep, ImplausibleLesions::kExcludeBelowTissue, ImplausibleLesions::kExcludeAll}) {
    write(std::string(R"({"postprocessing": {"implausible_lesions": ")") + implausible_lesions_name(mode) + "\"}}");
    auto p = read_model_postprocessing(dir_.string());
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->implausible_lesions, mode) << implausible_lesions_name(mode);
    EXPECT_EQ(parse_implausible_lesions(implausible_lesions_name(mode)), mode);
  }
  EXPECT_STREQ(implausible_lesions_name(ImplausibleLesions::kExcludeBelowTissue), "exclude-below-tissue-adc");
  EXPECT_FALSE(parse_implausible_lesions("Exclude").has_value());
}

TEST_F(ModelDiffusionTest, BadPostprocessingNamesTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"postprocessing": "exclude"})", "expected an object"},
      {R"({"postprocessing": {"implausible_lesions": true}})", "implausible_lesions: expected"},
      {R"({"postprocessing": {"implausible_lesions": "drop"}})", "\"drop\""},
      {R"({"postprocessing": {"largest_component_only": true}})", "unknown key"},
  };
  for (const auto& [text, expected] : cases) {
    write(text);
    auto p = read_model_postprocessing(dir_.string());
    ASSERT_EQ(p.status().code(), base::Code::kInvalidArgument) << text;
    EXPECT_NE(p.status().message().find(expected), std::string::npos) << p.status().message();
    EXPECT_NE(p.status().message().find("model.json: postprocessing"), std::string::npos) << p.status().message();
  }
  fs::remove(dir_ / "model.json");
  EXPECT_EQ(read_model_postprocessing(dir_.string()).status().code(), base::Code::kNotFound);
}

TEST_F(ModelDiffusionTest, ConfigKeyAllowsBOutsideTheRange) {
  std::ofstream(dir_ / "box.toml") << "[model]\nallow_b_outside_range = true\n";
  auto c = load_config((dir_ / "box.toml").string());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->model.allow_b_outside_range);
  EXPECT_FALSE(Config{}.model.allow_b_outside_range);
}

TEST_F(ModelDiffusionTest, ConfigKeyOverridesTheModelsPostprocessingAndRefusesUnknownModes) {
  EXPECT_TRUE(Config{}.model.implausible_lesions.empty());  // the model's
  std::ofstream(dir_ / "box.toml") << "[model]\nimplausible_lesions = \"keep\"\n";
  auto c = load_config((dir_ / "box.toml").string());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->model.implausible_lesions, "keep");
  std::ofstream(dir_ / "box.toml") << "[model]\nimplausible_lesions = \"drop\"\n";
  auto bad = load_config((dir_ / "box.toml").string());
  ASSERT_EQ(bad.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("model.implausible_lesions 'drop'"), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace firmware
