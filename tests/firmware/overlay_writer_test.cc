// Tests of firmware/overlay_writer and firmware/png_writer: one RGB Secondary Capture per
// sorted DWI slice in the DWI's study, with the lesion coloured, the text band burned in,
// source references, dciodvfy clean; a phantom study gives the preview PNG for the docs
// (written to $STROKEBOX_OVERLAY_PNG when set).
#include "firmware/overlay_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "firmware/png_writer.h"
#include "image/dicom_series.h"
#include "image/phantom.h"
#include "tests/firmware/dicom_output_test_util.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

constexpr int kCols = 64, kRows = 48, kSlices = 3;

std::string get(DcmItem& item, const DcmTagKey& key) {
  OFString v;
  item.findAndGetOFStringArray(key, v);
  return v.c_str();
}

class OverlayWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sb_overlay_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(testing::write_test_mr_series(dir_ / "study", kCols, kRows, kSlices));
    auto scan = image::scan_dicom_folder((dir_ / "study").string());
    ASSERT_TRUE(scan.ok()) << scan.status().to_string();
    series_ = scan->series.at(0);
    auto volume = image::assemble_volume(series_);
    ASSERT_TRUE(volume.ok()) << volume.status().to_string();
    volume_ = *volume;
    mask_ = image::VolumeU8(volume_.grid, 0);
    for (int j = 10; j < 20; ++j) {
      for (int i = 30; i < 42; ++i) mask_.at(i, j, 1) = 1;
    }
    text_.lesion_volume_ml = 1.9;
    text_.lesion_count = 1;
    text_.model_id = "demo-isles-v1";
    text_.software_version = "0.1.0";
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  image::DicomSeries series_;
  image::VolumeF volume_;
  image::VolumeU8 mask_;
  OverlayText text_;
};

TEST_F(OverlayWriterTest, RendersEnlargedSliceWithColouredLesionAndTextBand) {
  auto img = render_overlay_slice(volume_, mask_, 1, text_);
  ASSERT_TRUE(img.ok()) << img.status().to_string();
  EXPECT_EQ(img->width, kCols * 8);  // 64 -> 512
  EXPECT_GT(img->height, kRows * 8);
  auto px = [&](int x, int y) { return &img->rgb[(static_cast<size_t>(y) * img->width + x) * 3]; };
  // Inside the lesion (voxel 36, 15): red tint; outside: grey.
  const uint8_t* in = px(36 * 8 + 4, 15 * 8 + 4);
  EXPECT_GT(in[0], in[1] + 50);
  const uint8_t* out = px(5 * 8 + 4, 40 * 8 + 4);
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(out[1], out[2]);
  // Lesion edge (left column of the box): yellow outline.
  const uint8_t* edge = px(30 * 8, 15 * 8 + 4);
  EXPECT_EQ(edge[0], 255);
  EXPECT_EQ(edge[1], 230);
  EXPECT_EQ(edge[2], 0);
  // Text band: some lit pixels below the image, none on a slice without lesion in the image.
  int lit = 0;
  for (int y = kRows * 8; y < img->height; ++y) {
    for (int x = 0; x < img->width; ++x) lit += px(x, y)[0] > 128;
  }
  EXPECT_GT(lit, 500);
  auto other = render_overlay_slice(volume_, mask_, 0, text_);
  ASSERT_TRUE(other.ok());
  for (int y = 0; y < kRows * 8; ++y) {
    for (int x = 0; x < other->width; ++x) {
      const uint8_t* p = &other->rgb[(static_cast<size_t>(y) * other->width + x) * 3];
      ASSERT_TRUE(p[0] == p[1] && p[1] == p[2]) << x << "," << y;
    }
  }
}

// A lesion flagged implausible (mask value kOverlayFlaggedLesion) is drawn in blue and cyan,
// and the warning is an extra cyan line of the text band.
TEST_F(OverlayWriterTest, FlaggedLesionAndWarningLineAreDrawnInCyan) {
  for (uint8_t& v : mask_.data) v = v ? kOverlayFlaggedLesion : 0;
  auto plain = render_overlay_slice(volume_, mask_, 1, text_);
  OverlayText warned = text_;
  warned.warning = "1 LESION WITHOUT RESTRICTED DIFFUSION - CHECK";
  auto img = render_overlay_slice(volume_, mask_, 1, warned);
  ASSERT_TRUE(img.ok() && plain.ok());
  auto px = [&](int x, int y) { return &img->rgb[(static_cast<size_t>(y) * img->width + x) * 3]; };
  const uint8_t* in = px(36 * 8 + 4, 15 * 8 + 4);
  EXPECT_GT(in[2], in[0] + 50);  // blue tint
  const uint8_t* edge = px(30 * 8, 15 * 8 + 4);
  EXPECT_EQ(edge[0], 0);
  EXPECT_EQ(edge[1], 230);
  EXPECT_EQ(edge[2], 255);
  EXPECT_GT(img->height, plain->height);  // one more text line
  int cyan = 0;
  for (int y = kRows * 8; y < img->height; ++y) {
    for (int x = 0; x < img->width; ++x) cyan += px(x, y)[0] == 0 && px(x, y)[1] == 230 && px(x, y)[2] == 255;
  }
  EXPECT_GT(cyan, 100);
}

