// Header-level regression tests on real scanner diffusion files (../shared/realdicom, see its
// README): the volumes each series splits into, and the Siemens MOSAIC geometry against the
// affine nibabel's own tests expect for the same file. Skipped when the folder is absent.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "image/diffusion_volumes.h"
#include "image/series_classifier.h"

namespace image {
namespace {

namespace fs = std::filesystem;

std::string real_dir(const std::string& name) { return std::string(STROKEBOX_SHARED_DIR) + "/realdicom/" + name; }

#define SKIP_WITHOUT(folder)                                                                          \
  if (!fs::is_directory(real_dir(folder))) {                                                          \
    GTEST_SKIP() << "real DICOM folder " << real_dir(folder) << " is absent (see ../shared/realdicom)"; \
  }

std::map<DiffusionImageKind, int> count_kinds(const std::vector<DiffusionVolume>& volumes) {
  std::map<DiffusionImageKind, int> out;
  for (const DiffusionVolume& v : volumes) ++out[v.kind];
  return out;
}

base::Result<std::vector<DiffusionVolume>> volumes_of(const std::string& folder) {
  SB_ASSIGN_OR_RETURN(DicomScan scan, scan_dicom_folder(real_dir(folder)));
  if (scan.series.size() != 1) return base::internal_error("expected one series");
  return split_diffusion_volumes(scan.series.front());
}

TEST(RealDiffusion, SiemensMosaicGeometryMatchesNibabel) {
  SKIP_WITHOUT("nibabel__12_CBU_DTI_64D_1A");
  auto header = read_dicom_header(real_dir("nibabel__12_CBU_DTI_64D_1A") + "/siemens_dwi_1000.dcm");
  ASSERT_TRUE(header.ok()) << header.status().to_string();
  ASSERT_EQ(header->instances.size(), 48u);  // CSA NumberOfImagesInMosaic
  const DicomInstance& tile = header->instances.front();
  EXPECT_EQ(tile.rows, 128);
  EXPECT_EQ(tile.columns, 128);
  ASSERT_TRUE(tile.b_value);
  EXPECT_DOUBLE_EQ(*tile.b_value, 1000.0);
  ASSERT_TRUE(tile.diffusion_direction);
  const auto& g = *tile.diffusion_direction;  // CSA: a unit vector (scanner axes)
  EXPECT_NEAR(g[0] * g[0] + g[1] * g[1] + g[2] * g[2], 1.0, 1e-3);
  auto stack = sort_slices(*header);
  ASSERT_TRUE(stack.ok()) << stack.status().to_string();
  // nibabel/nicom/tests/test_dicomwrappers.py EXPECTED_AFFINE (RAS, nibabel's axis order),
  // here in LPS with voxel axes (column, row, slice).
  const Eigen::Matrix4d& a = stack->grid.affine;
  const double expected[3][4] = {{1.796875, 0, 0, -115.0},
                                 {0, 1.79684984, 0.01570896, -135.028779},
                                 {0, -0.0094084375, 2.99995887, -78.710481}};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(a(r, c), expected[r][c], 1e-3) << "affine(" << r << ", " << c << ")";
  }
}

TEST(RealDiffusion, SiemensSagittalMosaicHasB0AndTwentyDirections) {
  SKIP_WITHOUT("dcm_qa_sag__4_DWI_SagAPmosaic");
  auto volumes = volumes_of("dcm_qa_sag__4_DWI_SagAPmosaic");
  ASSERT_TRUE(volumes.ok()) << volumes.status().to_string();
  auto kinds = count_kinds(*volumes);
  EXPECT_EQ(kinds[DiffusionImageKind::kB0], 1);
  EXPECT_EQ(kinds[DiffusionImageKind::kDirectional], 20);
  for (const DiffusionVolume& v : *volumes) {
    ASSERT_EQ(v.images.instances.size(), 48u) << describe_volume(v);
    EXPECT_EQ(v.images.instances.front().rows, 82);
  }
  EXPECT_TRUE(sort_slices(volumes->front().images).ok());
}

TEST(RealDiffusion, PhilipsScrambledSeriesSplitsIntoB0ThirtyTwoDirectionsAndIsotropic) {
  SKIP_WITHOUT("dcm_qa_philips__1201_DT_HIGH_32DIR");
  auto volumes = volumes_of("dcm_qa_philips__1201_DT_HIGH_32DIR");
  ASSERT_TRUE(volumes.ok()) << volumes.status().to_string();
  auto kinds = count_kinds(*volumes);
  EXPECT_EQ(kinds[DiffusionImageKind::kB0], 1);
  EXPECT_EQ(kinds[DiffusionImageKind::kTrace], 1);
  EXPECT_EQ(kinds[DiffusionImageKind::kDirectional], 32);
  EXPECT_EQ(volumes->size(), 34u);
  for (const DiffusionVolume& v : *volumes) {
    EXPECT_EQ(v.images.instances.size(), 20u) << describe_volume(v);
    EXPECT_TRUE(sort_slices(v.images).ok()) << describe_volume(v);
  }
}

TEST(RealDiffusion, GeBValuesFromThePrivateTagAndSixDirections) {
  SKIP_WITHOUT("dcm_qa_ge__4_Ax_DWI_TENSOR_R2MB2");
  auto volumes = volumes_of("dcm_qa_ge__4_Ax_DWI_TENSOR_R2MB2");
  ASSERT_TRUE(volumes.ok()) << volumes.status().to_string();
  auto kinds = count_kinds(*volumes);
  EXPECT_EQ(kinds[DiffusionImageKind::kB0], 1);
  EXPECT_EQ(kinds[DiffusionImageKind::kDirectional], 6);
  for (const DiffusionVolume& v : *volumes) EXPECT_EQ(v.images.instances.size(), 9u) << describe_volume(v);
}

TEST(RealDiffusion, CanonEnhancedFileSplitsByPerFrameDiffusionMacro) {
  SKIP_WITHOUT("dcm_qa_canon_61__3000_DTI_PA-ortho__enh");
  auto volumes = volumes_of("dcm_qa_canon_61__3000_DTI_PA-ortho__enh");
  ASSERT_TRUE(volumes.ok()) << volumes.status().to_string();
  auto kinds = count_kinds(*volumes);
  EXPECT_EQ(kinds[DiffusionImageKind::kB0], 1);
  EXPECT_EQ(kinds[DiffusionImageKind::kDirectional], 12);
  for (const DiffusionVolume& v : *volumes) {
    EXPECT_EQ(v.images.instances.size(), 40u) << describe_volume(v);
    if (v.b_value && *v.b_value > 50) {
      EXPECT_DOUBLE_EQ(*v.b_value, 1500.0);
    }
  }
}

TEST(RealDiffusion, SiemensXaInteroperabilityTraceAndAdcAreTheScannersOwn) {
  SKIP_WITHOUT("dcm_qa_xa30i__13001_DWI_dir80_AP_TRACEW");
  SKIP_WITHOUT("dcm_qa_xa30i__12001_DWI_dir80_AP_ADC");
  std::vector<DicomSeries> study;
  for (const char* folder : {"dcm_qa_xa30i__13001_DWI_dir80_AP_TRACEW", "dcm_qa_xa30i__12001_DWI_dir80_AP_ADC"}) {
    auto scan = scan_dicom_folder(real_dir(folder));
    ASSERT_TRUE(scan.ok()) << scan.status().to_string();
    for (DicomSeries& s : scan->series) study.push_back(std::move(s));
  }
  ClassifierOptions o;
  o.allow_b_outside_range = true;
  auto sel = select_diffusion_series(study, o);
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_FALSE(sel->trace_computed);
  EXPECT_FALSE(sel->adc_derived);
  EXPECT_DOUBLE_EQ(*sel->dwi_b_value, 2500.0);
  EXPECT_TRUE(sel->b_outside_range);
  EXPECT_EQ(sel->dwi.instances.size(), 39u);
  EXPECT_EQ(sel->adc.instances.size(), 39u);
  EXPECT_EQ(select_diffusion_series(study).status().code(), base::Code::kOutOfRange);
}

}  // namespace
}  // namespace image
