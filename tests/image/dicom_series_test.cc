// Tests of image/dicom_series: folder scanning, slice sorting and geometry checks, pixel
// assembly with rescale, vendor b-values. Each test writes its own tiny MR series with DCMTK.
#include "image/dicom_series.h"

#include "image/phantom.h"
#include "image/series_classifier.h"
#include "tests/image/dicom_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <unistd.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>

namespace image {
namespace {

namespace fs = std::filesystem;

using namespace testutil;

class DicomSeriesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sb_dicom_series_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Writes an axial stack at the given z positions (files in the given order).
  std::string write_stack(const std::vector<double>& z, const std::string& sub = "") {
    const std::string uid = new_uid();
    fs::create_directories(dir_ / sub);
    for (size_t n = 0; n < z.size(); ++n) {
      SliceSpec s;
      s.series_uid = uid;
      s.instance_number = static_cast<int>(n + 1);
      s.ipp = {0, 0, z[n]};
      write_slice((dir_ / sub / ("s" + std::to_string(n) + ".dcm")).string(), s);
    }
    return uid;
  }

  fs::path dir_;
};

TEST_F(DicomSeriesTest, ScanGroupsInstancesBySeriesAndSkipsNonDicomFiles) {
  const std::string a = write_stack({0, 1, 2}, "a");
  const std::string b = write_stack({0, 5}, "nested/b");
  std::ofstream(dir_ / "README.txt") << "not a DICOM file\n";
  std::ofstream(dir_ / "nested" / "empty.dcm");
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  EXPECT_EQ(scan->files_seen, 7);
  EXPECT_EQ(scan->files_skipped, 2);
  ASSERT_EQ(scan->series.size(), 2u);
  size_t na = 0, nb = 0;
  for (const auto& s : scan->series) {
    if (s.series_instance_uid == a) na = s.instances.size();
    if (s.series_instance_uid == b) nb = s.instances.size();
    EXPECT_EQ(s.study.patient_name, "Test^Patient");
    EXPECT_EQ(s.study.study_instance_uid, "1.2.3.4");
    EXPECT_EQ(s.frame_of_reference_uid, "1.2.3.4.5");
    EXPECT_EQ(s.modality, "MR");
  }
  EXPECT_EQ(na, 3u);
  EXPECT_EQ(nb, 2u);
}

TEST_F(DicomSeriesTest, ScanSkipsTheSameInstanceSentTwice) {
  write_stack({0, 1}, "a");
  fs::copy(dir_ / "a", dir_ / "copy", fs::copy_options::recursive);
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  ASSERT_EQ(scan->series.size(), 1u);
  EXPECT_EQ(scan->series[0].instances.size(), 2u);
  EXPECT_EQ(scan->duplicates_skipped, 2);
}

TEST_F(DicomSeriesTest, AnInstanceWithoutPixelDataInAnImageSeriesIsSetAside) {
  // Philips exports a private "MR Series Data Storage" object (no pixel data, no position, but
  // the images' Rows/Columns) under the DWI series' own UID (dcm_qa_philips_dwi, classic export).
  const std::string uid = write_stack({0, 1, 2}, "a");
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile((dir_ / "a" / "s0.dcm").c_str()).good());
  DcmDataset& ds = *ff.getDataset();
  delete ds.remove(DCM_PixelData);
  delete ds.remove(DCM_ImagePositionPatient);
  ASSERT_TRUE(ds.putAndInsertString(DCM_SOPClassUID, "1.3.46.670589.11.0.0.12.2").good());
  ASSERT_TRUE(ds.putAndInsertString(DCM_SOPInstanceUID, new_uid().c_str()).good());
  ASSERT_TRUE(ff.saveFile((dir_ / "a" / "XX_0004").c_str(), EXS_LittleEndianExplicit).good());
  // A series of non-images only stays whole (the classifier names it "not an image series").
  ASSERT_TRUE(ff.saveFile((dir_ / "lone.dcm").c_str(), EXS_LittleEndianExplicit).good());
  DcmFileFormat lone;
  ASSERT_TRUE(lone.loadFile((dir_ / "lone.dcm").c_str()).good());
  ASSERT_TRUE(lone.getDataset()->putAndInsertString(DCM_SeriesInstanceUID, new_uid().c_str()).good());
  ASSERT_TRUE(lone.getDataset()->putAndInsertString(DCM_SOPInstanceUID, new_uid().c_str()).good());
  ASSERT_TRUE(lone.saveFile((dir_ / "lone.dcm").c_str(), EXS_LittleEndianExplicit).good());

  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  EXPECT_EQ(scan->non_images_set_aside, 1);
  ASSERT_EQ(scan->series.size(), 2u);
  for (const DicomSeries& s : scan->series) {
    if (s.series_instance_uid == uid) {
      ASSERT_EQ(s.instances.size(), 3u);
      for (const DicomInstance& i : s.instances) EXPECT_GT(i.rows, 0) << i.path;
      auto v = assemble_volume(s);
      ASSERT_TRUE(v.ok()) << v.status().to_string();
      EXPECT_EQ(v->nk(), 3);
    } else {
      ASSERT_EQ(s.instances.size(), 1u);
      EXPECT_EQ(s.instances[0].rows, 0) << "no pixel data: no image, whatever Rows says";
    }
  }
}

