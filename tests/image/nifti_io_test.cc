// Tests for image/nifti_io: round trips, the RAS->LPS convention, pixdim as stored, errors.
#include "image/nifti_io.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

namespace image {
namespace {

namespace fs = std::filesystem;

class NiftiIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("strokebox_nifti_io_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// An oblique, anisotropic grid: rotation about two axes, spacing (1.3, 0.9, 4.5) mm.
Grid oblique_grid() {
  Grid g;
  g.dims = {7, 5, 4};
  Eigen::Matrix3d r = (Eigen::AngleAxisd(0.2, Eigen::Vector3d::UnitX()) *
                       Eigen::AngleAxisd(-0.1, Eigen::Vector3d::UnitZ()))
                          .toRotationMatrix();
  g.affine.block<3, 3>(0, 0) = r * Eigen::Vector3d(1.3, 0.9, 4.5).asDiagonal();
  g.affine.block<3, 1>(0, 3) = Eigen::Vector3d(-80.5, 12.25, -33.0);
  return g;
}

TEST_F(NiftiIoTest, Float32RoundTripKeepsValuesAndObliqueAffine) {
  VolumeF v(oblique_grid());
  for (size_t i = 0; i < v.data.size(); ++i) v.data[i] = 0.25f * static_cast<float>(i) - 3.5f;
  ASSERT_TRUE(write_nifti(path("f.nii.gz"), v).ok());
  std::array<double, 3> pixdim{};
  auto r = read_nifti(path("f.nii.gz"), &pixdim);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->grid.dims, v.grid.dims);
  EXPECT_TRUE(r->grid.same_as(v.grid, 1e-4)) << r->grid.affine << "\nvs\n" << v.grid.affine;
  EXPECT_EQ(r->data, v.data);
  EXPECT_NEAR(pixdim[0], 1.3, 1e-6);
  EXPECT_NEAR(pixdim[1], 0.9, 1e-6);
  EXPECT_NEAR(pixdim[2], 4.5, 1e-6);
}

TEST_F(NiftiIoTest, Uint8RoundTripUncompressed) {
  VolumeU8 v(oblique_grid());
  for (size_t i = 0; i < v.data.size(); ++i) v.data[i] = static_cast<uint8_t>(i % 7 == 0 ? 1 : (i % 11 == 0 ? 255 : 0));
  ASSERT_TRUE(write_nifti(path("m.nii"), v).ok());
  auto r = read_nifti(path("m.nii"));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->grid.same_as(v.grid, 1e-4));
  ASSERT_EQ(r->data.size(), v.data.size());
  for (size_t i = 0; i < v.data.size(); ++i) ASSERT_EQ(r->data[i], static_cast<float>(v.data[i])) << i;
}

TEST_F(NiftiIoTest, WrittenHeaderIsRasWithQformAndSform) {
  // Identity LPS affine: in RAS the first two axes are flipped.
  Grid g;
  g.dims = {2, 2, 2};
  VolumeF v(g, 1.0f);
  ASSERT_TRUE(write_nifti(path("h.nii"), v).ok());
  // Read the NIfTI-1 header fields directly (sizeof_hdr 348, qform_code at 252, sform_code at
  // 254, srow_x at 280): independent of our reader.
  std::ifstream in(path("h.nii"), std::ios::binary);
  char hdr[348];
  ASSERT_TRUE(in.read(hdr, sizeof hdr));
  int16_t qform_code, sform_code;
  float srow_x[4], srow_y[4];
  std::memcpy(&qform_code, hdr + 252, 2);
  std::memcpy(&sform_code, hdr + 254, 2);
  std::memcpy(srow_x, hdr + 280, 16);
  std::memcpy(srow_y, hdr + 296, 16);
  EXPECT_EQ(qform_code, 1);
  EXPECT_EQ(sform_code, 1);
  EXPECT_FLOAT_EQ(srow_x[0], -1.0f);
  EXPECT_FLOAT_EQ(srow_y[1], -1.0f);
}

TEST_F(NiftiIoTest, ReadsGoldenCaseWithStoredPixdimAndLpsAffine) {
  const std::string file = std::string(STROKEBOX_SHARED_DIR) + "/golden/inputs/case02/case02_0000.nii.gz";
  if (!fs::exists(file)) GTEST_SKIP() << "golden input missing: " << file;
  std::array<double, 3> pixdim{};
  auto r = read_nifti(file, &pixdim);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->grid.dims, (std::array<int64_t, 3>{67, 80, 20}));
  EXPECT_EQ(pixdim[0], static_cast<double>(1.2f));
  EXPECT_EQ(pixdim[1], static_cast<double>(1.2f));
  EXPECT_EQ(pixdim[2], static_cast<double>(4.0f));
  // The file's sform (RAS, from nibabel), rows 0 and 1 negated for LPS.
  const double ras[3][4] = {{1.19105542e+00, 1.46243215e-01, 0.0, -4.50814362e+01},
                            {-1.43047452e-01, 1.16502798e+00, -8.31646740e-01, -4.93973961e+01},
                            {-3.04056741e-02, 2.47634336e-01, 3.91259050e+00, -3.59477768e+01}};
  for (int row = 0; row < 3; ++row) {
    const double sign = row < 2 ? -1.0 : 1.0;
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(r->grid.affine(row, c), sign * ras[row][c], 1e-5) << row << "," << c;
  }
  EXPECT_EQ(r->at(33, 40, 10), 160.0f);
  double sum = 0;
  for (float v : r->data) sum += v;
  EXPECT_EQ(sum, 11545260.0);
}

TEST_F(NiftiIoTest, MissingFileIsNotFoundAndNamesThePath) {
  auto r = read_nifti(path("nope.nii.gz"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kNotFound);
  EXPECT_NE(r.status().message().find("nope.nii.gz"), std::string::npos);
}

TEST_F(NiftiIoTest, GarbageFileIsDataLoss) {
  {
    std::ofstream out(path("garbage.nii"), std::ios::binary);
    for (int i = 0; i < 1000; ++i) out << "not a nifti file ";
  }
  auto r = read_nifti(path("garbage.nii"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kDataLoss);
  EXPECT_NE(r.status().message().find("garbage.nii"), std::string::npos);
}

TEST_F(NiftiIoTest, TruncatedFileIsDataLoss) {
  VolumeF v(oblique_grid(), 2.0f);
  ASSERT_TRUE(write_nifti(path("t.nii"), v).ok());
  fs::resize_file(path("t.nii"), 352 + 40);  // header + extension flag + a few voxels
  auto r = read_nifti(path("t.nii"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kDataLoss);
}

TEST_F(NiftiIoTest, WriteIntoMissingFolderIsNotFound) {
  VolumeF v(oblique_grid());
  auto s = write_nifti(path("no/such/folder/x.nii.gz"), v);
  EXPECT_EQ(s.code(), base::Code::kNotFound);
  EXPECT_NE(s.message().find("x.nii.gz"), std::string::npos);
}

TEST_F(NiftiIoTest, WriteRejectsWrongExtensionAndSizeMismatch) {
  VolumeF v(oblique_grid());
  EXPECT_EQ(write_nifti(path("x.img"), v).code(), base::Code::kInvalidArgument);
  v.data.pop_back();
  EXPECT_EQ(write_nifti(path("x.nii"), v).code(), base::Code::kInvalidArgument);
}

}  // namespace
}  // namespace image
