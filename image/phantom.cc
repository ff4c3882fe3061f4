// Synthetic stroke phantom: template loading (Colin27 + AAL), per-seed anatomy deformation,
// lesion rasterisation in template space, and sampling onto the acquisition grid.
// See phantom.h for the contract. Physics: mono-exponential diffusion S = S0 * exp(-b * ADC),
// partial volume = average of complex-free magnitude signals over the slice thickness,
// Rician noise = |S + n1 + i n2| with n1, n2 ~ N(0, sigma^2).
#include "image/phantom.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>
#include <random>
#include <vector>

#include "image/nifti_io.h"

namespace image {
namespace {

using Eigen::Matrix3d;
using Eigen::Matrix4d;
using Eigen::Vector3d;

// ---------------------------------------------------------------------------------------------
// Random numbers: std::mt19937_64 is specified bit for bit by the standard; its distributions
// are not, so uniform and normal variates are derived here.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  /// Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Uniform integer in [0, n).
  int64_t below(int64_t n) { return std::min<int64_t>(static_cast<int64_t>(uniform() * static_cast<double>(n)), n - 1); }
  double log_uniform(double lo, double hi) { return std::exp(uniform(std::log(lo), std::log(hi))); }
  /// Standard normal by the Box-Muller transform (both variates used).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 2.0 * std::numbers::pi * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }
  Vector3d unit_vector() {
    Vector3d v;
    do {
      v = Vector3d(normal(), normal(), normal());
    } while (v.norm() < 1e-6);
    return v.normalized();
  }
  /// Uniformly distributed random rotation (random unit quaternion).
  Matrix3d rotation() {
    Eigen::Quaterniond q(normal(), normal(), normal(), normal());
    q.normalize();
    return q.toRotationMatrix();
  }
  uint64_t bits() { return engine_(); }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

Matrix3d small_rotation(double ax_deg, double ay_deg, double az_deg) {
  const double d = std::numbers::pi / 180.0;
  return (Eigen::AngleAxisd(az_deg * d, Vector3d::UnitZ()) * Eigen::AngleAxisd(ay_deg * d, Vector3d::UnitY()) *
          Eigen::AngleAxisd(ax_deg * d, Vector3d::UnitX()))
      .toRotationMatrix();
}

// Smooth value noise in [-1, 1]: hashed lattice values, trilinear with smoothstep weights.
class ValueNoise {
 public:
  ValueNoise(uint64_t key, double cell_mm) : key_(key), inv_cell_(1.0 / cell_mm) {}
  double operator()(const Vector3d& p) const {
    const double x = p.x() * inv_cell_, y = p.y() * inv_cell_, z = p.z() * inv_cell_;
    const double fx = std::floor(x), fy = std::floor(y), fz = std::floor(z);
    const int64_t ix = static_cast<int64_t>(fx), iy = static_cast<int64_t>(fy), iz = static_cast<int64_t>(fz);
    const double tx = smooth(x - fx), ty = smooth(y - fy), tz = smooth(z - fz);
    double acc = 0.0;
    for (int c = 0; c < 8; ++c) {
      const int dx = c & 1, dy = (c >> 1) & 1, dz = (c >> 2) & 1;
      const double w = (dx ? tx : 1 - tx) * (dy ? ty : 1 - ty) * (dz ? tz : 1 - tz);
      acc += w * lattice(ix + dx, iy + dy, iz + dz);
    }
    return acc;
  }

