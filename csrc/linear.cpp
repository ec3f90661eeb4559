// Weight-streaming linear for CPU inference (see linear_kernel.h): linear_stream(x fp32 [M, K], w fp32|bf16 [N, K], bias) -> y fp32 [M, N].
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "linear_kernel.h"

namespace {

using sparkserve_linear::bf16;

constexpr int64_t kMinWeightBytesPerThread = 1 << 18;  // below this the call stays on the caller's thread

at::Tensor linear_stream(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "linear_stream: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "linear_stream: x must be float32, got ", x.scalar_type());
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16,
              "linear_stream: w must be float32 or bfloat16, got ", w.scalar_type());
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "linear_stream: x [M, K] and w [N, K] expected, got ",
              x.sizes(), " and ", w.sizes());
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  const int64_t m = xc.size(0), k = xc.size(1), n = wc.size(0);
  const float* b = nullptr;
  at::Tensor bc;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n, "linear_stream: bias [N] expected");
    bc = bias->to(at::kFloat).contiguous();
    b = bc.data_ptr<float>();
  }
  at::Tensor y = at::empty({m, n}, xc.options());
  if (m == 0 || n == 0) return y;
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  constexpr int64_t kW = sparkserve_linear::kWeightRows;
  const int64_t groups = (n + kW - 1) / kW;
  const int64_t group_bytes = kW * k * static_cast<int64_t>(wc.element_size());
  const int64_t grain = std::max<int64_t>(1, kMinWeightBytesPerThread / std::max<int64_t>(group_bytes, 1));
  at::Tensor packed = at::empty({m * (k - k % sparkserve_linear::kLanes)}, xc.options());
  sparkserve_linear::pack_x(xp, m, k, packed.data_ptr<float>());
  const float* pp = packed.data_ptr<float>();
  auto run = [&](auto* wp) {
    at::parallel_for(0, groups, grain, [&](int64_t p0, int64_t p1) {
      sparkserve_linear::linear_rows(xp, pp, m, k, wp, b, yp, n, kW * p0, std::min(n, kW * p1));
    });
  };
  if (wc.scalar_type() == at::kFloat) {
    run(wc.data_ptr<float>());
  } else {
    run(reinterpret_cast<const bf16*>(wc.data_ptr<at::BFloat16>()));
  }
  return y;
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

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def("linear_stream(Tensor x, Tensor w, Tensor? bias) -> Tensor");
  m.impl("linear_stream", c10::DispatchKey::CPU, TORCH_FN(linear_stream));
  m.def("linear_widen(Tensor x, Tensor w, Tensor? bias) -> Tensor");
  m.impl("linear_widen", c10::DispatchKey::CPU, TORCH_FN(linear_widen));
}
