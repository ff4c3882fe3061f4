// Resampling a volume onto another grid through the voxel-to-patient affines (target voxel ->
// patient LPS -> source voxel), e.g. to put the ADC map on the DWI grid when they differ.
// (nnU-Net's zoom-style resampling to a target spacing is image/nnunet_resample.h, not this.)
#pragma once

#include "base/status.h"
#include "image/volume.h"

namespace image {

/// Interpolation orders accepted by resample_to_grid().
inline constexpr int kNearest = 0;
inline constexpr int kTrilinear = 1;

/// Samples `src` at the patient position of every voxel centre of `target`:
/// p = target.affine * (i, j, k, 1); q = src.affine^-1 * p. Order 0 takes the nearest source
/// voxel (round half up), order 1 interpolates trilinearly between the 8 neighbours. A target
/// voxel whose source index lies outside [-0.5, n - 0.5] along any axis (beyond the source's
/// voxel boundaries) gets `outside`; inside that range but beyond the outermost voxel centres,
/// order 1 repeats the edge value.
/// Errors: kInvalidArgument for an order other than 0/1, a singular source affine, empty grids
/// or data whose size does not match the grid.
base::Result<VolumeF> resample_to_grid(const VolumeF& src, const Grid& target, int order, float outside = 0.0f);

}  // namespace image
