// Native block verification (torch.ops.sparkserve.verify_block): lossless speculative sampling over a
// ragged batch of chain drafts. Reference: sparkserve/spec_decode/verify.py (its docstring states the
// rules); the uniforms come from the requests' generators in Python in the reference's order, so
// seeded streams are unchanged. Only the rows a request needs are processed: rows up to its first
// rejection, and the emitting row.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "sampling_row.h"

namespace sparkserve_sampling {
namespace {

// One request's draft distribution q [l, V] (fp32/bf16/fp16), or none (one-hot q at the drafts).
struct DraftProbs {
  const void* data = nullptr;
  at::ScalarType dtype = at::kFloat;
  float at(int64_t flat) const {
    switch (dtype) {
      case at::kBFloat16: return static_cast<float>(static_cast<const c10::BFloat16*>(data)[flat]);
      case at::kHalf: return static_cast<float>(static_cast<const c10::Half*>(data)[flat]);
      default: return static_cast<const float*>(data)[flat];
    }
  }
};

template <typename T>
void verify_request(const T* logits, int64_t vocab, const RowParams& prm, int64_t num_drafts,
                    const int64_t* drafts, const DraftProbs& q, const float* u_accept, double u_final,
                    Scratch& s, int64_t* out) {
  if (prm.greedy()) {  // accept iff the draft is the argmax; emit the argmax of the first non-accepted row
    int64_t a = 0;
    int64_t best = argmax_row(logits, vocab);
    while (a < num_drafts && drafts[a] == best) {
      ++a;
      best = argmax_row(logits + a * vocab, vocab);
    }
    out[0] = a;
    out[1] = best;
    return;
  }
  int64_t a = 0;
  for (; a < num_drafts; ++a) {  // accept d iff q(d) > 0 and u * q(d) < p(d)
    process_row(logits + a * vocab, vocab, prm, s);
    const int64_t pos = find_kept(s.idx.data(), s.n, drafts[a]);
    const float p = pos >= 0 ? s.prob[pos] : 0.0f;
    const float qd = q.data ? q.at(a * vocab + drafts[a]) : 1.0f;
    if (!(qd > 0.0f && u_accept[a] * qd < p)) break;
  }
  if (a == num_drafts) process_row(logits + a * vocab, vocab, prm, s);  // the bonus row
  const float* weights = s.prob.data();
  if (a < num_drafts) {  // recovered token: residual max(p - q, 0), which is 0 off the kept set
    float* residual = s.cz.data();
    bool any_positive = false;
    for (int64_t j = 0; j < s.n; ++j) {
      const int64_t tok = s.idx[j];
      const float qt = q.data ? q.at(a * vocab + tok) : (tok == drafts[a] ? 1.0f : 0.0f);
      residual[j] = std::max(s.prob[j] - qt, 0.0f);
      any_positive = any_positive || residual[j] > 0.0f;
    }
    if (any_positive) weights = residual;  // else p == q on the kept set: draw from p
  }
  out[0] = a;
  out[1] = s.idx[draw_position(weights, s.n, u_final)];
}

// logits [sum(l_i + 1), V]; per request i: sampling params [B], num_drafts [B] (l_i), its drafts in
// draft_ids [sum l_i], draft_probs[i] ([l_i, V] or None: one-hot q), u_accept [sum l_i] fp32 and
// u_final [B] fp64 (ignored for greedy requests). Returns int64 [B, 2]: (num_accepted, emitted token).
at::Tensor verify_block(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                        const at::Tensor& top_p, const at::Tensor& min_p, const at::Tensor& num_drafts,
                        const at::Tensor& draft_ids, const c10::List<std::optional<at::Tensor>>& draft_probs,
                        const at::Tensor& u_accept, const at::Tensor& u_final) {
  const int64_t batch = num_drafts.numel(), vocab = logits.size(1);
  check_params(logits, temperature, top_k, top_p, min_p, batch);
  TORCH_CHECK(num_drafts.scalar_type() == at::kLong && draft_ids.scalar_type() == at::kLong &&
              num_drafts.is_contiguous() && draft_ids.is_contiguous(), "num_drafts / draft_ids: contiguous int64");
  TORCH_CHECK(u_accept.scalar_type() == at::kFloat && u_accept.is_contiguous() &&
              u_accept.numel() == draft_ids.numel(), "u_accept: contiguous fp32 like draft_ids");
  TORCH_CHECK(u_final.scalar_type() == at::kDouble && u_final.is_contiguous() && u_final.numel() == batch,
              "u_final: contiguous fp64 [B]");
  TORCH_CHECK(static_cast<int64_t>(draft_probs.size()) == batch, "draft_probs: one entry per request");
  const int64_t* lengths = num_drafts.data_ptr<int64_t>();
  std::vector<int64_t> first_row(batch + 1, 0), first_draft(batch + 1, 0);
  std::vector<DraftProbs> q(batch);
  for (int64_t i = 0; i < batch; ++i) {
    first_row[i + 1] = first_row[i] + lengths[i] + 1;
    first_draft[i + 1] = first_draft[i] + lengths[i];
    const std::optional<at::Tensor> probs = draft_probs.get(i);
    if (probs.has_value() && probs->defined()) {
      TORCH_CHECK(probs->is_contiguous() && probs->numel() == lengths[i] * vocab &&
                  (probs->scalar_type() == at::kFloat || probs->scalar_type() == at::kBFloat16 ||
                   probs->scalar_type() == at::kHalf), "draft_probs[", i, "]: contiguous fp32/bf16/fp16 [l, V]");
      q[i].data = probs->data_ptr();
      q[i].dtype = probs->scalar_type();
    }
  }
  TORCH_CHECK(logits.size(0) == first_row[batch] && draft_ids.numel() == first_draft[batch],
              "logits rows / draft_ids do not match num_drafts");
  const int64_t* ids = draft_ids.data_ptr<int64_t>();
  for (int64_t d = 0; d < draft_ids.numel(); ++d) TORCH_CHECK(ids[d] >= 0 && ids[d] < vocab, "draft id out of range");
  at::Tensor out = at::empty({batch, 2}, num_drafts.options());
  int64_t* out_data = out.data_ptr<int64_t>();
  const float* ua = u_accept.data_ptr<float>();
  const double* uf = u_final.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "verify_block", [&] {
    const scalar_t* data = logits.data_ptr<scalar_t>();
    at::parallel_for(0, batch, 2, [&](int64_t begin, int64_t end) {
      Scratch s;
      for (int64_t i = begin; i < end; ++i) {
        verify_request(data + first_row[i] * vocab, vocab, row_params(temperature, top_k, top_p, min_p, i),
                       lengths[i], ids + first_draft[i], q[i], ua + first_draft[i], uf[i], s, out_data + 2 * i);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace sparkserve_sampling

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def("verify_block(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, "
        "Tensor num_drafts, Tensor draft_ids, Tensor?[] draft_probs, Tensor u_accept, Tensor u_final) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparkserve, CPU, m) {
  m.impl("verify_block", &sparkserve_sampling::verify_block);
}
