// DICOM writer for phantom studies (see phantom.h): two MR Image Storage series (DWI b=1000 and
// ADC), one slice per file, explicit VR little endian, written with DCMTK dcmdata.
// Attributes follow PS3.3 A.4 (MR Image IOD): Patient, General Study, General Series, Frame of
// Reference, General Equipment, General Image, Image Plane (C.7.6.2), Image Pixel, MR Image
// (C.8.3.1), SOP Common. UIDs use the UUID-derived root 2.25 (PS3.5 B.2), the UUID computed
// from the seed so that a seed always gives the same UIDs.
#include <dcmtk/dcmdata/dctk.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "image/nifti_io.h"
#include "image/phantom.h"

namespace image {
namespace {

namespace fs = std::filesystem;

uint64_t mix64(uint64_t h) {
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

// "2.25.<decimal of a 128-bit UUID>" (PS3.5 B.2), the UUID hashed from (seed, role, index) and
// marked as RFC 9562 version 8 (custom), variant 10.
std::string seeded_uid(uint64_t seed, uint64_t role, uint64_t index) {
  const uint64_t k = mix64(seed ^ 0x73747270686E746Dull) ^ mix64(role * 0x9E3779B97F4A7C15ull + 1) ^
                     mix64(index * 0xC2B2AE3D27D4EB4Full + 2);
  uint64_t hi = mix64(k ^ 0x1234567890ABCDEFull);
  uint64_t lo = mix64(k + 0x0F1E2D3C4B5A6978ull);
  hi = (hi & ~0xF000ull) | 0x8000ull;                       // version 8
  lo = (lo & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;  // variant 10
  // 128-bit unsigned to decimal.
  unsigned __int128 v = (static_cast<unsigned __int128>(hi) << 64) | lo;
  std::string digits;
  do {
    digits.push_back(static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  } while (v != 0);
  std::reverse(digits.begin(), digits.end());
  return "2.25." + digits;
}

// Decimal String (VR DS): at most 16 characters.
std::string ds(double v) {
  if (std::abs(v) < 1e-9) v = 0.0;
  char buf[32];
  for (int precision = 10; precision >= 4; --precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strlen(buf) <= 16) break;
  }
  return buf;
}

std::string ds_list(std::initializer_list<double> values) {
  std::string out;
  for (double v : values) {
    if (!out.empty()) out += '\\';
    out += ds(v);
  }
  return out;
}

struct SeriesSpec {
  const VolumeF* volume;
  const char* folder;
  const char* description;
  const char* image_type;
  int series_number;
  bool is_dwi;
};

#define SB_PUT(expr)                                                                   \
  do {                                                                                 \
    OFCondition sb_cond_ = (expr);                                                     \
    if (sb_cond_.bad()) return base::internal_error(std::string("DCMTK: ") + sb_cond_.text()); \
  } while (0)

base::Status write_series(const PhantomStudy& study, const SeriesSpec& spec, const std::string& dir) {
  const VolumeF& vol = *spec.volume;
  const Grid& g = vol.grid;
  const uint64_t seed = study.params.value("seed", uint64_t{0});
  const std::string study_uid = seeded_uid(seed, 1, 0);
  const std::string frame_uid = seeded_uid(seed, 2, 0);
  const std::string series_uid = seeded_uid(seed, 10 + static_cast<uint64_t>(spec.series_number), 0);
  const std::string seed_text = std::to_string(seed);
  // A fixed date and a time derived from the seed keep the files deterministic.
  char time_buf[16];
  std::snprintf(time_buf, sizeof time_buf, "%02d%02d%02d", static_cast<int>(8 + seed % 10),
                static_cast<int>((seed / 10) % 60), static_cast<int>((seed / 600) % 60));
  const std::string study_date = "20250101", study_time = time_buf;

  const auto spacing = g.spacing_mm();
  const Eigen::Vector3d row_dir = g.affine.block<3, 1>(0, 0) / spacing[0];
  const Eigen::Vector3d col_dir = g.affine.block<3, 1>(0, 1) / spacing[1];
  const Eigen::Vector3d normal = row_dir.cross(col_dir);
  const double thickness = study.params["grid"].value("slice_thickness_mm", spacing[2]);

  // Rescale: stored uint16 = round((value - intercept) / slope). ADC keeps its integer unit
  // (slope 1); DWI uses the full 16-bit range.
  float max_value = 0.0f;
  for (float v : vol.data) max_value = std::max(max_value, v);
  double slope = 1.0;
  if (spec.is_dwi) {
    slope = std::max(1e-6, static_cast<double>(max_value) / 60000.0);
    slope = std::stod(ds(slope));  // quantise with exactly the slope written to the file
  }
  const int64_t ni = vol.ni(), nj = vol.nj(), nk = vol.nk();
  if (ni > 65535 || nj > 65535) return base::invalid_argument("phantom slice too large for DICOM Rows/Columns");
  std::vector<Uint16> pixels(static_cast<size_t>(ni * nj));
  const double window_width = spec.is_dwi ? static_cast<double>(max_value) * 0.8 : 3000.0;
  const double window_centre = spec.is_dwi ? window_width * 0.5 : 1500.0;

  const fs::path folder = fs::path(dir) / spec.folder;
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) return base::internal_error("cannot create folder '" + folder.string() + "': " + ec.message());
  // Remove slices of an earlier run so that the folder holds exactly one series.
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".dcm") fs::remove(entry.path(), ec);
  }

