#include "inference/norm_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

// The vector types below cross ABI boundaries only inside always_inline helpers.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace inference {
namespace {

/// Bytes of one statistics chunk of a lane group: small enough to be re-read from L1.
constexpr int64_t kChunkBytes = 16384;

/// Running (count, mean, M2) of one channel; merge() is Chan et al.'s pairwise update:
/// delta = mean_b - mean_a, mean = mean_a + delta * n_b / n, M2 = M2_a + M2_b + delta^2 n_a n_b / n.
struct RunningStat {
  double n = 0.0, mean = 0.0, m2 = 0.0;
  void merge(double nb, double mean_b, double m2_b) {
    const double total = n + nb;
    const double delta = mean_b - mean;
    mean += delta * nb / total;
    m2 += m2_b + delta * delta * n * nb / total;
    n = total;
  }
};

inline float activate(float y, NormActivation act, float alpha) {
  switch (act) {
    case NormActivation::kNone: return y;
    case NormActivation::kRelu: return y > 0.0f ? y : 0.0f;
    case NormActivation::kLeakyRelu: return y >= 0.0f ? y : y * alpha;
    case NormActivation::kSigmoid: return 1.0f / (1.0f + std::exp(-y));
  }
  return y;
}

/// W lanes of fp32 (GCC vector extension: one register on a target that has that width,
/// split into narrower registers or scalars elsewhere).
template <int W>
struct Vec {
  typedef float F __attribute__((vector_size(W * 4)));
  typedef int32_t I __attribute__((vector_size(W * 4)));
  typedef uint32_t U __attribute__((vector_size(W * 4)));
  typedef uint16_t H __attribute__((vector_size(W * 2)));
};

template <int W>
__attribute__((always_inline)) inline typename Vec<W>::F load(const float* p) {
  typename Vec<W>::F v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
__attribute__((always_inline)) inline typename Vec<W>::F load(const uint16_t* p) {
  typename Vec<W>::H h;
  std::memcpy(&h, p, sizeof(h));
  typename Vec<W>::U u = __builtin_convertvector(h, typename Vec<W>::U) << 16;  // bf16 = high half of fp32
  typename Vec<W>::F v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}
template <int W>
__attribute__((always_inline)) inline void store(float* p, typename Vec<W>::F v) {
  std::memcpy(p, &v, sizeof(v));
}
template <int W>
__attribute__((always_inline)) inline void store(uint16_t* p, typename Vec<W>::F v) {
  typename Vec<W>::U u;
  std::memcpy(&u, &v, sizeof(u));
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // round to nearest even (finite values)
  const typename Vec<W>::H h = __builtin_convertvector(u, typename Vec<W>::H);
  std::memcpy(p, &h, sizeof(h));
}
inline float scalar_load(const float* p) { return *p; }
inline float scalar_load(const uint16_t* p) {
  const uint32_t u = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline void scalar_store(float* p, float v) { *p = v; }
inline void scalar_store(uint16_t* p, float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  *p = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/// Statistics and normalization of W adjacent lanes of one channel block: element s of lane l
/// at p[s * stride + l] in the source, o[s * stride + l] in the destination (may be the same
/// memory when S == D). `scale`/`shift` point at the group's first lane.
template <typename S, typename D, int W>
__attribute__((always_inline)) inline void norm_group(const S* p, D* o, int64_t spatial, int64_t stride,
                                                      const float* scale, const float* shift, float eps,
                                                      NormActivation act, float alpha) {
  using F = typename Vec<W>::F;
  const int64_t chunk = std::max<int64_t>(16, kChunkBytes / (W * static_cast<int64_t>(sizeof(S))));
  RunningStat st[W];
  for (int64_t s0 = 0; s0 < spatial; s0 += chunk) {
    const int64_t len = std::min(chunk, spatial - s0);
    const S* q = p + s0 * stride;
    F a = {}, b = {};
    int64_t s = 0;
    for (; s + 2 <= len; s += 2) {
      a += load<W>(q + s * stride);
      b += load<W>(q + (s + 1) * stride);
    }
    if (s < len) a += load<W>(q + s * stride);
    const F cm = (a + b) / static_cast<float>(len);
    F m_a = {}, m_b = {};
    s = 0;
    for (; s + 2 <= len; s += 2) {
      const F d0 = load<W>(q + s * stride) - cm;
      const F d1 = load<W>(q + (s + 1) * stride) - cm;
      m_a += d0 * d0;
      m_b += d1 * d1;
    }
    if (s < len) {
      const F d = load<W>(q + s * stride) - cm;
      m_a += d * d;
    }
    const F m2 = m_a + m_b;
    for (int l = 0; l < W; ++l) st[l].merge(static_cast<double>(len), cm[l], m2[l]);
  }
  F va, vb;
  for (int l = 0; l < W; ++l) {
    const double inv = 1.0 / std::sqrt(st[l].m2 / st[l].n + eps);
    va[l] = static_cast<float>(scale[l] * inv);
    vb[l] = static_cast<float>(shift[l] - st[l].mean * scale[l] * inv);
  }
  if (act == NormActivation::kSigmoid) {
    for (int64_t s = 0; s < spatial; ++s) {
      for (int l = 0; l < W; ++l) {
        const int64_t e = s * stride + l;
        scalar_store(o + e, activate(scalar_load(p + e) * va[l] + vb[l], act, alpha));
      }
    }
    return;
  }
  const F zero = {};
  const F slope = zero + alpha;
  for (int64_t s = 0; s < spatial; ++s) {
    F y = load<W>(p + s * stride) * va + vb;
    if (act == NormActivation::kRelu) {
      y = y > zero ? y : zero;
    } else if (act == NormActivation::kLeakyRelu) {
      y = y >= zero ? y : y * slope;
    }
    store<W>(o + s * stride, y);
  }
}

/// One task of the parallel loop: lane group `g` (W lanes) of channel block `cb`.
template <typename S, typename D, int W>
__attribute__((always_inline)) inline void norm_task(const S* src, D* dst, int64_t spatial, int block, int64_t task,
                                                     const float* scale, const float* shift, float eps,
                                                     NormActivation act, float alpha) {
  const int64_t groups = block / W;
  const int64_t cb = task / groups, g = task % groups;
  const int64_t c0 = cb * block + g * W;
  const int64_t at = cb * spatial * block + g * W;
  norm_group<S, D, W>(src + at, dst + at, spatial, block, scale + c0, shift + c0, eps, act, alpha);
}

#define SB_NORM_ARGS                                                                                   \
  const S *src, D *dst, int64_t spatial, int block, int64_t task, const float *scale, const float *shift, \
      float eps, NormActivation act, float alpha
#define SB_NORM_CALL norm_task<S, D, W>(src, dst, spatial, block, task, scale, shift, eps, act, alpha)

template <typename S, typename D, int W>
void norm_generic(SB_NORM_ARGS) {
  SB_NORM_CALL;
}
#if defined(__x86_64__)
template <typename S, typename D, int W>
__attribute__((target("avx2,fma"))) void norm_avx2(SB_NORM_ARGS) {
  SB_NORM_CALL;
}
template <typename S, typename D, int W>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))) void norm_avx512(SB_NORM_ARGS) {
  SB_NORM_CALL;
}
#endif

template <typename S, typename D>
using NormFn = void (*)(const S*, D*, int64_t, int, int64_t, const float*, const float*, float, NormActivation,
                        float);

template <typename S, typename D, int W>
NormFn<S, D> pick(KernelIsa isa) {
#if defined(__x86_64__)
  if (isa == KernelIsa::kAvx512) return &norm_avx512<S, D, W>;
  if (isa == KernelIsa::kAvx2) return &norm_avx2<S, D, W>;
#endif
  (void)isa;
  return &norm_generic<S, D, W>;
}

template <typename S, typename D>
void run_norm(const S* src, D* dst, int64_t channels, int64_t spatial, int block, const float* scale,
              const float* shift, float eps, NormActivation act, float alpha, KernelIsa isa) {
  // Widest lane group that divides the block (16 lanes = one AVX-512 register of fp32).
  const int w = block % 16 == 0 ? 16 : block % 8 == 0 ? 8 : block % 4 == 0 ? 4 : 1;
  NormFn<S, D> fn = w == 16  ? pick<S, D, 16>(isa)
                    : w == 8 ? pick<S, D, 8>(isa)
                    : w == 4 ? pick<S, D, 4>(isa)
                             : pick<S, D, 1>(isa);
  const int64_t blocks = (channels + block - 1) / block;
  const int64_t tasks = blocks * (block / w);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) fn(src, dst, spatial, block, t, scale, shift, eps, act, alpha);
}

}  // namespace

