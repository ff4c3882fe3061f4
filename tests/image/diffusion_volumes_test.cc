// Tests of diffusion series as sets of volumes: the vendors' diffusion tags read from datasets
// built in memory with DCMTK (standard MR Diffusion macro, Siemens CSA header and (0019),
// GE, Philips, UIH/Canon), grouping by (b, direction, trace/ADC flags) with scrambled
// InstanceNumbers and several images per position, the DWI/ADC selection (scanner trace first,
// else the geometric mean of the directions; untagged b0), and Siemens MOSAIC unpacking.
#include "image/diffusion_volumes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcvrfd.h>
#include <dcmtk/dcmdata/dcvrfl.h>
#include <dcmtk/dcmdata/dcvrobow.h>

#include "image/series_classifier.h"
#include "tests/image/dicom_test_util.h"

namespace image {
namespace {

namespace fs = std::filesystem;
using namespace testutil;

// ---- datasets in memory ------------------------------------------------------------------

/// A minimal MR image header (no pixel data needed for header reading).
void fill_base(DcmDataset& ds, const std::string& series_uid, int instance, double z) {
  ds.putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage);
  ds.putAndInsertString(DCM_SOPInstanceUID, new_uid().c_str());
  ds.putAndInsertString(DCM_StudyInstanceUID, "1.2.3.4");
  ds.putAndInsertString(DCM_SeriesInstanceUID, series_uid.c_str());
  ds.putAndInsertString(DCM_Modality, "MR");
  ds.putAndInsertString(DCM_InstanceNumber, std::to_string(instance).c_str());
  ds.putAndInsertString(DCM_ImagePositionPatient, ds_list({0, 0, z}).c_str());
  ds.putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
  ds.putAndInsertString(DCM_PixelSpacing, "1\\1");
  ds.putAndInsertUint16(DCM_Rows, 4);
  ds.putAndInsertUint16(DCM_Columns, 4);
}

/// Inserts private element (group, 0x10NN) under the creator `creator` at block 0x10.
void put_private_creator(DcmDataset& ds, Uint16 group, const char* creator) {
  ds.putAndInsertString(DcmTag(group, 0x0010, EVR_LO), creator);
}
void put_private_string(DcmDataset& ds, Uint16 group, Uint8 low, DcmEVR vr, const std::string& value) {
  ds.putAndInsertString(DcmTag(group, static_cast<Uint16>(0x1000 | low), vr), value.c_str());
}
void put_private_fd(DcmDataset& ds, Uint16 group, Uint8 low, const std::vector<double>& values) {
  auto* e = new DcmFloatingPointDouble(DcmTag(group, static_cast<Uint16>(0x1000 | low), EVR_FD));
  e->putFloat64Array(values.data(), static_cast<unsigned long>(values.size()));
  ds.insert(e, true);
}
void put_private_fl(DcmDataset& ds, Uint16 group, Uint8 low, float value) {
  auto* e = new DcmFloatingPointSingle(DcmTag(group, static_cast<Uint16>(0x1000 | low), EVR_FL));
  e->putFloat32(value);
  ds.insert(e, true);
}

/// A Siemens CSA header in the SV10 layout with the given tags (each a list of text items).
std::vector<Uint8> make_csa(const std::vector<std::pair<std::string, std::vector<std::string>>>& tags) {
  std::vector<Uint8> out;
  const auto u32 = [&](uint32_t v) {
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<Uint8>((v >> (8 * b)) & 0xFF));
  };
  for (char c : std::string("SV10")) out.push_back(static_cast<Uint8>(c));
  for (Uint8 c : {4, 3, 2, 1}) out.push_back(c);
  u32(static_cast<uint32_t>(tags.size()));
  u32(77);
  for (const auto& [name, items] : tags) {
    char block[64] = {};
    std::strncpy(block, name.c_str(), 63);
    out.insert(out.end(), block, block + 64);
    u32(static_cast<uint32_t>(items.size()));  // VM
    for (char c : std::string("DS\0\0", 4)) out.push_back(static_cast<Uint8>(c));
    u32(3);                                     // SyngoDT
    u32(static_cast<uint32_t>(items.size()));   // number of items
    u32(77);
    for (const std::string& item : items) {
      const uint32_t len = static_cast<uint32_t>(item.size() + 1);
      u32(len);
      u32(len);
      u32(77);
      u32(len);
      out.insert(out.end(), item.begin(), item.end());
      out.push_back(0);
      while (out.size() % 4 != 0) out.push_back(0);
    }
  }
  return out;
}

