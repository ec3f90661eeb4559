// Native sampling ops (torch.ops.sparkserve.sample_*): the processed distribution, the sampler's
// draw, and the weighted draw. References: sparkserve/sample/processing.py and sampler.py; the
// uniforms come from the requests' generators in Python, so seeded streams are unchanged.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "sampling_row.h"

namespace sparkserve_sampling {
namespace {

constexpr int64_t kRowsPerTask = 4;  // rows below this stay on the calling thread

// fp32 [N, V] processed probabilities (processing.processed_logprobs(...).exp(), natively).
at::Tensor sample_probs(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                        const at::Tensor& top_p, const at::Tensor& min_p) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  check_params(logits, temperature, top_k, top_p, min_p, rows);
  at::Tensor out = at::zeros({rows, vocab}, logits.options().dtype(at::kFloat));
  float* out_data = out.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sample_probs", [&] {
    const scalar_t* data = logits.data_ptr<scalar_t>();
    at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
      Scratch s;
      for (int64_t r = begin; r < end; ++r) {
        process_row(data + r * vocab, vocab, row_params(temperature, top_k, top_p, min_p, r), s);
        float* row = out_data + r * vocab;
        for (int64_t j = 0; j < s.n; ++j) row[s.idx[j]] = s.prob[j];
      }
    });
  });
  return out;
}

// One token per row: greedy rows by argmax, the rest by the inverse-CDF draw on the processed
// distribution with uniforms[r] (fp64 U[0, 1), ignored on greedy rows) -> int64 [N].
at::Tensor sample_draw(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                       const at::Tensor& top_p, const at::Tensor& min_p, const at::Tensor& uniforms) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  check_params(logits, temperature, top_k, top_p, min_p, rows);
  check_uniforms(uniforms, rows);
  at::Tensor out = at::empty({rows}, logits.options().dtype(at::kLong));
  int64_t* out_data = out.data_ptr<int64_t>();
  const double* u = uniforms.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sample_draw", [&] {
    const scalar_t* data = logits.data_ptr<scalar_t>();
    at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
      Scratch s;
      for (int64_t r = begin; r < end; ++r) {
        const RowParams prm = row_params(temperature, top_k, top_p, min_p, r);
        if (prm.greedy()) {
          out_data[r] = argmax_row(data + r * vocab, vocab);
          continue;
        }
        process_row(data + r * vocab, vocab, prm, s);
        out_data[r] = s.idx[draw_position(s.prob.data(), s.n, u[r])];
      }
    });
  });
  return out;
}

// draw_indices natively: one index per row of non-negative weights [S, V] (any float dtype, no row all
// zero) with uniforms[r] -> int64 [S]. Bit-identical to the torch reference (same fp64 running sum).
at::Tensor sample_draw_weights(const at::Tensor& weights, const at::Tensor& uniforms) {
  TORCH_CHECK(weights.dim() == 2 && weights.is_contiguous(), "weights must be a contiguous [S, V] tensor");
  const int64_t rows = weights.size(0), vocab = weights.size(1);
  check_uniforms(uniforms, rows);
  at::Tensor out = at::empty({rows}, weights.options().dtype(at::kLong));
  int64_t* out_data = out.data_ptr<int64_t>();
  const double* u = uniforms.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, weights.scalar_type(), "sample_draw_weights", [&] {
    const scalar_t* data = weights.data_ptr<scalar_t>();
    at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
      std::vector<double> w(vocab);  // exact for every dtype, as the reference's weights.double()
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t i = 0; i < vocab; ++i) w[i] = static_cast<double>(data[r * vocab + i]);
        out_data[r] = draw_position(w.data(), vocab, u[r]);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace sparkserve_sampling

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def("sample_probs(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p) -> Tensor");
  m.def("sample_draw(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, "
        "Tensor uniforms) -> Tensor");
  m.def("sample_draw_weights(Tensor weights, Tensor uniforms) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparkserve, CPU, m) {
  m.impl("sample_probs", &sparkserve_sampling::sample_probs);
  m.impl("sample_draw", &sparkserve_sampling::sample_draw);
  m.impl("sample_draw_weights", &sparkserve_sampling::sample_draw_weights);
}