KernelIsa best_kernel_isa(KernelIsa cap) {
#if defined(__x86_64__)
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && cap == KernelIsa::kAvx512) return KernelIsa::kAvx512;
  if (avx2 && cap != KernelIsa::kGeneric) return KernelIsa::kAvx2;
#endif
  (void)cap;
  return KernelIsa::kGeneric;
}

const char* kernel_isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kAvx512: return "avx512";
    case KernelIsa::kAvx2: return "avx2";
    case KernelIsa::kGeneric: return "generic";
  }
  return "generic";
}

void instance_norm_activation(const void* src, NormStorage src_storage, void* dst, NormStorage dst_storage,
                              int64_t channels, int64_t spatial, int block, const float* scale, const float* shift,
                              float epsilon, NormActivation activation, float alpha, KernelIsa isa) {
  const bool src_bf16 = src_storage == NormStorage::kBf16, dst_bf16 = dst_storage == NormStorage::kBf16;
  if (src_bf16 && dst_bf16) {
    run_norm(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), channels, spatial, block, scale, shift,
             epsilon, activation, alpha, isa);
  } else if (src_bf16) {
    run_norm(static_cast<const uint16_t*>(src), static_cast<float*>(dst), channels, spatial, block, scale, shift,
             epsilon, activation, alpha, isa);
  } else if (dst_bf16) {
    run_norm(static_cast<const float*>(src), static_cast<uint16_t*>(dst), channels, spatial, block, scale, shift,
             epsilon, activation, alpha, isa);
  } else {
    run_norm(static_cast<const float*>(src), static_cast<float*>(dst), channels, spatial, block, scale, shift,
             epsilon, activation, alpha, isa);
  }
}

}  // namespace inference

