#include "image/dicom_series.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <system_error>

#include <dcmtk/config/osconfig.h>  // must precede the other DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include "base/log.h"
#include "image/jpeg2000.h"

namespace image {
namespace {

namespace fs = std::filesystem;

constexpr const char* kEnhancedMrStorage = "1.2.840.10008.5.1.4.1.1.4.1";
constexpr const char* kEnhancedMrColorStorage = "1.2.840.10008.5.1.4.1.1.4.3";
/// Total voxel budget of one assembled volume (1 GiB of float).
constexpr int64_t kMaxVoxels = int64_t{256} * 1024 * 1024;

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c) && c != '\0'; };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string get_string(DcmItem& item, const DcmTagKey& key) {
  OFString value;
  if (item.findAndGetOFStringArray(key, value).good()) return trim(value.c_str());
  return {};
}

int get_int(DcmItem& item, const DcmTagKey& key, int fallback) {
  const std::string s = get_string(item, key);
  if (s.empty()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !std::isfinite(v)) return fallback;
  return static_cast<int>(std::lround(v));
}

int get_us(DcmItem& item, const DcmTagKey& key, int fallback) {
  Uint16 v = 0;
  if (item.findAndGetUint16(key, v).good()) return v;
  return fallback;
}

double get_double(DcmItem& item, const DcmTagKey& key, double fallback) {
  Float64 v = 0;
  if (item.findAndGetFloat64(key, v).good() && std::isfinite(v)) return v;
  return fallback;
}

/// Reads exactly N numeric values (DS/FD) of `key`; empty when absent or short.
template <size_t N>
std::optional<std::array<double, N>> get_doubles(DcmItem& item, const DcmTagKey& key) {
  std::array<double, N> out{};
  for (size_t p = 0; p < N; ++p) {
    Float64 v = 0;
    if (item.findAndGetFloat64(key, v, static_cast<unsigned long>(p)).bad() || !std::isfinite(v)) {
      return std::nullopt;
    }
    out[p] = v;
  }
  return out;
}

std::vector<std::string> split_backslash(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '\\') {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty() || !out.empty()) out.push_back(trim(cur));
  return out;
}

/// Finds a private element by its creator (PS3.5 7.8.1): the block (gggg,00xx) whose value is
/// `creator` reserves elements (gggg,xxNN); returns element NN of that block.
DcmElement* find_private(DcmItem& item, Uint16 group, const std::string& creator, Uint8 low) {
  for (DcmObject* obj = item.nextInContainer(nullptr); obj != nullptr; obj = item.nextInContainer(obj)) {
    const DcmTag& tag = obj->getTag();
    if (tag.getGroup() != group) continue;
    const Uint16 elem = tag.getElement();
    if (elem < 0x0010 || elem > 0x00FF) continue;
    OFString value;
    if (static_cast<DcmElement*>(obj)->getOFString(value, 0).bad()) continue;
    if (upper(trim(value.c_str())) != upper(creator)) continue;
    DcmElement* found = nullptr;
    const DcmTagKey key(group, static_cast<Uint16>((elem << 8) | low));
    if (item.findAndGetElement(key, found).good()) return found;
    return nullptr;
  }
  return nullptr;
}

/// All numeric values of an element. Elements with a VR are read through DCMTK's string form;
/// private elements of implicit VR files arrive as UN/OB, then `binary` says how the vendor
/// stores them: 't' text (IS/DS/CS), 'f' float32 (FL), 'd' float64 (FD), 'u' uint16 (US).
std::vector<double> read_numbers(DcmElement* e, char binary) {
  std::vector<double> out;
  if (e == nullptr || e->getLength() == 0) return out;
  const auto parse_text = [&](const std::string& text) {
    for (const std::string& part : split_backslash(text)) {
      char* end = nullptr;
      const double v = std::strtod(part.c_str(), &end);
      if (part.empty() || end == part.c_str() || !std::isfinite(v)) return false;
      out.push_back(v);
    }
    return true;
  };
  switch (e->ident()) {
    case EVR_UN:
    case EVR_UNKNOWN:
    case EVR_UNKNOWN2B:
    case EVR_OB:
    case EVR_ox: {
      Uint8* bytes = nullptr;
      if (e->getUint8Array(bytes).bad() || bytes == nullptr) return out;
      const Uint32 n = e->getLength();
      // Little endian host assumed (x86-64, aarch64), as the files are little endian.
      if (binary == 'd' && n % 8 == 0) {
        for (Uint32 p = 0; p < n; p += 8) {
          double d;
          std::memcpy(&d, bytes + p, 8);
          if (!std::isfinite(d)) return {};
          out.push_back(d);
        }
      } else if (binary == 'f' && n % 4 == 0) {
        for (Uint32 p = 0; p < n; p += 4) {
          float f;
          std::memcpy(&f, bytes + p, 4);
          if (!std::isfinite(f)) return {};
          out.push_back(f);
        }
      } else if (binary == 'u' && n % 2 == 0) {
        for (Uint32 p = 0; p < n; p += 2) out.push_back(bytes[p] | (bytes[p + 1] << 8));
      } else if (!parse_text(trim(std::string(reinterpret_cast<const char*>(bytes), n)))) {
        out.clear();
      }
      return out;
    }
    default: {
      const unsigned long vm = e->getVM();
      for (unsigned long p = 0; p < vm && p < 64; ++p) {
        OFString value;
        if (e->getOFString(value, p).bad()) return {};
        const std::string text = trim(value.c_str());
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end == text.c_str() || !std::isfinite(v)) return {};
        out.push_back(v);
      }
      return out;
    }
  }
}

/// Text of an element (CS/LO or UN bytes), trimmed and upper case; empty when absent.
std::string read_text(DcmElement* e) {
  if (e == nullptr || e->getLength() == 0) return {};
  if (e->ident() == EVR_UN || e->ident() == EVR_OB || e->ident() == EVR_UNKNOWN) {
    Uint8* bytes = nullptr;
    if (e->getUint8Array(bytes).bad() || bytes == nullptr) return {};
    return upper(trim(std::string(reinterpret_cast<const char*>(bytes), e->getLength())));
  }
  OFString value;
  if (e->getOFStringArray(value).bad()) return {};
  return upper(trim(value.c_str()));
}

/// Element NN of any private block of `group` (whatever its creator), for vendors whose creator
/// string varies between software versions.
DcmElement* find_private_any_creator(DcmItem& item, Uint16 group, Uint8 low) {
  for (DcmObject* obj = item.nextInContainer(nullptr); obj != nullptr; obj = item.nextInContainer(obj)) {
    const DcmTag& tag = obj->getTag();
    if (tag.getGroup() < group) continue;
    if (tag.getGroup() > group) break;  // a dataset is in ascending tag order
    const Uint16 block = tag.getElement();
    if (block < 0x0010 || block > 0x00FF) continue;
    DcmElement* found = nullptr;
    if (item.findAndGetElement(DcmTagKey(group, static_cast<Uint16>((block << 8) | low)), found).good()) return found;
  }
  return nullptr;
}

/// Siemens CSA header (the "SV10" format of syngo VB/VD/VE, and the older unversioned one):
/// named tags, each with a list of text items. Only what diffusion and mosaics need is used.
struct CsaHeader {
  std::map<std::string, std::vector<std::string>> tags;

