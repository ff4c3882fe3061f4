#include "image/series_classifier.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace image {
namespace {

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// Splits an upper-cased description into alphanumeric words ("EP2D_DIFF_ADC" -> EP2D, DIFF, ADC).
std::set<std::string> words(const std::string& s) {
  std::set<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      cur += c;
    } else if (!cur.empty()) {
      out.insert(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) out.insert(cur);
  return out;
}

bool has_image_type(const DicomSeries& s, const std::string& value) {
  for (const DicomInstance& inst : s.instances) {
    if (std::find(inst.image_type.begin(), inst.image_type.end(), value) != inst.image_type.end()) return true;
  }
  return false;
}

bool is_image_series(const DicomSeries& s) {
  if (s.instances.empty()) return false;
  if (!s.modality.empty() && s.modality != "MR") return false;
  return std::all_of(s.instances.begin(), s.instances.end(),
                     [](const DicomInstance& i) { return i.holds_image(); });
}

/// Number of distinct slice positions (rounded to 0.01 mm) among the instances.
size_t distinct_positions(const std::vector<DicomInstance>& instances) {
  std::set<std::tuple<long, long, long>> positions;
  for (const DicomInstance& i : instances) {
    if (!i.image_position_patient) return instances.size();
    const auto& p = *i.image_position_patient;
    positions.insert({std::lround(p[0] * 100), std::lround(p[1] * 100), std::lround(p[2] * 100)});
  }
  return positions.size();
}

std::string format_b(double b) {
  std::ostringstream s;
  s << std::lround(b);
  return s.str();
}

std::string list_series(const std::vector<DicomSeries>& series) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < series.size(); ++i) {
    const SeriesClassification c = classify_series(series[i]);
    s << (i ? "; " : "") << describe_series(series[i]);
    if (!c.why.empty()) s << " (" << c.why << ")";
  }
  s << "]";
  return s.str();
}

/// A DWI candidate: the volumes of one series at one b-value.
struct DwiCandidate {
  size_t series_index = 0;
  std::optional<double> b;
  const DiffusionVolume* trace = nullptr;            // the scanner's trace image
  std::vector<const DiffusionVolume*> directions;    // directional volumes
  std::vector<const DiffusionVolume*> unspecified;   // directionality not stated
  int series_number = 0;
};

bool in_range(double b, const ClassifierOptions& o) { return b >= o.b_min && b <= o.b_max; }

/// Sort key, smaller is better.
std::tuple<int, int, double, int, int> dwi_rank(const DwiCandidate& c, const ClassifierOptions& o) {
  return {c.b ? 0 : 1, c.b && in_range(*c.b, o) ? 0 : 1, c.b ? std::abs(*c.b - o.b_target) : 0.0, c.trace ? 0 : 1,
          -c.series_number};
}

size_t matrix_rows(const DicomSeries& s) { return s.instances.empty() ? 0 : static_cast<size_t>(s.instances.front().rows); }
size_t matrix_cols(const DicomSeries& s) { return s.instances.empty() ? 0 : static_cast<size_t>(s.instances.front().columns); }

bool same_geometry(const DicomSeries& a, const DicomSeries& b) {
  return distinct_positions(a.instances) == distinct_positions(b.instances) && matrix_rows(a) == matrix_rows(b) &&
         matrix_cols(a) == matrix_cols(b);
}

std::string format_b_list(const std::vector<double>& bs) {
  std::ostringstream s;
  for (size_t i = 0; i < bs.size(); ++i) s << (i ? ", " : "") << format_b(bs[i]);
  return s.str();
}

}  // namespace

