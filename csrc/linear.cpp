// Weight-streaming linear for CPU inference (see linear_kernel.h): linear_stream(x [M, K], w [N, K], bias) -> y [M, N]
// for fp32 x (w fp32 or bf16; y fp32) and bf16 x (w bf16; y bf16), and linear_widen for many fp32 rows on bf16 w.
#include <ATen/Parallel.h>

#include <vector>
#include <torch/library.h>
#include <torch/types.h>

#include "linear_kernel.h"

namespace {

using sparkserve_linear::bf16;

constexpr int64_t kMinWeightBytesPerThread = 1 << 18;  // below this the call stays on the caller's thread

// fp32 x against fp32 or bf16 w (both contiguous) -> fp32 y, with register tile S (linear_kernel.h).
template <typename S>
at::Tensor linear_stream_f32_tiled(const at::Tensor& xc, const at::Tensor& wc, const float* b) {
  const int64_t m = xc.size(0), k = xc.size(1), n = wc.size(0);
  at::Tensor y = at::empty({m, n}, xc.options());
  if (m == 0 || n == 0) return y;
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  constexpr int64_t kW = S::kW;
  const int64_t groups = (n + kW - 1) / kW;
  const int64_t group_bytes = kW * k * static_cast<int64_t>(wc.element_size());
  const int64_t grain = std::max<int64_t>(1, kMinWeightBytesPerThread / std::max<int64_t>(group_bytes, 1));
  at::Tensor packed = at::empty({m * (k - k % sparkserve_linear::kLanes)}, xc.options());
  sparkserve_linear::pack_x<S::kT>(xp, m, k, packed.data_ptr<float>());
  const float* pp = packed.data_ptr<float>();
  auto run = [&](auto* wp) {
    at::parallel_for(0, groups, grain, [&](int64_t p0, int64_t p1) {
      sparkserve_linear::linear_rows<S>(xp, pp, m, k, wp, b, yp, n, kW * p0, std::min(n, kW * p1));
    });
  };
  if (wc.scalar_type() == at::kFloat) {
    run(wc.data_ptr<float>());
  } else {
    run(reinterpret_cast<const bf16*>(wc.data_ptr<at::BFloat16>()));
  }
  return y;
}

// The row tile for decode-sized products (<= 4 rows), the block tile above (linear_kernel.h: same sums).
at::Tensor linear_stream_f32(const at::Tensor& xc, const at::Tensor& wc, const float* b) {
  if (xc.size(0) <= sparkserve_linear::RowTile::kT) return linear_stream_f32_tiled<sparkserve_linear::RowTile>(xc, wc, b);
  return linear_stream_f32_tiled<sparkserve_linear::BlockTile>(xc, wc, b);
}

// bf16 x against bf16 w -> bf16 y (a model run in bf16); vdpbf16ps where the CPU has it.
at::Tensor linear_stream_bf16(const at::Tensor& x, const at::Tensor& w, const float* b) {
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
#if SPARKSERVE_LINEAR_DPBF16
  using sparkserve_linear::kPairLanes;
  at::Tensor y = at::empty({m, n}, x.options());
  if (m == 0 || n == 0) return y;
  const bf16* xp = reinterpret_cast<const bf16*>(x.data_ptr<at::BFloat16>());
  const bf16* wp = reinterpret_cast<const bf16*>(w.data_ptr<at::BFloat16>());
  at::Tensor packed = at::empty({m * (k - k % kPairLanes)}, x.options());
  bf16* pp = reinterpret_cast<bf16*>(packed.data_ptr<at::BFloat16>());
  sparkserve_linear::pack_x_bf16(xp, m, k, pp);
  bf16* yp = reinterpret_cast<bf16*>(y.data_ptr<at::BFloat16>());
  constexpr int64_t kW = sparkserve_linear::kWeightRows;
  const int64_t groups = (n + kW - 1) / kW;
  const int64_t grain = std::max<int64_t>(1, kMinWeightBytesPerThread / std::max<int64_t>(kW * k * 2, 1));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    sparkserve_linear::linear_rows_bf16(xp, pp, m, k, wp, b, yp, n, kW * g0, std::min(n, kW * g1));
  });
  return y;
#else
  at::Tensor y32 = linear_stream_f32(x.to(at::kFloat), w, b);
  return y32.to(at::kBFloat16);
#endif
}