  std::vector<double> numbers(const std::string& name) const {
    std::vector<double> out;
    auto it = tags.find(name);
    if (it == tags.end()) return out;
    for (const std::string& item : it->second) {
      char* end = nullptr;
      const double v = std::strtod(item.c_str(), &end);
      if (item.empty() || end == item.c_str() || !std::isfinite(v)) return {};
      out.push_back(v);
    }
    return out;
  }
};

uint32_t read_u32(const Uint8* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24); }

/// Parses a CSA header. Layout: optional "SV10" + 4 bytes, then the tag count (uint32) and a
/// uint32; each tag: name (64 bytes, NUL-terminated), VM, VR (4 bytes), SyngoDT, item count,
/// one more int32 (84 bytes); each item: 4 int32 (the length is the second in SV10, the first
/// minus the first tag's item count in the old format) and the text, padded to 4 bytes.
/// Malformed input gives the tags parsed so far.
CsaHeader parse_csa(const Uint8* data, size_t size) {
  CsaHeader csa;
  if (data == nullptr || size < 16) return csa;
  const bool sv10 = std::memcmp(data, "SV10", 4) == 0;
  size_t pos = sv10 ? 8 : 0;
  const uint32_t ntags = read_u32(data + pos);
  pos += 8;
  if (ntags == 0 || ntags > 1000) return csa;
  int64_t first_tag_items = -1;
  for (uint32_t t = 0; t < ntags; ++t) {
    if (pos + 84 > size) return csa;
    const char* name_ptr = reinterpret_cast<const char*>(data + pos);
    const std::string name(name_ptr, strnlen(name_ptr, 64));
    const uint32_t nitems = read_u32(data + pos + 76);
    pos += 84;
    if (nitems > 1000) return csa;
    if (first_tag_items < 0) first_tag_items = nitems;
    std::vector<std::string> items;
    for (uint32_t i = 0; i < nitems; ++i) {
      if (pos + 16 > size) return csa;
      const int64_t len = sv10 ? static_cast<int64_t>(read_u32(data + pos + 4))
                               : static_cast<int64_t>(read_u32(data + pos)) - first_tag_items;
      pos += 16;
      if (len < 0 || static_cast<size_t>(len) > size - pos) return csa;
      const char* text = reinterpret_cast<const char*>(data + pos);
      const std::string value = trim(std::string(text, strnlen(text, static_cast<size_t>(len))));
      if (!value.empty()) items.push_back(value);
      pos += (static_cast<size_t>(len) + 3) / 4 * 4;
    }
    csa.tags[name] = std::move(items);
  }
  return csa;
}

CsaHeader read_csa_image_header(DcmItem& ds) {
  DcmElement* e = find_private(ds, 0x0029, "SIEMENS CSA HEADER", 0x10);
  if (e == nullptr) return {};
  Uint8* bytes = nullptr;
  if (e->getUint8Array(bytes).bad() || bytes == nullptr) return {};
  return parse_csa(bytes, e->getLength());
}

std::optional<std::array<double, 3>> three(const std::vector<double>& v) {
  if (v.size() < 3) return std::nullopt;
  return std::array<double, 3>{v[0], v[1], v[2]};
}

/// The standard MR Diffusion Macro (PS3.3 C.8.13.5.9) in `item` (the top level of a classic
/// image or an MR Diffusion Sequence item): b-value (0018,9087), Diffusion Directionality
/// (0018,9075), Diffusion Gradient Orientation (0018,9089) in the Diffusion Gradient Direction
/// Sequence (0018,9076). Fills only what `inst` does not have yet.
void read_diffusion_macro(DcmItem& item, DicomInstance& inst) {
  DcmElement* e = nullptr;
  if (!inst.b_value && item.findAndGetElement(DCM_DiffusionBValue, e).good()) {
    const std::vector<double> b = read_numbers(e, 'd');
    if (!b.empty()) {
      inst.b_value = b[0];
      inst.b_value_source = "(0018,9087)";
    }
  }
  if (inst.diffusion_directionality.empty() && item.findAndGetElement(DCM_DiffusionDirectionality, e).good()) {
    inst.diffusion_directionality = read_text(e);
  }
  DcmItem* direction = nullptr;
  if (!inst.diffusion_direction &&
      item.findAndGetSequenceItem(DCM_DiffusionGradientDirectionSequence, direction, 0).good() &&
      direction != nullptr && direction->findAndGetElement(DCM_DiffusionGradientOrientation, e).good()) {
    inst.diffusion_direction = three(read_numbers(e, 'd'));
  }
}