void put_csa(DcmDataset& ds, const std::vector<Uint8>& csa) {
  put_private_creator(ds, 0x0029, "SIEMENS CSA HEADER");
  auto* e = new DcmOtherByteOtherWord(DcmTag(0x0029, 0x1010, EVR_OB));
  e->putUint8Array(csa.data(), static_cast<unsigned long>(csa.size()));
  ds.insert(e, true);
}

DicomInstance read_one(DcmFileFormat& ff) {
  auto s = read_dicom_header(ff, "memory");
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  if (!s.ok() || s->instances.empty()) return {};
  return s->instances.front();
}

TEST(DiffusionTags, StandardMacroInTheMrDiffusionSequence) {
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  fill_base(ds, "1.9.1", 1, 0);
  DcmItem* item = nullptr;
  ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_MRDiffusionSequence, item, 0).good());
  item->putAndInsertFloat64(DCM_DiffusionBValue, 1000.0);
  item->putAndInsertString(DCM_DiffusionDirectionality, "DIRECTIONAL");
  DcmItem* dir = nullptr;
  ASSERT_TRUE(item->findOrCreateSequenceItem(DCM_DiffusionGradientDirectionSequence, dir, 0).good());
  const Float64 v[3] = {0.0, 0.6, 0.8};
  dir->putAndInsertFloat64Array(DCM_DiffusionGradientOrientation, v, 3);
  const DicomInstance inst = read_one(ff);
  ASSERT_TRUE(inst.b_value);
  EXPECT_DOUBLE_EQ(*inst.b_value, 1000.0);
  EXPECT_EQ(inst.b_value_source, "(0018,9087)");
  EXPECT_EQ(inst.diffusion_directionality, "DIRECTIONAL");
  ASSERT_TRUE(inst.diffusion_direction);
  EXPECT_DOUBLE_EQ((*inst.diffusion_direction)[2], 0.8);
  EXPECT_EQ(classify_diffusion_image(inst, true, 50.0), DiffusionImageKind::kDirectional);
}

TEST(DiffusionTags, SiemensCsaHeaderGivesBValueDirectionAndMosaicCount) {
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  fill_base(ds, "1.9.2", 1, 0);
  put_csa(ds, make_csa({{"EchoLinePosition", {"64"}},
                        {"B_value", {"1000"}},
                        {"DiffusionGradientDirection", {"0.5", "-0.5", "0.70710678"}},
                        {"NumberOfImagesInMosaic", {"48"}},
                        {"SliceNormalVector", {"0", "0", "1"}}}));
  const DicomInstance inst = read_one(ff);
  ASSERT_TRUE(inst.b_value);
  EXPECT_DOUBLE_EQ(*inst.b_value, 1000.0);
  EXPECT_EQ(inst.b_value_source, "Siemens CSA B_value");
  ASSERT_TRUE(inst.diffusion_direction);
  EXPECT_DOUBLE_EQ((*inst.diffusion_direction)[1], -0.5);
  EXPECT_EQ(inst.mosaic_images, 48);
}

TEST(DiffusionTags, SiemensPrivateHeaderTraceIsIsotropic) {
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  fill_base(ds, "1.9.3", 1, 0);
  ds.putAndInsertString(DCM_ImageType, "DERIVED\\PRIMARY\\DIFFUSION\\TRACEW\\ND\\MFSPLIT");
  put_private_creator(ds, 0x0019, "SIEMENS MR HEADER");
  put_private_string(ds, 0x0019, 0x0C, EVR_IS, "2500");
  put_private_string(ds, 0x0019, 0x0D, EVR_CS, "ISOTROPIC");
  const DicomInstance inst = read_one(ff);
  ASSERT_TRUE(inst.b_value);
  EXPECT_DOUBLE_EQ(*inst.b_value, 2500.0);
  EXPECT_EQ(inst.diffusion_directionality, "ISOTROPIC");
  EXPECT_EQ(classify_diffusion_image(inst, true, 50.0), DiffusionImageKind::kTrace);
}

