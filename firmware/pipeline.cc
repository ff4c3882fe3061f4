#include "firmware/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <dcmtk/dcmdata/dctk.h>
#include <unistd.h>

#include "base/log.h"
#include "firmware/overlay_writer.h"
#include "firmware/seg_writer.h"
#include "firmware/sr_writer.h"
#include "image/adc_map.h"
#include "image/connected_components.h"
#include "image/diffusion_volumes.h"
#include "image/lesion_plausibility.h"
#include "image/dicom_series.h"
#include "image/grid_resample.h"
#include "image/nifti_io.h"
#include "image/series_classifier.h"
#include "inference/cpu_engine.h"
#include "inference/engine_file.h"
#include "inference/model_spec.h"
#include "inference/nnunet_predictor.h"

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

/// The ONNX path to hand to load_or_build_engine, which reads and writes the engine file beside
/// the path it is given: the model's own file when its folder is writable (or no cache folder is
/// set), else a symbolic link to it in `<cache_dir>/engines/<model folder>/`, so the engine file
/// lands in the (writable) cache. The engine file holds the model's hash: a changed model is
/// rebuilt, never run with a stale engine. Falls back to the model's file (engine rebuilt at
/// every start, as before) when the cache cannot be made.
std::string onnx_path_for_engine(const fs::path& onnx, const std::string& cache_dir) {
  std::error_code ec;
  const fs::path target = fs::absolute(onnx, ec).lexically_normal();
  if (cache_dir.empty() || ec || ::access(target.parent_path().c_str(), W_OK) == 0) return onnx.string();
  std::string key = target.parent_path().relative_path().string();
  for (char& c : key)
    if (c == '/') c = '_';
  const fs::path dir = fs::path(cache_dir) / "engines" / key;
  const fs::path link = dir / target.filename();
  fs::create_directories(dir, ec);
  if (!ec && fs::read_symlink(link, ec) != target) {
    fs::remove(link, ec);
    fs::create_symlink(target, link, ec);
  }
  if (ec) {
    SB_LOG(kWarning) << "model folder " << target.parent_path().string() << " is read-only and the engine cache "
                     << dir.string() << " cannot be made (" << ec.message() << "): the engine is built at every start";
    return onnx.string();
  }
  return link.string();
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

/// SOP Instance and Series Instance UID of a DICOM file we just wrote (header only).
base::Status read_instance_uids(const fs::path& path, std::string& sop_uid, std::string& series_uid) {
  DcmFileFormat ff;
  OFCondition c = ff.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 4096);
  if (c.bad()) return base::internal_error("cannot read back " + path.string() + ": " + c.text());
  OFString sop, series;
  ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop);
  ff.getDataset()->findAndGetOFString(DCM_SeriesInstanceUID, series);
  sop_uid = sop.c_str();
  series_uid = series.c_str();
  return base::ok_status();
}

/// Appends a warning to report.json's "warnings" list (and the log).
void add_warning(StudyReport& r, const std::string& warning) {
  if (!r.extra.contains("warnings")) r.extra["warnings"] = nlohmann::json::array();
  r.extra["warnings"].push_back(warning);
  SB_LOG(kWarning) << warning;
}

/// `model_dir`/model.json as a JSON document. Errors: kNotFound, kInvalidArgument (not JSON).
base::Result<nlohmann::json> read_model_json(const std::string& model_dir) {
  const fs::path path = fs::path(model_dir) / "model.json";
  std::ifstream f(path);
  if (!f) return base::not_found("cannot read " + path.string());
  try {
    return nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    return base::invalid_argument(path.string() + ": not JSON: " + e.what());
  }
}

}  // namespace

base::Result<ModelDiffusion> read_model_diffusion(const std::string& model_dir) {
  SB_ASSIGN_OR_RETURN(const nlohmann::json doc, read_model_json(model_dir));
  ModelDiffusion out;
  if (!doc.is_object() || !doc.contains("diffusion")) return out;
  const nlohmann::json& d = doc["diffusion"];
  const auto bad = [&](const std::string& what) { return base::invalid_argument("model.json: diffusion" + what); };
  if (!d.is_object()) return bad(": expected an object with b_value_s_mm2 and accepted_b_range_s_mm2");
  for (auto it = d.begin(); it != d.end(); ++it) {
    if (it.key() != "b_value_s_mm2" && it.key() != "accepted_b_range_s_mm2") {
      return bad("." + it.key() + ": unknown key (known: b_value_s_mm2, accepted_b_range_s_mm2)");
    }
  }
  if (!d.contains("b_value_s_mm2") || !d["b_value_s_mm2"].is_number()) {
    return bad(".b_value_s_mm2: missing or not a number (the b-value the model was trained with, s/mm^2)");
  }
  const nlohmann::json& range = d.contains("accepted_b_range_s_mm2") ? d["accepted_b_range_s_mm2"] : nlohmann::json();
  if (!range.is_array() || range.size() != 2 || !range[0].is_number() || !range[1].is_number()) {
    return bad(".accepted_b_range_s_mm2: expected [min, max] in s/mm^2");
  }
  out.b_value = d["b_value_s_mm2"].get<double>();
  out.b_min = range[0].get<double>();
  out.b_max = range[1].get<double>();
  out.from_model_json = true;
  if (!(out.b_min > 50.0)) {
    return bad(".accepted_b_range_s_mm2: the minimum must be above 50 s/mm^2 (images at or below it are b0)");
  }
  if (!(out.b_min <= out.b_value && out.b_value <= out.b_max)) {
    return bad(".b_value_s_mm2: " + std::to_string(out.b_value) + " lies outside accepted_b_range_s_mm2");
  }
  return out;
}