TEST_F(DicomSeriesTest, ScanOfMissingOrEmptyFolderIsNotFound) {
  EXPECT_EQ(scan_dicom_folder((dir_ / "missing").string()).status().code(), base::Code::kNotFound);
  std::ofstream(dir_ / "x.txt") << "hello";
  EXPECT_EQ(scan_dicom_folder(dir_.string()).status().code(), base::Code::kNotFound);
}

TEST_F(DicomSeriesTest, AssemblesShuffledObliqueSeriesWithRescaleAndDicomAffine) {
  // Orientation: R = Rx(20 deg) * Rz(30 deg); row = R e1, col = R e2, normal = R e3.
  const double a = 30 * M_PI / 180, b = 20 * M_PI / 180;
  Eigen::Matrix3d rz, rx;
  rz << std::cos(a), -std::sin(a), 0, std::sin(a), std::cos(a), 0, 0, 0, 1;
  rx << 1, 0, 0, 0, std::cos(b), -std::sin(b), 0, std::sin(b), std::cos(b);
  const Eigen::Matrix3d r = rx * rz;
  const Eigen::Vector3d row = r.col(0), col = r.col(1), normal = r.col(2);
  const Eigen::Vector3d origin(-10.5, 20.25, 3.0);
  const double slice_step = 2.5, row_spacing = 0.8, col_spacing = 0.6;
  const int nk = 5, rows = 3, cols = 4;
  const std::vector<int> file_order = {3, 0, 4, 1, 2};   // slice k written as file n
  const std::vector<int> instance_numbers = {7, 2, 9, 1, 5};
  const std::string uid = new_uid();
  for (int n = 0; n < nk; ++n) {
    const int k = file_order[n];
    SliceSpec s;
    s.series_uid = uid;
    s.instance_number = instance_numbers[n];
    const Eigen::Vector3d p = origin + normal * (slice_step * k);
    s.ipp = {p.x(), p.y(), p.z()};
    s.iop = {row.x(), row.y(), row.z(), col.x(), col.y(), col.z()};
    s.spacing = {row_spacing, col_spacing};
    s.rows = rows;
    s.cols = cols;
    s.slope = 2.0;
    s.intercept = -5.0;
    for (int j = 0; j < rows; ++j) {
      for (int i = 0; i < cols; ++i) s.pixels.push_back(static_cast<Uint16>(100 * k + 10 * j + i));
    }
    s.rle = (n == 2);  // one compressed slice: decoded on the fly
    write_slice((dir_ / ("f" + std::to_string(n) + ".dcm")).string(), s);
  }
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  ASSERT_EQ(scan->series.size(), 1u);
  auto volume = assemble_volume(scan->series[0]);
  ASSERT_TRUE(volume.ok()) << volume.status().to_string();
  ASSERT_EQ(volume->grid.dims, (std::array<int64_t, 3>{cols, rows, nk}));
  for (int k = 0; k < nk; ++k) {
    for (int j = 0; j < rows; ++j) {
      for (int i = 0; i < cols; ++i) {
        ASSERT_FLOAT_EQ(volume->at(i, j, k), (100 * k + 10 * j + i) * 2.0f - 5.0f) << i << "," << j << "," << k;
      }
    }
  }
  const Eigen::Matrix4d& m = volume->grid.affine;
  EXPECT_LT((m.block<3, 1>(0, 0) - row * col_spacing).norm(), 1e-6);
  EXPECT_LT((m.block<3, 1>(0, 1) - col * row_spacing).norm(), 1e-6);
  EXPECT_LT((m.block<3, 1>(0, 2) - normal * slice_step).norm(), 1e-6);
  EXPECT_LT((m.block<3, 1>(0, 3) - origin).norm(), 1e-6);
  // Voxel (i, j, k) sits at IPP_k + i * row * col_spacing + j * col * row_spacing (PS3.3 C.7.6.2.1.1).
  const Eigen::Vector3d expect = origin + normal * (slice_step * 3) + row * (col_spacing * 2) + col * (row_spacing * 1);
  EXPECT_LT((volume->grid.to_patient(2, 1, 3) - expect).norm(), 1e-6);

  auto stack = sort_slices(scan->series[0]);
  ASSERT_TRUE(stack.ok());
  const std::vector<int> sorted_instances = {2, 1, 5, 7, 9};  // instance of slice k
  for (int k = 0; k < nk; ++k) EXPECT_EQ(stack->slices[k].instance_number, sorted_instances[k]);
}