// When the model's postprocessing leaves a flagged lesion out of the volume
// (kOverlayExcludedLesion), the slice's volume does not count it either: the text band then
// reads as for a slice without lesion. The lesion is drawn as any flagged one.
TEST_F(OverlayWriterTest, ExcludedLesionsAreDrawnButNotCountedInTheSlice) {
  image::VolumeU8 flagged = mask_, excluded = mask_;
  for (uint8_t& v : flagged.data) v = v ? kOverlayFlaggedLesion : 0;
  for (uint8_t& v : excluded.data) v = v ? kOverlayExcludedLesion : 0;
  auto counted = render_overlay_slice(volume_, flagged, 1, text_);
  auto not_counted = render_overlay_slice(volume_, excluded, 1, text_);
  auto empty = render_overlay_slice(volume_, image::VolumeU8(volume_.grid, 0), 1, text_);
  ASSERT_TRUE(counted.ok() && not_counted.ok() && empty.ok());
  ASSERT_EQ(not_counted->height, empty->height);
  const size_t band = static_cast<size_t>(kRows) * 8 * not_counted->width * 3;
  const auto text_band = [&](const RgbImage& img) { return std::vector<uint8_t>(img.rgb.begin() + band, img.rgb.end()); };
  EXPECT_EQ(text_band(*not_counted), text_band(*empty));   // "THIS SLICE 0.00 ML"
  EXPECT_NE(text_band(*counted), text_band(*empty));       // 120 voxels counted
  // The lesion itself is drawn exactly as a flagged one (blue tint, cyan outline).
  EXPECT_TRUE(std::equal(not_counted->rgb.begin(), not_counted->rgb.begin() + band, counted->rgb.begin()));
  const uint8_t* in = &not_counted->rgb[(static_cast<size_t>(15 * 8 + 4) * not_counted->width + 36 * 8 + 4) * 3];
  EXPECT_GT(in[2], in[0] + 50);
}

