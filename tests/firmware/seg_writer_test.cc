// Tests of firmware/seg_writer: a SEG written from a synthetic oblique MR series loads back
// with DCMTK with one frame per sorted slice, the right pixels, references and codes, and
// passes dciodvfy (dicom3tools) when it is installed.
#include "firmware/seg_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>
#include <dcmtk/dcmseg/segutils.h>

#include "image/dicom_series.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

std::string new_uid() {
  char buf[100];
  return dcmGenerateUniqueIdentifier(buf, SITE_INSTANCE_UID_ROOT);
}

std::string ds_list(const std::vector<double>& v) {
  std::string out;
  char buf[32];
  for (size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%.8g", v[i]);
    out += (i ? "\\" : "") + std::string(buf);
  }
  return out;
}

constexpr int kRows = 5, kCols = 4, kSlices = 3;

class SegWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sb_seg_writer_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "study");
    write_series();
    auto scan = image::scan_dicom_folder((dir_ / "study").string());
    ASSERT_TRUE(scan.ok()) << scan.status().to_string();
    ASSERT_EQ(scan->series.size(), 1u);
    series_ = scan->series[0];
    auto stack = image::sort_slices(series_);
    ASSERT_TRUE(stack.ok()) << stack.status().to_string();
    stack_ = *stack;
    mask_ = image::VolumeU8(stack_.grid, 0);
    mask_.at(1, 2, 0) = 1;
    mask_.at(3, 4, 2) = 1;
    mask_.at(0, 0, 2) = 1;  // slice 1 stays empty
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// An oblique 3-slice MR series written in reverse file order.
  void write_series() {
    const double a = 25 * M_PI / 180;
    const std::array<double, 6> iop = {std::cos(a), std::sin(a), 0, 0, 0, -1};  // oblique coronal
    const Eigen::Vector3d normal =
        Eigen::Vector3d(iop[0], iop[1], iop[2]).cross(Eigen::Vector3d(iop[3], iop[4], iop[5]));
    const std::string series_uid = new_uid();
    for (int k = 0; k < kSlices; ++k) {
      DcmFileFormat ff;
      DcmDataset& d = *ff.getDataset();
      d.putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 100");
      d.putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage);
      d.putAndInsertString(DCM_SOPInstanceUID, new_uid().c_str());
      d.putAndInsertString(DCM_StudyInstanceUID, "1.2.826.0.1.3680043.2.1125.1.1");
      d.putAndInsertString(DCM_SeriesInstanceUID, series_uid.c_str());
      d.putAndInsertString(DCM_FrameOfReferenceUID, "1.2.826.0.1.3680043.2.1125.1.2");
      d.putAndInsertString(DCM_Modality, "MR");
      d.putAndInsertString(DCM_PatientName, "Doe^Jane");
      d.putAndInsertString(DCM_PatientID, "SB0001");
      d.putAndInsertString(DCM_PatientBirthDate, "19600101");
      d.putAndInsertString(DCM_PatientSex, "F");
      d.putAndInsertString(DCM_StudyDate, "20240102");
      d.putAndInsertString(DCM_StudyTime, "101500");
      d.putAndInsertString(DCM_StudyID, "42");
      d.putAndInsertString(DCM_AccessionNumber, "ACC42");
      d.putAndInsertString(DCM_ReferringPhysicianName, "House^Gregory");
      d.putAndInsertString(DCM_Manufacturer, "ACME");
      d.putAndInsertString(DCM_SeriesNumber, "5");
      d.putAndInsertString(DCM_SeriesDescription, "ep2d_diff_trace");
      d.putAndInsertString(DCM_InstanceNumber, std::to_string(k + 1).c_str());
      d.putAndInsertString(DCM_ImageType, "ORIGINAL\\PRIMARY\\DIFFUSION\\TRACEW");
      const Eigen::Vector3d p = Eigen::Vector3d(-20, 10, 30) + normal * (4.0 * k);
      d.putAndInsertString(DCM_ImagePositionPatient, ds_list({p.x(), p.y(), p.z()}).c_str());
      d.putAndInsertString(DCM_ImageOrientationPatient,
                           ds_list({iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]}).c_str());
      d.putAndInsertString(DCM_PixelSpacing, "1.5\\1.25");
      d.putAndInsertString(DCM_SliceThickness, "4");
      d.putAndInsertUint16(DCM_SamplesPerPixel, 1);
      d.putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
      d.putAndInsertUint16(DCM_Rows, kRows);
      d.putAndInsertUint16(DCM_Columns, kCols);
      d.putAndInsertUint16(DCM_BitsAllocated, 16);
      d.putAndInsertUint16(DCM_BitsStored, 16);
      d.putAndInsertUint16(DCM_HighBit, 15);
      d.putAndInsertUint16(DCM_PixelRepresentation, 0);
      std::vector<Uint16> pixels(kRows * kCols, static_cast<Uint16>(100 + k));
      d.putAndInsertUint16Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size()));
      const std::string path = (dir_ / "study" / ("img" + std::to_string(kSlices - k) + ".dcm")).string();
      ASSERT_TRUE(ff.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
    }
  }

  std::string seg_path() const { return (dir_ / "seg.dcm").string(); }

  fs::path dir_;
  image::DicomSeries series_;
  image::SliceStack stack_;
  image::VolumeU8 mask_;
};

