// Fused small ops of a decoder layer (inference only, no autograd), fp32 and bf16 in/out, fp32 math:
//   layer_rms_norm        out = cast(w * cast(x * rsqrt(mean(x^2) + eps)))
//   layer_add_rms_norm    s = cast(x + delta); (s, rms_norm(s))
//   layer_qk_norm_rope    per-head RMSNorm of q and k (optional) then neox RoPE, read from the fused qkv rows;
//                         returns fresh q [T, Hq, D], k [T, Hk, D] and v [T, Hk, D] as a view of qkv
//   layer_silu_and_mul    cast(cast(silu(gate)) * up) over the fused [gate | up] rows
// "cast" rounds to the tensor dtype (identity in fp32), in the same places as the torch references
// (sparkserve/layers/norm.py, rotary.py, models/decoder.py), so results are bit-identical to them except for the
// order of the sum of squares and the exp in silu (a few fp32 ulps; at most one bf16 ulp after rounding).
// Loops are plain C++ the compiler vectorises for the build machine (-O3 -march=native); rows are split
// over torch's intra-op threads only when a call carries enough elements to pay for the fork.
#pragma GCC optimize("fp-contract=off")  // a*b - c*d rounded per op, exactly like torch's separate kernels

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>

namespace {

constexpr int64_t kMinElementsPerThread = 32768;  // below this a call runs on the caller's thread

inline uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
// fp32 -> bf16 bits, round to nearest even, NaN stays NaN (as c10::BFloat16 does).
inline uint16_t bf16_bits(float v) {
  const uint32_t u = bits_of(v);
  return v != v ? uint16_t(0x7FC0) : static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const c10::BFloat16* p, int64_t i) { return float_of(uint32_t(p[i].x) << 16); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(c10::BFloat16* p, int64_t i, float v) { p[i].x = bf16_bits(v); }

// Rounds v to T's precision and back (identity for fp32).
inline float round_to(float v, const float*) { return v; }
inline float round_to(float v, const c10::BFloat16*) { return float_of(uint32_t(bf16_bits(v)) << 16); }

template <typename T>
inline float inv_rms(const T* x, int64_t n, float eps) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < n; ++i) {
    float v = load(x, i);
    ss += v * v;
  }
  return 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
}

// out[i] = cast(w[i] * cast(x[i] * r)); out may alias x.
template <typename T>
inline void scale_rows(const T* x, const T* w, float r, T* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) store(out, i, load(w, i) * round_to(load(x, i) * r, out));
}

// exp(x) to about 2 ulp, written so the compiler vectorises it: Cephes' polynomial in fused multiply-adds,
// round-to-nearest by the 1.5 * 2^23 trick, 2^n assembled in the exponent bits.
inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = __builtin_fmaf(n, 2.12194440e-4f, __builtin_fmaf(n, -0.693359375f, x));
  float p = 1.9875691500e-4f;
  p = __builtin_fmaf(p, r, 1.3981999507e-3f);
  p = __builtin_fmaf(p, r, 8.3334519073e-3f);
  p = __builtin_fmaf(p, r, 4.1665795894e-2f);
  p = __builtin_fmaf(p, r, 1.6666665459e-1f);
  p = __builtin_fmaf(p, r, 5.0000001201e-1f);
  p = __builtin_fmaf(p, r * r, r) + 1.f;
  return p * float_of(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16, name, " must be fp32 or bf16");
}

// Calls f(float{}) or f(c10::BFloat16{}) by dtype (the checks above admit only these two).
template <typename F>
void dispatch(at::ScalarType dtype, F&& f) {
  if (dtype == at::kBFloat16)
    f(c10::BFloat16{});
  else
    f(float{});
}

int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(cols, 1)); }