TEST_F(OverlayWriterTest, RejectsMaskOnAnotherGridAndBadSlice) {
  image::Grid g = volume_.grid;
  g.dims[2] = 2;
  EXPECT_EQ(render_overlay_slice(volume_, image::VolumeU8(g, 0), 0, text_).status().code(),
            base::Code::kInvalidArgument);
  EXPECT_EQ(render_overlay_slice(volume_, mask_, kSlices, text_).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(write_overlay_series(series_, volume_, image::VolumeU8(g, 0), text_, (dir_ / "ov").string()).code(),
            base::Code::kInvalidArgument);
}

TEST_F(OverlayWriterTest, WritesOneSecondaryCapturePerSliceInTheSourceStudy) {
  std::vector<WrittenInstance> written;
  ASSERT_TRUE(write_overlay_series(series_, volume_, mask_, text_, (dir_ / "ov").string(), {}, &written).ok());
  ASSERT_EQ(written.size(), static_cast<size_t>(kSlices));
  auto stack = image::sort_slices(series_);
  ASSERT_TRUE(stack.ok());
  std::string series_uid;
  for (int k = 0; k < kSlices; ++k) {
    EXPECT_EQ(fs::path(written[k].path).filename().string(), "000" + std::to_string(k + 1) + ".dcm");
    DcmFileFormat ff;
    ASSERT_TRUE(ff.loadFile(written[k].path.c_str()).good());
    DcmDataset& d = *ff.getDataset();
    EXPECT_EQ(get(d, DCM_SOPClassUID), UID_SecondaryCaptureImageStorage);
    EXPECT_EQ(get(d, DCM_SOPInstanceUID), written[k].sop_instance_uid);
    EXPECT_EQ(get(d, DCM_StudyInstanceUID), series_.study.study_instance_uid);
    EXPECT_EQ(get(d, DCM_PatientID), "SB0001");
    EXPECT_NE(get(d, DCM_SeriesInstanceUID), series_.series_instance_uid);
    if (k == 0) series_uid = get(d, DCM_SeriesInstanceUID);
    EXPECT_EQ(get(d, DCM_SeriesInstanceUID), series_uid);
    EXPECT_EQ(get(d, DCM_SeriesNumber), "2005");
    EXPECT_EQ(get(d, DCM_InstanceNumber), std::to_string(k + 1));
    EXPECT_EQ(get(d, DCM_PhotometricInterpretation), "RGB");
    EXPECT_EQ(get(d, DCM_BurnedInAnnotation), "YES");
    EXPECT_EQ(get(d, DCM_ImageType), "DERIVED\\SECONDARY");
    EXPECT_EQ(get(d, DCM_PixelSpacing), "0.25\\0.25");
    EXPECT_EQ(get(d, DCM_PatientOrientation), "LP\\PR");
    EXPECT_EQ(get(d, DCM_BodyPartExamined), "HEAD");
    EXPECT_FALSE(d.tagExists(DCM_Laterality));
    DcmItem* ref = nullptr;
    ASSERT_TRUE(d.findAndGetSequenceItem(DCM_SourceImageSequence, ref, 0).good());
    EXPECT_EQ(get(*ref, DCM_ReferencedSOPInstanceUID), stack->slices[k].sop_instance_uid);
    EXPECT_EQ(get(*ref, DCM_ReferencedSOPClassUID), UID_MRImageStorage);
    Uint16 rows = 0, cols = 0;
    d.findAndGetUint16(DCM_Rows, rows);
    d.findAndGetUint16(DCM_Columns, cols);
    const Uint8* pixels = nullptr;
    unsigned long n = 0;
    ASSERT_TRUE(d.findAndGetUint8Array(DCM_PixelData, pixels, &n).good());
    EXPECT_EQ(n, static_cast<unsigned long>(rows) * cols * 3);
  }
  for (const auto& e : fs::directory_iterator(dir_ / "ov")) EXPECT_NE(e.path().extension(), ".tmp");
}

TEST_F(OverlayWriterTest, PassesDciodvfyWithoutErrors) {
  if (!testing::have_dciodvfy()) GTEST_SKIP() << "dicom3tools (dciodvfy) is not installed";
  std::vector<WrittenInstance> written;
  ASSERT_TRUE(write_overlay_series(series_, volume_, mask_, text_, (dir_ / "ov").string(), {}, &written).ok());
  std::string errors;
  const std::string output = testing::run_dciodvfy(written[1].path, errors);
  EXPECT_TRUE(errors.empty()) << errors << "\nfull output:\n" << output;
}

TEST(PngWriterTest, WritesSignatureAndChunksAndRejectsBadSizes) {
  const fs::path path = fs::temp_directory_path() / ("sb_png_" + std::to_string(::getpid()) + ".png");
  std::vector<uint8_t> rgb(4 * 3 * 3, 200);
  ASSERT_TRUE(write_png(path.string(), 4, 3, 3, rgb).ok());
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(bytes.size(), 8u + 25 + 12);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  EXPECT_EQ(static_cast<unsigned char>(bytes[16 + 3]), 4);  // width
  EXPECT_EQ(static_cast<unsigned char>(bytes[20 + 3]), 3);  // height
  EXPECT_EQ(static_cast<unsigned char>(bytes[25]), 2);      // colour type RGB
  EXPECT_NE(bytes.find("IDAT"), std::string::npos);
  EXPECT_EQ(bytes.substr(bytes.size() - 8, 4), "IEND");
  fs::remove(path);
  EXPECT_EQ(write_png(path.string(), 4, 4, 3, rgb).code(), base::Code::kInvalidArgument);
  EXPECT_EQ(write_png(path.string(), 4, 3, 2, rgb).code(), base::Code::kInvalidArgument);
}

// The docs' example: a phantom DWI with two lesions (truth mask as the "result"), the slice
// with the most lesion saved as PNG.
TEST(OverlayPhantomTest, PhantomOverlayIsConformantAndGivesPreview) {
  image::PhantomOptions po;
  po.seed = 7;
  po.lesion_count = 2;
  if (!fs::exists(po.colin27_path)) GTEST_SKIP() << "mricron-data (Colin27) is not installed";
  auto study = image::make_phantom(po);
  ASSERT_TRUE(study.ok()) << study.status().to_string();
  const fs::path dir = fs::temp_directory_path() / ("sb_overlay_phantom_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  ASSERT_TRUE(image::write_phantom_dicom(*study, dir.string()).ok());
  auto scan = image::scan_dicom_folder((dir / "DWI").string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  auto dwi = image::assemble_volume(scan->series.at(0));
  ASSERT_TRUE(dwi.ok()) << dwi.status().to_string();
  image::VolumeU8 mask = study->truth;
  mask.grid = dwi->grid;  // same sampling; the DICOM round trip rounds the affine
  ASSERT_EQ(mask.grid.dims, study->truth.grid.dims);
  OverlayText text;
  int64_t voxels = 0;
  for (uint8_t v : mask.data) voxels += v != 0;
  text.lesion_volume_ml = static_cast<double>(voxels) * dwi->grid.voxel_volume_ml();
  text.lesion_count = 2;
  text.model_id = "demo-isles-v1";
  text.software_version = "0.1.0";
  std::vector<WrittenInstance> written;
  ASSERT_TRUE(write_overlay_series(scan->series[0], *dwi, mask, text, (dir / "ov").string(), {}, &written).ok());
  const int k = slice_with_most_lesion(mask);
  if (testing::have_dciodvfy()) {
    std::string errors;
    const std::string output = testing::run_dciodvfy(written.at(k).path, errors);
    EXPECT_TRUE(errors.empty()) << errors << "\nfull output:\n" << output;
  }
  auto img = render_overlay_slice(*dwi, mask, k, text);
  ASSERT_TRUE(img.ok());
  const char* env = std::getenv("STROKEBOX_OVERLAY_PNG");
  const std::string png = env != nullptr ? env : (dir / "overlay.png").string();
  EXPECT_TRUE(write_png(png, img->width, img->height, 3, img->rgb).ok());
  EXPECT_TRUE(fs::exists(png));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace firmware
