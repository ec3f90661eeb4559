// Paged attention on the CPU, reading K/V in place through the block table.
//
// Ops (torch.ops.sparkserve.*):
//   paged_attention(q [T,Hq,D], k, v [T,Hkv,D], k_cache, v_cache [NB,BS,Hkv,D], slot_mapping [T] i64,
//                   block_tables [B,W] i32, seq_lens [B] i32, query_start_loc [B+1] i32, scale) -> [T,Hq,D]
//     writes k/v at slot_mapping, then sequence b's rows query_start_loc[b]..[b+1] (positions
//     seq_lens[b]-qlen..seq_lens[b]-1) attend causally to that sequence's cached positions.
//   paged_attention_draft(q [R,Q,Hq,D], k, v [R,F,Hkv,D], k_cache, v_cache, block_tables [R,W] i32,
//                         context_lens [R] i32, scale, causal, window) -> [R,Q,Hq,D]
//     request r's cached context (positions < context_lens[r], not modified) plus its F fresh rows
//     (positions context_lens[r]+j, never written); query i is fresh row F-Q+i. Visibility is
//     attention/base.py's DraftMask: causal over fresh keys, window (<= 0: none) over all keys.
//   paged_attention_write_kv(k, v, k_cache, v_cache, slot_mapping) stores rows (negative slots skipped).
//
// Both attention ops share one kernel: a job is (sequence, kv head, tile of query rows); its rows
// (query rows x the kv head's group of q heads) sweep the keys tile by tile (a key tile lies inside
// one cache block, or in the fresh rows), with an fp32 online softmax. Every row sees the keys
// whose positions lie in an interval [lo, hi] (causal: hi = own position; window: lo), so masking
// is a per-row index range within a tile. Caches and activations are fp32, bf16 or fp16 (one
// dtype), or fp32 activations over a bf16 cache; all arithmetic is fp32. Jobs run on torch's
// intra-op threads (longest first, dynamic) when the step has enough work to pay for waking them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention_kernel.h"

namespace sparkserve_attention {

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, name,
              " must be float32, bfloat16 or float16, got ", st);
}

void check_int(const at::Tensor& t, const char* name, at::ScalarType type, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type && t.dim() == dims && t.is_contiguous(), name,
              " must be a contiguous CPU ", type, " tensor with ", dims, " dims");
}

// The cache pair and the head layout shared by both ops; returns the problem with the cache filled in.
Problem cache_problem(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t q_head_dim,
                      double scale) {
  check_float(q, "q");
  check_float(k_cache, "k_cache");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  v_cache.sizes() == k_cache.sizes() && v_cache.scalar_type() == k_cache.scalar_type(),
              "k_cache and v_cache must be contiguous [num_blocks, block_size, Hkv, D] tensors of one shape and dtype");
  const int64_t hq = q.size(q_head_dim), hkv = k_cache.size(2), D = k_cache.size(3);
  TORCH_CHECK(q.size(q_head_dim + 1) == D && q.stride(q_head_dim + 1) == 1,
              "q's last dim must be the cache's head_dim ", D, " and contiguous");
  TORCH_CHECK(hkv > 0 && hq % hkv == 0, "q heads (", hq, ") must be a multiple of kv heads (", hkv, ")");
  Problem p{};
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.block_size = static_cast<int>(k_cache.size(1));
  p.cache_token_stride = hkv * D;
  p.cache_block_stride = k_cache.size(1) * hkv * D;
  p.group = static_cast<int>(hq / hkv);
  p.head_dim = static_cast<int>(D);
  p.scale = static_cast<float>(scale);
  return p;
}

// Each sequence's table must cover its keys and name real blocks (checked before any thread starts).
void check_tables(const at::Tensor& tables, const std::vector<int>& key_lens, int block_size, int64_t num_blocks) {
  const int32_t* t = tables.data_ptr<int32_t>();
  const int64_t width = tables.size(1);
  for (size_t b = 0; b < key_lens.size(); ++b) {
    const int64_t need = (key_lens[b] + block_size - 1) / block_size;
    TORCH_CHECK(need <= width, "sequence ", b, ": ", key_lens[b], " cached positions need ", need,
                " blocks, its table has ", width);
    for (int64_t i = 0; i < need; ++i)
      TORCH_CHECK(t[b * width + i] >= 0 && t[b * width + i] < num_blocks, "sequence ", b, ": block id ",
                  t[b * width + i], " out of range [0, ", num_blocks, ")");
  }
}

