// The kernel behind csrc/attention.cpp's ops: jobs (one sequence's query rows against one kv
// head) folding key tiles into an fp32 online softmax, run serially or on torch's intra-op threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention_simd.h"

namespace sparkserve_attention {

constexpr int kKeyTile = 32;            // keys per online-softmax update
constexpr int kRowsPerJob = 64;         // query rows x group heads in one job (at least one query row)
constexpr int64_t kParallelMinMacs = 1 << 18;  // below this a step runs on the calling thread

template <typename T> inline T from_f32(float x) { return static_cast<T>(x); }

// One job: query rows row0.. of one sequence against one kv head.
struct Job {
  int64_t q_off, out_off;       // element offsets of the job's first query row at head kv_head * G
  int64_t fresh_k_off, fresh_v_off;  // element offsets of fresh row 0 at this kv head (draft only)
  const int32_t* table;         // the sequence's block table row
  int kv_head, nrows, pos0;     // pos0: position of the first query row
  int ctx_len;                  // cached keys: positions 0 .. ctx_len-1 through the table
  int fresh_n;                  // fresh keys: positions ctx_len .. ctx_len+fresh_n-1
  int64_t cost;                 // multiply-adds, for ordering and the parallel threshold
};

struct Problem {
  const void *q, *k_cache, *v_cache, *fresh_k, *fresh_v;
  void* out;
  int64_t q_row_stride, q_head_stride, out_row_stride, out_head_stride;
  int64_t fresh_k_stride, fresh_v_stride;  // between fresh rows
  int64_t cache_token_stride, cache_block_stride;
  int block_size, group, head_dim;
  float scale;
  bool causal;
  int window;  // <= 0: none
};

// Row m of a job sees positions [lo, hi].
inline void visible_range(const Problem& p, int pos, int& lo, int& hi) {
  lo = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
  hi = p.causal ? pos : (p.window > 0 ? pos + p.window - 1 : INT_MAX);
}

template <int kD>
struct Rows {
  // Per-worker scratch: the job's scaled queries, accumulators and running max / sum, one key tile.
  // s (one row's scores over a tile) has room for a whole 8-wide vector group past the tile's end:
  // the vector loops store full groups.
  std::vector<float> q, acc, mx, sum, s, kbuf, vbuf;
  std::vector<int> lo, hi;
  // rows: the most a job has, max(kRowsPerJob, group) (a job holds at least one query row's group).
  Rows(int D, int rows)
      : q(rows * D), acc(rows * D), mx(rows), sum(rows), s(kKeyTile + 8), kbuf(kKeyTile * D), vbuf(kKeyTile * D),
        lo(rows), hi(rows) {}
};

// Fold keys [pos0, pos0+n) (rows at k/v with the given row strides) into every job row.
template <int kD, typename KT>
void attend_tile(const KT* k, const KT* v, int64_t k_stride, int64_t v_stride, int n, int pos0, int M, int Drt,
                 Rows<kD>& w) {
  const int D = kD > 0 ? kD : Drt;
  const float *kp, *vp;
  int64_t ks, vs;
  if constexpr (std::is_same_v<KT, float>) {
    kp = k, vp = v, ks = k_stride, vs = v_stride;
  } else {
    for (int t = 0; t < n; ++t) {
      row_to_f32(k + t * k_stride, w.kbuf.data() + t * D, D);
      row_to_f32(v + t * v_stride, w.vbuf.data() + t * D, D);
    }
    kp = w.kbuf.data(), vp = w.vbuf.data(), ks = D, vs = D;
  }
  float* s = w.s.data();
  for (int m = 0; m < M; ++m) {
    const int t0 = std::max(w.lo[m] - pos0, 0);
    const int t1 = w.hi[m] - pos0 >= n ? n : w.hi[m] - pos0 + 1;
    if (t0 >= t1) continue;
    const float tile_max = score_row<kD>(w.q.data() + m * D, kp, ks, t0, t1, s, D);
    const float m_old = w.mx[m];
    const float m_new = std::max(m_old, tile_max);
    // rescale what earlier tiles accumulated (nothing yet when m_old = -inf: sum and acc are 0)
    const float alpha = m_new > m_old && m_old != -std::numeric_limits<float>::infinity()
                            ? exp_nonpositive(m_old - m_new) : 1.f;
    w.mx[m] = m_new;
    w.sum[m] = w.sum[m] * alpha + exp_row(s, t0, t1, m_new);
    accumulate_row<kD>(w.acc.data() + m * D, alpha, s, vp, vs, t0, t1, D);
  }
}

template <int kD, typename CT, typename QT>
void run_job(const Problem& p, const Job& job, Rows<kD>& w) {
  const int D = kD > 0 ? kD : p.head_dim;
  const int G = p.group;
  const int M = job.nrows * G;
  const QT* q = static_cast<const QT*>(p.q);
  int lo_all = INT_MAX, hi_all = INT_MIN;
  for (int i = 0; i < job.nrows; ++i) {
    int lo, hi;
    visible_range(p, job.pos0 + i, lo, hi);
    lo_all = std::min(lo_all, lo), hi_all = std::max(hi_all, hi);
    for (int g = 0; g < G; ++g) {
      const int m = i * G + g;
      const QT* src = q + job.q_off + i * p.q_row_stride + g * p.q_head_stride;
      float* dst = w.q.data() + m * D;
      row_to_f32(src, dst, D);
      for (int d = 0; d < D; ++d) dst[d] *= p.scale;
      std::fill_n(w.acc.data() + m * D, D, 0.f);
      w.mx[m] = -std::numeric_limits<float>::infinity();
      w.sum[m] = 0.f;
      w.lo[m] = lo, w.hi[m] = hi;
    }
  }
  // cached keys, one block (or kKeyTile of it) at a time, only where some row can see them
  const CT* kc = static_cast<const CT*>(p.k_cache) + job.kv_head * D;
  const CT* vc = static_cast<const CT*>(p.v_cache) + job.kv_head * D;
  const int ctx_end = std::min(job.ctx_len, hi_all == INT_MAX ? INT_MAX : hi_all + 1);
  for (int pos = std::max(lo_all, 0); pos < ctx_end;) {
    const int blk = pos / p.block_size, off = pos % p.block_size;
    const int n = std::min({p.block_size - off, ctx_end - pos, kKeyTile});
    const int64_t base = job.table[blk] * p.cache_block_stride + off * p.cache_token_stride;
    attend_tile<kD, CT>(kc + base, vc + base, p.cache_token_stride, p.cache_token_stride, n, pos, M, D, w);
    pos += n;
  }
  // fresh keys (drafting), never written to the cache
  if (job.fresh_n > 0) {
    const QT* fk = static_cast<const QT*>(p.fresh_k) + job.fresh_k_off;
    const QT* fv = static_cast<const QT*>(p.fresh_v) + job.fresh_v_off;
    for (int j = 0; j < job.fresh_n; j += kKeyTile) {
      const int n = std::min(kKeyTile, job.fresh_n - j);
      attend_tile<kD, QT>(fk + j * p.fresh_k_stride, fv + j * p.fresh_v_stride, p.fresh_k_stride, p.fresh_v_stride,
                          n, job.ctx_len + j, M, D, w);
    }
  }
  QT* out = static_cast<QT*>(p.out);
  for (int i = 0; i < job.nrows; ++i) {
    for (int g = 0; g < G; ++g) {
      const int m = i * G + g;
      const float inv = w.sum[m] > 0.f ? 1.f / w.sum[m] : 0.f;  // a row that sees no key outputs zeros
      const float* a = w.acc.data() + m * D;
      QT* dst = out + job.out_off + i * p.out_row_stride + g * p.out_head_stride;
      for (int d = 0; d < D; ++d) dst[d] = from_f32<QT>(a[d] * inv);
    }
  }
}

template <int kD, typename CT, typename QT>
void run_jobs(const Problem& p, std::vector<Job>& jobs) {
  int64_t total = 0;
  for (const Job& j : jobs) total += j.cost;
  const int threads = at::get_num_threads();
  if (threads <= 1 || jobs.size() <= 1 || total < kParallelMinMacs || at::in_parallel_region()) {
    Rows<kD> w(p.head_dim, std::max(kRowsPerJob, p.group));
    for (const Job& j : jobs) run_job<kD, CT, QT>(p, j, w);
    return;
  }
  std::sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return a.cost > b.cost; });
  std::atomic<size_t> next{0};
  const int64_t workers = std::min<int64_t>(threads, static_cast<int64_t>(jobs.size()));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    Rows<kD> w(p.head_dim, std::max(kRowsPerJob, p.group));
    for (size_t i = next.fetch_add(1); i < jobs.size(); i = next.fetch_add(1)) run_job<kD, CT, QT>(p, jobs[i], w);
  });
}

