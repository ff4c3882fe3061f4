// `strokebox evaluate --pred FILE --truth FILE [--prob FILE]`: compares a predicted lesion mask
// with a reference mask (both NIfTI, binarized at > 0.5), optionally scores a lesion probability
// map, and prints the metrics (image/metrics.h) as one JSON object.
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "image/metrics.h"
#include "image/nifti_io.h"

namespace firmware {
namespace {

constexpr const char* kUsage =
    "usage: strokebox evaluate --pred FILE --truth FILE [--prob FILE]\n"
    "  Compares two lesion masks (NIfTI, voxels > 0.5 are lesion) on the same grid and prints as\n"
    "  JSON: dice, iou, precision, recall, accuracy, f1, voxel counts, volumes and their absolute\n"
    "  difference (mL), hd95_mm and assd_mm (surface distances in mm, null if a mask is empty),\n"
    "  lesion counts (3D components, 26-connectivity), ISLES 2022 lesion-wise F1 (lesion_f1,\n"
    "  lesion_tp/fp/fn) and lesion_count_diff.\n"
    "  --prob FILE  lesion probability map (NIfTI, values in [0, 1], same grid): adds the\n"
    "               voxel-wise average_precision (null when the truth has no lesion).\n";

}  // namespace

int cmd_evaluate(int argc, char** argv) {
  auto args = Args::parse(argc, argv, 2, {"pred", "truth", "prob"}, {"help"});
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
  std::optional<image::VolumeF> prob;
  if (const auto prob_path = args->get("prob")) {
    auto p = image::read_nifti(*prob_path);
    if (!p.ok()) {
      std::fprintf(stderr, "strokebox evaluate: cannot read --prob %s: %s\n", prob_path->c_str(),
                   p.status().to_string().c_str());
      return 1;
    }
    prob = std::move(*p);
  }
  auto metrics = image::compute_metrics(image::binarize(*pred), image::binarize(*truth), prob ? &*prob : nullptr);
  if (!metrics.ok()) {
    std::fprintf(stderr, "strokebox evaluate: %s\n", metrics.status().message().c_str());
    return 1;
  }
  std::cout << image::to_json(*metrics).dump(2) << std::endl;
  return 0;
}

}  // namespace firmware
