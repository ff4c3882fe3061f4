// DICOM study reading: scan a folder for instances (DCMTK dcmdata), group them into series with
// the metadata needed to classify them and to write derived objects (SEG, SR), and assemble a
// single-frame series into a Volume<float> with its LPS affine. Usage:
//   SB_ASSIGN_OR_RETURN(auto scan, image::scan_dicom_folder(dir));
//   SB_ASSIGN_OR_RETURN(auto volume, image::assemble_volume(scan.series[0]));
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "image/volume.h"

class DcmFileFormat;

namespace image {

/// Largest in-plane size (Rows and Columns) and slice count assemble_volume accepts; anything
/// larger is refused before allocating.
inline constexpr int kMaxInPlaneDim = 2048;
inline constexpr int kMaxSlices = 2000;

/// Per-instance metadata of one DICOM image (one file). Geometry follows DICOM PS3.3
/// C.7.6.2 (Image Plane Module): LPS patient coordinates in mm.
struct DicomInstance {
  std::string path;
  std::string sop_class_uid;
  std::string sop_instance_uid;
  std::string transfer_syntax_uid;
  int instance_number = 0;
  bool has_instance_number = false;
  /// Image Position (Patient) (0020,0032): centre of the first transmitted voxel, mm.
  std::optional<std::array<double, 3>> image_position_patient;
  /// Image Orientation (Patient) (0020,0037): row direction (0..2), column direction (3..5).
  std::optional<std::array<double, 6>> image_orientation_patient;
  /// Pixel Spacing (0028,0030): [0] = spacing between rows (vertical), [1] = between columns, mm.
  std::optional<std::array<double, 2>> pixel_spacing_mm;
  double slice_thickness_mm = 0.0;  // 0 when absent
  int rows = 0;                     // 0 when the instance has no image pixel module or no pixel data
  int columns = 0;
  int number_of_frames = 1;
  int samples_per_pixel = 1;
  int bits_allocated = 0;
  double rescale_slope = 1.0;
  double rescale_intercept = 0.0;
  /// Image Type (0008,0008) values, upper case, e.g. {"DERIVED", "PRIMARY", "DIFFUSION", "ADC"}.
  std::vector<std::string> image_type;
  std::string series_description;
  /// Diffusion b-value in s/mm^2 from the standard MR Diffusion macro (0018,9087) (top level,
  /// MR Diffusion Sequence, or the frame's functional groups) or a vendor's documented private
  /// element (Siemens CSA B_value, then (0019,xx0C); GE (0043,xx39) first value less 1e9 when
  /// above it; Philips (2001,xx03); UIH/Canon (0065,xx0A), then (0065,xx09)); empty if none.
  std::optional<double> b_value;
  /// Where b_value came from, for reports: "(0018,9087)", "Siemens CSA B_value", "GE (0043,xx39)",
  /// "Philips (2001,xx03)", "Siemens (0019,xx0C)", "UIH/Canon (0065,xx0A)"; empty when none.
  std::string b_value_source;
  /// Diffusion gradient direction as the header gives it (unit vector; the standard's Diffusion
  /// Gradient Orientation (0018,9089) is in the patient coordinate system, vendors' private
  /// tags may use scanner axes). Used only to tell directions apart. Empty when none is given.
  std::optional<std::array<double, 3>> diffusion_direction;
  /// Diffusion Directionality (0018,9075) or its vendor equivalent, upper case: "DIRECTIONAL",
  /// "ISOTROPIC" (the scanner's trace image), "NONE" (b0), "BMATRIX"; empty when not stated.
  std::string diffusion_directionality;
  /// Siemens NumberOfImagesInMosaic (CSA image header, else (0019,xx0A)); 0 when absent.
  int mosaic_images = 0;
  /// >= 0 when this entry is one tile (slice) of a Siemens MOSAIC image: the tile index in
  /// acquisition order (row-major tiles, mosaic_tiles_per_row per row). rows/columns are then
  /// the tile's, mosaic_rows/mosaic_columns the stored image's, and the position is the tile's
  /// own (see read_dicom_header()).
  int mosaic_index = -1;
  int mosaic_tiles_per_row = 0;
  int mosaic_rows = 0, mosaic_columns = 0;
  double echo_time_ms = 0.0;
  int acquisition_number = 0;
  /// -1 for a single-frame instance. Otherwise this entry stands for frame `frame_index`
  /// (0-based) of a multi-frame (Enhanced MR) instance, and its position, orientation, pixel
  /// spacing, rescale, b-value and FrameType come from that frame's functional groups
  /// (PS3.3 C.7.6.16: per-frame item first, then the shared item, then the top level).
  int frame_index = -1;

