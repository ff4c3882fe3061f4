// `strokebox segment`: the main job on one study folder, offline. Same outputs as the daemon.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "firmware/pipeline.h"

namespace firmware {
namespace {

constexpr const char* kHelp = R"(Usage: strokebox segment --study DIR --out DIR [--model DIR] [--precision P]
       strokebox segment --image DWI.nii.gz --image ADC.nii.gz --out DIR [--model DIR]

Segments the acute ischemic lesion of one diffusion study, offline.

  --study DIR      folder of DICOM files (searched recursively): the DWI (the scanner's
                   trace image, else the geometric mean of the gradient directions, at the
                   b-value nearest the model's) and the ADC (the scanner's, else derived from
                   b0) are picked automatically; classic, Siemens MOSAIC and Enhanced MR files
  --image FILE     instead of --study: one NIfTI volume per model channel, in the model's
                   channel order (nnU-Net's file convention, research use); the ADC may be in
                   mm2/s, 1e-3 or 1e-6 mm2/s (recognised from its values; a model whose ADC
                   channel states a unit gets it converted, see docs/model_package.md)
  --out DIR        output folder: report.json, lesion_mask.nii.gz, seg.dcm (DICOM input)
  --model DIR      model package (default: models/demo of the source tree)
  --precision P    engine precision: fp32 (default), bf16, fp16, auto
  --mirroring on|off   override model.json: test-time mirroring (8x the network runs)
  --tile-step S    override model.json: sliding-window step, fraction of the patch in (0, 1]
                   (0.5 = nnU-Net's default; larger is faster, see docs/nnunet_parity.md)
  --probabilities  also write lesion_probability.nii.gz (float32, 0..1; for evaluate --prob)
  --save-inputs    --study only: also write dwi.nii.gz and adc.nii.gz, the DWI (trace) and ADC
                   the box assembled from the DICOM files, on the DWI grid, before
                   preprocessing (to check what it read, or to rerun with --image)
  --allow-b-outside-range   segment a study whose diffusion b-values all lie outside the
                   model's accepted range (model.json "diffusion") at the b closest to the
                   model's, with a warning in report.json (default: refuse, naming b and range)
  --implausible-lesions MODE   override model.json "postprocessing": which lesions flagged by
                   the ADC check are left out of the mask, SEG and volume: keep (none),
                   exclude-below-tissue-adc (those with an ADC below any brain tissue: fat,
                   noise floor) or exclude (also those without restricted diffusion); report.json
                   lists them either way and the overlay draws them in blue
  --max-preprocessed-voxels N   preallocate the sliding-window buffers for up to N voxels per
                   channel, as the daemon does with model.max_preprocessed_voxels: a study
                   larger than that after resampling fails with a reason (default: per study)

Prints report.json to stdout. Exit 0 when the study was segmented, 1 when it could not be
(report.json then has "status": "failed" and a reason), 2 on bad usage.
)";

}  // namespace

int cmd_segment(int argc, char** argv) {
  auto args = Args::parse(argc, argv, 2, {"study", "image", "out", "model", "precision", "mirroring", "tile-step",
                                                 "max-preprocessed-voxels", "implausible-lesions"},
                          {"help", "probabilities", "save-inputs", "allow-b-outside-range"});
  if (!args.ok()) {
    std::fprintf(stderr, "strokebox segment: %s\n", args.status().message().c_str());
    return 2;
  }
  if (args->has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  const bool dicom = args->has("study");
  const auto images = args->get_all("image");
  if (dicom == !images.empty() || !args->has("out")) {
    std::fprintf(stderr, "strokebox segment: give --out and either --study or --image (see --help)\n");
    return 2;
  }
  PipelineOptions options;
  options.model_dir = args->get_or("model", std::string(STROKEBOX_SOURCE_DIR) + "/models/demo");
  options.precision = args->get_or("precision", "fp32");
  options.write_probability = args->has("probabilities");
  options.write_inputs = args->has("save-inputs");
  options.allow_b_outside_range = args->has("allow-b-outside-range");
  if (auto m = args->get("mirroring")) {
    if (*m != "on" && *m != "off") {
      std::fprintf(stderr, "strokebox segment: --mirroring takes on or off, got '%s'\n", m->c_str());
      return 2;
    }
    options.use_mirroring = *m == "on";
  }
  if (auto m = args->get("implausible-lesions")) {
    options.implausible_lesions = parse_implausible_lesions(*m);
    if (!options.implausible_lesions) {
      std::fprintf(stderr, "strokebox segment: --implausible-lesions takes %s, got '%s'\n",
                   implausible_lesions_choices().c_str(), m->c_str());
      return 2;
    }
  }
  if (auto t = args->get("tile-step")) {
    char* end = nullptr;
    double v = std::strtod(t->c_str(), &end);
    if (end == t->c_str() || *end != '\0') {
      std::fprintf(stderr, "strokebox segment: --tile-step takes a number, got '%s'\n", t->c_str());
      return 2;
    }
    options.tile_step_size = v;
  }
  if (auto v = args->get("max-preprocessed-voxels")) {
    char* end = nullptr;
    const long long n = std::strtoll(v->c_str(), &end, 10);
    if (end == v->c_str() || *end != '\0' || n < 0) {
      std::fprintf(stderr, "strokebox segment: --max-preprocessed-voxels takes a voxel count, got '%s'\n", v->c_str());
      return 2;
    }
    options.max_preprocessed_voxels = n;
  }
  auto pipeline = Pipeline::create(options);
  if (!pipeline.ok()) {
    std::fprintf(stderr, "strokebox segment: cannot load model %s: %s\n", options.model_dir.c_str(),
                 pipeline.status().to_string().c_str());
    return 1;
  }
  const std::string out = *args->get("out");
  StudyReport report = dicom ? (*pipeline)->process_study(*args->get("study"), out)
                             : (*pipeline)->process_nifti(images, out);
  std::cout << report.to_json().dump(2) << std::endl;
  if (report.status != "done") {
    std::fprintf(stderr, "strokebox segment: study not segmented: %s\n", report.reason.c_str());
    return 1;
  }
  return 0;
}

}  // namespace firmware
