// Test helpers shared by the tests/image DICOM tests: a synthetic MR slice written with DCMTK in
// any transfer syntax DCMTK can encode. Header-only; everything lives in image::testutil.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpls/djencode.h>

namespace image::testutil {

inline std::string new_uid() {
  char buf[100];
  return dcmGenerateUniqueIdentifier(buf, SITE_INSTANCE_UID_ROOT);
}

inline std::string ds_list(const std::vector<double>& v) {
  std::string out;
  char buf[32];
  for (size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%.8g", v[i]);
    out += (i ? "\\" : "") + std::string(buf);
  }
  return out;
}

/// One synthetic MR slice.
struct SliceSpec {
  std::string series_uid;
  std::string study_uid = "1.2.3.4";
  int series_number = 1;
  std::string description = "test";
  int instance_number = 1;
  std::array<double, 3> ipp{0, 0, 0};
  std::array<double, 6> iop{1, 0, 0, 0, 1, 0};
  std::array<double, 2> spacing{1.0, 1.0};  // row spacing, column spacing
  int rows = 3, cols = 4;
  double slope = 1.0, intercept = 0.0;
  std::vector<Uint16> pixels;  // rows*cols, row-major; zero-filled if empty
  std::string image_type = "ORIGINAL\\PRIMARY\\M\\ND";
  int number_of_frames = 0;    // 0: attribute absent
  int bits_stored = 16;
  int pixel_representation = 0;
  bool rle = false;
  /// Transfer syntax to save with; encapsulated ones use DCMTK's encoders (RLE, JPEG lossless
  /// SV1, JPEG-LS lossless), registered by write_slice. EXS_Unknown: explicit VR little endian.
  E_TransferSyntax xfer = EXS_Unknown;
  bool implicit_vr = false;  // private tags then read back without a VR (as in real files)
  std::function<void(DcmDataset&)> extra;
};

inline void write_slice(const std::string& path, const SliceSpec& s) {
  DcmFileFormat ff;
  DcmDataset& ds = *ff.getDataset();
  ds.putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage);
  ds.putAndInsertString(DCM_SOPInstanceUID, new_uid().c_str());
  ds.putAndInsertString(DCM_StudyInstanceUID, s.study_uid.c_str());
  ds.putAndInsertString(DCM_SeriesInstanceUID, s.series_uid.c_str());
  ds.putAndInsertString(DCM_FrameOfReferenceUID, "1.2.3.4.5");
  ds.putAndInsertString(DCM_Modality, "MR");
  ds.putAndInsertString(DCM_PatientName, "Test^Patient");
  ds.putAndInsertString(DCM_PatientID, "P1");
  ds.putAndInsertString(DCM_SeriesDescription, s.description.c_str());
  ds.putAndInsertString(DCM_SeriesNumber, std::to_string(s.series_number).c_str());
  ds.putAndInsertString(DCM_InstanceNumber, std::to_string(s.instance_number).c_str());
  ds.putAndInsertString(DCM_ImageType, s.image_type.c_str());
  ds.putAndInsertString(DCM_ImagePositionPatient, ds_list({s.ipp[0], s.ipp[1], s.ipp[2]}).c_str());
  ds.putAndInsertString(DCM_ImageOrientationPatient,
                        ds_list({s.iop[0], s.iop[1], s.iop[2], s.iop[3], s.iop[4], s.iop[5]}).c_str());
  ds.putAndInsertString(DCM_PixelSpacing, ds_list({s.spacing[0], s.spacing[1]}).c_str());
  ds.putAndInsertString(DCM_RescaleSlope, ds_list({s.slope}).c_str());
  ds.putAndInsertString(DCM_RescaleIntercept, ds_list({s.intercept}).c_str());
  ds.putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds.putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(s.rows));
  ds.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(s.cols));
  ds.putAndInsertUint16(DCM_BitsAllocated, 16);
  ds.putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(s.bits_stored));
  ds.putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(s.bits_stored - 1));
  ds.putAndInsertUint16(DCM_PixelRepresentation, static_cast<Uint16>(s.pixel_representation));
  if (s.number_of_frames > 0) ds.putAndInsertString(DCM_NumberOfFrames, std::to_string(s.number_of_frames).c_str());
  std::vector<Uint16> pixels = s.pixels;
  pixels.resize(static_cast<size_t>(s.rows) * s.cols, 0);
  ds.putAndInsertUint16Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size()));
  if (s.extra) s.extra(ds);
  E_TransferSyntax xfer = s.implicit_vr ? EXS_LittleEndianImplicit : EXS_LittleEndianExplicit;
  if (s.rle) {
    DcmRLEEncoderRegistration::registerCodecs();
    ASSERT_TRUE(ds.chooseRepresentation(EXS_RLELossless, nullptr).good());
    xfer = EXS_RLELossless;
  }
  if (s.xfer != EXS_Unknown) {
    static const bool registered = [] {
      DcmRLEEncoderRegistration::registerCodecs();
      DJEncoderRegistration::registerCodecs();
      DJLSEncoderRegistration::registerCodecs();
      return true;
    }();
    (void)registered;
    xfer = s.xfer;
    if (DcmXfer(xfer).isEncapsulated()) {
      ASSERT_TRUE(ds.chooseRepresentation(xfer, nullptr).good()) << DcmXfer(xfer).getXferName();
      ASSERT_TRUE(ds.canWriteXfer(xfer)) << DcmXfer(xfer).getXferName();
    }
  }
  ASSERT_TRUE(ff.saveFile(path.c_str(), xfer).good()) << path;
}

}  // namespace image::testutil
