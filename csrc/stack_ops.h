// What the captured stacks (decoder_stack.cpp: the target's layers, draft_stack.cpp: a DSpark/DFlash drafter's
// block layers) share: typed dispatcher handles of the kernels the Python modules call, looked up once, and the
// layer pieces both stacks run identically. Every call goes through the dispatcher with the module path's
// arguments, so the captured stacks compute bit-identical numbers.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/types.h>

#include <tuple>

namespace sparkserve_stack {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

// A layer's weights, in this order, in the flat list a stack receives (models/native_stack.py: layer_weights):
// 0 input_ln, 1-3 qkv (weight, bias, fp32 GEMM copy), 4 q_norm, 5 k_norm, 6-8 o, 9 post_ln, 10-12 gate_up,
// 13-15 down.
constexpr int64_t kWeightsPerLayer = 16;

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
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&, double, bool, int64_t)>
      paged_attention_draft;
};

inline const Ops& ops() {
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
        find("sparkserve::paged_attention_draft")
            .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, double, bool, int64_t)>(),
    };
  }();
  return o;
}

// StreamLinear.forward (linear.cpp: linear_cpu, the one rule for which kernel runs a product).
// w points at (weight, bias, fp32 GEMM copy or None).
inline Tensor linear(const Tensor& x, const OptTensor* w) { return ops().linear.call(x, *w[0], w[1], w[2]); }

// fused.add_rms_norm then the MLP's residual: x + o -> (x2, h2 = post_ln(x2)); returns x2 + down(silu(gate) * up).
inline Tensor add_attention_and_mlp(const Tensor& x, const Tensor& o, const OptTensor* w, double eps) {
  const Ops& op = ops();
  auto [x2, h2] = op.add_rms_norm.call(x, o, *w[9], eps);
  return x2 + linear(op.silu_and_mul.call(linear(h2, w + 10)), w + 13);
}

inline void check_stack_args(const char* name, size_t num_weights, size_t num_k, size_t num_v, const Tensor& x) {
  const int64_t layers = static_cast<int64_t>(num_weights) / kWeightsPerLayer;
  TORCH_CHECK(layers * kWeightsPerLayer == static_cast<int64_t>(num_weights), name, ": weights must hold ",
              kWeightsPerLayer, " entries per layer");
  TORCH_CHECK(static_cast<int64_t>(num_k) == layers && static_cast<int64_t>(num_v) == layers, name,
              ": one K and one V cache per layer expected");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, name, ": x must be fp32 [T, H]");
}

}  // namespace sparkserve_stack