/// Diffusion attributes of a classic image: the standard macro first, then the vendors'
/// documented private conventions (Siemens CSA header and (0019,xx0C-0E); GE (0043,xx39) and
/// (0019,xxBB-BD); Philips (2001,xx03-04) and (2005,xxB0-B2); UIH/Canon (0065,xx0A/09) and
/// (0065,xx37)). Also NumberOfImagesInMosaic. Returns the CSA header for the mosaic geometry.
CsaHeader read_diffusion(DcmItem& ds, DicomInstance& inst) {
  read_diffusion_macro(ds, inst);
  DcmItem* diffusion = nullptr;
  if (ds.findAndGetSequenceItem(DCM_MRDiffusionSequence, diffusion, 0).good() && diffusion != nullptr) {
    read_diffusion_macro(*diffusion, inst);
  }
  // Siemens: the CSA image header, then the (0019) "SIEMENS MR HEADER" elements.
  CsaHeader csa = read_csa_image_header(ds);
  if (!inst.b_value) {
    const std::vector<double> b = csa.numbers("B_value");
    if (!b.empty()) {
      inst.b_value = b[0];
      inst.b_value_source = "Siemens CSA B_value";
    }
  }
  if (!inst.diffusion_direction) inst.diffusion_direction = three(csa.numbers("DiffusionGradientDirection"));
  const std::string siemens = "SIEMENS MR HEADER";
  if (!inst.b_value) {
    const std::vector<double> b = read_numbers(find_private(ds, 0x0019, siemens, 0x0C), 't');
    if (!b.empty()) {
      inst.b_value = b[0];
      inst.b_value_source = "Siemens (0019,xx0C)";
    }
  }
  if (inst.diffusion_directionality.empty()) {
    inst.diffusion_directionality = read_text(find_private(ds, 0x0019, siemens, 0x0D));
  }
  if (!inst.diffusion_direction) inst.diffusion_direction = three(read_numbers(find_private(ds, 0x0019, siemens, 0x0E), 'd'));
  const std::vector<double> mosaic = csa.numbers("NumberOfImagesInMosaic");
  if (!mosaic.empty()) {
    inst.mosaic_images = static_cast<int>(std::lround(mosaic[0]));
  } else {
    const std::vector<double> m = read_numbers(find_private(ds, 0x0019, siemens, 0x0A), 'u');
    if (!m.empty()) inst.mosaic_images = static_cast<int>(std::lround(m[0]));
  }
  // GE: b-value is the first value of (0043,xx39), with 1e9 added as a flag by some versions.
  if (!inst.b_value) {
    const std::vector<double> b = read_numbers(find_private(ds, 0x0043, "GEMS_PARM_01", 0x39), 't');
    if (!b.empty()) {
      inst.b_value = b[0] >= 1e9 ? std::fmod(b[0], 1e9) : b[0];
      inst.b_value_source = "GE (0043,xx39)";
    }
  }
  if (!inst.diffusion_direction) {
    std::vector<double> d;
    for (Uint8 low : {Uint8{0xBB}, Uint8{0xBC}, Uint8{0xBD}}) {
      const std::vector<double> v = read_numbers(find_private(ds, 0x0019, "GEMS_ACQU_01", low), 't');
      if (v.empty()) break;
      d.push_back(v[0]);
    }
    inst.diffusion_direction = three(d);
  }
  // Philips: b-factor (FL), direction letter ('I' isotropic), direction components (FL).
  const std::string philips = "Philips Imaging DD 001";
  if (!inst.b_value) {
    const std::vector<double> b = read_numbers(find_private(ds, 0x2001, philips, 0x03), 'f');
    if (!b.empty()) {
      inst.b_value = b[0];
      inst.b_value_source = "Philips (2001,xx03)";
    }
  }
  if (inst.diffusion_directionality.empty()) {
    const std::string letter = read_text(find_private(ds, 0x2001, philips, 0x04));
    if (letter == "I") {
      inst.diffusion_directionality = "ISOTROPIC";
    } else if (letter == "O" || letter == "R" || letter == "A" || letter == "F" || letter == "P" || letter == "S") {
      inst.diffusion_directionality = "DIRECTIONAL";
    }
  }
  if (!inst.diffusion_direction) {
    std::vector<double> d;
    for (Uint8 low : {Uint8{0xB0}, Uint8{0xB1}, Uint8{0xB2}}) {
      const std::vector<double> v = read_numbers(find_private(ds, 0x2005, "Philips MR Imaging DD 001", low), 'f');
      if (v.empty()) break;
      d.push_back(v[0]);
    }
    inst.diffusion_direction = three(d);
  }
  // UIH and Canon/Toshiba: user (nominal) b-value (0065,xx0A), else actual (0065,xx09);
  // gradient orientation (0065,xx37).
  if (!inst.b_value) {
    for (Uint8 low : {Uint8{0x0A}, Uint8{0x09}}) {
      const std::vector<double> b = read_numbers(find_private_any_creator(ds, 0x0065, low), 'd');
      if (!b.empty()) {
        inst.b_value = b[0];
        inst.b_value_source = low == 0x0A ? "UIH/Canon (0065,xx0A)" : "UIH/Canon (0065,xx09)";
        break;
      }
    }
  }
  if (!inst.diffusion_direction) {
    inst.diffusion_direction = three(read_numbers(find_private_any_creator(ds, 0x0065, 0x37), 'd'));
  }
  if (inst.b_value && (!std::isfinite(*inst.b_value) || *inst.b_value < 0 || *inst.b_value > 1e5)) {
    inst.b_value.reset();  // not a b-value (garbage or another vendor's element)
    inst.b_value_source.clear();
  }
  return csa;
}

/// Unpacks a Siemens MOSAIC into one entry per tile (see read_dicom_header()). Returns false
/// (nothing appended) when the mosaic cannot be unpacked; sort_slices() then refuses it.
bool expand_mosaic(DcmItem& ds, const DicomInstance& inst, const CsaHeader& csa, std::vector<DicomInstance>& out) {
  const int n = inst.mosaic_images;
  if (n < 1 || n > kMaxSlices || !inst.image_position_patient || !inst.image_orientation_patient ||
      !inst.pixel_spacing_mm || inst.rows <= 0 || inst.columns <= 0) {
    return false;
  }
  const int per_row = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n)) - 1e-9));
  if (per_row < 1 || inst.rows % per_row != 0 || inst.columns % per_row != 0) return false;
  const int tile_rows = inst.rows / per_row, tile_cols = inst.columns / per_row;
  const auto& iop = *inst.image_orientation_patient;
  const Eigen::Vector3d row_dir(iop[0], iop[1], iop[2]), col_dir(iop[3], iop[4], iop[5]);
  Eigen::Vector3d normal = row_dir.cross(col_dir);
  if (auto csa_normal = three(csa.numbers("SliceNormalVector"))) {
    const Eigen::Vector3d v((*csa_normal)[0], (*csa_normal)[1], (*csa_normal)[2]);
    if (v.norm() > 0.5) normal = v;
  }
  if (normal.norm() < 0.5) return false;
  normal.normalize();
  double spacing = get_double(ds, DCM_SpacingBetweenSlices, 0.0);
  if (!(spacing > 0)) spacing = get_double(ds, DCM_SliceThickness, 0.0);
  if (!(spacing > 0)) spacing = inst.slice_thickness_mm;
  if (!(spacing > 0)) return false;
  const auto& ps = *inst.pixel_spacing_mm;
  const auto& ipp = *inst.image_position_patient;
  const Eigen::Vector3d first = Eigen::Vector3d(ipp[0], ipp[1], ipp[2]) +
                                row_dir * ps[1] * (inst.columns - tile_cols) / 2.0 +
                                col_dir * ps[0] * (inst.rows - tile_rows) / 2.0;
  for (int k = 0; k < n; ++k) {
    DicomInstance tile = inst;
    tile.mosaic_index = k;
    tile.mosaic_tiles_per_row = per_row;
    tile.mosaic_rows = inst.rows;
    tile.mosaic_columns = inst.columns;
    tile.rows = tile_rows;
    tile.columns = tile_cols;
    const Eigen::Vector3d p = first + normal * spacing * static_cast<double>(k);
    tile.image_position_patient = std::array<double, 3>{p[0], p[1], p[2]};
    out.push_back(std::move(tile));
  }
  return true;
}

bool is_mosaic(const DicomInstance& inst) {
  return std::find(inst.image_type.begin(), inst.image_type.end(), "MOSAIC") != inst.image_type.end();
}

std::string format_position(const std::array<double, 3>& p) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(2);
  s << "(" << p[0] << ", " << p[1] << ", " << p[2] << ")";
  return s.str();
}

std::string instance_label(const DicomInstance& inst) {
  std::ostringstream s;
  if (inst.has_instance_number) s << "instance " << inst.instance_number << " ";
  s << "'" << fs::path(inst.path).filename().string() << "'";
  if (inst.frame_index >= 0) s << " frame " << inst.frame_index + 1;
  if (inst.mosaic_index >= 0) s << " mosaic tile " << inst.mosaic_index + 1;
  return s.str();
}

void register_codecs_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    DcmRLEDecoderRegistration::registerCodecs();
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
  });
}

bool is_jpeg2000(E_TransferSyntax xfer) {
  return xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000 || xfer == EXS_JPEG2000MulticomponentLosslessOnly ||
         xfer == EXS_JPEG2000Multicomponent;
}