std::string get(DcmItem& item, const DcmTagKey& key) {
  OFString v;
  item.findAndGetOFStringArray(key, v);
  return v.c_str();
}

TEST_F(SegWriterTest, WritesOneFramePerSliceWithPixelsReferencesAndCodes) {
  const SegAlgorithm algo{"strokebox", "0.1.0", "demo-isles-v1"};
  ASSERT_TRUE(write_seg(series_, mask_, algo, seg_path()).ok());
  EXPECT_FALSE(fs::exists(seg_path() + ".tmp"));

  DcmSegmentation* raw = nullptr;
  ASSERT_TRUE(DcmSegmentation::loadFile(seg_path().c_str(), raw).good());
  std::unique_ptr<DcmSegmentation> seg(raw);
  ASSERT_EQ(seg->getNumberOfFrames(), static_cast<size_t>(kSlices));
  ASSERT_EQ(seg->getNumberOfSegments(), 1u);
  DcmSegment* segment = seg->getSegment(1);
  ASSERT_NE(segment, nullptr);
  OFString value;
  segment->getSegmentLabel(value);
  EXPECT_EQ(std::string(value.c_str()), "Infarct");
  segment->getSegmentedPropertyTypeCode().getCodeValue(value);
  EXPECT_EQ(std::string(value.c_str()), "55641003");
  segment->getSegmentedPropertyTypeCode().getCodingSchemeDesignator(value);
  EXPECT_EQ(std::string(value.c_str()), "SCT");
  segment->getSegmentedPropertyCategoryCode().getCodeValue(value);
  EXPECT_EQ(std::string(value.c_str()), "49755003");
  segment->getSegmentationAlgorithmIdentification().getAlgorithmParameters(value);
  EXPECT_EQ(std::string(value.c_str()), "model_id=demo-isles-v1");
  segment->getSegmentationAlgorithmIdentification().getAlgorithmVersion(value);
  EXPECT_EQ(std::string(value.c_str()), "0.1.0");

  // DCMTK's reader (3.6.7) unpacks the first frame correctly; frames that start mid-byte are
  // checked below on the raw Pixel Data instead.
  {
    const DcmIODTypes::Frame* packed = seg->getFrame(0);
    ASSERT_NE(packed, nullptr);
    std::unique_ptr<DcmIODTypes::Frame> frame(DcmSegUtils::unpackBinaryFrame(packed, kRows, kCols));
    ASSERT_NE(frame, nullptr);
    for (int j = 0; j < kRows; ++j) {
      for (int i = 0; i < kCols; ++i) {
        EXPECT_EQ(frame->pixData[j * kCols + i] != 0, mask_.at(i, j, 0) != 0) << i << "," << j;
      }
    }
  }

  // Raw dataset: hierarchy copied, new series, per-frame references in sorted slice order.
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile(seg_path().c_str()).good());
  DcmDataset& d = *ff.getDataset();
  EXPECT_EQ(get(d, DCM_SOPClassUID), UID_SegmentationStorage);
  EXPECT_EQ(get(d, DCM_Modality), "SEG");
  EXPECT_EQ(get(d, DCM_PatientName), "Doe^Jane");
  EXPECT_EQ(get(d, DCM_PatientID), "SB0001");
  EXPECT_EQ(get(d, DCM_StudyInstanceUID), series_.study.study_instance_uid);
  EXPECT_EQ(get(d, DCM_AccessionNumber), "ACC42");
  EXPECT_EQ(get(d, DCM_FrameOfReferenceUID), series_.frame_of_reference_uid);
  EXPECT_NE(get(d, DCM_SeriesInstanceUID), series_.series_instance_uid);
  EXPECT_EQ(get(d, DCM_SeriesNumber), "1005");
  EXPECT_EQ(get(d, DCM_SeriesDescription), "strokebox lesion SEG");
  EXPECT_EQ(ff.getDataset()->getOriginalXfer(), EXS_LittleEndianExplicit);
  // Binary Pixel Data: one bit per pixel, frames concatenated without padding, least
  // significant bit first (PS3.5 8.1.1, PS3.3 C.8.20.2).
  const Uint8* bits = nullptr;
  unsigned long bytes = 0;
  ASSERT_TRUE(d.findAndGetUint8Array(DCM_PixelData, bits, &bytes).good());
  ASSERT_EQ(bytes, static_cast<unsigned long>((kRows * kCols * kSlices + 7) / 8 + ((kRows * kCols * kSlices + 7) / 8) % 2));
  for (int k = 0; k < kSlices; ++k) {
    for (int j = 0; j < kRows; ++j) {
      for (int i = 0; i < kCols; ++i) {
        const size_t bit = static_cast<size_t>(k) * kRows * kCols + j * kCols + i;
        EXPECT_EQ(((bits[bit / 8] >> (bit % 8)) & 1) != 0, mask_.at(i, j, k) != 0) << i << "," << j << "," << k;
      }
    }
  }
  for (int k = 0; k < kSlices; ++k) {
    DcmItem* frame = nullptr;
    ASSERT_TRUE(d.findAndGetSequenceItem(DCM_PerFrameFunctionalGroupsSequence, frame, k).good());
    DcmItem* derivation = nullptr;
    ASSERT_TRUE(frame->findAndGetSequenceItem(DCM_DerivationImageSequence, derivation, 0).good());
    DcmItem* source = nullptr;
    ASSERT_TRUE(derivation->findAndGetSequenceItem(DCM_SourceImageSequence, source, 0).good());
    EXPECT_EQ(get(*source, DCM_ReferencedSOPInstanceUID), stack_.slices[k].sop_instance_uid) << "frame " << k;
    DcmItem* position = nullptr;
    ASSERT_TRUE(frame->findAndGetSequenceItem(DCM_PlanePositionSequence, position, 0).good());
    for (int a = 0; a < 3; ++a) {
      Float64 v = 0;
      ASSERT_TRUE(position->findAndGetFloat64(DCM_ImagePositionPatient, v, a).good());
      EXPECT_NEAR(v, (*stack_.slices[k].image_position_patient)[a], 1e-4);
    }
  }
  DcmItem* referenced_series = nullptr;
  ASSERT_TRUE(d.findAndGetSequenceItem(DCM_ReferencedSeriesSequence, referenced_series, 0).good());
  EXPECT_EQ(get(*referenced_series, DCM_SeriesInstanceUID), series_.series_instance_uid);
}

