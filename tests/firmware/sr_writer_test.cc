// Tests of firmware/sr_writer: the TID 1500 report written for a SEG of a synthetic DWI series
// reads back with DCMTK (volume in ml, count, algorithm, references to the SEG and the DWI
// series, same study) and passes dciodvfy (dicom3tools) when it is installed.
#include "firmware/sr_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include "firmware/seg_writer.h"
#include "image/dicom_series.h"
#include "tests/firmware/dicom_output_test_util.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

class SrWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sb_sr_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(testing::write_test_mr_series(dir_ / "study", 16, 12, 3));
    auto scan = image::scan_dicom_folder((dir_ / "study").string());
    ASSERT_TRUE(scan.ok()) << scan.status().to_string();
    series_ = scan->series.at(0);
    auto stack = image::sort_slices(series_);
    ASSERT_TRUE(stack.ok());
    image::VolumeU8 mask(stack->grid, 0);
    mask.at(3, 4, 1) = 1;
    ASSERT_TRUE(write_seg(series_, mask, {"strokebox", "0.1.0", "demo"}, seg_path()).ok());
    DcmFileFormat seg;
    ASSERT_TRUE(seg.loadFile(seg_path().c_str()).good());
    OFString v;
    seg.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, v);
    facts_.seg_sop_instance_uid = v.c_str();
    seg.getDataset()->findAndGetOFString(DCM_SeriesInstanceUID, v);
    facts_.seg_series_instance_uid = v.c_str();
    facts_.lesion_volume_ml = 12.345;
    facts_.lesion_count = 3;
    facts_.algorithm_version = "0.1.0";
    facts_.model_id = "demo-isles-v1";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string seg_path() const { return (dir_ / "seg.dcm").string(); }
  std::string sr_path() const { return (dir_ / "sr.dcm").string(); }

  fs::path dir_;
  image::DicomSeries series_;
  SrFacts facts_;
};

std::string get_sop_class(DcmDataset& d) {
  OFString v;
  d.findAndGetOFString(DCM_SOPClassUID, v);
  return v.c_str();
}

/// Depth-first search for a NUM item by concept code value; returns its numeric value and unit.
bool find_num(DSRDocumentTree& tree, const std::string& concept_code, std::string& value, std::string& unit) {
  if (tree.gotoRoot() == 0) return false;
  do {
    const DSRContentItem& item = tree.getCurrentContentItem();
    if (item.getValueType() == DSRTypes::VT_Num && item.getConceptName().getCodeValue() == concept_code.c_str()) {
      const DSRNumericMeasurementValue& num = item.getNumericValue();
      value = num.getNumericValue().c_str();
      unit = num.getMeasurementUnit().getCodeValue().c_str();
      return true;
    }
  } while (tree.iterate() != 0);
  return false;
}