 private:
  static double smooth(double t) { return t * t * (3.0 - 2.0 * t); }
  double lattice(int64_t x, int64_t y, int64_t z) const {
    uint64_t h = key_ ^ (static_cast<uint64_t>(x) * 0x9E3779B97F4A7C15ull) ^
                 (static_cast<uint64_t>(y) * 0xC2B2AE3D27D4EB4Full) ^ (static_cast<uint64_t>(z) * 0x165667B19E3779F9ull);
    // splitmix64 finaliser
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
    return static_cast<double>(h >> 11) * 0x1.0p-52 - 1.0;
  }
  uint64_t key_;
  double inv_cell_;
};

// ---------------------------------------------------------------------------------------------
// Template: Colin27 at 1 mm with tissue-class intensities and lesion-placement regions.

enum Region : uint8_t { kOutside = 0, kSupratentorial = 1, kCerebellum = 2, kBrainstem = 3 };

const char* region_name(uint8_t r) {
  switch (r) {
    case kSupratentorial: return "supratentorial";
    case kCerebellum: return "cerebellum";
    case kBrainstem: return "brainstem";
    default: return "outside";
  }
}

struct Template {
  Grid grid;                       // 1 mm (about), LPS
  Matrix4d world_to_voxel;         // inverse of grid.affine
  std::vector<float> t1;           // T1 intensity, 0 outside the brain
  std::vector<uint8_t> region;     // Region per voxel (parenchyma only)
  std::array<std::vector<uint32_t>, 4> candidates;  // voxel indices per Region
  double csf = 0, gm = 0, wm = 0;  // class centres of T1 intensity (k-means)
  double parenchyma_threshold = 0; // T1 >= this: grey or white matter
  Vector3d centre_lps;             // brain centroid
  Vector3d extent_lo, extent_hi;   // brain bounding box relative to the centroid, mm
  bool has_atlas = false;
};

// Three-class k-means on the intensity histogram of brain voxels, initialised at percentiles.
std::array<double, 3> tissue_centres(const std::vector<float>& t1) {
  std::vector<double> hist(256, 0.0);
  for (float v : t1) {
    if (v > 0.0f) hist[std::min(255, static_cast<int>(v))] += 1.0;
  }
  // Ignore the partial-volume rim with the background (lowest 2% of brain voxels).
  double total = 0;
  for (double h : hist) total += h;
  double acc = 0;
  int lo = 0;
  while (lo < 255 && acc + hist[lo] < 0.02 * total) acc += hist[lo++];
  auto percentile = [&](double q) {
    double a = 0;
    for (int b = lo; b < 256; ++b) {
      a += hist[b];
      if (a >= q * (total - acc)) return b + 0.5;
    }
    return 255.5;
  };
  std::array<double, 3> c{percentile(0.05), percentile(0.5), percentile(0.9)};
  for (int iter = 0; iter < 50; ++iter) {
    std::array<double, 3> sum{}, cnt{};
    for (int b = lo; b < 256; ++b) {
      const double v = b + 0.5;
      int best = 0;
      for (int k = 1; k < 3; ++k)
        if (std::abs(v - c[k]) < std::abs(v - c[best])) best = k;
      sum[best] += hist[b] * v;
      cnt[best] += hist[b];
    }
    for (int k = 0; k < 3; ++k)
      if (cnt[k] > 0) c[k] = sum[k] / cnt[k];
  }
  return c;
}

base::Result<std::shared_ptr<const Template>> load_template_uncached(const std::string& colin27, const std::string& aal) {
  auto raw = read_nifti(colin27);
  if (!raw.ok()) {
    if (raw.status().code() == base::Code::kNotFound) {
      return base::not_found("Colin27 template '" + colin27 +
                             "' not found: install the Debian package mricron-data (apt-get install mricron-data) "
                             "or pass the file with --colin27");
    }
    return raw.status().with_context("Colin27 template");
  }
  const VolumeF& hi = *raw;
  auto t = std::make_shared<Template>();
  const auto sp = hi.grid.spacing_mm();
  // Downsample by an integer factor per axis to about 1 mm (block average).
  std::array<int64_t, 3> f{};
  for (int a = 0; a < 3; ++a) f[a] = std::max<int64_t>(1, std::llround(1.0 / sp[a]));
  std::array<int64_t, 3> d{};
  for (int a = 0; a < 3; ++a) d[a] = hi.grid.dims[a] / f[a];
  if (d[0] < 16 || d[1] < 16 || d[2] < 16) {
    return base::invalid_argument("Colin27 template '" + colin27 + "' is too small to be a head");
  }
  t->grid.dims = d;
  Matrix4d s = Matrix4d::Identity();
  for (int a = 0; a < 3; ++a) {
    s(a, a) = static_cast<double>(f[a]);
    s(a, 3) = 0.5 * static_cast<double>(f[a] - 1);
  }
  t->grid.affine = hi.grid.affine * s;
  t->world_to_voxel = t->grid.affine.inverse();
  t->t1.assign(static_cast<size_t>(d[0] * d[1] * d[2]), 0.0f);
  const double norm = 1.0 / static_cast<double>(f[0] * f[1] * f[2]);
  for (int64_t k = 0; k < d[2]; ++k)
    for (int64_t j = 0; j < d[1]; ++j)
      for (int64_t i = 0; i < d[0]; ++i) {
        double sum = 0;
        for (int64_t c = 0; c < f[2]; ++c)
          for (int64_t b = 0; b < f[1]; ++b)
            for (int64_t a = 0; a < f[0]; ++a) sum += hi.at(i * f[0] + a, j * f[1] + b, k * f[2] + c);
        t->t1[static_cast<size_t>(i + d[0] * (j + d[1] * k))] = static_cast<float>(std::max(0.0, sum * norm));
      }

  const auto c = tissue_centres(t->t1);
  t->csf = c[0];
  t->gm = c[1];
  t->wm = c[2];
  if (!(t->csf < t->gm && t->gm < t->wm) || t->wm - t->csf < 10.0) {
    return base::invalid_argument("Colin27 template '" + colin27 +
                                  "': cannot find CSF/grey/white intensity classes (is it a skull-stripped T1?)");
  }
  t->parenchyma_threshold = 0.5 * (t->csf + t->gm);

  // Optional atlas: cerebellum labels 91..116 (AAL), looked up by world position.
  std::optional<VolumeF> atlas;
  if (!aal.empty()) {
    auto a = read_nifti(aal);
    if (a.ok()) atlas = std::move(a).value();
  }
  t->has_atlas = atlas.has_value();
  const Matrix4d atlas_inv = atlas ? Matrix4d(atlas->grid.affine.inverse()) : Matrix4d(Matrix4d::Identity());

  t->region.assign(t->t1.size(), kOutside);
  Vector3d sum = Vector3d::Zero();
  double n = 0;
  Vector3d lo = Vector3d::Constant(1e9), hi_box = Vector3d::Constant(-1e9);
  for (int64_t k = 0; k < d[2]; ++k)
    for (int64_t j = 0; j < d[1]; ++j)
      for (int64_t i = 0; i < d[0]; ++i) {
        const size_t idx = static_cast<size_t>(i + d[0] * (j + d[1] * k));
        const float v = t->t1[idx];
        if (v <= 0.0f) continue;
        const Vector3d p = t->grid.to_patient(static_cast<double>(i), static_cast<double>(j), static_cast<double>(k));
        sum += p;
        n += 1;
        lo = lo.cwiseMin(p);
        hi_box = hi_box.cwiseMax(p);
        if (v < t->parenchyma_threshold) continue;
        // MNI/RAS coordinates for the anatomical rules.
        const double x = -p.x(), y = -p.y(), z = p.z();
        int label = 0;
        if (atlas) {
          const Eigen::Vector4d u = atlas_inv * Eigen::Vector4d(p.x(), p.y(), p.z(), 1.0);
          const int64_t ai = std::llround(u[0]), aj = std::llround(u[1]), ak = std::llround(u[2]);
          if (ai >= 0 && aj >= 0 && ak >= 0 && ai < atlas->ni() && aj < atlas->nj() && ak < atlas->nk())
            label = static_cast<int>(std::lround(atlas->at(ai, aj, ak)));
        }
        uint8_t r = kSupratentorial;
        if (atlas ? (label >= 91 && label <= 116) : (z < -20 && y < -40 && std::abs(x) > 6)) {
          r = kCerebellum;
        } else if ((atlas ? label == 0 : true) && std::abs(x) < 13 && y > -45 && y < -10 && z < -8 && z > -60) {
          r = kBrainstem;
        }
        t->region[idx] = r;
        t->candidates[r].push_back(static_cast<uint32_t>(idx));
      }
  if (n < 1000 || t->candidates[kSupratentorial].size() < 1000) {
    return base::invalid_argument("Colin27 template '" + colin27 + "' holds too little brain");
  }
  t->centre_lps = sum / n;
  t->extent_lo = lo - t->centre_lps;
  t->extent_hi = hi_box - t->centre_lps;
  return std::shared_ptr<const Template>(std::move(t));
}

// Loaded once per (colin27, aal) pair and process; thread-safe.
base::Result<std::shared_ptr<const Template>> load_template(const std::string& colin27, const std::string& aal) {
  static std::mutex mu;
  static std::map<std::pair<std::string, std::string>, std::shared_ptr<const Template>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(colin27, aal);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  SB_ASSIGN_OR_RETURN(auto t, load_template_uncached(colin27, aal));
  cache.emplace(key, t);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Per-seed parameters.

struct TissueParams {
  double adc_csf, adc_gm, adc_wm;  // 10^-6 mm^2/s
  double s0_csf, s0_gm, s0_wm;     // T2-weighted b=0 signal, a.u.
};

struct Lesion {
  uint8_t region;
  Vector3d centre_template;  // LPS mm, template space
  double target_volume_ml;
  double adc;
  double s0_factor;
};

// A smooth vector field on a coarse lattice over the acquisition volume: channels 0-2 the
// displacement into template space (mm), channel 3 the log of the receive bias field.
class CoarseField {
 public:
  CoarseField(const Vector3d& lo, const Vector3d& hi, double step_mm) : origin_(lo), step_(step_mm) {
    for (int a = 0; a < 3; ++a) n_[a] = static_cast<int64_t>(std::ceil((hi[a] - lo[a]) / step_mm)) + 2;
    values_.assign(static_cast<size_t>(n_[0] * n_[1] * n_[2]), {0, 0, 0, 0});
  }
  Vector3d node(int64_t i, int64_t j, int64_t k) const {
    return origin_ + step_ * Vector3d(static_cast<double>(i), static_cast<double>(j), static_cast<double>(k));
  }
  std::array<float, 4>& at(int64_t i, int64_t j, int64_t k) {
    return values_[static_cast<size_t>(i + n_[0] * (j + n_[1] * k))];
  }
  const std::array<int64_t, 3>& dims() const { return n_; }
  std::array<double, 4> sample(const Vector3d& p) const {
    std::array<double, 4> out{0, 0, 0, 0};
    double u[3];
    int64_t b[3];
    for (int a = 0; a < 3; ++a) {
      double x = std::clamp((p[a] - origin_[a]) / step_, 0.0, static_cast<double>(n_[a] - 1) - 1e-9);
      b[a] = static_cast<int64_t>(x);
      u[a] = x - static_cast<double>(b[a]);
    }
    for (int c = 0; c < 8; ++c) {
      const int dx = c & 1, dy = (c >> 1) & 1, dz = (c >> 2) & 1;
      const double w = (dx ? u[0] : 1 - u[0]) * (dy ? u[1] : 1 - u[1]) * (dz ? u[2] : 1 - u[2]);
      const auto& v = values_[static_cast<size_t>((b[0] + dx) + n_[0] * ((b[1] + dy) + n_[1] * (b[2] + dz)))];
      for (int ch = 0; ch < 4; ++ch) out[ch] += w * v[ch];
    }
    return out;
  }

 private:
  Vector3d origin_;
  double step_;
  std::array<int64_t, 3> n_{};
  std::vector<std::array<float, 4>> values_;
};

// Sum of random plane waves: smooth, band-limited, cheap to evaluate on the coarse lattice.
struct Waves {
  struct Wave {
    Vector3d k;  // rad/mm
    double phase, amplitude;
  };
  std::vector<Wave> waves;
  static Waves random(Rng& rng, int count, double wavelength_lo, double wavelength_hi, double amplitude) {
    Waves w;
    for (int i = 0; i < count; ++i) {
      const double lambda = rng.uniform(wavelength_lo, wavelength_hi);
      const Vector3d dir = rng.unit_vector();
      w.waves.push_back({dir * (2.0 * std::numbers::pi / lambda), rng.uniform(0.0, 2.0 * std::numbers::pi),
                         amplitude * rng.uniform(0.5, 1.0)});
    }
    return w;
  }
  double operator()(const Vector3d& p) const {
    double s = 0;
    for (const auto& w : waves) s += w.amplitude * std::sin(w.k.dot(p) + w.phase);
    return s;
  }
};

// Trilinear interpolation in a [k][j][i] float array; 0 outside.
inline float trilinear(const float* data, const std::array<int64_t, 3>& d, double x, double y, double z) {
  if (!(x >= 0.0 && y >= 0.0 && z >= 0.0)) return 0.0f;
  const int64_t i = static_cast<int64_t>(x), j = static_cast<int64_t>(y), k = static_cast<int64_t>(z);
  if (i >= d[0] - 1 || j >= d[1] - 1 || k >= d[2] - 1) return 0.0f;
  const float fx = static_cast<float>(x - static_cast<double>(i)), fy = static_cast<float>(y - static_cast<double>(j)),
              fz = static_cast<float>(z - static_cast<double>(k));
  const int64_t sx = 1, sy = d[0], sz = d[0] * d[1];
  const float* p = data + i + sy * j + sz * k;
  const float c00 = p[0] + fx * (p[sx] - p[0]);
  const float c10 = p[sy] + fx * (p[sy + sx] - p[sy]);
  const float c01 = p[sz] + fx * (p[sz + sx] - p[sz]);
  const float c11 = p[sz + sy] + fx * (p[sz + sy + sx] - p[sz + sy]);
  const float c0 = c00 + fy * (c10 - c00);
  const float c1 = c01 + fy * (c11 - c01);
  return c0 + fz * (c1 - c0);
}

// Rasterises one lesion into the template-space maps: an irregular blob (union of perturbed
// ellipsoids modulated by smooth noise), grown inside its region's parenchyma until it holds the
// target volume. `lf` = lesion fraction with a ~1 mm soft edge, `ladc` its ADC, `lid` its index.
void rasterise_lesion(const Template& t, const Lesion& lesion, uint8_t id, Rng& rng, std::vector<float>& lf,
                      std::vector<float>& ladc, std::vector<uint8_t>& lid) {
  const double voxel_ml = t.grid.voxel_volume_ml();
  const double r0 = std::cbrt(3.0 * lesion.target_volume_ml * 1000.0 / (4.0 * std::numbers::pi));
  struct Ellipsoid {
    Vector3d centre;
    Matrix3d inv;  // maps an offset to normalised radius coordinates
  };
  std::vector<Ellipsoid> parts;
  const int count = 1 + static_cast<int>(rng.below(4));
  for (int e = 0; e < count; ++e) {
    Vector3d axes(1.0, rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0));
    axes /= std::cbrt(axes.prod());
    Vector3d c = lesion.centre_template;
    double scale = r0;
    if (e > 0) {
      scale = r0 * rng.uniform(0.35, 0.7);
      c += rng.unit_vector() * (r0 * rng.uniform(0.4, 1.0));
    }
    const Matrix3d rot = rng.rotation();
    parts.push_back({c, (scale * axes).cwiseInverse().asDiagonal() * rot.transpose()});
  }
  const ValueNoise noise(rng.bits(), std::max(3.0, 0.6 * r0));
  const double roughness = rng.uniform(0.15, 0.35);
  const double adc_spread = rng.uniform(20.0, 60.0);
  const ValueNoise adc_noise(rng.bits(), std::max(3.0, 0.5 * r0));

  // Bounding box in template voxels.
  const double reach = 2.3 * r0 + 4.0;
  const Eigen::Vector4d cv = t.world_to_voxel * lesion.centre_template.homogeneous();
  const auto sp = t.grid.spacing_mm();
  std::array<int64_t, 3> lo{}, hi{};
  for (int a = 0; a < 3; ++a) {
    lo[a] = std::max<int64_t>(0, static_cast<int64_t>(std::floor(cv[a] - reach / sp[a])));
    hi[a] = std::min<int64_t>(t.grid.dims[a] - 1, static_cast<int64_t>(std::ceil(cv[a] + reach / sp[a])));
  }
  struct Cand {
    float f;
    uint32_t idx;
  };
  std::vector<Cand> cands;
  const auto& d = t.grid.dims;
  for (int64_t k = lo[2]; k <= hi[2]; ++k)
    for (int64_t j = lo[1]; j <= hi[1]; ++j)
      for (int64_t i = lo[0]; i <= hi[0]; ++i) {
        const size_t idx = static_cast<size_t>(i + d[0] * (j + d[1] * k));
        if (t.region[idx] != lesion.region) continue;
        const Vector3d p = t.grid.to_patient(static_cast<double>(i), static_cast<double>(j), static_cast<double>(k));
        double f = 1e9;
        for (const auto& e : parts) f = std::min(f, (e.inv * (p - e.centre)).norm());
        f *= 1.0 + roughness * noise(p);
        cands.push_back({static_cast<float>(f), static_cast<uint32_t>(idx)});
      }
  if (cands.empty()) return;
  const size_t want = std::clamp<size_t>(static_cast<size_t>(std::llround(lesion.target_volume_ml / voxel_ml)), 1,
                                         cands.size());
  std::nth_element(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(want - 1), cands.end(),
                   [](const Cand& a, const Cand& b) { return a.f < b.f; });
  const double threshold = cands[want - 1].f;
  // f grows by about 1/r0 per mm: a soft edge one voxel wide centred on the threshold.
  for (const auto& c : cands) {
    const double frac = std::clamp(0.5 + (threshold - c.f) * r0, 0.0, 1.0);
    if (frac <= 0.0) continue;
    if (frac > lf[c.idx]) {
      lf[c.idx] = static_cast<float>(frac);
      lid[c.idx] = id;
      const int64_t i = c.idx % d[0], j = (c.idx / d[0]) % d[1], k = c.idx / (d[0] * d[1]);
      const Vector3d p = t.grid.to_patient(static_cast<double>(i), static_cast<double>(j), static_cast<double>(k));
      // Stored weighted by the fraction, so that interpolated ladc / interpolated lf is the ADC.
      ladc[c.idx] = static_cast<float>((lesion.adc + adc_spread * adc_noise(p)) * frac);
    }
  }
}

// The lesion of the strongest of the 8 template voxels that trilinear() blends at (x, y, z);
// 0 when none of them belongs to a lesion.
uint8_t strongest_lesion_id(const std::vector<float>& lf, const std::vector<uint8_t>& lid,
                            const std::array<int64_t, 3>& d, double x, double y, double z) {
  if (!(x >= 0.0 && y >= 0.0 && z >= 0.0)) return 0;
  const int64_t i = static_cast<int64_t>(x), j = static_cast<int64_t>(y), k = static_cast<int64_t>(z);
  if (i >= d[0] - 1 || j >= d[1] - 1 || k >= d[2] - 1) return 0;
  uint8_t id = 0;
  float best = 0.0f;
  for (int c = 0; c < 8; ++c) {
    const size_t idx = static_cast<size_t>((i + (c & 1)) + d[0] * ((j + ((c >> 1) & 1)) + d[1] * (k + (c >> 2))));
    if (lid[idx] != 0 && lf[idx] > best) {
      best = lf[idx];
      id = lid[idx];
    }
  }
  return id;
}

nlohmann::json vec_json(const Vector3d& v, double round_to = 1e-3) {
  auto r = [&](double x) { return std::round(x / round_to) * round_to; };
  return nlohmann::json::array({r(v.x()), r(v.y()), r(v.z())});
}

}  // namespace

base::Result<PhantomStudy> make_phantom(const PhantomOptions& options) {
  if (options.lesion_count && (*options.lesion_count < 0 || *options.lesion_count > kMaxPhantomLesions)) {
    return base::invalid_argument("lesion count " + std::to_string(*options.lesion_count) + " is out of range 0.." +
                                  std::to_string(kMaxPhantomLesions));
  }
  SB_ASSIGN_OR_RETURN(std::shared_ptr<const Template> tp, load_template(options.colin27_path, options.aal_path));
  const Template& t = *tp;
  Rng rng(options.seed ^ 0x5EED5EED5EED5EEDull);

  // --- Anatomy: subject pose and smooth deformation (subject -> template). ---
  const Vector3d rot_deg(rng.uniform(-6, 6), rng.uniform(-4, 4), rng.uniform(-6, 6));
  const Vector3d scale(rng.uniform(0.93, 1.07), rng.uniform(0.93, 1.07), rng.uniform(0.93, 1.07));
  const Matrix3d pose = small_rotation(rot_deg.x(), rot_deg.y(), rot_deg.z()) * scale.asDiagonal();
  const Matrix3d m = pose.inverse();  // subject offset -> template offset
  const Vector3d c_subject(rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-8, 8));
  const double warp_mm = rng.uniform(1.0, 4.0);
  std::array<Waves, 3> warp{Waves::random(rng, 3, 50, 140, warp_mm / 2), Waves::random(rng, 3, 50, 140, warp_mm / 2),
                            Waves::random(rng, 3, 50, 140, warp_mm / 2)};
  const double bias_strength = rng.uniform(0.05, 0.2);
  const Waves bias = Waves::random(rng, 3, 150, 400, bias_strength / 2);