SeriesClassification classify_series(const DicomSeries& series) {
  SeriesClassification out;
  std::set<double> bs;
  bool only_ge_zero = true;  // GE writes (0043,xx39) on every image, diffusion or not
  for (const DicomInstance& inst : series.instances) {
    if (!inst.b_value) continue;
    bs.insert(static_cast<double>(std::lround(*inst.b_value)));
    if (inst.b_value_source != "GE (0043,xx39)" || *inst.b_value > 50.0) only_ge_zero = false;
  }
  // A GE series whose only "b-value" is 0 from that private element is not evidence of
  // diffusion (a T1 or T2 series carries it too); its images are then not b0 candidates.
  if (!only_ge_zero) out.b_values.assign(bs.begin(), bs.end());
  if (!is_image_series(series)) {
    out.why = series.modality.empty() || series.modality == "MR" ? "not an image series" : "modality " + series.modality;
    return out;
  }
  const std::string desc = upper(series.series_description);
  const std::set<std::string> desc_words = words(desc);
  const auto has_word = [&](const std::string& w) { return desc_words.count(w) > 0; };

  if (has_image_type(series, "EADC") || has_image_type(series, "EXP") || has_word("EADC") ||
      contains(desc, "EXPONENTIAL") || has_image_type(series, "FA") || has_word("FA") ||
      has_image_type(series, "TENSOR")) {
    out.why = "derived diffusion map that is neither ADC nor DWI (exponential ADC, FA or tensor)";
    return out;
  }
  const bool all_adc = std::all_of(series.instances.begin(), series.instances.end(), [](const DicomInstance& i) {
    return std::find(i.image_type.begin(), i.image_type.end(), "ADC") != i.image_type.end();
  });
  if (has_image_type(series, "ADC") && !all_adc && !out.b_values.empty()) {
    // The scanner's ADC in the same series as the diffusion images (one Enhanced MR file,
    // or a series holding every image): a DWI series whose ADC volume is taken from within.
    out.kind = SeriesKind::kDwi;
    out.why = "diffusion images and ADC images in one series";
    return out;
  }
  if (has_image_type(series, "ADC")) {
    out.kind = SeriesKind::kAdc;
    out.why = "ImageType has ADC";
    return out;
  }
  if (has_word("ADC") || contains(desc, "APPARENT DIFFUSION") || contains(desc, "_ADC") || contains(desc, "ADC_")) {
    out.kind = SeriesKind::kAdc;
    out.why = "description names ADC";
    return out;
  }
  std::ostringstream why;
  bool dwi = false;
  if (!out.b_values.empty()) {
    why << "b-values ";
    for (size_t i = 0; i < out.b_values.size(); ++i) why << (i ? ", " : "") << format_b(out.b_values[i]);
    dwi = true;
  }
  if (has_image_type(series, "DIFFUSION") || has_image_type(series, "TRACEW") || has_image_type(series, "TRACE")) {
    why << (dwi ? "; " : "") << "ImageType has DIFFUSION/TRACE";
    dwi = true;
  }
  const bool desc_hint = has_word("DWI") || has_word("TRACE") || has_word("TRACEW") || contains(desc, "B1000") ||
                         contains(desc, "DIFF") || has_word("B1000");
  if (desc_hint) {
    why << (dwi ? "; " : "") << "description suggests DWI";
    dwi = true;
  }
  if (dwi) out.kind = SeriesKind::kDwi;
  out.why = why.str();
  return out;
}

