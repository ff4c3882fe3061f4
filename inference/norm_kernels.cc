#include "inference/norm_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace inference {
namespace {

constexpr int64_t kChunk = 512;  // voxels per statistics chunk: 16 KiB of nCdhw8c, stays in L1

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

/// Portable path for any block size: statistics and normalization of one channel block.
void norm_block_generic(float* p, int64_t spatial, int block, const float* scale, const float* shift, float eps,
                        NormActivation act, float alpha) {
  for (int l = 0; l < block; ++l) {
    RunningStat st;
    for (int64_t s0 = 0; s0 < spatial; s0 += kChunk) {
      const int64_t len = std::min(kChunk, spatial - s0);
      float sum = 0.0f;
      for (int64_t s = s0; s < s0 + len; ++s) sum += p[s * block + l];
      const float cm = sum / static_cast<float>(len);
      float m2 = 0.0f;
      for (int64_t s = s0; s < s0 + len; ++s) {
        const float d = p[s * block + l] - cm;
        m2 += d * d;
      }
      st.merge(static_cast<double>(len), cm, m2);
    }
    const double inv = 1.0 / std::sqrt(st.m2 / st.n + eps);
    const float a = static_cast<float>(scale[l] * inv);
    const float b = static_cast<float>(shift[l] - st.mean * scale[l] * inv);
    for (int64_t s = 0; s < spatial; ++s) p[s * block + l] = activate(p[s * block + l] * a + b, act, alpha);
  }
}

/// AVX2 + FMA path for nCdhw8c: one 8-lane vector per voxel holds the block's 8 channels.
__attribute__((target("avx2,fma"))) void norm_block8_avx2(float* p, int64_t spatial, const float* scale,
                                                         const float* shift, float eps, NormActivation act,
                                                         float alpha) {
  RunningStat st[8];
  alignas(32) float cm_lanes[8], m2_lanes[8];
  for (int64_t s0 = 0; s0 < spatial; s0 += kChunk) {
    const int64_t len = std::min(kChunk, spatial - s0);
    const float* q = p + s0 * 8;
    __m256 s_a = _mm256_setzero_ps(), s_b = _mm256_setzero_ps(), s_c = _mm256_setzero_ps(),
           s_d = _mm256_setzero_ps();
    int64_t s = 0;
    for (; s + 4 <= len; s += 4) {
      s_a = _mm256_add_ps(s_a, _mm256_loadu_ps(q + (s + 0) * 8));
      s_b = _mm256_add_ps(s_b, _mm256_loadu_ps(q + (s + 1) * 8));
      s_c = _mm256_add_ps(s_c, _mm256_loadu_ps(q + (s + 2) * 8));
      s_d = _mm256_add_ps(s_d, _mm256_loadu_ps(q + (s + 3) * 8));
    }
    for (; s < len; ++s) s_a = _mm256_add_ps(s_a, _mm256_loadu_ps(q + s * 8));
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(s_a, s_b), _mm256_add_ps(s_c, s_d));
    const __m256 cm = _mm256_div_ps(sum, _mm256_set1_ps(static_cast<float>(len)));
    __m256 m_a = _mm256_setzero_ps(), m_b = _mm256_setzero_ps();
    s = 0;
    for (; s + 2 <= len; s += 2) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(q + (s + 0) * 8), cm);
      const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(q + (s + 1) * 8), cm);
      m_a = _mm256_fmadd_ps(d0, d0, m_a);
      m_b = _mm256_fmadd_ps(d1, d1, m_b);
    }
    for (; s < len; ++s) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(q + s * 8), cm);
      m_a = _mm256_fmadd_ps(d, d, m_a);
    }
    _mm256_store_ps(cm_lanes, cm);
    _mm256_store_ps(m2_lanes, _mm256_add_ps(m_a, m_b));
    for (int l = 0; l < 8; ++l) st[l].merge(static_cast<double>(len), cm_lanes[l], m2_lanes[l]);
  }
  alignas(32) float a_lanes[8], b_lanes[8];
  for (int l = 0; l < 8; ++l) {
    const double inv = 1.0 / std::sqrt(st[l].m2 / st[l].n + eps);
    a_lanes[l] = static_cast<float>(scale[l] * inv);
    b_lanes[l] = static_cast<float>(shift[l] - st[l].mean * scale[l] * inv);
  }
  const __m256 a = _mm256_load_ps(a_lanes), b = _mm256_load_ps(b_lanes);
  const __m256 zero = _mm256_setzero_ps(), va = _mm256_set1_ps(alpha);
  if (act == NormActivation::kSigmoid) {
    for (int64_t s = 0; s < spatial; ++s) {
      for (int l = 0; l < 8; ++l) p[s * 8 + l] = activate(p[s * 8 + l] * a_lanes[l] + b_lanes[l], act, alpha);
    }
    return;
  }
  for (int64_t s = 0; s < spatial; ++s) {
    __m256 y = _mm256_fmadd_ps(_mm256_loadu_ps(p + s * 8), a, b);
    if (act == NormActivation::kRelu) {
      y = _mm256_max_ps(y, zero);
    } else if (act == NormActivation::kLeakyRelu) {
      y = _mm256_blendv_ps(y, _mm256_mul_ps(y, va), _mm256_cmp_ps(y, zero, _CMP_LT_OQ));
    }
    _mm256_storeu_ps(p + s * 8, y);
  }
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

}  // namespace

bool instance_norm_is_vectorized(int block) { return block == 8 && cpu_has_avx2_fma(); }

void instance_norm_activation(float* data, int64_t channels, int64_t spatial, int block, const float* scale,
                              const float* shift, float epsilon, NormActivation activation, float alpha) {
  const int64_t blocks = channels / block;
  const bool avx2 = instance_norm_is_vectorized(block);
#pragma omp parallel for schedule(static)
  for (int64_t cb = 0; cb < blocks; ++cb) {
    float* p = data + cb * spatial * block;
    const float* sc = scale + cb * block;
    const float* sh = shift + cb * block;
    if (avx2) {
      norm_block8_avx2(p, spatial, sc, sh, epsilon, activation, alpha);
    } else {
      norm_block_generic(p, spatial, block, sc, sh, epsilon, activation, alpha);
    }
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