at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& weight_in, double eps) {
  check_cpu(x_in, "x");
  TORCH_CHECK(weight_in.scalar_type() == x_in.scalar_type(), "weight dtype must match x");
  const int64_t n = x_in.size(-1);
  TORCH_CHECK(weight_in.numel() == n, "weight must have x.size(-1) elements");
  at::Tensor x = x_in.contiguous(), w = weight_in.contiguous(), out = at::empty_like(x);
  const int64_t rows = n ? x.numel() / n : 0;
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t *px = x.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(n), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        scale_rows(px + r * n, pw, inv_rms(px + r * n, n, static_cast<float>(eps)), po + r * n, n);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x_in, const at::Tensor& delta_in,
                                                const at::Tensor& weight_in, double eps) {
  check_cpu(x_in, "x");
  TORCH_CHECK(delta_in.scalar_type() == x_in.scalar_type() && weight_in.scalar_type() == x_in.scalar_type(),
              "x, delta and weight must share one dtype");
  TORCH_CHECK(delta_in.sizes() == x_in.sizes(), "delta must have x's shape");
  const int64_t n = x_in.size(-1);
  TORCH_CHECK(weight_in.numel() == n, "weight must have x.size(-1) elements");
  at::Tensor x = x_in.contiguous(), d = delta_in.contiguous(), w = weight_in.contiguous();
  at::Tensor sum = at::empty_like(x), out = at::empty_like(x);
  const int64_t rows = n ? x.numel() / n : 0;
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t *px = x.data_ptr<scalar_t>(), *pd = d.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>();
    scalar_t *ps = sum.data_ptr<scalar_t>(), *po = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(n), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const scalar_t *xr = px + r * n, *dr = pd + r * n;
        scalar_t* sr = ps + r * n;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) store(sr, i, load(xr, i) + load(dr, i));
        scale_rows(sr, pw, inv_rms(sr, n, static_cast<float>(eps)), po + r * n, n);
      }
    });
  });
  return {sum, out};
}

// One head: optional RMSNorm (into out), then neox rotate-half by cos/sin [D/2] (in place in out).
template <typename T>
inline void norm_rope_head(const T* x, const T* w, float eps, const float* cos, const float* sin, T* out,
                           int64_t d) {
  const int64_t half = d / 2;
  const T* src = x;
  if (w != nullptr) {
    scale_rows(x, w, inv_rms(x, d, eps), out, d);
    src = out;
  }
  float buf[2048];  // head_dim <= 4096 is checked by the caller
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) buf[i] = load(src, i);
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = buf[i], x2 = buf[i + half];
    store(out, i, x1 * cos[i] - x2 * sin[i]);
    store(out, i + half, x2 * cos[i] + x1 * sin[i]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qk_norm_rope(const at::Tensor& qkv, const at::Tensor& positions_in,
                                                const at::Tensor& cos_in, const at::Tensor& sin_in,
                                                const c10::optional<at::Tensor>& q_weight_in,
                                                const c10::optional<at::Tensor>& k_weight_in, int64_t num_q_heads,
                                                int64_t num_kv_heads, double eps) {
  check_cpu(qkv, "qkv");
  TORCH_CHECK(qkv.dim() == 2 && qkv.stride(1) == 1, "qkv must be [T, (Hq + 2 Hk) * D] with unit column stride");
  TORCH_CHECK(cos_in.scalar_type() == at::kFloat && sin_in.scalar_type() == at::kFloat, "cos/sin must be fp32");
  const int64_t t = qkv.size(0), heads = num_q_heads + 2 * num_kv_heads;
  TORCH_CHECK(heads > 0 && qkv.size(1) % heads == 0, "qkv width must be (Hq + 2 Hk) * head_dim");
  const int64_t d = qkv.size(1) / heads, half = d / 2;
  TORCH_CHECK(d % 2 == 0 && d <= 2048, "head_dim must be even and at most 2048");
  TORCH_CHECK(cos_in.size(-1) == half && sin_in.size(-1) == half, "cos/sin must be [P, head_dim / 2]");
  TORCH_CHECK(positions_in.numel() == t, "one position per row");
  TORCH_CHECK(q_weight_in.has_value() == k_weight_in.has_value(), "q and k norm weights come together");
  const bool norm = q_weight_in.has_value();
  at::Tensor pos = positions_in.scalar_type() == at::kLong ? positions_in.contiguous()
                                                           : positions_in.to(at::kLong).contiguous();
  at::Tensor cos = cos_in.contiguous(), sin = sin_in.contiguous();
  at::Tensor qw, kw;
  if (norm) {
    qw = q_weight_in->contiguous();
    kw = k_weight_in->contiguous();
    TORCH_CHECK(qw.scalar_type() == qkv.scalar_type() && kw.scalar_type() == qkv.scalar_type() &&
                    qw.numel() == d && kw.numel() == d,
                "q/k norm weights must be [head_dim] in qkv's dtype");
  }
  at::Tensor q = at::empty({t, num_q_heads, d}, qkv.options());
  at::Tensor k = at::empty({t, num_kv_heads, d}, qkv.options());
  const int64_t max_pos = cos.size(0), row_stride = qkv.stride(0);
  const int64_t* pp = pos.data_ptr<int64_t>();
  for (int64_t i = 0; i < t; ++i)
    TORCH_CHECK(pp[i] >= 0 && pp[i] < max_pos, "position ", pp[i], " outside the rotary table");
  dispatch(qkv.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = qkv.data_ptr<scalar_t>();
    const scalar_t *pqw = norm ? qw.data_ptr<scalar_t>() : nullptr, *pkw = norm ? kw.data_ptr<scalar_t>() : nullptr;
    scalar_t *pq = q.data_ptr<scalar_t>(), *pk = k.data_ptr<scalar_t>();
    const float *pc = cos.data_ptr<float>(), *ps = sin.data_ptr<float>();
    const float e = static_cast<float>(eps);
    at::parallel_for(0, t, grain_rows((num_q_heads + num_kv_heads) * d), [&](int64_t b, int64_t en) {
      for (int64_t r = b; r < en; ++r) {
        const scalar_t* row = px + r * row_stride;
        const float *c = pc + pp[r] * half, *s = ps + pp[r] * half;
        for (int64_t h = 0; h < num_q_heads; ++h)
          norm_rope_head(row + h * d, pqw, e, c, s, pq + (r * num_q_heads + h) * d, d);
        for (int64_t h = 0; h < num_kv_heads; ++h)
          norm_rope_head(row + (num_q_heads + h) * d, pkw, e, c, s, pk + (r * num_kv_heads + h) * d, d);
      }
    });
  });
  at::Tensor v = qkv.as_strided({t, num_kv_heads, d}, {row_stride, d, 1},
                                 qkv.storage_offset() + (num_q_heads + num_kv_heads) * d);
  return {q, k, v};
}

