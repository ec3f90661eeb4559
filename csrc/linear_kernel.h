// Weight-streaming matrix products for the decode / verify / draft shapes of a CPU step:
//   y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]),  x fp32 [M, K], w fp32 or bf16 [N, K] (HF layout), y fp32.
// Every weight row is read from memory once per call whatever M is: the kernel walks groups of weight
// rows, keeps them in L1, and runs every tile of x-rows (RowTile / BlockTile below) against them. Each y[m, n] is
// one fp32 dot product summed in the same order for any M, so a row's result does not depend on the
// rows batched beside it (a 1-token decode and a 1+7 verify block compute the same numbers).
// bf16 weights are widened to fp32 in registers (a 16-bit shift): fp32 math on bf16 storage, half
// the bytes to stream, no bf16 dot-product instructions needed.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SPARKSERVE_LINEAR_LANES 16
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SPARKSERVE_LINEAR_LANES 8
#else
#define SPARKSERVE_LINEAR_LANES 1
#endif

namespace sparkserve_linear {

using bf16 = c10::BFloat16;
constexpr int kLanes = SPARKSERVE_LINEAR_LANES;
// Register tiles: S::kW weight rows x S::kT x-rows of accumulators. Two shapes, chosen per call by the row
// count (pick_tile in linear.cpp); both sum every output in the same order, so the choice changes no number:
// - RowTile, up to 4 rows (decode): 4 x 4 on AVX-512 (16 of 32 zmm), 2 x 4 on AVX2 (8 of 16 ymm), so even a
//   1-row product keeps several independent FMA chains in flight;
// - BlockTile, more rows (verify blocks, drafter blocks): 3 x 8 on AVX-512 (24 zmm), so a 1+7 block is one
//   tile and each widened weight vector serves all 8 rows (4 x 4 tiles widened and re-read it per 4 rows: the
//   W=4 world's 1+7 block took 1.17x longer; 3 x 8 for 1 row made the demo's decode ~15% slower; bench/RESULTS.md,
//   issue 14 session 6). AVX2 uses its 2 x 4 for both.
struct RowTile {
  static constexpr int kW = SPARKSERVE_LINEAR_LANES == 16 ? 4 : 2;
  static constexpr int kT = 4;
};
struct BlockTile {
  static constexpr int kW = SPARKSERVE_LINEAR_LANES == 16 ? 3 : 2;
  static constexpr int kT = SPARKSERVE_LINEAR_LANES == 16 ? 8 : 4;
};
constexpr int kMaxTileRows = 8;

inline float widen(float v) { return v; }
inline float widen(bf16 v) {
  const uint32_t u = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#if SPARKSERVE_LINEAR_LANES == 16
using Vec = __m512;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline Vec vload(const bf16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(Vec v) { return _mm512_reduce_add_ps(v); }
#elif SPARKSERVE_LINEAR_LANES == 8
using Vec = __m256;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline Vec vload(const bf16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#else
using Vec = float;
inline Vec vzero() { return 0.f; }
inline Vec vload(const float* p) { return *p; }
inline Vec vload(const bf16* p) { return widen(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
inline float vsum(Vec v) { return v; }
#endif

// Hardware prefetchers lose a weight row's stream at every row end (rows are 1-8 KB), so each cache line of
// the rows kPrefetchGroups groups ahead is requested while this group computes (once per 64 bytes read):
// measured ~30% off a 1-row and an 8-row product whose weights come from DRAM (bench/RESULTS.md, issue 14).
constexpr int64_t kPrefetchGroups = 2;

template <int kWeightRows, typename W>
inline void prefetch_ahead(const W* const* rows, int64_t k, int64_t ldw) {
  const uintptr_t ahead = static_cast<uintptr_t>(kPrefetchGroups * kWeightRows * ldw) * sizeof(W);
  for (int j = 0; j < kWeightRows; ++j)  // an address past the end of w is a hint, never a fault
    __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(rows[j] + k) + ahead), 0, 3);
}

// Dots of kRows x-rows with `nw` (1..kWeightRows) weight rows over K. The vector part reads the tile's
// packed copy `xp` ([K / kLanes][kRows][kLanes], so the rows never alias in L1 whatever K's stride);
// the K tail (K % kLanes) is summed in scalar from `x` afterwards, in the same order for any row count.
template <int kWeightRows, int kRows, typename W>
inline void tile(const float* xp, const float* x, int64_t ldx, const W* w, int64_t ldw, int nw, int64_t k_len,
                 float out[][kMaxTileRows]) {
  Vec acc[kWeightRows][kRows];
  for (int j = 0; j < kWeightRows; ++j)
    for (int r = 0; r < kRows; ++r) acc[j][r] = vzero();
  const int64_t k_vec = k_len - k_len % kLanes;
  const W* wr[kWeightRows];
  for (int j = 0; j < kWeightRows; ++j) wr[j] = w + (j < nw ? j : 0) * ldw;  // missing rows re-read row 0
  for (int64_t k = 0; k < k_vec; k += kLanes, xp += kRows * kLanes) {
    Vec wv[kWeightRows];
    if ((k * static_cast<int64_t>(sizeof(W))) % 64 == 0) prefetch_ahead<kWeightRows>(wr, k, ldw);
    for (int j = 0; j < kWeightRows; ++j) wv[j] = vload(wr[j] + k);
    for (int r = 0; r < kRows; ++r) {
      const Vec xv = vload(xp + r * kLanes);
      for (int j = 0; j < kWeightRows; ++j) acc[j][r] = vfma(wv[j], xv, acc[j][r]);
    }
  }
  for (int j = 0; j < nw; ++j) {
    for (int r = 0; r < kRows; ++r) {
      float s = vsum(acc[j][r]);
      for (int64_t k = k_vec; k < k_len; ++k) s += x[r * ldx + k] * widen(wr[j][k]);
      out[j][r] = s;
    }
  }
}

// Packs x [M, K] tile by tile into [M / kTileRows][K / kLanes][rows][kLanes] (the vector part of K only);
// `packed` holds M * (K - K % kLanes) floats.
template <int kTileRows>
inline void pack_x(const float* x, int64_t m_len, int64_t k_len, float* packed) {
  const int64_t k_vec = k_len - k_len % kLanes;
  for (int64_t m = 0; m < m_len; m += kTileRows) {
    const int64_t rows = m_len - m < kTileRows ? m_len - m : kTileRows;
    float* dst = packed + m * k_vec;
    for (int64_t k = 0; k < k_vec; k += kLanes)
      for (int64_t r = 0; r < rows; ++r, dst += kLanes) std::memcpy(dst, x + (m + r) * k_len + k, kLanes * sizeof(float));
  }
}

// y rows [0, M) x weight rows [n0, n1) (x packed by pack_x<S::kT>; n0 a multiple of S::kW): the caller splits
// N across threads.
template <typename S, typename W>
void linear_rows(const float* x, const float* packed, int64_t m_len, int64_t k_len, const W* w, const float* bias, float* y,
                 int64_t n_len, int64_t n0, int64_t n1) {
  constexpr int kWeightRows = S::kW, kTileRows = S::kT;
  float out[kWeightRows][kMaxTileRows];
  for (int64_t n = n0; n < n1; n += kWeightRows) {
    const int nw = static_cast<int>(n1 - n < kWeightRows ? n1 - n : kWeightRows);
    const W* wn = w + n * k_len;
    for (int64_t m = 0; m < m_len; m += kTileRows) {
      const int rows = static_cast<int>(m_len - m < kTileRows ? m_len - m : kTileRows);
      const float* xm = x + m * k_len;
      const float* pm = packed + m * (k_len - k_len % kLanes);
      switch (rows) {
#define SPARKSERVE_TILE_CASE(R) \
  case R: tile<kWeightRows, R>(pm, xm, k_len, wn, k_len, nw, k_len, out); break;
        SPARKSERVE_TILE_CASE(1)
        SPARKSERVE_TILE_CASE(2) SPARKSERVE_TILE_CASE(3) SPARKSERVE_TILE_CASE(4)
#undef SPARKSERVE_TILE_CASE
#define SPARKSERVE_TILE_CASE(R) \
  case R: if constexpr (kTileRows >= R) tile<kWeightRows, R>(pm, xm, k_len, wn, k_len, nw, k_len, out); break;
        SPARKSERVE_TILE_CASE(5) SPARKSERVE_TILE_CASE(6) SPARKSERVE_TILE_CASE(7) SPARKSERVE_TILE_CASE(8)
#undef SPARKSERVE_TILE_CASE
        default: break;
      }
      for (int j = 0; j < nw; ++j) {
        const float b = bias ? bias[n + j] : 0.f;
        for (int r = 0; r < rows; ++r) y[(m + r) * n_len + n + j] = out[j][r] + b;
      }
    }
  }
}

// ---- bf16 activations x bf16 weights (a model run in bf16: --dtype bfloat16) ----------------------------
// On CPUs with AVX512-BF16 one vdpbf16ps does 32 multiply-adds (pairs of bf16 products into 16 fp32 lanes),
// twice an fp32 FMA's work, with no widening: a verify block's products cost about half the fp32 route's.
// Elsewhere x is widened to fp32 and the fp32 path above runs (same products, another summation order).
#if defined(__AVX512BF16__) && SPARKSERVE_LINEAR_LANES == 16
#define SPARKSERVE_LINEAR_DPBF16 1
constexpr int kPairLanes = 32;  // bf16 elements per vdpbf16ps operand
constexpr int kWeightRows = RowTile::kW;  // bf16 x bf16 products use the row tile for any row count
constexpr int kTileRows = RowTile::kT;

// Packs bf16 x [M, K] like pack_x, in chunks of kPairLanes elements.
inline void pack_x_bf16(const bf16* x, int64_t m_len, int64_t k_len, bf16* packed) {
  const int64_t k_vec = k_len - k_len % kPairLanes;
  for (int64_t m = 0; m < m_len; m += kTileRows) {
    const int64_t rows = m_len - m < kTileRows ? m_len - m : kTileRows;
    bf16* dst = packed + m * k_vec;
    for (int64_t k = 0; k < k_vec; k += kPairLanes)
      for (int64_t r = 0; r < rows; ++r, dst += kPairLanes)
        std::memcpy(dst, x + (m + r) * k_len + k, kPairLanes * sizeof(bf16));
  }
}

template <int kRows>
inline void tile_bf16(const bf16* xp, const bf16* x, int64_t ldx, const bf16* w, int64_t ldw, int nw, int64_t k_len,
                      float out[kWeightRows][kTileRows]) {
  __m512 acc[kWeightRows][kRows];
  for (int j = 0; j < kWeightRows; ++j)
    for (int r = 0; r < kRows; ++r) acc[j][r] = _mm512_setzero_ps();
  const int64_t k_vec = k_len - k_len % kPairLanes;
  const bf16* wr[kWeightRows];
  for (int j = 0; j < kWeightRows; ++j) wr[j] = w + (j < nw ? j : 0) * ldw;
  for (int64_t k = 0; k < k_vec; k += kPairLanes, xp += kRows * kPairLanes) {
    __m512bh wv[kWeightRows];
    prefetch_ahead<kWeightRows>(wr, k, ldw);  // 32 bf16: one line per step
    for (int j = 0; j < kWeightRows; ++j) wv[j] = (__m512bh)_mm512_loadu_si512(wr[j] + k);
    for (int r = 0; r < kRows; ++r) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xp + r * kPairLanes);
      for (int j = 0; j < kWeightRows; ++j) acc[j][r] = _mm512_dpbf16_ps(acc[j][r], wv[j], xv);
    }
  }
  for (int j = 0; j < nw; ++j) {
    for (int r = 0; r < kRows; ++r) {
      float s = _mm512_reduce_add_ps(acc[j][r]);
      for (int64_t k = k_vec; k < k_len; ++k) s += widen(x[r * ldx + k]) * widen(wr[j][k]);
      out[j][r] = s;
    }
  }
}

// bf16 y rows [0, M) x weight rows [n0, n1), fp32 sums (+ bias) rounded to bf16 once.
inline void linear_rows_bf16(const bf16* x, const bf16* packed, int64_t m_len, int64_t k_len, const bf16* w,
                             const float* bias, bf16* y, int64_t n_len, int64_t n0, int64_t n1) {
  float out[kWeightRows][kTileRows];
  for (int64_t n = n0; n < n1; n += kWeightRows) {
    const int nw = static_cast<int>(n1 - n < kWeightRows ? n1 - n : kWeightRows);
    const bf16* wn = w + n * k_len;
    for (int64_t m = 0; m < m_len; m += kTileRows) {
      const int rows = static_cast<int>(m_len - m < kTileRows ? m_len - m : kTileRows);
      const bf16* xm = x + m * k_len;
      const bf16* pm = packed + m * (k_len - k_len % kPairLanes);
      switch (rows) {
        case 1: tile_bf16<1>(pm, xm, k_len, wn, k_len, nw, k_len, out); break;
        case 2: tile_bf16<2>(pm, xm, k_len, wn, k_len, nw, k_len, out); break;
        case 3: tile_bf16<3>(pm, xm, k_len, wn, k_len, nw, k_len, out); break;
        default: tile_bf16<4>(pm, xm, k_len, wn, k_len, nw, k_len, out); break;
      }
      for (int j = 0; j < nw; ++j) {
        const float b = bias ? bias[n + j] : 0.f;
        for (int r = 0; r < rows; ++r) y[(m + r) * n_len + n + j] = static_cast<bf16>(out[j][r] + b);
      }
    }
  }
}
#else
#define SPARKSERVE_LINEAR_DPBF16 0
#endif

}  // namespace sparkserve_linear
