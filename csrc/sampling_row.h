// The processed distribution of one logits row (sparkserve/sample/processing.py, natively) and the
// inverse-CDF draw (sparkserve/sample/sampler.py: draw_indices). Shared by sampling.cpp and
// sampling_verify.cpp. Rules, per row: greedy (T < GREEDY_EPS) is one-hot at the first argmax; otherwise
// z = logit / T (fp32), top-k keeps z >= the k-th largest z (ties kept), top-p keeps every z >= the
// smallest value v whose strictly-larger mass M(v) is below (top_p - TOP_P_TOL) of the top-k
// survivors' mass (the torch reference's sorted cumsum rule, order-free), min-p keeps
// z - zmax >= log(min_p); survivors get exp((z - zmax) - log(sum exp(z - zmax))).
// Token choices agree with the torch reference except when a uniform falls within float rounding
// of a CDF boundary (exp and the sums round differently, ~1e-6 relative): measured 1 in 5000 draws
// over full 8192-token rows, none in 15000 with a top-k / top-p / min-p cut.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "sampling_math.h"

namespace sparkserve_sampling {

constexpr float kGreedyEps = 1e-5f;  // processing.GREEDY_EPS
constexpr float kTopPTol = 1e-6f;    // processing.TOP_P_TOL

struct RowParams {
  float temperature;
  int64_t top_k;  // <= 0 or >= V: off
  float top_p;    // >= 1: off
  float min_p;    // <= 0: off
  bool greedy() const { return temperature < kGreedyEps; }
};

// Per-thread buffers, each [V]; after process_row the kept tokens are idx[0..n) (ascending) with
// probabilities prob[0..n).
struct Scratch {
  std::vector<float> z, cz, ce, prob, heap;
  std::vector<int32_t> idx;
  std::vector<double> hist;
  int64_t n = 0;
  void reserve(int64_t vocab) {
    if (static_cast<int64_t>(z.size()) < vocab) {
      z.resize(vocab); cz.resize(vocab); ce.resize(vocab); prob.resize(vocab); idx.resize(vocab);
    }
  }
};

template <typename T>
inline int64_t argmax_row(const T* row, int64_t vocab) {  // first index of the max, like torch.argmax
  const float best_v = max_f32(row, vocab);
  int64_t best = 0;
  while (best + 1 < vocab && !(static_cast<float>(row[best]) == best_v)) ++best;
  return best;
}

// f(i) for every i with z[i] >= thresh, ascending; 32-wide blocks below thresh are skipped.
template <typename F>
inline void for_each_at_least(const float* z, int64_t vocab, float thresh, F&& f) {
  constexpr int64_t kBlock = 32;
  int64_t i = 0;
  for (; i + kBlock <= vocab; i += kBlock) {
    if (!(max_f32(z + i, kBlock) >= thresh)) continue;
    for (int64_t j = i; j < i + kBlock; ++j) {
      if (z[j] >= thresh) f(j);
    }
  }
  for (; i < vocab; ++i) {
    if (z[i] >= thresh) f(i);
  }
}

// The k-th largest of z[0..V) (1 <= k < V): a min-heap of the k largest, skipping 32-wide blocks
// that cannot enter it; nth_element for large k.
inline float kth_largest(const float* z, int64_t vocab, int64_t k, std::vector<float>& buf) {
  if (k > 256) {
    buf.assign(z, z + vocab);
    std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.begin() + vocab, std::greater<float>());
    return buf[k - 1];
  }
  buf.assign(z, z + k);
  std::make_heap(buf.begin(), buf.end(), std::greater<float>());
  auto offer = [&](float v) {
    if (v > buf.front()) {
      std::pop_heap(buf.begin(), buf.end(), std::greater<float>());
      buf.back() = v;
      std::push_heap(buf.begin(), buf.end(), std::greater<float>());
    }
  };
  constexpr int64_t kBlock = 32;
  int64_t i = k;
  for (; i < vocab && i % kBlock != 0; ++i) offer(z[i]);
  for (; i + kBlock <= vocab; i += kBlock) {
    if (max_f32(z + i, kBlock) > buf.front()) {
      for (int64_t j = 0; j < kBlock; ++j) offer(z[i + j]);
    }
  }
  for (; i < vocab; ++i) offer(z[i]);
  return buf.front();
}