template <typename ST, typename DT>
void write_rows(const at::Tensor& src, at::Tensor& cache, const int64_t* slots, int64_t n) {
  const int64_t hkv = cache.size(2), D = cache.size(3), num_slots = cache.size(0) * cache.size(1);
  const ST* s = static_cast<const ST*>(src.data_ptr());
  DT* c = static_cast<DT*>(cache.data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    if (slots[i] < 0) continue;
    TORCH_CHECK(slots[i] < num_slots, "slot ", slots[i], " out of range [0, ", num_slots, ")");
    for (int64_t h = 0; h < hkv; ++h) {
      const ST* row = s + i * src.stride(0) + h * src.stride(1);
      DT* dst = c + (slots[i] * hkv + h) * D;
      if constexpr (std::is_same_v<ST, DT>) {
        std::memcpy(dst, row, D * sizeof(DT));
      } else {
        for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<DT>(to_f32(row[d]));
      }
    }
  }
}

void write_one(const at::Tensor& src, at::Tensor& cache, const int64_t* slots, int64_t n) {
  check_float(src, "k/v");
  TORCH_CHECK(src.dim() == 3 && src.size(0) == n && src.size(1) == cache.size(2) && src.size(2) == cache.size(3) &&
                  src.stride(2) == 1,
              "k/v must be [N, Hkv, D] with contiguous rows, matching the cache");
  const auto st = src.scalar_type(), ct = cache.scalar_type();
  if (st == ct && st == at::kFloat) return write_rows<float, float>(src, cache, slots, n);
  if (st == ct && st == at::kBFloat16) return write_rows<bf16, bf16>(src, cache, slots, n);
  if (st == ct && st == at::kHalf) return write_rows<f16, f16>(src, cache, slots, n);
  if (st == at::kFloat && ct == at::kBFloat16) return write_rows<float, bf16>(src, cache, slots, n);
  TORCH_CHECK(false, "paged attention: writing ", st, " rows into a ", ct, " cache is not supported");
}

void write_kv(const at::Tensor& k, const at::Tensor& v, at::Tensor k_cache, at::Tensor v_cache,
              const at::Tensor& slot_mapping) {
  check_int(slot_mapping, "slot_mapping", at::kLong, 1);
  check_float(k_cache, "k_cache");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  v_cache.sizes() == k_cache.sizes(),
              "caches must be contiguous [num_blocks, block_size, Hkv, D] of one shape");
  const int64_t n = slot_mapping.size(0);
  write_one(k, k_cache, slot_mapping.data_ptr<int64_t>(), n);
  write_one(v, v_cache, slot_mapping.data_ptr<int64_t>(), n);
}

at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor k_cache,
                           at::Tensor v_cache, const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                           const at::Tensor& seq_lens, const at::Tensor& query_start_loc, double scale) {
  TORCH_CHECK(q.dim() == 3, "q must be [T, Hq, D]");
  write_kv(k, v, k_cache, v_cache, slot_mapping);
  Problem p = cache_problem(q, k_cache, v_cache, 1, scale);
  check_int(block_tables, "block_tables", at::kInt, 2);
  check_int(seq_lens, "seq_lens", at::kInt, 1);
  check_int(query_start_loc, "query_start_loc", at::kInt, 1);
  const int64_t B = seq_lens.size(0);
  TORCH_CHECK(query_start_loc.size(0) == B + 1 && block_tables.size(0) == B, "B = ", B,
              " sequences need query_start_loc [B+1] and block_tables [B, W]");
  const int32_t* qsl = query_start_loc.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  TORCH_CHECK(qsl[0] == 0 && qsl[B] == q.size(0), "query_start_loc must run from 0 to T = ", q.size(0));
  std::vector<int> key_lens(lens, lens + B);
  check_tables(block_tables, key_lens, p.block_size, k_cache.size(0));

  at::Tensor out = at::empty_like(q, at::MemoryFormat::Contiguous);
  p.q = q.data_ptr(), p.out = out.data_ptr();
  p.q_row_stride = q.stride(0), p.q_head_stride = q.stride(1);
  p.out_row_stride = out.stride(0), p.out_head_stride = out.stride(1);
  p.causal = true, p.window = 0;
  const int G = p.group, D = p.head_dim, hkv = static_cast<int>(k_cache.size(2));
  const int rows_per_job = std::max(1, kRowsPerJob / G);
  std::vector<Job> jobs;
  jobs.reserve(B * hkv);
  for (int64_t b = 0; b < B; ++b) {
    const int qlen = qsl[b + 1] - qsl[b];
    TORCH_CHECK(qlen >= 0 && qlen <= lens[b], "sequence ", b, ": ", qlen, " new rows but seq_len ", lens[b]);
    for (int r0 = 0; r0 < qlen; r0 += rows_per_job) {
      const int nrows = std::min(rows_per_job, qlen - r0);
      const int pos0 = lens[b] - qlen + r0;
      for (int h = 0; h < hkv; ++h) {
        Job j{};
        j.q_off = (qsl[b] + r0) * q.stride(0) + h * G * q.stride(1);
        j.out_off = (qsl[b] + r0) * out.stride(0) + h * G * out.stride(1);
        j.table = block_tables.data_ptr<int32_t>() + b * block_tables.size(1);
        j.kv_head = h, j.nrows = nrows, j.pos0 = pos0, j.ctx_len = lens[b], j.fresh_n = 0;
        j.cost = static_cast<int64_t>(nrows) * G * (pos0 + nrows) * D;
        jobs.push_back(j);
      }
    }
  }
  dispatch(p, jobs, k_cache.scalar_type(), q.scalar_type());
  return out;
}