  // --- Tissue properties. ---
  TissueParams tissue{};
  tissue.adc_csf = rng.uniform(2800, 3200);
  tissue.adc_gm = rng.uniform(760, 860);
  tissue.adc_wm = rng.uniform(640, 740);
  const double gain = rng.uniform(500, 1500);
  tissue.s0_wm = gain;
  tissue.s0_gm = gain * rng.uniform(1.15, 1.35);
  tissue.s0_csf = gain * rng.uniform(1.8, 2.4);
  const double sigma = gain * rng.uniform(0.015, 0.03);

  // --- Acquisition grid: axial, slight obliquity, FOV covering the head. ---
  const double inplane_mm = std::round(rng.uniform(1.2, 2.0) * 100.0) / 100.0;
  const double thickness_mm = std::round(rng.uniform(4.0, 6.0) * 10.0) / 10.0;
  const double fov_mm = rng.uniform(220, 240);
  const double fov_ap_mm = fov_mm * rng.uniform(1.0, 1.12);
  const Vector3d tilt_deg(rng.uniform(-5, 5), rng.uniform(-3, 3), rng.uniform(-3, 3));
  const Matrix3d orient = small_rotation(tilt_deg.x(), tilt_deg.y(), tilt_deg.z());
  const double head_lo_z = t.extent_lo.z() * 1.1 - 6.0, head_hi_z = t.extent_hi.z() * 1.1 + 6.0;
  const int64_t ni = static_cast<int64_t>(std::llround(fov_mm / inplane_mm));
  const int64_t nj = static_cast<int64_t>(std::llround(fov_ap_mm / inplane_mm));
  const int64_t nk = static_cast<int64_t>(std::ceil((head_hi_z - head_lo_z) / thickness_mm));
  const Vector3d slab_centre = c_subject + Vector3d(rng.uniform(-5, 5), rng.uniform(-5, 5), 0.5 * (head_lo_z + head_hi_z));
  Grid grid;
  grid.dims = {ni, nj, nk};
  grid.affine.block<3, 3>(0, 0) = orient * Vector3d(inplane_mm, inplane_mm, thickness_mm).asDiagonal();
  grid.affine.block<3, 1>(0, 3) =
      slab_centre - grid.affine.block<3, 3>(0, 0) *
                        Vector3d(0.5 * static_cast<double>(ni - 1), 0.5 * static_cast<double>(nj - 1),
                                 0.5 * static_cast<double>(nk - 1));

