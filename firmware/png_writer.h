// Minimal PNG encoder (8-bit RGB or grey, no interlace, filter 0) on zlib for preview images
// in the docs and for debugging; no libpng. Format: PNG specification (ISO/IEC 15948), chunks
// IHDR, IDAT (zlib stream), IEND, each with its CRC-32.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/status.h"

namespace firmware {

/// Writes `pixels` (row-major, top row first; 3 bytes per pixel when `channels` == 3 (R, G, B),
/// 1 when `channels` == 1 (grey)) as a PNG file at `path` (written to `path + ".tmp"`, then
/// renamed). Errors: kInvalidArgument (zero size, channels not 1 or 3, pixel count mismatch),
/// kInternal (zlib failure), kUnavailable (file cannot be written).
base::Status write_png(const std::string& path, int width, int height, int channels,
                       std::span<const uint8_t> pixels);

}  // namespace firmware
