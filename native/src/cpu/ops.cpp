// The row kernels of ops.h, compiled three times from ops_kernels.inc (plain x86-64, AVX2 + FMA,
// AVX-512F) and dispatched on simd_level(), which KPIG_ISA can lower: an AVX2-class run on an
// AVX-512 machine executes AVX2 code only.
#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "simd.h"

// GCC 12 flags its own AVX-512 intrinsics headers (_mm512_reduce_add_ps, roundscale) as reading an
// uninitialised value; the lanes in question are never used.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace kpig {

SimdLevel simd_level() {
  static const SimdLevel level = [] {
    const char* force = std::getenv("KPIG_ISA");
    const std::string f = force ? force : "";
    __builtin_cpu_init();
    if (f != "scalar" && f != "avx2" && __builtin_cpu_supports("avx512f")) return SimdLevel::Avx512;
    if (f != "scalar" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::Avx2;
    return SimdLevel::Scalar;
  }();
  return level;
}

const char* simd_level_name() {
  switch (simd_level()) {
    case SimdLevel::Avx512: return "avx512";
    case SimdLevel::Avx2: return "avx2";
    default: return "scalar";
  }
}

namespace {
struct IgSums {
  double kl = 0, js = 0, h_f = 0, h_m = 0;
};
}  // namespace

namespace scalar {
using V = F1;
#include "ops_kernels.inc"
}  // namespace scalar

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using V = F8;
#include "ops_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,fma")
namespace avx512 {
using V = F16;
#include "ops_kernels.inc"
}  // namespace avx512
#pragma GCC pop_options

// Calls the kernel `fn` of the level in use.
#define KPIG_DISPATCH(fn, ...)                                  \
  switch (simd_level()) {                                       \
    case SimdLevel::Avx512: return avx512::fn(__VA_ARGS__);     \
    case SimdLevel::Avx2: return avx2::fn(__VA_ARGS__);         \
    default: return scalar::fn(__VA_ARGS__);                    \
  }

float layernorm_row(const float* x, const float* w, const float* b, float eps, int64_t C, float* out, float* mean) {
  KPIG_DISPATCH(layernorm_row, x, w, b, eps, C, out, mean)
}
float rmsnorm_row(const float* x, const float* w, float eps, int64_t C, float* out) {
  KPIG_DISPATCH(rmsnorm_row, x, w, eps, C, out)
}
void layernorm_backward_row(const float* x, const float* w, float mean, float rstd, const float* dy, int64_t C, float* dx,
                            float* dw, float* db) {
  KPIG_DISPATCH(layernorm_backward_row, x, w, mean, rstd, dy, C, dx, dw, db)
}
void rmsnorm_backward_row(const float* x, const float* w, float r, const float* dy, int64_t C, float* dx, float* dw) {
  KPIG_DISPATCH(rmsnorm_backward_row, x, w, r, dy, C, dx, dw)
}
void gelu_new_backward(const float* x, const float* dy, int64_t n, float* dx) { KPIG_DISPATCH(gelu_new_backward, x, dy, n, dx) }
void swiglu_backward_row(const float* gate_up, const float* dy, int64_t F, float* d_gate_up) {
  KPIG_DISPATCH(swiglu_backward_row, gate_up, dy, F, d_gate_up)
}
void gelu_new_inplace(float* x, int64_t n) { KPIG_DISPATCH(gelu_new_inplace, x, n) }
void swiglu_row(const float* gate_up, int64_t F, float* out) { KPIG_DISPATCH(swiglu_row, gate_up, F, out) }
void rope_row(float* x, int64_t n_heads, int64_t D, const float* cs, bool inverse) {
  KPIG_DISPATCH(rope_row, x, n_heads, D, cs, inverse)
}
void add_inplace(float* y, const float* x, int64_t n) { KPIG_DISPATCH(add_inplace, y, x, n) }
float attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale, float* scores,
                 float* out) {
  KPIG_DISPATCH(attend_row, q, k, v, ld, n, D, scale, scores, out)
}
float logsumexp_row(const float* x, int64_t V) { KPIG_DISPATCH(logsumexp_row, x, V) }
void exp_shift_inplace(float* x, int64_t n, float shift, float scale) { KPIG_DISPATCH(exp_shift_inplace, x, n, shift, scale) }

float softmax_unnormalised_row(float* s, int64_t valid, int64_t n, float scale, float* m) {
  const float sum = [&]() -> float { KPIG_DISPATCH(softmax_unnormalised, s, valid, scale, m) }();
  std::memset(s + valid, 0, sizeof(float) * size_t(n - valid));
  return sum;
}

int64_t argmax_row(const float* x, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

IgTokenStats ig_token_stats(const float* lf, const float* lm, int64_t V, int32_t y) {
  const float lse_f = logsumexp_row(lf, V), lse_m = logsumexp_row(lm, V);
  IgSums s;
  const int64_t done = [&]() -> int64_t {
    switch (simd_level()) {
      case SimdLevel::Avx512: return avx512::ig_sums(lf, lm, V, lse_f, lse_m, &s);
      case SimdLevel::Avx2: return avx2::ig_sums(lf, lm, V, lse_f, lse_m, &s);
      default: return 0;  // all in double below
    }
  }();
  const double ln2 = 0.6931471805599453;
  for (int64_t v = done; v < V; v++) {
    const double a = double(lf[v]) - lse_f, b = double(lm[v]) - lse_m;  // log p, log q
    const double p = std::exp(a), q = std::exp(b);
    s.kl += p * (a - b);
    s.h_f -= p * a;
    s.h_m -= q * b;
    const double lmix = std::max(a, b) + std::log1p(std::exp(-std::fabs(a - b))) - ln2;
    s.js += 0.5 * (p * (a - lmix) + q * (b - lmix));
  }
  return {double(lse_f) - double(lf[y]), double(lse_m) - double(lm[y]), s.kl, s.js, s.h_f, s.h_m};
}

void adamw_update(float* __restrict p, float* __restrict g, float* __restrict m, float* __restrict v, int64_t n, float clip,
                  float decay, float b1, float b2, float step_size, float bc2_sqrt, float eps) {
  int64_t i = 0;
  const __m128 vclip = _mm_set1_ps(clip), vdecay = _mm_set1_ps(decay), vb1 = _mm_set1_ps(b1), vb1c = _mm_set1_ps(1.f - b1),
               vb2 = _mm_set1_ps(b2), vb2c = _mm_set1_ps(1.f - b2), vstep = _mm_set1_ps(step_size), vbc2 = _mm_set1_ps(bc2_sqrt),
               veps = _mm_set1_ps(eps);
  for (; i + 4 <= n; i += 4) {
    const __m128 gi = _mm_mul_ps(_mm_loadu_ps(g + i), vclip);
    const __m128 mi = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(m + i)), _mm_mul_ps(vb1c, gi));
    const __m128 vi = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(v + i)), _mm_mul_ps(_mm_mul_ps(vb2c, gi), gi));
    _mm_storeu_ps(m + i, mi);
    _mm_storeu_ps(v + i, vi);
    const __m128 den = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), vbc2), veps);
    _mm_storeu_ps(p + i, _mm_sub_ps(_mm_mul_ps(_mm_loadu_ps(p + i), vdecay), _mm_div_ps(_mm_mul_ps(vstep, mi), den)));
    _mm_storeu_ps(g + i, _mm_setzero_ps());
  }
  for (; i < n; i++) {
    const float gi = g[i] * clip;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
    g[i] = 0.f;
  }
}

}  // namespace kpig
