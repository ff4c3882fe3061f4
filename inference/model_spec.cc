// model.json parsing and validation (docs/model_package.md) and the nnU-Net plans converter.
#include "inference/model_spec.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

namespace inference {
namespace {

using json = nlohmann::json;

base::Status bad(const std::string& field, const std::string& what) {
  return base::invalid_argument("model.json: " + field + ": " + what);
}

std::string type_name(const json& j) { return j.type_name(); }

// Field accessors: each returns a clear error naming `path` when missing or of the wrong type.
base::Result<const json*> get(const json& obj, const std::string& key, const std::string& path, bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || (it->is_null() && required)) {
    if (required) return bad(path, "missing (required)");
    return static_cast<const json*>(nullptr);
  }
  return &*it;
}

base::Result<std::string> get_string(const json& v, const std::string& path) {
  if (!v.is_string()) return bad(path, "expected a string, got " + type_name(v));
  return v.get<std::string>();
}

base::Result<double> get_number(const json& v, const std::string& path) {
  if (!v.is_number()) return bad(path, "expected a number, got " + type_name(v));
  const double d = v.get<double>();
  if (!std::isfinite(d)) return bad(path, "expected a finite number");
  return d;
}

base::Result<int64_t> get_int(const json& v, const std::string& path) {
  if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d)) return static_cast<int64_t>(d);
  }
  return bad(path, "expected an integer, got " + (v.is_number() ? v.dump() : type_name(v)));
}

base::Result<bool> get_bool(const json& v, const std::string& path) {
  if (!v.is_boolean()) return bad(path, "expected true or false, got " + type_name(v));
  return v.get<bool>();
}

base::Result<std::array<double, 3>> get_double3(const json& v, const std::string& path) {
  if (!v.is_array() || v.size() != 3) return bad(path, "expected an array of 3 numbers");
  std::array<double, 3> out{};
  for (int a = 0; a < 3; ++a) {
    SB_ASSIGN_OR_RETURN(out[a], get_number(v[a], path + "[" + std::to_string(a) + "]"));
  }
  return out;
}

base::Result<std::array<int, 3>> get_permutation(const json& v, const std::string& path) {
  if (!v.is_array() || v.size() != 3) return bad(path, "expected a permutation of [0, 1, 2]");
  std::array<int, 3> out{};
  for (int a = 0; a < 3; ++a) {
    SB_ASSIGN_OR_RETURN(int64_t x, get_int(v[a], path + "[" + std::to_string(a) + "]"));
    out[a] = static_cast<int>(x);
  }
  auto sorted = out;
  std::sort(sorted.begin(), sorted.end());
  if (sorted != std::array<int, 3>{0, 1, 2}) return bad(path, "expected a permutation of [0, 1, 2], got " + v.dump());
  return out;
}

base::Result<Normalization> parse_normalization(const std::string& s, const std::string& path) {
  if (s == "ZScoreNormalization") return Normalization::kZScore;
  if (s == "CTNormalization") return Normalization::kCT;
  if (s == "NoNormalization") return Normalization::kNone;
  if (s == "RescaleTo01Normalization") return Normalization::kRescaleTo01;
  return bad(path, "unknown normalization '" + s +
                       "' (supported: ZScoreNormalization, CTNormalization, NoNormalization, "
                       "RescaleTo01Normalization)");
}

base::Result<IntensityProperties> parse_intensity(const json& v, const std::string& path) {
  if (!v.is_object()) return bad(path, "expected an object with mean, std, percentile_00_5, percentile_99_5");
  IntensityProperties p;
  for (auto [key, dst] : {std::pair<const char*, double*>{"mean", &p.mean},
                          {"std", &p.std},
                          {"percentile_00_5", &p.percentile_00_5},
                          {"percentile_99_5", &p.percentile_99_5}}) {
    SB_ASSIGN_OR_RETURN(const json* f, get(v, key, path + "." + key, true));
    SB_ASSIGN_OR_RETURN(*dst, get_number(*f, path + "." + key));
  }
  if (p.percentile_00_5 > p.percentile_99_5) return bad(path, "percentile_00_5 > percentile_99_5");
  return p;
}