  // Coarse fields over the grid's bounding box.
  Vector3d box_lo = Vector3d::Constant(1e9), box_hi = Vector3d::Constant(-1e9);
  for (int c = 0; c < 8; ++c) {
    const Vector3d p = grid.to_patient((c & 1) ? static_cast<double>(ni) : -1.0, (c & 2) ? static_cast<double>(nj) : -1.0,
                                       (c & 4) ? static_cast<double>(nk) : -1.0);
    box_lo = box_lo.cwiseMin(p);
    box_hi = box_hi.cwiseMax(p);
  }
  CoarseField field(box_lo, box_hi, 8.0);
  double max_disp = 0;
  for (int64_t k = 0; k < field.dims()[2]; ++k)
    for (int64_t j = 0; j < field.dims()[1]; ++j)
      for (int64_t i = 0; i < field.dims()[0]; ++i) {
        const Vector3d p = field.node(i, j, k);
        auto& v = field.at(i, j, k);
        for (int a = 0; a < 3; ++a) v[a] = static_cast<float>(warp[a](p));
        v[3] = static_cast<float>(bias(p));
        max_disp = std::max(max_disp, Vector3d(v[0], v[1], v[2]).norm());
      }

  // Subject (LPS mm) -> template voxel: u = B p + b0 + L d(p).
  const Matrix3d tl = t.world_to_voxel.block<3, 3>(0, 0);
  const Vector3d tt = t.world_to_voxel.block<3, 1>(0, 3);
  const Matrix3d B = tl * m;
  const Vector3d b0 = tl * (t.centre_lps - m * c_subject) + tt;
  auto subject_to_template = [&](const Vector3d& p) {
    const auto f = field.sample(p);
    return Vector3d(t.centre_lps + m * (p - c_subject) + Vector3d(f[0], f[1], f[2]));
  };