base::Result<ModelPostprocessing> read_model_postprocessing(const std::string& model_dir) {
  SB_ASSIGN_OR_RETURN(const nlohmann::json doc, read_model_json(model_dir));
  ModelPostprocessing out;
  if (!doc.is_object() || !doc.contains("postprocessing")) return out;
  const nlohmann::json& p = doc["postprocessing"];
  const auto bad = [](const std::string& what) { return base::invalid_argument("model.json: postprocessing" + what); };
  if (!p.is_object()) return bad(": expected an object such as {\"implausible_lesions\": \"exclude\"}");
  for (auto it = p.begin(); it != p.end(); ++it) {
    if (it.key() != "implausible_lesions") return bad("." + it.key() + ": unknown key (known: implausible_lesions)");
  }
  if (p.contains("implausible_lesions")) {
    const nlohmann::json& v = p["implausible_lesions"];
    const auto mode = v.is_string() ? parse_implausible_lesions(v.get<std::string>()) : std::nullopt;
    if (!mode) {
      return bad(".implausible_lesions: expected " + implausible_lesions_choices() + ", got " + v.dump());
    }
    out.implausible_lesions = *mode;
  }
  return out;
}

const char* implausible_lesions_name(ImplausibleLesions mode) {
  switch (mode) {
    case ImplausibleLesions::kKeep:
      return "keep";
    case ImplausibleLesions::kExcludeBelowTissue:
      return "exclude-below-tissue-adc";
    case ImplausibleLesions::kExcludeAll:
      return "exclude";
  }
  return "keep";
}

namespace {
constexpr ImplausibleLesions kImplausibleLesionsModes[] = {ImplausibleLesions::kKeep, ImplausibleLesions::kExcludeBelowTissue,
                                                           ImplausibleLesions::kExcludeAll};
}  // namespace

std::string implausible_lesions_choices() {
  std::string out;
  const size_t n = std::size(kImplausibleLesionsModes);
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out += i + 1 == n ? " or " : ", ";
    out += implausible_lesions_name(kImplausibleLesionsModes[i]);
  }
  return out;
}

std::optional<ImplausibleLesions> parse_implausible_lesions(const std::string& name) {
  for (auto mode : kImplausibleLesionsModes) {
    if (name == implausible_lesions_name(mode)) return mode;
  }
  return std::nullopt;
}

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

struct Pipeline::Impl {
  PipelineOptions options;
  inference::ModelSpec spec;
  std::vector<std::unique_ptr<inference::CpuEngine>> engines;
  std::unique_ptr<inference::NnunetPredictor> predictor;
  ModelDiffusion diffusion;  // the b-values the model accepts
  ModelPostprocessing postprocessing;  // model.json "postprocessing", with the deployment's override
  int dwi_channel = 0;  // index of the DWI channel in the model's channel order
  int adc_channel = 1;
  inference::ProgressFn progress;  // of the study being processed; may be empty
  // Of the study being processed, from assess_plausibility(): the mask with lesions without
  // restricted diffusion set to kOverlayFlaggedLesion, and the texts for the SR and overlay.
  image::VolumeU8 display_mask;
  std::string plausibility_comment, overlay_warning;

  void report_progress(std::string_view stage, int64_t done) const {
    if (progress) progress(stage, done, 1);
  }

  void fill_model_fields(StudyReport& r) const {
    r.model_id = spec.model_id;
    r.backend = engines.front()->backend();
    r.precision = engines.front()->precision();
  }