/// Decodes, with DCMTK's per-frame decoder (DcmPixelData::getUncompressedFrame), only the frames
/// of a multi-frame encapsulated dataset that `frames_used` marks, the others left 0: a volume
/// of an Enhanced MR file uses a few of its frames, and decoding all of them once per volume made
/// loading grow with volumes x frames. Fails (the caller then decodes every frame) for colour or
/// where DCMTK cannot find a frame's fragments (several per frame and no offset table).
base::Status decode_used_frames(DcmDataset& ds, const std::vector<bool>& frames_used, int frames,
                                const std::string& where) {
  Uint16 rows = 0, cols = 0, bits_allocated = 0, samples = 1;
  ds.findAndGetUint16(DCM_Rows, rows);
  ds.findAndGetUint16(DCM_Columns, cols);
  ds.findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  ds.findAndGetUint16(DCM_SamplesPerPixel, samples);
  DcmElement* element = nullptr;
  ds.findAndGetElement(DCM_PixelData, element);
  auto* pixel_data = dynamic_cast<DcmPixelData*>(element);
  if (pixel_data == nullptr || samples != 1 || (bits_allocated != 8 && bits_allocated != 16) || rows == 0 ||
      cols == 0) {
    return base::unimplemented(where + ": not a greyscale 8- or 16-bit image");
  }
  const size_t plane = size_t{rows} * cols;
  std::vector<Uint16> words(bits_allocated == 16 ? plane * frames : 0);
  std::vector<Uint8> bytes(bits_allocated == 8 ? plane * frames : 0);
  for (int f = 0; f < frames; ++f) {
    if (static_cast<size_t>(f) >= frames_used.size() || !frames_used[f]) continue;
    Uint32 start_fragment = 0;  // 0: DCMTK finds it (offset table, or one fragment per frame)
    OFString colour_model;
    void* frame = bits_allocated == 16 ? static_cast<void*>(words.data() + f * plane)
                                       : static_cast<void*>(bytes.data() + f * plane);
    const OFCondition cond = pixel_data->getUncompressedFrame(
        &ds, static_cast<Uint32>(f), start_fragment, frame, static_cast<Uint32>(plane * bits_allocated / 8),
        colour_model);
    if (cond.bad()) return base::invalid_argument(where + ": frame " + std::to_string(f + 1) + ": " + cond.text());
  }
  return put_native_pixel_data(ds, bits_allocated, words, bytes, where);
}

/// Decompresses an encapsulated dataset in place to explicit VR little endian with DCMTK's
/// decoders (RLE, JPEG baseline/extended/lossless, JPEG-LS), and JPEG 2000 with OpenJPEG
/// (image/jpeg2000.h): Debian's DCMTK 3.6.7 ships no JPEG 2000 decoder. Of a multi-frame file
/// only the frames marked in `frames_used` are decoded where the codec allows it.
base::Status decode_to_native(DcmDataset& ds, const std::string& where, const std::vector<bool>& frames_used) {
  const E_TransferSyntax xfer = ds.getOriginalXfer();
  if (!DcmXfer(xfer).isEncapsulated()) return base::ok_status();
  const std::string name = DcmXfer(xfer).getXferName();
  if (is_jpeg2000(xfer)) return decode_jpeg2000_pixel_data(ds, where, &frames_used);
  register_codecs_once();
  Sint32 frames = 1;
  if (ds.findAndGetSint32(DCM_NumberOfFrames, frames).bad()) frames = 1;
  const auto used = std::count(frames_used.begin(), frames_used.end(), true);
  // RLE decodes faster whole than through DCMTK's per-frame call (Canon file of 520 frames, 13
  // volumes: 493 ms whole against 648 ms per frame; JPEG-LS 1241 against 715 ms).
  if (frames > 1 && used < frames && xfer != EXS_RLELossless &&
      decode_used_frames(ds, frames_used, frames, where).ok()) {
    return base::ok_status();
  }
  const OFCondition cond = ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
  if (cond.bad() || !ds.canWriteXfer(EXS_LittleEndianExplicit)) {
    return base::unimplemented(where + ": cannot decode transfer syntax " + name + " (" + DcmXfer(xfer).getXferID() +
                               "): " + (cond.bad() ? cond.text() : "no decoder registered for it"));
  }
  return base::ok_status();
}

/// Item 0 of sequence `key` inside `parent`, or nullptr.
DcmItem* first_item(DcmItem* parent, const DcmTagKey& key) {
  if (parent == nullptr) return nullptr;
  DcmItem* item = nullptr;
  if (parent->findAndGetSequenceItem(key, item, 0).good()) return item;
  return nullptr;
}

/// Fills the per-frame fields of `inst` from one frame's functional groups: the macro `seq`
/// is looked up in the per-frame item first, then in the shared item (PS3.3 C.7.6.16).
/// Returns false when the frame has no position or orientation.
bool apply_functional_groups(DcmItem* shared, DcmItem* frame, DicomInstance& inst) {
  const auto macros = [&](const DcmTagKey& seq) {
    std::vector<DcmItem*> out;
    if (DcmItem* m = first_item(frame, seq)) out.push_back(m);
    if (DcmItem* m = first_item(shared, seq)) out.push_back(m);
    return out;
  };
  bool has_position = false, has_orientation = false;
  for (DcmItem* m : macros(DCM_PlanePositionSequence)) {
    if (auto v = get_doubles<3>(*m, DCM_ImagePositionPatient)) {
      inst.image_position_patient = v;
      has_position = true;
      break;
    }
  }
  for (DcmItem* m : macros(DCM_PlaneOrientationSequence)) {
    if (auto v = get_doubles<6>(*m, DCM_ImageOrientationPatient)) {
      inst.image_orientation_patient = v;
      has_orientation = true;
      break;
    }
  }
  for (DcmItem* m : macros(DCM_PixelMeasuresSequence)) {
    if (auto v = get_doubles<2>(*m, DCM_PixelSpacing)) {
      inst.pixel_spacing_mm = v;
      inst.slice_thickness_mm = get_double(*m, DCM_SliceThickness, inst.slice_thickness_mm);
      break;
    }
  }
  for (DcmItem* m : macros(DCM_PixelValueTransformationSequence)) {
    inst.rescale_slope = get_double(*m, DCM_RescaleSlope, inst.rescale_slope);
    inst.rescale_intercept = get_double(*m, DCM_RescaleIntercept, inst.rescale_intercept);
    break;
  }
  // The frame's own MR Diffusion macro replaces what the top level said (PS3.3 C.8.13.5.9).
  DcmItem* diffusion = nullptr;
  for (DcmItem* m : macros(DCM_MRDiffusionSequence)) {
    diffusion = m;
    break;
  }
  if (diffusion != nullptr) {
    inst.b_value.reset();
    inst.b_value_source.clear();
    inst.diffusion_direction.reset();
    inst.diffusion_directionality.clear();
    read_diffusion_macro(*diffusion, inst);
  }
  for (DcmItem* m : macros(DCM_MRImageFrameTypeSequence)) {
    const std::vector<std::string> type = split_backslash(get_string(*m, DCM_FrameType));
    if (type.empty()) continue;
    inst.image_type.clear();
    for (const std::string& v : type) inst.image_type.push_back(upper(v));
    break;
  }
  return has_position && has_orientation;
}

