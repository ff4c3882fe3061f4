// Tests that assemble_volume() decodes every transfer syntax a scanner may send: native (implicit,
// explicit, big endian, deflated) and encapsulated (RLE, JPEG lossless and lossy, JPEG-LS, and
// JPEG 2000 through OpenJPEG). Files are written with DCMTK's encoders in-process (JPEG 2000 with
// OpenJPEG's); one file is also compressed by DCMTK's command-line tool dcmcjpls, and one JPEG
// 2000 file comes from pydicom's test data.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>

#include <openjpeg.h>

#include "image/dicom_series.h"
#include "image/diffusion_volumes.h"
#include "image/jpeg2000.h"
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

  /// The largest absolute difference between a decoded volume and the smooth ramp it was made of.
  static double largest_error_from_smooth(const VolumeF& volume) {
    double out = 0;
    for (int k = 0; k < volume.grid.dims[2]; ++k)
      for (int j = 0; j < volume.grid.dims[1]; ++j)
        for (int i = 0; i < volume.grid.dims[0]; ++i)
          out = std::max<double>(out, std::abs(volume.at(i, j, k) - smooth(i, j, k)));
    return out;
  }

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

  /// Writes a 3-slice axial series of `cols` x `rows` into a fresh subfolder, slice k holding
  /// pixel(i, j, k) compressed by OpenJPEG into one fragment (lossless: transfer syntax .90,
  /// else .91); returns the folder.
  fs::path write_j2k_series(const std::string& name, int cols, int rows, int bits_stored, bool is_signed,
                            bool lossless, const std::function<int32_t(int, int, int)>& pixel) {
    const fs::path sub = dir_ / name;
    fs::create_directories(sub);
    const std::string uid = new_uid();
    const E_TransferSyntax xfer = lossless ? EXS_JPEG2000LosslessOnly : EXS_JPEG2000;
    for (int k = 0; k < 3; ++k) {
      SliceSpec s;
      s.series_uid = uid;
      s.instance_number = k + 1;
      s.ipp = {0, 0, 2.0 * k};
      s.rows = rows;
      s.cols = cols;
      s.bits_stored = bits_stored;
      s.pixel_representation = is_signed ? 1 : 0;
      std::vector<int32_t> samples;
      for (int j = 0; j < rows; ++j)
        for (int i = 0; i < cols; ++i) samples.push_back(pixel(i, j, k));
      const std::vector<uint8_t> codestream = encode_j2k(samples, cols, rows, bits_stored, is_signed, lossless);
      s.extra = [codestream, xfer](DcmDataset& ds) { encapsulate(ds, {codestream}, xfer, true); };
      s.xfer = xfer;
      write_slice((sub / ("j" + std::to_string(k) + ".dcm")).string(), s);
    }
    return sub;
  }

  /// Reads the diffusion study in `original` and its recompressed copy in `packed` (one file in
  /// `xfer`) and expects the same 13 volumes, voxel for voxel, with the same affines.
  static void expect_same_diffusion_volumes(const fs::path& original, const fs::path& packed, E_TransferSyntax xfer) {
    auto scan_a = scan_dicom_folder(original.string());
    auto scan_b = scan_dicom_folder(packed.string());
    ASSERT_TRUE(scan_a.ok() && scan_b.ok());
    ASSERT_EQ(scan_b->series.front().instances.front().transfer_syntax_uid, DcmXfer(xfer).getXferID());
    auto volumes_a = split_diffusion_volumes(scan_a->series.front());
    auto volumes_b = split_diffusion_volumes(scan_b->series.front());
    ASSERT_TRUE(volumes_a.ok() && volumes_b.ok());
    ASSERT_EQ(volumes_a->size(), 13u);
    ASSERT_EQ(volumes_b->size(), volumes_a->size());
    for (size_t v = 0; v < volumes_a->size(); ++v) {
      auto a = assemble_volume((*volumes_a)[v].images);
      auto b = assemble_volume((*volumes_b)[v].images);
      ASSERT_TRUE(a.ok()) << a.status().to_string();
      ASSERT_TRUE(b.ok()) << b.status().to_string();
      ASSERT_EQ(a->data, b->data) << "volume " << v << ": " << describe_volume((*volumes_a)[v]);
      EXPECT_TRUE(a->grid.affine.isApprox(b->grid.affine));
    }
  }

  /// Pixel (i, j) of slice k, negative where asked: the signed 16-bit case covers the sign bit.
  static int32_t signed_or_not(int i, int j, int k, bool is_signed) {
    const int32_t v = 37 * i + 301 * j + 997 * k + 5;
    return is_signed ? v - 2500 : v & 0x0FFF;
  }

  /// Compresses `samples` (width fastest) into a raw J2K codestream with OpenJPEG's encoder:
  /// reversible 5/3 wavelet when `lossless`, else irreversible 9/7 at 2:1. `components` > 1 repeats
  /// the plane (a colour image).
  static std::vector<uint8_t> encode_j2k(const std::vector<int32_t>& samples, int width, int height, int precision,
                                         bool is_signed, bool lossless, int components = 1) {
    std::vector<opj_image_cmptparm_t> parts(components);
    for (auto& c : parts) {
      c = {};
      c.dx = c.dy = 1;
      c.w = static_cast<OPJ_UINT32>(width);
      c.h = static_cast<OPJ_UINT32>(height);
      c.prec = static_cast<OPJ_UINT32>(precision);
      c.sgnd = is_signed ? 1 : 0;
    }
    opj_image_t* img = opj_image_create(static_cast<OPJ_UINT32>(components), parts.data(),
                                        components == 1 ? OPJ_CLRSPC_GRAY : OPJ_CLRSPC_SRGB);
    EXPECT_NE(img, nullptr);
    img->x1 = static_cast<OPJ_UINT32>(width);
    img->y1 = static_cast<OPJ_UINT32>(height);
    for (int c = 0; c < components; ++c) std::copy(samples.begin(), samples.end(), img->comps[c].data);
    opj_cparameters_t params;
    opj_set_default_encoder_parameters(&params);
    params.tcp_numlayers = 1;
    params.tcp_rates[0] = lossless ? 0.f : 2.f;
    params.cp_disto_alloc = 1;
    params.irreversible = lossless ? 0 : 1;
    params.numresolution = 2;  // small test images: 2^(levels) must fit the image
    opj_codec_t* codec = opj_create_compress(OPJ_CODEC_J2K);
    EXPECT_TRUE(opj_setup_encoder(codec, &params, img));
    std::vector<uint8_t> out;
    opj_stream_t* stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_FALSE);
    opj_stream_set_user_data(stream, &out, nullptr);
    opj_stream_set_write_function(stream, [](void* buf, OPJ_SIZE_T n, void* user) -> OPJ_SIZE_T {
      auto* v = static_cast<std::vector<uint8_t>*>(user);
      v->insert(v->end(), static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + n);
      return n;
    });
    opj_stream_set_skip_function(stream, [](OPJ_OFF_T n, void* user) -> OPJ_OFF_T {
      auto* v = static_cast<std::vector<uint8_t>*>(user);
      v->resize(v->size() + static_cast<size_t>(n));
      return n;
    });
    opj_stream_set_seek_function(stream, [](OPJ_OFF_T, void*) -> OPJ_BOOL { return OPJ_FALSE; });
    EXPECT_TRUE(opj_start_compress(codec, img, stream) && opj_encode(codec, stream) && opj_end_compress(codec, stream));
    opj_stream_destroy(stream);
    opj_destroy_codec(codec);
    opj_image_destroy(img);
    if (out.size() % 2) out.push_back(0);  // DICOM items have even lengths (PS3.5 A.4)
    return out;
  }

  /// Replaces the Pixel Data of `ds` by `fragments` in an encapsulated sequence of `xfer`; with
  /// `offset_table`, item 0 lists where each frame starts (`frame_of` gives each fragment's frame;
  /// empty: one fragment per frame).
  static void encapsulate(DcmDataset& ds, const std::vector<std::vector<uint8_t>>& fragments, E_TransferSyntax xfer,
                          bool offset_table, const std::vector<int>& frame_of = {}) {
    auto* pixel_data = new DcmPixelData(DCM_PixelData);
    auto* sequence = new DcmPixelSequence(DcmTag(DCM_PixelData, EVR_OB));
    std::vector<Uint8> table;
    uint32_t position = 0;
    for (size_t k = 0; k < fragments.size(); ++k) {
      const bool starts_frame = frame_of.empty() || k == 0 || frame_of[k] != frame_of[k - 1];
      if (offset_table && starts_frame)
        for (int b = 0; b < 4; ++b) table.push_back(static_cast<Uint8>(position >> (8 * b)));
      position += 8 + static_cast<uint32_t>(fragments[k].size());
    }
    auto* bot = new DcmPixelItem(DcmTag(DCM_Item, EVR_OB));
    if (!table.empty()) bot->putUint8Array(table.data(), static_cast<unsigned long>(table.size()));
    sequence->insert(bot);
    for (const auto& f : fragments) {
      auto* item = new DcmPixelItem(DcmTag(DCM_Item, EVR_OB));
      item->putUint8Array(f.data(), static_cast<unsigned long>(f.size()));
      sequence->insert(item);
    }
    pixel_data->putOriginalRepresentation(xfer, nullptr, sequence);
    ds.insert(pixel_data, true);
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
    const double max_abs = largest_error_from_smooth(*volume);
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

TEST_F(DicomCodecTest, JpegTwoThousandLosslessRoundTripsExactly) {
  // Unsigned 12-bit and signed 16-bit pixels, compressed by OpenJPEG's encoder (reversible 5/3
  // wavelet) into one fragment per slice, as PACS store them.
  for (const bool is_signed : {false, true}) {
    SCOPED_TRACE(is_signed ? "signed 16-bit" : "unsigned 12-bit");
    const fs::path sub =
        write_j2k_series(is_signed ? "signed" : "unsigned", 8, 6, is_signed ? 16 : 12, is_signed, true,
                         [is_signed](int i, int j, int k) { return signed_or_not(i, j, k, is_signed); });
    auto volume = read_back(sub, EXS_JPEG2000LosslessOnly);
    ASSERT_TRUE(volume.ok()) << volume.status().to_string();
    ASSERT_EQ(volume->grid.dims, (std::array<int64_t, 3>{8, 6, 3}));
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 6; ++j)
        for (int i = 0; i < 8; ++i)
          ASSERT_EQ(volume->at(i, j, k), signed_or_not(i, j, k, is_signed)) << i << "," << j << "," << k;
  }
}

