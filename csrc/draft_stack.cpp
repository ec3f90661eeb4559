// The captured draft step of a DSpark/DFlash drafter on the CPU: one call runs the block rows of every drafting
// request through the drafter's layers (spec_decode/drafters/dspark.py: DSparkDraftModel.block_layers, fused
// for serving) and its final norm, calling the same kernels with the same arguments as the module path:
// RMSNorm, the fused qkv product, q/k-norm + RoPE, paged draft attention (each request's cached context plus
// its own block, never written), the o product, residual add + RMSNorm, gate/up, SiLU-and-mul, down, residual
// add. Bit-identical to the modules; spec_decode/drafters/native_draft_stack.py builds the argument lists once.
#include <tuple>
#include <vector>

#include "stack_ops.h"

namespace {

using namespace sparkserve_stack;

// x [R*B, H] fp32 block rows (request-major), positions [R*B]; per layer l: mask causal[l] (0/1), window[l] (<= 0: none).
Tensor draft_stack(const Tensor& x_in, const Tensor& positions, const std::vector<OptTensor>& weights,
                   const Tensor& final_norm, const Tensor& cos, const Tensor& sin, const std::vector<Tensor>& k_caches,
                   const std::vector<Tensor>& v_caches, const Tensor& block_tables, const Tensor& context_lens,
                   int64_t num_requests, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps,
                   double scale, std::vector<int64_t> causal, std::vector<int64_t> window) {
  check_stack_args("draft_stack", weights.size(), k_caches.size(), v_caches.size(), x_in);
  const int64_t layers = static_cast<int64_t>(weights.size()) / kWeightsPerLayer;
  TORCH_CHECK(static_cast<int64_t>(causal.size()) == layers && static_cast<int64_t>(window.size()) == layers,
              "draft_stack: one mask (causal, window) per layer expected");
  const int64_t t = x_in.size(0);
  TORCH_CHECK(num_requests > 0 && t % num_requests == 0, "draft_stack: ", t, " rows do not split into ",
              num_requests, " equal blocks");
  const int64_t rows = t / num_requests;
  const Ops& op = ops();
  Tensor x = x_in;
  for (int64_t l = 0; l < layers; ++l) {
    const OptTensor* w = weights.data() + l * kWeightsPerLayer;
    const Tensor h = op.rms_norm.call(x, *w[0], eps);
    auto [q, k, v] = op.qk_norm_rope.call(linear(h, w + 1), positions, cos, sin, w[4], w[5], num_heads,
                                          num_kv_heads, eps);
    const Tensor attn = op.paged_attention_draft.call(
        q.view({num_requests, rows, num_heads, head_dim}), k.view({num_requests, rows, num_kv_heads, head_dim}),
        v.view({num_requests, rows, num_kv_heads, head_dim}), k_caches[l], v_caches[l], block_tables, context_lens,
        scale, causal[l] != 0, window[l]);
    x = add_attention_and_mlp(x, linear(attn.reshape({t, num_heads * head_dim}), w + 6), w, eps);
  }
  return op.rms_norm.call(x, final_norm, eps);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def(
      "draft_stack(Tensor x, Tensor positions, Tensor?[] weights, Tensor final_norm, Tensor cos, Tensor sin, "
      "Tensor[] k_caches, Tensor[] v_caches, Tensor block_tables, Tensor context_lens, int num_requests, "
      "int num_heads, int num_kv_heads, int head_dim, float eps, float scale, int[] causal, int[] window) -> Tensor");
  m.impl("draft_stack", c10::DispatchKey::CPU, TORCH_FN(draft_stack));
}
