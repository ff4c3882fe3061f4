#include "image/jpeg2000.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <span>

#include <openjpeg.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>

namespace image {
namespace {

/// The JP2 file signature box (ISO/IEC 15444-1 I.5.1); a raw codestream starts with SOC, FF 4F.
constexpr uint8_t kJp2Signature[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};

bool starts_codestream(std::span<const uint8_t> bytes) {
  if (bytes.size() >= 2 && bytes[0] == 0xFF && bytes[1] == 0x4F) return true;
  return bytes.size() >= sizeof kJp2Signature && std::memcmp(bytes.data(), kJp2Signature, sizeof kJp2Signature) == 0;
}

/// OpenJPEG reads from this buffer through the callbacks below (it has no memory stream of its own).
struct MemoryStream {
  const uint8_t* data;
  size_t size;
  size_t pos;
};

OPJ_SIZE_T read_memory(void* buffer, OPJ_SIZE_T bytes, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  if (m->pos >= m->size) return static_cast<OPJ_SIZE_T>(-1);  // end of stream, as OpenJPEG expects
  const size_t n = std::min<size_t>(bytes, m->size - m->pos);
  std::memcpy(buffer, m->data + m->pos, n);
  m->pos += n;
  return n;
}

OPJ_OFF_T skip_memory(OPJ_OFF_T bytes, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  const OPJ_OFF_T lo = -static_cast<OPJ_OFF_T>(m->pos);
  const OPJ_OFF_T hi = static_cast<OPJ_OFF_T>(m->size - m->pos);
  const OPJ_OFF_T n = std::clamp(bytes, lo, hi);
  m->pos = static_cast<size_t>(static_cast<OPJ_OFF_T>(m->pos) + n);
  return n;
}

OPJ_BOOL seek_memory(OPJ_OFF_T to, void* user) {
  auto* m = static_cast<MemoryStream*>(user);
  if (to < 0 || static_cast<uint64_t>(to) > m->size) return OPJ_FALSE;
  m->pos = static_cast<size_t>(to);
  return OPJ_TRUE;
}

void keep_message(const char* msg, void* user) {
  auto* out = static_cast<std::string*>(user);
  if (!out->empty()) return;  // the first error says most
  *out = msg;
  while (!out->empty() && (out->back() == '\n' || out->back() == ' ')) out->pop_back();
}

void ignore_message(const char*, void*) {}

struct StreamDeleter {
  void operator()(opj_stream_t* s) const { opj_stream_destroy(s); }
};
struct CodecDeleter {
  void operator()(opj_codec_t* c) const { opj_destroy_codec(c); }
};
struct ImageDeleter {
  void operator()(opj_image_t* i) const { opj_image_destroy(i); }
};

uint32_t read_le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

/// The largest image a codestream may declare before anything is allocated (Rows and Columns of
/// a DICOM image are 16-bit, so 65535^2 is the absolute bound; real MR frames are far smaller).
constexpr uint64_t kMaxSamples = uint64_t{1} << 28;

/// Splits the fragments of an encapsulated Pixel Data element into frames (rules in
/// decode_jpeg2000_pixel_data's comment, image/jpeg2000.h). `fragments`: the items' values after
/// the table; `offset_table`: the first item's offsets in bytes (empty when it is empty). Returns,
/// per frame, the indices of its fragments. Errors: kInvalidArgument when they cannot make `frames` frames.
base::Result<std::vector<std::vector<size_t>>> group_fragments_into_frames(
    const std::vector<std::span<const uint8_t>>& fragments, const std::vector<uint32_t>& offset_table, size_t frames) {
  const size_t n = fragments.size();
  std::vector<std::vector<size_t>> out;
  if (frames == 0 || n == 0) return base::invalid_argument("no frames or no fragments in the pixel data");
  if (frames == 1) {
    out.emplace_back();
    for (size_t k = 0; k < n; ++k) out[0].push_back(k);
    return out;
  }
  // Offsets count from the first fragment's Item tag; each item adds its 8-byte header. Used
  // only when they start at 0 and rise, and every frame gets a fragment.
  if (offset_table.size() == frames && offset_table[0] == 0 &&
      std::adjacent_find(offset_table.begin(), offset_table.end(), std::greater_equal<uint32_t>()) ==
          offset_table.end()) {
    out.resize(frames);
    uint64_t position = 0;
    for (size_t k = 0; k < n; ++k) {
      const size_t frame = static_cast<size_t>(std::upper_bound(offset_table.begin(), offset_table.end(), position) -
                                               offset_table.begin() - 1);
      out[frame].push_back(k);
      position += 8 + fragments[k].size();
    }
    if (std::all_of(out.begin(), out.end(), [](const auto& f) { return !f.empty(); })) return out;
    out.clear();  // a table that does not fit the fragments: the other rules decide
  }
  if (n == frames) {
    for (size_t k = 0; k < n; ++k) out.push_back({k});
    return out;
  }
  for (size_t k = 0; k < n; ++k) {
    if (out.empty() || starts_codestream(fragments[k])) out.emplace_back();
    out.back().push_back(k);
  }
  if (out.size() != frames) {
    return base::invalid_argument("the pixel data's " + std::to_string(n) + " fragments cannot be split into " +
                                  std::to_string(frames) + " frames (" + std::to_string(out.size()) +
                                  " codestreams found)");
  }
  return out;
}

}  // namespace

base::Result<Jpeg2000Image> decode_jpeg2000(const uint8_t* data, size_t size, int expected_width, int expected_height) {
  if (data == nullptr || size < 2) return base::invalid_argument("JPEG 2000 codestream is empty");
  const bool jp2 = size >= sizeof kJp2Signature && std::memcmp(data, kJp2Signature, sizeof kJp2Signature) == 0;
  std::unique_ptr<opj_codec_t, CodecDeleter> codec(opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K));
  if (!codec) return base::internal_error("OpenJPEG could not create a decoder");
  std::string error;
  opj_set_error_handler(codec.get(), keep_message, &error);
  opj_set_warning_handler(codec.get(), ignore_message, nullptr);
  opj_set_info_handler(codec.get(), ignore_message, nullptr);
  opj_dparameters_t parameters;
  opj_set_default_decoder_parameters(&parameters);
  if (!opj_setup_decoder(codec.get(), &parameters)) return base::internal_error("OpenJPEG could not set up a decoder");