  for (int64_t k = 0; k < nk; ++k) {
    for (int64_t j = 0; j < nj; ++j)
      for (int64_t i = 0; i < ni; ++i) {
        const double stored = std::round(static_cast<double>(vol.at(i, j, k)) / slope);
        pixels[static_cast<size_t>(i + ni * j)] = static_cast<Uint16>(std::clamp(stored, 0.0, 65535.0));
      }
    const Eigen::Vector3d pos = g.to_patient(0.0, 0.0, static_cast<double>(k));
    const std::string sop_uid = seeded_uid(seed, 100 + static_cast<uint64_t>(spec.series_number), static_cast<uint64_t>(k));
    char instance[32];
    std::snprintf(instance, sizeof instance, "%04lld", static_cast<long long>(k + 1));
    const std::string path = (folder / (std::string(instance) + ".dcm")).string();

    DcmFileFormat file;
    DcmDataset* d = file.getDataset();
    // SOP Common
    SB_PUT(d->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 100"));
    SB_PUT(d->putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage));
    SB_PUT(d->putAndInsertString(DCM_SOPInstanceUID, sop_uid.c_str()));
    SB_PUT(d->putAndInsertString(DCM_InstanceCreationDate, study_date.c_str()));
    SB_PUT(d->putAndInsertString(DCM_InstanceCreationTime, study_time.c_str()));
    // Patient
    SB_PUT(d->putAndInsertString(DCM_PatientName, ("PHANTOM^" + seed_text).c_str()));
    SB_PUT(d->putAndInsertString(DCM_PatientID, ("PHANTOM-" + seed_text).c_str()));
    SB_PUT(d->putAndInsertString(DCM_PatientBirthDate, ""));
    SB_PUT(d->putAndInsertString(DCM_PatientSex, "O"));
    // General Study
    SB_PUT(d->putAndInsertString(DCM_StudyInstanceUID, study_uid.c_str()));
    SB_PUT(d->putAndInsertString(DCM_StudyDate, study_date.c_str()));
    SB_PUT(d->putAndInsertString(DCM_StudyTime, study_time.c_str()));
    SB_PUT(d->putAndInsertString(DCM_ReferringPhysicianName, ""));
    SB_PUT(d->putAndInsertString(DCM_StudyID, "1"));
    SB_PUT(d->putAndInsertString(DCM_AccessionNumber, ""));
    SB_PUT(d->putAndInsertString(DCM_StudyDescription, "strokebox phantom MR brain diffusion"));
    // General Series
    SB_PUT(d->putAndInsertString(DCM_Modality, "MR"));
    SB_PUT(d->putAndInsertString(DCM_SeriesInstanceUID, series_uid.c_str()));
    SB_PUT(d->putAndInsertString(DCM_SeriesNumber, std::to_string(spec.series_number).c_str()));
    SB_PUT(d->putAndInsertString(DCM_SeriesDescription, spec.description));
    SB_PUT(d->putAndInsertString(DCM_ProtocolName, "ep2d_diff_trace phantom"));
    SB_PUT(d->putAndInsertString(DCM_SeriesDate, study_date.c_str()));
    SB_PUT(d->putAndInsertString(DCM_SeriesTime, study_time.c_str()));
    SB_PUT(d->putAndInsertString(DCM_BodyPartExamined, "HEAD"));
    SB_PUT(d->putAndInsertString(DCM_PatientPosition, "HFS"));
    // Frame of Reference
    SB_PUT(d->putAndInsertString(DCM_FrameOfReferenceUID, frame_uid.c_str()));
    SB_PUT(d->putAndInsertString(DCM_PositionReferenceIndicator, ""));
    // General Equipment
    SB_PUT(d->putAndInsertString(DCM_Manufacturer, "strokebox phantom"));
    SB_PUT(d->putAndInsertString(DCM_ManufacturerModelName, "strokebox phantom"));
    SB_PUT(d->putAndInsertString(DCM_SoftwareVersions, "1"));
    // General Image
    SB_PUT(d->putAndInsertString(DCM_InstanceNumber, std::to_string(k + 1).c_str()));
    SB_PUT(d->putAndInsertString(DCM_AcquisitionNumber, "1"));
    SB_PUT(d->putAndInsertString(DCM_ContentDate, study_date.c_str()));
    SB_PUT(d->putAndInsertString(DCM_ContentTime, study_time.c_str()));
    SB_PUT(d->putAndInsertString(DCM_ImageType, spec.image_type));
    SB_PUT(d->putAndInsertString(DCM_BurnedInAnnotation, "NO"));
    // Image Plane (PS3.3 C.7.6.2): PixelSpacing = [row spacing (between rows, along j),
    // column spacing (between columns, along i)].
    SB_PUT(d->putAndInsertString(DCM_PixelSpacing, ds_list({spacing[1], spacing[0]}).c_str()));
    SB_PUT(d->putAndInsertString(DCM_ImageOrientationPatient,
                                 ds_list({row_dir.x(), row_dir.y(), row_dir.z(), col_dir.x(), col_dir.y(), col_dir.z()})
                                     .c_str()));
    SB_PUT(d->putAndInsertString(DCM_ImagePositionPatient, ds_list({pos.x(), pos.y(), pos.z()}).c_str()));
    SB_PUT(d->putAndInsertString(DCM_SliceThickness, ds(thickness).c_str()));
    SB_PUT(d->putAndInsertString(DCM_SpacingBetweenSlices, ds(spacing[2]).c_str()));
    SB_PUT(d->putAndInsertString(DCM_SliceLocation, ds(normal.dot(pos)).c_str()));
    // Image Pixel
    SB_PUT(d->putAndInsertUint16(DCM_SamplesPerPixel, 1));
    SB_PUT(d->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2"));
    SB_PUT(d->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(nj)));
    SB_PUT(d->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(ni)));
    SB_PUT(d->putAndInsertUint16(DCM_BitsAllocated, 16));
    SB_PUT(d->putAndInsertUint16(DCM_BitsStored, 16));
    SB_PUT(d->putAndInsertUint16(DCM_HighBit, 15));
    SB_PUT(d->putAndInsertUint16(DCM_PixelRepresentation, 0));
    SB_PUT(d->putAndInsertString(DCM_RescaleIntercept, "0"));
    SB_PUT(d->putAndInsertString(DCM_RescaleSlope, ds(slope).c_str()));
    SB_PUT(d->putAndInsertString(DCM_RescaleType, spec.is_dwi ? "US" : "10-6 mm2/s"));
    SB_PUT(d->putAndInsertString(DCM_WindowCenter, ds(window_centre).c_str()));
    SB_PUT(d->putAndInsertString(DCM_WindowWidth, ds(window_width).c_str()));
    SB_PUT(d->putAndInsertUint16Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size())));
    // MR Image (PS3.3 C.8.3.1)
    SB_PUT(d->putAndInsertString(DCM_ScanningSequence, "EP"));
    SB_PUT(d->putAndInsertString(DCM_SequenceVariant, "SK\\SP"));
    SB_PUT(d->putAndInsertString(DCM_ScanOptions, "PFP\\FS"));
    SB_PUT(d->putAndInsertString(DCM_MRAcquisitionType, "2D"));
    SB_PUT(d->putAndInsertString(DCM_SequenceName, spec.is_dwi ? "*ep_b1000t" : "*ep_b0_1000"));
    SB_PUT(d->putAndInsertString(DCM_RepetitionTime, "5000"));
    SB_PUT(d->putAndInsertString(DCM_EchoTime, "80"));
    SB_PUT(d->putAndInsertString(DCM_EchoTrainLength, "1"));
    SB_PUT(d->putAndInsertString(DCM_NumberOfAverages, "1"));
    SB_PUT(d->putAndInsertString(DCM_ImagingFrequency, "63.87"));
    SB_PUT(d->putAndInsertString(DCM_ImagedNucleus, "1H"));
    SB_PUT(d->putAndInsertString(DCM_EchoNumbers, "1"));
    SB_PUT(d->putAndInsertString(DCM_MagneticFieldStrength, "1.5"));
    SB_PUT(d->putAndInsertString(DCM_InPlanePhaseEncodingDirection, "COL"));
    if (spec.is_dwi) {
      SB_PUT(d->putAndInsertString(DCM_DiffusionDirectionality, "ISOTROPIC"));
      SB_PUT(d->putAndInsertFloat64(DCM_DiffusionBValue, kPhantomBValue));
    }

    const OFCondition saved = file.saveFile(path.c_str(), EXS_LittleEndianExplicit);
    if (saved.bad()) return base::internal_error("cannot write DICOM file '" + path + "': " + saved.text());
  }
  return base::ok_status();
}

