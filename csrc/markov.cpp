// The DSpark Markov refinement loop in one call (torch.ops.sparkserve.markov_draft): gamma sequential
// steps, each a low-rank head update, the draft distribution over the vocabulary and the draw, for a
// batch of requests. Reference: DSparkProposer._draft_torch (spec_decode/drafters/dspark.py) with the
// heads of spec_decode/heads.py; dispatch and uniforms in spec_decode/markov_native.py.
//
// Per step k (rows r of the batch; z_k fp32 [R, V]):
//   e = W1[prev]; u = e (vanilla) | e * sigmoid(gate([h_k; e])) (gated) | GRU-like update (rnn)
//   z_k = base_k + float(W2 u)
//   greedy rows (and rows past their draft count): token = first argmax z_k
//   sampled rows: q = softmax(z_k / T) (fp32), token = inverse-CDF draw with uniforms[r, k]
// The head's small products and pointwise ops are the same ATen calls, on the same shapes, in the same
// order as the reference (including the drafter's Linear flavour, layers/linear.py), so z_k is bit-identical
// to it in every dtype; greedy tokens are therefore identical. The row pass is fused here: one read of
// base and W2 u per row, no [R, V] temporaries, the softmax's exp over x <= 0 (cpu_math.h, ~1 ulp away
// from torch's), and a blocked fp64 cumulative draw, so a sampled token differs from the reference only
// when a uniform falls within float rounding of a CDF boundary. Confidence logits (optional) are one
// batched product over all steps at the end ([h_k; e_k] for every k), equal to the per-step ones up to
// the products' summation order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "sampling_math.h"

