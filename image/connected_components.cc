#include "image/connected_components.h"

#include <cstdlib>
#include <string>

namespace image {

base::Result<Components> label_components(const VolumeU8& mask, Connectivity connectivity) {
  const int64_t ni = mask.grid.dims[0], nj = mask.grid.dims[1], nk = mask.grid.dims[2];
  if (ni < 0 || nj < 0 || nk < 0 || mask.data.size() != static_cast<size_t>(mask.grid.voxel_count())) {
    return base::invalid_argument("label_components: mask holds " + std::to_string(mask.data.size()) +
                                  " voxels, its grid " + std::to_string(mask.grid.voxel_count()));
  }
  // Neighbour offsets.
  struct Offset {
    int di, dj, dk;
  };
  std::vector<Offset> offsets;
  for (int dk = -1; dk <= 1; ++dk) {
    for (int dj = -1; dj <= 1; ++dj) {
      for (int di = -1; di <= 1; ++di) {
        const int manhattan = std::abs(di) + std::abs(dj) + std::abs(dk);
        if (manhattan == 0) continue;
        if (connectivity == Connectivity::k6 && manhattan != 1) continue;
        offsets.push_back({di, dj, dk});
      }
    }
  }
  Components out;
  out.labels = Volume<int32_t>(mask.grid, 0);
  std::vector<int64_t> stack;  // flood fill with an explicit stack: no recursion depth limit
  for (int64_t k = 0; k < nk; ++k) {
    for (int64_t j = 0; j < nj; ++j) {
      for (int64_t i = 0; i < ni; ++i) {
        const size_t seed = mask.index(i, j, k);
        if (mask.data[seed] == 0 || out.labels.data[seed] != 0) continue;
        const int32_t label = static_cast<int32_t>(out.sizes.size()) + 1;
        int64_t size = 0;
        out.labels.data[seed] = label;
        stack.push_back(static_cast<int64_t>(seed));
        while (!stack.empty()) {
          const int64_t v = stack.back();
          stack.pop_back();
          ++size;
          const int64_t vi = v % ni, vj = (v / ni) % nj, vk = v / (ni * nj);
          for (const Offset& o : offsets) {
            const int64_t x = vi + o.di, y = vj + o.dj, z = vk + o.dk;
            if (x < 0 || y < 0 || z < 0 || x >= ni || y >= nj || z >= nk) continue;
            const size_t w = mask.index(x, y, z);
            if (mask.data[w] == 0 || out.labels.data[w] != 0) continue;
            out.labels.data[w] = label;
            stack.push_back(static_cast<int64_t>(w));
          }
        }
        out.sizes.push_back(size);
      }
    }
  }
  return out;
}

base::Result<VolumeU8> remove_small_components(const VolumeU8& mask, int64_t min_voxels, Connectivity connectivity) {
  SB_ASSIGN_OR_RETURN(Components cc, label_components(mask, connectivity));
  VolumeU8 out(mask.grid, 0);
  for (size_t v = 0; v < out.data.size(); ++v) {
    const int32_t l = cc.labels.data[v];
    if (l > 0 && cc.sizes[static_cast<size_t>(l - 1)] >= min_voxels) out.data[v] = 1;
  }
  return out;
}

}  // namespace image