/// Appends `inst` to `out`, or, for a multi-frame instance whose every frame has a position
/// and an orientation in its functional groups, one entry per frame. A multi-frame instance
/// without them stays one entry (frame_index -1), which sort_slices() refuses.
void expand_frames(DcmDataset& ds, const DicomInstance& inst, std::vector<DicomInstance>& out) {
  DcmSequenceOfItems* per_frame = nullptr;
  const bool multi = inst.number_of_frames > 1 && inst.number_of_frames <= kMaxFrames &&
                     ds.findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame).good() &&
                     per_frame != nullptr && per_frame->card() == static_cast<unsigned long>(inst.number_of_frames);
  if (!multi) {
    out.push_back(inst);
    return;
  }
  DcmItem* shared = first_item(&ds, DCM_SharedFunctionalGroupsSequence);
  std::vector<DicomInstance> frames;
  frames.reserve(static_cast<size_t>(inst.number_of_frames));
  for (int f = 0; f < inst.number_of_frames; ++f) {
    DicomInstance frame = inst;
    frame.frame_index = f;
    if (!apply_functional_groups(shared, per_frame->getItem(static_cast<unsigned long>(f)), frame)) {
      out.push_back(inst);  // not placeable frame by frame
      return;
    }
    frames.push_back(std::move(frame));
  }
  for (DicomInstance& frame : frames) out.push_back(std::move(frame));
}

/// Header fields of one dataset.
DicomSeries read_header_fields(DcmFileFormat& ff, const std::string& path) {
  DcmDataset& ds = *ff.getDataset();
  DicomSeries s;
  s.series_instance_uid = get_string(ds, DCM_SeriesInstanceUID);
  s.series_number = get_int(ds, DCM_SeriesNumber, 0);
  s.series_description = get_string(ds, DCM_SeriesDescription);
  s.modality = get_string(ds, DCM_Modality);
  s.manufacturer = get_string(ds, DCM_Manufacturer);
  s.manufacturer_model_name = get_string(ds, DCM_ManufacturerModelName);
  s.frame_of_reference_uid = get_string(ds, DCM_FrameOfReferenceUID);
  s.protocol_name = get_string(ds, DCM_ProtocolName);
  s.body_part_examined = get_string(ds, DCM_BodyPartExamined);
  s.series_date = get_string(ds, DCM_SeriesDate);
  s.series_time = get_string(ds, DCM_SeriesTime);
  DicomStudyInfo& st = s.study;
  st.patient_name = get_string(ds, DCM_PatientName);
  st.patient_id = get_string(ds, DCM_PatientID);
  st.patient_birth_date = get_string(ds, DCM_PatientBirthDate);
  st.patient_sex = get_string(ds, DCM_PatientSex);
  st.study_instance_uid = get_string(ds, DCM_StudyInstanceUID);
  st.study_date = get_string(ds, DCM_StudyDate);
  st.study_time = get_string(ds, DCM_StudyTime);
  st.study_id = get_string(ds, DCM_StudyID);
  st.accession_number = get_string(ds, DCM_AccessionNumber);
  st.referring_physician_name = get_string(ds, DCM_ReferringPhysicianName);
  st.study_description = get_string(ds, DCM_StudyDescription);
  st.specific_character_set = get_string(ds, DCM_SpecificCharacterSet);

  DicomInstance inst;
  inst.path = path;
  inst.sop_class_uid = get_string(ds, DCM_SOPClassUID);
  if (inst.sop_class_uid.empty()) inst.sop_class_uid = get_string(*ff.getMetaInfo(), DCM_MediaStorageSOPClassUID);
  inst.sop_instance_uid = get_string(ds, DCM_SOPInstanceUID);
  if (inst.sop_instance_uid.empty()) {
    inst.sop_instance_uid = get_string(*ff.getMetaInfo(), DCM_MediaStorageSOPInstanceUID);
  }
  inst.transfer_syntax_uid = get_string(*ff.getMetaInfo(), DCM_TransferSyntaxUID);
  if (inst.transfer_syntax_uid.empty()) inst.transfer_syntax_uid = DcmXfer(ds.getOriginalXfer()).getXferID();
  const std::string number = get_string(ds, DCM_InstanceNumber);
  inst.has_instance_number = !number.empty();
  inst.instance_number = get_int(ds, DCM_InstanceNumber, 0);
  inst.image_position_patient = get_doubles<3>(ds, DCM_ImagePositionPatient);
  inst.image_orientation_patient = get_doubles<6>(ds, DCM_ImageOrientationPatient);
  inst.pixel_spacing_mm = get_doubles<2>(ds, DCM_PixelSpacing);
  inst.slice_thickness_mm = get_double(ds, DCM_SliceThickness, 0.0);
  // An instance with Rows/Columns but no pixel data element (Philips' private series object
  // copies the images' Rows/Columns) holds no image: it counts as one without a pixel module.
  const bool has_pixels =
      ds.tagExists(DCM_PixelData) || ds.tagExists(DCM_FloatPixelData) || ds.tagExists(DCM_DoubleFloatPixelData);
  inst.rows = has_pixels ? get_us(ds, DCM_Rows, 0) : 0;
  inst.columns = has_pixels ? get_us(ds, DCM_Columns, 0) : 0;
  inst.number_of_frames = std::max(1, get_int(ds, DCM_NumberOfFrames, 1));
  inst.samples_per_pixel = get_us(ds, DCM_SamplesPerPixel, 1);
  inst.bits_allocated = get_us(ds, DCM_BitsAllocated, 0);
  inst.rescale_slope = get_double(ds, DCM_RescaleSlope, 1.0);
  inst.rescale_intercept = get_double(ds, DCM_RescaleIntercept, 0.0);
  for (const std::string& v : split_backslash(get_string(ds, DCM_ImageType))) inst.image_type.push_back(upper(v));
  inst.series_description = s.series_description;
  const CsaHeader csa = read_diffusion(ds, inst);
  inst.echo_time_ms = get_double(ds, DCM_EchoTime, 0.0);
  inst.acquisition_number = get_int(ds, DCM_AcquisitionNumber, 0);
  if (is_mosaic(inst) && inst.number_of_frames == 1 && expand_mosaic(ds, inst, csa, s.instances)) return s;
  expand_frames(ds, inst, s.instances);
  return s;
}

base::Status check_supported(const DicomSeries& series) {
  for (const DicomInstance& inst : series.instances) {
    if (inst.frame_index < 0 && (inst.number_of_frames > 1 || inst.sop_class_uid == kEnhancedMrStorage ||
                                 inst.sop_class_uid == kEnhancedMrColorStorage)) {
      return base::unimplemented("series " + describe_series(series) + ": " + instance_label(inst) +
                                 " is a multi-frame instance (" + std::to_string(inst.number_of_frames) +
                                 " frames) without a position and orientation for every frame (Plane "
                                 "Position/Orientation functional groups, PS3.3 C.7.6.16), so its frames "
                                 "cannot be placed in space; configure the scanner to send Enhanced MR "
                                 "with functional groups or single-frame (classic) images");
    }
    if (inst.mosaic_index < 0 && is_mosaic(inst)) {
      return base::unimplemented("series " + describe_series(series) + ": " + instance_label(inst) +
                                 " is a Siemens mosaic that cannot be unpacked: it needs NumberOfImagesInMosaic "
                                 "(CSA header or (0019,xx0A)), a tile grid dividing Rows and Columns, "
                                 "ImagePositionPatient/ImageOrientationPatient/PixelSpacing and a slice "
                                 "spacing; send the series as single-slice images (e.g. the TRACEW/ADC series)");
    }
  }
  return base::ok_status();
}