at::Tensor paged_attention_draft(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& k_cache, const at::Tensor& v_cache,
                                 const at::Tensor& block_tables, const at::Tensor& context_lens, double scale,
                                 bool causal, int64_t window) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q must be [R, Q, Hq, D], k/v [R, F, Hkv, D]");
  Problem p = cache_problem(q, k_cache, v_cache, 2, scale);
  check_int(block_tables, "block_tables", at::kInt, 2);
  check_int(context_lens, "context_lens", at::kInt, 1);
  const int64_t R = q.size(0), Q = q.size(1), F = k.size(1), hkv = k_cache.size(2), D = p.head_dim;
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "fresh k/v must have q's dtype");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == R && k.size(2) == hkv && k.size(3) == D && k.stride(3) == 1 &&
                  v.stride(3) == 1,
              "fresh k/v must be [R, F, Hkv, D] with contiguous rows");
  TORCH_CHECK(Q <= F, "queries (", Q, ") must be the last of the fresh rows (", F, ")");
  TORCH_CHECK(context_lens.size(0) == R && block_tables.size(0) == R, "R = ", R,
              " requests need context_lens [R] and block_tables [R, W]");
  const int32_t* lens = context_lens.data_ptr<int32_t>();
  std::vector<int> key_lens(lens, lens + R);
  check_tables(block_tables, key_lens, p.block_size, k_cache.size(0));

  at::Tensor out = at::empty(q.sizes(), q.options());
  p.q = q.data_ptr(), p.out = out.data_ptr();
  p.q_row_stride = q.stride(1), p.q_head_stride = q.stride(2);
  p.out_row_stride = out.stride(1), p.out_head_stride = out.stride(2);
  p.fresh_k = k.data_ptr(), p.fresh_v = v.data_ptr();
  p.fresh_k_stride = k.stride(1), p.fresh_v_stride = v.stride(1);
  p.causal = causal, p.window = static_cast<int>(window);
  const int G = p.group;
  const int rows_per_job = std::max(1, kRowsPerJob / G);
  std::vector<Job> jobs;
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t r0 = 0; r0 < Q; r0 += rows_per_job) {
      const int nrows = static_cast<int>(std::min<int64_t>(rows_per_job, Q - r0));
      for (int64_t h = 0; h < hkv; ++h) {
        Job j{};
        j.q_off = r * q.stride(0) + r0 * q.stride(1) + h * G * q.stride(2);
        j.out_off = r * out.stride(0) + r0 * out.stride(1) + h * G * out.stride(2);
        j.fresh_k_off = r * k.stride(0) + h * k.stride(2);
        j.fresh_v_off = r * v.stride(0) + h * v.stride(2);
        j.table = block_tables.data_ptr<int32_t>() + r * block_tables.size(1);
        j.kv_head = static_cast<int>(h), j.nrows = nrows;
        j.ctx_len = lens[r], j.fresh_n = static_cast<int>(F);
        j.pos0 = lens[r] + static_cast<int>(F - Q + r0);
        j.cost = static_cast<int64_t>(nrows) * G * (lens[r] + F) * D;
        jobs.push_back(j);
      }
    }
  }
  dispatch(p, jobs, k_cache.scalar_type(), q.scalar_type());
  return out;
}

}  // namespace sparkserve_attention

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def(
      "paged_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping, "
      "Tensor block_tables, Tensor seq_lens, Tensor query_start_loc, float scale) -> Tensor");
  m.def(
      "paged_attention_draft(Tensor q, Tensor k, Tensor v, Tensor k_cache, Tensor v_cache, Tensor block_tables, "
      "Tensor context_lens, float scale, bool causal, int window) -> Tensor");
  m.def(
      "paged_attention_write_kv(Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) "
      "-> ()");
}

TORCH_LIBRARY_IMPL(sparkserve, CPU, m) {
  m.impl("paged_attention", &sparkserve_attention::paged_attention);
  m.impl("paged_attention_draft", &sparkserve_attention::paged_attention_draft);
  m.impl("paged_attention_write_kv", &sparkserve_attention::write_kv);
}
