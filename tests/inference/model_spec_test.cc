// model.json parsing and validation (inference/model_spec.h): the documented example, errors that
// name the bad field, round trip, files, and conversion from nnU-Net plans.
#include "inference/model_spec.h"
#include "tests/support/shared_data.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <unistd.h>

namespace inference {
namespace {

using json = nlohmann::json;

const std::string kModel =
    std::string(STROKEBOX_SHARED_DIR) + "/golden/model/Dataset990_GoldenTiny/nnUNetTrainer__nnUNetPlans__3d_fullres";

json example() {
  return json::parse(R"({
    "format": "strokebox-model/1",
    "model_id": "strokebox-demo-2026.11",
    "networks": ["model.onnx"],
    "channels": [
      {"name": "DWI", "normalization": "ZScoreNormalization", "use_mask_for_norm": false},
      {"name": "ADC", "normalization": "ZScoreNormalization", "use_mask_for_norm": true}
    ],
    "target_spacing_mm": [2.0, 1.5, 1.5],
    "patch_size": [64, 64, 32],
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "labels": {"background": 0, "lesion": 1},
    "regions_class_order": null,
    "use_mirroring": true,
    "mirroring_axes": [0, 1, 2],
    "tile_step_size": 0.5,
    "resampling": {"data_order": 3, "data_order_z": 0, "probabilities_order": 1,
                   "probabilities_order_z": 0, "force_separate_z": null},
    "provenance": {"source": "tools/train_demo.py", "seed": 1}
  })");
}

std::string error_of(const json& doc) {
  auto r = parse_model_spec(doc);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), base::Code::kInvalidArgument);
  return r.status().message();
}

TEST(ModelSpec, ParsesTheDocumentedExample) {
  auto r = parse_model_spec(example());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->model_id, "strokebox-demo-2026.11");
  ASSERT_EQ(r->channels.size(), 2u);
  EXPECT_EQ(r->channels[1].name, "ADC");
  EXPECT_TRUE(r->channels[1].use_mask_for_norm);
  EXPECT_EQ(r->target_spacing_mm, (std::array<double, 3>{2.0, 1.5, 1.5}));
  EXPECT_EQ(r->patch_size, (std::array<int64_t, 3>{64, 64, 32}));
  EXPECT_EQ(r->num_outputs(), 2);
  EXPECT_FALSE(r->has_regions());
  EXPECT_TRUE(r->use_mirroring);
  EXPECT_FALSE(r->resampling.force_separate_z.has_value());
  EXPECT_EQ(r->accumulation, Accumulation::kFloat32);  // default
  EXPECT_EQ(r->provenance["seed"], 1);
}

TEST(ModelSpec, RoundTripsThroughJson) {
  auto r = parse_model_spec(example());
  ASSERT_TRUE(r.ok());
  auto again = parse_model_spec(model_spec_to_json(*r));
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(model_spec_to_json(*again), model_spec_to_json(*r));
}

TEST(ModelSpec, ErrorsNameTheBadField) {
  json d = example();
  d["channels"][1]["normalization"] = "Bogus";
  EXPECT_NE(error_of(d).find("channels[1].normalization"), std::string::npos);

  d = example();
  d["patch_size"] = {64, 64};
  EXPECT_NE(error_of(d).find("patch_size"), std::string::npos);

  d = example();
  d["target_spacing_mm"][2] = -1.0;
  EXPECT_NE(error_of(d).find("target_spacing_mm[2]"), std::string::npos);

  d = example();
  d["transpose_forward"] = {0, 0, 2};
  EXPECT_NE(error_of(d).find("transpose_forward"), std::string::npos);

  d = example();
  d["transpose_forward"] = {2, 0, 1};  // backward left at identity: not the inverse
  EXPECT_NE(error_of(d).find("transpose_backward"), std::string::npos);

  d = example();
  d.erase("model_id");
  EXPECT_NE(error_of(d).find("model_id: missing"), std::string::npos);

  d = example();
  d["format"] = "strokebox-model/9";
  EXPECT_NE(error_of(d).find("format"), std::string::npos);

  d = example();
  d["channels"][0]["use_mask_for_norm"] = "yes";
  EXPECT_NE(error_of(d).find("channels[0].use_mask_for_norm"), std::string::npos);

  d = example();
  d["resampling"]["data_order"] = 2;
  EXPECT_NE(error_of(d).find("resampling.data_order"), std::string::npos);

  d = example();
  d["tile_step_size"] = 0.0;
  EXPECT_NE(error_of(d).find("tile_step_size"), std::string::npos);

  d = example();
  d["mirroring_axes"] = {0, 3};
  EXPECT_NE(error_of(d).find("mirroring_axes"), std::string::npos);

  d = example();
  d["labels"] = {{"background", 0}, {"lesion", 2}};
  EXPECT_NE(error_of(d).find("labels"), std::string::npos);

  d = example();
  d["networks"] = {"../../etc/passwd"};
  EXPECT_NE(error_of(d).find("networks[0]"), std::string::npos);

  d = example();
  d["accumulation"] = "fp8";
  EXPECT_NE(error_of(d).find("accumulation"), std::string::npos);
}

