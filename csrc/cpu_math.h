// Scalar math shared by the native kernels (attention, sampling): written so the compiler
// vectorises the loops that call it (-O3 -march=native), no libm call in the inner loop.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace sparkserve_math {

// exp(x) for x <= 0 (a logit or score minus its row maximum): Cephes' expf range reduction and
// polynomial, about 1 ulp; x below -87.34 (exp underflows fp32) gives exactly 0.
__attribute__((always_inline)) inline float exp_nonpositive(float x) {
  const float lo = -87.3365447505531f;
  float xc = std::max(x, lo);
  xc = std::min(xc, 0.0f);
  const float n = std::nearbyint(xc * 1.44269504088896341f);  // (floor would not vectorise)
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < lo ? 0.0f : p * scale;
}

}  // namespace sparkserve_math