TEST(DiffusionTags, GeBValueLosesItsOffsetAndDirectionsComeFromUserData) {
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  fill_base(ds, "1.9.4", 1, 0);
  put_private_creator(ds, 0x0043, "GEMS_PARM_01");
  put_private_string(ds, 0x0043, 0x39, EVR_IS, "1000001000\\8\\0\\0");
  put_private_creator(ds, 0x0019, "GEMS_ACQU_01");
  put_private_string(ds, 0x0019, 0xBB, EVR_DS, "0.492355");
  put_private_string(ds, 0x0019, 0xBC, EVR_DS, "0.844098");
  put_private_string(ds, 0x0019, 0xBD, EVR_DS, "-0.212332");
  const DicomInstance inst = read_one(ff);
  ASSERT_TRUE(inst.b_value);
  EXPECT_DOUBLE_EQ(*inst.b_value, 1000.0);
  EXPECT_EQ(inst.b_value_source, "GE (0043,xx39)");
  ASSERT_TRUE(inst.diffusion_direction);
  EXPECT_NEAR((*inst.diffusion_direction)[0], 0.492355, 1e-9);
  EXPECT_EQ(classify_diffusion_image(inst, true, 50.0), DiffusionImageKind::kDirectional);
}

TEST(DiffusionTags, GeZeroVectorAtHighBIsTheCombinedImage) {
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  fill_base(ds, "1.9.5", 1, 0);
  put_private_creator(ds, 0x0043, "GEMS_PARM_01");
  put_private_string(ds, 0x0043, 0x39, EVR_IS, "1000\\8\\0\\0");
  put_private_creator(ds, 0x0019, "GEMS_ACQU_01");
  for (Uint8 low : {Uint8{0xBB}, Uint8{0xBC}, Uint8{0xBD}}) put_private_string(ds, 0x0019, low, EVR_DS, "0");
  EXPECT_EQ(classify_diffusion_image(read_one(ff), true, 50.0), DiffusionImageKind::kTrace);
}

TEST(DiffusionTags, PhilipsIsotropicLetterAndDirections) {
  for (const char* letter : {"I", "O"}) {
    DcmFileFormat ff;
    DcmDataset& ds = *ff.getDataset();
    fill_base(ds, "1.9.6", 1, 0);
    put_private_creator(ds, 0x2001, "Philips Imaging DD 001");
    put_private_fl(ds, 0x2001, 0x03, 1000.0f);
    put_private_string(ds, 0x2001, 0x04, EVR_CS, letter);
    put_private_creator(ds, 0x2005, "Philips MR Imaging DD 001");
    const bool iso = std::string(letter) == "I";
    put_private_fl(ds, 0x2005, 0xB0, iso ? 0.0f : -0.7071f);
    put_private_fl(ds, 0x2005, 0xB1, iso ? 0.0f : 0.0f);
    put_private_fl(ds, 0x2005, 0xB2, iso ? 0.0f : 0.7071f);
    const DicomInstance inst = read_one(ff);
    ASSERT_TRUE(inst.b_value);
    EXPECT_DOUBLE_EQ(*inst.b_value, 1000.0);
    EXPECT_EQ(inst.b_value_source, "Philips (2001,xx03)");
    EXPECT_EQ(classify_diffusion_image(inst, true, 50.0),
              iso ? DiffusionImageKind::kTrace : DiffusionImageKind::kDirectional)
        << letter;
  }
}

TEST(DiffusionTags, UihAndCanonUserBValueAndOrientation) {
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  fill_base(ds, "1.9.7", 1, 0);
  put_private_creator(ds, 0x0065, "Image Private Header");
  put_private_fd(ds, 0x0065, 0x09, {996.5});  // actual b
  put_private_fd(ds, 0x0065, 0x0A, {1000.0});  // user (nominal) b: preferred, it groups volumes
  put_private_fd(ds, 0x0065, 0x37, {0.0, 0.0, 1.0});
  const DicomInstance inst = read_one(ff);
  ASSERT_TRUE(inst.b_value);
  EXPECT_DOUBLE_EQ(*inst.b_value, 1000.0);
  EXPECT_EQ(inst.b_value_source, "UIH/Canon (0065,xx0A)");
  ASSERT_TRUE(inst.diffusion_direction);
  EXPECT_DOUBLE_EQ((*inst.diffusion_direction)[2], 1.0);
}