  // --- Lesions, in template space. ---
  int lesion_count;
  if (options.lesion_count) {
    lesion_count = *options.lesion_count;
    rng.uniform();  // keep the draw sequence aligned with the unforced case
  } else {
    lesion_count = rng.uniform() < 0.15 ? 0 : 1 + static_cast<int>(rng.below(5));
  }
  const double jacobian = scale.prod();  // template volume -> subject volume
  std::vector<float> lf(t.t1.size(), 0.0f), ladc(t.t1.size(), 0.0f);
  std::vector<uint8_t> lid(t.t1.size(), 0);
  std::vector<Lesion> lesions;
  for (int l = 0; l < lesion_count; ++l) {
    Lesion les{};
    const double r = rng.uniform();
    les.region = kSupratentorial;
    if (r < 0.15 && !t.candidates[kCerebellum].empty()) les.region = kCerebellum;
    else if (r < 0.25 && !t.candidates[kBrainstem].empty()) les.region = kBrainstem;
    const double cap_ml = les.region == kSupratentorial ? 100.0 : (les.region == kCerebellum ? 40.0 : 6.0);
    les.target_volume_ml = rng.log_uniform(0.2, cap_ml);
    const auto& cand = t.candidates[les.region];
    const uint32_t idx = cand[static_cast<size_t>(rng.below(static_cast<int64_t>(cand.size())))];
    const int64_t d0 = t.grid.dims[0], d1 = t.grid.dims[1];
    les.centre_template = t.grid.to_patient(static_cast<double>(idx % d0), static_cast<double>((idx / d0) % d1),
                                            static_cast<double>(idx / (d0 * d1)));
    les.adc = rng.uniform(350, 600);
    les.s0_factor = rng.uniform(1.1, 1.4);
    Lesion in_template = les;
    in_template.target_volume_ml = les.target_volume_ml / jacobian;
    rasterise_lesion(t, in_template, static_cast<uint8_t>(l + 1), rng, lf, ladc, lid);
    lesions.push_back(les);
  }

