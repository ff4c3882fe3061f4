// `strokebox evaluate --pred FILE --truth FILE`: compares a predicted lesion mask with a
// reference mask (both NIfTI, binarized at > 0.5) and prints the metrics as one JSON object.
#include <cstdio>
#include <iostream>
#include <string>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "image/metrics.h"
#include "image/nifti_io.h"

namespace firmware {
namespace {

constexpr const char* kUsage =
    "usage: strokebox evaluate --pred FILE --truth FILE\n"
    "  Compares two lesion masks (NIfTI, voxels > 0.5 are lesion) on the same grid and prints\n"
    "  dice, iou, precision, recall, volumes (mL), lesion counts and voxel counts as JSON.\n";

}  // namespace

int cmd_evaluate(int argc, char** argv) {
  auto args = Args::parse(argc, argv, 2, {"pred", "truth"}, {"help"});
  if (!args.ok()) {
    std::fprintf(stderr, "strokebox evaluate: %s\n%s", args.status().message().c_str(), kUsage);
    return 2;
  }
  if (args->has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const auto pred_path = args->get("pred");
  const auto truth_path = args->get("truth");
  if (!pred_path || !truth_path || !args->positional().empty()) {
    std::fprintf(stderr, "strokebox evaluate: --pred and --truth are required\n%s", kUsage);
    return 2;
  }
  auto pred = image::read_nifti(*pred_path);
  if (!pred.ok()) {
    std::fprintf(stderr, "strokebox evaluate: cannot read --pred %s: %s\n", pred_path->c_str(),
                 pred.status().to_string().c_str());
    return 1;
  }
  auto truth = image::read_nifti(*truth_path);
  if (!truth.ok()) {
    std::fprintf(stderr, "strokebox evaluate: cannot read --truth %s: %s\n", truth_path->c_str(),
                 truth.status().to_string().c_str());
    return 1;
  }
  auto metrics = image::compute_metrics(image::binarize(*pred), image::binarize(*truth));
  if (!metrics.ok()) {
    std::fprintf(stderr, "strokebox evaluate: %s\n", metrics.status().message().c_str());
    return 1;
  }
  std::cout << image::to_json(*metrics).dump(2) << std::endl;
  return 0;
}

}  // namespace firmware
