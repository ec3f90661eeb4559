// Vectorised float helpers of the sampling kernels (sampling_row.h): exp on x <= 0, fp64 sums,
// max reductions. Plain C++ that GCC vectorises at -O3 -march=native, intrinsics where it would not.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu_math.h"

namespace sparkserve_sampling {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 (Cody-Waite reduction, Cephes' degree-6 polynomial, ~1 ulp); 0 below the
// smallest normal result and for -inf. Branch-free, so loops over it vectorise.
using sparkserve_math::exp_nonpositive;

inline void exp_inplace(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = exp_nonpositive(x[i]);
}

inline double sum_f32(const float* x, int64_t n) {  // fp64 accumulation, vectorised (any order)
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]);
  return sum;
}

// max of x[0..n) as floats (-inf when n = 0), AVX-512 / AVX2 where compiled for, NaNs ignored.
inline float max_f32(const float* x, int64_t n) {
  float m = kNegInf;
  int64_t i = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_set1_ps(kNegInf);
  for (; i + 16 <= n; i += 16) acc = _mm512_max_ps(acc, _mm512_loadu_ps(x + i));
  m = _mm512_reduce_max_ps(acc);
#elif defined(__AVX2__)
  __m256 acc = _mm256_set1_ps(kNegInf);
  for (; i + 8 <= n; i += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(x + i));
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  for (float v : lanes) m = std::max(m, v);
#endif
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

template <typename T>
inline float max_f32(const T* x, int64_t n) {  // bf16 / fp16 rows
  float m = kNegInf;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<float>(x[i]));
  return m;
}

}  // namespace sparkserve_sampling
