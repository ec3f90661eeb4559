// Inner loops of csrc/attention.cpp over one key tile and one query row: scores, the softmax
// exponentials, the value accumulation, and the conversion of bf16 / fp16 rows to fp32. AVX2+FMA
// versions (8 floats per register, head_dim a multiple of 8) when the build targets such a CPU
// (-march=native), portable scalar loops otherwise; both compute the same fp32 math.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cpu_math.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define SPARKSERVE_ATTENTION_AVX2 1
#else
#define SPARKSERVE_ATTENTION_AVX2 0
#endif

namespace sparkserve_attention {

using bf16 = c10::BFloat16;
using f16 = c10::Half;

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) {
  uint32_t u = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float to_f32(f16 x) { return static_cast<float>(x); }

using sparkserve_math::exp_nonpositive;  // csrc/cpu_math.h

template <int kD>
constexpr bool kVector = SPARKSERVE_ATTENTION_AVX2 && kD > 0 && kD % 8 == 0;

#if SPARKSERVE_ATTENTION_AVX2
inline __m256 exp8_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// The 8 horizontal sums of a[0..7], as one register.
inline __m256 hsum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Lanes j with t0 <= base + j < t1.
inline __m256 lane_mask(int base, int t0, int t1) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i ge = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(t0 - 1));
  const __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(t1), idx);
  return _mm256_castsi256_ps(_mm256_and_si256(ge, lt));
}
#endif

#if SPARKSERVE_ATTENTION_AVX2
// a[j] = q . k_j, as 8 partial-sum registers, for the first nk (compile-time when kFull) keys.
template <int kD, bool kFull>
__attribute__((always_inline)) inline __m256 dot8(const float* q, const float* k, int64_t ks, int nk) {
  __m256 a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_ps();
  for (int c = 0; c < kD; c += 8) {
    const __m256 qc = _mm256_loadu_ps(q + c);
    for (int j = 0; j < 8; ++j)
      if (kFull || j < nk) a[j] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k + j * ks + c), a[j]);
  }
  return hsum8(a);
}
#endif

// s[t] = q . k_t for t in [t0, t1) (k_t at k + t * ks); returns their maximum.
template <int kD>
inline float score_row(const float* q, const float* k, int64_t ks, int t0, int t1, float* s, int Drt) {
  const int D = kD > 0 ? kD : Drt;
#if SPARKSERVE_ATTENTION_AVX2
  if constexpr (kVector<kD>) {
    const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 best = neg_inf;
    int g = t0;
    for (; g + 8 <= t1; g += 8) {
      const __m256 sums = dot8<kD, true>(q, k + g * ks, ks, 8);
      _mm256_storeu_ps(s + g, sums);
      best = _mm256_max_ps(best, sums);
    }
    if (g < t1) {  // s has room for a whole group past t1 (kKeyTile + 8)
      const __m256 sums = dot8<kD, false>(q, k + g * ks, ks, t1 - g);
      _mm256_storeu_ps(s + g, sums);
      best = _mm256_max_ps(best, _mm256_blendv_ps(neg_inf, sums, lane_mask(g, g, t1)));
    }
    const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(best), _mm256_extractf128_ps(best, 1));
    const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
  }
#endif
  float best = -std::numeric_limits<float>::infinity();
  for (int t = t0; t < t1; ++t) {
    const float* kr = k + t * ks;
    float dot = 0.f;
    for (int d = 0; d < D; ++d) dot += q[d] * kr[d];
    s[t] = dot;
    best = std::max(best, dot);
  }
  return best;
}

// s[t] = exp(s[t] - m) for t in [t0, t1); returns their sum.
inline float exp_row(float* s, int t0, int t1, float m) {
#if SPARKSERVE_ATTENTION_AVX2
  __m256 total = _mm256_setzero_ps();
  for (int g = t0; g < t1; g += 8) {
    const __m256 e = exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + g), _mm256_set1_ps(m)));
    const __m256 p = _mm256_and_ps(e, lane_mask(g, g, t1));
    _mm256_storeu_ps(s + g, p);
    total = _mm256_add_ps(total, p);
  }
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
#else
  float total = 0.f;
  for (int t = t0; t < t1; ++t) total += s[t] = exp_nonpositive(s[t] - m);
  return total;
#endif
}

// acc = acc * alpha + sum over t in [t0, t1) of p[t] * v_t (v_t at v + t * vs).
template <int kD>
inline void accumulate_row(float* acc, float alpha, const float* p, const float* v, int64_t vs, int t0, int t1,
                           int Drt) {
  static_assert(!kVector<kD> || kD < 32 || kD % 32 == 0, "the accumulator goes 32 floats at a time");
  const int D = kD > 0 ? kD : Drt;
#if SPARKSERVE_ATTENTION_AVX2
  if constexpr (kVector<kD>) {
    for (int c0 = 0; c0 < kD; c0 += 32) {  // 4 registers of the accumulator at a time, two sets (even/odd t)
      constexpr int kChunks = kD >= 32 ? 4 : kD / 8;
      __m256 a[kChunks], b[kChunks];
      const __m256 al = _mm256_set1_ps(alpha);
      for (int c = 0; c < kChunks; ++c) a[c] = _mm256_mul_ps(_mm256_loadu_ps(acc + c0 + 8 * c), al);
      for (int c = 0; c < kChunks; ++c) b[c] = _mm256_setzero_ps();
      int t = t0;
      for (; t + 2 <= t1; t += 2) {
        const __m256 p0 = _mm256_set1_ps(p[t]), p1 = _mm256_set1_ps(p[t + 1]);
        const float* v0 = v + t * vs + c0;
        const float* v1 = v0 + vs;
        for (int c = 0; c < kChunks; ++c) a[c] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8 * c), a[c]);
        for (int c = 0; c < kChunks; ++c) b[c] = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + 8 * c), b[c]);
      }
      if (t < t1) {
        const __m256 p0 = _mm256_set1_ps(p[t]);
        const float* v0 = v + t * vs + c0;
        for (int c = 0; c < kChunks; ++c) a[c] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8 * c), a[c]);
      }
      for (int c = 0; c < kChunks; ++c) _mm256_storeu_ps(acc + c0 + 8 * c, _mm256_add_ps(a[c], b[c]));
    }
    return;
  }
#endif
  for (int d = 0; d < D; ++d) acc[d] *= alpha;
  for (int t = t0; t < t1; ++t) {
    const float pt = p[t];
    const float* vr = v + t * vs;
    for (int d = 0; d < D; ++d) acc[d] += pt * vr[d];
  }
}

// dst[0..D) = src[0..D) as fp32.
template <typename T>
inline void row_to_f32(const T* src, float* dst, int D) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, D * sizeof(float));
    return;
  }
  int d = 0;
#if SPARKSERVE_ATTENTION_AVX2
  for (; d + 8 <= D; d += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d));
    if constexpr (std::is_same_v<T, bf16>) {
      _mm256_storeu_ps(dst + d, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    } else {
      _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(h));
    }
  }
#endif
  for (; d < D; ++d) dst[d] = to_f32(src[d]);
}

}  // namespace sparkserve_attention