  /// Runs the network on channel volumes (model order) and fills lesion figures and timings.
  /// With options.write_probability, also writes `out_dir`/lesion_probability.nii.gz.
  base::Result<image::VolumeU8> segment(const std::vector<image::VolumeF>& channels,
                                        std::array<double, 3> spacing_ijk_mm, StudyReport& r,
                                        const std::string& out_dir) {
    // The ADC's unit, recognised once: the plausibility check needs the ADC in 10^-6 mm^2/s, and
    // so does a model that reads absolute ADC values (CTNormalization), whatever unit the input
    // used (NIfTI files come in mm^2/s, 10^-3 or 10^-6 mm^2/s).
    const base::Result<image::AdcUnit> unit = image::infer_adc_unit(channels[adc_channel]);
    std::optional<image::VolumeF> adc_micro;
    if (unit.ok()) adc_micro = image::adc_to_micro(channels[adc_channel], *unit);
    std::vector<image::VolumeF> converted;
    const std::vector<image::VolumeF>* inputs = &channels;
    if (spec.channels[adc_channel].unit == inference::kAdcMicroUnit) {
      if (!unit.ok())
        return base::failed_precondition("the model needs the ADC in 1e-6 mm2/s, but " + unit.status().message());
      if (*unit != image::AdcUnit::kMicroMm2PerS) {
        converted = channels;
        converted[adc_channel] = *adc_micro;
        inputs = &converted;
      }
    }
    SB_ASSIGN_OR_RETURN(auto result,
                        predictor->predict(*inputs, spacing_ijk_mm, nullptr, options.write_probability, progress));
    if (result.foreground_probability) {
      SB_RETURN_IF_ERROR(image::write_nifti((fs::path(out_dir) / "lesion_probability.nii.gz").string(),
                                            *result.foreground_probability)
                             .with_context("writing the lesion probability map"));
    }
    for (const auto& t : result.timings_ms) r.timings_ms.push_back(t);
    r.extra["tiles"] = result.tiles;
    r.extra["nnunet"] = result.details;
    SB_ASSIGN_OR_RETURN(auto components, image::label_components(result.labels));
    r.lesion_count = components.count();
    r.lesion_volume_ml = lesion_volume_ml(result.labels);
    const std::vector<int> excluded = assess_plausibility(components, result.labels, unit, std::move(adc_micro), r);
    if (!excluded.empty()) exclude_lesions(components, excluded, result.labels, r);
    return std::move(result.labels);
  }

  static double lesion_volume_ml(const image::VolumeU8& mask) {
    int64_t voxels = 0;
    for (uint8_t v : mask.data) voxels += v != 0;
    return static_cast<double>(voxels) * mask.grid.voxel_volume_ml();
  }

  /// The model's postprocessing (ModelPostprocessing): removes the `flagged` components (those
  /// assess_plausibility() chose for the model's ImplausibleLesions mode) from
  /// `mask` (the mask then written, sent as SEG and measured in the SR) and from the lesion
  /// count and volume; report.json keeps the network's figures as "predicted_*" (set by
  /// assess_plausibility(), as is each lesion's "excluded") and says so in a warning; the overlay
  /// still draws them in blue.
  void exclude_lesions(const image::Components& components, const std::vector<int>& flagged,
                       image::VolumeU8& mask, StudyReport& r) {
    std::vector<bool> drop(static_cast<size_t>(components.count()) + 1, false);
    for (int label : flagged) drop[static_cast<size_t>(label)] = true;
    for (size_t v = 0; v < mask.data.size(); ++v) {
      if (drop[static_cast<size_t>(components.labels.data[v])]) mask.data[v] = 0;
    }
    const double predicted_ml = r.lesion_volume_ml;
    const int predicted_count = r.lesion_count;
    r.lesion_volume_ml = lesion_volume_ml(mask);
    r.lesion_count = predicted_count - static_cast<int>(flagged.size());
    nlohmann::json& p = r.extra["plausibility"];
    p["excluded_lesion_count"] = flagged.size();
    p["excluded_volume_ml"] = predicted_ml - r.lesion_volume_ml;
    char line[400];
    std::snprintf(line, sizeof(line),
                  "%zu region(s), %.1f ml, left out of the lesion mask, SEG and volume by the model's "
                  "postprocessing (postprocessing.implausible_lesions = \"%s\"): they are listed under "
                  "plausibility.lesions (\"excluded\") and drawn in blue on the overlay",
                  flagged.size(), predicted_ml - r.lesion_volume_ml,
                  implausible_lesions_name(postprocessing.implausible_lesions));
    add_warning(r, line);
    plausibility_comment += std::string("; ") + line;
    const int flagged_total = p["implausible_lesion_count"].get<int>();
    const int kept = flagged_total - static_cast<int>(flagged.size());
    overlay_warning = kept == 0 ? std::to_string(flagged.size()) + (flagged.size() == 1 ? " REGION" : " REGIONS") +
                                      " NOT TYPICAL OF AN INFARCT (BLUE), NOT COUNTED - CHECK"
                                : std::to_string(flagged_total) + " LESIONS NOT TYPICAL OF AN INFARCT (BLUE), " +
                                      std::to_string(flagged.size()) + " NOT COUNTED - CHECK";
  }