TEST_F(DicomCodecTest, JpegTwoThousandLossyIsDecodedWithinItsErrorBound) {
  // Irreversible 9/7 wavelet at 2:1 (transfer syntax .91): close to the smooth image, not exact.
  const fs::path sub = write_j2k_series("lossy", 16, 16, 12, false, false,
                                        [](int i, int j, int k) { return int32_t{smooth(i, j, k)}; });
  auto volume = read_back(sub, EXS_JPEG2000);
  ASSERT_TRUE(volume.ok()) << volume.status().to_string();
  const double max_abs = largest_error_from_smooth(*volume);
  EXPECT_LE(max_abs, 30.0) << "largest error of the decoded image (values 1000 to 1600)";
  EXPECT_GT(max_abs, 0.0) << "an irreversible codestream that came back exact: was it lossy?";
}

/// Rows, Columns and bits of a 3-frame dataset of 8 x 6 unsigned 12-bit frames.
void set_three_frame_header(DcmDataset& ds) {
  ds.putAndInsertUint16(DCM_Rows, 6);
  ds.putAndInsertUint16(DCM_Columns, 8);
  ds.putAndInsertUint16(DCM_BitsAllocated, 16);
  ds.putAndInsertUint16(DCM_BitsStored, 12);
  ds.putAndInsertUint16(DCM_HighBit, 11);
  ds.putAndInsertUint16(DCM_PixelRepresentation, 0);
  ds.putAndInsertString(DCM_NumberOfFrames, "3");
}