TEST_F(DicomSeriesTest, SignedTwelveBitPixelsAreSignExtendedAndHighBitsIgnored) {
  SliceSpec s;
  s.series_uid = new_uid();
  s.bits_stored = 12;
  s.pixel_representation = 1;
  s.rows = 1;
  s.cols = 3;
  // -5 in 12-bit two's complement is 0xFFB; set garbage in the unused top 4 bits.
  s.pixels = {0xAFFB, 0x0007, 0x5800};  // -5, 7, -2048
  write_slice((dir_ / "a.dcm").string(), s);
  s.ipp = {0, 0, 1};
  s.instance_number = 2;
  write_slice((dir_ / "b.dcm").string(), s);
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  auto volume = assemble_volume(scan->series[0]);
  ASSERT_TRUE(volume.ok()) << volume.status().to_string();
  EXPECT_FLOAT_EQ(volume->at(0, 0, 0), -5.0f);
  EXPECT_FLOAT_EQ(volume->at(1, 0, 0), 7.0f);
  EXPECT_FLOAT_EQ(volume->at(2, 0, 1), -2048.0f);
}

TEST_F(DicomSeriesTest, RefusesTwoSlicesAtTheSamePosition) {
  write_stack({0, 1, 1, 2});
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  auto volume = assemble_volume(scan->series[0]);
  ASSERT_EQ(volume.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(volume.status().message().find("same position"), std::string::npos) << volume.status().message();
}

TEST_F(DicomSeriesTest, RefusesAGapAndNamesTheSlicesAroundIt) {
  write_stack({0, 5, 10, 20, 25});  // instance 4 is at z=20: a slice is missing before it
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  auto volume = assemble_volume(scan->series[0]);
  ASSERT_EQ(volume.status().code(), base::Code::kInvalidArgument);
  const std::string m = volume.status().message();
  EXPECT_NE(m.find("uneven slice spacing"), std::string::npos) << m;
  EXPECT_NE(m.find("instance 3"), std::string::npos) << m;
  EXPECT_NE(m.find("instance 4"), std::string::npos) << m;
}

TEST_F(DicomSeriesTest, AcceptsSmallJitterInSliceSpacing) {
  write_stack({0, 5.2, 10, 15.1, 20});
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  EXPECT_TRUE(sort_slices(scan->series[0]).ok());
}

TEST_F(DicomSeriesTest, RefusesMixedOrientations) {
  const std::string uid = new_uid();
  for (int n = 0; n < 3; ++n) {
    SliceSpec s;
    s.series_uid = uid;
    s.instance_number = n + 1;
    s.ipp = {0, 0, double(n)};
    if (n == 2) s.iop = {1, 0, 0, 0, 0, -1};  // a coronal slice in an axial series
    write_slice((dir_ / ("s" + std::to_string(n) + ".dcm")).string(), s);
  }
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  auto stack = sort_slices(scan->series[0]);
  ASSERT_EQ(stack.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(stack.status().message().find("orientations differ"), std::string::npos);
}

TEST_F(DicomSeriesTest, RefusesASingleSlice) {
  write_stack({0});
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  auto stack = sort_slices(scan->series[0]);
  ASSERT_EQ(stack.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(stack.status().message().find("single slice"), std::string::npos);
}

TEST_F(DicomSeriesTest, MultiFrameAndMosaicAreUnimplemented) {
  const std::string uid = new_uid();
  SliceSpec s;
  s.series_uid = uid;
  s.number_of_frames = 2;
  s.rows = 2;
  s.cols = 2;
  s.pixels.assign(8, 1);
  write_slice((dir_ / "mf.dcm").string(), s);
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok());
  auto volume = assemble_volume(scan->series[0]);
  EXPECT_EQ(volume.status().code(), base::Code::kUnimplemented);
  EXPECT_NE(volume.status().message().find("multi-frame"), std::string::npos);

  DicomSeries mosaic = scan->series[0];
  mosaic.instances[0].number_of_frames = 1;
  mosaic.instances[0].image_type = {"ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"};
  EXPECT_EQ(sort_slices(mosaic).status().code(), base::Code::kUnimplemented);
}

TEST_F(DicomSeriesTest, RefusesAbsurdImageSizeBeforeReadingPixels) {
  DicomSeries s;
  s.series_instance_uid = "1.2";
  for (int n = 0; n < 2; ++n) {
    DicomInstance inst;
    inst.path = "/nonexistent";
    inst.rows = 4096;
    inst.columns = 4096;
    inst.image_position_patient = std::array<double, 3>{0, 0, double(n)};
    inst.image_orientation_patient = std::array<double, 6>{1, 0, 0, 0, 1, 0};
    inst.pixel_spacing_mm = std::array<double, 2>{1, 1};
    s.instances.push_back(inst);
  }
  EXPECT_EQ(assemble_volume(s).status().code(), base::Code::kResourceExhausted);
}

TEST_F(DicomSeriesTest, ReadsStandardAndVendorBValues) {
  struct Case {
    std::string name;
    std::function<void(DcmDataset&)> tag;
    double expected;
    bool implicit_vr = false;
  };
  const std::vector<Case> cases = {
      {"standard", [](DcmDataset& d) { d.putAndInsertFloat64(DCM_DiffusionBValue, 1000.0); }, 1000.0},
      {"siemens",
       [](DcmDataset& d) {
         d.putAndInsertString(DcmTag(0x0019, 0x0010, EVR_LO), "SIEMENS MR HEADER");
         d.putAndInsertString(DcmTag(0x0019, 0x100C, EVR_IS), "800");
       },
       800.0},
      {"siemens_implicit_vr",
       [](DcmDataset& d) {
         d.putAndInsertString(DcmTag(0x0019, 0x0010, EVR_LO), "SIEMENS MR HEADER");
         d.putAndInsertString(DcmTag(0x0019, 0x100C, EVR_IS), "1000");
       },
       1000.0, true},
      {"ge",
       [](DcmDataset& d) {
         d.putAndInsertString(DcmTag(0x0043, 0x0010, EVR_LO), "GEMS_PARM_01");
         d.putAndInsertString(DcmTag(0x0043, 0x1039, EVR_IS), "1000001000\\8\\0\\0");
       },
       1000.0},
      {"philips",
       [](DcmDataset& d) {
         // A creator in block 0x11 rather than 0x10: the element is then (2001,1103).
         d.putAndInsertString(DcmTag(0x2001, 0x0011, EVR_LO), "Philips Imaging DD 001");
         d.putAndInsertFloat32(DcmTag(0x2001, 0x1103, EVR_FL), 1500.0f);
       },
       1500.0},
  };
  for (const Case& c : cases) {
    SliceSpec s;
    s.series_uid = new_uid();
    s.extra = c.tag;
    s.implicit_vr = c.implicit_vr;
    const std::string path = (dir_ / (c.name + ".dcm")).string();
    write_slice(path, s);
    auto header = read_dicom_header(path);
    ASSERT_TRUE(header.ok()) << c.name;
    ASSERT_TRUE(header->instances[0].b_value.has_value()) << c.name;
    EXPECT_DOUBLE_EQ(*header->instances[0].b_value, c.expected) << c.name;
  }
  SliceSpec plain;
  plain.series_uid = new_uid();
  write_slice((dir_ / "plain.dcm").string(), plain);
  auto header = read_dicom_header((dir_ / "plain.dcm").string());
  ASSERT_TRUE(header.ok());
  EXPECT_FALSE(header->instances[0].b_value.has_value());
  EXPECT_EQ(header->instances[0].image_type, (std::vector<std::string>{"ORIGINAL", "PRIMARY", "M", "ND"}));
}

}  // namespace
}  // namespace image

