// `strokebox phantom`: writes synthetic DWI/ADC stroke studies (image/phantom.h) as NIfTI
// (nnU-Net file convention) or DICOM series, plus truth.nii.gz and phantom.json, and prints one
// JSON summary line per study to stdout.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "image/phantom.h"

namespace firmware {
namespace {

constexpr const char* kPhantomUsage = R"(Usage: strokebox phantom --out DIR --seed N [options]

Writes a synthetic acute-stroke diffusion study (DWI b=1000 and ADC) built from the Colin27
head: random deformation, 0-5 irregular lesions, partial volume, Rician noise, bias field,
on an axial clinical grid. Deterministic per seed.

Options:
  --out DIR         output folder (created if needed)
  --seed N          random seed (unsigned 64-bit integer)
  --format F        dicom (default): DWI/*.dcm and ADC/*.dcm series, truth.nii.gz, phantom.json
                    nifti: image_0000.nii.gz (DWI), image_0001.nii.gz (ADC), truth.nii.gz,
                    phantom.json (nnU-Net file convention)
  --lesions N       force N lesions (0 = none, at most 10); default: random, none for ~15%
  --count K         write K studies, seeds N..N+K-1, into DIR/phantom_<seed>/ (default 1:
                    the study goes into DIR itself)
  --colin27 FILE    Colin27 template (default /usr/share/mricron/templates/ch2better.nii.gz,
                    Debian package mricron-data)
  --help            this text

Prints one JSON line per study: seed, lesion_count, total_lesion_volume_ml, dims, spacing_mm,
seconds, out. Exit codes: 0 success, 1 failure (reason on stderr), 2 bad usage.
)";

bool parse_u64(const std::string& s, uint64_t* out) {
  if (s.empty() || s[0] == '-' || s[0] == '+') return false;
  try {
    size_t pos = 0;
    const unsigned long long v = std::stoull(s, &pos, 10);
    if (pos != s.size()) return false;
    *out = v;
    return true;
  } catch (...) {
    return false;
  }
}

int usage_error(const std::string& message) {
  const bool mentions_help = message.find("--help") != std::string::npos;
  std::fprintf(stderr, "strokebox phantom: %s\n%s", message.c_str(),
               mentions_help ? "" : "(see strokebox phantom --help)\n");
  return 2;
}

}  // namespace

int cmd_phantom(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv, 2, {"out", "seed", "format", "lesions", "count", "colin27"}, {"help"});
  if (!parsed.ok()) return usage_error(parsed.status().message());
  const Args& args = *parsed;
  if (args.has("help")) {
    std::fputs(kPhantomUsage, stdout);
    return 0;
  }
  if (!args.positional().empty()) return usage_error("unexpected argument '" + args.positional().front() + "'");
  const auto out = args.get("out");
  if (!out || out->empty()) return usage_error("--out DIR is required");
  const auto seed_text = args.get("seed");
  if (!seed_text) return usage_error("--seed N is required");
  image::PhantomOptions options;
  if (!parse_u64(*seed_text, &options.seed)) return usage_error("--seed must be an unsigned integer, got '" + *seed_text + "'");
  const std::string format = args.get_or("format", "dicom");
  if (format != "dicom" && format != "nifti") return usage_error("--format must be dicom or nifti, got '" + format + "'");
  if (auto l = args.get("lesions")) {
    uint64_t n = 0;
    if (!parse_u64(*l, &n) || n > static_cast<uint64_t>(image::kMaxPhantomLesions)) {
      return usage_error("--lesions must be an integer from 0 to " + std::to_string(image::kMaxPhantomLesions) +
                         ", got '" + *l + "'");
    }
    options.lesion_count = static_cast<int>(n);
  }
  uint64_t count = 1;
  if (auto c = args.get("count")) {
    if (!parse_u64(*c, &count) || count < 1 || count > 100000) return usage_error("--count must be from 1 to 100000, got '" + *c + "'");
  }
  if (auto c = args.get("colin27")) options.colin27_path = *c;

  for (uint64_t n = 0; n < count; ++n) {
    image::PhantomOptions one = options;
    one.seed = options.seed + n;
    const std::string dir =
        count == 1 ? *out : (std::filesystem::path(*out) / ("phantom_" + std::to_string(one.seed))).string();
    const auto start = std::chrono::steady_clock::now();
    auto study = image::make_phantom(one);
    if (!study.ok()) {
      std::fprintf(stderr, "strokebox phantom: seed %llu: %s\n", static_cast<unsigned long long>(one.seed),
                   study.status().to_string().c_str());
      return 1;
    }
    const base::Status written =
        format == "nifti" ? image::write_phantom_nifti(*study, dir) : image::write_phantom_dicom(*study, dir);
    if (!written.ok()) {
      std::fprintf(stderr, "strokebox phantom: seed %llu: %s\n", static_cast<unsigned long long>(one.seed),
                   written.to_string().c_str());
      return 1;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto& p = study->params;
    nlohmann::json spacing = nlohmann::json::array();
    for (double v : study->dwi.grid.spacing_mm()) spacing.push_back(std::round(v * 1e6) / 1e6);
    nlohmann::json summary = {{"seed", one.seed},
                              {"lesion_count", p["lesion_count"]},
                              {"total_lesion_volume_ml", p["total_lesion_volume_ml"]},
                              {"dims", p["grid"]["dims"]},
                              {"spacing_mm", spacing},
                              {"format", format},
                              {"seconds", std::round(seconds * 1000.0) / 1000.0},
                              {"out", dir}};
    std::printf("%s\n", summary.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace firmware