// Labels object {"name": value or [values]} -> sorted LabelSpec list.
base::Result<std::vector<LabelSpec>> parse_labels(const json& v, const std::string& path) {
  if (!v.is_object() || v.empty()) return bad(path, "expected a non-empty object {\"name\": value}");
  std::vector<LabelSpec> labels;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string p = path + "." + it.key();
    LabelSpec l;
    l.name = it.key();
    if (it->is_array()) {
      if (it->empty()) return bad(p, "empty label value list");
      for (size_t k = 0; k < it->size(); ++k) {
        SB_ASSIGN_OR_RETURN(int64_t x, get_int((*it)[k], p + "[" + std::to_string(k) + "]"));
        l.values.push_back(static_cast<int>(x));
      }
    } else {
      SB_ASSIGN_OR_RETURN(int64_t x, get_int(*it, p));
      l.values.push_back(static_cast<int>(x));
    }
    for (int x : l.values)
      if (x < 0 || x > 255) return bad(p, "label values must be in 0..255");
    labels.push_back(std::move(l));
  }
  std::sort(labels.begin(), labels.end(), [](const LabelSpec& a, const LabelSpec& b) {
    return a.values.front() < b.values.front();
  });
  return labels;
}

json labels_to_json(const std::vector<LabelSpec>& labels) {
  json j = json::object();
  for (const auto& l : labels) {
    if (l.values.size() == 1) j[l.name] = l.values[0];
    else j[l.name] = l.values;
  }
  return j;
}

// Cross-field checks shared by parse_model_spec and spec_from_nnunet_plans.
base::Status validate(const ModelSpec& s) {
  if (s.channels.empty()) return bad("channels", "at least one channel is required");
  for (size_t c = 0; c < s.channels.size(); ++c) {
    if (s.channels[c].normalization == Normalization::kCT && !s.channels[c].intensity_properties)
      return bad("channels[" + std::to_string(c) + "].intensity_properties", "required for CTNormalization");
  }
  for (int a = 0; a < 3; ++a) {
    if (!(s.target_spacing_mm[a] > 0.0))
      return bad("target_spacing_mm[" + std::to_string(a) + "]", "must be > 0");
    if (s.patch_size[a] < 1 || s.patch_size[a] > 4096)
      return bad("patch_size[" + std::to_string(a) + "]", "must be in 1..4096");
  }
  for (int a = 0; a < 3; ++a) {
    if (s.transpose_backward[s.transpose_forward[a]] != a)
      return bad("transpose_backward", "is not the inverse of transpose_forward");
  }
  if (!(s.tile_step_size > 0.0 && s.tile_step_size <= 1.0)) return bad("tile_step_size", "must be in (0, 1]");
  std::set<int> axes;
  for (int a : s.mirroring_axes) {
    if (a < 0 || a > 2) return bad("mirroring_axes", "axes must be 0, 1 or 2");
    if (!axes.insert(a).second) return bad("mirroring_axes", "repeated axis " + std::to_string(a));
  }
  const auto& r = s.resampling;
  for (auto [name, v] : {std::pair<const char*, int>{"data_order", r.data_order},
                         {"probabilities_order", r.probabilities_order}}) {
    if (v != 0 && v != 1 && v != 3)
      return bad(std::string("resampling.") + name, "order " + std::to_string(v) + " not supported (0, 1, 3)");
  }
  for (auto [name, v] : {std::pair<const char*, int>{"data_order_z", r.data_order_z},
                         {"probabilities_order_z", r.probabilities_order_z}}) {
    if (v != 0 && v != 1)
      return bad(std::string("resampling.") + name, "order " + std::to_string(v) + " not supported (0, 1)");
  }
  if (s.labels.empty()) return bad("labels", "at least one label is required");
  if (!s.has_regions()) {
    for (size_t k = 0; k < s.labels.size(); ++k) {
      if (s.labels[k].values.size() != 1)
        return bad("labels." + s.labels[k].name, "a list of values needs regions_class_order (region model)");
      if (s.labels[k].values[0] != static_cast<int>(k))
        return bad("labels", "label values must be 0, 1, ..., K-1 (background = 0) for a label model");
    }
    if (s.labels.size() < 2) return bad("labels", "need background and at least one class");
  } else {
    const auto& order = *s.regions_class_order;
    if (order.empty()) return bad("regions_class_order", "must not be empty");
    const size_t n_regions = std::count_if(s.labels.begin(), s.labels.end(), [](const LabelSpec& l) {
      return !(l.values.size() == 1 && l.values[0] == 0);
    });
    if (order.size() != n_regions)
      return bad("regions_class_order", "has " + std::to_string(order.size()) + " entries but labels define " +
                                            std::to_string(n_regions) + " regions");
    for (int v : order)
      if (v < 0 || v > 255) return bad("regions_class_order", "values must be in 0..255");
  }
  return base::ok_status();
}

}  // namespace