TEST_F(DicomCodecTest, JpegTwoThousandFramesAreFoundWithOrWithoutAnOffsetTable) {
  // A 3-frame dataset whose second frame is split over two fragments: the Basic Offset Table says
  // where each frame starts; without it, each codestream's SOC marker does.
  std::vector<std::vector<uint8_t>> fragments;
  std::vector<std::vector<int32_t>> frames(3);
  for (int k = 0; k < 3; ++k) {
    for (int j = 0; j < 6; ++j)
      for (int i = 0; i < 8; ++i) frames[k].push_back(value(i, j, k));
    const std::vector<uint8_t> cs = encode_j2k(frames[k], 8, 6, 12, false, true);
    if (k == 1) {
      fragments.emplace_back(cs.begin(), cs.begin() + 10);  // even lengths, as items require
      fragments.emplace_back(cs.begin() + 10, cs.end());
    } else {
      fragments.push_back(cs);
    }
  }
  for (const bool with_table : {true, false}) {
    SCOPED_TRACE(with_table ? "with offset table" : "without offset table");
    DcmDataset ds;
    set_three_frame_header(ds);
    encapsulate(ds, fragments, EXS_JPEG2000LosslessOnly, with_table, {0, 1, 1, 2});
    ASSERT_TRUE(decode_jpeg2000_pixel_data(ds, "test").ok());
    const Uint16* pixels = nullptr;
    unsigned long count = 0;
    ASSERT_TRUE(ds.findAndGetUint16Array(DCM_PixelData, pixels, &count).good());
    ASSERT_EQ(count, 3u * 48u);
    for (int k = 0; k < 3; ++k)
      for (int p = 0; p < 48; ++p) ASSERT_EQ(pixels[k * 48 + p], frames[k][p]) << "frame " << k << " pixel " << p;
  }

  // Only the frames asked for are decoded (one volume of a multi-frame file); the rest stay 0.
  DcmDataset some;
  set_three_frame_header(some);
  encapsulate(some, fragments, EXS_JPEG2000LosslessOnly, true, {0, 1, 1, 2});
  const std::vector<bool> middle_only = {false, true, false};
  ASSERT_TRUE(decode_jpeg2000_pixel_data(some, "test", &middle_only).ok());
  const Uint16* some_pixels = nullptr;
  unsigned long some_count = 0;
  ASSERT_TRUE(some.findAndGetUint16Array(DCM_PixelData, some_pixels, &some_count).good());
  ASSERT_EQ(some_count, 3u * 48u);
  for (int p = 0; p < 48; ++p) {
    ASSERT_EQ(some_pixels[p], 0) << p;
    ASSERT_EQ(some_pixels[48 + p], frames[1][p]) << p;
    ASSERT_EQ(some_pixels[96 + p], 0) << p;
  }

  // Fragments that cannot make 3 frames: two codestreams only, no table.
  DcmDataset bad;
  set_three_frame_header(bad);
  encapsulate(bad, {fragments[0], fragments[3]}, EXS_JPEG2000LosslessOnly, false);
  const base::Status status = decode_jpeg2000_pixel_data(bad, "test");
  EXPECT_EQ(status.code(), base::Code::kInvalidArgument);
  EXPECT_NE(status.message().find("cannot be split into 3 frames"), std::string::npos) << status.message();
}

