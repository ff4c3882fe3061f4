#include "firmware/overlay_writer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <system_error>
#include <utility>

#include <dcmtk/config/osconfig.h>  // must precede the other DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "firmware/dicom_write_util.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

// ---- 5x7 bitmap font: 7 rows per glyph, bit 4 = leftmost column. Drawn for this project. ----
struct Glyph {
  char c;
  std::array<uint8_t, 7> rows;
};
constexpr Glyph kFont[] = {
    {' ', {0, 0, 0, 0, 0, 0, 0}},
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0, 0, 0, 0, 0, 0x0C, 0x0C}},
    {':', {0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0}},
    {'-', {0, 0, 0, 0x1F, 0, 0, 0}},
    {'/', {0, 0x01, 0x02, 0x04, 0x08, 0x10, 0}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'=', {0, 0, 0x1F, 0, 0x1F, 0, 0}},
    {',', {0, 0, 0, 0, 0x0C, 0x04, 0x08}},
    {'+', {0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0}},
    {'_', {0, 0, 0, 0, 0, 0, 0x1F}},
    {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
    {'\'', {0x04, 0x04, 0x08, 0, 0, 0, 0}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'^', {0x04, 0x0A, 0x11, 0, 0, 0, 0}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04}},
};
constexpr int kGlyphW = 5, kGlyphH = 7, kCellW = 6, kCellH = 9;

const Glyph& glyph_for(char c) {
  const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const Glyph& g : kFont) {
    if (g.c == u) return g;
  }
  return kFont[std::size(kFont) - 1];  // '?'
}