namespace sparkserve_markov {
namespace {

using sparkserve_sampling::exp_nonpositive;
using sparkserve_sampling::max_f32;

enum HeadType : int64_t { kNoHead = 0, kVanilla = 1, kGated = 2, kRnn = 3 };
constexpr int64_t kRowsPerTask = 2;  // rows below this stay on the calling thread
constexpr int64_t kDrawBlock = 64;   // the draw's cumulative sum walks blocks of this many weights

// A Linear as the drafter's module computes it (layers/linear.py), so the products are the same calls:
//   kTorchLinear  nn.Linear: linear(x, weight, bias)
//   kDualLayout   DualLayoutLinear: x @ weight_t (+ bias) for 2-d x of at most max_rows rows, else as nn.Linear
//   kStream       StreamLinear: sparkserve::linear_cpu (csrc/linear.cpp), the rule StreamLinear.forward calls;
//                 weight_t then carries the layer's fp32 GEMM copy (StreamLinear.weight_gemm) or None
enum LinearKind : int64_t { kTorchLinear = 0, kDualLayout = 1, kStream = 2 };

struct Linear {
  int64_t kind;
  at::Tensor weight;
  c10::optional<at::Tensor> weight_t, bias;
  int64_t max_rows;
  at::Tensor operator()(const at::Tensor& x) const {
    if (kind == kDualLayout && x.dim() == 2 && x.size(0) <= max_rows) {
      at::Tensor out = at::matmul(x, *weight_t);
      return bias.has_value() ? out + *bias : out;
    }
    if (kind == kStream) {  // StreamLinear: linear.cpp's linear_cpu, the one rule for which kernel runs
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("sparkserve::linear_cpu", "")
                           .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                             const c10::optional<at::Tensor>&)>();
      return op.call(x, weight, bias, weight_t);  // weight_t: its fp32 GEMM copy or None
    }
    return at::linear(x, weight, bias);
  }
};

// One head update (heads.py _update): (h [R, H], e [R, r], state) -> u [R, r]; state updated in place.
at::Tensor head_update(int64_t head, const Linear& proj, int64_t rank, const at::Tensor& h, const at::Tensor& e,
                       at::Tensor& state) {
  if (head == kGated) return e * at::sigmoid(proj(at::cat({h, e}, -1)));
  if (head == kRnn) {
    std::vector<at::Tensor> parts = proj(at::cat({state, e, h}, -1)).split(rank, -1);
    const at::Tensor gate = at::sigmoid(parts[0]);
    at::Tensor u = at::tanh(parts[2]);
    state = gate * state + (1 - gate) * at::tanh(parts[1]);
    return u;
  }
  return e;
}

// z[v] = (base[v] + float(proj[v])) / t (Divide false: no division), rounded per op as the reference's
// separate kernels round; returns max z.
template <bool Divide, typename T>
inline float logits_row(const float* base, const T* proj, float t, int64_t vocab, float* z) {
  if (proj == nullptr) {
#pragma omp simd
    for (int64_t v = 0; v < vocab; ++v) z[v] = Divide ? base[v] / t : base[v];
  } else {
#pragma omp simd
    for (int64_t v = 0; v < vocab; ++v) {
      const float sum = base[v] + static_cast<float>(proj[v]);
      z[v] = Divide ? sum / t : sum;
    }
  }
  return max_f32(z, vocab);
}

// First index of the value best in z (torch.argmax's tie rule): whole blocks below it are skipped.
inline int64_t first_index_of(const float* z, int64_t vocab, float best) {
  int64_t i = 0;
  for (; i + kDrawBlock <= vocab && !(max_f32(z + i, kDrawBlock) >= best); i += kDrawBlock) {
  }
  while (i + 1 < vocab && !(z[i] == best)) ++i;
  return i;
}

// q = e / sum(e) in place (e = exp(z - zmax), fp32 sum), then i with probability q_i for one U[0, 1):
// fp64 block sums (taken in the same pass as the normalisation), then the first index inside the block
// where the running sum exceeds u * total; the last positive q if rounding leaves none.
inline int64_t softmax_and_draw(float* z, int64_t vocab, float zmax, double u, std::vector<double>& block_sums) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t v = 0; v < vocab; ++v) {
    z[v] = exp_nonpositive(z[v] - zmax);
    sum += z[v];
  }
  const float inv = 1.0f / sum;
  const int64_t blocks = (vocab + kDrawBlock - 1) / kDrawBlock;
  block_sums.resize(blocks);
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t end = std::min(vocab, (b + 1) * kDrawBlock);
    double block = 0.0;
#pragma omp simd reduction(+ : block)
    for (int64_t j = b * kDrawBlock; j < end; ++j) {
      z[j] = z[j] * inv;
      block += static_cast<double>(z[j]);
    }
    block_sums[b] = block;
    total += block;
  }
  const double target = u * total;
  double cum = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    if (cum + block_sums[b] <= target) {
      cum += block_sums[b];
      continue;
    }
    const int64_t end = std::min(vocab, (b + 1) * kDrawBlock);
    for (int64_t j = b * kDrawBlock; j < end; ++j) {
      cum += static_cast<double>(z[j]);
      if (cum > target) return j;
    }
  }
  int64_t last = vocab - 1;
  while (last > 0 && !(z[last] > 0.0f)) --last;
  return last;
}

// The fused row pass of step k: z = base_row + float(proj_row); argmax, or q = softmax(z / T) and the draw.
template <typename T>
void draw_rows(const float* base, int64_t base_stride, const T* proj, int64_t vocab, int64_t rows,
               const bool* greedy, const float* temperature, const int64_t* num_drafts, const int64_t* probs_row,
               const double* uniforms, int64_t k, int64_t steps, float* probs, int64_t* tokens) {
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> zbuf(vocab);
    std::vector<double> block_sums;
    for (int64_t r = begin; r < end; ++r) {
      const float* b = base + r * base_stride;
      const T* m = proj == nullptr ? nullptr : proj + r * vocab;
      const bool draw = !greedy[r] && k < num_drafts[r];
      if (!draw) {
        const float best = logits_row<false>(b, m, 1.0f, vocab, zbuf.data());
        tokens[r * steps + k] = first_index_of(zbuf.data(), vocab, best);
        continue;
      }
      float* q = probs + (probs_row[r] * steps + k) * vocab;
      const float zmax = logits_row<true>(b, m, temperature[r], vocab, q);
      tokens[r * steps + k] = softmax_and_draw(q, vocab, zmax, uniforms[r * steps + k], block_sums);
    }
  });
}