  /// Whether this entry is an image: it has Rows, Columns and a pixel data element.
  bool holds_image() const { return rows > 0 && columns > 0; }
};

/// Patient and study level attributes copied into derived objects (PS3.3 C.7.1.1, C.7.2.1).
struct DicomStudyInfo {
  std::string patient_name, patient_id, patient_birth_date, patient_sex;
  std::string study_instance_uid, study_date, study_time, study_id, accession_number;
  std::string referring_physician_name, study_description;
  std::string specific_character_set;
};

/// One series: the instances sharing a SeriesInstanceUID, plus series/study metadata taken
/// from its first instance.
struct DicomSeries {
  std::string series_instance_uid;
  int series_number = 0;
  std::string series_description;
  std::string modality;
  std::string manufacturer;
  std::string manufacturer_model_name;
  std::string frame_of_reference_uid;
  std::string protocol_name;
  std::string body_part_examined;
  std::string series_date, series_time;
  DicomStudyInfo study;
  /// In scan order (by path); use sort_slices() for the spatial order.
  std::vector<DicomInstance> instances;
};

/// What a folder scan found.
struct DicomScan {
  /// Ordered by (StudyInstanceUID, SeriesNumber, SeriesInstanceUID).
  std::vector<DicomSeries> series;
  int files_seen = 0;
  int files_skipped = 0;       // not DICOM, unreadable, or without the UIDs of an instance
  int duplicates_skipped = 0;  // a SOPInstanceUID already seen (same image sent twice)
  /// Instances without an image (no pixel data: Philips' private "MR Series Data Storage"
  /// objects, say) that share a SeriesInstanceUID with images; they are left out of that series.
  int non_images_set_aside = 0;
};

/// Largest NumberOfFrames of one multi-frame instance that is expanded into frames.
inline constexpr int kMaxFrames = 20000;

/// Reads the header of one file (pixel data is not loaded). Returns a series holding that
/// single instance, or, for a multi-frame instance with per-frame functional groups (Enhanced
/// MR, PS3.3 C.8.13), one entry per frame (see DicomInstance::frame_index), or, for a Siemens
/// MOSAIC, one entry per tile: NumberOfImagesInMosaic from the CSA image header (else
/// (0019,xx0A)), ceil(sqrt(n)) tiles per row; the first tile's position is
/// ImagePositionPatient moved by half the size difference between the mosaic and the tile along
/// the row and column directions, tile k lies k * SpacingBetweenSlices (else SliceThickness)
/// along the CSA SliceNormalVector (else row x column direction).
/// Errors: kInvalidArgument when the file is not a DICOM instance (with the DCMTK reason),
/// kNotFound when it does not exist.
base::Result<DicomSeries> read_dicom_header(const std::string& path);

/// Same as read_dicom_header() for a dataset already in memory; `label` stands for the path
/// in messages and DicomInstance::path (assemble_volume() cannot read pixels back from it).
base::Result<DicomSeries> read_dicom_header(DcmFileFormat& file, const std::string& label);

/// Scans `dir` recursively, skipping non-DICOM files (debug log) and duplicate SOP instances.
/// Errors: kNotFound when `dir` is missing or holds no DICOM instance.
base::Result<DicomScan> scan_dicom_folder(const std::string& dir);

/// The slices of a series in spatial order with the grid they span (no pixel data read).
struct SliceStack {
  /// Sorted by increasing dot(ImagePositionPatient, n), n = row_dir x col_dir.
  std::vector<DicomInstance> slices;
  /// dims = (Columns, Rows, slices); affine as described at assemble_volume().
  Grid grid;
};

/// Sorts and validates the geometry of a single-frame series. Checks: every instance is an
/// image with ImagePositionPatient, ImageOrientationPatient (unit, orthogonal; all equal within
/// 1e-4), PixelSpacing and Rows/Columns all equal; at least 2 slices; no two slices at the
/// same position; gaps along the normal within 10 % of the median step; slices on one line.
/// Frames of Enhanced MR instances and tiles of Siemens mosaics count as slices. A diffusion
/// series holding several volumes must first be split (image/diffusion_volumes.h).
/// Errors: kUnimplemented for multi-frame instances without per-frame geometry (Plane Position
/// and Orientation functional groups) or mosaics that cannot be unpacked; kResourceExhausted
/// for more than kMaxInPlaneDim x kMaxInPlaneDim or kMaxSlices slices; kInvalidArgument with a
/// message naming the offending files for everything else.
base::Result<SliceStack> sort_slices(const DicomSeries& series);

/// Reads the pixel data of a single-frame series into a float volume with rescale slope and
/// intercept applied (modality LUT, PS3.3 C.11.1.1.2). Voxel (i, j, k) = column i, row j of
/// the k-th sorted slice. Affine (LPS, mm; PS3.3 C.7.6.2.1.1): column 0 = row direction
/// (IOP[0..2]) * column spacing (PixelSpacing[1]); column 1 = column direction (IOP[3..5]) *
/// row spacing (PixelSpacing[0]); column 2 = (IPP_last - IPP_first) / (n - 1); column 3 = IPP
/// of the first sorted slice. Compressed transfer syntaxes (RLE, JPEG, JPEG-LS with DCMTK's
/// codecs; JPEG 2000 with OpenJPEG, image/jpeg2000.h) are decoded; deflated and big endian ones
/// read.
/// Errors: those of sort_slices(); kInvalidArgument for unreadable or inconsistent pixel data.
base::Result<VolumeF> assemble_volume(const DicomSeries& series);

/// Same as assemble_volume(), for an already sorted stack.
base::Result<VolumeF> assemble_volume(const SliceStack& stack);

/// One line describing a series for logs and error messages:
/// "#5 'ep2d_diff_TRACE' MR, 25 instances, ImageType DERIVED\PRIMARY\DIFFUSION\TRACEW".
std::string describe_series(const DicomSeries& series);

}  // namespace image