  MemoryStream memory{data, size, 0};
  std::unique_ptr<opj_stream_t, StreamDeleter> stream(opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE));
  if (!stream) return base::internal_error("OpenJPEG could not create a stream");
  opj_stream_set_user_data(stream.get(), &memory, nullptr);
  opj_stream_set_user_data_length(stream.get(), size);
  opj_stream_set_read_function(stream.get(), read_memory);
  opj_stream_set_skip_function(stream.get(), skip_memory);
  opj_stream_set_seek_function(stream.get(), seek_memory);

  const auto failed = [&](const std::string& what) {
    return base::invalid_argument("JPEG 2000 " + what + (error.empty() ? "" : ": " + error));
  };
  opj_image_t* raw_image = nullptr;
  if (!opj_read_header(stream.get(), codec.get(), &raw_image)) {
    opj_image_destroy(raw_image);
    return failed("header cannot be read");
  }
  std::unique_ptr<opj_image_t, ImageDeleter> img(raw_image);
  if (img->numcomps != 1) {
    return base::unimplemented("JPEG 2000 image has " + std::to_string(img->numcomps) +
                               " components; only single-component (greyscale) images are supported");
  }
  const uint64_t width = img->x1 - img->x0, height = img->y1 - img->y0;
  if (width == 0 || height == 0 || width * height > kMaxSamples) {
    return base::invalid_argument("JPEG 2000 image size " + std::to_string(width) + " x " + std::to_string(height) +
                                  " is empty or too large");
  }
  if ((expected_width > 0 && width != static_cast<uint64_t>(expected_width)) ||
      (expected_height > 0 && height != static_cast<uint64_t>(expected_height))) {
    return base::invalid_argument("JPEG 2000 image is " + std::to_string(width) + " x " + std::to_string(height) +
                                  ", expected " + std::to_string(expected_width) + " x " +
                                  std::to_string(expected_height) + " (Columns x Rows)");
  }
  const opj_image_comp_t& header_comp = img->comps[0];
  if (header_comp.prec < 1 || header_comp.prec > 16) {
    return base::unimplemented("JPEG 2000 precision of " + std::to_string(header_comp.prec) +
                               " bits is not supported (1 to 16)");
  }
  if (!opj_decode(codec.get(), stream.get(), img.get()) || !opj_end_decompress(codec.get(), stream.get())) {
    return failed("codestream cannot be decoded");
  }
  const opj_image_comp_t& comp = img->comps[0];
  if (comp.data == nullptr || comp.dx != 1 || comp.dy != 1 || comp.w != width || comp.h != height) {
    return base::invalid_argument("JPEG 2000 component is missing or subsampled (" + std::to_string(comp.w) + " x " +
                                  std::to_string(comp.h) + " of " + std::to_string(width) + " x " +
                                  std::to_string(height) + ")");
  }
  Jpeg2000Image out;
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.precision = static_cast<int>(comp.prec);
  out.is_signed = comp.sgnd != 0;
  out.samples.assign(comp.data, comp.data + width * height);
  return out;
}