TEST(DiffusionTags, EnhancedMrFramesTakeTheirOwnDiffusionMacro) {
  // One file, 2 positions x (b0 + 2 directions): the frames come apart by their MR Diffusion
  // Sequence (PS3.3 C.8.13.5.9) in the per-frame functional groups.
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  fill_base(ds, "1.9.8", 1, 0);
  ds.putAndInsertString(DCM_SOPClassUID, UID_EnhancedMRImageStorage);
  ds.putAndInsertString(DCM_NumberOfFrames, "6");
  DcmItem* shared = nullptr;
  ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0).good());
  DcmItem* m = nullptr;
  shared->findOrCreateSequenceItem(DCM_PlaneOrientationSequence, m, 0);
  m->putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
  shared->findOrCreateSequenceItem(DCM_PixelMeasuresSequence, m, 0);
  m->putAndInsertString(DCM_PixelSpacing, "1\\1");
  int f = 0;
  for (int vol = 0; vol < 3; ++vol) {
    for (int k = 0; k < 2; ++k, ++f) {
      DcmItem* frame = nullptr;
      ASSERT_TRUE(ds.findOrCreateSequenceItem(DCM_PerFrameFunctionalGroupsSequence, frame, f).good());
      frame->findOrCreateSequenceItem(DCM_PlanePositionSequence, m, 0);
      m->putAndInsertString(DCM_ImagePositionPatient, ds_list({0, 0, 3.0 * k}).c_str());
      DcmItem* diff = nullptr;
      frame->findOrCreateSequenceItem(DCM_MRDiffusionSequence, diff, 0);
      diff->putAndInsertFloat64(DCM_DiffusionBValue, vol == 0 ? 0.0 : 1000.0);
      diff->putAndInsertString(DCM_DiffusionDirectionality, vol == 0 ? "NONE" : "DIRECTIONAL");
      if (vol > 0) {
        DcmItem* dir = nullptr;
        diff->findOrCreateSequenceItem(DCM_DiffusionGradientDirectionSequence, dir, 0);
        const Float64 v[3] = {vol == 1 ? 1.0 : 0.0, vol == 2 ? 1.0 : 0.0, 0.0};
        dir->putAndInsertFloat64Array(DCM_DiffusionGradientOrientation, v, 3);
      }
    }
  }
  auto series = read_dicom_header(ff, "enhanced");
  ASSERT_TRUE(series.ok()) << series.status().to_string();
  ASSERT_EQ(series->instances.size(), 6u);
  auto volumes = split_diffusion_volumes(*series);
  ASSERT_TRUE(volumes.ok()) << volumes.status().to_string();
  ASSERT_EQ(volumes->size(), 3u);
  EXPECT_EQ((*volumes)[0].kind, DiffusionImageKind::kB0);
  EXPECT_EQ((*volumes)[1].kind, DiffusionImageKind::kDirectional);
  EXPECT_EQ((*volumes)[2].kind, DiffusionImageKind::kDirectional);
  for (const DiffusionVolume& v : *volumes) EXPECT_EQ(v.images.instances.size(), 2u) << describe_volume(v);
}

// ---- grouping and selection on in-memory instances ---------------------------------------

constexpr int kSlices = 3;

struct ImageSpec {
  std::optional<double> b;
  std::optional<std::array<double, 3>> direction;
  std::string directionality;
  std::vector<std::string> image_type = {"ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"};
};

/// A series holding every spec at every position; InstanceNumbers shuffled (as Philips sends
/// them), file order shuffled too.
DicomSeries make_diffusion_series(int number, const std::vector<ImageSpec>& specs, unsigned seed = 7,
                                  const std::string& frame_of_reference = "1.2.9") {
  DicomSeries s;
  s.series_instance_uid = "1.2.3." + std::to_string(number);
  s.series_number = number;
  s.series_description = "DWI";
  s.modality = "MR";
  s.frame_of_reference_uid = frame_of_reference;
  s.study.study_instance_uid = "1.2.3";
  std::vector<int> numbers(specs.size() * kSlices);
  for (size_t i = 0; i < numbers.size(); ++i) numbers[i] = static_cast<int>(i) + 1;
  std::mt19937 rng(seed);
  std::shuffle(numbers.begin(), numbers.end(), rng);
  size_t n = 0;
  for (const ImageSpec& spec : specs) {
    for (int k = 0; k < kSlices; ++k, ++n) {
      DicomInstance inst;
      inst.path = "f" + std::to_string(n);
      inst.sop_instance_uid = s.series_instance_uid + "." + std::to_string(n);
      inst.instance_number = numbers[n];
      inst.has_instance_number = true;
      inst.rows = 4;
      inst.columns = 4;
      inst.image_position_patient = std::array<double, 3>{0, 0, 4.0 * k};
      inst.image_orientation_patient = std::array<double, 6>{1, 0, 0, 0, 1, 0};
      inst.pixel_spacing_mm = std::array<double, 2>{1, 1};
      inst.image_type = spec.image_type;
      inst.b_value = spec.b;
      inst.diffusion_direction = spec.direction;
      inst.diffusion_directionality = spec.directionality;
      s.instances.push_back(inst);
    }
  }
  std::shuffle(s.instances.begin(), s.instances.end(), rng);
  return s;
}