namespace inference {

void depth_to_space(const float* src, float* dst, int64_t c_out, int block, const int64_t in[3],
                    const int64_t kernel[3]) {
  const int64_t D = in[0], H = in[1], W = in[2];
  const int64_t kd = kernel[0], kh = kernel[1], kw = kernel[2];
  const int64_t OD = D * kd, OH = H * kh, OW = W * kw;
  const int64_t blocks = c_out / block;
  const int64_t s_in = D * H * W, s_out = OD * OH * OW;
  const int64_t cb_per_tap = blocks;  // source channel blocks per tap
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t cb = 0; cb < blocks; ++cb) {
    for (int64_t oz = 0; oz < OD; ++oz) {
      const int64_t z = oz / kd, a = oz % kd;
      for (int64_t oy = 0; oy < OH; ++oy) {
        const int64_t y = oy / kh, b = oy % kh;
        float* drow = dst + (cb * s_out + (oz * OH + oy) * OW) * block;
        for (int64_t e = 0; e < kw; ++e) {
          const int64_t t = (a * kh + b) * kw + e;
          const float* srow = src + ((t * cb_per_tap + cb) * s_in + (z * H + y) * W) * block;
          for (int64_t x = 0; x < W; ++x) {
            std::copy(srow + x * block, srow + (x + 1) * block, drow + (x * kw + e) * block);
          }
        }
      }
    }
  }
}

}  // namespace inference

namespace inference {

void depth_to_space_channels_last(const void* src, void* dst, int64_t c_out, size_t elem_bytes, const int64_t in[3],
                                  const int64_t kernel[3]) {
  const int64_t D = in[0], H = in[1], W = in[2];
  const int64_t kd = kernel[0], kh = kernel[1], kw = kernel[2];
  const int64_t OD = D * kd, OH = H * kh, OW = W * kw;
  const int64_t taps = kd * kh * kw;
  const size_t run = static_cast<size_t>(c_out) * elem_bytes;  // bytes of one voxel's channels
  const auto* s = static_cast<const char*>(src);
  auto* d = static_cast<char*>(dst);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t oz = 0; oz < OD; ++oz) {
    for (int64_t oy = 0; oy < OH; ++oy) {
      const int64_t z = oz / kd, a = oz % kd, y = oy / kh, b = oy % kh;
      char* drow = d + static_cast<size_t>((oz * OH + oy) * OW) * run;
      const char* srow = s + static_cast<size_t>((z * H + y) * W * taps) * run;
      for (int64_t x = 0; x < W; ++x) {
        for (int64_t e = 0; e < kw; ++e) {
          const int64_t t = (a * kh + b) * kw + e;
          std::memcpy(drow + static_cast<size_t>(x * kw + e) * run, srow + static_cast<size_t>(x * taps + t) * run, run);
        }
      }
    }
  }
}

}  // namespace inference
