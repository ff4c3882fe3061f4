// Tests that assemble_volume() decodes every transfer syntax a scanner may send: native (implicit,
// explicit, big endian, deflated) and encapsulated (RLE, JPEG lossless and lossy, JPEG-LS), and
// refuses JPEG 2000 (no codec in Debian's DCMTK) with a reason. Files are written with DCMTK's
// encoders in-process; one file is also compressed by DCMTK's command-line tool dcmcjpls.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>

#include "image/dicom_series.h"
#include "tests/image/dicom_test_util.h"

namespace image {
namespace {

namespace fs = std::filesystem;
using namespace testutil;

class DicomCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sb_codec_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Pixel value of (i, j) on slice k: 12-bit range, so lossless codecs must round-trip exactly.
  static Uint16 value(int i, int j, int k) { return static_cast<Uint16>(37 * i + 301 * j + 997 * k + 5) & 0x0FFF; }
  /// A smooth image (what lossy codecs are made for): a gentle ramp.
  static Uint16 smooth(int i, int j, int k) { return static_cast<Uint16>(1000 + 10 * i + 20 * j + 100 * k); }

  /// Writes a 3-slice axial 8 x 6 series in `xfer` into a fresh subfolder and returns the folder.
  fs::path write_series(E_TransferSyntax xfer, const std::string& name, bool smooth_image = false) {
    const fs::path sub = dir_ / name;
    fs::create_directories(sub);
    const std::string uid = new_uid();
    for (int k = 0; k < 3; ++k) {
      SliceSpec s;
      s.series_uid = uid;
      s.instance_number = k + 1;
      s.ipp = {0, 0, 2.0 * k};
      s.rows = 6;
      s.cols = 8;
      s.bits_stored = 12;
      s.xfer = xfer;
      for (int j = 0; j < s.rows; ++j)
        for (int i = 0; i < s.cols; ++i) s.pixels.push_back(smooth_image ? smooth(i, j, k) : value(i, j, k));
      write_slice((sub / ("s" + std::to_string(k) + ".dcm")).string(), s);
    }
    return sub;
  }

  /// Scans `folder`, checks every file kept `xfer` on disk, and assembles the volume.
  base::Result<VolumeF> read_back(const fs::path& folder, E_TransferSyntax xfer) {
    auto scan = scan_dicom_folder(folder.string());
    EXPECT_TRUE(scan.ok()) << scan.status().to_string();
    if (!scan.ok()) return scan.status();
    EXPECT_EQ(scan->series.size(), 1u);
    for (const DicomInstance& inst : scan->series[0].instances)
      EXPECT_EQ(inst.transfer_syntax_uid, DcmXfer(xfer).getXferID()) << inst.path;
    return assemble_volume(scan->series[0]);
  }

  fs::path dir_;
};

TEST_F(DicomCodecTest, LosslessTransferSyntaxesRoundTripExactly) {
  const std::vector<std::pair<E_TransferSyntax, std::string>> cases = {
      {EXS_LittleEndianImplicit, "implicit"}, {EXS_LittleEndianExplicit, "explicit"},
      {EXS_BigEndianExplicit, "big_endian"},   {EXS_DeflatedLittleEndianExplicit, "deflated"},
      {EXS_RLELossless, "rle"},                {EXS_JPEGProcess14SV1, "jpeg_lossless_sv1"},
      {EXS_JPEGProcess14, "jpeg_lossless"},    {EXS_JPEGLSLossless, "jpeg_ls_lossless"},
  };
  for (const auto& [xfer, name] : cases) {
    SCOPED_TRACE(name);
    const fs::path folder = write_series(xfer, name);
    auto volume = read_back(folder, xfer);
    ASSERT_TRUE(volume.ok()) << volume.status().to_string();
    ASSERT_EQ(volume->grid.dims, (std::array<int64_t, 3>{8, 6, 3}));
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 6; ++j)
        for (int i = 0; i < 8; ++i) ASSERT_EQ(volume->at(i, j, k), value(i, j, k)) << i << "," << j << "," << k;
  }
}