  /// Checks every predicted lesion against the ADC (image/lesion_plausibility.h): report.json
  /// "plausibility", a warning when a lesion shows no restricted diffusion, the overlay's mask
  /// with those lesions marked (display_mask) and the SR comment (plausibility_comment). `unit`
  /// is the input ADC's unit recognised from its values (NIfTI inputs do not state it; DICOM
  /// ADC maps are 10^-6 mm^2/s by convention) and `adc_micro` the ADC in 10^-6 mm^2/s (empty
  /// when the unit is unknown). Never fails the study: an ADC whose unit cannot be told is a
  /// warning and no assessment. Returns the labels (in `components`) of the flagged lesions that
  /// the model's postprocessing leaves out (none with ImplausibleLesions::kKeep).
  std::vector<int> assess_plausibility(const image::Components& components, const image::VolumeU8& mask,
                                       const base::Result<image::AdcUnit>& unit,
                                       std::optional<image::VolumeF> adc_micro, StudyReport& r) {
    display_mask = mask;
    plausibility_comment.clear();
    overlay_warning.clear();
    std::vector<int> flagged;
    if (!unit.ok() || !adc_micro) {
      add_warning(r, "lesion plausibility not assessed: " + unit.status().message());
      return flagged;
    }
    adc_micro->grid = mask.grid;  // same voxels (checked by the predictor); NIfTI affines may differ in rounding
    const image::PlausibilityOptions po;
    auto lesions = image::assess_lesions(components, *adc_micro, po);
    if (!lesions.ok()) {
      add_warning(r, "lesion plausibility not assessed: " + lesions.status().message());
      return flagged;
    }
    nlohmann::json list = nlohmann::json::array();
    double core_ml = 0.0, implausible_ml = 0.0;
    int implausible = 0;
    const ImplausibleLesions mode = postprocessing.implausible_lesions;
    for (const image::LesionAssessment& a : *lesions) {
      core_ml += a.core_volume_ml;
      const bool exclude = !a.plausible && (mode == ImplausibleLesions::kExcludeAll ||
                                            (mode == ImplausibleLesions::kExcludeBelowTissue && a.below_tissue_adc));
      if (!a.plausible) {
        ++implausible;
        implausible_ml += a.volume_ml;
        if (exclude) flagged.push_back(a.label);
        for (size_t v = 0; v < components.labels.data.size(); ++v) {
          if (components.labels.data[v] == a.label)
            display_mask.data[v] = exclude ? kOverlayExcludedLesion : kOverlayFlaggedLesion;
        }
      }
      list.push_back({{"label", a.label},
                      {"volume_ml", a.volume_ml},
                      {"centroid_lps_mm", a.centroid_lps_mm},
                      {"median_adc", a.median_adc},
                      {"surrounding_median_adc", a.surrounding_median_adc},
                      {"adc_ratio", a.adc_ratio},
                      {"adc_core_volume_ml", a.core_volume_ml},
                      {"surrounding_core_fraction", a.surrounding_core_fraction},
                      {"plausible", a.plausible},
                      {"excluded", exclude},
                      {"reason", a.reason}});
    }
    r.extra["plausibility"] = {{"adc_unit_recognised", image::adc_unit_name(*unit)},
                               {"adc_units_reported", "1e-6 mm2/s"},
                               {"core_threshold_adc", po.core_threshold},
                               {"adc_core_volume_ml", core_ml},
                               {"implausible_lesion_count", implausible},
                               {"implausible_volume_ml", implausible_ml},
                               {"implausible_lesions_mode", implausible_lesions_name(mode)},
                               {"predicted_lesion_count", r.lesion_count},
                               {"predicted_lesion_volume_ml", r.lesion_volume_ml},
                               {"excluded_lesion_count", 0},
                               {"excluded_volume_ml", 0.0},
                               {"lesions", list}};
    char line[512];
    std::snprintf(line, sizeof(line), "ADC core (ADC < %.0f x 1e-6 mm2/s) %.1f ml", po.core_threshold, core_ml);
    plausibility_comment = line;
    if (implausible > 0) {
      std::snprintf(line, sizeof(line),
                    "%d of %d predicted lesion(s), %.1f ml, show no restricted diffusion (ADC not below %.0f x "
                    "1e-6 mm2/s) or an ADC below any brain tissue (under %.0f: fat or noise): not typical of an "
                    "acute infarct (T2 shine-through, chronic lesion, fat or artefact?); check them before acting "
                    "on the volume",
                    implausible, r.lesion_count, implausible_ml, po.core_threshold, po.min_tissue_adc);
      add_warning(r, line);
      plausibility_comment += std::string("; ") + line;
      overlay_warning = std::to_string(implausible) + (implausible == 1 ? " LESION" : " LESIONS") +
                        " NOT TYPICAL OF AN INFARCT (BLUE) - CHECK";
    }
    return flagged;
  }