TEST_F(DicomCodecTest, CorruptOrColourJpegTwoThousandFailsWithTheReason) {
  // A truncated codestream: the series fails with OpenJPEG's reason, not a crash or a hang.
  const std::string uid = new_uid();
  for (int k = 0; k < 2; ++k) {
    SliceSpec s;
    s.series_uid = uid;
    s.instance_number = k + 1;
    s.ipp = {0, 0, double(k)};
    s.extra = [](DcmDataset& ds) {
      const std::vector<uint8_t> truncated = {0xFF, 0x4F, 0xFF, 0x51, 0, 0x2F, 0, 0};
      encapsulate(ds, {truncated}, EXS_JPEG2000LosslessOnly, false);
    };
    s.xfer = EXS_JPEG2000LosslessOnly;
    write_slice((dir_ / ("j" + std::to_string(k) + ".dcm")).string(), s);
  }
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  ASSERT_EQ(scan->series.size(), 1u);
  EXPECT_EQ(scan->series[0].instances[0].transfer_syntax_uid, UID_JPEG2000LosslessOnlyTransferSyntax);
  auto volume = assemble_volume(scan->series[0]);
  ASSERT_EQ(volume.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(volume.status().message().find("JPEG 2000 header cannot be read"), std::string::npos)
      << volume.status().message();

  // Three components (colour): refused as unsupported, naming the count.
  std::vector<int32_t> grey(64, 100);
  auto rgb = decode_jpeg2000(nullptr, 0);
  EXPECT_EQ(rgb.status().code(), base::Code::kInvalidArgument);
  const std::vector<uint8_t> colour = encode_j2k(grey, 8, 8, 8, false, true, /*components=*/3);
  rgb = decode_jpeg2000(colour.data(), colour.size());
  ASSERT_EQ(rgb.status().code(), base::Code::kUnimplemented);
  EXPECT_NE(rgb.status().message().find("3 components"), std::string::npos) << rgb.status().message();
}

TEST_F(DicomCodecTest, RealEnhancedMrRecompressedAsJpegTwoThousandReadsTheSame) {
  // The Canon Enhanced MR file of ../shared/realdicom (520 frames of 80 x 80: b0 and 12 directions
  // at b 1500), its every frame compressed as JPEG 2000 lossless with a Basic Offset Table: each
  // diffusion volume of the study must come back voxel for voxel.
  const fs::path original = fs::path(STROKEBOX_SHARED_DIR) / "realdicom/dcm_qa_canon_61__3000_DTI_PA-ortho__enh";
  if (!fs::exists(original / "3000.dcm")) GTEST_SKIP() << original << " is absent (see ../shared/realdicom)";
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile((original / "3000.dcm").c_str()).good());
  DcmDataset& ds = *ff.getDataset();
  Uint16 rows = 0, cols = 0, bits_stored = 0, pixel_rep = 0;
  Sint32 frames = 0;
  ASSERT_TRUE(ds.findAndGetUint16(DCM_Rows, rows).good());
  ASSERT_TRUE(ds.findAndGetUint16(DCM_Columns, cols).good());
  ASSERT_TRUE(ds.findAndGetUint16(DCM_BitsStored, bits_stored).good());
  ds.findAndGetUint16(DCM_PixelRepresentation, pixel_rep);
  ASSERT_TRUE(ds.findAndGetSint32(DCM_NumberOfFrames, frames).good());
  const Uint16* raw = nullptr;
  unsigned long count = 0;
  ASSERT_TRUE(ds.findAndGetUint16Array(DCM_PixelData, raw, &count).good());
  const size_t plane = size_t{rows} * cols;
  ASSERT_EQ(count, plane * frames);
  std::vector<std::vector<uint8_t>> fragments;
  for (Sint32 f = 0; f < frames; ++f) {
    std::vector<int32_t> samples(plane);
    for (size_t p = 0; p < plane; ++p) {
      const uint32_t v = raw[f * plane + p] & ((1u << bits_stored) - 1u);
      samples[p] = pixel_rep == 1 && (v >> (bits_stored - 1)) ? int32_t(v) - (int32_t{1} << bits_stored) : int32_t(v);
    }
    fragments.push_back(encode_j2k(samples, cols, rows, bits_stored, pixel_rep == 1, true));
  }
  encapsulate(ds, fragments, EXS_JPEG2000LosslessOnly, /*offset_table=*/true);
  const fs::path packed = dir_ / "j2k";
  fs::create_directories(packed);
  ASSERT_TRUE(ff.saveFile((packed / "3000.dcm").c_str(), EXS_JPEG2000LosslessOnly).good());

  expect_same_diffusion_volumes(original, packed, EXS_JPEG2000LosslessOnly);
}