/// Cheap test before DCMTK parses a file (which logs errors for every non-DICOM file): a
/// PS3.10 file has "DICM" at offset 128; a bare dataset (no preamble) starts with a tag of
/// group 0002 or 0008 in little endian.
bool looks_like_dicom(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  unsigned char head[132] = {};
  const size_t n = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  if (n >= 132 && std::memcmp(head + 128, "DICM", 4) == 0) return true;
  if (n < 8) return false;
  const unsigned group = head[0] | (head[1] << 8);
  return group == 0x0002 || group == 0x0008;
}

/// Converts frame `inst.frame_index` (0 for single-frame) of a decoded dataset to float with
/// the instance's rescale (PS3.3 C.11.1.1.2); BitsStored/HighBit/PixelRepresentation per
/// PS3.5 8.1.1 and PS3.3 C.7.6.3.1.
base::Status read_frame(DcmDataset& ds, const DicomInstance& inst, size_t rows, size_t cols, float* out,
                        const std::string& where) {
  const size_t plane = rows * cols;
  const int samples = get_us(ds, DCM_SamplesPerPixel, 1);
  const int bits_allocated = get_us(ds, DCM_BitsAllocated, 0);
  const int bits_stored = get_us(ds, DCM_BitsStored, bits_allocated);
  const int high_bit = get_us(ds, DCM_HighBit, bits_stored - 1);
  const int pixel_rep = get_us(ds, DCM_PixelRepresentation, 0);
  if (samples != 1) {
    return base::unimplemented(where + ": colour images (SamplesPerPixel " + std::to_string(samples) +
                               ") are not supported");
  }
  if (bits_allocated != 8 && bits_allocated != 16) {
    return base::unimplemented(where + ": BitsAllocated " + std::to_string(bits_allocated) +
                               " is not supported (8 or 16)");
  }
  if (bits_stored < 1 || bits_stored > bits_allocated || high_bit < bits_stored - 1 || high_bit >= bits_allocated) {
    return base::invalid_argument(where + ": inconsistent BitsStored/HighBit");
  }
  const bool tile = inst.mosaic_index >= 0;
  const size_t stored_rows = tile ? static_cast<size_t>(inst.mosaic_rows) : rows;
  const size_t stored_cols = tile ? static_cast<size_t>(inst.mosaic_columns) : cols;
  if (get_us(ds, DCM_Rows, 0) != static_cast<int>(stored_rows) ||
      get_us(ds, DCM_Columns, 0) != static_cast<int>(stored_cols)) {
    return base::invalid_argument(where + ": the file changed since it was scanned (Rows/Columns differ)");
  }
  const size_t frame = inst.frame_index < 0 ? 0 : static_cast<size_t>(inst.frame_index);
  const size_t first = frame * stored_rows * stored_cols;
  // Pixel p of this slice: its offset in the stored frame (a mosaic tile is a sub-rectangle).
  const size_t tile_row = tile ? static_cast<size_t>(inst.mosaic_index / inst.mosaic_tiles_per_row) : 0;
  const size_t tile_col = tile ? static_cast<size_t>(inst.mosaic_index % inst.mosaic_tiles_per_row) : 0;
  if (tile && ((tile_row + 1) * rows > stored_rows || (tile_col + 1) * cols > stored_cols)) {
    return base::invalid_argument(where + ": mosaic tile " + std::to_string(inst.mosaic_index) + " lies outside the image");
  }
  const auto offset = [&](size_t p) {
    if (!tile) return p;
    const size_t y = p / cols, x = p % cols;
    return (tile_row * rows + y) * stored_cols + tile_col * cols + x;
  };
  const size_t needed = first + stored_rows * stored_cols;
  const int shift = high_bit + 1 - bits_stored;
  const uint32_t mask = (bits_stored >= 32) ? 0xFFFFFFFFu : ((1u << bits_stored) - 1u);
  const uint32_t sign_bit = 1u << (bits_stored - 1);
  const double slope = inst.rescale_slope, intercept = inst.rescale_intercept;
  const auto convert = [&](uint32_t raw) {
    const uint32_t v = (raw >> shift) & mask;
    double value;
    if (pixel_rep == 1 && (v & sign_bit)) {
      value = static_cast<double>(static_cast<int64_t>(v) - (int64_t{1} << bits_stored));
    } else {
      value = static_cast<double>(v);
    }
    return static_cast<float>(value * slope + intercept);
  };
  unsigned long count = 0;
  if (bits_allocated == 16) {
    const Uint16* pixels = nullptr;
    const OFCondition cond = ds.findAndGetUint16Array(DCM_PixelData, pixels, &count);
    if (cond.bad() || pixels == nullptr || count < needed) {
      return base::invalid_argument(where + ": pixel data missing or truncated (" + std::to_string(count) +
                                    " values, frame " + std::to_string(frame + 1) + " needs " +
                                    std::to_string(needed) + ")");
    }
    for (size_t p = 0; p < plane; ++p) out[p] = convert(pixels[first + offset(p)]);
  } else {
    const Uint8* pixels = nullptr;
    const OFCondition cond = ds.findAndGetUint8Array(DCM_PixelData, pixels, &count);
    if (cond.bad() || pixels == nullptr || count < needed) {
      return base::invalid_argument(where + ": pixel data missing or truncated (" + std::to_string(count) +
                                    " bytes, frame " + std::to_string(frame + 1) + " needs " +
                                    std::to_string(needed) + ")");
    }
    for (size_t p = 0; p < plane; ++p) out[p] = convert(pixels[first + offset(p)]);
  }
  return base::ok_status();
}

}  // namespace

std::string describe_series(const DicomSeries& series) {
  std::ostringstream s;
  s << "#" << series.series_number << " '" << series.series_description << "' " << series.modality << ", "
    << series.instances.size() << (series.instances.size() == 1 ? " instance" : " instances");
  if (!series.instances.empty() && !series.instances.front().image_type.empty()) {
    s << ", ImageType ";
    const auto& t = series.instances.front().image_type;
    for (size_t i = 0; i < t.size(); ++i) s << (i ? "\\" : "") << t[i];
  }
  return s.str();
}

base::Result<DicomSeries> read_dicom_header(const std::string& path) {
  try {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return base::not_found("no such file: " + path);
    if (!looks_like_dicom(path)) {
      return base::invalid_argument("not a DICOM file (no DICM preamble, no dataset start): " + path);
    }
    DcmFileFormat ff;
    const OFCondition cond =
        ff.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
    if (cond.bad()) return base::invalid_argument("not a readable DICOM file: " + path + " (" + cond.text() + ")");
    return read_dicom_header(ff, path);
  } catch (const std::exception& e) {
    return base::invalid_argument("cannot read DICOM file " + path + ": " + e.what());
  } catch (...) {
    return base::invalid_argument("cannot read DICOM file " + path + ": unknown exception");
  }
}

base::Result<DicomSeries> read_dicom_header(DcmFileFormat& file, const std::string& label) {
  try {
    DicomSeries s = read_header_fields(file, label);
    if (s.series_instance_uid.empty() || s.instances.empty() || s.instances.front().sop_instance_uid.empty()) {
      return base::invalid_argument("not a DICOM instance (no SeriesInstanceUID or SOPInstanceUID): " + label);
    }
    return s;
  } catch (const std::exception& e) {
    return base::invalid_argument("cannot read DICOM header of " + label + ": " + e.what());
  } catch (...) {
    return base::invalid_argument("cannot read DICOM header of " + label + ": unknown exception");
  }
}

