// Reads NumPy .npy files (little-endian <f4, <f8, <i2, |u1, C order) into float vectors, for
// comparing against the nnU-Net goldens in ../shared/golden. Test-only helper.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace testing_support {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // converted to float32
  int64_t size() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
};

/// Throws std::runtime_error on an unreadable or unsupported file.
inline NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error("not npy: " + path);
  uint8_t ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  uint32_t hlen = 0;
  if (ver[0] == 1) {
    uint16_t h16;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string header(hlen, '\0');
  f.read(header.data(), hlen);
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error("fortran order unsupported: " + path);
  auto d = header.find("'descr': '");
  std::string descr = header.substr(d + 10, 3);
  NpyArray a;
  auto s = header.find("'shape': (");
  auto e = header.find(')', s);
  std::string shp = header.substr(s + 10, e - s - 10);
  size_t pos = 0;
  while (pos < shp.size()) {
    while (pos < shp.size() && (shp[pos] == ' ' || shp[pos] == ',')) ++pos;
    if (pos >= shp.size()) break;
    size_t end = pos;
    while (end < shp.size() && shp[end] >= '0' && shp[end] <= '9') ++end;
    a.shape.push_back(std::stoll(shp.substr(pos, end - pos)));
    pos = end;
  }
  const int64_t n = a.size();
  a.data.resize(static_cast<size_t>(n));
  auto read_as = [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> raw(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(n * sizeof(T)));
    if (!f) throw std::runtime_error("truncated npy: " + path);
    for (int64_t i = 0; i < n; ++i) a.data[i] = static_cast<float>(raw[i]);
  };
  if (descr == "<f4") read_as(float{});
  else if (descr == "<f8") read_as(double{});
  else if (descr == "<i2") read_as(int16_t{});
  else if (descr == "|u1") read_as(uint8_t{});
  else if (descr == "|i1") read_as(int8_t{});
  else throw std::runtime_error("unsupported dtype " + descr + " in " + path);
  return a;
}

}  // namespace testing_support