std::string normalization_name(Normalization n) {
  switch (n) {
    case Normalization::kZScore: return "ZScoreNormalization";
    case Normalization::kCT: return "CTNormalization";
    case Normalization::kNone: return "NoNormalization";
    case Normalization::kRescaleTo01: return "RescaleTo01Normalization";
  }
  return "?";
}

int ModelSpec::num_outputs() const {
  if (has_regions()) return static_cast<int>(regions_class_order->size());
  return static_cast<int>(labels.size());
}

int ModelSpec::max_label() const {
  int m = 0;
  if (has_regions()) {
    for (int v : *regions_class_order) m = std::max(m, v);
  } else {
    for (const auto& l : labels) m = std::max(m, l.values.front());
  }
  return m;
}

base::Result<ModelSpec> parse_model_spec(const json& doc) {
  if (!doc.is_object()) return bad("(root)", "expected a JSON object");
  ModelSpec s;
  SB_ASSIGN_OR_RETURN(const json* fmt, get(doc, "format", "format", true));
  SB_ASSIGN_OR_RETURN(s.format, get_string(*fmt, "format"));
  if (s.format != kModelFormat)
    return bad("format", "unsupported format '" + s.format + "' (this build reads '" + kModelFormat + "')");
  SB_ASSIGN_OR_RETURN(const json* id, get(doc, "model_id", "model_id", true));
  SB_ASSIGN_OR_RETURN(s.model_id, get_string(*id, "model_id"));
  if (s.model_id.empty()) return bad("model_id", "must not be empty");

  SB_ASSIGN_OR_RETURN(const json* nets, get(doc, "networks", "networks", false));
  if (nets == nullptr) {
    s.networks = {"model.onnx"};
  } else {
    if (!nets->is_array() || nets->empty()) return bad("networks", "expected a non-empty array of file names");
    for (size_t k = 0; k < nets->size(); ++k) {
      const std::string p = "networks[" + std::to_string(k) + "]";
      SB_ASSIGN_OR_RETURN(std::string f, get_string((*nets)[k], p));
      if (f.empty() || f.front() == '/' || f.find("..") != std::string::npos)
        return bad(p, "must be a file name inside the model folder, got '" + f + "'");
      s.networks.push_back(f);
    }
  }

  SB_ASSIGN_OR_RETURN(const json* chans, get(doc, "channels", "channels", true));
  if (!chans->is_array() || chans->empty()) return bad("channels", "expected a non-empty array");
  for (size_t c = 0; c < chans->size(); ++c) {
    const std::string p = "channels[" + std::to_string(c) + "]";
    const json& cj = (*chans)[c];
    if (!cj.is_object()) return bad(p, "expected an object");
    ChannelSpec ch;
    SB_ASSIGN_OR_RETURN(const json* name, get(cj, "name", p + ".name", true));
    SB_ASSIGN_OR_RETURN(ch.name, get_string(*name, p + ".name"));
    SB_ASSIGN_OR_RETURN(const json* norm, get(cj, "normalization", p + ".normalization", true));
    SB_ASSIGN_OR_RETURN(std::string norm_s, get_string(*norm, p + ".normalization"));
    SB_ASSIGN_OR_RETURN(ch.normalization, parse_normalization(norm_s, p + ".normalization"));
    SB_ASSIGN_OR_RETURN(const json* umn, get(cj, "use_mask_for_norm", p + ".use_mask_for_norm", false));
    if (umn != nullptr && !umn->is_null()) {
      SB_ASSIGN_OR_RETURN(ch.use_mask_for_norm, get_bool(*umn, p + ".use_mask_for_norm"));
    }
    SB_ASSIGN_OR_RETURN(const json* ip, get(cj, "intensity_properties", p + ".intensity_properties", false));
    if (ip != nullptr && !ip->is_null()) {
      SB_ASSIGN_OR_RETURN(ch.intensity_properties, parse_intensity(*ip, p + ".intensity_properties"));
    }
    SB_ASSIGN_OR_RETURN(const json* unit, get(cj, "unit", p + ".unit", false));
    if (unit != nullptr && !unit->is_null()) {
      SB_ASSIGN_OR_RETURN(ch.unit, get_string(*unit, p + ".unit"));
      if (ch.unit != kAdcMicroUnit)
        return bad(p + ".unit", "unknown unit '" + ch.unit + "' (known: \"" + kAdcMicroUnit + "\", for an ADC channel)");
    }
    s.channels.push_back(std::move(ch));
  }

  SB_ASSIGN_OR_RETURN(const json* ts, get(doc, "target_spacing_mm", "target_spacing_mm", true));
  SB_ASSIGN_OR_RETURN(s.target_spacing_mm, get_double3(*ts, "target_spacing_mm"));
  SB_ASSIGN_OR_RETURN(const json* ps, get(doc, "patch_size", "patch_size", true));
  if (!ps->is_array() || ps->size() != 3) return bad("patch_size", "expected an array of 3 integers (3D models only)");
  for (int a = 0; a < 3; ++a) {
    SB_ASSIGN_OR_RETURN(s.patch_size[a], get_int((*ps)[a], "patch_size[" + std::to_string(a) + "]"));
  }
  SB_ASSIGN_OR_RETURN(const json* tf, get(doc, "transpose_forward", "transpose_forward", false));
  if (tf != nullptr) {
    SB_ASSIGN_OR_RETURN(s.transpose_forward, get_permutation(*tf, "transpose_forward"));
  }
  SB_ASSIGN_OR_RETURN(const json* tb, get(doc, "transpose_backward", "transpose_backward", false));
  if (tb != nullptr) {
    SB_ASSIGN_OR_RETURN(s.transpose_backward, get_permutation(*tb, "transpose_backward"));
  } else {
    for (int a = 0; a < 3; ++a) s.transpose_backward[s.transpose_forward[a]] = a;
  }
  SB_ASSIGN_OR_RETURN(const json* labels, get(doc, "labels", "labels", true));
  SB_ASSIGN_OR_RETURN(s.labels, parse_labels(*labels, "labels"));
  SB_ASSIGN_OR_RETURN(const json* rco, get(doc, "regions_class_order", "regions_class_order", false));
  if (rco != nullptr && !rco->is_null()) {
    if (!rco->is_array()) return bad("regions_class_order", "expected null or an array of label values");
    std::vector<int> order;
    for (size_t k = 0; k < rco->size(); ++k) {
      SB_ASSIGN_OR_RETURN(int64_t x, get_int((*rco)[k], "regions_class_order[" + std::to_string(k) + "]"));
      order.push_back(static_cast<int>(x));
    }
    s.regions_class_order = order;
  }
  SB_ASSIGN_OR_RETURN(const json* um, get(doc, "use_mirroring", "use_mirroring", false));
  if (um != nullptr) {
    SB_ASSIGN_OR_RETURN(s.use_mirroring, get_bool(*um, "use_mirroring"));
  }
  SB_ASSIGN_OR_RETURN(const json* ma, get(doc, "mirroring_axes", "mirroring_axes", false));
  if (ma != nullptr && !ma->is_null()) {
    if (!ma->is_array()) return bad("mirroring_axes", "expected an array of axes");
    s.mirroring_axes.clear();
    for (size_t k = 0; k < ma->size(); ++k) {
      SB_ASSIGN_OR_RETURN(int64_t x, get_int((*ma)[k], "mirroring_axes[" + std::to_string(k) + "]"));
      s.mirroring_axes.push_back(static_cast<int>(x));
    }
  }
  SB_ASSIGN_OR_RETURN(const json* tss, get(doc, "tile_step_size", "tile_step_size", false));
  if (tss != nullptr) {
    SB_ASSIGN_OR_RETURN(s.tile_step_size, get_number(*tss, "tile_step_size"));
  }
  SB_ASSIGN_OR_RETURN(const json* rs, get(doc, "resampling", "resampling", false));
  if (rs != nullptr && !rs->is_null()) {
    if (!rs->is_object()) return bad("resampling", "expected an object");
    for (auto [key, dst] : {std::pair<const char*, int*>{"data_order", &s.resampling.data_order},
                            {"data_order_z", &s.resampling.data_order_z},
                            {"probabilities_order", &s.resampling.probabilities_order},
                            {"probabilities_order_z", &s.resampling.probabilities_order_z}}) {
      const std::string p = std::string("resampling.") + key;
      SB_ASSIGN_OR_RETURN(const json* f, get(*rs, key, p, false));
      if (f != nullptr) {
        SB_ASSIGN_OR_RETURN(int64_t x, get_int(*f, p));
        *dst = static_cast<int>(x);
      }
    }
    SB_ASSIGN_OR_RETURN(const json* fz, get(*rs, "force_separate_z", "resampling.force_separate_z", false));
    if (fz != nullptr && !fz->is_null()) {
      SB_ASSIGN_OR_RETURN(bool b, get_bool(*fz, "resampling.force_separate_z"));
      s.resampling.force_separate_z = b;
    }
  }
  SB_ASSIGN_OR_RETURN(const json* acc, get(doc, "accumulation", "accumulation", false));
  if (acc != nullptr && !acc->is_null()) {
    SB_ASSIGN_OR_RETURN(std::string a, get_string(*acc, "accumulation"));
    if (a == "fp32") s.accumulation = Accumulation::kFloat32;
    else if (a == "fp16") s.accumulation = Accumulation::kFloat16;
    else return bad("accumulation", "expected \"fp32\" or \"fp16\", got '" + a + "'");
  }
  SB_ASSIGN_OR_RETURN(const json* prov, get(doc, "provenance", "provenance", false));
  if (prov != nullptr) s.provenance = *prov;
  SB_RETURN_IF_ERROR(validate(s));
  return s;
}