#undef SB_PUT

}  // namespace

base::Status write_phantom_dicom(const PhantomStudy& study, const std::string& dir) {
  if (!study.dwi.grid.same_as(study.adc.grid, 1e-9) || !study.dwi.grid.same_as(study.truth.grid, 1e-9) ||
      study.dwi.data.size() != study.adc.data.size()) {
    return base::invalid_argument("phantom study volumes do not share one grid");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return base::internal_error("cannot create folder '" + dir + "': " + ec.message());
  SB_RETURN_IF_ERROR(write_series(study, {&study.dwi, "DWI", "DWI b1000", "ORIGINAL\\PRIMARY\\DIFFUSION\\NONE", 1, true}, dir));
  SB_RETURN_IF_ERROR(write_series(study, {&study.adc, "ADC", "ADC", "DERIVED\\PRIMARY\\DIFFUSION\\ADC", 2, false}, dir));
  SB_RETURN_IF_ERROR(write_nifti((fs::path(dir) / "truth.nii.gz").string(), study.truth));
  const std::string json_path = (fs::path(dir) / "phantom.json").string();
  std::FILE* f = std::fopen(json_path.c_str(), "w");
  if (f == nullptr) return base::internal_error("cannot write '" + json_path + "'");
  const std::string text = study.params.dump(2) + "\n";
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) return base::internal_error("cannot write '" + json_path + "'");
  return base::ok_status();
}

}  // namespace image
