// Separable re-implementation of scipy.ndimage.zoom(grid_mode=True, mode="nearest") as called by
// skimage.transform.resize inside nnU-Net's resample_data_or_seg (default_resampling.py).
//
// scipy evaluates the tensor-product spline in one nD pass; here the same linear operator is
// applied one axis at a time (prefilter and interpolation along an axis commute with the
// operations along the other axes, and edge padding along one axis commutes with both), which
// is exact up to float64 rounding.
#include "image/nnunet_resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

namespace image {
namespace {

// scipy's _prepad_for_spline_filter pads by 12 (edge values) for mode "nearest".
constexpr int64_t kSplinePad = 12;
// Pole of the cubic B-spline prefilter: sqrt(3) - 2 (scipy ni_splines.c get_filter_poles).
constexpr double kCubicPole = -0.267949192431122706472553658494127633;

std::string shape_str(const Shape3& s) {
  return "[" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + "]";
}

// Input coordinate of output index i (scipy NI_ZoomShift, grid_mode): (i + 0.5) * in/out - 0.5.
inline double zoom_coordinate(int64_t i, double zoom) { return ((double)i + 0.5) * zoom - 0.5; }

// Per-output-sample taps along one axis: `start` index into the (possibly padded) source line and
// order + 1 weights.
struct Taps {
  int ntaps = 1;
  std::vector<int64_t> start;   // per output index
  std::vector<double> weights;  // ntaps per output index
  std::vector<int64_t> index;   // ntaps per output index (clamped source indices)
};

// Builds the taps for resizing a line of n samples to m samples with the given spline order.
// For order 3 the source is the prefiltered line padded by kSplinePad on both sides.
Taps make_taps(int64_t n, int64_t m, int order) {
  Taps t;
  t.ntaps = order + 1;
  t.start.resize(m);
  t.weights.resize(m * t.ntaps);
  t.index.resize(m * t.ntaps);
  const double zoom = (double)n / (double)m;
  const int64_t len = order > 1 ? n + 2 * kSplinePad : n;
  const double shift = order > 1 ? (double)kSplinePad : 0.0;
  for (int64_t i = 0; i < m; ++i) {
    double cc = zoom_coordinate(i, zoom) + shift;
    // map_coordinate with NI_EXTEND_NEAREST: clamp into [0, len - 1].
    if (cc < 0) cc = 0;
    if (cc > (double)(len - 1)) cc = (double)(len - 1);
    int64_t start;
    if (order & 1) {
      start = (int64_t)std::floor(cc) - order / 2;
    } else {
      start = (int64_t)std::floor(cc + 0.5) - order / 2;
    }
    t.start[i] = start;
    double* w = &t.weights[i * t.ntaps];
    if (order == 0) {
      w[0] = 1.0;
    } else {
      // scipy ni_splines.c get_spline_interpolation_weights.
      double x = cc - (double)start;
      x -= std::floor((order & 1) ? x : x + 0.5);
      if (order == 1) {
        w[0] = 1.0 - x;
      } else {  // order 3
        const double y = x;
        const double z = 1.0 - x;
        w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
        w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
        w[0] = z * z * z / 6.0;
      }
      w[order] = 1.0;
      for (int k = 0; k < order; ++k) w[order] -= w[k];
    }
    for (int k = 0; k < t.ntaps; ++k) {
      int64_t idx = start + k;
      idx = std::clamp<int64_t>(idx, 0, len - 1);  // NI_EXTEND_NEAREST at the border
      t.index[i * t.ntaps + k] = idx;
    }
  }
  return t;
}

// In-place cubic B-spline prefilter of `inner` interleaved lines of length L (element (k, j) at
// c[k * inner + j]), scipy apply_filter with the mirror initialisation that scipy uses for mode
// "nearest" (on the already edge-padded line).
void spline_prefilter_cubic(double* c, int64_t L, int64_t inner, std::vector<double>& acc) {
  if (L <= 1) return;
  const double z = kCubicPole;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  for (int64_t k = 0; k < L * inner; ++k) c[k] *= gain;
  // Causal initialisation (_init_causal_mirror).
  const double z_n_1 = std::pow(z, (double)(L - 1));
  acc.assign(inner, 0.0);
  for (int64_t j = 0; j < inner; ++j) acc[j] = c[j] + z_n_1 * c[(L - 1) * inner + j];
  double z_i = z;
  for (int64_t i = 1; i < L - 1; ++i) {
    const double* ci = c + i * inner;
    const double* cr = c + (L - 1 - i) * inner;
    for (int64_t j = 0; j < inner; ++j) acc[j] += z_i * (ci[j] + z_n_1 * cr[j]);
    z_i *= z;
  }
  const double denom = 1 - z_n_1 * z_n_1;
  for (int64_t j = 0; j < inner; ++j) c[j] = acc[j] / denom;
  for (int64_t i = 1; i < L; ++i) {
    double* ci = c + i * inner;
    const double* cp = c + (i - 1) * inner;
    for (int64_t j = 0; j < inner; ++j) ci[j] += z * cp[j];
  }
  // Anticausal initialisation (_init_anticausal_mirror).
  {
    double* cl = c + (L - 1) * inner;
    const double* cp = c + (L - 2) * inner;
    for (int64_t j = 0; j < inner; ++j) cl[j] = (z * cp[j] + cl[j]) * z / (z * z - 1);
  }
  for (int64_t i = L - 2; i >= 0; --i) {
    double* ci = c + i * inner;
    const double* cn = c + (i + 1) * inner;
    for (int64_t j = 0; j < inner; ++j) ci[j] = z * (cn[j] - ci[j]);
  }
}

// Resizes `src` (outer, n, inner) along the middle axis to `dst` (outer, m, inner).
void resize_axis(const double* src, int64_t outer, int64_t n, int64_t inner, double* dst, int64_t m, int order,
                 std::vector<double>& line, std::vector<double>& acc) {
  const Taps taps = make_taps(n, m, order);
  const int nt = taps.ntaps;
  for (int64_t o = 0; o < outer; ++o) {
    const double* s = src + o * n * inner;
    double* d = dst + o * m * inner;
    const double* base = s;
    if (order > 1) {
      // Edge-pad by kSplinePad along the axis, then prefilter.
      const int64_t L = n + 2 * kSplinePad;
      line.resize(L * inner);
      for (int64_t k = 0; k < L; ++k) {
        const int64_t sk = std::clamp<int64_t>(k - kSplinePad, 0, n - 1);
        std::memcpy(&line[k * inner], s + sk * inner, sizeof(double) * inner);
      }
      spline_prefilter_cubic(line.data(), L, inner, acc);
      base = line.data();
    }
    for (int64_t i = 0; i < m; ++i) {
      double* di = d + i * inner;
      const double* w = &taps.weights[i * nt];
      const int64_t* idx = &taps.index[i * nt];
      const double* r0 = base + idx[0] * inner;
      const double w0 = w[0];
      for (int64_t j = 0; j < inner; ++j) di[j] = w0 * r0[j];
      for (int k = 1; k < nt; ++k) {
        const double* rk = base + idx[k] * inner;
        const double wk = w[k];
        for (int64_t j = 0; j < inner; ++j) di[j] += wk * rk[j];
      }
    }
  }
}

}  // namespace

Shape3 compute_new_shape(const Shape3& old_shape, const Spacing3& old_spacing, const Spacing3& new_spacing) {
  Shape3 out{};
  for (int a = 0; a < 3; ++a) {
    const double v = old_spacing[a] / new_spacing[a] * (double)old_shape[a];
    out[a] = (int64_t)std::nearbyint(v);  // default rounding mode: half to even, like Python round
  }
  return out;
}

SeparateZ determine_do_sep_z_and_axis(std::optional<bool> force_separate_z, const Spacing3& current_spacing,
                                      const Spacing3& new_spacing) {
  auto anisotropic = [](const Spacing3& s) {
    const double mx = std::max({s[0], s[1], s[2]});
    const double mn = std::min({s[0], s[1], s[2]});
    return mx / mn > kAnisoThreshold;
  };
  auto lowres_axes = [](const Spacing3& s) {
    const double mx = std::max({s[0], s[1], s[2]});
    std::vector<int> axes;
    for (int a = 0; a < 3; ++a)
      if (mx / s[a] == 1.0) axes.push_back(a);
    return axes;
  };
  SeparateZ r;
  std::vector<int> axes;
  if (force_separate_z.has_value()) {
    r.do_separate_z = *force_separate_z;
    if (*force_separate_z) axes = lowres_axes(current_spacing);
  } else if (anisotropic(current_spacing)) {
    r.do_separate_z = true;
    axes = lowres_axes(current_spacing);
  } else if (anisotropic(new_spacing)) {
    r.do_separate_z = true;
    axes = lowres_axes(new_spacing);
  }
  if (!axes.empty()) {
    if (axes.size() >= 2) {
      r.do_separate_z = false;
      r.axis = -1;
    } else {
      r.axis = axes[0];
    }
  } else {
    r.axis = -1;
    if (r.do_separate_z) r.do_separate_z = false;  // cannot happen with finite spacings
  }
  return r;
}

base::Status resize_volume(const double* in, const Shape3& in_shape, double* out, const Shape3& out_shape,
                           int order) {
  if (order != 0 && order != 1 && order != 3)
    return base::invalid_argument("resize: spline order " + std::to_string(order) + " not supported (0, 1, 3)");
  for (int a = 0; a < 3; ++a) {
    if (in_shape[a] < 1 || out_shape[a] < 1)
      return base::invalid_argument("resize: empty shape " + shape_str(in_shape) + " -> " + shape_str(out_shape));
  }
  const int64_t n_in = in_shape[0] * in_shape[1] * in_shape[2];
  double lo = in[0], hi = in[0];
  for (int64_t k = 1; k < n_in; ++k) {
    lo = std::min(lo, in[k]);
    hi = std::max(hi, in[k]);
  }
  std::vector<double> a(in, in + n_in), b, line, acc;
  Shape3 cur = in_shape;
  // Pass order: the most shrinking axis first keeps the intermediate volumes small (the passes
  // commute; only float64 rounding differs).
  std::array<int, 3> axes{0, 1, 2};
  std::stable_sort(axes.begin(), axes.end(), [&](int p, int q) {
    return (double)out_shape[p] / (double)in_shape[p] < (double)out_shape[q] / (double)in_shape[q];
  });
  for (int ax : axes) {
    if (cur[ax] == out_shape[ax]) continue;
    int64_t outer = 1, inner = 1;
    for (int q = 0; q < ax; ++q) outer *= cur[q];
    for (int q = ax + 1; q < 3; ++q) inner *= cur[q];
    b.resize(outer * out_shape[ax] * inner);
    resize_axis(a.data(), outer, cur[ax], inner, b.data(), out_shape[ax], order, line, acc);
    cur[ax] = out_shape[ax];
    a.swap(b);
  }
  const int64_t n_out = out_shape[0] * out_shape[1] * out_shape[2];
  // skimage _clip_warp_output: clip to the input's range (mode "edge").
  for (int64_t k = 0; k < n_out; ++k) out[k] = std::clamp(a[k], lo, hi);
  return base::ok_status();
}

base::Result<Tensor4f> resample_data_or_seg(const Tensor4f& data, const Shape3& new_shape, int order,
                                            SeparateZ separate_z, int order_z, bool round_output_to_fp16) {
  const Shape3 shape = data.spatial();
  const int64_t C = data.channels();
  if (data.data.size() != (size_t)(C * data.channel_size()))
    return base::invalid_argument("resample: tensor data size does not match its shape");
  for (int a = 0; a < 3; ++a)
    if (new_shape[a] < 1) return base::invalid_argument("resample: empty target shape " + shape_str(new_shape));
  if (shape == new_shape) return data;
  if (order != 0 && order != 1 && order != 3)
    return base::invalid_argument("resample: order " + std::to_string(order) + " not supported (0, 1, 3)");
  Tensor4f out(C, new_shape);
  const int64_t n_out = out.channel_size();
  auto store = [&](float* dst, const double* src) {
    if (round_output_to_fp16) {
      for (int64_t k = 0; k < n_out; ++k) dst[k] = fp16_round(src[k]);
    } else {
      for (int64_t k = 0; k < n_out; ++k) dst[k] = (float)src[k];
    }
  };
  std::vector<double> in_d(data.channel_size()), out_d(n_out);
  if (!separate_z.do_separate_z) {
    for (int64_t c = 0; c < C; ++c) {
      const float* src = data.channel(c);
      for (size_t k = 0; k < in_d.size(); ++k) in_d[k] = src[k];
      SB_RETURN_IF_ERROR(resize_volume(in_d.data(), shape, out_d.data(), new_shape, order));
      store(out.channel(c), out_d.data());
    }
    return out;
  }
  const int axis = separate_z.axis;
  if (axis < 0 || axis > 2) return base::invalid_argument("resample: separate-z axis must be 0, 1 or 2");
  if (order_z != 0 && order_z != 1)
    return base::invalid_argument("resample: order_z " + std::to_string(order_z) + " not supported (0, 1)");
  // In-plane shapes: the two axes other than `axis`, in order.
  int p0 = axis == 0 ? 1 : 0, p1 = axis == 2 ? 1 : 2;
  const Shape3 slice_in{1, shape[p0], shape[p1]};
  const Shape3 slice_out{1, new_shape[p0], new_shape[p1]};
  Shape3 mid = new_shape;
  mid[axis] = shape[axis];
  const int64_t mid_n = mid[0] * mid[1] * mid[2];
  std::vector<double> here(mid_n), sl_in(slice_in[1] * slice_in[2]), sl_out(slice_out[1] * slice_out[2]);
  for (int64_t c = 0; c < C; ++c) {
    const float* src = data.channel(c);
    for (int64_t s = 0; s < shape[axis]; ++s) {
      // Gather slice s along `axis` into (shape[p0], shape[p1]).
      for (int64_t u = 0; u < shape[p0]; ++u) {
        for (int64_t v = 0; v < shape[p1]; ++v) {
          int64_t idx3[3];
          idx3[axis] = s;
          idx3[p0] = u;
          idx3[p1] = v;
          sl_in[u * shape[p1] + v] = src[(idx3[0] * shape[1] + idx3[1]) * shape[2] + idx3[2]];
        }
      }
      if (slice_in == slice_out) {
        sl_out = sl_in;
      } else {
        SB_RETURN_IF_ERROR(resize_volume(sl_in.data(), slice_in, sl_out.data(), slice_out, order));
      }
      for (int64_t u = 0; u < new_shape[p0]; ++u) {
        for (int64_t v = 0; v < new_shape[p1]; ++v) {
          int64_t idx3[3];
          idx3[axis] = s;
          idx3[p0] = u;
          idx3[p1] = v;
          here[(idx3[0] * mid[1] + idx3[1]) * mid[2] + idx3[2]] = sl_out[u * new_shape[p1] + v];
        }
      }
    }
    if (shape[axis] == new_shape[axis]) {
      store(out.channel(c), here.data());
      continue;
    }
    // map_coordinates(order=order_z, mode="nearest") along `axis` only (the other coordinates are
    // integers): c = old/new * (i + 0.5) - 0.5.
    int64_t outer = 1, inner = 1;
    for (int q = 0; q < axis; ++q) outer *= mid[q];
    for (int q = axis + 1; q < 3; ++q) inner *= mid[q];
    const int64_t n = shape[axis], m = new_shape[axis];
    const double scale = (double)n / (double)m;
    for (int64_t o = 0; o < outer; ++o) {
      const double* s = here.data() + o * n * inner;
      double* d = out_d.data() + o * m * inner;
      for (int64_t i = 0; i < m; ++i) {
        double cc = scale * ((double)i + 0.5) - 0.5;
        cc = std::clamp(cc, 0.0, (double)(n - 1));
        if (order_z == 0) {
          const int64_t k = std::clamp<int64_t>((int64_t)std::floor(cc + 0.5), 0, n - 1);
          std::memcpy(d + i * inner, s + k * inner, sizeof(double) * inner);
        } else {
          const int64_t k0 = (int64_t)std::floor(cc);
          const int64_t k1 = std::min<int64_t>(k0 + 1, n - 1);
          const double t = cc - (double)k0;
          const double w0 = 1.0 - t, w1 = 1.0 - w0;
          for (int64_t j = 0; j < inner; ++j) d[i * inner + j] = w0 * s[k0 * inner + j] + w1 * s[k1 * inner + j];
        }
      }
    }
    store(out.channel(c), out_d.data());
  }
  return out;
}

base::Result<Tensor4f> resample_data_or_seg_to_shape(const Tensor4f& data, const Shape3& new_shape,
                                                     const Spacing3& current_spacing,
                                                     const Spacing3& new_spacing, int order, int order_z,
                                                     std::optional<bool> force_separate_z,
                                                     bool round_output_to_fp16) {
  const SeparateZ sz = determine_do_sep_z_and_axis(force_separate_z, current_spacing, new_spacing);
  return resample_data_or_seg(data, new_shape, order, sz, order_z, round_output_to_fp16);
}

uint16_t fp16_bits_from_double(double x) {
  // Correct rounding (nearest, ties to even) directly from double, like numpy's npy_double_to_half.
  uint64_t u;
  std::memcpy(&u, &x, 8);
  const uint16_t sign = (uint16_t)((u >> 48) & 0x8000u);
  const uint64_t abs = u & 0x7fffffffffffffffull;
  if (abs >= 0x7ff0000000000000ull) {  // inf or nan
    if (abs == 0x7ff0000000000000ull) return sign | 0x7c00u;
    return sign | 0x7e00u;
  }
  const int exp = (int)(abs >> 52) - 1023;
  uint64_t mant = abs & 0x000fffffffffffffull;
  if (exp > 15) return sign | 0x7c00u;  // overflow (>= 65536 before rounding)
  if (exp >= -14) {
    // Normal half: 10 mantissa bits; drop 42 bits with round-to-nearest-even.
    uint64_t m = mant >> 42;
    const uint64_t rem = mant & ((1ull << 42) - 1);
    const uint64_t halfway = 1ull << 41;
    uint32_t h = (uint32_t)((exp + 15) << 10) | (uint32_t)m;
    if (rem > halfway || (rem == halfway && (m & 1))) ++h;  // carries into the exponent correctly
    return sign | (uint16_t)h;                              // 0x7c00 on overflow = inf
  }
  // Subnormal half: value = m * 2^-24.
  if (exp < -25) return sign;  // below half the smallest subnormal: rounds to zero
  mant |= 1ull << 52;          // implicit bit; value = mant * 2^(exp - 52)
  const int shift = 52 - (exp + 24);  // bits to drop so that the unit is 2^-24
  const uint64_t m = mant >> shift;
  const uint64_t rem = mant & ((1ull << shift) - 1);
  const uint64_t halfway = 1ull << (shift - 1);
  uint32_t h = (uint32_t)m;
  if (rem > halfway || (rem == halfway && (m & 1))) ++h;
  return sign | (uint16_t)h;
}

float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  float f;
  if (exp == 0) {
    f = std::ldexp((float)mant, -24);
    return sign ? -f : f;
  }
  uint32_t bits;
  if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace image