base::Result<DicomScan> scan_dicom_folder(const std::string& dir) {
  std::vector<std::string> files;
  try {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return base::not_found("no such folder: " + dir);
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code ec2;
      if (it->is_regular_file(ec2)) files.push_back(it->path().string());
    }
    if (ec) return base::unavailable("cannot list folder " + dir + ": " + ec.message());
  } catch (const std::exception& e) {
    return base::unavailable("cannot list folder " + dir + ": " + e.what());
  }
  std::sort(files.begin(), files.end());

  DicomScan scan;
  std::map<std::string, size_t> series_index;
  std::map<std::string, bool> seen_instances;
  for (const std::string& file : files) {
    ++scan.files_seen;
    auto header = read_dicom_header(file);
    if (!header.ok()) {
      ++scan.files_skipped;
      SB_LOG(kDebug) << "skipping " << header.status().message();
      continue;
    }
    DicomSeries& one = header.value();
    DicomInstance& inst = one.instances.front();
    if (seen_instances.count(inst.sop_instance_uid)) {
      ++scan.duplicates_skipped;
      SB_LOG(kDebug) << "skipping " << file << ": SOPInstanceUID " << inst.sop_instance_uid << " seen before";
      continue;
    }
    seen_instances[inst.sop_instance_uid] = true;
    auto found = series_index.find(one.series_instance_uid);
    if (found == series_index.end()) {
      series_index[one.series_instance_uid] = scan.series.size();
      scan.series.push_back(std::move(one));
    } else {
      auto& instances = scan.series[found->second].instances;
      for (DicomInstance& frame : one.instances) instances.push_back(std::move(frame));
    }
  }
  // A series may mix images with instances that hold none (Philips exports a private
  // "MR Series Data Storage" object, 1.3.46.670589.11.0.0.12.2, with the series' UID): they have
  // no place in the slice stack, so they are set aside. A series of non-images stays whole, for
  // the classifier to list as "not an image series".
  for (DicomSeries& s : scan.series) {
    const auto is_image = [](const DicomInstance& i) { return i.holds_image(); };
    if (std::none_of(s.instances.begin(), s.instances.end(), is_image)) continue;
    const auto keep = std::stable_partition(s.instances.begin(), s.instances.end(), is_image);
    for (auto it = keep; it != s.instances.end(); ++it) {
      SB_LOG(kInfo) << "series " << s.series_number << ": " << it->path << " (SOP class " << it->sop_class_uid
                    << ") holds no image; set aside";
    }
    scan.non_images_set_aside += static_cast<int>(s.instances.end() - keep);
    s.instances.erase(keep, s.instances.end());
  }
  if (scan.series.empty()) {
    return base::not_found("no DICOM instance found under " + dir + " (" + std::to_string(scan.files_seen) +
                           " files looked at)");
  }
  std::sort(scan.series.begin(), scan.series.end(), [](const DicomSeries& a, const DicomSeries& b) {
    if (a.study.study_instance_uid != b.study.study_instance_uid) {
      return a.study.study_instance_uid < b.study.study_instance_uid;
    }
    if (a.series_number != b.series_number) return a.series_number < b.series_number;
    return a.series_instance_uid < b.series_instance_uid;
  });
  return scan;
}

base::Result<SliceStack> sort_slices(const DicomSeries& series) {
  const std::string name = "series " + describe_series(series);
  if (series.instances.empty()) return base::invalid_argument(name + " has no instances");
  SB_RETURN_IF_ERROR(check_supported(series));

  const DicomInstance& first = series.instances.front();
  for (const DicomInstance& inst : series.instances) {
    if (inst.rows <= 0 || inst.columns <= 0) {
      return base::invalid_argument(name + ": " + instance_label(inst) + " is not an image (no Rows/Columns)");
    }
    if (inst.rows > kMaxInPlaneDim || inst.columns > kMaxInPlaneDim) {
      return base::resource_exhausted(name + ": image size " + std::to_string(inst.columns) + " x " +
                                      std::to_string(inst.rows) + " exceeds the supported " +
                                      std::to_string(kMaxInPlaneDim) + " x " + std::to_string(kMaxInPlaneDim));
    }
    if (!inst.image_position_patient || !inst.image_orientation_patient || !inst.pixel_spacing_mm) {
      return base::invalid_argument(name + ": " + instance_label(inst) +
                                    " lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing; "
                                    "the slices cannot be placed in space");
    }
    if (inst.rows != first.rows || inst.columns != first.columns) {
      return base::invalid_argument(name + ": image sizes differ (" + std::to_string(first.columns) + " x " +
                                    std::to_string(first.rows) + " in " + instance_label(first) + ", " +
                                    std::to_string(inst.columns) + " x " + std::to_string(inst.rows) + " in " +
                                    instance_label(inst) + ")");
    }
    for (int a = 0; a < 6; ++a) {
      if (std::abs((*inst.image_orientation_patient)[a] - (*first.image_orientation_patient)[a]) > 1e-4) {
        return base::invalid_argument(name + ": slice orientations differ between " + instance_label(first) +
                                      " and " + instance_label(inst) +
                                      " (mixed stacks, e.g. a localizer or several orientations in one "
                                      "series); send a series with a single orientation");
      }
    }
    for (int a = 0; a < 2; ++a) {
      if (std::abs((*inst.pixel_spacing_mm)[a] - (*first.pixel_spacing_mm)[a]) > 1e-4) {
        return base::invalid_argument(name + ": PixelSpacing differs between " + instance_label(first) + " and " +
                                      instance_label(inst));
      }
    }
  }
  if (series.instances.size() < 2) {
    return base::invalid_argument(name + " has a single slice; a 3D volume needs at least 2");
  }
  if (series.instances.size() > static_cast<size_t>(kMaxSlices)) {
    return base::resource_exhausted(name + " has " + std::to_string(series.instances.size()) +
                                    " slices; at most " + std::to_string(kMaxSlices) + " are supported");
  }
  const int64_t voxels = int64_t{first.rows} * first.columns * static_cast<int64_t>(series.instances.size());
  if (voxels > kMaxVoxels) {
    return base::resource_exhausted(name + " has " + std::to_string(voxels) + " voxels; at most " +
                                    std::to_string(kMaxVoxels) + " are supported");
  }

  const auto& iop = *first.image_orientation_patient;
  const Eigen::Vector3d row_dir(iop[0], iop[1], iop[2]);
  const Eigen::Vector3d col_dir(iop[3], iop[4], iop[5]);
  if (std::abs(row_dir.norm() - 1.0) > 1e-3 || std::abs(col_dir.norm() - 1.0) > 1e-3 ||
      std::abs(row_dir.dot(col_dir)) > 1e-3) {
    return base::invalid_argument(name + ": ImageOrientationPatient is not two orthogonal unit vectors");
  }
  const auto& ps = *first.pixel_spacing_mm;
  if (!(ps[0] > 0) || !(ps[1] > 0)) return base::invalid_argument(name + ": PixelSpacing must be positive");
  const Eigen::Vector3d normal = row_dir.cross(col_dir).normalized();

  SliceStack stack;
  stack.slices = series.instances;
  const auto pos = [](const DicomInstance& inst) {
    const auto& p = *inst.image_position_patient;
    return Eigen::Vector3d(p[0], p[1], p[2]);
  };
  std::stable_sort(stack.slices.begin(), stack.slices.end(), [&](const DicomInstance& a, const DicomInstance& b) {
    const double da = pos(a).dot(normal), db = pos(b).dot(normal);
    if (da != db) return da < db;
    return a.instance_number < b.instance_number;
  });
  const size_t n = stack.slices.size();
  std::vector<double> steps(n - 1);
  for (size_t k = 0; k + 1 < n; ++k) {
    steps[k] = (pos(stack.slices[k + 1]) - pos(stack.slices[k])).dot(normal);
    if (steps[k] < 1e-3) {
      const bool several_b = stack.slices[k].b_value && stack.slices[k + 1].b_value &&
                             *stack.slices[k].b_value != *stack.slices[k + 1].b_value;
      return base::invalid_argument(
          name + ": " + instance_label(stack.slices[k]) + " and " + instance_label(stack.slices[k + 1]) +
          " are at the same position " + format_position(*stack.slices[k].image_position_patient) +
          (several_b ? " with different b-values: the series mixes b-values; select one b-value"
                     : ": the series holds several images per position (repeats, echoes, b-values or "
                       "time points) or the same image twice with different UIDs"));
    }
  }
  std::vector<double> sorted_steps = steps;
  std::nth_element(sorted_steps.begin(), sorted_steps.begin() + sorted_steps.size() / 2, sorted_steps.end());
  const double median = sorted_steps[sorted_steps.size() / 2];
  std::ostringstream uneven;
  int uneven_count = 0;
  for (size_t k = 0; k + 1 < n; ++k) {
    if (std::abs(steps[k] - median) > 0.1 * median) {
      if (uneven_count < 5) {
        uneven << (uneven_count ? "; " : "") << "between sorted slices " << k << " (" << instance_label(stack.slices[k])
               << ") and " << k + 1 << " (" << instance_label(stack.slices[k + 1]) << ") the step is "
               << steps[k] << " mm";
      }
      ++uneven_count;
    }
  }
  if (uneven_count > 0) {
    return base::invalid_argument(name + ": uneven slice spacing (median step " + std::to_string(median) +
                                  " mm, " + std::to_string(uneven_count) + " step(s) off by more than 10 %: " +
                                  uneven.str() + "); slices are probably missing: re-send the complete series");
  }

  const Eigen::Vector3d p0 = pos(stack.slices.front());
  const Eigen::Vector3d step = (pos(stack.slices.back()) - p0) / static_cast<double>(n - 1);
  const double tolerance_mm = 0.5 * std::min(ps[0], ps[1]);
  for (size_t k = 0; k < n; ++k) {
    const Eigen::Vector3d expected = p0 + step * static_cast<double>(k);
    const double off = (pos(stack.slices[k]) - expected).norm();
    if (off > std::max(tolerance_mm, 0.1 * median)) {
      return base::invalid_argument(name + ": " + instance_label(stack.slices[k]) + " at " +
                                    format_position(*stack.slices[k].image_position_patient) + " is " +
                                    std::to_string(off) + " mm off the line through the other slices; the "
                                    "series does not form one regular stack");
    }
  }

  stack.grid.dims = {first.columns, first.rows, static_cast<int64_t>(n)};
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  a.block<3, 1>(0, 0) = row_dir * ps[1];
  a.block<3, 1>(0, 1) = col_dir * ps[0];
  a.block<3, 1>(0, 2) = step;
  a.block<3, 1>(0, 3) = p0;
  stack.grid.affine = a;
  return stack;
}