  // --- Sample onto the acquisition grid with partial volume across the slice. ---
  PhantomStudy study;
  study.dwi = VolumeF(grid);
  study.adc = VolumeF(grid);
  study.truth = VolumeU8(grid);
  const int n_sub = std::max(1, static_cast<int>(std::ceil(thickness_mm / 1.0)));
  const Vector3d slice_dir = grid.affine.block<3, 1>(0, 2);  // includes the thickness
  const Vector3d du = B * slice_dir / static_cast<double>(n_sub);
  const double b = kPhantomBValue * 1e-6;
  const double e_csf = std::exp(-b * tissue.adc_csf), e_gm = std::exp(-b * tissue.adc_gm),
               e_wm = std::exp(-b * tissue.adc_wm);
  const float* t1 = t.t1.data();
  const auto& td = t.grid.dims;
  std::vector<double> lesion_s0(lesions.size() + 1, 1.0);
  for (size_t l = 0; l < lesions.size(); ++l) lesion_s0[l + 1] = lesions[l].s0_factor;
  std::vector<int64_t> lesion_voxels(lesions.size() + 1, 0);
  std::vector<float> s0_map(static_cast<size_t>(grid.voxel_count()), 0.0f);

  for (int64_t k = 0; k < nk; ++k)
    for (int64_t j = 0; j < nj; ++j)
      for (int64_t i = 0; i < ni; ++i) {
        const Vector3d p0 = grid.to_patient(static_cast<double>(i), static_cast<double>(j), static_cast<double>(k));
        const auto f = field.sample(p0);
        const Vector3d u0 = B * p0 + b0 + tl * Vector3d(f[0], f[1], f[2]);
        double s0_sum = 0, sb_sum = 0, les_sum = 0, best_les = 0;
        uint8_t best_id = 0;
        for (int s = 0; s < n_sub; ++s) {
          const Vector3d u = u0 + du * (static_cast<double>(s) + 0.5 - 0.5 * n_sub);
          const double v = trilinear(t1, td, u.x(), u.y(), u.z());
          if (v <= 0.0) continue;
          // Tissue fractions from T1 intensity: piecewise linear between class centres; below
          // the CSF centre the voxel shares its volume with the (signal-free) outside.
          double f_csf = 0, f_gm = 0, f_wm = 0;
          if (v < t.csf) {
            f_csf = v / t.csf;
          } else if (v < t.gm) {
            f_gm = (v - t.csf) / (t.gm - t.csf);
            f_csf = 1 - f_gm;
          } else if (v < t.wm) {
            f_wm = (v - t.gm) / (t.wm - t.gm);
            f_gm = 1 - f_wm;
          } else {
            f_wm = 1;
          }
          const double par = f_gm + f_wm;
          double s0 = f_csf * tissue.s0_csf + f_gm * tissue.s0_gm + f_wm * tissue.s0_wm;
          double sb = f_csf * tissue.s0_csf * e_csf + f_gm * tissue.s0_gm * e_gm + f_wm * tissue.s0_wm * e_wm;
          if (par > 0) {
            const double lf_raw = trilinear(lf.data(), td, u.x(), u.y(), u.z());
            const double l = std::min(lf_raw, par);
            if (l > 0.0) {
              const int64_t ri = std::llround(u.x()), rj = std::llround(u.y()), rk = std::llround(u.z());
              const uint8_t id = lid[static_cast<size_t>(ri + td[0] * (rj + td[1] * rk))];
              const double les_adc = trilinear(ladc.data(), td, u.x(), u.y(), u.z()) / lf_raw;
              const double adc_l = std::clamp(std::isfinite(les_adc) ? les_adc : 500.0, 300.0, 700.0);
              const double keep = 1.0 - l / par;
              const double s0_par = (f_gm * tissue.s0_gm + f_wm * tissue.s0_wm) / par;
              const double s0_l = s0_par * lesion_s0[id];
              s0 = f_csf * tissue.s0_csf + keep * (f_gm * tissue.s0_gm + f_wm * tissue.s0_wm) + l * s0_l;
              sb = f_csf * tissue.s0_csf * e_csf + keep * (f_gm * tissue.s0_gm * e_gm + f_wm * tissue.s0_wm * e_wm) +
                   l * s0_l * std::exp(-b * adc_l);
              les_sum += l;
              // The nearest template voxel may lie just outside the lesion whose neighbours give
              // the sample its fraction: credit the sample to their lesion, so that every truth
              // voxel belongs to one and the lesions' volume_ml add up to the truth (which
              // rounding differences, e.g. fused multiply-add on arm64, would otherwise break).
              const uint8_t owner = id != 0 ? id : strongest_lesion_id(lf, lid, td, u.x(), u.y(), u.z());
              if (l > best_les && owner != 0) {
                best_les = l;
                best_id = owner;
              }
            }
          }
          s0_sum += s0;
          sb_sum += sb;
        }
        const size_t idx = study.dwi.index(i, j, k);
        const double gain_field = std::exp(f[3]);
        s0_map[idx] = static_cast<float>(s0_sum / n_sub * gain_field);
        study.dwi.data[idx] = static_cast<float>(sb_sum / n_sub * gain_field);
        if (les_sum / n_sub >= 0.5) {
          study.truth.data[idx] = 1;
          ++lesion_voxels[best_id];
        }
      }

