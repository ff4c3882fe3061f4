// NIfTI-1/2 volume I/O on top of libnifti2: reads any scalar datatype into float volumes with
// an LPS affine, writes float32 and uint8 volumes (gzip when the name ends in .gz).
// NIfTI world coordinates are RAS; ours are DICOM LPS: LPS = diag(-1, -1, 1) * RAS.
#pragma once

#include <array>
#include <string>

#include "base/status.h"
#include "image/volume.h"

namespace image {

/// Reads a 3D NIfTI file (.nii or .nii.gz, NIfTI-1 or NIfTI-2) as float.
/// Values: any real scalar datatype converted to float, then `v * scl_slope + scl_inter`
/// when scl_slope is finite and non-zero (NIfTI-1 header, field scl_slope).
/// Affine: sform when sform_code > 0, else qform when qform_code > 0, else diag(pixdim)
/// (NIfTI-1 "method 1"); converted from RAS to LPS.
/// `pixdim_mm` (optional) receives pixdim[1..3] exactly as stored in the header (float32 in
/// NIfTI-1 widened to double), which is what nnU-Net computes its spacing from.
/// Errors: kNotFound (no such file), kDataLoss (not a readable NIfTI file, truncated data),
/// kInvalidArgument (complex/RGB datatype, more than one volume, empty or non-positive dims).
/// Every message names the path.
base::Result<VolumeF> read_nifti(const std::string& path, std::array<double, 3>* pixdim_mm = nullptr);

/// Writes `volume` as NIfTI-1 float32 (single .nii file, gzip-compressed when `path` ends in
/// ".gz"). qform and sform are both set (code 1, scanner anat) from the volume's affine
/// converted to RAS; pixdim[1..3] = the affine's column norms; units mm; no intensity scaling.
/// Errors: kInvalidArgument (name not ending in .nii or .nii.gz, empty volume, data size not
/// matching the grid), kNotFound (the parent folder does not exist), kInternal (the library
/// could not write the file: permissions, disk full). Every message names the path.
base::Status write_nifti(const std::string& path, const VolumeF& volume);

/// Same as above with datatype uint8 (labels, masks).
base::Status write_nifti(const std::string& path, const VolumeU8& volume);

}  // namespace image