base::Result<VolumeF> assemble_volume(const DicomSeries& series) {
  SB_ASSIGN_OR_RETURN(SliceStack stack, sort_slices(series));
  return assemble_volume(stack);
}

base::Result<VolumeF> assemble_volume(const SliceStack& stack) {
  const Grid& grid = stack.grid;
  if (grid.voxel_count() <= 0 || stack.slices.size() != static_cast<size_t>(grid.dims[2])) {
    return base::invalid_argument("assemble_volume: empty or inconsistent slice stack");
  }
  if (grid.dims[0] > kMaxInPlaneDim || grid.dims[1] > kMaxInPlaneDim || grid.voxel_count() > kMaxVoxels) {
    return base::resource_exhausted("assemble_volume: " + std::to_string(grid.dims[0]) + " x " +
                                    std::to_string(grid.dims[1]) + " x " + std::to_string(grid.dims[2]) +
                                    " voxels exceed the supported size");
  }
  VolumeF volume(grid, 0.0f);
  const size_t cols = static_cast<size_t>(grid.dims[0]), rows = static_cast<size_t>(grid.dims[1]);
  const size_t plane = cols * rows;
  // The file last read stays loaded (and decoded): the frames of an Enhanced MR instance all
  // come from one file. Which frames of each file this stack uses: JPEG 2000 decodes only those
  // (a volume of a 520-frame diffusion file needs 40 of them).
  std::unique_ptr<DcmFileFormat> loaded;
  std::string loaded_path;
  std::map<std::string, std::vector<bool>> frames_used;
  for (const DicomInstance& inst : stack.slices) {
    std::vector<bool>& used = frames_used[inst.path];
    const size_t frame = inst.frame_index < 0 ? 0 : static_cast<size_t>(inst.frame_index);
    if (used.size() <= frame) used.resize(frame + 1, false);
    used[frame] = true;
  }
  for (size_t k = 0; k < stack.slices.size(); ++k) {
    const DicomInstance& inst = stack.slices[k];
    const std::string where = "slice " + std::to_string(k) + " (" + instance_label(inst) + ")";
    try {
      if (!loaded || loaded_path != inst.path) {
        loaded.reset();
        // Decoding expands every frame of the file: bound it before DCMTK allocates.
        const int64_t file_voxels = int64_t{std::max(1, inst.number_of_frames)} * static_cast<int64_t>(plane);
        if (file_voxels > kMaxVoxels) {
          return base::resource_exhausted(where + ": the file holds " + std::to_string(inst.number_of_frames) +
                                          " frames of " + std::to_string(cols) + " x " + std::to_string(rows) +
                                          ", more than the " + std::to_string(kMaxVoxels) +
                                          " voxels one file may decode to");
        }
        auto ff = std::make_unique<DcmFileFormat>();
        const OFCondition cond = ff->loadFile(inst.path.c_str());
        if (cond.bad()) return base::invalid_argument("cannot read " + where + ": " + cond.text());
        SB_RETURN_IF_ERROR(decode_to_native(*ff->getDataset(), where, frames_used[inst.path]));
        loaded = std::move(ff);
        loaded_path = inst.path;
      }
      SB_RETURN_IF_ERROR(read_frame(*loaded->getDataset(), inst, rows, cols, volume.data.data() + k * plane, where));
    } catch (const std::exception& e) {
      return base::invalid_argument("cannot read " + where + ": " + e.what());
    } catch (...) {
      return base::invalid_argument("cannot read " + where + ": unknown exception");
    }
  }
  return volume;
}

}  // namespace image