TEST(ModelSpec, CTNormalizationNeedsIntensityProperties) {
  json d = example();
  d["channels"][0]["normalization"] = "CTNormalization";
  EXPECT_NE(error_of(d).find("channels[0].intensity_properties"), std::string::npos);
  d["channels"][0]["intensity_properties"] = {{"mean", 50.0}, {"std", 10.0}, {"percentile_00_5", -10.0},
                                              {"percentile_99_5", 200.0}};
  auto r = parse_model_spec(d);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->channels[0].normalization, Normalization::kCT);
  EXPECT_DOUBLE_EQ(r->channels[0].intensity_properties->percentile_99_5, 200.0);
}

TEST(ModelSpec, AdcChannelUnitIsParsedKeptAndChecked) {
  json d = example();
  EXPECT_EQ(parse_model_spec(d)->channels[1].unit, "");  // absent: values used as given
  d["channels"][1]["normalization"] = "CTNormalization";
  d["channels"][1]["intensity_properties"] = {{"mean", 600.0}, {"std", 200.0}, {"percentile_00_5", 300.0},
                                              {"percentile_99_5", 1400.0}};
  d["channels"][1]["unit"] = "1e-6 mm2/s";
  auto r = parse_model_spec(d);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->channels[1].unit, kAdcMicroUnit);
  EXPECT_EQ(model_spec_to_json(*r)["channels"][1]["unit"], "1e-6 mm2/s");
  d["channels"][1]["unit"] = "mm2/s";
  const std::string e = error_of(d);
  EXPECT_NE(e.find("channels[1].unit"), std::string::npos) << e;
  EXPECT_NE(e.find("1e-6 mm2/s"), std::string::npos) << e;
}

TEST(ModelSpec, RegionModelNeedsMatchingRegionsClassOrder) {
  json d = example();
  d["labels"] = {{"background", 0}, {"whole", {1, 2}}, {"core", 2}};
  d["regions_class_order"] = {1, 2};
  auto r = parse_model_spec(d);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->has_regions());
  EXPECT_EQ(r->num_outputs(), 2);
  EXPECT_EQ(r->max_label(), 2);
  d["regions_class_order"] = {1};
  EXPECT_NE(error_of(d).find("regions_class_order"), std::string::npos);
  d["regions_class_order"] = nullptr;
  EXPECT_NE(error_of(d).find("regions_class_order"), std::string::npos);
}

TEST(ModelSpec, DefaultsForOptionalFields) {
  json d = example();
  for (const char* k : {"networks", "transpose_forward", "transpose_backward", "regions_class_order", "use_mirroring",
                        "mirroring_axes", "tile_step_size", "resampling", "provenance"})
    d.erase(k);
  auto r = parse_model_spec(d);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->networks, (std::vector<std::string>{"model.onnx"}));
  EXPECT_FALSE(r->use_mirroring);
  EXPECT_EQ(r->resampling.data_order, 3);
  EXPECT_EQ(r->resampling.probabilities_order, 1);
  EXPECT_DOUBLE_EQ(r->tile_step_size, 0.5);
}

TEST(ModelSpec, LoadsFromFolderAndReportsMissingOrBrokenFiles) {
  const auto dir = std::filesystem::temp_directory_path() / ("model_spec_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  EXPECT_EQ(load_model_spec(dir.string()).status().code(), base::Code::kNotFound);
  {
    std::ofstream(dir / "model.json") << "{ not json";
  }
  auto bad = load_model_spec(dir.string());
  EXPECT_EQ(bad.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("model.json"), std::string::npos);
  {
    std::ofstream(dir / "model.json") << example().dump(2);
  }
  auto ok = load_model_spec(dir.string());
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->model_dir, dir.string());
  std::filesystem::remove_all(dir);
}

TEST(ModelSpec, ConvertsNnunetPlansOfTheGoldenModel) {
  SKIP_WITHOUT_GOLDEN();
  std::ifstream pf(kModel + "/plans.json"), df(kModel + "/dataset.json");
  const json plans = json::parse(pf), dataset = json::parse(df);
  auto r = spec_from_nnunet_plans(plans, dataset, "3d_fullres");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->patch_size, (std::array<int64_t, 3>{32, 32, 32}));
  EXPECT_EQ(r->target_spacing_mm, (std::array<double, 3>{2.0, 1.5, 1.5}));
  ASSERT_EQ(r->channels.size(), 2u);
  EXPECT_EQ(r->channels[0].name, "DWI");
  EXPECT_EQ(r->channels[1].name, "ADC");
  EXPECT_TRUE(r->channels[0].use_mask_for_norm);
  EXPECT_EQ(r->num_outputs(), 2);
  EXPECT_EQ(r->accumulation, Accumulation::kFloat16);
  EXPECT_EQ(spec_from_nnunet_plans(plans, dataset, "3d_lowres").status().code(), base::Code::kInvalidArgument);
}

}  // namespace
}  // namespace inference