TEST_F(SrWriterTest, ReadsBackVolumeCountAlgorithmAndReferences) {
  std::string uid;
  const base::Status st = write_sr(series_, facts_, sr_path(), {}, &uid);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_FALSE(uid.empty());
  EXPECT_FALSE(fs::exists(sr_path() + ".tmp"));
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile(sr_path().c_str()).good());
  DSRDocument doc;
  ASSERT_TRUE(doc.read(*ff.getDataset()).good());
  EXPECT_EQ(doc.getDocumentType(), DSRTypes::DT_EnhancedSR);
  EXPECT_EQ(get_sop_class(*ff.getDataset()), UID_EnhancedSRStorage);
  OFString v;
  doc.getStudyInstanceUID(v);
  EXPECT_EQ(std::string(v.c_str()), series_.study.study_instance_uid);
  doc.getSOPInstanceUID(v);
  EXPECT_EQ(std::string(v.c_str()), uid);
  doc.getPatientID(v);
  EXPECT_EQ(std::string(v.c_str()), "SB0001");
  doc.getSeriesNumber(v);
  EXPECT_EQ(std::string(v.c_str()), "3005");
  DSRDocumentTree& tree = doc.getTree();
  ASSERT_GT(tree.gotoRoot(), 0u);
  EXPECT_EQ(std::string(tree.getCurrentContentItem().getConceptName().getCodeValue().c_str()), "126000");
  std::string value, unit;
  ASSERT_TRUE(find_num(tree, "118565006", value, unit));
  EXPECT_EQ(value, "12.35");  // 12.345 rounded to 2 decimals (printf rounding of the binary value)
  EXPECT_EQ(unit, "ml");
  ASSERT_TRUE(find_num(tree, "C25463", value, unit));
  EXPECT_EQ(value, "3");
  // The SEG and the DWI series are referenced; the algorithm is named.
  bool seg_ref = false, series_ref = false, algo = false, model = false;
  ASSERT_GT(tree.gotoRoot(), 0u);
  do {
    const DSRContentItem& item = tree.getCurrentContentItem();
    if (item.getValueType() == DSRTypes::VT_Image &&
        item.getImageReference().getSOPInstanceUID() == facts_.seg_sop_instance_uid.c_str()) {
      seg_ref = item.getImageReference().getSegmentList().isElement(1);
    }
    if (item.getValueType() == DSRTypes::VT_UIDRef && item.getStringValue() == series_.series_instance_uid.c_str()) {
      series_ref = true;
    }
    if (item.getValueType() == DSRTypes::VT_Text && item.getStringValue() == "strokebox") algo = true;
    if (item.getValueType() == DSRTypes::VT_Text && item.getStringValue() == "model_id=demo-isles-v1") model = true;
  } while (tree.iterate() != 0);
  EXPECT_TRUE(seg_ref);
  EXPECT_TRUE(series_ref);
  EXPECT_TRUE(algo);
  EXPECT_TRUE(model);
  // Evidence lists the SEG.
  EXPECT_TRUE(doc.getCurrentRequestedProcedureEvidence()
                  .gotoItem(UID_SegmentationStorage, facts_.seg_sop_instance_uid.c_str())
                  .good());
}

TEST_F(SrWriterTest, PlausibilityCommentIsAQualitativeEvaluation) {
  SrFacts f = facts_;
  f.plausibility_comment = "1 of 3 lesions without restricted diffusion; ADC core 2.1 ml";
  ASSERT_TRUE(write_sr(series_, f, sr_path()).ok());
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile(sr_path().c_str()).good());
  DSRDocument doc;
  ASSERT_TRUE(doc.read(*ff.getDataset()).good());
  DSRDocumentTree& tree = doc.getTree();
  bool found = false;
  ASSERT_GT(tree.gotoRoot(), 0u);
  do {
    const DSRContentItem& item = tree.getCurrentContentItem();
    found = found || (item.getValueType() == DSRTypes::VT_Text &&
                      item.getConceptName().getCodeValue() == "121106" &&
                      item.getStringValue() == f.plausibility_comment.c_str());
  } while (tree.iterate() != 0);
  EXPECT_TRUE(found);
  if (testing::have_dciodvfy()) {
    std::string errors;
    const std::string output = testing::run_dciodvfy(sr_path(), errors);
    EXPECT_TRUE(errors.empty()) << errors << "\nfull output:\n" << output;
  }
}

TEST_F(SrWriterTest, RejectsMissingSegReferenceAndNegativeValues) {
  SrFacts f = facts_;
  f.seg_sop_instance_uid.clear();
  EXPECT_EQ(write_sr(series_, f, sr_path()).code(), base::Code::kInvalidArgument);
  f = facts_;
  f.lesion_volume_ml = -1;
  EXPECT_EQ(write_sr(series_, f, sr_path()).code(), base::Code::kInvalidArgument);
  EXPECT_FALSE(fs::exists(sr_path()));
}

TEST_F(SrWriterTest, PassesDciodvfyWithoutErrors) {
  if (!testing::have_dciodvfy()) GTEST_SKIP() << "dicom3tools (dciodvfy) is not installed";
  ASSERT_TRUE(write_sr(series_, facts_, sr_path()).ok());
  std::string errors;
  const std::string output = testing::run_dciodvfy(sr_path(), errors);
  EXPECT_TRUE(errors.empty()) << errors << "\nfull output:\n" << output;
}

}  // namespace
}  // namespace firmware