base::Result<DiffusionSelection> select_diffusion_series(const std::vector<DicomSeries>& series,
                                                         const ClassifierOptions& options) {
  std::set<std::string> studies;
  for (const DicomSeries& s : series) studies.insert(s.study.study_instance_uid);
  if (series.empty()) return base::not_found("no series given: the study folder holds no DICOM images");
  if (studies.size() > 1) {
    std::ostringstream s;
    for (const std::string& uid : studies) s << (s.tellp() > 0 ? ", " : "") << uid;
    return base::invalid_argument("the images belong to " + std::to_string(studies.size()) + " studies (" + s.str() +
                                  "); segment one study at a time");
  }
  const std::string study_uid = *studies.begin();

  // Every diffusion series as volumes; ADC series and the ADC images inside diffusion series.
  std::vector<std::vector<DiffusionVolume>> volumes(series.size());
  std::vector<bool> is_dwi(series.size(), false);
  std::vector<size_t> adc;
  std::vector<DwiCandidate> dwi;
  std::set<double> outside;  // b > b0_max found outside [b_min, b_max]
  std::ostringstream passed_over;
  for (size_t idx = 0; idx < series.size(); ++idx) {
    const DicomSeries& s = series[idx];
    const SeriesClassification c = classify_series(s);
    if (c.kind == SeriesKind::kAdc) {
      adc.push_back(idx);
      continue;
    }
    if (c.kind != SeriesKind::kDwi) continue;
    auto split = split_diffusion_volumes(s, options.b0_max);
    if (!split.ok()) {
      passed_over << "; passed over " << describe_series(s) << ": " << split.status().message();
      continue;
    }
    volumes[idx] = std::move(*split);
    is_dwi[idx] = true;
    // Shells: b-values within 5 % of the shell's lowest are one b (scanners report the actual
    // b per direction, e.g. 995 and 1005 for a nominal 1000); the shell's b is its most common.
    std::set<long> distinct;
    for (const DiffusionVolume& v : volumes[idx]) {
      if (v.kind != DiffusionImageKind::kB0 && v.kind != DiffusionImageKind::kAdc && v.b_value) {
        distinct.insert(std::lround(*v.b_value));
      }
    }
    std::map<long, long> shell_of;  // b -> lowest b of its shell
    long shell_start = -1;
    for (long b : distinct) {
      if (shell_start < 0 || static_cast<double>(b) > 1.05 * static_cast<double>(shell_start)) shell_start = b;
      shell_of[b] = shell_start;
    }
    std::map<long, std::map<long, int>> shell_counts;  // shell -> b -> volumes
    std::map<long, DwiCandidate> by_b;
    for (const DiffusionVolume& v : volumes[idx]) {
      if (v.kind == DiffusionImageKind::kB0 || v.kind == DiffusionImageKind::kAdc) continue;
      const long key = v.b_value ? shell_of[std::lround(*v.b_value)] : -1;
      if (v.b_value) ++shell_counts[key][std::lround(*v.b_value)];
      DwiCandidate& cand = by_b[key];
      cand.series_index = idx;
      cand.series_number = s.series_number;
      if (v.kind == DiffusionImageKind::kTrace && cand.trace == nullptr) cand.trace = &v;
      if (v.kind == DiffusionImageKind::kDirectional) cand.directions.push_back(&v);
      if (v.kind == DiffusionImageKind::kUnspecified) cand.unspecified.push_back(&v);
    }
    for (auto& [key, cand] : by_b) {
      if (key < 0) continue;
      long best = key;
      int best_count = 0;
      for (const auto& [b, count] : shell_counts[key]) {
        if (count > best_count) {
          best = b;
          best_count = count;
        }
      }
      cand.b = static_cast<double>(best);
    }
    for (auto& [key, cand] : by_b) {
      if (cand.b && !in_range(*cand.b, options)) outside.insert(*cand.b);
      dwi.push_back(std::move(cand));
    }
  }
  if (dwi.empty()) {
    return base::not_found("no DWI series found in study " + study_uid + " (diffusion images with b above " +
                           format_b(options.b0_max) + " s/mm^2, or a DWI/TRACE series): series were " +
                           list_series(series) + passed_over.str());
  }
  std::stable_sort(dwi.begin(), dwi.end(), [&](const DwiCandidate& a, const DwiCandidate& b) {
    return dwi_rank(a, options) < dwi_rank(b, options);
  });
  const DwiCandidate& chosen = dwi.front();
  const DicomSeries& dwi_series = series[chosen.series_index];
  DiffusionSelection out;
  if (chosen.b && !in_range(*chosen.b, options)) {
    const std::vector<double> found(outside.begin(), outside.end());
    const std::string what = "the study's diffusion images are at b = " + format_b_list(found) +
                             " s/mm^2, outside the b-value range the model accepts (" + format_b(options.b_min) +
                             " to " + format_b(options.b_max) + " s/mm^2, trained at " +
                             format_b(options.b_target) + ")";
    if (!options.allow_b_outside_range) {
      return base::out_of_range(what + "; DWI series " + describe_series(dwi_series) +
                                ". Use a model trained for this b-value, or allow b-values outside the model's "
                                "range to segment it anyway with a warning");
    }
    out.b_outside_range = true;
    out.warnings.push_back(what + ": segmented at b = " + format_b(*chosen.b) +
                           " because b-values outside the range are allowed; the result may be less reliable");
  }

  std::ostringstream reason;
  reason << "DWI " << describe_series(dwi_series);
  out.dwi_b_value = chosen.b;
  if (chosen.trace != nullptr) {
    out.dwi = chosen.trace->images;
    out.dwi_source = "scanner trace image";
    const DicomInstance& f = out.dwi.instances.front();
    if (!f.diffusion_directionality.empty()) out.dwi_source += " (Directionality " + f.diffusion_directionality + ")";
    reason << " at b=" << format_b(*chosen.b) << ": the scanner's trace image (" << out.dwi.instances.size()
           << " of " << dwi_series.instances.size() << " images)";
  } else {
    const std::vector<const DiffusionVolume*>& parts = chosen.directions.empty() ? chosen.unspecified : chosen.directions;
    if (parts.size() == 1) {
      out.dwi = parts.front()->images;
      out.dwi_source = chosen.directions.empty() ? "DWI as sent (no trace or direction information)"
                                                 : "a single gradient direction (no trace image sent)";
      if (!chosen.directions.empty()) {
        out.trace_computed = true;
        out.dwi_directions.push_back(parts.front()->images);
        out.trace_direction_count = 1;
        out.warnings.push_back("the DWI series holds one gradient direction at b = " + format_b(*chosen.b) +
                               " and no trace image: that direction stands for the trace");
      }
    } else {
      out.trace_computed = true;
      std::set<std::tuple<long, long, long>> distinct;
      for (const DiffusionVolume* v : parts) {
        out.dwi_directions.push_back(v->images);
        if (v->direction) {
          distinct.insert({std::lround((*v->direction)[0] * 1000), std::lround((*v->direction)[1] * 1000),
                           std::lround((*v->direction)[2] * 1000)});
        }
      }
      out.trace_direction_count = chosen.directions.empty() ? static_cast<int>(parts.size())
                                                            : static_cast<int>(distinct.size());
      out.dwi = parts.front()->images;
      out.dwi_source = "geometric mean of " + std::to_string(parts.size()) + " volumes (" +
                       std::to_string(out.trace_direction_count) +
                       (chosen.directions.empty() ? " images per position, directionality not stated)" : " directions)");
    }
    if (chosen.b) {
      reason << " at b=" << format_b(*chosen.b) << ": " << out.dwi_source;
    } else {
      reason << " (no b-value in the headers; chosen by ImageType/description)";
    }
  }
  for (const DicomInstance& inst : out.dwi.instances) {
    if (!inst.b_value_source.empty()) {
      out.b_value_source = inst.b_value_source;
      break;
    }
  }
  {
    std::set<double> bs;
    for (const DiffusionVolume& v : volumes[chosen.series_index]) {
      if (v.b_value) bs.insert(*v.b_value);
    }
    out.b_values.assign(bs.begin(), bs.end());
  }
  size_t ties = 0;
  for (size_t i = 1; i < dwi.size(); ++i) {
    const auto ra = dwi_rank(dwi[i], options), rc = dwi_rank(chosen, options);
    if (std::get<0>(ra) == std::get<0>(rc) && std::get<1>(ra) == std::get<1>(rc) && std::get<2>(ra) == std::get<2>(rc) &&
        std::get<3>(ra) == std::get<3>(rc)) {
      ++ties;
    }
  }
  if (ties > 0) reason << "; " << ties + 1 << " equally good DWI series, chose the latest (highest series number)";

  const auto same_for = [&](const DicomSeries& s) { return s.frame_of_reference_uid == dwi_series.frame_of_reference_uid; };

  // The scanner's ADC: ADC images in the DWI series itself, else the best ADC series.
  const DiffusionVolume* inner_adc = nullptr;
  for (const DiffusionVolume& v : volumes[chosen.series_index]) {
    if (v.kind == DiffusionImageKind::kAdc && same_geometry(v.images, out.dwi)) {
      inner_adc = &v;
      break;
    }
  }
  if (inner_adc != nullptr) {
    out.adc = inner_adc->images;
    reason << "; ADC: the scanner's ADC images in the same series (" << out.adc.instances.size() << " images)";
    out.reason = reason.str() + passed_over.str();
    return out;
  }
  if (!adc.empty()) {
    const auto adc_rank = [&](size_t idx) {
      const DicomSeries& s = series[idx];
      return std::make_tuple(same_for(s) ? 0 : 1, distinct_positions(s.instances) == distinct_positions(out.dwi.instances) ? 0 : 1,
                             matrix_rows(s) == matrix_rows(out.dwi) && matrix_cols(s) == matrix_cols(out.dwi) ? 0 : 1,
                             std::abs(s.series_number - dwi_series.series_number), -s.series_number);
    };
    std::stable_sort(adc.begin(), adc.end(), [&](size_t a, size_t b) { return adc_rank(a) < adc_rank(b); });
    const DicomSeries& adc_series = series[adc.front()];
    out.adc = adc_series;
    // An ADC series holding repeats (several images per position): its first volume.
    if (distinct_positions(adc_series.instances) != adc_series.instances.size()) {
      auto split = split_diffusion_volumes(adc_series, options.b0_max);
      if (split.ok() && !split->empty()) {
        out.adc = split->front().images;
        out.warnings.push_back("the ADC series " + describe_series(adc_series) + " holds " +
                               std::to_string(split->size()) + " images per position; the first volume is used");
      }
    }
    reason << "; ADC " << describe_series(adc_series);
    if (adc.size() > 1) reason << " (of " << adc.size() << " ADC series: nearest in geometry and series number)";
    out.reason = reason.str() + passed_over.str();
    return out;
  }

  // No ADC: b0 volumes to derive one, first in the DWI series itself, then in the other
  // diffusion series of the same Frame of Reference and geometry (nearest series number first).
  if (!chosen.b) {
    return base::not_found("no ADC series found in study " + study_uid +
                           ", and the DWI has no b-value to derive one from: series were " + list_series(series));
  }
  std::vector<size_t> sources = {chosen.series_index};
  std::vector<size_t> others;
  for (size_t idx = 0; idx < series.size(); ++idx) {
    if (idx != chosen.series_index && is_dwi[idx] && same_for(series[idx])) others.push_back(idx);
  }
  std::stable_sort(others.begin(), others.end(), [&](size_t a, size_t b) {
    return std::abs(series[a].series_number - dwi_series.series_number) <
           std::abs(series[b].series_number - dwi_series.series_number);
  });
  sources.insert(sources.end(), others.begin(), others.end());
  for (size_t idx : sources) {
    std::optional<double> lowest;
    for (const DiffusionVolume& v : volumes[idx]) {
      if (v.kind == DiffusionImageKind::kB0 && v.b_value && (!lowest || *v.b_value < *lowest)) lowest = v.b_value;
    }
    if (!lowest) continue;
    for (const DiffusionVolume& v : volumes[idx]) {
      if (v.kind != DiffusionImageKind::kB0 || !v.b_value || *v.b_value != *lowest) continue;
      if (!same_geometry(v.images, out.dwi)) continue;
      out.b0_volumes.push_back(v.images);
      out.b0_untagged = out.b0_untagged || v.b_untagged;
    }
    if (out.b0_volumes.empty()) continue;
    out.adc_derived = true;
    out.b0 = out.b0_volumes.front();
    out.b0_value = *lowest;
    reason << "; no ADC series: ADC derived from b=" << format_b(*lowest) << " images (" << out.b0_volumes.size()
           << (out.b0_volumes.size() == 1 ? " volume" : " volumes, averaged") << ") of " << describe_series(series[idx]);
    if (out.b0_untagged) {
      reason << " (images without a b-value, taken as b=0 because the other images of the series carry one)";
      out.warnings.push_back("images without a b-value in series " + describe_series(series[idx]) +
                             " were taken as b=0 (the series' other images carry b-values)");
    }
    out.reason = reason.str() + passed_over.str();
    return out;
  }
  return base::not_found("no ADC series found in study " + study_uid +
                         ", and no b=0 images on the DWI's geometry to derive one from: series were " +
                         list_series(series) + passed_over.str());
}

}  // namespace image
