#include "firmware/png_writer.h"

#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <system_error>
#include <vector>

namespace firmware {
namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

/// Appends one chunk: length, type, data, CRC-32 over type and data (PNG spec 5.3).
void put_chunk(std::vector<uint8_t>& out, const char type[4], const std::vector<uint8_t>& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const size_t type_at = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  const uLong crc = ::crc32(0L, out.data() + type_at, static_cast<uInt>(4 + data.size()));
  put_u32(out, static_cast<uint32_t>(crc));
}

}  // namespace

base::Status write_png(const std::string& path, int width, int height, int channels,
                       std::span<const uint8_t> pixels) {
  if (width <= 0 || height <= 0 || (channels != 1 && channels != 3)) {
    return base::invalid_argument("write_png: " + std::to_string(width) + " x " + std::to_string(height) + " x " +
                                  std::to_string(channels) + " is not a valid grey or RGB image");
  }
  const size_t row_bytes = static_cast<size_t>(width) * channels;
  if (pixels.size() != row_bytes * static_cast<size_t>(height)) {
    return base::invalid_argument("write_png: " + std::to_string(pixels.size()) + " bytes for a " +
                                  std::to_string(width) + " x " + std::to_string(height) + " x " +
                                  std::to_string(channels) + " image");
  }
  // Raw scanlines, each preceded by filter type 0 (None).
  std::vector<uint8_t> raw;
  raw.reserve((row_bytes + 1) * height);
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), pixels.begin() + y * row_bytes, pixels.begin() + (y + 1) * row_bytes);
  }
  uLongf packed_size = ::compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  if (::compress2(packed.data(), &packed_size, raw.data(), static_cast<uLong>(raw.size()), 9) != Z_OK) {
    return base::internal_error("write_png: zlib compress2 failed");
  }
  packed.resize(packed_size);

  std::vector<uint8_t> file = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr.push_back(8);                         // bit depth
  ihdr.push_back(channels == 3 ? 2 : 0);     // colour type: truecolour or greyscale
  ihdr.push_back(0);                         // compression: deflate
  ihdr.push_back(0);                         // filter method 0
  ihdr.push_back(0);                         // no interlace
  put_chunk(file, "IHDR", ihdr);
  put_chunk(file, "IDAT", packed);
  put_chunk(file, "IEND", {});

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return base::unavailable("cannot write " + tmp);
  const bool written = std::fwrite(file.data(), 1, file.size(), f) == file.size();
  const bool closed = std::fclose(f) == 0;
  std::error_code ec;
  if (!written || !closed) {
    std::filesystem::remove(tmp, ec);
    return base::unavailable("cannot write " + tmp + " (disk full?)");
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return base::unavailable("cannot write " + path + ": " + ec.message());
  }
  return base::ok_status();
}

}  // namespace firmware