ImageSpec b0() { return {0.0, std::array<double, 3>{0, 0, 0}, "NONE"}; }
ImageSpec dir(double x, double y, double z, double b = 1000.0) { return {b, std::array<double, 3>{x, y, z}, ""}; }
ImageSpec iso(double b = 1000.0) { return {b, std::array<double, 3>{0, 0, 0}, "ISOTROPIC"}; }

void expect_one_image_per_position(const DicomSeries& s) {
  std::set<double> z;
  for (const DicomInstance& i : s.instances) z.insert((*i.image_position_patient)[2]);
  EXPECT_EQ(z.size(), s.instances.size());
  EXPECT_EQ(s.instances.size(), static_cast<size_t>(kSlices));
}

TEST(DiffusionVolumes, PhilipsStyleSeriesSplitsIntoB0DirectionsAndTheIsotropicImage) {
  const DicomSeries s = make_diffusion_series(
      1201, {b0(), dir(-0.707, -0.472, 0.526), dir(0.1, 0.9, 0.42), dir(0.9, 0.1, 0.42), iso()});
  auto volumes = split_diffusion_volumes(s);
  ASSERT_TRUE(volumes.ok()) << volumes.status().to_string();
  ASSERT_EQ(volumes->size(), 5u);
  EXPECT_EQ((*volumes)[0].kind, DiffusionImageKind::kB0);
  EXPECT_EQ((*volumes)[1].kind, DiffusionImageKind::kTrace);
  for (int v = 2; v < 5; ++v) EXPECT_EQ((*volumes)[v].kind, DiffusionImageKind::kDirectional);
  for (const DiffusionVolume& v : *volumes) expect_one_image_per_position(v.images);

  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_FALSE(sel->trace_computed);
  EXPECT_TRUE(sel->dwi_directions.empty());
  for (const DicomInstance& i : sel->dwi.instances) EXPECT_EQ(i.diffusion_directionality, "ISOTROPIC");
  expect_one_image_per_position(sel->dwi);
  EXPECT_TRUE(sel->adc_derived);
  expect_one_image_per_position(sel->b0);
  EXPECT_EQ(sel->b_values, (std::vector<double>{0.0, 1000.0}));
  EXPECT_NE(sel->dwi_source.find("scanner trace"), std::string::npos) << sel->dwi_source;
}

TEST(DiffusionVolumes, WithoutATraceImageTheDirectionsAreCombined) {
  const DicomSeries s = make_diffusion_series(
      4, {b0(), dir(1, 0, 0), dir(0, 1, 0), dir(0, 0, 1), dir(0.577, 0.577, 0.577), dir(-0.577, 0.577, 0.577),
          dir(0.577, -0.577, 0.577)});
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_TRUE(sel->trace_computed);
  EXPECT_EQ(sel->dwi_directions.size(), 6u);
  EXPECT_EQ(sel->trace_direction_count, 6);
  for (const DicomSeries& d : sel->dwi_directions) expect_one_image_per_position(d);
  EXPECT_TRUE(sel->adc_derived);
  EXPECT_NE(sel->dwi_source.find("geometric mean of 6"), std::string::npos) << sel->dwi_source;
}

TEST(DiffusionVolumes, SiemensStyleThreeScanTracePlusB0PicksTheTraceImage) {
  // Three orthogonal directions, the TRACEW image and b0 in one series (no direction vectors
  // on the trace, as Siemens sends it).
  ImageSpec trace{1000.0, std::nullopt, "", {"DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"}};
  const DicomSeries s =
      make_diffusion_series(5, {b0(), dir(1, 0, 0), dir(0, 1, 0), dir(0, 0, 1), trace}, 11);
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_FALSE(sel->trace_computed);
  for (const DicomInstance& i : sel->dwi.instances) {
    EXPECT_NE(std::find(i.image_type.begin(), i.image_type.end(), "TRACEW"), i.image_type.end());
  }
  expect_one_image_per_position(sel->dwi);
}

TEST(DiffusionVolumes, ActualBValuesOfOneShellAreOneB) {
  // Actual b-values differ a little per direction; they form one shell at the common b.
  const DicomSeries s = make_diffusion_series(
      15, {b0(), dir(1, 0, 0, 995), dir(0, 1, 0, 1000), dir(0, 0, 1, 1000), dir(0.6, 0.8, 0, 1004)});
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_DOUBLE_EQ(*sel->dwi_b_value, 1000.0);
  EXPECT_EQ(sel->trace_direction_count, 4);
  EXPECT_EQ(sel->dwi_directions.size(), 4u);
}