TEST_F(SegWriterTest, PassesDciodvfyWithoutErrors) {
  if (!fs::exists("/usr/bin/dciodvfy")) GTEST_SKIP() << "dicom3tools (dciodvfy) is not installed";
  ASSERT_TRUE(write_seg(series_, mask_, {"strokebox", "0.1.0", "demo"}, seg_path()).ok());
  const std::string cmd = "/usr/bin/dciodvfy '" + seg_path() + "' 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) output.append(buf, n);
  ::pclose(pipe);
  std::string errors;
  size_t start = 0;
  while (start < output.size()) {
    size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(start, end - start);
    if (line.rfind("Error", 0) == 0) errors += line + "\n";
    start = end + 1;
  }
  EXPECT_TRUE(errors.empty()) << errors << "\nfull output:\n" << output;
}

TEST_F(SegWriterTest, FallsBackToScannedMetadataWhenTheSourceFileIsGone) {
  fs::remove(stack_.slices.front().path);
  ASSERT_TRUE(write_seg(series_, mask_, {"strokebox", "0.1.0", ""}, seg_path()).ok());
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile(seg_path().c_str()).good());
  EXPECT_EQ(get(*ff.getDataset(), DCM_PatientID), "SB0001");
  EXPECT_EQ(get(*ff.getDataset(), DCM_StudyInstanceUID), series_.study.study_instance_uid);
  EXPECT_EQ(get(*ff.getDataset(), DCM_FrameOfReferenceUID), series_.frame_of_reference_uid);
}

TEST_F(SegWriterTest, RefusesAMaskOnAnotherGrid) {
  image::Grid other = stack_.grid;
  other.dims[2] = kSlices + 1;
  const image::VolumeU8 wrong_dims(other, 0);
  EXPECT_EQ(write_seg(series_, wrong_dims, {}, seg_path()).code(), base::Code::kInvalidArgument);
  image::VolumeU8 shifted = mask_;
  shifted.grid.affine(0, 3) += 5.0;
  EXPECT_EQ(write_seg(series_, shifted, {}, seg_path()).code(), base::Code::kInvalidArgument);
  EXPECT_FALSE(fs::exists(seg_path()));
}

TEST_F(SegWriterTest, UnwritableDestinationIsUnavailable) {
  const base::Status s = write_seg(series_, mask_, {}, (dir_ / "missing" / "seg.dcm").string());
  EXPECT_EQ(s.code(), base::Code::kUnavailable) << s.to_string();
}

}  // namespace
}  // namespace firmware
