// Tests of the diffusion study paths on real files: b0 and b1000 mixed in one series (split by
// b-value), Enhanced MR multi-frame instances (per-frame functional groups) read into the same
// volume path, and the ADC derived from b0 and b1000 when no ADC series was sent.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include <dcmtk/dcmdata/dcitem.h>

#include "image/adc_map.h"
#include "image/dicom_series.h"
#include "image/series_classifier.h"
#include "tests/image/dicom_test_util.h"

namespace image {
namespace {

namespace fs = std::filesystem;
using namespace testutil;

constexpr int kRows = 5, kCols = 6, kSlices = 4;
constexpr double kAdc = 0.0008;  // mm^2/s

/// S0 at (i, j, k): a bright block on a dark background (the corners are background).
double s0(int i, int j, int k) {
  const bool tissue = i > 0 && i < kCols - 1 && j > 0 && j < kRows - 1;
  return tissue ? 2000.0 + 10 * i + 20 * j + 50 * k : 5.0;
}
double signal(double b, int i, int j, int k) { return s0(i, j, k) * std::exp(-b * kAdc); }

class DiffusionStudyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sb_diffusion_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// One classic single-frame series holding both b-values, files interleaved.
  void write_mixed_series() {
    const std::string uid = new_uid();
    int instance = 1;
    for (int k = 0; k < kSlices; ++k) {
      for (double b : {0.0, 1000.0}) {
        SliceSpec s;
        s.series_uid = uid;
        s.series_number = 7;
        s.description = "ep2d_diff_3scan_trace";
        s.image_type = "ORIGINAL\\PRIMARY\\DIFFUSION\\NONE";
        s.instance_number = instance;
        s.ipp = {-3.0, -2.0, 4.0 * k};
        s.rows = kRows;
        s.cols = kCols;
        for (int j = 0; j < kRows; ++j)
          for (int i = 0; i < kCols; ++i) s.pixels.push_back(static_cast<Uint16>(std::lround(signal(b, i, j, k))));
        s.extra = [b](DcmDataset& ds) { ds.putAndInsertFloat64(DCM_DiffusionBValue, b); };
        write_slice((dir_ / ("im" + std::to_string(instance++) + ".dcm")).string(), s);
      }
    }
  }

  /// One Enhanced MR instance: frames at b=0 and b=1000 (interleaved), positions in the
  /// per-frame Plane Position groups, orientation and spacing in the shared groups, the
  /// rescale per frame. `with_positions` false drops the per-frame positions.
  void write_enhanced(const std::string& path, bool with_positions = true) {
    DcmFileFormat ff;
    DcmDataset& ds = *ff.getDataset();
    ds.putAndInsertString(DCM_SOPClassUID, UID_EnhancedMRImageStorage);
    ds.putAndInsertString(DCM_SOPInstanceUID, new_uid().c_str());
    ds.putAndInsertString(DCM_StudyInstanceUID, "1.2.3.4");
    ds.putAndInsertString(DCM_SeriesInstanceUID, new_uid().c_str());
    ds.putAndInsertString(DCM_FrameOfReferenceUID, "1.2.3.4.5");
    ds.putAndInsertString(DCM_Modality, "MR");
    ds.putAndInsertString(DCM_SeriesDescription, "DWI enhanced");
    ds.putAndInsertString(DCM_SeriesNumber, "9");
    ds.putAndInsertString(DCM_InstanceNumber, "1");
    ds.putAndInsertString(DCM_ImageType, "ORIGINAL\\PRIMARY\\DIFFUSION\\NONE");
    ds.putAndInsertUint16(DCM_SamplesPerPixel, 1);
    ds.putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
    ds.putAndInsertUint16(DCM_Rows, kRows);
    ds.putAndInsertUint16(DCM_Columns, kCols);
    ds.putAndInsertUint16(DCM_BitsAllocated, 16);
    ds.putAndInsertUint16(DCM_BitsStored, 16);
    ds.putAndInsertUint16(DCM_HighBit, 15);
    ds.putAndInsertUint16(DCM_PixelRepresentation, 0);
    const int frames = 2 * kSlices;
    ds.putAndInsertString(DCM_NumberOfFrames, std::to_string(frames).c_str());
    DcmItem* shared = nullptr;
    ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0).good());
    DcmItem* m = nullptr;
    ASSERT_TRUE(shared->findOrCreateSequenceItem(DCM_PixelMeasuresSequence, m, 0).good());
    m->putAndInsertString(DCM_PixelSpacing, "0.9\\0.8");
    m->putAndInsertString(DCM_SliceThickness, "4");
    ASSERT_TRUE(shared->findOrCreateSequenceItem(DCM_PlaneOrientationSequence, m, 0).good());
    m->putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
    std::vector<Uint16> pixels;
    // Frames in acquisition order: slice 3 first (the reader must sort by position).
    for (int f = 0; f < frames; ++f) {
      const int k = kSlices - 1 - f / 2;
      const double b = (f % 2 == 0) ? 0.0 : 1000.0;
      DcmItem* frame = nullptr;
      ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_PerFrameFunctionalGroupsSequence, frame, f).good());
      if (with_positions) {
        ASSERT_TRUE(frame->findOrCreateSequenceItem(DCM_PlanePositionSequence, m, 0).good());
        m->putAndInsertString(DCM_ImagePositionPatient, ds_list({-3.0, -2.0, 4.0 * k}).c_str());
      }
      ASSERT_TRUE(frame->findOrCreateSequenceItem(DCM_MRDiffusionSequence, m, 0).good());
      m->putAndInsertFloat64(DCM_DiffusionBValue, b);
      ASSERT_TRUE(frame->findOrCreateSequenceItem(DCM_PixelValueTransformationSequence, m, 0).good());
      m->putAndInsertString(DCM_RescaleSlope, "0.5");
      m->putAndInsertString(DCM_RescaleIntercept, "0");
      for (int j = 0; j < kRows; ++j)
        for (int i = 0; i < kCols; ++i) pixels.push_back(static_cast<Uint16>(std::lround(2 * signal(b, i, j, k))));
    }
    ds.putAndInsertUint16Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size()));
    ASSERT_TRUE(ff.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
  }

  /// Selection + assembly + derivation, as the pipeline does it.
  void expect_derived_adc(const DicomScan& scan) {
    auto sel = select_diffusion_series(scan.series);
    ASSERT_TRUE(sel.ok()) << sel.status().to_string();
    ASSERT_TRUE(sel->adc_derived);
    ASSERT_EQ(sel->dwi.instances.size(), static_cast<size_t>(kSlices));
    ASSERT_EQ(sel->b0.instances.size(), static_cast<size_t>(kSlices));
    auto dwi = assemble_volume(sel->dwi);
    auto b0 = assemble_volume(sel->b0);
    ASSERT_TRUE(dwi.ok()) << dwi.status().to_string();
    ASSERT_TRUE(b0.ok()) << b0.status().to_string();
    ASSERT_TRUE(dwi->grid.same_as(b0->grid));
    ASSERT_EQ(dwi->grid.dims, (std::array<int64_t, 3>{kCols, kRows, kSlices}));
    for (int k = 0; k < kSlices; ++k) {
      EXPECT_NEAR(b0->at(2, 2, k), s0(2, 2, k), 1.0) << k;
      EXPECT_NEAR(dwi->at(2, 2, k), signal(1000, 2, 2, k), 1.0) << k;
    }
    auto adc = derive_adc(*b0, *dwi, *sel->dwi_b_value);
    ASSERT_TRUE(adc.ok()) << adc.status().to_string();
    EXPECT_NEAR(adc->at(2, 2, 1), kAdc * 1e6, 5.0);  // tissue
    EXPECT_EQ(adc->at(0, 0, 1), 0.0f);               // background corner
  }

  fs::path dir_;
};