TEST(DiffusionVolumes, UntaggedImagesAmongTaggedOnesAreB0AndSaidSo) {
  // Canon/Toshiba: the b0 images carry no b-value at all.
  ImageSpec untagged{std::nullopt, std::nullopt, "", {"ORIGINAL", "PRIMARY"}};
  const DicomSeries s = make_diffusion_series(6, {untagged, dir(1, 0, 0), dir(0, 1, 0), dir(0, 0, 1)});
  auto volumes = split_diffusion_volumes(s);
  ASSERT_TRUE(volumes.ok());
  EXPECT_EQ((*volumes)[0].kind, DiffusionImageKind::kB0);
  EXPECT_TRUE((*volumes)[0].b_untagged);
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_TRUE(sel->adc_derived);
  EXPECT_TRUE(sel->b0_untagged);
  EXPECT_DOUBLE_EQ(sel->b0_value, 0.0);
  ASSERT_FALSE(sel->warnings.empty());
  EXPECT_NE(sel->warnings[0].find("taken as b=0"), std::string::npos) << sel->warnings[0];
}

TEST(DiffusionVolumes, RepeatedVolumesOfOneKeyBecomeRepeats) {
  const DicomSeries s = make_diffusion_series(7, {b0(), b0(), iso(), iso()});
  auto volumes = split_diffusion_volumes(s);
  ASSERT_TRUE(volumes.ok());
  ASSERT_EQ(volumes->size(), 4u);
  EXPECT_EQ((*volumes)[0].repeat, 0);
  EXPECT_EQ((*volumes)[1].repeat, 1);
  for (const DiffusionVolume& v : *volumes) expect_one_image_per_position(v.images);
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->b0_volumes.size(), 2u);  // averaged by the pipeline
}

TEST(DiffusionVolumes, ImagesOfAnotherMatrixSizeFormTheirOwnVolume) {
  // E.g. a mosaic that could not be unpacked next to the tiles of one that could.
  DicomSeries s = make_diffusion_series(16, {b0(), iso()});
  DicomInstance big = s.instances.front();
  big.rows = big.columns = 8;
  big.b_value = 0.0;
  big.diffusion_direction.reset();
  s.instances.push_back(big);
  auto volumes = split_diffusion_volumes(s);
  ASSERT_TRUE(volumes.ok());
  ASSERT_EQ(volumes->size(), 3u);
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  ASSERT_EQ(sel->b0_volumes.size(), 1u);
  expect_one_image_per_position(sel->b0);
  EXPECT_EQ(sel->b0.instances.front().rows, 4);
}

TEST(DiffusionVolumes, ScannerAdcInTheSameSeriesIsGiven) {
  ImageSpec adc{std::nullopt, std::nullopt, "", {"DERIVED", "PRIMARY", "DIFFUSION", "ADC"}};
  const DicomSeries s = make_diffusion_series(8, {b0(), iso(), adc});
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_FALSE(sel->adc_derived);
  expect_one_image_per_position(sel->adc);
  for (const DicomInstance& i : sel->adc.instances) {
    EXPECT_NE(std::find(i.image_type.begin(), i.image_type.end(), "ADC"), i.image_type.end());
  }
}

TEST(DiffusionVolumes, ChoosesTheBInRangeClosestToTheModelsAndRefusesOutsideIt) {
  const DicomSeries s = make_diffusion_series(9, {b0(), iso(500), iso(1000), iso(2000)});
  auto sel = select_diffusion_series({s});
  ASSERT_TRUE(sel.ok());
  EXPECT_DOUBLE_EQ(*sel->dwi_b_value, 1000.0);
  ClassifierOptions o;
  o.b_target = 2000;
  o.b_min = 1800;
  o.b_max = 2200;
  sel = select_diffusion_series({s}, o);
  ASSERT_TRUE(sel.ok());
  EXPECT_DOUBLE_EQ(*sel->dwi_b_value, 2000.0);
  const DicomSeries high = make_diffusion_series(10, {b0(), dir(1, 0, 0, 2500), dir(0, 1, 0, 2500)});
  auto refused = select_diffusion_series({high});
  ASSERT_EQ(refused.status().code(), base::Code::kOutOfRange);
  EXPECT_NE(refused.status().message().find("b = 2500 s/mm^2"), std::string::npos) << refused.status().message();
}