base::Result<ModelSpec> load_model_spec(const std::string& model_dir) {
  const std::string path = model_dir + "/model.json";
  std::ifstream f(path);
  if (!f) return base::not_found("model package: cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  json doc;
  try {
    doc = json::parse(ss.str());
  } catch (const std::exception& e) {
    return base::invalid_argument(path + ": not valid JSON: " + e.what());
  }
  auto spec = parse_model_spec(doc);
  if (!spec.ok()) return spec.status().with_context(path);
  spec->model_dir = model_dir;
  return spec;
}

json model_spec_to_json(const ModelSpec& s) {
  json j;
  j["format"] = s.format;
  j["model_id"] = s.model_id;
  j["networks"] = s.networks;
  j["channels"] = json::array();
  for (const auto& c : s.channels) {
    json cj{{"name", c.name},
            {"normalization", normalization_name(c.normalization)},
            {"use_mask_for_norm", c.use_mask_for_norm}};
    if (c.intensity_properties) {
      const auto& p = *c.intensity_properties;
      cj["intensity_properties"] = {{"mean", p.mean},
                                    {"std", p.std},
                                    {"percentile_00_5", p.percentile_00_5},
                                    {"percentile_99_5", p.percentile_99_5}};
    }
    if (!c.unit.empty()) cj["unit"] = c.unit;
    j["channels"].push_back(cj);
  }
  j["target_spacing_mm"] = s.target_spacing_mm;
  j["patch_size"] = s.patch_size;
  j["transpose_forward"] = s.transpose_forward;
  j["transpose_backward"] = s.transpose_backward;
  j["labels"] = labels_to_json(s.labels);
  j["regions_class_order"] = s.regions_class_order ? json(*s.regions_class_order) : json(nullptr);
  j["use_mirroring"] = s.use_mirroring;
  j["mirroring_axes"] = s.mirroring_axes;
  j["tile_step_size"] = s.tile_step_size;
  j["resampling"] = {{"data_order", s.resampling.data_order},
                     {"data_order_z", s.resampling.data_order_z},
                     {"probabilities_order", s.resampling.probabilities_order},
                     {"probabilities_order_z", s.resampling.probabilities_order_z},
                     {"force_separate_z", s.resampling.force_separate_z ? json(*s.resampling.force_separate_z)
                                                                        : json(nullptr)}};
  j["accumulation"] = s.accumulation == Accumulation::kFloat16 ? "fp16" : "fp32";
  j["provenance"] = s.provenance;
  return j;
}

base::Result<ModelSpec> spec_from_nnunet_plans(const json& plans, const json& dataset,
                                               const std::string& configuration) {
  auto pbad = [](const std::string& field, const std::string& what) {
    return base::invalid_argument("nnU-Net plans: " + field + ": " + what);
  };
  try {
    if (!plans.contains("configurations") || !plans["configurations"].contains(configuration))
      return pbad("configurations." + configuration, "missing");
    json cfg = plans["configurations"][configuration];
    // Configurations may inherit from another one ("inherits_from").
    while (cfg.contains("inherits_from")) {
      const std::string parent = cfg["inherits_from"].get<std::string>();
      if (!plans["configurations"].contains(parent)) return pbad("inherits_from", "unknown configuration " + parent);
      json merged = plans["configurations"][parent];
      merged.erase("inherits_from");
      for (auto it = cfg.begin(); it != cfg.end(); ++it)
        if (it.key() != "inherits_from") merged[it.key()] = *it;
      if (plans["configurations"][parent].contains("inherits_from"))
        merged["inherits_from"] = plans["configurations"][parent]["inherits_from"];
      cfg = merged;
    }
    json doc;
    doc["format"] = kModelFormat;
    doc["model_id"] = plans.value("dataset_name", std::string("nnunet")) + "__" +
                      plans.value("plans_name", std::string("plans")) + "__" + configuration;
    if (!cfg.contains("patch_size") || cfg["patch_size"].size() != 3)
      return pbad("configurations." + configuration + ".patch_size", "3D configurations only");
    doc["patch_size"] = cfg["patch_size"];
    doc["target_spacing_mm"] = cfg["spacing"];
    doc["transpose_forward"] = plans["transpose_forward"];
    doc["transpose_backward"] = plans["transpose_backward"];
    const json& schemes = cfg["normalization_schemes"];
    const json& masks = cfg["use_mask_for_norm"];
    const json& names = dataset.contains("channel_names") ? dataset["channel_names"] : dataset["modality"];
    doc["channels"] = json::array();
    for (size_t c = 0; c < schemes.size(); ++c) {
      const std::string key = std::to_string(c);
      json ch{{"name", names.contains(key) ? names[key] : json(key)},
              {"normalization", schemes[c]},
              {"use_mask_for_norm", masks.at(c)}};
      if (plans.contains("foreground_intensity_properties_per_channel") &&
          plans["foreground_intensity_properties_per_channel"].contains(key)) {
        const json& p = plans["foreground_intensity_properties_per_channel"][key];
        ch["intensity_properties"] = {{"mean", p["mean"]},
                                      {"std", p["std"]},
                                      {"percentile_00_5", p["percentile_00_5"]},
                                      {"percentile_99_5", p["percentile_99_5"]}};
      }
      doc["channels"].push_back(ch);
    }
    doc["labels"] = dataset["labels"];
    doc["regions_class_order"] = dataset.contains("regions_class_order") ? dataset["regions_class_order"] : json();
    doc["use_mirroring"] = false;
    doc["mirroring_axes"] = json::array({0, 1, 2});
    doc["tile_step_size"] = 0.5;
    const json& dk = cfg["resampling_fn_data_kwargs"];
    const json& pk = cfg["resampling_fn_probabilities_kwargs"];
    doc["resampling"] = {{"data_order", dk.value("order", 3)},
                         {"data_order_z", dk.value("order_z", 0)},
                         {"probabilities_order", pk.value("order", 1)},
                         {"probabilities_order_z", pk.value("order_z", 0)},
                         {"force_separate_z", dk.contains("force_separate_z") ? dk["force_separate_z"] : json()}};
    doc["accumulation"] = "fp16";
    doc["provenance"] = {{"source", "nnU-Net plans"}, {"configuration", configuration}};
    auto spec = parse_model_spec(doc);
    if (!spec.ok()) return spec.status().with_context("converted from nnU-Net plans");
    return spec;
  } catch (const std::exception& e) {
    return pbad("(document)", std::string("unexpected structure: ") + e.what());
  }
}

}  // namespace inference
