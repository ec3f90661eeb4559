// The captured step of a CPU decoder: one call runs a whole layer stack (models/decoder.py's DecoderLayer
// modules, in order) through the dispatcher, calling the same kernels with the same arguments as the module
// path: RMSNorm, the fused qkv product, q/k-norm + RoPE, native paged attention, the o product, residual add +
// RMSNorm, gate/up, SiLU-and-mul, down, residual add. Results are bit-identical to the module path; what goes
// away is the Python between the kernels (module calls, attribute lookups, argument checks) that dominates a
// small model's decode step. models/native_stack.py builds the argument lists once and decides when it applies.
#include <tuple>
#include <vector>

#include "stack_ops.h"

namespace {

using namespace sparkserve_stack;

std::tuple<Tensor, std::vector<Tensor>> decoder_stack(
    const Tensor& x_in, const Tensor& positions, const std::vector<OptTensor>& weights, const Tensor& final_norm,
    const Tensor& cos, const Tensor& sin, std::vector<Tensor> k_caches, std::vector<Tensor> v_caches,
    const Tensor& slot_mapping, const Tensor& block_tables, const Tensor& seq_lens, const Tensor& query_start_loc,
    int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps, double scale,
    std::vector<int64_t> capture_ids) {
  check_stack_args("decoder_stack", weights.size(), k_caches.size(), v_caches.size(), x_in);
  const int64_t layers = static_cast<int64_t>(weights.size()) / kWeightsPerLayer;
  const Ops& op = ops();
  const int64_t t = x_in.size(0);
  std::vector<Tensor> captured(capture_ids.size());
  Tensor x = x_in;
  for (int64_t l = 0; l < layers; ++l) {
    const OptTensor* w = weights.data() + l * kWeightsPerLayer;
    const Tensor h = op.rms_norm.call(x, *w[0], eps);
    const Tensor qkv = linear(h, w + 1);
    auto [q, k, v] = op.qk_norm_rope.call(qkv, positions, cos, sin, w[4], w[5], num_heads, num_kv_heads, eps);
    const Tensor attn = op.paged_attention.call(q, k, v, k_caches[l], v_caches[l], slot_mapping, block_tables,
                                                seq_lens, query_start_loc, scale);
    const Tensor o = linear(attn.reshape({t, num_heads * head_dim}), w + 6);
    x = add_attention_and_mlp(x, o, w, eps);
    for (size_t c = 0; c < capture_ids.size(); ++c)
      if (capture_ids[c] == l) captured[c] = x;
  }
  return {op.rms_norm.call(x, final_norm, eps), captured};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def(
      "decoder_stack(Tensor x, Tensor positions, Tensor?[] weights, Tensor final_norm, Tensor cos, Tensor sin, "
      "Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, Tensor slot_mapping, Tensor block_tables, Tensor seq_lens, "
      "Tensor query_start_loc, int num_heads, int num_kv_heads, int head_dim, float eps, float scale, "
      "int[] capture_ids) -> (Tensor, Tensor[])");
  m.impl("decoder_stack", c10::DispatchKey::CPU, TORCH_FN(decoder_stack));
}