TEST_F(DicomCodecTest, LossyJpegAndNearLosslessJpegLsAreDecodedWithinTheirErrorBound) {
  // Compressed by DCMTK's tools: JPEG extended (12-bit, process 2/4) with the pixel range mapped
  // through a new modality rescale (+rm; DCMTK's default would discard the scaling), and
  // near-lossless JPEG-LS (NEAR = 2). Values must come back close, not exact.
  if (std::system("command -v dcmcjpeg >/dev/null 2>&1 && command -v dcmcjpls >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "dcmcjpeg/dcmcjpls (dcmtk) not installed";
  const fs::path plain = write_series(EXS_LittleEndianExplicit, "plain", /*smooth_image=*/true);
  const std::vector<std::tuple<std::string, std::string, E_TransferSyntax, double>> cases = {
      {"jpeg_extended", "dcmcjpeg +ee +rm", EXS_JPEGProcess2_4, 30.0},
      {"jpeg_ls_near_lossless", "dcmcjpls +en", EXS_JPEGLSLossy, 2.0},
  };
  for (const auto& [name, tool, xfer, bound] : cases) {
    SCOPED_TRACE(name);
    const fs::path packed = dir_ / name;
    fs::create_directories(packed);
    for (int k = 0; k < 3; ++k) {
      const std::string file = "s" + std::to_string(k) + ".dcm";
      const std::string cmd = tool + " " + (plain / file).string() + " " + (packed / file).string() + " 2>/dev/null";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    auto volume = read_back(packed, xfer);
    ASSERT_TRUE(volume.ok()) << volume.status().to_string();
    double max_abs = 0;
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 6; ++j)
        for (int i = 0; i < 8; ++i) max_abs = std::max<double>(max_abs, std::abs(volume->at(i, j, k) - smooth(i, j, k)));
    EXPECT_LE(max_abs, bound) << "largest error of the decoded image (values 1000 to 1410)";
  }
}

TEST_F(DicomCodecTest, FileCompressedByDcmcjplsToolIsDecoded) {
  if (std::system("command -v dcmcjpls >/dev/null 2>&1") != 0) GTEST_SKIP() << "dcmcjpls (dcmtk) not installed";
  const fs::path plain = write_series(EXS_LittleEndianExplicit, "plain");
  const fs::path packed = dir_ / "packed";
  fs::create_directories(packed);
  for (int k = 0; k < 3; ++k) {
    const std::string name = "s" + std::to_string(k) + ".dcm";
    const std::string cmd = "dcmcjpls " + (plain / name).string() + " " + (packed / name).string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  auto volume = read_back(packed, EXS_JPEGLSLossless);
  ASSERT_TRUE(volume.ok()) << volume.status().to_string();
  EXPECT_EQ(volume->at(7, 5, 2), value(7, 5, 2));
}

TEST_F(DicomCodecTest, JpegTwoThousandIsRefusedWithTheReason) {
  // Encapsulated pixel data labelled JPEG 2000 (the codestream content does not matter: it is
  // refused before any decoder is asked).
  const std::string uid = new_uid();
  for (int k = 0; k < 2; ++k) {
    SliceSpec s;
    s.series_uid = uid;
    s.instance_number = k + 1;
    s.ipp = {0, 0, double(k)};
    s.extra = [](DcmDataset& ds) {
      auto* pixel_data = new DcmPixelData(DCM_PixelData);
      auto* sequence = new DcmPixelSequence(DcmTag(DCM_PixelData, EVR_OB));
      sequence->insert(new DcmPixelItem(DcmTag(DCM_Item, EVR_OB)));  // empty offset table
      auto* fragment = new DcmPixelItem(DcmTag(DCM_Item, EVR_OB));
      const Uint8 codestream[8] = {0xFF, 0x4F, 0xFF, 0x51, 0, 0, 0, 0};
      fragment->putUint8Array(codestream, sizeof codestream);
      sequence->insert(fragment);
      pixel_data->putOriginalRepresentation(EXS_JPEG2000LosslessOnly, nullptr, sequence);
      ds.insert(pixel_data, true);
    };
    s.xfer = EXS_JPEG2000LosslessOnly;
    write_slice((dir_ / ("j" + std::to_string(k) + ".dcm")).string(), s);
  }
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  ASSERT_EQ(scan->series.size(), 1u);
  EXPECT_EQ(scan->series[0].instances[0].transfer_syntax_uid, UID_JPEG2000LosslessOnlyTransferSyntax);
  auto volume = assemble_volume(scan->series[0]);
  ASSERT_EQ(volume.status().code(), base::Code::kUnimplemented);
  EXPECT_NE(volume.status().message().find("no JPEG 2000 codec"), std::string::npos) << volume.status().message();
}

}  // namespace
}  // namespace image
