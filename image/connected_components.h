// 3D connected components of a binary mask (lesion counting, small-component removal).
// Usage: SB_ASSIGN_OR_RETURN(auto cc, image::label_components(mask)); cc.sizes.size() lesions.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "image/volume.h"

namespace image {

/// Neighbourhood: 26 = faces, edges and corners; 6 = faces only.
enum class Connectivity { k6 = 6, k26 = 26 };

/// Labels on the mask's grid: 0 = background, 1..n = components, numbered in memory order of
/// their first voxel (i fastest, then j, then k).
struct Components {
  Volume<int32_t> labels;
  /// sizes[l - 1] = number of voxels of label l.
  std::vector<int64_t> sizes;
  int count() const { return static_cast<int>(sizes.size()); }
};

/// Labels the non-zero voxels of `mask`. Errors: kInvalidArgument when the data size does not
/// match the grid.
base::Result<Components> label_components(const VolumeU8& mask, Connectivity connectivity = Connectivity::k26);

/// Copy of `mask` (values 0/1) without the components smaller than `min_voxels`.
base::Result<VolumeU8> remove_small_components(const VolumeU8& mask, int64_t min_voxels,
                                               Connectivity connectivity = Connectivity::k26);

}  // namespace image
