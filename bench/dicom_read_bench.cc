// Time to read and assemble a DICOM diffusion study, as `strokebox segment --study` does before
// inference: scan the folder (every header), split the series into volumes and select the DWI and
// ADC, assemble what the selection uses (trace or directions, b0 or ADC), and, for reference,
// every volume of every diffusion series. Prints one JSON object (ms; first run and median).
//   build/bench/dicom_read_bench ../shared/realdicom/dcm_qa_philips__1201_DT_HIGH_32DIR [--runs 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "image/dicom_series.h"
#include "image/diffusion_volumes.h"
#include "image/series_classifier.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s STUDY_DIR [--runs N]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  int runs = 5;
  if (argc >= 4 && std::string(argv[2]) == "--runs") runs = std::max(1, std::atoi(argv[3]));
  image::ClassifierOptions options;
  options.allow_b_outside_range = true;
  std::vector<double> scan_ms, select_ms, selected_ms, all_ms;
  nlohmann::json facts;
  for (int run = 0; run < runs; ++run) {
    auto t0 = Clock::now();
    auto scan = image::scan_dicom_folder(dir);
    if (!scan.ok()) {
      std::fprintf(stderr, "%s\n", scan.status().to_string().c_str());
      return 1;
    }
    scan_ms.push_back(ms_since(t0));
    t0 = Clock::now();
    auto sel = image::select_diffusion_series(scan->series, options);
    if (!sel.ok()) {
      std::fprintf(stderr, "%s\n", sel.status().to_string().c_str());
      return 1;
    }
    select_ms.push_back(ms_since(t0));
    t0 = Clock::now();
    std::vector<image::DicomSeries> used = sel->trace_computed ? sel->dwi_directions : std::vector<image::DicomSeries>{sel->dwi};
    if (sel->adc_derived) {
      used.insert(used.end(), sel->b0_volumes.begin(), sel->b0_volumes.end());
    } else {
      used.push_back(sel->adc);
    }
    for (const auto& s : used) {
      auto v = image::assemble_volume(s);
      if (!v.ok()) {
        std::fprintf(stderr, "%s\n", v.status().to_string().c_str());
        return 1;
      }
    }
    selected_ms.push_back(ms_since(t0));
    t0 = Clock::now();
    int volumes = 0;
    for (const auto& s : scan->series) {
      auto split = image::split_diffusion_volumes(s, options.b0_max);
      if (!split.ok()) continue;
      for (const auto& v : *split) {
        if (image::assemble_volume(v.images).ok()) ++volumes;
      }
    }
    all_ms.push_back(ms_since(t0));
    facts = {{"files", scan->files_seen},
             {"series", scan->series.size()},
             {"volumes_assembled", volumes},
             {"volumes_used", used.size()},
             {"dwi", sel->dwi_source}};
  }
  nlohmann::json out = facts;
  out["runs"] = runs;
  out["scan_headers_ms"] = {{"first", scan_ms.front()}, {"median", median(scan_ms)}};
  out["select_ms"] = {{"first", select_ms.front()}, {"median", median(select_ms)}};
  out["assemble_used_ms"] = {{"first", selected_ms.front()}, {"median", median(selected_ms)}};
  out["assemble_every_volume_ms"] = {{"first", all_ms.front()}, {"median", median(all_ms)}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
