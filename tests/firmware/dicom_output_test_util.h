// Test helpers shared by the overlay, SR and outbox tests: a small synthetic MR series on
// disk, and running dciodvfy (dicom3tools) to collect its "Error" lines.
#pragma once

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

namespace firmware::testing {

inline std::string new_test_uid() {
  char buf[100];
  return dcmGenerateUniqueIdentifier(buf, SITE_INSTANCE_UID_ROOT);
}

/// Writes an oblique single-frame MR series (cols x rows x slices, pixel value 100 + 10 k + i)
/// into `dir`, files in reverse order. Returns false when a file cannot be written.
inline bool write_test_mr_series(const std::filesystem::path& dir, int cols, int rows, int slices) {
  std::filesystem::create_directories(dir);
  const double a = 20 * M_PI / 180;
  const std::array<double, 6> iop = {std::cos(a), std::sin(a), 0, -std::sin(a), std::cos(a), 0};  // axial, rotated
  const Eigen::Vector3d normal = Eigen::Vector3d(iop[0], iop[1], iop[2]).cross(Eigen::Vector3d(iop[3], iop[4], iop[5]));
  const std::string series_uid = new_test_uid();
  auto list = [](const std::vector<double>& v) {
    std::string out;
    char buf[32];
    for (size_t i = 0; i < v.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%.8g", v[i]);
      out += (i ? "\\" : "") + std::string(buf);
    }
    return out;
  };
  for (int k = 0; k < slices; ++k) {
    DcmFileFormat ff;
    DcmDataset& d = *ff.getDataset();
    d.putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 100");
    d.putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage);
    d.putAndInsertString(DCM_SOPInstanceUID, new_test_uid().c_str());
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
    d.putAndInsertString(DCM_ImagePositionPatient, list({p.x(), p.y(), p.z()}).c_str());
    d.putAndInsertString(DCM_ImageOrientationPatient, list({iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]}).c_str());
    d.putAndInsertString(DCM_PixelSpacing, "2\\2");
    d.putAndInsertString(DCM_SliceThickness, "4");
    d.putAndInsertUint16(DCM_SamplesPerPixel, 1);
    d.putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
    d.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(rows));
    d.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(cols));
    d.putAndInsertUint16(DCM_BitsAllocated, 16);
    d.putAndInsertUint16(DCM_BitsStored, 16);
    d.putAndInsertUint16(DCM_HighBit, 15);
    d.putAndInsertUint16(DCM_PixelRepresentation, 0);
    std::vector<Uint16> pixels(static_cast<size_t>(rows) * cols);
    for (int j = 0; j < rows; ++j) {
      for (int i = 0; i < cols; ++i) pixels[j * cols + i] = static_cast<Uint16>(100 + 10 * k + i);
    }
    d.putAndInsertUint16Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size()));
    const std::string path = (dir / ("img" + std::to_string(slices - k) + ".dcm")).string();
    if (ff.saveFile(path.c_str(), EXS_LittleEndianExplicit).bad()) return false;
  }
  return true;
}

inline bool have_dciodvfy() { return std::filesystem::exists("/usr/bin/dciodvfy"); }

/// Runs dciodvfy on `path`; returns its full output and puts the lines starting with "Error"
/// into `errors`.
inline std::string run_dciodvfy(const std::string& path, std::string& errors) {
  const std::string cmd = "/usr/bin/dciodvfy '" + path + "' 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::string output;
  if (pipe == nullptr) {
    errors = "cannot run dciodvfy";
    return output;
  }
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) output.append(buf, n);
  ::pclose(pipe);
  // STROKEBOX_PRINT_DCIODVFY=1 prints the report (for the summary in docs/dicom_outputs.md).
  if (std::getenv("STROKEBOX_PRINT_DCIODVFY") != nullptr) std::printf("dciodvfy %s:\n%s\n", path.c_str(), output.c_str());
  errors.clear();
  size_t start = 0;
  while (start < output.size()) {
    size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(start, end - start);
    if (line.rfind("Error", 0) == 0) errors += line + "\n";
    start = end + 1;
  }
  return output;
}

}  // namespace firmware::testing