// Smallest value v among cz[0..m) with sum(ce[j] : cz[j] > v) < target (the top-p cut); zmax if
// none (target <= 0). Weighted quickselect: three-way partitions of (cz, ce) in place, O(m) expected.
inline float top_p_cut(float* cz, float* ce, int64_t m, double target, float zmax) {
  float best = zmax;
  double above = 0.0;  // mass of the values known to exceed everything in [lo, hi)
  int64_t lo = 0, hi = m;
  while (lo < hi) {
    const float pivot = cz[lo + (hi - lo) / 2];
    int64_t gt = lo, i = lo, lt = hi;  // [lo, gt): > pivot, [gt, i): == pivot, [lt, hi): < pivot
    double mass_gt = 0.0, mass_eq = 0.0;
    while (i < lt) {
      if (cz[i] > pivot) {
        mass_gt += ce[i];
        std::swap(cz[i], cz[gt]); std::swap(ce[i], ce[gt]); ++gt; ++i;
      } else if (cz[i] < pivot) {
        --lt;
        std::swap(cz[i], cz[lt]); std::swap(ce[i], ce[lt]);
      } else {
        mass_eq += ce[i]; ++i;
      }
    }
    if (above + mass_gt < target) {  // the pivot qualifies: the cut is at or below it
      best = pivot;
      above += mass_gt + mass_eq;
      lo = lt;
    } else {  // the cut is above the pivot
      hi = gt;
    }
  }
  return best;
}

// top_p_cut over many candidates: bucket the masses by the top bits of d = zmax - z (a non-negative
// float, so its bit pattern is monotone in d and the buckets are ordered z-intervals), find the
// bucket holding the cut from the mass above each bucket, and select only inside it.
inline float top_p_cut_bucketed(float* cz, float* ce, int64_t m, double target, float zmax,
                                std::vector<double>& hist) {
  constexpr int kShift = 19;  // 8 exponent + 4 mantissa bits: 16 buckets per octave of d
  constexpr int64_t kBuckets = (0x7F800000 >> kShift) + 1;  // up to d = +inf (z = -inf)
  auto bucket = [&](float z) {
    const float d = zmax - z;
    uint32_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    return std::min<int64_t>(bits >> kShift, kBuckets - 1);
  };
  hist.assign(kBuckets, 0.0);
  for (int64_t j = 0; j < m; ++j) hist[bucket(cz[j])] += ce[j];
  double above = 0.0;  // mass of the buckets above (larger z than) b
  int64_t b = 0;
  while (b < kBuckets - 1 && above + hist[b] < target) above += hist[b++];  // the cut lies in bucket b
  int64_t n = 0;
  for (int64_t j = 0; j < m; ++j) {
    if (bucket(cz[j]) == b) { cz[n] = cz[j]; ce[n] = ce[j]; ++n; }
  }
  return top_p_cut(cz, ce, n, target - above, zmax);
}