  /// Runs `body` and always leaves report.json in `out_dir`: "done" when body succeeded,
  /// otherwise "failed" with the reason and error code. Never throws.
  template <typename Body>
  StudyReport run_and_report(const std::string& what, const std::string& out_dir, Body body) {
    StudyReport r;
    fill_model_fields(r);
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    base::Status s = ec ? base::internal_error("cannot create output folder " + out_dir + ": " + ec.message())
                        : body(r);
    if (s.ok()) {
      r.status = "done";
    } else {
      r.status = "failed";
      r.reason = s.message();
      r.extra["error_code"] = std::string(base::code_name(s.code()));
      SB_LOG(kWarning) << "study " << what << " failed: " << s.to_string();
    }
    if (!ec) {
      auto w = write_text_atomic(fs::path(out_dir) / "report.json", r.to_json().dump(2) + "\n");
      if (!w.ok()) {
        SB_LOG(kError) << "cannot write report: " << w.to_string();
        r.status = "failed";
        r.reason = w.message();
      }
    }
    return r;
  }

  /// DICOM study: series selection, volumes on the DWI grid, inference, mask + SEG.
  base::Status run_study(const std::string& study_dir, const std::string& out_dir, StudyReport& r) {
    // load: find series, pick DWI and ADC, assemble volumes on the DWI grid.
    auto t0 = Clock::now();
    report_progress("load", 0);
    SB_ASSIGN_OR_RETURN(auto scan, image::scan_dicom_folder(study_dir));
    image::ClassifierOptions classifier;
    classifier.b_target = diffusion.b_value;
    classifier.b_min = diffusion.b_min;
    classifier.b_max = diffusion.b_max;
    classifier.allow_b_outside_range = options.allow_b_outside_range;
    if (!scan.series.empty()) r.study_instance_uid = scan.series.front().study.study_instance_uid;
    r.extra["model_b_range_s_mm2"] = {diffusion.b_min, diffusion.b_max};
    auto selected = image::select_diffusion_series(scan.series, classifier);
    if (!selected.ok()) {
      if (selected.status().code() == base::Code::kOutOfRange) {
        return base::out_of_range(selected.status().message() +
                                  " (`strokebox segment --allow-b-outside-range`, or [model] allow_b_outside_range = "
                                  "true for the daemon)");
      }
      return selected.status();
    }
    const image::DiffusionSelection& choice = *selected;
    const image::DicomSeries& dwi_series = choice.dwi;
    const image::DicomSeries& adc_series = choice.adc;
    r.study_instance_uid = dwi_series.study.study_instance_uid;
    r.dwi_series_instance_uid = dwi_series.series_instance_uid;
    r.adc_series_instance_uid = adc_series.series_instance_uid;
    r.extra["series_selection"] = choice.reason;
    if (choice.dwi_b_value) r.extra["dwi_b_value"] = *choice.dwi_b_value;
    r.extra["adc_derived"] = choice.adc_derived;
    for (const std::string& w : choice.warnings) add_warning(r, w);
    nlohmann::json d;
    d["b_values_s_mm2"] = choice.b_values;
    d["dwi_b_value_s_mm2"] = choice.dwi_b_value ? nlohmann::json(*choice.dwi_b_value) : nlohmann::json();
    d["b_value_source"] = choice.b_value_source;
    d["b_outside_model_range"] = choice.b_outside_range;
    d["trace"] = choice.trace_computed ? "computed" : "given";
    d["dwi_source"] = choice.dwi_source;
    if (choice.trace_computed) {
      d["trace_volumes"] = choice.dwi_directions.size();
      d["trace_directions"] = choice.trace_direction_count;
    }
    d["adc"] = choice.adc_derived ? "derived" : "given";
    if (choice.adc_derived) {
      d["b0_value_s_mm2"] = choice.b0_value;
      d["b0_volumes"] = choice.b0_volumes.size();
      d["b0_untagged"] = choice.b0_untagged;
    }
    r.extra["diffusion"] = d;

    // The DWI: the scanner's trace image, or the geometric mean of the directions.
    base::Result<image::VolumeF> dwi = base::internal_error("no DWI");
    if (choice.trace_computed) {
      // One direction in memory at a time (a DTI series may hold 64 or more).
      image::GeometricMeanAccumulator trace;
      for (const image::DicomSeries& part : choice.dwi_directions) {
        auto v = image::assemble_volume(part);
        if (!v.ok()) return v.status().with_context("DWI direction volume of series " + part.series_instance_uid);
        SB_RETURN_IF_ERROR(trace.add(*v).with_context("computing the trace of series " + dwi_series.series_instance_uid));
      }
      dwi = trace.result();
      if (!dwi.ok()) return dwi.status().with_context("computing the trace of series " + dwi_series.series_instance_uid);
    } else {
      dwi = image::assemble_volume(dwi_series);
      if (!dwi.ok()) return dwi.status().with_context("DWI series " + dwi_series.series_instance_uid);
    }
    if (std::none_of(dwi->data.begin(), dwi->data.end(), [](float v) { return v != 0.0f; })) {
      return base::failed_precondition("the DWI of series " + image::describe_series(dwi_series) +
                                       " is zero in every voxel: the files hold no image (pixel data blanked, "
                                       "e.g. by an anonymizer); send the original images");
    }
    base::Result<image::VolumeF> adc = base::internal_error("no ADC");
    if (choice.adc_derived) {
      // No ADC series: compute it from the b=0 images (repeats averaged) and the DWI.
      std::vector<image::VolumeF> b0_parts;
      for (const image::DicomSeries& part : choice.b0_volumes) {
        auto v = image::assemble_volume(part);
        if (!v.ok()) return v.status().with_context("b=0 images of series " + part.series_instance_uid);
        b0_parts.push_back(std::move(*v));
      }
      auto b0 = b0_parts.size() == 1 ? base::Result<image::VolumeF>(std::move(b0_parts.front()))
                                     : image::arithmetic_mean(b0_parts);
      if (!b0.ok()) return b0.status().with_context("averaging the b=0 volumes");
      if (!b0->grid.same_as(dwi->grid)) {
        auto resampled = image::resample_to_grid(*b0, dwi->grid, 1);
        if (!resampled.ok()) return resampled.status().with_context("putting the b=0 images on the DWI grid");
        b0 = std::move(resampled);
      }
      if (!choice.dwi_b_value) return base::invalid_argument("cannot derive the ADC: the DWI has no b-value");
      image::AdcOptions adc_options;
      adc_options.b_low = choice.b0_value;
      image::AdcStats stats;
      adc = image::derive_adc(*b0, *dwi, *choice.dwi_b_value, adc_options, &stats);
      if (!adc.ok()) return adc.status().with_context("deriving the ADC");
      // Every brain tissue attenuates (apparent ADC 300 or more; free water about 3000): high-b
      // images no weaker than the b=0 ones are not diffusion-weighted, and a model would read
      // a T2-weighted image as DWI. Refused rather than segmented.
      constexpr double kMinMedianAdc = 150.0;  // 10^-6 mm^2/s, half the most restricted tissue
      const double median = stats.median_foreground_adc;
      r.extra["diffusion"]["median_head_adc"] = std::isfinite(median) ? nlohmann::json(median) : nlohmann::json();
      if (median < kMinMedianAdc) {
        // Names the series, not the one-direction part of it that `dwi` is for a computed trace.
        return base::failed_precondition(
            "the b=" + std::to_string(std::lround(*choice.dwi_b_value)) + " images of series #" +
            std::to_string(dwi_series.series_number) + " '" + dwi_series.series_description +
            "' are no weaker than its b=" + std::to_string(std::lround(choice.b0_value)) +
            " images (median apparent ADC in the head " + std::to_string(std::lround(median)) +
            " x 10^-6 mm^2/s; brain tissue gives 300 or more): they carry no diffusion weighting, so the DWI "
            "would be a T2-weighted image and no ADC can be derived. Check the scanner's export (b=0 images "
            "stored under a diffusion b-value?) and send the study again");
      }
      r.adc_series_instance_uid.clear();
      r.extra["adc_derived_from"] = {{"b0_series_instance_uid", choice.b0.series_instance_uid},
                                     {"b_low", choice.b0_value},
                                     {"b_high", *choice.dwi_b_value}};
    } else {
      adc = image::assemble_volume(adc_series);
      if (!adc.ok()) return adc.status().with_context("ADC series " + adc_series.series_instance_uid);
    }
    if (!adc->grid.same_as(dwi->grid)) {
      // Different acquisition grids: bring ADC onto the DWI grid (trilinear through the affines).
      auto resampled = image::resample_to_grid(*adc, dwi->grid, 1);
      if (!resampled.ok()) return resampled.status().with_context("putting ADC on the DWI grid");
      adc = std::move(resampled);
      r.extra["adc_resampled_to_dwi_grid"] = true;
    }
    r.timings_ms.emplace_back("load", ms_since(t0));
    report_progress("load", 1);
    if (options.write_inputs) {
      SB_RETURN_IF_ERROR(image::write_nifti((fs::path(out_dir) / "dwi.nii.gz").string(), *dwi));
      SB_RETURN_IF_ERROR(image::write_nifti((fs::path(out_dir) / "adc.nii.gz").string(), *adc));
      r.extra["inputs_saved"] = {"dwi.nii.gz", "adc.nii.gz"};
    }

    std::vector<image::VolumeF> channels(2);
    channels[dwi_channel] = std::move(*dwi);
    channels[adc_channel] = std::move(*adc);
    const auto spacing = channels[dwi_channel].grid.spacing_mm();
    SB_ASSIGN_OR_RETURN(auto mask, segment(channels, spacing, r, out_dir));

    auto tw = Clock::now();
    report_progress("write", 0);
    SB_RETURN_IF_ERROR(image::write_nifti((fs::path(out_dir) / "lesion_mask.nii.gz").string(), mask));
    nlohmann::json outputs = {"lesion_mask.nii.gz"};
    // A DICOM SEG (and the SR that references it) needs the source's Frame of Reference
    // (PS3.3 A.51); without one they are skipped and the study is still segmented.
    const bool has_frame_of_reference = !dwi_series.frame_of_reference_uid.empty();
    if (has_frame_of_reference) {
      SegAlgorithm algo;
      algo.name = "strokebox";
      algo.version = STROKEBOX_VERSION;
      algo.model_id = spec.model_id;
      SB_RETURN_IF_ERROR(write_seg(dwi_series, mask, algo, (fs::path(out_dir) / "seg.dcm").string())
                             .with_context("writing DICOM SEG"));
      outputs.push_back("seg.dcm");
    } else {
      add_warning(r, "the DWI series " + dwi_series.series_instance_uid +
                         " has no FrameOfReferenceUID (0020,0052): seg.dcm and sr.dcm, which must share the "
                         "source's Frame of Reference, were not written");
    }
    OverlayText text;
    text.lesion_volume_ml = r.lesion_volume_ml;
    text.lesion_count = r.lesion_count;
    text.model_id = spec.model_id;
    text.software_version = STROKEBOX_VERSION;
    text.warning = overlay_warning;
    SB_RETURN_IF_ERROR(write_overlay_series(dwi_series, channels[dwi_channel], display_mask, text,
                                            (fs::path(out_dir) / "overlay").string())
                           .with_context("writing the overlay series"));
    outputs.push_back("overlay/");
    if (has_frame_of_reference) {
      // The SR states the measurement and references the SEG it was made on (TID 1500).
      SrFacts facts;
      facts.lesion_volume_ml = r.lesion_volume_ml;
      facts.lesion_count = r.lesion_count;
      facts.algorithm_version = STROKEBOX_VERSION;
      facts.model_id = spec.model_id;
      facts.plausibility_comment = plausibility_comment;
      SB_RETURN_IF_ERROR(read_instance_uids(fs::path(out_dir) / "seg.dcm", facts.seg_sop_instance_uid,
                                            facts.seg_series_instance_uid));
      SB_RETURN_IF_ERROR(
          write_sr(dwi_series, facts, (fs::path(out_dir) / "sr.dcm").string()).with_context("writing the DICOM SR"));
      outputs.push_back("sr.dcm");
    }
    r.extra["outputs"] = outputs;
    r.timings_ms.emplace_back("write", ms_since(tw));
    report_progress("write", 1);
    return base::ok_status();
  }

