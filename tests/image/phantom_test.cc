// Tests for image/phantom: determinism, lesion placement and contrast, acquisition grid, and
// the NIfTI and DICOM writers (DICOM read back with DCMTK). Needs the Colin27 template from the
// Debian package mricron-data; skipped when it is absent.
#include "image/phantom.h"

#include <dcmtk/dcmdata/dctk.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "image/nifti_io.h"

namespace image {
namespace {

namespace fs = std::filesystem;

bool have_template() { return fs::exists(PhantomOptions{}.colin27_path); }

// Studies are cached per (seed, lesion count) so that each is simulated once per test run.
const PhantomStudy& study(uint64_t seed, std::optional<int> lesions = std::nullopt) {
  static std::map<std::pair<uint64_t, int>, std::unique_ptr<PhantomStudy>> cache;
  const auto key = std::make_pair(seed, lesions.value_or(-1));
  auto it = cache.find(key);
  if (it == cache.end()) {
    PhantomOptions o;
    o.seed = seed;
    o.lesion_count = lesions;
    auto r = make_phantom(o);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) std::abort();
    it = cache.emplace(key, std::make_unique<PhantomStudy>(std::move(r).value())).first;
  }
  return *it->second;
}

#define REQUIRE_TEMPLATE() \
  if (!have_template()) GTEST_SKIP() << "Colin27 template missing (install mricron-data)"

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("strokebox_phantom_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(Phantom, SameSeedGivesIdenticalStudy) {
  REQUIRE_TEMPLATE();
  PhantomOptions o;
  o.seed = 101;
  auto again = make_phantom(o);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  const PhantomStudy& first = study(101);
  EXPECT_EQ(again->dwi.grid.dims, first.dwi.grid.dims);
  EXPECT_TRUE(again->dwi.grid.same_as(first.dwi.grid, 0.0));
  EXPECT_EQ(again->dwi.data, first.dwi.data);
  EXPECT_EQ(again->adc.data, first.adc.data);
  EXPECT_EQ(again->truth.data, first.truth.data);
  EXPECT_EQ(again->params, first.params);
}

TEST(Phantom, DifferentSeedsGiveDifferentStudies) {
  REQUIRE_TEMPLATE();
  const PhantomStudy& a = study(101);
  const PhantomStudy& b = study(107);
  EXPECT_FALSE(a.dwi.grid.same_as(b.dwi.grid, 1e-6) && a.dwi.data == b.dwi.data);
  EXPECT_NE(a.params["tissue"], b.params["tissue"]);
}

TEST(Phantom, AllVolumesShareTheAcquisitionGrid) {
  REQUIRE_TEMPLATE();
  const PhantomStudy& s = study(101);
  EXPECT_TRUE(s.dwi.grid.same_as(s.adc.grid, 0.0));
  EXPECT_TRUE(s.dwi.grid.same_as(s.truth.grid, 0.0));
  EXPECT_EQ(s.dwi.data.size(), static_cast<size_t>(s.dwi.grid.voxel_count()));
  EXPECT_EQ(s.adc.data.size(), s.dwi.data.size());
  EXPECT_EQ(s.truth.data.size(), s.dwi.data.size());
}

TEST(Phantom, GridIsAxialClinicalWithStatedSpacing) {
  REQUIRE_TEMPLATE();
  for (uint64_t seed : {101, 107, 3}) {
    const Grid& g = study(seed).dwi.grid;
    const auto sp = g.spacing_mm();
    EXPECT_GE(sp[0], 1.2 - 1e-9) << seed;
    EXPECT_LE(sp[0], 2.0 + 1e-9) << seed;
    EXPECT_NEAR(sp[0], sp[1], 1e-9) << seed;
    EXPECT_GE(sp[2], 4.0 - 1e-9) << seed;
    EXPECT_LE(sp[2], 6.0 + 1e-9) << seed;
    // Axial with a slight obliquity: slice normal within 10 degrees of the z axis, rows along x.
    const Eigen::Vector3d normal = g.affine.block<3, 1>(0, 2).normalized();
    const Eigen::Vector3d row = g.affine.block<3, 1>(0, 0).normalized();
    EXPECT_GT(normal.z(), std::cos(10.0 * M_PI / 180.0)) << seed;
    EXPECT_GT(row.x(), std::cos(10.0 * M_PI / 180.0)) << seed;
    // The field of view covers the head: 20 cm or more in-plane, 14 cm or more across slices.
    EXPECT_GE(static_cast<double>(g.dims[0]) * sp[0], 200.0) << seed;
    EXPECT_GE(static_cast<double>(g.dims[1]) * sp[1], 200.0) << seed;
    EXPECT_GE(static_cast<double>(g.dims[2]) * sp[2], 140.0) << seed;
  }
}

TEST(Phantom, ForcedZeroLesionsGivesEmptyTruth) {
  REQUIRE_TEMPLATE();
  const PhantomStudy& s = study(101, 0);
  EXPECT_EQ(std::count(s.truth.data.begin(), s.truth.data.end(), uint8_t{1}), 0);
  EXPECT_TRUE(s.params["lesions"].empty());
  EXPECT_EQ(s.params["lesion_count"], 0);
  EXPECT_EQ(s.params["total_lesion_volume_ml"], 0.0);
}

TEST(Phantom, ForcedLesionCountIsHonoured) {
  REQUIRE_TEMPLATE();
  const PhantomStudy& s = study(7, 3);
  EXPECT_EQ(s.params["lesion_count"], 3);
  EXPECT_EQ(s.params["lesions"].size(), 3u);
}

TEST(Phantom, LesionVolumesInRangeAndMatchTruth) {
  REQUIRE_TEMPLATE();
  for (const PhantomStudy* s : {&study(101), &study(107), &study(7, 3)}) {
    double sum_ml = 0;
    for (const auto& l : s->params["lesions"]) {
      const double target = l["target_volume_ml"], measured = l["volume_ml"];
      EXPECT_GE(target, 0.2);
      EXPECT_LE(target, 100.0);
      // Partial volume on 4-6 mm slices moves small lesions the most.
      if (target >= 2.0) {
        EXPECT_NEAR(measured, target, 0.3 * target) << l.dump();
      }
      const std::string region = l["region"];
      EXPECT_TRUE(region == "supratentorial" || region == "cerebellum" || region == "brainstem") << region;
      sum_ml += measured;
    }
    const auto n = std::count(s->truth.data.begin(), s->truth.data.end(), uint8_t{1});
    EXPECT_GT(n, 0);
    EXPECT_NEAR(static_cast<double>(n) * s->truth.grid.voxel_volume_ml(), sum_ml, 1e-6);
    EXPECT_NEAR(s->params["total_lesion_volume_ml"].get<double>(), sum_ml, 1e-6);
  }
}

TEST(Phantom, LesionsLieInsideParenchyma) {
  REQUIRE_TEMPLATE();
  for (const PhantomStudy* s : {&study(101), &study(107), &study(7, 3)}) {
    // Lesion voxels carry tissue signal: neither background (no b=0 signal, ADC 0) nor CSF
    // (ADC near 3000). Allow a few noisy voxels.
    int64_t lesion = 0, outside = 0;
    for (size_t i = 0; i < s->truth.data.size(); ++i) {
      if (!s->truth.data[i]) continue;
      ++lesion;
      if (s->adc.data[i] <= 0.0f || s->adc.data[i] > 1800.0f) ++outside;
    }
    ASSERT_GT(lesion, 0);
    EXPECT_LT(static_cast<double>(outside), 0.02 * static_cast<double>(lesion));
  }
}

TEST(Phantom, LesionsAreBrightOnDwiAndDarkOnAdc) {
  REQUIRE_TEMPLATE();
  for (const PhantomStudy* s : {&study(101), &study(7, 3)}) {
    const auto& t = s->truth;
    // Surrounding parenchyma: a ring 2-4 voxels around the lesion in-plane, tissue-like ADC.
    double dwi_in = 0, adc_in = 0, dwi_ring = 0, adc_ring = 0;
    int64_t n_in = 0, n_ring = 0;
    for (int64_t k = 0; k < t.nk(); ++k)
      for (int64_t j = 4; j < t.nj() - 4; ++j)
        for (int64_t i = 4; i < t.ni() - 4; ++i) {
          const size_t idx = t.index(i, j, k);
          if (t.data[idx]) {
            dwi_in += s->dwi.data[idx];
            adc_in += s->adc.data[idx];
            ++n_in;
            continue;
          }
          bool near = false;
          for (int64_t dj = -4; dj <= 4 && !near; ++dj)
            for (int64_t di = -4; di <= 4 && !near; ++di)
              if (std::max(std::abs(di), std::abs(dj)) >= 2 && t.at(i + di, j + dj, k)) near = true;
          const float adc = s->adc.data[idx];
          if (near && adc > 500.0f && adc < 1200.0f) {
            dwi_ring += s->dwi.data[idx];
            adc_ring += adc;
            ++n_ring;
          }
        }
    ASSERT_GT(n_in, 0);
    ASSERT_GT(n_ring, 0);
    dwi_in /= static_cast<double>(n_in);
    adc_in /= static_cast<double>(n_in);
    dwi_ring /= static_cast<double>(n_ring);
    adc_ring /= static_cast<double>(n_ring);
    EXPECT_GT(dwi_in, 1.3 * dwi_ring) << "lesion DWI " << dwi_in << " vs surrounding " << dwi_ring;
    EXPECT_LT(adc_in, 0.8 * adc_ring) << "lesion ADC " << adc_in << " vs surrounding " << adc_ring;
    EXPECT_GT(adc_in, 250.0);
    EXPECT_LT(adc_in, 700.0);
  }
}

TEST(Phantom, NoiseReachesTheBackground) {
  REQUIRE_TEMPLATE();
  const PhantomStudy& s = study(101);
  // Corner slab of the field of view is outside the head: Rician noise, never exactly 0.
  int64_t zeros = 0, n = 0;
  for (int64_t j = 0; j < 5; ++j)
    for (int64_t i = 0; i < 5; ++i, ++n)
      if (s.dwi.at(i, j, 0) == 0.0f) ++zeros;
  EXPECT_EQ(zeros, 0);
  EXPECT_EQ(n, 25);
}

TEST(Phantom, BadLesionCountIsInvalidArgument) {
  PhantomOptions o;
  o.lesion_count = kMaxPhantomLesions + 1;
  EXPECT_EQ(make_phantom(o).status().code(), base::Code::kInvalidArgument);
  o.lesion_count = -1;
  EXPECT_EQ(make_phantom(o).status().code(), base::Code::kInvalidArgument);
}

TEST(Phantom, MissingTemplateIsNotFoundAndNamesThePackage) {
  PhantomOptions o;
  o.colin27_path = "/nonexistent/ch2better.nii.gz";
  auto r = make_phantom(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kNotFound);
  EXPECT_NE(r.status().message().find("mricron-data"), std::string::npos) << r.status().message();
}

TEST(Phantom, NiftiOutputHasContractNamesAndMatchingGrids) {
  REQUIRE_TEMPLATE();
  const PhantomStudy& s = study(101);
  TempDir dir;
  const std::string out = (dir.path() / "case").string();
  ASSERT_TRUE(write_phantom_nifti(s, out).ok());
  for (const char* name : {"image_0000.nii.gz", "image_0001.nii.gz", "truth.nii.gz"}) {
    auto v = read_nifti(out + "/" + name);
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    EXPECT_TRUE(v->grid.same_as(s.dwi.grid, 1e-4)) << name;
  }
  auto dwi = read_nifti(out + "/image_0000.nii.gz");
  EXPECT_EQ(dwi->data, s.dwi.data);
  auto truth = read_nifti(out + "/truth.nii.gz");
  for (size_t i = 0; i < s.truth.data.size(); ++i) ASSERT_EQ(truth->data[i], s.truth.data[i]);
  std::ifstream json(out + "/phantom.json");
  const auto params = nlohmann::json::parse(json);
  EXPECT_EQ(params["seed"], 101);
  EXPECT_EQ(params, s.params);
}

// Reads a DS/IS multi-valued string attribute as doubles.
std::vector<double> get_doubles(DcmDataset* d, const DcmTagKey& tag) {
  std::vector<double> out;
  for (unsigned long i = 0;; ++i) {
    Float64 v;
    if (d->findAndGetFloat64(tag, v, i).bad()) break;
    out.push_back(v);
  }
  return out;
}

std::string get_string(DcmDataset* d, const DcmTagKey& tag) {
  OFString s;
  d->findAndGetOFStringArray(tag, s);
  return s.c_str();
}

TEST(Phantom, DicomSeriesCarryRequiredTagsAndReproduceTheGrid) {
  REQUIRE_TEMPLATE();
  const PhantomStudy& s = study(101);
  TempDir dir;
  const std::string out = (dir.path() / "case").string();
  ASSERT_TRUE(write_phantom_dicom(s, out).ok());
  EXPECT_TRUE(fs::exists(out + "/truth.nii.gz"));
  EXPECT_TRUE(fs::exists(out + "/phantom.json"));
  const Grid& g = s.dwi.grid;
  const auto sp = g.spacing_mm();
  std::set<std::string> study_uids, frame_uids, series_uids, sop_uids;
  for (const char* series : {"DWI", "ADC"}) {
    const bool is_dwi = std::string(series) == "DWI";
    const VolumeF& vol = is_dwi ? s.dwi : s.adc;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(out + "/" + series)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    ASSERT_EQ(files.size(), static_cast<size_t>(g.dims[2])) << series;
    for (size_t f = 0; f < files.size(); ++f) {
      DcmFileFormat ff;
      ASSERT_TRUE(ff.loadFile(files[f].c_str()).good()) << files[f];
      EXPECT_EQ(ff.getDataset()->getOriginalXfer(), EXS_LittleEndianExplicit);
      DcmDataset* d = ff.getDataset();
      EXPECT_EQ(get_string(d, DCM_SOPClassUID), UID_MRImageStorage);
      EXPECT_EQ(get_string(d, DCM_Modality), "MR");
      EXPECT_EQ(get_string(d, DCM_PatientName), "PHANTOM^101");
      EXPECT_EQ(get_string(d, DCM_Manufacturer), "strokebox phantom");
      EXPECT_EQ(get_string(d, DCM_ScanningSequence), "EP");
      EXPECT_EQ(get_string(d, DCM_MRAcquisitionType), "2D");
      EXPECT_FALSE(get_string(d, DCM_SequenceVariant).empty());
      EXPECT_FALSE(get_string(d, DCM_EchoTime).empty());
      EXPECT_FALSE(get_string(d, DCM_RepetitionTime).empty());
      EXPECT_FALSE(get_string(d, DCM_MagneticFieldStrength).empty());
      EXPECT_EQ(get_string(d, DCM_ImageType),
                is_dwi ? "ORIGINAL\\PRIMARY\\DIFFUSION\\NONE" : "DERIVED\\PRIMARY\\DIFFUSION\\ADC");
      EXPECT_EQ(get_string(d, DCM_SeriesDescription), is_dwi ? "DWI b1000" : "ADC");
      Float64 bval = -1;
      EXPECT_EQ(d->findAndGetFloat64(DCM_DiffusionBValue, bval).good(), is_dwi);
      if (is_dwi) {
        EXPECT_EQ(bval, 1000.0);
      }
      study_uids.insert(get_string(d, DCM_StudyInstanceUID));
      frame_uids.insert(get_string(d, DCM_FrameOfReferenceUID));
      series_uids.insert(get_string(d, DCM_SeriesInstanceUID));
      const std::string sop = get_string(d, DCM_SOPInstanceUID);
      EXPECT_TRUE(DcmUniqueIdentifier::checkStringValue(sop.c_str(), "1").good()) << sop;
      EXPECT_TRUE(sop_uids.insert(sop).second) << "duplicate SOP Instance UID " << sop;
      EXPECT_EQ(get_string(d, DCM_InstanceNumber), std::to_string(f + 1));

      // Geometry (PS3.3 C.7.6.2) reproduces the volume grid.
      Uint16 rows = 0, cols = 0;
      d->findAndGetUint16(DCM_Rows, rows);
      d->findAndGetUint16(DCM_Columns, cols);
      ASSERT_EQ(rows, g.dims[1]);
      ASSERT_EQ(cols, g.dims[0]);
      const auto ps = get_doubles(d, DCM_PixelSpacing);
      const auto iop = get_doubles(d, DCM_ImageOrientationPatient);
      const auto ipp = get_doubles(d, DCM_ImagePositionPatient);
      ASSERT_EQ(ps.size(), 2u);
      ASSERT_EQ(iop.size(), 6u);
      ASSERT_EQ(ipp.size(), 3u);
      const Eigen::Vector3d row(iop[0], iop[1], iop[2]), col(iop[3], iop[4], iop[5]);
      const Eigen::Vector3d pos(ipp[0], ipp[1], ipp[2]);
      EXPECT_LT((row * ps[1] - g.affine.block<3, 1>(0, 0)).norm(), 1e-5);
      EXPECT_LT((col * ps[0] - g.affine.block<3, 1>(0, 1)).norm(), 1e-5);
      EXPECT_LT((pos - g.to_patient(0, 0, static_cast<double>(f))).norm(), 1e-4);
      const auto thickness = get_doubles(d, DCM_SliceThickness);
      const auto between = get_doubles(d, DCM_SpacingBetweenSlices);
      ASSERT_EQ(between.size(), 1u);
      ASSERT_EQ(thickness.size(), 1u);
      EXPECT_NEAR(between[0], sp[2], 1e-6);
      EXPECT_NEAR(thickness[0], s.params["grid"]["slice_thickness_mm"].get<double>(), 1e-6);

      // Pixels: stored * slope + intercept gives the volume back within half a step.
      const auto slope = get_doubles(d, DCM_RescaleSlope);
      const auto intercept = get_doubles(d, DCM_RescaleIntercept);
      ASSERT_EQ(slope.size(), 1u);
      ASSERT_EQ(intercept.size(), 1u);
      EXPECT_FALSE(get_string(d, DCM_RescaleType).empty());
      const Uint16* px = nullptr;
      unsigned long count = 0;
      ASSERT_TRUE(d->findAndGetUint16Array(DCM_PixelData, px, &count).good());
      ASSERT_EQ(count, static_cast<unsigned long>(g.dims[0] * g.dims[1]));
      for (int64_t j = 0; j < g.dims[1]; j += 7)
        for (int64_t i = 0; i < g.dims[0]; i += 7) {
          const double v = px[i + g.dims[0] * j] * slope[0] + intercept[0];
          ASSERT_NEAR(v, vol.at(i, j, static_cast<int64_t>(f)), 0.5 * slope[0] + 1e-3) << series << " " << i << "," << j;
        }
    }
  }
  EXPECT_EQ(study_uids.size(), 1u);
  EXPECT_EQ(frame_uids.size(), 1u);
  EXPECT_EQ(series_uids.size(), 2u);
  EXPECT_EQ(study_uids.count(*series_uids.begin()), 0u);
}

}  // namespace
}  // namespace image