/// Draws `text` with its top-left corner at (x, y), each font pixel a scale x scale block;
/// clipped to the image.
void draw_text(RgbImage& img, int x, int y, int scale, const std::string& text, std::array<uint8_t, 3> colour) {
  for (size_t n = 0; n < text.size(); ++n) {
    const Glyph& g = glyph_for(text[n]);
    const int gx = x + static_cast<int>(n) * kCellW * scale;
    for (int r = 0; r < kGlyphH; ++r) {
      for (int c = 0; c < kGlyphW; ++c) {
        if (((g.rows[r] >> (kGlyphW - 1 - c)) & 1) == 0) continue;
        for (int dy = 0; dy < scale; ++dy) {
          for (int dx = 0; dx < scale; ++dx) {
            const int px = gx + c * scale + dx, py = y + r * scale + dy;
            if (px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
            std::memcpy(&img.rgb[(static_cast<size_t>(py) * img.width + px) * 3], colour.data(), 3);
          }
        }
      }
    }
  }
}

std::string format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

/// Upper bound of the display window: twice the median of the foreground (voxels above 10 % of
/// the 99.5th percentile of the positive voxels), so normal brain shows mid-grey and
/// diffusion-restricted tissue (about twice as bright on b=1000 DWI) near white; capped at four
/// times the 99.5th percentile, and the 99.5th percentile alone when there is no foreground.
float window_top(const image::VolumeF& v) {
  std::vector<float> positive;
  positive.reserve(v.data.size());
  for (float x : v.data) {
    if (x > 0 && std::isfinite(x)) positive.push_back(x);
  }
  if (positive.empty()) return 1.0f;
  const size_t at = std::min(positive.size() - 1, static_cast<size_t>(0.995 * static_cast<double>(positive.size())));
  std::nth_element(positive.begin(), positive.begin() + static_cast<std::ptrdiff_t>(at), positive.end());
  const float p995 = positive[at];
  std::vector<float> foreground;
  for (float x : positive) {
    if (x > 0.1f * p995) foreground.push_back(x);
  }
  float top = p995;
  if (!foreground.empty()) {
    std::nth_element(foreground.begin(), foreground.begin() + static_cast<std::ptrdiff_t>(foreground.size() / 2),
                     foreground.end());
    top = std::min(p995 * 4.0f, 2.0f * foreground[foreground.size() / 2]);
  }
  return top > 0 ? top : 1.0f;
}

int zoom_for(int columns, int min_width) {
  if (columns <= 0) return 1;
  return std::clamp((min_width + columns - 1) / columns, 1, kMaxOverlayZoom);
}

base::Status check_grids(const image::VolumeF& dwi, const image::VolumeU8& mask) {
  if (dwi.grid.dims != mask.grid.dims || dwi.data.size() != static_cast<size_t>(dwi.grid.voxel_count()) ||
      mask.data.size() != dwi.data.size()) {
    return base::invalid_argument("overlay: the mask (" + std::to_string(mask.grid.dims[0]) + " x " +
                                  std::to_string(mask.grid.dims[1]) + " x " + std::to_string(mask.grid.dims[2]) +
                                  ") does not match the DWI volume (" + std::to_string(dwi.grid.dims[0]) + " x " +
                                  std::to_string(dwi.grid.dims[1]) + " x " + std::to_string(dwi.grid.dims[2]) + ")");
  }
  if (!dwi.grid.same_as(mask.grid, 1e-3)) {
    return base::invalid_argument("overlay: the mask's affine differs from the DWI volume's");
  }
  return base::ok_status();
}

RgbImage render(const image::VolumeF& dwi, const image::VolumeU8& mask, int k, float top, const OverlayText& text,
                const OverlayOptions& options) {
  const int cols = static_cast<int>(dwi.ni()), rows = static_cast<int>(dwi.nj());
  const int zoom = zoom_for(cols, options.min_width);
  const int w = cols * zoom, h_image = rows * zoom;

  int64_t slice_voxels = 0;
  for (int j = 0; j < rows; ++j) {
    for (int i = 0; i < cols; ++i) {
      const uint8_t m = mask.at(i, j, k);
      slice_voxels += m != 0 && m != kOverlayExcludedLesion;
    }
  }
  const double slice_ml = static_cast<double>(slice_voxels) * dwi.grid.voxel_volume_ml();
  std::vector<std::string> lines = {
      text.disclaimer,
      "LESION VOLUME " + format("%.1f", text.lesion_volume_ml) + " ML, " + std::to_string(text.lesion_count) +
          (text.lesion_count == 1 ? " LESION" : " LESIONS"),
      "THIS SLICE " + format("%.2f", slice_ml) + " ML  SLICE " + std::to_string(k + 1) + "/" +
          std::to_string(dwi.nk()),
      "MODEL " + (text.model_id.empty() ? std::string("UNKNOWN") : text.model_id) + "  STROKEBOX " +
          (text.software_version.empty() ? std::string("?") : text.software_version),
  };
  const bool has_warning = !text.warning.empty();
  if (has_warning) lines.push_back(text.warning);
  size_t longest = 0;
  for (const auto& l : lines) longest = std::max(longest, l.size());
  int scale = 3;
  while (scale > 1 && static_cast<int>(longest) * kCellW * scale + 2 * kCellW > w) --scale;
  const int margin = kCellW * scale / 2;
  const int band = static_cast<int>(lines.size()) * kCellH * scale + 2 * margin;

  RgbImage img;
  img.width = w;
  img.height = h_image + band;
  img.rgb.assign(static_cast<size_t>(img.width) * img.height * 3, 0);

  const float scale_grey = 255.0f / top;
  auto grey = [&](int i, int j) {
    i = std::clamp(i, 0, cols - 1);
    j = std::clamp(j, 0, rows - 1);
    const float v = dwi.at(i, j, k);
    return std::isfinite(v) ? v : 0.0f;
  };
  auto lesion = [&](int x, int y) {  // nearest neighbour in the enlarged image
    if (x < 0 || y < 0 || x >= w || y >= h_image) return false;
    return mask.at(x / zoom, y / zoom, k) != 0;
  };
  auto flagged = [&](int x, int y) {
    const uint8_t m = mask.at(x / zoom, y / zoom, k);
    return m == kOverlayFlaggedLesion || m == kOverlayExcludedLesion;
  };
  for (int y = 0; y < h_image; ++y) {
    const double sy = (y + 0.5) / zoom - 0.5;
    const int j0 = static_cast<int>(std::floor(sy));
    const double fy = sy - j0;
    for (int x = 0; x < w; ++x) {
      const double sx = (x + 0.5) / zoom - 0.5;
      const int i0 = static_cast<int>(std::floor(sx));
      const double fx = sx - i0;
      const double v = (1 - fy) * ((1 - fx) * grey(i0, j0) + fx * grey(i0 + 1, j0)) +
                       fy * ((1 - fx) * grey(i0, j0 + 1) + fx * grey(i0 + 1, j0 + 1));
      const double g = std::clamp(v * scale_grey, 0.0, 255.0);
      double r = g, gr = g, b = g;
      if (lesion(x, y)) {
        const bool edge = !lesion(x - 1, y) || !lesion(x + 1, y) || !lesion(x, y - 1) || !lesion(x, y + 1);
        if (flagged(x, y)) {  // implausible lesion: cyan outline, blue tint
          if (edge) {
            r = 0, gr = 230, b = 255;
          } else {
            r = 0.55 * g + 0.45 * 30, gr = 0.55 * g + 0.45 * 90, b = 0.55 * g + 0.45 * 255;
          }
        } else if (edge) {
          r = 255, gr = 230, b = 0;  // yellow outline
        } else {
          r = 0.55 * g + 0.45 * 255, gr = 0.55 * g + 0.45 * 40, b = 0.55 * g + 0.45 * 20;  // red tint
        }
      }
      uint8_t* p = &img.rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(std::lround(r));
      p[1] = static_cast<uint8_t>(std::lround(gr));
      p[2] = static_cast<uint8_t>(std::lround(b));
    }
  }
  for (size_t n = 0; n < lines.size(); ++n) {
    const bool warning_line = has_warning && n + 1 == lines.size();
    const std::array<uint8_t, 3> colour = n == 0          ? std::array<uint8_t, 3>{255, 200, 0}
                                          : warning_line ? std::array<uint8_t, 3>{0, 230, 255}
                                                         : std::array<uint8_t, 3>{255, 255, 255};
    draw_text(img, margin, h_image + margin + static_cast<int>(n) * kCellH * scale, scale, lines[n], colour);
  }
  return img;
}

// ---- DICOM ----

base::Status dcmtk_error(const std::string& what, const OFCondition& cond) {
  return dcmtk_status("overlay", what, cond);
}

#define SB_DCMTK(expr, what) SB_DCMTK_CHECK("overlay", expr, what)

/// Patient Orientation letters (PS3.3 C.7.6.1.1.1) for an LPS direction: the axes whose
/// component is at least 0.25 in magnitude, largest first (L/R, P/A, H/F).
std::string orientation_letters(double x, double y, double z) {
  std::array<std::pair<double, char>, 3> parts = {std::pair{std::abs(x), x >= 0 ? 'L' : 'R'},
                                                  std::pair{std::abs(y), y >= 0 ? 'P' : 'A'},
                                                  std::pair{std::abs(z), z >= 0 ? 'H' : 'F'}};
  std::stable_sort(parts.begin(), parts.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::string out;
  for (const auto& [m, c] : parts) {
    if (m >= 0.25 || out.empty()) out += c;
  }
  return out;
}

struct Now {
  std::string date, time;
};
Now now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char d[16], h[16];
  std::strftime(d, sizeof d, "%Y%m%d", &tm);
  std::strftime(h, sizeof h, "%H%M%S", &tm);
  return {d, h};
}

base::Status put(DcmItem& item, const DcmTagKey& key, const std::string& value) {
  const OFCondition c = item.putAndInsertString(key, value.c_str());
  if (c.bad()) return dcmtk_error(DcmTag(key).getTagName(), c);
  return base::ok_status();
}

base::Status write_instance(const image::DicomSeries& dwi, const image::DicomInstance& slice, const RgbImage& img,
                            int instance_number, int zoom, const std::string& series_uid, int series_number,
                            const Now& created, const OverlayText& text, const OverlayOptions& options,
                            const std::string& sop_uid, const std::string& tmp_path) {
  DcmFileFormat ff;
  DcmDataset& d = *ff.getDataset();
  const image::DicomStudyInfo& st = dwi.study;
  const std::string version = text.software_version.empty() ? "unknown" : text.software_version;
  // SOP Common (C.12.1)
  if (!st.specific_character_set.empty()) SB_RETURN_IF_ERROR(put(d, DCM_SpecificCharacterSet, st.specific_character_set));
  SB_RETURN_IF_ERROR(put(d, DCM_SOPClassUID, UID_SecondaryCaptureImageStorage));
  SB_RETURN_IF_ERROR(put(d, DCM_SOPInstanceUID, sop_uid));
  SB_RETURN_IF_ERROR(put(d, DCM_InstanceCreationDate, created.date));
  SB_RETURN_IF_ERROR(put(d, DCM_InstanceCreationTime, created.time));
  // Patient (C.7.1.1)
  SB_RETURN_IF_ERROR(put(d, DCM_PatientName, st.patient_name));
  SB_RETURN_IF_ERROR(put(d, DCM_PatientID, st.patient_id));
  SB_RETURN_IF_ERROR(put(d, DCM_PatientBirthDate, st.patient_birth_date));
  SB_RETURN_IF_ERROR(put(d, DCM_PatientSex, st.patient_sex));
  // General Study (C.7.2.1)
  SB_RETURN_IF_ERROR(put(d, DCM_StudyInstanceUID, st.study_instance_uid));
  SB_RETURN_IF_ERROR(put(d, DCM_StudyDate, st.study_date));
  SB_RETURN_IF_ERROR(put(d, DCM_StudyTime, st.study_time));
  SB_RETURN_IF_ERROR(put(d, DCM_ReferringPhysicianName, st.referring_physician_name));
  SB_RETURN_IF_ERROR(put(d, DCM_StudyID, st.study_id));
  SB_RETURN_IF_ERROR(put(d, DCM_AccessionNumber, st.accession_number));
  if (!st.study_description.empty()) SB_RETURN_IF_ERROR(put(d, DCM_StudyDescription, st.study_description));
  // General Series (C.7.3.1): MR, so a console that lists MR series only shows it.
  SB_RETURN_IF_ERROR(put(d, DCM_Modality, "MR"));
  SB_RETURN_IF_ERROR(put(d, DCM_SeriesInstanceUID, series_uid));
  SB_RETURN_IF_ERROR(put(d, DCM_SeriesNumber, std::to_string(series_number)));
  SB_RETURN_IF_ERROR(put(d, DCM_SeriesDescription, options.series_description));
  // Body Part Examined (the DWI's, else HEAD): an unpaired part, so Laterality (2C) is absent.
  SB_RETURN_IF_ERROR(put(d, DCM_BodyPartExamined, dwi.body_part_examined.empty() ? "HEAD" : dwi.body_part_examined));
  SB_RETURN_IF_ERROR(put(d, DCM_SeriesDate, created.date));
  SB_RETURN_IF_ERROR(put(d, DCM_SeriesTime, created.time));
  // General Equipment (C.7.5.1) and SC Equipment (C.8.6.1): WSD = workstation.
  SB_RETURN_IF_ERROR(put(d, DCM_Manufacturer, options.manufacturer));
  SB_RETURN_IF_ERROR(put(d, DCM_ManufacturerModelName, options.model_name));
  SB_RETURN_IF_ERROR(put(d, DCM_SoftwareVersions, version));
  SB_RETURN_IF_ERROR(put(d, DCM_ConversionType, "WSD"));
  SB_RETURN_IF_ERROR(put(d, DCM_SecondaryCaptureDeviceManufacturer, options.manufacturer));
  SB_RETURN_IF_ERROR(put(d, DCM_SecondaryCaptureDeviceManufacturerModelName, options.model_name));
  SB_RETURN_IF_ERROR(put(d, DCM_SecondaryCaptureDeviceSoftwareVersions, version));
  // General Image (C.7.6.1)
  SB_RETURN_IF_ERROR(put(d, DCM_InstanceNumber, std::to_string(instance_number)));
  const auto& iop = *slice.image_orientation_patient;
  SB_RETURN_IF_ERROR(put(d, DCM_PatientOrientation, orientation_letters(iop[0], iop[1], iop[2]) + "\\" +
                                                        orientation_letters(iop[3], iop[4], iop[5])));
  SB_RETURN_IF_ERROR(put(d, DCM_ContentDate, created.date));
  SB_RETURN_IF_ERROR(put(d, DCM_ContentTime, created.time));
  SB_RETURN_IF_ERROR(put(d, DCM_ImageType, "DERIVED\\SECONDARY"));
  SB_RETURN_IF_ERROR(put(d, DCM_DerivationDescription,
                         "DWI windowed to 8 bits with the automatic lesion segmentation (" +
                             (text.model_id.empty() ? std::string("unknown model") : text.model_id) +
                             ") outlined and the result burned in"));
  SB_RETURN_IF_ERROR(put(d, DCM_BurnedInAnnotation, "YES"));
  SB_RETURN_IF_ERROR(put(d, DCM_LossyImageCompression, "00"));
  {
    DcmItem* ref = nullptr;
    SB_DCMTK(d.findOrCreateSequenceItem(DCM_SourceImageSequence, ref, 0), "SourceImageSequence");
    SB_RETURN_IF_ERROR(put(*ref, DCM_ReferencedSOPClassUID, slice.sop_class_uid));
    SB_RETURN_IF_ERROR(put(*ref, DCM_ReferencedSOPInstanceUID, slice.sop_instance_uid));
    DcmItem* purpose = nullptr;
    SB_DCMTK(ref->findOrCreateSequenceItem(DCM_PurposeOfReferenceCodeSequence, purpose, 0),
             "PurposeOfReferenceCodeSequence");
    // CID 7202 "Source Image Purposes of Reference".
    SB_RETURN_IF_ERROR(put(*purpose, DCM_CodeValue, "121322"));
    SB_RETURN_IF_ERROR(put(*purpose, DCM_CodingSchemeDesignator, "DCM"));
    SB_RETURN_IF_ERROR(put(*purpose, DCM_CodeMeaning, "Source image for image processing operation"));
  }
  // SC Image (C.8.6.2) with the Basic Pixel Spacing Calibration Macro (C.10.12).
  SB_RETURN_IF_ERROR(put(d, DCM_DateOfSecondaryCapture, created.date));
  SB_RETURN_IF_ERROR(put(d, DCM_TimeOfSecondaryCapture, created.time));
  if (slice.pixel_spacing_mm) {
    const auto& ps = *slice.pixel_spacing_mm;
    SB_RETURN_IF_ERROR(put(d, DCM_PixelSpacing, format_ds(ps[0] / zoom) + "\\" + format_ds(ps[1] / zoom)));
  }
  // Image Pixel (C.7.6.3): RGB, colour-by-pixel.
  SB_DCMTK(d.putAndInsertUint16(DCM_SamplesPerPixel, 3), "SamplesPerPixel");
  SB_RETURN_IF_ERROR(put(d, DCM_PhotometricInterpretation, "RGB"));
  SB_DCMTK(d.putAndInsertUint16(DCM_PlanarConfiguration, 0), "PlanarConfiguration");
  SB_DCMTK(d.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(img.height)), "Rows");
  SB_DCMTK(d.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(img.width)), "Columns");
  SB_DCMTK(d.putAndInsertUint16(DCM_BitsAllocated, 8), "BitsAllocated");
  SB_DCMTK(d.putAndInsertUint16(DCM_BitsStored, 8), "BitsStored");
  SB_DCMTK(d.putAndInsertUint16(DCM_HighBit, 7), "HighBit");
  SB_DCMTK(d.putAndInsertUint16(DCM_PixelRepresentation, 0), "PixelRepresentation");
  SB_DCMTK(d.putAndInsertUint8Array(DCM_PixelData, img.rgb.data(), static_cast<unsigned long>(img.rgb.size())),
           "PixelData");
  const OFCondition saved = ff.saveFile(tmp_path.c_str(), EXS_LittleEndianExplicit);
  if (saved.bad()) return base::unavailable("cannot write " + tmp_path + ": " + saved.text());
  return base::ok_status();
}

}  // namespace