  /// NIfTI images in the model's channel order: inference, mask on the first image's grid.
  base::Status run_nifti(const std::vector<std::string>& images, const std::string& out_dir, StudyReport& r) {
    if (images.size() != spec.channels.size())
      return base::invalid_argument("the model takes " + std::to_string(spec.channels.size()) +
                                    " images (one --image per channel), got " + std::to_string(images.size()));
    auto t0 = Clock::now();
    std::vector<image::VolumeF> channels;
    std::array<double, 3> pixdim{};
    for (size_t c = 0; c < images.size(); ++c) {
      std::array<double, 3> p{};
      SB_ASSIGN_OR_RETURN(auto v, image::read_nifti(images[c], &p));
      if (c == 0)
        pixdim = p;
      else if (v.grid.dims != channels[0].grid.dims)
        return base::invalid_argument("image " + images[c] + " has a different size than " + images[0] +
                                      ": nnU-Net needs all channels on one grid");
      channels.push_back(std::move(v));
    }
    r.timings_ms.emplace_back("load", ms_since(t0));
    // nnU-Net computes with the file's pixdim, not the affine's column norms.
    SB_ASSIGN_OR_RETURN(auto mask, segment(channels, pixdim, r, out_dir));
    auto tw = Clock::now();
    SB_RETURN_IF_ERROR(image::write_nifti((fs::path(out_dir) / "lesion_mask.nii.gz").string(), mask));
    r.timings_ms.emplace_back("write", ms_since(tw));
    return base::ok_status();
  }
};

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;