TEST_F(DicomCodecTest, RealEnhancedMrCompressedByDcmtkToolsReadsTheSame) {
  // The same Canon file compressed by DCMTK's own tools (RLE and JPEG-LS lossless): each volume
  // decodes only its 40 of the 520 frames (DcmPixelData::getUncompressedFrame) and must equal
  // the uncompressed study voxel for voxel.
  const fs::path original = fs::path(STROKEBOX_SHARED_DIR) / "realdicom/dcm_qa_canon_61__3000_DTI_PA-ortho__enh";
  if (!fs::exists(original / "3000.dcm")) GTEST_SKIP() << original << " is absent (see ../shared/realdicom)";
  if (std::system("command -v dcmcrle >/dev/null 2>&1 && command -v dcmcjpls >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "dcmcrle/dcmcjpls (dcmtk) not installed";
  const std::vector<std::tuple<std::string, E_TransferSyntax>> cases = {{"dcmcrle", EXS_RLELossless},
                                                                         {"dcmcjpls", EXS_JPEGLSLossless}};
  for (const auto& [tool, xfer] : cases) {
    SCOPED_TRACE(tool);
    const fs::path packed = dir_ / tool;
    fs::create_directories(packed);
    const std::string cmd = tool + " " + (original / "3000.dcm").string() + " " + (packed / "3000.dcm").string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    expect_same_diffusion_volumes(original, packed, xfer);
  }
}

TEST_F(DicomCodecTest, PydicomsJpegTwoThousandMrEqualsItsUncompressedTwin) {
  // A file compressed by another toolkit: pydicom's test data holds the same 64 x 64 MR slice
  // uncompressed and as JPEG 2000 lossless (python3-pydicom, installed by install-deps.sh).
  const fs::path data = "/usr/lib/python3/dist-packages/pydicom/data/test_files";
  const fs::path j2k = data / "MR_small_jp2klossless.dcm", plain = data / "MR_small.dcm";
  if (!fs::exists(j2k) || !fs::exists(plain)) GTEST_SKIP() << "python3-pydicom's test files not installed";
  DcmFileFormat a, b;
  ASSERT_TRUE(a.loadFile(j2k.c_str()).good());
  ASSERT_TRUE(b.loadFile(plain.c_str()).good());
  ASSERT_EQ(a.getDataset()->getOriginalXfer(), EXS_JPEG2000LosslessOnly);
  ASSERT_TRUE(decode_jpeg2000_pixel_data(*a.getDataset(), "MR_small_jp2klossless").ok());
  const Uint16 *pa = nullptr, *pb = nullptr;
  unsigned long na = 0, nb = 0;
  ASSERT_TRUE(a.getDataset()->findAndGetUint16Array(DCM_PixelData, pa, &na).good());
  ASSERT_TRUE(b.getDataset()->findAndGetUint16Array(DCM_PixelData, pb, &nb).good());
  ASSERT_EQ(na, 64u * 64u);
  ASSERT_EQ(na, nb);
  for (unsigned long p = 0; p < na; ++p) ASSERT_EQ(pa[p], pb[p]) << "pixel " << p;
}

}  // namespace
}  // namespace image
