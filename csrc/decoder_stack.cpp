// The captured step of a CPU decoder: one call runs a whole layer stack (models/decoder.py's DecoderLayer
// modules, in order) through the dispatcher, calling the same kernels with the same arguments as the module
// path: RMSNorm, the fused qkv product, q/k-norm + RoPE, native paged attention, the o product, residual add +
// RMSNorm, gate/up, SiLU-and-mul, down, residual add. Results are bit-identical to the module path; what goes
// away is the Python between the kernels (module calls, attribute lookups, argument checks) that dominates a
// small model's decode step. models/native_stack.py builds the argument lists once and decides when it applies.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/types.h>

#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;
constexpr int64_t kWeightsPerLayer = 16;  // see decoder_stack's loop below

struct Ops {
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, double)> rms_norm;
  c10::TypedOperatorHandle<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, double)> add_rms_norm;
  c10::TypedOperatorHandle<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                              const Tensor&, const OptTensor&, const OptTensor&,
                                                              int64_t, int64_t, double)>
      qk_norm_rope;
  c10::TypedOperatorHandle<Tensor(const Tensor&)> silu_and_mul;
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&)> linear;
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const Tensor&, Tensor, Tensor, const Tensor&,
                                  const Tensor&, const Tensor&, const Tensor&, double)>
      paged_attention;
};

const Ops& ops() {
  static const Ops o = [] {
    auto& d = c10::Dispatcher::singleton();
    auto find = [&](const char* name) { return d.findSchemaOrThrow(name, ""); };
    return Ops{
        find("sparkserve::layer_rms_norm").typed<Tensor(const Tensor&, const Tensor&, double)>(),
        find("sparkserve::layer_add_rms_norm")
            .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, double)>(),
        find("sparkserve::layer_qk_norm_rope")
            .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                      const OptTensor&, const OptTensor&, int64_t, int64_t,
                                                      double)>(),
        find("sparkserve::layer_silu_and_mul").typed<Tensor(const Tensor&)>(),
        find("sparkserve::linear_cpu").typed<Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&)>(),
        find("sparkserve::paged_attention")
            .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, Tensor, Tensor, const Tensor&, const Tensor&,
                          const Tensor&, const Tensor&, double)>(),
    };
  }();
  return o;
}

// StreamLinear.forward (linear.cpp: linear_cpu, the one rule for which kernel runs a product).
// w points at (weight, bias, fp32 GEMM copy or None).
Tensor linear(const Tensor& x, const OptTensor* w) { return ops().linear.call(x, *w[0], w[1], w[2]); }

std::tuple<Tensor, std::vector<Tensor>> decoder_stack(
    const Tensor& x_in, const Tensor& positions, const std::vector<OptTensor>& weights, const Tensor& final_norm,
    const Tensor& cos, const Tensor& sin, std::vector<Tensor> k_caches, std::vector<Tensor> v_caches,
    const Tensor& slot_mapping, const Tensor& block_tables, const Tensor& seq_lens, const Tensor& query_start_loc,
    int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps, double scale,
    std::vector<int64_t> capture_ids) {
  const int64_t layers = static_cast<int64_t>(weights.size()) / kWeightsPerLayer;
  TORCH_CHECK(layers * kWeightsPerLayer == static_cast<int64_t>(weights.size()),
              "decoder_stack: weights must hold ", kWeightsPerLayer, " entries per layer");
  TORCH_CHECK(static_cast<int64_t>(k_caches.size()) == layers && static_cast<int64_t>(v_caches.size()) == layers,
              "decoder_stack: one K and one V cache per layer expected");
  TORCH_CHECK(x_in.dim() == 2 && x_in.scalar_type() == at::kFloat, "decoder_stack: x must be fp32 [T, H]");
  const Ops& op = ops();
  const int64_t t = x_in.size(0);
  std::vector<Tensor> captured(capture_ids.size());
  Tensor x = x_in;
  for (int64_t l = 0; l < layers; ++l) {
    const OptTensor* w = weights.data() + l * kWeightsPerLayer;
    // w: 0 input_ln, 1-3 qkv (weight, bias, fp32 GEMM copy), 4 q_norm, 5 k_norm, 6-8 o, 9 post_ln,
    //    10-12 gate_up, 13-15 down
    const Tensor h = op.rms_norm.call(x, *w[0], eps);
    const Tensor qkv = linear(h, w + 1);
    auto [q, k, v] = op.qk_norm_rope.call(qkv, positions, cos, sin, w[4], w[5], num_heads, num_kv_heads, eps);
    const Tensor attn = op.paged_attention.call(q, k, v, k_caches[l], v_caches[l], slot_mapping, block_tables,
                                                seq_lens, query_start_loc, scale);
    const Tensor o = linear(attn.reshape({t, num_heads * head_dim}), w + 6);
    auto [x2, h2] = op.add_rms_norm.call(x, o, *w[9], eps);
    const Tensor down = linear(op.silu_and_mul.call(linear(h2, w + 10)), w + 13);
    x = x2 + down;
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