// base [R, n, V] fp32; rows [R, n, H] (the block's post-norm hidden rows, model dtype); anchors [R] int64;
// head: HeadType; w1 [V, r] (Embedding), w2 (Linear r -> V), proj (gate_proj / joint_proj); conf (Linear
// H (+ r) -> 1, conf_with_markov: reads [h; e]); linear_kinds / max_rows: LinearKind and its row limit for
// w2, proj and conf; greedy [R] bool; temperature [R] fp32; num_drafts [R] int64
// (steps k >= num_drafts[r] draw nothing); probs_row [R] int64 (the row of the probs output of each sampled
// request, -1 for greedy ones); uniforms [R, n] fp64.
// Returns (tokens [R, n] int64, probs [S, n, V] fp32 (only k < num_drafts meaningful), conf logits [R, n]
// fp32 or an empty tensor when there is no confidence head).
std::tuple<at::Tensor, at::Tensor, at::Tensor> markov_draft(
    const at::Tensor& base, const at::Tensor& rows, const at::Tensor& anchors, int64_t head,
    const c10::optional<at::Tensor>& w1, const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& w2_t,
    const c10::optional<at::Tensor>& proj_w, const c10::optional<at::Tensor>& proj_wt,
    const c10::optional<at::Tensor>& proj_b, const c10::optional<at::Tensor>& conf_w,
    const c10::optional<at::Tensor>& conf_wt, const c10::optional<at::Tensor>& conf_b, bool conf_with_markov,
    at::IntArrayRef linear_kinds, at::IntArrayRef max_rows, const at::Tensor& greedy, const at::Tensor& temperature, const at::Tensor& num_drafts,
    const at::Tensor& probs_row, const at::Tensor& uniforms) {
  TORCH_CHECK(base.dim() == 3 && base.is_contiguous() && base.scalar_type() == at::kFloat,
              "base must be contiguous fp32 [R, n, V]");
  const int64_t R = base.size(0), steps = base.size(1), vocab = base.size(2);
  TORCH_CHECK(rows.dim() == 3 && rows.size(0) == R && rows.size(1) == steps, "rows must be [R, n, H]");
  TORCH_CHECK(head >= kNoHead && head <= kRnn, "unknown head type ", head);
  TORCH_CHECK(head == kNoHead || (w1.has_value() && w2.has_value()), "a Markov head needs w1 and w2");
  TORCH_CHECK(head < kGated || proj_w.has_value(), "gated / rnn heads need their projection");
  TORCH_CHECK(!conf_with_markov || head != kNoHead, "a confidence head with markov needs a Markov head");
  TORCH_CHECK(anchors.scalar_type() == at::kLong && anchors.numel() == R, "anchors must be int64 [R]");
  TORCH_CHECK(greedy.scalar_type() == at::kBool && greedy.is_contiguous() && greedy.numel() == R,
              "greedy must be contiguous bool [R]");
  TORCH_CHECK(temperature.scalar_type() == at::kFloat && temperature.is_contiguous() && temperature.numel() == R,
              "temperature must be contiguous fp32 [R]");
  for (const at::Tensor* t : {&num_drafts, &probs_row}) {
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous() && t->numel() == R,
                "num_drafts / probs_row must be contiguous int64 [R]");
  }
  TORCH_CHECK(uniforms.scalar_type() == at::kDouble && uniforms.is_contiguous() && uniforms.numel() == R * steps,
              "uniforms must be contiguous fp64 [R, n]");
  const bool* greedy_p = greedy.data_ptr<bool>();
  const int64_t* nums = num_drafts.data_ptr<int64_t>();
  const int64_t* prow = probs_row.data_ptr<int64_t>();
  int64_t sampled = 0;
  for (int64_t r = 0; r < R; ++r) {
    if (!greedy_p[r]) {
      TORCH_CHECK(prow[r] >= 0 && prow[r] < R, "probs_row of a sampled row out of range");
      sampled = std::max(sampled, prow[r] + 1);
    }
  }

  at::Tensor tokens = at::empty({R, steps}, base.options().dtype(at::kLong));
  at::Tensor probs = at::empty({sampled, steps, vocab}, base.options());
  TORCH_CHECK(linear_kinds.size() == 3 && max_rows.size() == 3, "linear_kinds / max_rows: one per w2, proj, conf");
  for (int64_t kind : linear_kinds) TORCH_CHECK(kind >= kTorchLinear && kind <= kStream, "unknown linear kind ", kind);
  const Linear w2_lin{linear_kinds[0], head == kNoHead ? at::Tensor() : *w2, w2_t, c10::nullopt, max_rows[0]};
  const Linear proj{linear_kinds[1], head >= kGated ? *proj_w : at::Tensor(), proj_wt, proj_b, max_rows[1]};
  const int64_t rank = head == kNoHead ? 0 : w1->size(1);
  at::Tensor state = head == kRnn ? at::zeros({R, rank}, rows.options()) : at::Tensor();
  at::Tensor prev = anchors;
  std::vector<at::Tensor> embs;
  for (int64_t k = 0; k < steps; ++k) {
    at::Tensor proj_out;
    if (head != kNoHead) {
      const at::Tensor e = at::embedding(*w1, prev).to(rows.scalar_type());  // [R, r]
      if (conf_with_markov) embs.push_back(e);
      proj_out = w2_lin(head_update(head, proj, rank, rows.select(1, k), e, state)).contiguous();  // [R, V]
    }
    const at::ScalarType dtype = proj_out.defined() ? proj_out.scalar_type() : at::kFloat;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "markov_draft", [&] {
      draw_rows<scalar_t>(base.data_ptr<float>() + k * vocab, steps * vocab,
                          proj_out.defined() ? proj_out.data_ptr<scalar_t>() : nullptr, vocab, R, greedy_p,
                          temperature.data_ptr<float>(), nums, prow, uniforms.data_ptr<double>(), k, steps,
                          probs.data_ptr<float>(), tokens.data_ptr<int64_t>());
    });
    prev = tokens.select(1, k);
  }
  at::Tensor conf;
  if (conf_w.has_value()) {
    at::Tensor x = conf_with_markov ? at::cat({rows, at::stack(embs, 1)}, -1) : rows;  // [R, n, H (+ r)]
    const Linear conf_lin{linear_kinds[2], *conf_w, conf_wt, conf_b, max_rows[2]};
    conf = conf_lin(x.reshape({R * steps, x.size(2)})).view({R, steps}).to(at::kFloat);
  } else {
    conf = at::empty({0}, base.options());
  }
  return {tokens, probs, conf};
}

}  // namespace
}  // namespace sparkserve_markov

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def("markov_draft(Tensor base, Tensor rows, Tensor anchors, int head, Tensor? w1, Tensor? w2, Tensor? w2_t, "
        "Tensor? proj_w, Tensor? proj_wt, Tensor? proj_b, Tensor? conf_w, Tensor? conf_wt, Tensor? conf_b, "
        "bool conf_with_markov, int[] linear_kinds, int[] max_rows, Tensor greedy, Tensor temperature, Tensor num_drafts, "
        "Tensor probs_row, Tensor uniforms) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sparkserve, CPU, m) {
  m.impl("markov_draft", &sparkserve_markov::markov_draft);
}
