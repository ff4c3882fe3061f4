// JPEG 2000 pixel data (DICOM PS3.5 A.4.4 and 8.2.4; transfer syntaxes 1.2.840.10008.1.2.4.90
// lossless and .91 lossy) decoded with OpenJPEG: Debian's DCMTK 3.6.7 has no JPEG 2000 codec
// (that one is only in OFFIS's commercial DCMJP2K), and PACS and some scanners store MR this way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <dcmtk/dcmdata/dcdatset.h>

#include "base/status.h"

namespace image {

/// One decoded single-component JPEG 2000 image: samples row by row (width fastest), as the
/// integers the codestream holds (two's complement already applied when `is_signed`).
struct Jpeg2000Image {
  int width = 0;
  int height = 0;
  int precision = 0;  // bits per sample of the codestream (its SIZ marker), 1 to 16 here
  bool is_signed = false;
  std::vector<int32_t> samples;
};

/// Decodes one JPEG 2000 codestream: a raw J2K codestream (starts with the SOC marker FF 4F, as
/// PS3.5 A.4.4 requires in DICOM) or a JP2 file (some writers wrap it; accepted too).
/// `expected_width` x `expected_height` (pixels; 0: any) is checked against the codestream's
/// header before any pixel is decoded.
/// Errors: kInvalidArgument for a stream OpenJPEG cannot decode (its message is included) or of
/// another size than expected; kUnimplemented for more than one component (colour) or more than
/// 16 bits per sample.
base::Result<Jpeg2000Image> decode_jpeg2000(const uint8_t* data, size_t size, int expected_width = 0,
                                            int expected_height = 0);

/// Replaces the Pixel Data of `ds` by native samples (row by row, frame after frame): `words`
/// when `bits_allocated` is 16, else `bytes`. Used after any decoder that fills frames itself
/// (this file's, and DCMTK's per-frame decoding in image/dicom_series.cc).
/// Errors: kInternal when DCMTK refuses the new element.
base::Status put_native_pixel_data(DcmDataset& ds, int bits_allocated, const std::vector<Uint16>& words,
                                   const std::vector<Uint8>& bytes, const std::string& where);

/// Replaces the JPEG 2000 encapsulated Pixel Data of `ds` by native pixel data of the same Rows,
/// Columns and BitsAllocated (8 or 16), so that DCMTK's readers see an uncompressed dataset
/// (samples stored as two's complement in BitsAllocated bits). Fragments are split into frames
/// (PS3.5 A.4): with one frame, every fragment is that frame's; otherwise the Basic Offset Table
/// when it has one entry per frame, starts at 0 and rises; otherwise one fragment per frame when
/// the counts match; otherwise a new frame starts at each fragment that begins a codestream (SOC
/// marker or JP2 signature). A codestream with more bits than BitsStored raises BitsStored and
/// HighBit to its precision; PixelRepresentation stays the header's (as pydicom does: one known
/// writer stores signed pixels as an unsigned codestream). With `frames_used`, only frame f with
/// (*frames_used)[f] is decoded (the others stay 0): one volume of a multi-frame file needs a few
/// of its frames. `where` prefixes errors.
/// Errors: kInvalidArgument (no or corrupt pixel data, a frame of another size than Rows x
/// Columns, frames that cannot be told apart), kUnimplemented (colour, more bits than
/// BitsAllocated holds).
base::Status decode_jpeg2000_pixel_data(DcmDataset& ds, const std::string& where,
                                        const std::vector<bool>* frames_used = nullptr);

}  // namespace image
