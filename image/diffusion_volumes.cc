#include "image/diffusion_volumes.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <tuple>

namespace image {
namespace {

bool has_type(const DicomInstance& inst, const std::string& value) {
  return std::find(inst.image_type.begin(), inst.image_type.end(), value) != inst.image_type.end();
}

/// Position rounded to 0.01 mm.
std::tuple<long, long, long> position_key(const DicomInstance& inst) {
  const auto& p = *inst.image_position_patient;
  return {std::lround(p[0] * 100), std::lround(p[1] * 100), std::lround(p[2] * 100)};
}

int kind_order(DiffusionImageKind k) {
  switch (k) {
    case DiffusionImageKind::kB0: return 0;
    case DiffusionImageKind::kTrace: return 1;
    case DiffusionImageKind::kDirectional: return 2;
    case DiffusionImageKind::kUnspecified: return 3;
    case DiffusionImageKind::kAdc: return 4;
  }
  return 5;
}

/// Grouping key: kind, rounded b (-1 when none), direction in 1e-3 units, matrix (rows,
/// columns: images of another size never share a volume).
using VolumeKey = std::tuple<int, long, long, long, long, int, int>;

base::Status check_same_grids(const std::vector<VolumeF>& volumes, const char* what) {
  if (volumes.empty()) return base::invalid_argument(std::string(what) + ": no volumes");
  for (size_t i = 1; i < volumes.size(); ++i) {
    if (!volumes[i].grid.same_as(volumes[0].grid) || volumes[i].data.size() != volumes[0].data.size()) {
      return base::invalid_argument(std::string(what) + ": volume " + std::to_string(i + 1) +
                                    " is on a different grid than volume 1 (the images of one series must "
                                    "cover the same slices)");
    }
  }
  return base::ok_status();
}

}  // namespace

const char* kind_name(DiffusionImageKind kind) {
  switch (kind) {
    case DiffusionImageKind::kB0: return "b0";
    case DiffusionImageKind::kTrace: return "trace";
    case DiffusionImageKind::kDirectional: return "directional";
    case DiffusionImageKind::kAdc: return "adc";
    case DiffusionImageKind::kUnspecified: return "unspecified";
  }
  return "?";
}

DiffusionImageKind classify_diffusion_image(const DicomInstance& inst, bool series_has_b, double b0_max_s_mm2) {
  if (has_type(inst, "ADC")) return DiffusionImageKind::kAdc;
  if (!inst.b_value) return series_has_b ? DiffusionImageKind::kB0 : DiffusionImageKind::kUnspecified;
  if (*inst.b_value <= b0_max_s_mm2) return DiffusionImageKind::kB0;
  const std::string& d = inst.diffusion_directionality;
  if (has_type(inst, "TRACEW") || has_type(inst, "TRACE") || d == "ISOTROPIC") return DiffusionImageKind::kTrace;
  if (inst.diffusion_direction) {
    const auto& v = *inst.diffusion_direction;
    const double norm = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (norm > 0.5) return DiffusionImageKind::kDirectional;
    // A b > 0 image with a zero gradient vector is the vendor's combined (isotropic) image,
    // unless the header says it is directional (then the direction is simply missing).
    if (norm < 1e-3 && d != "DIRECTIONAL") return DiffusionImageKind::kTrace;
  }
  if (d == "DIRECTIONAL") return DiffusionImageKind::kDirectional;
  return DiffusionImageKind::kUnspecified;
}

std::string describe_volume(const DiffusionVolume& volume) {
  std::ostringstream s;
  if (volume.b_value) s << "b=" << std::lround(*volume.b_value) << " ";
  s << kind_name(volume.kind);
  if (volume.b_untagged) s << " (untagged)";
  if (volume.direction) {
    const auto& d = *volume.direction;
    s << " (" << d[0] << ", " << d[1] << ", " << d[2] << ")";
  }
  if (volume.repeat > 0) s << " repeat " << volume.repeat + 1;
  s << ", " << volume.images.instances.size() << " images";
  return s.str();
}

base::Result<std::vector<DiffusionVolume>> split_diffusion_volumes(const DicomSeries& series, double b0_max_s_mm2) {
  if (series.instances.empty()) {
    return base::invalid_argument("series " + describe_series(series) + " has no images to split into volumes");
  }
  const bool series_has_b = std::any_of(series.instances.begin(), series.instances.end(),
                                        [](const DicomInstance& i) { return i.b_value.has_value(); });
  for (const DicomInstance& inst : series.instances) {
    if (!inst.image_position_patient) {
      return base::invalid_argument("series " + describe_series(series) + ": '" + inst.path +
                                    "' has no ImagePositionPatient; its diffusion volumes cannot be told apart");
    }
  }
  // Acquisition order, independent of file names and scrambled InstanceNumbers: repeats are
  // numbered in this order.
  std::vector<const DicomInstance*> ordered;
  ordered.reserve(series.instances.size());
  for (const DicomInstance& inst : series.instances) ordered.push_back(&inst);
  std::stable_sort(ordered.begin(), ordered.end(), [](const DicomInstance* a, const DicomInstance* b) {
    return std::make_tuple(a->acquisition_number, a->instance_number, a->frame_index, a->path, a->mosaic_index) <
           std::make_tuple(b->acquisition_number, b->instance_number, b->frame_index, b->path, b->mosaic_index);
  });

  struct Group {
    DiffusionVolume first;  // kind, b, direction, untagged
    size_t order = 0;       // first appearance
    std::vector<std::vector<DicomInstance>> repeats;
    std::map<std::tuple<long, long, long>, int> count_at_position;
  };
  std::map<VolumeKey, Group> groups;
  for (const DicomInstance* inst : ordered) {
    const DiffusionImageKind kind = classify_diffusion_image(*inst, series_has_b, b0_max_s_mm2);
    std::optional<double> b;
    if (inst->b_value) b = static_cast<double>(std::lround(*inst->b_value));
    std::optional<std::array<double, 3>> direction;
    if (kind == DiffusionImageKind::kDirectional && inst->diffusion_direction) {
      direction = std::array<double, 3>{};
      for (int a = 0; a < 3; ++a) (*direction)[a] = std::round((*inst->diffusion_direction)[a] * 1000.0) / 1000.0;
    }
    const bool untagged = kind == DiffusionImageKind::kB0 && !inst->b_value;
    if (untagged) b = 0.0;
    const VolumeKey key{kind_order(kind), b ? std::lround(*b) : -1, direction ? std::lround((*direction)[0] * 1000) : 0,
                        direction ? std::lround((*direction)[1] * 1000) : 0,
                        direction ? std::lround((*direction)[2] * 1000) : 0, inst->rows, inst->columns};
    auto [it, inserted] = groups.try_emplace(key);
    Group& g = it->second;
    if (inserted) {
      g.first.kind = kind;
      g.first.b_value = b;
      g.first.direction = direction;
      g.order = groups.size();
    }
    // An untagged b0 among tagged ones: the group is untagged if any of its images is.
    g.first.b_untagged = g.first.b_untagged || untagged;
    const int repeat = g.count_at_position[position_key(*inst)]++;
    if (static_cast<size_t>(repeat) >= g.repeats.size()) g.repeats.resize(static_cast<size_t>(repeat) + 1);
    g.repeats[static_cast<size_t>(repeat)].push_back(*inst);
  }
  std::vector<std::pair<std::tuple<int, long, size_t>, DiffusionVolume>> sorted;
  for (auto& [key, g] : groups) {
    for (size_t r = 0; r < g.repeats.size(); ++r) {
      DiffusionVolume v = g.first;
      v.repeat = static_cast<int>(r);
      v.images = series;
      v.images.instances = std::move(g.repeats[r]);
      sorted.emplace_back(std::make_tuple(std::get<0>(key), std::get<1>(key), g.order * 1000 + r), std::move(v));
    }
  }
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<DiffusionVolume> out;
  out.reserve(sorted.size());
  for (auto& entry : sorted) out.push_back(std::move(entry.second));
  return out;
}

base::Status GeometricMeanAccumulator::add(const VolumeF& volume) {
  if (count_ == 0) {
    grid_ = volume.grid;
    log_sum_.assign(volume.data.size(), 0.0);
    positive_.assign(volume.data.size(), true);
  } else if (!volume.grid.same_as(grid_) || volume.data.size() != log_sum_.size()) {
    return base::invalid_argument("geometric mean of the diffusion directions: volume " + std::to_string(count_ + 1) +
                                  " is on a different grid than volume 1 (the images of one series must cover "
                                  "the same slices)");
  }
  for (size_t v = 0; v < volume.data.size(); ++v) {
    const double s = volume.data[v];
    if (!(s > 0) || !std::isfinite(s)) {
      positive_[v] = false;
    } else {
      log_sum_[v] += std::log(s);
    }
  }
  ++count_;
  return base::ok_status();
}

base::Result<VolumeF> GeometricMeanAccumulator::result() const {
  if (count_ == 0) return base::invalid_argument("geometric mean of the diffusion directions: no volumes");
  VolumeF out(grid_, 0.0f);
  for (size_t v = 0; v < out.data.size(); ++v) {
    if (positive_[v]) out.data[v] = static_cast<float>(std::exp(log_sum_[v] / count_));
  }
  return out;
}

base::Result<VolumeF> geometric_mean(const std::vector<VolumeF>& volumes) {
  GeometricMeanAccumulator acc;
  for (const VolumeF& v : volumes) SB_RETURN_IF_ERROR(acc.add(v));
  return acc.result();
}

base::Result<VolumeF> arithmetic_mean(const std::vector<VolumeF>& volumes) {
  SB_RETURN_IF_ERROR(check_same_grids(volumes, "mean of repeated volumes"));
  VolumeF out(volumes[0].grid, 0.0f);
  const double n = static_cast<double>(volumes.size());
  for (size_t v = 0; v < out.data.size(); ++v) {
    double sum = 0.0;
    for (const VolumeF& vol : volumes) sum += vol.data[v];
    out.data[v] = static_cast<float>(sum / n);
  }
  return out;
}

}  // namespace image