  // Rician noise on both b-values, then ADC = ln(S0 / Sb) / b like the scanner's fit.
  Rng noise_rng(options.seed ^ 0xA11CE5EEDull);
  const double adc_floor = 4.0 * sigma;
  for (size_t idx = 0; idx < study.dwi.data.size(); ++idx) {
    const double sb = study.dwi.data[idx], s0 = s0_map[idx];
    const double n1 = noise_rng.normal() * sigma, n2 = noise_rng.normal() * sigma;
    const double n3 = noise_rng.normal() * sigma, n4 = noise_rng.normal() * sigma;
    const double sb_noisy = std::hypot(sb + n1, n2);
    const double s0_noisy = std::hypot(s0 + n3, n4);
    study.dwi.data[idx] = static_cast<float>(sb_noisy);
    double adc = 0.0;
    if (s0_noisy > adc_floor && sb_noisy > 0.0) adc = std::clamp(std::log(s0_noisy / sb_noisy) / b, 0.0, 4000.0);
    study.adc.data[idx] = static_cast<float>(adc);
  }

  // --- Parameters. ---
  const double voxel_ml = grid.voxel_volume_ml();
  nlohmann::json p;
  p["generator"] = "strokebox phantom";
  p["version"] = 1;
  p["seed"] = options.seed;
  p["b_value"] = kPhantomBValue;
  p["template"] = options.colin27_path;
  nlohmann::json aff = nlohmann::json::array();
  for (int r = 0; r < 4; ++r) {
    nlohmann::json row = nlohmann::json::array();
    for (int c = 0; c < 4; ++c) row.push_back(grid.affine(r, c));
    aff.push_back(row);
  }
  const auto spacing = grid.spacing_mm();
  p["grid"] = {{"dims", {ni, nj, nk}},
               {"spacing_mm", {spacing[0], spacing[1], spacing[2]}},
               {"slice_thickness_mm", thickness_mm},
               {"affine_lps", aff},
               {"tilt_deg", vec_json(tilt_deg)},
               {"partial_volume_samples_per_slice", n_sub}};
  p["tissue"] = {{"adc", {{"csf", tissue.adc_csf}, {"gm", tissue.adc_gm}, {"wm", tissue.adc_wm}}},
                 {"s0", {{"csf", tissue.s0_csf}, {"gm", tissue.s0_gm}, {"wm", tissue.s0_wm}}},
                 {"noise_sigma", sigma},
                 {"bias_field_strength", bias_strength},
                 {"template_t1_centres", {t.csf, t.gm, t.wm}}};
  p["deformation"] = {{"rotation_deg", vec_json(rot_deg)},
                      {"scale", vec_json(scale, 1e-4)},
                      {"subject_centre_lps_mm", vec_json(c_subject)},
                      {"max_displacement_mm", max_disp}};
  nlohmann::json jl = nlohmann::json::array();
  double total_ml = 0;
  const Matrix4d to_voxel = grid.affine.inverse();
  for (size_t l = 0; l < lesions.size(); ++l) {
    const auto& les = lesions[l];
    // Invert the subject -> template map by fixed-point iteration (the warp is small and smooth).
    Vector3d ps = c_subject + pose * (les.centre_template - t.centre_lps);
    for (int it = 0; it < 6; ++it) {
      const Vector3d q = subject_to_template(ps);
      ps += pose * (les.centre_template - q);
    }
    const Eigen::Vector4d vox = to_voxel * ps.homogeneous();
    const double ml = static_cast<double>(lesion_voxels[l + 1]) * voxel_ml;
    total_ml += ml;
    jl.push_back({{"index", l + 1},
                  {"region", region_name(les.region)},
                  {"centre_lps_mm", vec_json(ps)},
                  {"centre_voxel", vec_json(vox.head<3>())},
                  {"target_volume_ml", les.target_volume_ml},
                  {"volume_ml", ml},
                  {"adc", les.adc},
                  {"s0_factor", les.s0_factor}});
  }
  p["lesions"] = jl;
  p["lesion_count"] = lesion_count;
  p["total_lesion_volume_ml"] = total_ml;
  study.params = std::move(p);
  return study;
}

base::Status write_phantom_nifti(const PhantomStudy& study, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return base::internal_error("cannot create folder '" + dir + "': " + ec.message());
  const std::filesystem::path d(dir);
  SB_RETURN_IF_ERROR(write_nifti((d / "image_0000.nii.gz").string(), study.dwi));
  SB_RETURN_IF_ERROR(write_nifti((d / "image_0001.nii.gz").string(), study.adc));
  SB_RETURN_IF_ERROR(write_nifti((d / "truth.nii.gz").string(), study.truth));
  const std::string json_path = (d / "phantom.json").string();
  std::ofstream out(json_path);
  out << study.params.dump(2) << "\n";
  out.close();
  if (!out) return base::internal_error("cannot write '" + json_path + "'");
  return base::ok_status();
}

}  // namespace image