base::Status decode_jpeg2000_pixel_data(DcmDataset& ds, const std::string& where,
                                        const std::vector<bool>* frames_used) {
  DcmElement* element = nullptr;
  if (ds.findAndGetElement(DCM_PixelData, element).bad() || element == nullptr) {
    return base::invalid_argument(where + ": no Pixel Data");
  }
  auto* pixel_data = dynamic_cast<DcmPixelData*>(element);
  if (pixel_data == nullptr) return base::invalid_argument(where + ": Pixel Data is not pixel data");
  E_TransferSyntax xfer = EXS_Unknown;
  const DcmRepresentationParameter* parameter = nullptr;
  pixel_data->getOriginalRepresentationKey(xfer, parameter);
  DcmPixelSequence* sequence = nullptr;
  if (pixel_data->getEncapsulatedRepresentation(xfer, parameter, sequence).bad() || sequence == nullptr) {
    return base::invalid_argument(where + ": JPEG 2000 Pixel Data is not encapsulated (no fragments)");
  }
  Uint16 rows = 0, cols = 0, bits_allocated = 0, bits_stored = 0;
  ds.findAndGetUint16(DCM_Rows, rows);
  ds.findAndGetUint16(DCM_Columns, cols);
  ds.findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  ds.findAndGetUint16(DCM_BitsStored, bits_stored);
  Sint32 frames = 1;
  if (ds.findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  if (rows == 0 || cols == 0) return base::invalid_argument(where + ": Rows or Columns missing");
  if (bits_allocated != 8 && bits_allocated != 16) {
    return base::unimplemented(where + ": BitsAllocated " + std::to_string(bits_allocated) +
                               " is not supported with JPEG 2000 (8 or 16)");
  }

  // Item 0 is the Basic Offset Table (PS3.5 A.4); the rest are fragments.
  const unsigned long items = sequence->card();
  std::vector<uint32_t> offset_table;
  std::vector<std::span<const uint8_t>> fragments;  // views into the dataset's items
  for (unsigned long k = 0; k < items; ++k) {
    DcmPixelItem* item = nullptr;
    if (sequence->getItem(item, k).bad() || item == nullptr) return base::invalid_argument(where + ": bad pixel item");
    Uint8* bytes = nullptr;
    const Uint32 length = item->getLength();
    if (length > 0 && (item->getUint8Array(bytes).bad() || bytes == nullptr)) {
      return base::invalid_argument(where + ": pixel item " + std::to_string(k) + " cannot be read");
    }
    if (k == 0) {
      for (Uint32 b = 0; b + 4 <= length; b += 4) offset_table.push_back(read_le32(bytes + b));
    } else {
      fragments.emplace_back(bytes, length);
    }
  }
  auto groups = group_fragments_into_frames(fragments, offset_table, static_cast<size_t>(frames));
  if (!groups.ok()) return base::invalid_argument(where + ": " + groups.status().message());

  const size_t plane = size_t{rows} * cols;
  std::vector<Uint16> words(bits_allocated == 16 ? plane * frames : 0);
  std::vector<Uint8> bytes(bits_allocated == 8 ? plane * frames : 0);
  int precision = 0;
  std::vector<uint8_t> codestream;
  for (size_t f = 0; f < groups->size(); ++f) {
    if (frames_used != nullptr && (f >= frames_used->size() || !(*frames_used)[f])) continue;
    // A frame in one fragment is decoded where it lies; one split over several is joined first.
    std::span<const uint8_t> frame_bytes = fragments[(*groups)[f].front()];
    if ((*groups)[f].size() > 1) {
      codestream.clear();
      for (size_t k : (*groups)[f]) codestream.insert(codestream.end(), fragments[k].begin(), fragments[k].end());
      frame_bytes = codestream;
    }
    auto decoded = decode_jpeg2000(frame_bytes.data(), frame_bytes.size(), cols, rows);
    const std::string frame_name = frames > 1 ? " frame " + std::to_string(f + 1) : "";
    if (!decoded.ok()) {
      return base::Status(decoded.status().code(), where + frame_name + ": " + decoded.status().message());
    }
    if (decoded->precision > bits_allocated) {
      return base::unimplemented(where + frame_name + ": JPEG 2000 precision " + std::to_string(decoded->precision) +
                                 " bits does not fit BitsAllocated " + std::to_string(bits_allocated));
    }
    precision = std::max(precision, decoded->precision);
    // Two's complement in BitsAllocated bits; read_frame masks BitsStored and sign-extends.
    for (size_t p = 0; p < plane; ++p) {
      const int32_t v = decoded->samples[p];
      if (bits_allocated == 16) {
        words[f * plane + p] = static_cast<Uint16>(static_cast<uint32_t>(v) & 0xFFFFu);
      } else {
        bytes[f * plane + p] = static_cast<Uint8>(static_cast<uint32_t>(v) & 0xFFu);
      }
    }
  }
  // A codestream with more bits than BitsStored says (some writers compress all 16) keeps them
  // all. PixelRepresentation stays the header's, as pydicom does: a known writer bug stores
  // signed pixels as an unsigned codestream, and the header then holds the truth.
  if (precision > bits_stored) {
    ds.putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(precision));
    ds.putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(precision - 1));
  }
  return put_native_pixel_data(ds, bits_allocated, words, bytes, where);
}

base::Status put_native_pixel_data(DcmDataset& ds, int bits_allocated, const std::vector<Uint16>& words,
                                   const std::vector<Uint8>& bytes, const std::string& where) {
  auto native = std::make_unique<DcmPixelData>(DCM_PixelData);
  const OFCondition put = bits_allocated == 16 ? native->putUint16Array(words.data(), words.size())
                                               : native->putUint8Array(bytes.data(), bytes.size());
  if (put.bad()) return base::internal_error(where + ": cannot store the decoded pixels: " + put.text());
  if (ds.insert(native.get(), /*replaceOld=*/true).bad()) {
    return base::internal_error(where + ": cannot replace the compressed Pixel Data");
  }
  native.release();  // the dataset owns it now
  return base::ok_status();
}

}  // namespace image