// The processed distribution of one row into s.idx / s.prob / s.n (module comment).
template <typename T>
inline void process_row(const T* logits, int64_t vocab, const RowParams& prm, Scratch& s) {
  s.reserve(vocab);
  if (prm.greedy()) {
    s.idx[0] = static_cast<int32_t>(argmax_row(logits, vocab));
    s.prob[0] = 1.0f;
    s.n = 1;
    return;
  }
  float* z = s.z.data();
  const float temp = prm.temperature;
#pragma omp simd
  for (int64_t i = 0; i < vocab; ++i) z[i] = static_cast<float>(logits[i]) / temp;
  const float zmax = max_f32(z, vocab);
  float thresh = kNegInf;
  if (prm.top_k > 0 && prm.top_k < vocab) thresh = kth_largest(z, vocab, prm.top_k, s.heap);
  if (prm.top_p < 1.0f) {
    float* cz = s.cz.data();
    float* ce = s.ce.data();
    int64_t m = 0;
    for_each_at_least(z, vocab, thresh, [&](int64_t i) { cz[m] = z[i]; ce[m] = z[i] - zmax; ++m; });
    exp_inplace(ce, m);
    const double total = sum_f32(ce, m);
    const float bound = prm.top_p - kTopPTol;
    const double target = static_cast<double>(bound) * total;
    const float cut = m > 512 ? top_p_cut_bucketed(cz, ce, m, target, zmax, s.hist)
                              : top_p_cut(cz, ce, m, target, zmax);
    thresh = std::max(thresh, cut);
  }
  const float log_min_p = prm.min_p > 0.0f ? std::log(prm.min_p) : kNegInf;
  float* arg = s.prob.data();
  int32_t* idx = s.idx.data();
  int64_t n = 0;
  for_each_at_least(z, vocab, thresh, [&](int64_t i) {
    const float shifted = z[i] - zmax;
    if (shifted >= log_min_p) { idx[n] = static_cast<int32_t>(i); arg[n] = shifted; ++n; }
  });
  float* e = s.ce.data();
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) e[j] = exp_nonpositive(arg[j]);
  const float log_sum = std::log(static_cast<float>(sum_f32(e, n)));
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) arg[j] = exp_nonpositive(arg[j] - log_sum);
  s.n = n;
}

// Inverse-CDF draw over weights w[0..n) (>= 0, not all 0) with one U[0, 1) double: the first j whose
// fp64 running sum exceeds u * total, else the last positive weight (draw_indices' guard).
template <typename W>
inline int64_t draw_position(const W* w, int64_t n, double u) {
  double total = 0.0;
  for (int64_t j = 0; j < n; ++j) total += static_cast<double>(w[j]);
  const double target = u * total;
  double cum = 0.0;
  int64_t last_positive = 0;
  for (int64_t j = 0; j < n; ++j) {
    cum += static_cast<double>(w[j]);
    if (w[j] > W(0)) last_positive = j;
    if (cum > target) return j;
  }
  return last_positive;
}

// Position of token in the ascending idx[0..n), or -1.
inline int64_t find_kept(const int32_t* idx, int64_t n, int64_t token) {
  const int32_t* it = std::lower_bound(idx, idx + n, static_cast<int32_t>(token));
  return (it != idx + n && *it == token) ? (it - idx) : -1;
}

inline RowParams row_params(const at::Tensor& temperature, const at::Tensor& top_k, const at::Tensor& top_p,
                            const at::Tensor& min_p, int64_t i) {
  return RowParams{temperature.data_ptr<float>()[i], top_k.data_ptr<int64_t>()[i], top_p.data_ptr<float>()[i],
                   min_p.data_ptr<float>()[i]};
}

inline void check_params(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                         const at::Tensor& top_p, const at::Tensor& min_p, int64_t rows) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "logits must be a contiguous [N, V] tensor");
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16 ||
              logits.scalar_type() == at::kHalf, "logits must be fp32, bf16 or fp16");
  for (const at::Tensor* t : {&temperature, &top_p, &min_p}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == rows,
                "temperature / top_p / min_p must be contiguous fp32 [", rows, "]");
  }
  TORCH_CHECK(top_k.scalar_type() == at::kLong && top_k.is_contiguous() && top_k.numel() == rows,
              "top_k must be contiguous int64 [", rows, "]");
}

inline void check_uniforms(const at::Tensor& uniforms, int64_t rows) {
  TORCH_CHECK(uniforms.scalar_type() == at::kDouble && uniforms.is_contiguous() && uniforms.numel() == rows,
              "uniforms must be contiguous fp64 [", rows, "]");
}

}  // namespace sparkserve_sampling