TEST(DiffusionVolumes, StudyWithoutFrameOfReferenceStillFindsItsB0) {
  const DicomSeries trace = make_diffusion_series(11, {iso()}, 3, "");
  const DicomSeries zero = make_diffusion_series(12, {b0()}, 4, "");
  auto sel = select_diffusion_series({trace, zero});
  ASSERT_TRUE(sel.ok()) << sel.status().to_string();
  EXPECT_TRUE(sel->adc_derived);
  EXPECT_EQ(sel->b0.series_number, 12);
}

TEST(DiffusionVolumes, GeSeriesWithOnlyAZeroPrivateBIsNotADiffusionSeries) {
  // GE writes (0043,xx39) on every image: a T2 series reads as b = 0 and must not become the
  // b0 of another series' ADC.
  DicomSeries t2 = make_diffusion_series(13, {b0()}, 5);
  t2.series_description = "Ax T2 FSE";
  for (DicomInstance& i : t2.instances) {
    i.image_type = {"ORIGINAL", "PRIMARY", "OTHER"};
    i.b_value_source = "GE (0043,xx39)";
  }
  EXPECT_EQ(classify_series(t2).kind, SeriesKind::kOther);
  const DicomSeries trace = make_diffusion_series(14, {iso()}, 6);
  auto sel = select_diffusion_series({t2, trace});
  EXPECT_EQ(sel.status().code(), base::Code::kNotFound) << (sel.ok() ? sel->reason : "");
}

// ---- trace arithmetic ---------------------------------------------------------------------