namespace image {
namespace {

TEST_F(DicomSeriesTest, BareDatasetWithoutPreambleIsRead) {
  SliceSpec s;
  s.series_uid = new_uid();
  const std::string path = (dir_ / "bare.dcm").string();
  write_slice(path, s);
  DcmFileFormat ff;
  ASSERT_TRUE(ff.loadFile(path.c_str()).good());
  const std::string bare = (dir_ / "bare_dataset").string();
  ASSERT_TRUE(ff.getDataset()->saveFile(bare.c_str(), EXS_LittleEndianImplicit).good());
  auto header = read_dicom_header(bare);
  ASSERT_TRUE(header.ok()) << header.status().to_string();
  EXPECT_EQ(header->series_instance_uid, s.series_uid);
}

TEST_F(DicomSeriesTest, PhantomStudyIsSelectedAndAssembledOnItsOwnGrid) {
  PhantomOptions options;
  options.seed = 3;
  if (!fs::exists(options.colin27_path)) GTEST_SKIP() << "mricron-data (Colin27) is not installed";
  auto study = make_phantom(options);
  ASSERT_TRUE(study.ok()) << study.status().to_string();
  ASSERT_TRUE(write_phantom_dicom(*study, dir_.string()).ok());
  auto scan = scan_dicom_folder(dir_.string());
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  EXPECT_GE(scan->files_skipped, 2);  // truth.nii.gz, phantom.json
  auto selection = select_diffusion_series(scan->series);
  ASSERT_TRUE(selection.ok()) << selection.status().to_string();
  auto dwi = assemble_volume(selection->dwi);
  auto adc = assemble_volume(selection->adc);
  ASSERT_TRUE(dwi.ok()) << dwi.status().to_string();
  ASSERT_TRUE(adc.ok()) << adc.status().to_string();
  EXPECT_TRUE(dwi->grid.same_as(study->dwi.grid, 1e-3));
  EXPECT_TRUE(adc->grid.same_as(study->adc.grid, 1e-3));
  float max_dwi = 0, max_adc = 0;
  for (size_t v = 0; v < dwi->data.size(); ++v) {
    max_dwi = std::max(max_dwi, std::abs(dwi->data[v] - study->dwi.data[v]));
    max_adc = std::max(max_adc, std::abs(adc->data[v] - study->adc.data[v]));
  }
  EXPECT_LT(max_dwi, 0.05f);  // uint16 quantization with the phantom's rescale slope
  EXPECT_LE(max_adc, 0.5f);
}

}  // namespace
}  // namespace image
