// Tests of image/series_classifier: choosing the DWI (b about 1000) and ADC series of a study
// from in-memory series descriptions (the tag reading itself is tested in dicom_series_test).
#include "image/series_classifier.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace image {
namespace {

/// A series of `slices` positions; each position repeated once per b-value in `bs` (none: no
/// b-value tag at all).
DicomSeries make_series(int number, const std::string& description, const std::vector<std::string>& image_type,
                        const std::vector<double>& bs = {}, int slices = 4, const std::string& for_uid = "1.2.9") {
  DicomSeries s;
  s.series_instance_uid = "1.2.3." + std::to_string(number);
  s.series_number = number;
  s.series_description = description;
  s.modality = "MR";
  s.frame_of_reference_uid = for_uid;
  s.study.study_instance_uid = "1.2.3";
  const std::vector<std::optional<double>> b_list =
      bs.empty() ? std::vector<std::optional<double>>{std::nullopt}
                 : std::vector<std::optional<double>>(bs.begin(), bs.end());
  int instance = 1;
  for (const auto& b : b_list) {
    for (int k = 0; k < slices; ++k) {
      DicomInstance inst;
      inst.sop_instance_uid = s.series_instance_uid + "." + std::to_string(instance);
      inst.instance_number = instance++;
      inst.rows = 8;
      inst.columns = 8;
      inst.image_position_patient = std::array<double, 3>{0, 0, 5.0 * k};
      inst.image_orientation_patient = std::array<double, 6>{1, 0, 0, 0, 1, 0};
      inst.pixel_spacing_mm = std::array<double, 2>{1, 1};
      inst.image_type = image_type;
      inst.series_description = description;
      inst.b_value = b;
      s.instances.push_back(inst);
    }
  }
  return s;
}

TEST(SeriesClassifier, ClassifiesByImageTypeBValueAndDescription) {
  EXPECT_EQ(classify_series(make_series(1, "x", {"DERIVED", "PRIMARY", "DIFFUSION", "ADC"})).kind, SeriesKind::kAdc);
  EXPECT_EQ(classify_series(make_series(2, "Apparent Diffusion Coefficient (mm2/s)", {"DERIVED"})).kind,
            SeriesKind::kAdc);
  EXPECT_EQ(classify_series(make_series(3, "ep2d_diff_ADC", {"DERIVED"})).kind, SeriesKind::kAdc);
  EXPECT_EQ(classify_series(make_series(4, "ax", {"ORIGINAL"}, {0, 1000})).kind, SeriesKind::kDwi);
  EXPECT_EQ(classify_series(make_series(5, "ax", {"ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"})).kind,
            SeriesKind::kDwi);
  EXPECT_EQ(classify_series(make_series(6, "DWI b1000", {"ORIGINAL"})).kind, SeriesKind::kDwi);
  EXPECT_EQ(classify_series(make_series(7, "t2_flair_tra", {"ORIGINAL", "PRIMARY", "M"})).kind, SeriesKind::kOther);
  EXPECT_EQ(classify_series(make_series(8, "eADC", {"DERIVED"})).kind, SeriesKind::kOther);
  EXPECT_EQ(classify_series(make_series(9, "dti FA", {"DERIVED", "PRIMARY", "FA"})).kind, SeriesKind::kOther);
  DicomSeries seg = make_series(10, "ADC lesion", {"DERIVED"});
  seg.modality = "SEG";
  EXPECT_EQ(classify_series(seg).kind, SeriesKind::kOther);
}

TEST(SeriesClassifier, PicksTheB1000InstancesOfAMixedSeriesAndItsAdc) {
  const std::vector<DicomSeries> study = {
      make_series(1, "localizer", {"ORIGINAL", "PRIMARY", "M"}, {}, 3),
      make_series(5, "ep2d_diff_3scan_trace", {"ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"}, {0, 1000}),
      make_series(6, "ep2d_diff_3scan_trace_ADC", {"DERIVED", "PRIMARY", "DIFFUSION", "ADC"}),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_EQ(sel->dwi.series_number, 5);
  ASSERT_TRUE(sel->dwi_b_value.has_value());
  EXPECT_DOUBLE_EQ(*sel->dwi_b_value, 1000.0);
  ASSERT_EQ(sel->dwi.instances.size(), 4u);
  for (const auto& inst : sel->dwi.instances) EXPECT_DOUBLE_EQ(*inst.b_value, 1000.0);
  EXPECT_EQ(sel->adc.series_number, 6);
  EXPECT_NE(sel->reason.find("b=1000"), std::string::npos) << sel->reason;
}

TEST(SeriesClassifier, PrefersTheBValueClosestToTarget) {
  const std::vector<DicomSeries> study = {
      make_series(3, "dwi", {"ORIGINAL"}, {0, 1400}),
      make_series(4, "dwi", {"ORIGINAL"}, {0, 800, 2000}),
      make_series(7, "dwi", {"ORIGINAL"}, {0, 1100}),
      make_series(8, "ADC", {"DERIVED"}),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->dwi.series_number, 7);
  EXPECT_DOUBLE_EQ(*sel->dwi_b_value, 1100.0);
}

TEST(SeriesClassifier, RefusesBValuesOutsideTheAcceptedRange) {
  const std::vector<DicomSeries> study = {
      make_series(3, "dwi", {"ORIGINAL"}, {0, 2000}),
      make_series(4, "ADC", {"DERIVED", "PRIMARY", "ADC"}),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_EQ(sel.status().code(), base::Code::kOutOfRange);
  const std::string m = sel.status().message();
  EXPECT_NE(m.find("b = 2000 s/mm^2"), std::string::npos) << m;
  EXPECT_NE(m.find("700 to 1500 s/mm^2"), std::string::npos) << m;
  // Allowed: segmented at b=2000 with a warning.
  ClassifierOptions allow;
  allow.allow_b_outside_range = true;
  auto allowed = select_diffusion_series(study, allow);
  ASSERT_TRUE(allowed.ok()) << allowed.status().to_string();
  EXPECT_DOUBLE_EQ(*allowed->dwi_b_value, 2000.0);
  EXPECT_TRUE(allowed->b_outside_range);
  ASSERT_EQ(allowed->warnings.size(), 1u);
  EXPECT_NE(allowed->warnings[0].find("outside the b-value range"), std::string::npos) << allowed->warnings[0];
}

TEST(SeriesClassifier, NoAdcAndNoB0IsNotFoundAndListsTheSeries) {
  const std::vector<DicomSeries> study = {
      make_series(2, "t2_tse_tra", {"ORIGINAL", "PRIMARY", "M"}),
      make_series(3, "DWI", {"ORIGINAL"}, {500, 1000}),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_EQ(sel.status().code(), base::Code::kNotFound);
  const std::string m = sel.status().message();
  EXPECT_NE(m.find("no ADC series found in study 1.2.3"), std::string::npos) << m;
  EXPECT_NE(m.find("t2_tse_tra"), std::string::npos) << m;
  EXPECT_NE(m.find("#3 'DWI'"), std::string::npos) << m;
  EXPECT_NE(m.find("no b=0 images"), std::string::npos) << m;
}

TEST(SeriesClassifier, B0AndB1000InOneSeriesWithoutAdcAreSplitAndMarkedForDerivation) {
  const std::vector<DicomSeries> study = {
      make_series(2, "t2_tse_tra", {"ORIGINAL", "PRIMARY", "M"}),
      make_series(3, "ep2d_diff", {"ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"}, {0, 1000}, 5),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_TRUE(sel->adc_derived);
  EXPECT_TRUE(sel->adc.instances.empty());
  ASSERT_EQ(sel->dwi.instances.size(), 5u);
  ASSERT_EQ(sel->b0.instances.size(), 5u);
  for (const auto& inst : sel->dwi.instances) EXPECT_EQ(*inst.b_value, 1000.0);
  for (const auto& inst : sel->b0.instances) EXPECT_EQ(*inst.b_value, 0.0);
  EXPECT_EQ(sel->b0_value, 0.0);
  EXPECT_NE(sel->reason.find("ADC derived from b=0"), std::string::npos) << sel->reason;
}

TEST(SeriesClassifier, B0InASeparateSeriesOfTheSameGeometryIsUsedForDerivation) {
  const std::vector<DicomSeries> study = {
      make_series(3, "DWI b0", {"ORIGINAL", "PRIMARY", "DIFFUSION"}, {0}, 4),
      make_series(4, "DWI b0 other frame", {"ORIGINAL", "PRIMARY", "DIFFUSION"}, {0}, 4, "9.9.9"),
      make_series(5, "DWI b1000", {"ORIGINAL", "PRIMARY", "DIFFUSION"}, {1000}, 4),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_TRUE(sel->adc_derived);
  EXPECT_EQ(sel->dwi.series_number, 5);
  EXPECT_EQ(sel->b0.series_number, 3);  // same Frame of Reference as the DWI
}

TEST(SeriesClassifier, AnAdcSeriesIsPreferredOverDerivation) {
  const std::vector<DicomSeries> study = {
      make_series(3, "ep2d_diff", {"ORIGINAL", "PRIMARY", "DIFFUSION"}, {0, 1000}),
      make_series(4, "ep2d_diff_ADC", {"DERIVED", "PRIMARY", "DIFFUSION", "ADC"}),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_FALSE(sel->adc_derived);
  EXPECT_EQ(sel->adc.series_number, 4);
}

TEST(SeriesClassifier, EquallyGoodRepeatsPickTheLatestAndSaySo) {
  const std::vector<DicomSeries> study = {
      make_series(4, "DWI", {"ORIGINAL"}, {1000}),
      make_series(9, "DWI repeat", {"ORIGINAL"}, {1000}),
      make_series(5, "ADC", {"DERIVED", "PRIMARY", "ADC"}),
      make_series(10, "ADC", {"DERIVED", "PRIMARY", "ADC"}),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->dwi.series_number, 9);
  EXPECT_EQ(sel->adc.series_number, 10);  // nearest series number to the chosen DWI
  EXPECT_NE(sel->reason.find("2 equally good DWI series"), std::string::npos) << sel->reason;
}

TEST(SeriesClassifier, AdcInTheDwiFrameOfReferenceWins) {
  const std::vector<DicomSeries> study = {
      make_series(4, "DWI", {"ORIGINAL"}, {1000}, 4, "1.2.9"),
      make_series(5, "ADC", {"DERIVED", "PRIMARY", "ADC"}, {}, 4, "1.2.other"),
      make_series(12, "ADC", {"DERIVED", "PRIMARY", "ADC"}, {}, 4, "1.2.9"),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->adc.series_number, 12);
}

TEST(SeriesClassifier, DescriptionOnlyDwiIsAcceptedWhenNoBValueIsPresent) {
  const std::vector<DicomSeries> study = {
      make_series(4, "DWI_b1000_tra", {"ORIGINAL", "PRIMARY", "M"}),
      make_series(5, "ADC", {"DERIVED"}),
  };
  auto sel = select_diffusion_series(study);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->dwi.series_number, 4);
  EXPECT_FALSE(sel->dwi_b_value.has_value());
}

TEST(SeriesClassifier, RefusesSeriesFromSeveralStudies) {
  std::vector<DicomSeries> study = {make_series(4, "DWI", {"ORIGINAL"}, {1000}), make_series(5, "ADC", {"ADC"})};
  study[1].study.study_instance_uid = "9.9.9";
  EXPECT_EQ(select_diffusion_series(study).status().code(), base::Code::kInvalidArgument);
}

}  // namespace
}  // namespace image
