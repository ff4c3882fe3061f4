#include "image/series_classifier.h"

#include <algorithm>
#include <cctype>
#include <cmath>
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
                     [](const DicomInstance& i) { return i.rows > 0 && i.columns > 0; });
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

/// A DWI candidate: one series restricted to one b-value.
struct DwiCandidate {
  size_t series_index = 0;
  std::optional<double> b;
  std::vector<DicomInstance> instances;
  bool one_per_position = true;
  int series_number = 0;
};

/// Sort key, smaller is better.
std::tuple<int, double, int, int> dwi_rank(const DwiCandidate& c, const ClassifierOptions& o) {
  return {c.b ? 0 : 1, c.b ? std::abs(*c.b - o.b_target) : 0.0, c.one_per_position ? 0 : 1, -c.series_number};
}

}  // namespace

SeriesClassification classify_series(const DicomSeries& series) {
  SeriesClassification out;
  std::set<double> bs;
  for (const DicomInstance& inst : series.instances) {
    if (inst.b_value) bs.insert(static_cast<double>(std::lround(*inst.b_value)));
  }
  out.b_values.assign(bs.begin(), bs.end());
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

  std::vector<DwiCandidate> dwi;
  std::vector<size_t> adc;
  for (size_t idx = 0; idx < series.size(); ++idx) {
    const DicomSeries& s = series[idx];
    const SeriesClassification c = classify_series(s);
    if (c.kind == SeriesKind::kAdc) {
      adc.push_back(idx);
      continue;
    }
    if (c.kind != SeriesKind::kDwi) continue;
    if (!c.b_values.empty()) {
      // Closest b-value in range; instances without a b-value are left out.
      std::optional<double> best;
      for (double b : c.b_values) {
        if (b < options.b_min || b > options.b_max) continue;
        if (!best || std::abs(b - options.b_target) < std::abs(*best - options.b_target)) best = b;
      }
      if (!best) continue;
      DwiCandidate cand;
      cand.series_index = idx;
      cand.b = best;
      cand.series_number = s.series_number;
      for (const DicomInstance& inst : s.instances) {
        if (inst.b_value && std::lround(*inst.b_value) == std::lround(*best)) cand.instances.push_back(inst);
      }
      cand.one_per_position = distinct_positions(cand.instances) == cand.instances.size();
      dwi.push_back(std::move(cand));
    } else {
      // No b-value in the headers: accept on ImageType/description evidence with low priority.
      DwiCandidate cand;
      cand.series_index = idx;
      cand.series_number = s.series_number;
      cand.instances = s.instances;
      cand.one_per_position = distinct_positions(cand.instances) == cand.instances.size();
      dwi.push_back(std::move(cand));
    }
  }
  if (dwi.empty()) {
    return base::not_found("no DWI series with b between " + format_b(options.b_min) + " and " +
                           format_b(options.b_max) + " s/mm^2 found in study " + study_uid +
                           ": series were " + list_series(series));
  }
  std::stable_sort(dwi.begin(), dwi.end(), [&](const DwiCandidate& a, const DwiCandidate& b) {
    return dwi_rank(a, options) < dwi_rank(b, options);
  });
  const DwiCandidate& chosen = dwi.front();
  const DicomSeries& dwi_series = series[chosen.series_index];
  std::ostringstream reason;
  reason << "DWI " << describe_series(dwi_series);
  if (chosen.b) {
    reason << " at b=" << format_b(*chosen.b) << " (" << chosen.instances.size() << " of "
           << dwi_series.instances.size() << " instances)";
  } else {
    reason << " (no b-value in the headers; chosen by ImageType/description)";
  }
  size_t ties = 0;
  for (size_t i = 1; i < dwi.size(); ++i) {
    const auto ra = dwi_rank(dwi[i], options), rc = dwi_rank(chosen, options);
    if (std::get<0>(ra) == std::get<0>(rc) && std::get<1>(ra) == std::get<1>(rc) && std::get<2>(ra) == std::get<2>(rc)) {
      ++ties;
    }
  }
  if (ties > 0) {
    reason << "; " << ties + 1 << " equally good DWI series, chose the latest (highest series number)";
  }

  const size_t dwi_slices = distinct_positions(chosen.instances);
  const DicomInstance& dwi_first = chosen.instances.front();
  if (adc.empty()) {
    // No ADC series: find b=0 images to derive one, first in the DWI series itself, then in the
    // other diffusion series of the same geometry (nearest series number first).
    std::vector<size_t> sources = {chosen.series_index};
    std::vector<size_t> others;
    for (size_t idx = 0; idx < series.size(); ++idx) {
      if (idx == chosen.series_index || classify_series(series[idx]).kind != SeriesKind::kDwi) continue;
      const DicomSeries& s = series[idx];
      const bool same_for = !s.frame_of_reference_uid.empty() && s.frame_of_reference_uid == dwi_series.frame_of_reference_uid;
      if (same_for) others.push_back(idx);
    }
    std::stable_sort(others.begin(), others.end(), [&](size_t a, size_t b) {
      return std::abs(series[a].series_number - dwi_series.series_number) <
             std::abs(series[b].series_number - dwi_series.series_number);
    });
    sources.insert(sources.end(), others.begin(), others.end());
    for (size_t idx : sources) {
      if (!chosen.b) break;  // the DWI's b-value is needed for the formula
      const DicomSeries& s = series[idx];
      std::optional<double> lowest;
      for (const DicomInstance& inst : s.instances) {
        if (inst.b_value && *inst.b_value >= 0 && *inst.b_value <= options.b0_max && (!lowest || *inst.b_value < *lowest)) {
          lowest = *inst.b_value;
        }
      }
      if (!lowest) continue;
      std::vector<DicomInstance> b0;
      for (const DicomInstance& inst : s.instances) {
        if (inst.b_value && std::lround(*inst.b_value) == std::lround(*lowest)) b0.push_back(inst);
      }
      if (distinct_positions(b0) != dwi_slices || b0.front().rows != dwi_first.rows ||
          b0.front().columns != dwi_first.columns) {
        continue;
      }
      DiffusionSelection out;
      out.dwi = dwi_series;
      out.dwi.instances = chosen.instances;
      out.dwi_b_value = chosen.b;
      out.adc_derived = true;
      out.b0 = s;
      out.b0.instances = std::move(b0);
      out.b0_value = *lowest;
      reason << "; no ADC series: ADC derived from b=" << format_b(*lowest) << " images of "
             << describe_series(s) << " (" << out.b0.instances.size() << " instances)";
      out.reason = reason.str();
      return out;
    }
    return base::not_found("no ADC series found in study " + study_uid +
                           ", and no b=0 images on the DWI's geometry to derive one from: series were " +
                           list_series(series));
  }
  const auto adc_rank = [&](size_t idx) {
    const DicomSeries& s = series[idx];
    const DicomInstance& f = s.instances.front();
    const bool same_for = !s.frame_of_reference_uid.empty() && s.frame_of_reference_uid == dwi_series.frame_of_reference_uid;
    const bool same_slices = distinct_positions(s.instances) == dwi_slices;
    const bool same_matrix = f.rows == dwi_first.rows && f.columns == dwi_first.columns;
    return std::make_tuple(same_for ? 0 : 1, same_slices ? 0 : 1, same_matrix ? 0 : 1,
                           std::abs(s.series_number - dwi_series.series_number), -s.series_number);
  };
  std::stable_sort(adc.begin(), adc.end(), [&](size_t a, size_t b) { return adc_rank(a) < adc_rank(b); });
  const DicomSeries& adc_series = series[adc.front()];
  reason << "; ADC " << describe_series(adc_series);
  if (adc.size() > 1) reason << " (of " << adc.size() << " ADC series: nearest in geometry and series number)";

  DiffusionSelection out;
  out.dwi = dwi_series;
  out.dwi.instances = chosen.instances;
  out.dwi_b_value = chosen.b;
  out.adc = adc_series;
  out.reason = reason.str();
  return out;
}

}  // namespace image