template <typename CT, typename QT>
void dispatch_dim(const Problem& p, std::vector<Job>& jobs) {
  switch (p.head_dim) {
    case 32: return run_jobs<32, CT, QT>(p, jobs);
    case 64: return run_jobs<64, CT, QT>(p, jobs);
    case 128: return run_jobs<128, CT, QT>(p, jobs);
    default: return run_jobs<0, CT, QT>(p, jobs);
  }
}

// Caches and activations of one dtype (fp32, bf16, fp16), or fp32 activations over a bf16 cache.
inline void dispatch(const Problem& p, std::vector<Job>& jobs, at::ScalarType cache_t, at::ScalarType q_t) {
  using at::kBFloat16, at::kFloat, at::kHalf;
  if (cache_t == kFloat && q_t == kFloat) return dispatch_dim<float, float>(p, jobs);
  if (cache_t == kBFloat16 && q_t == kBFloat16) return dispatch_dim<bf16, bf16>(p, jobs);
  if (cache_t == kHalf && q_t == kHalf) return dispatch_dim<f16, f16>(p, jobs);
  if (cache_t == kBFloat16 && q_t == kFloat) return dispatch_dim<bf16, float>(p, jobs);
  TORCH_CHECK(false, "paged attention: ", q_t, " activations over a ", cache_t, " cache are not supported");
}

}  // namespace sparkserve_attention