TEST_F(DiffusionStudyTest, MixedB0AndB1000SeriesIsSplitAndGivesADerivedAdc) {
  write_mixed_series();
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  ASSERT_EQ(scan->series.size(), 1u);
  ASSERT_EQ(scan->series[0].instances.size(), static_cast<size_t>(2 * kSlices));
  // The whole series is not one stack (two images per position)...
  EXPECT_NE(sort_slices(scan->series[0]).status().message().find("mixes b-values"), std::string::npos);
  // ...but each b-value is.
  expect_derived_adc(*scan);
}

TEST_F(DiffusionStudyTest, EnhancedMrFramesAreReadWithTheirFunctionalGroups) {
  write_enhanced((dir_ / "enhanced.dcm").string());
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  ASSERT_EQ(scan->series.size(), 1u);
  const auto& frames = scan->series[0].instances;
  ASSERT_EQ(frames.size(), static_cast<size_t>(2 * kSlices));
  EXPECT_EQ(frames[0].frame_index, 0);
  EXPECT_EQ(frames[7].frame_index, 7);
  EXPECT_DOUBLE_EQ((*frames[0].image_position_patient)[2], 4.0 * (kSlices - 1));
  EXPECT_DOUBLE_EQ(*frames[1].b_value, 1000.0);
  EXPECT_DOUBLE_EQ(frames[1].rescale_slope, 0.5);
  EXPECT_DOUBLE_EQ((*frames[1].pixel_spacing_mm)[0], 0.9);
  expect_derived_adc(*scan);
  // Spacing from the shared Pixel Measures group: columns 0.8 mm, rows 0.9 mm, slices 4 mm.
  auto sel = select_diffusion_series(scan->series);
  ASSERT_TRUE(sel.ok());
  auto dwi = assemble_volume(sel->dwi);
  ASSERT_TRUE(dwi.ok());
  const auto spacing = dwi->grid.spacing_mm();
  EXPECT_NEAR(spacing[0], 0.8, 1e-9);
  EXPECT_NEAR(spacing[1], 0.9, 1e-9);
  EXPECT_NEAR(spacing[2], 4.0, 1e-9);
}

TEST_F(DiffusionStudyTest, EnhancedMrWithoutFramePositionsIsUnimplementedWithTheReason) {
  write_enhanced((dir_ / "enhanced.dcm").string(), /*with_positions=*/false);
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  ASSERT_EQ(scan->series[0].instances.size(), 1u);
  auto volume = assemble_volume(scan->series[0]);
  ASSERT_EQ(volume.status().code(), base::Code::kUnimplemented);
  EXPECT_NE(volume.status().message().find("Plane Position"), std::string::npos) << volume.status().message();
}

}  // namespace
}  // namespace image