at::Tensor silu_and_mul(const at::Tensor& gate_up_in) {
  check_cpu(gate_up_in, "gate_up");
  const int64_t n2 = gate_up_in.size(-1);
  TORCH_CHECK(n2 % 2 == 0, "gate_up's last dimension must be even ([gate | up])");
  const int64_t n = n2 / 2;
  at::Tensor gu = gate_up_in.contiguous();
  auto sizes = gu.sizes().vec();
  sizes.back() = n;
  at::Tensor out = at::empty(sizes, gu.options());
  const int64_t rows = n ? gu.numel() / n2 : 0;
  dispatch(gu.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pg = gu.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(n2), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const scalar_t *g = pg + r * n2, *u = g + n;
        scalar_t* o = po + r * n;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          const float x = load(g, i);
          store(o, i, round_to(x / (1.f + exp_approx(-x)), o) * load(u, i));
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparkserve, m) {
  m.def("layer_rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("layer_add_rms_norm(Tensor x, Tensor delta, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def(
      "layer_qk_norm_rope(Tensor(a) qkv, Tensor positions, Tensor cos, Tensor sin, Tensor? q_weight, "
      "Tensor? k_weight, int num_q_heads, int num_kv_heads, float eps) -> (Tensor, Tensor, Tensor(a))");
  m.def("layer_silu_and_mul(Tensor gate_up) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparkserve, CPU, m) {
  m.impl("layer_rms_norm", &rms_norm);
  m.impl("layer_add_rms_norm", &add_rms_norm);
  m.impl("layer_qk_norm_rope", &qk_norm_rope);
  m.impl("layer_silu_and_mul", &silu_and_mul);
}