int slice_with_most_lesion(const image::VolumeU8& mask) {
  int best = 0;
  int64_t best_count = 0;
  for (int64_t k = 0; k < mask.nk(); ++k) {
    int64_t n = 0;
    for (int64_t j = 0; j < mask.nj(); ++j) {
      for (int64_t i = 0; i < mask.ni(); ++i) n += mask.at(i, j, k) != 0;
    }
    if (n > best_count) best_count = n, best = static_cast<int>(k);
  }
  return best;
}

base::Result<RgbImage> render_overlay_slice(const image::VolumeF& dwi_volume, const image::VolumeU8& mask, int k,
                                            const OverlayText& text, const OverlayOptions& options) {
  SB_RETURN_IF_ERROR(check_grids(dwi_volume, mask));
  if (k < 0 || k >= dwi_volume.nk()) {
    return base::invalid_argument("overlay: slice " + std::to_string(k) + " is outside 0.." +
                                  std::to_string(dwi_volume.nk() - 1));
  }
  return render(dwi_volume, mask, k, window_top(dwi_volume), text, options);
}

base::Status write_overlay_series(const image::DicomSeries& dwi, const image::VolumeF& dwi_volume,
                                  const image::VolumeU8& mask, const OverlayText& text, const std::string& out_dir,
                                  const OverlayOptions& options, std::vector<WrittenInstance>* written) {
  SB_ASSIGN_OR_RETURN(image::SliceStack stack, image::sort_slices(dwi));
  SB_RETURN_IF_ERROR(check_grids(dwi_volume, mask));
  if (!stack.grid.same_as(dwi_volume.grid, 1e-3)) {
    return base::invalid_argument("overlay: the DWI volume is not on the grid of the DWI series " +
                                  image::describe_series(dwi) + "; pass what assemble_volume() returned");
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return base::unavailable("cannot create " + out_dir + ": " + ec.message());

  const float top = window_top(dwi_volume);
  const int zoom = zoom_for(static_cast<int>(dwi_volume.ni()), options.min_width);
  const std::string series_uid = new_dicom_uid();
  const int series_number = options.series_number > 0 ? options.series_number : dwi.series_number + 2000;
  const Now created = now();
  std::vector<WrittenInstance> files;
  for (size_t k = 0; k < stack.slices.size(); ++k) {
    const RgbImage img = render(dwi_volume, mask, static_cast<int>(k), top, text, options);
    if (img.width > 65535 || img.height > 65535) return base::invalid_argument("overlay: image too large");
    char name[32];
    std::snprintf(name, sizeof name, "%04zu.dcm", k + 1);
    const std::string path = (fs::path(out_dir) / name).string();
    const std::string tmp = path + ".tmp";
    const std::string sop_uid = new_dicom_uid();
    base::Status st;
    try {
      st = write_instance(dwi, stack.slices[k], img, static_cast<int>(k + 1), zoom, series_uid, series_number,
                          created, text, options, sop_uid, tmp);
    } catch (const std::exception& e) {
      st = base::internal_error(std::string("overlay: ") + e.what());
    }
    if (!st.ok()) {
      fs::remove(tmp, ec);
      return st.with_context("cannot write " + path);
    }
    fs::rename(tmp, path, ec);
    if (ec) {
      fs::remove(tmp, ec);
      return base::unavailable("cannot write " + path + ": " + ec.message());
    }
    files.push_back({path, UID_SecondaryCaptureImageStorage, sop_uid});
  }
  if (written != nullptr) *written = std::move(files);
  return base::ok_status();
}

}  // namespace firmware

