#include "firmware/pipeline.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include "base/log.h"

namespace firmware {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// Writes `text` to `path` atomically (temp file + rename) so a reader never sees half a report.
base::Status write_text_atomic(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return base::internal_error("cannot write " + tmp.string());
    f << text;
    if (!f.flush()) return base::resource_exhausted("cannot write " + tmp.string() + " (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return base::internal_error("cannot rename " + tmp.string() + ": " + ec.message());
  return base::ok_status();
}

}  // namespace

nlohmann::json StudyReport::to_json() const {
  nlohmann::json j;
  j["status"] = status;
  if (!reason.empty()) j["reason"] = reason;
  j["study_instance_uid"] = study_instance_uid;
  j["dwi_series_instance_uid"] = dwi_series_instance_uid;
  j["adc_series_instance_uid"] = adc_series_instance_uid;
  j["lesion_volume_ml"] = lesion_volume_ml;
  j["lesion_count"] = lesion_count;
  j["model_id"] = model_id;
  j["backend"] = backend;
  j["precision"] = precision;
  nlohmann::json t = nlohmann::json::object();
  double total = 0;
  for (const auto& [stage, ms] : timings_ms) {
    t[stage] = ms;
    total += ms;
  }
  t["total"] = total;
  j["timings_ms"] = t;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

// TEMPORARY (lead): the nnU-Net predictor is being wired in; until then create() refuses.
struct Pipeline::Impl {};
Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;
base::Result<std::unique_ptr<Pipeline>> Pipeline::create(const PipelineOptions&) {
  return base::unimplemented("the pipeline is not wired yet");
}
StudyReport Pipeline::process_study(const std::string&, const std::string&) { return {}; }
StudyReport Pipeline::process_nifti(const std::vector<std::string>&, const std::string&) { return {}; }

}  // namespace firmware