TEST(DiffusionVolumes, GeometricMeanOfDirectionsIsTheTrace) {
  Grid g;
  g.dims = {2, 1, 1};
  g.affine = Eigen::Matrix4d::Identity();
  const double s0 = 1000.0, b = 1000.0;
  const double d[3] = {0.0005, 0.0010, 0.0015};  // mm^2/s along x, y, z
  std::vector<VolumeF> parts;
  for (double di : d) {
    VolumeF v(g, 0.0f);
    v.data[0] = static_cast<float>(s0 * std::exp(-b * di));
    v.data[1] = di == 0.0010 ? 0.0f : 100.0f;  // one direction has no signal here
    parts.push_back(v);
  }
  auto trace = geometric_mean(parts);
  ASSERT_TRUE(trace.ok());
  EXPECT_NEAR(trace->data[0], s0 * std::exp(-b * 0.0010), 1e-2);  // mean diffusivity 0.0010
  EXPECT_EQ(trace->data[1], 0.0f);
  Grid other = g;
  other.dims = {1, 2, 1};
  parts.push_back(VolumeF(other, 1.0f));
  EXPECT_EQ(geometric_mean(parts).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(geometric_mean({}).status().code(), base::Code::kInvalidArgument);

  // One volume at a time gives the same trace, and refuses a volume on another grid.
  GeometricMeanAccumulator acc;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(acc.add(parts[static_cast<size_t>(i)]).ok());
  EXPECT_EQ(acc.add(parts[3]).code(), base::Code::kInvalidArgument);
  auto incremental = acc.result();
  ASSERT_TRUE(incremental.ok());
  EXPECT_EQ(incremental->data, trace->data);
  EXPECT_EQ(acc.count(), 3);
  EXPECT_EQ(GeometricMeanAccumulator().result().status().code(), base::Code::kInvalidArgument);
}

// ---- Siemens MOSAIC ----------------------------------------------------------------------

class DiffusionFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_diffusion_file_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(DiffusionFileTest, TilesBecomeSlicesWithTheirOwnPositions) {
  // 3 slices of 2 rows x 3 columns tiled 2 x 2 into a 4 x 6 mosaic (the 4th tile empty).
  constexpr int kTileRows = 2, kTileCols = 3, kN = 3;
  SliceSpec s;
  s.series_uid = new_uid();
  s.rows = 2 * kTileRows;
  s.cols = 2 * kTileCols;
  s.ipp = {-10.0, -20.0, 30.0};
  s.spacing = {2.0, 1.5};  // row spacing, column spacing
  s.image_type = "ORIGINAL\\PRIMARY\\DIFFUSION\\NONE\\ND\\MOSAIC";
  s.pixels.resize(static_cast<size_t>(s.rows * s.cols));
  for (int y = 0; y < s.rows; ++y) {
    for (int x = 0; x < s.cols; ++x) {
      const int tile = (y / kTileRows) * 2 + x / kTileCols;
      s.pixels[static_cast<size_t>(y * s.cols + x)] = static_cast<Uint16>(100 * (tile + 1) + (y % kTileRows) * 10 + x % kTileCols);
    }
  }
  s.extra = [&](DcmDataset& ds) {
    ds.putAndInsertString(DCM_SpacingBetweenSlices, "5");
    put_csa(ds, make_csa({{"NumberOfImagesInMosaic", {std::to_string(kN)}},
                          {"B_value", {"1000"}},
                          {"SliceNormalVector", {"0", "0", "-1"}}}));
  };
  const std::string path = (dir_ / "mosaic.dcm").string();
  write_slice(path, s);
  auto series = read_dicom_header(path);
  ASSERT_TRUE(series.ok()) << series.status().to_string();
  ASSERT_EQ(series->instances.size(), static_cast<size_t>(kN));
  const DicomInstance& t0 = series->instances[0];
  EXPECT_EQ(t0.rows, kTileRows);
  EXPECT_EQ(t0.columns, kTileCols);
  // First tile: IPP moved by half the size difference: 1.5 columns of 1.5 mm, 1 row of 2 mm.
  EXPECT_NEAR((*t0.image_position_patient)[0], -10.0 + 1.5 * 1.5, 1e-9);
  EXPECT_NEAR((*t0.image_position_patient)[1], -20.0 + 1.0 * 2.0, 1e-9);
  EXPECT_NEAR((*t0.image_position_patient)[2], 30.0, 1e-9);
  // Tile k lies k * 5 mm along the CSA slice normal (0, 0, -1).
  EXPECT_NEAR((*series->instances[2].image_position_patient)[2], 20.0, 1e-9);

  auto volume = assemble_volume(*series);
  ASSERT_TRUE(volume.ok()) << volume.status().to_string();
  ASSERT_EQ(volume->grid.dims, (std::array<int64_t, 3>{kTileCols, kTileRows, kN}));
  // Sorted along +z (row x column direction): slice 0 is the last tile (z = 20).
  EXPECT_EQ(volume->at(0, 0, 0), 300.0f);
  EXPECT_EQ(volume->at(2, 1, 0), 312.0f);
  EXPECT_EQ(volume->at(1, 1, 2), 111.0f);
  EXPECT_NEAR(volume->grid.affine(2, 2), 5.0, 1e-9);
}

TEST_F(DiffusionFileTest, MosaicWithoutImageCountIsRefusedWithTheReason) {
  SliceSpec s;
  s.series_uid = new_uid();
  s.rows = 4;
  s.cols = 6;
  s.image_type = "ORIGINAL\\PRIMARY\\DIFFUSION\\NONE\\ND\\MOSAIC";
  const std::string path = (dir_ / "mosaic.dcm").string();
  write_slice(path, s);
  auto series = read_dicom_header(path);
  ASSERT_TRUE(series.ok());
  auto volume = assemble_volume(*series);
  ASSERT_EQ(volume.status().code(), base::Code::kUnimplemented);
  EXPECT_NE(volume.status().message().find("NumberOfImagesInMosaic"), std::string::npos) << volume.status().message();
}

TEST_F(DiffusionFileTest, PrivateTagsOfAnImplicitVrFileAreReadWithoutTheirVr) {
  // In implicit VR little endian the private elements come back without a VR (UN): the reader
  // must know each vendor's binary layout (US, FD) or text (IS, CS, DS).
  SliceSpec s;
  s.series_uid = new_uid();
  s.implicit_vr = true;
  s.extra = [](DcmDataset& ds) {
    put_private_creator(ds, 0x0019, "SIEMENS MR HEADER");
    ds.putAndInsertUint16(DcmTag(0x0019, 0x100A, EVR_US), 12);
    put_private_string(ds, 0x0019, 0x0C, EVR_IS, "1000");
    put_private_string(ds, 0x0019, 0x0D, EVR_CS, "DIRECTIONAL");
    put_private_fd(ds, 0x0019, 0x0E, {0.0, -0.6, 0.8});
  };
  const std::string path = (dir_ / "implicit.dcm").string();
  write_slice(path, s);
  auto series = read_dicom_header(path);
  ASSERT_TRUE(series.ok()) << series.status().to_string();
  const DicomInstance& inst = series->instances.front();
  ASSERT_TRUE(inst.b_value);
  EXPECT_DOUBLE_EQ(*inst.b_value, 1000.0);
  EXPECT_EQ(inst.b_value_source, "Siemens (0019,xx0C)");
  EXPECT_EQ(inst.diffusion_directionality, "DIRECTIONAL");
  ASSERT_TRUE(inst.diffusion_direction);
  EXPECT_DOUBLE_EQ((*inst.diffusion_direction)[1], -0.6);
  EXPECT_EQ(inst.mosaic_images, 12);
}


}  // namespace
}  // namespace image