at::Tensor linear_stream(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "linear_stream: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == at::kFloat || (x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16),
              "linear_stream: x must be float32 (or bfloat16 with bfloat16 w), got ", x.scalar_type(), " and ",
              w.scalar_type());
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16,
              "linear_stream: w must be float32 or bfloat16, got ", w.scalar_type());
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "linear_stream: x [M, K] and w [N, K] expected, got ",
              x.sizes(), " and ", w.sizes());
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  const float* b = nullptr;
  at::Tensor bc;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == wc.size(0), "linear_stream: bias [N] expected");
    bc = bias->to(at::kFloat).contiguous();
    b = bc.data_ptr<float>();
  }
  if (xc.scalar_type() == at::kBFloat16) return linear_stream_bf16(xc, wc, b);
  return linear_stream_f32(xc, wc, b);
}

// Many rows (prefill, big verify batches) against bf16-stored weights: torch's GEMM on fp32 copies of about
// kWidenBlockBytes of weight rows at a time, so the widened copy stays in cache instead of streaming a full
// fp32 weight through memory once per call.
constexpr int64_t kWidenBlockBytes = 1 << 20;

at::Tensor linear_widen(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "linear_widen: x [M, K] and w [N, K] expected");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "linear_widen: x must be float32");
  const int64_t n = w.size(0);
  const int64_t block_rows = std::max<int64_t>(16, kWidenBlockBytes / std::max<int64_t>(4 * w.size(1), 1));
  at::Tensor y = at::empty({x.size(0), n}, x.options());
  for (int64_t n0 = 0; n0 < n; n0 += block_rows) {
    const int64_t nb = std::min(block_rows, n - n0);
    const at::Tensor wf = w.narrow(0, n0, nb).to(at::kFloat);
    const c10::optional<at::Tensor> b =
        bias.has_value() && bias->defined() ? c10::optional<at::Tensor>(bias->narrow(0, n0, nb).to(at::kFloat))
                                            : c10::nullopt;
    y.narrow(1, n0, nb).copy_(at::linear(x, wf, b));
  }
  return y;
}

// How many rows go to the streaming kernel for inputs of width k: its per-output horizontal sums cost about
// as much as a short row's products, so narrow products (the Markov head's rank-64 W2 u) stream only one
// row and torch's GEMM takes the rest (bench/native_linear.py).
int64_t stream_max_rows(int64_t k) { return k >= 256 ? 16 : (k >= 128 ? 4 : 1); }

// StreamLinear.forward without autograd, for any leading shape: the one rule the module path, the captured
// stack (decoder_stack.cpp) and the Markov loop (markov.cpp) all call.
//   fp32 rows, or bf16 rows against bf16 weights: up to stream_max_rows(K) rows stream (linear_stream);
//   more fp32 rows against bf16 weights: torch's GEMM on `w_gemm` (an fp32 copy of w, the same numbers) when
//   the layer keeps one, else linear_widen; anything else: torch, weights in x's dtype.
at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                      const c10::optional<at::Tensor>& w_gemm) {
  const int64_t k = x.size(-1), rows = x.numel() / std::max<int64_t>(k, 1);
  const bool bf16_rows = x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = w.size(0);
  if ((x.scalar_type() == at::kFloat || bf16_rows) && rows <= stream_max_rows(k))
    return linear_stream(x.reshape({rows, k}), w, bias).reshape(shape);
  if (x.scalar_type() == at::kFloat && w.scalar_type() == at::kBFloat16) {
    if (w_gemm.has_value() && w_gemm->defined()) return at::linear(x, *w_gemm, bias);
    return linear_widen(x.reshape({rows, k}), w, bias).reshape(shape);
  }
  const c10::optional<at::Tensor> b =
      bias.has_value() && bias->defined() ? c10::optional<at::Tensor>(bias->to(x.scalar_type())) : c10::nullopt;
  return at::linear(x, w.scalar_type() == x.scalar_type() ? w : w.to(x.scalar_type()), b);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def("linear_cpu(Tensor x, Tensor w, Tensor? bias, Tensor? w_gemm=None) -> Tensor");
  m.impl("linear_cpu", c10::DispatchKey::CPU, TORCH_FN(linear_cpu));
  m.def("linear_stream(Tensor x, Tensor w, Tensor? bias) -> Tensor");
  m.impl("linear_stream", c10::DispatchKey::CPU, TORCH_FN(linear_stream));
  m.def("linear_widen(Tensor x, Tensor w, Tensor? bias) -> Tensor");
  m.impl("linear_widen", c10::DispatchKey::CPU, TORCH_FN(linear_widen));
}