base::Result<std::unique_ptr<Pipeline>> Pipeline::create(const PipelineOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  SB_ASSIGN_OR_RETURN(impl->spec, inference::load_model_spec(options.model_dir));
  SB_ASSIGN_OR_RETURN(impl->diffusion, read_model_diffusion(options.model_dir));
  SB_ASSIGN_OR_RETURN(impl->postprocessing, read_model_postprocessing(options.model_dir));
  if (options.implausible_lesions) impl->postprocessing.implausible_lesions = *options.implausible_lesions;
  if (options.use_mirroring) impl->spec.use_mirroring = *options.use_mirroring;
  if (options.tile_step_size) {
    if (!(*options.tile_step_size > 0.0 && *options.tile_step_size <= 1.0))
      return base::invalid_argument("tile step size must be in (0, 1], got " +
                                    std::to_string(*options.tile_step_size));
    impl->spec.tile_step_size = *options.tile_step_size;
  }
  // The pipeline feeds DWI and ADC; find them by name so any channel order works.
  impl->dwi_channel = impl->adc_channel = -1;
  for (size_t c = 0; c < impl->spec.channels.size(); ++c) {
    const std::string name = lower(impl->spec.channels[c].name);
    if (name.find("dwi") != std::string::npos || name.find("b1000") != std::string::npos ||
        name.find("trace") != std::string::npos)
      impl->dwi_channel = static_cast<int>(c);
    else if (name.find("adc") != std::string::npos)
      impl->adc_channel = static_cast<int>(c);
  }
  if (impl->spec.channels.size() != 2 || impl->dwi_channel < 0 || impl->adc_channel < 0)
    return base::invalid_argument("model " + options.model_dir +
                                  " must have exactly two channels named DWI and ADC in model.json");
  if (!impl->spec.channels[impl->dwi_channel].unit.empty())
    return base::invalid_argument("model " + options.model_dir + ": channel '" +
                                  impl->spec.channels[impl->dwi_channel].name +
                                  "' has a unit, but only the ADC channel can have one (model.json)");
  inference::EngineOptions engine_options;
  engine_options.precision = options.precision;
  std::vector<inference::PatchModel*> networks;
  for (const auto& network : impl->spec.networks) {
    // The compiled engine file beside the ONNX (or in the engine cache when the model folder is
    // read-only) is reused when valid, else built and saved.
    const std::string path = onnx_path_for_engine(fs::path(options.model_dir) / network, options.engine_cache_dir);
    bool built = false;
    SB_ASSIGN_OR_RETURN(auto engine, inference::load_or_build_engine(path, engine_options, &built));
    SB_LOG(kInfo) << (built ? "built engine for " : "loaded engine file for ") << path;
    networks.push_back(engine.get());
    impl->engines.push_back(std::move(engine));
  }
  if (impl->engines.empty()) return base::invalid_argument("model.json lists no networks");
  SB_ASSIGN_OR_RETURN(impl->predictor, inference::NnunetPredictor::create(impl->spec, networks));
  if (options.max_preprocessed_voxels > 0) {
    SB_RETURN_IF_ERROR(impl->predictor->reserve(options.max_preprocessed_voxels)
                           .with_context("preallocating the sliding window for model.max_preprocessed_voxels = " +
                                         std::to_string(options.max_preprocessed_voxels)));
    SB_LOG(kInfo) << "sliding window preallocated: " << impl->predictor->reserved_bytes() / (1024.0 * 1024.0)
                  << " MiB for up to " << options.max_preprocessed_voxels << " voxels per channel";
  }
  SB_LOG(kInfo) << "model " << impl->spec.model_id << " loaded: " << impl->engines.size()
                << " network(s), " << impl->engines.front()->backend() << " "
                << impl->engines.front()->precision() << ", arena "
                << impl->engines.front()->arena_bytes() / (1024.0 * 1024.0) << " MiB";
  return std::unique_ptr<Pipeline>(new Pipeline(std::move(impl)));
}

StudyReport Pipeline::process_study(const std::string& study_dir, const std::string& out_dir,
                                    const inference::ProgressFn& progress) {
  impl_->progress = progress;
  StudyReport r =
      impl_->run_and_report(study_dir, out_dir, [&](StudyReport& r) { return impl_->run_study(study_dir, out_dir, r); });
  impl_->progress = nullptr;
  return r;
}

size_t Pipeline::reserved_bytes() const { return impl_->predictor->reserved_bytes(); }

StudyReport Pipeline::process_nifti(const std::vector<std::string>& images, const std::string& out_dir) {
  const std::string what = images.empty() ? std::string("(no images)") : images.front();
  return impl_->run_and_report(what, out_dir, [&](StudyReport& r) { return impl_->run_nifti(images, out_dir, r); });
}

}  // namespace firmware
