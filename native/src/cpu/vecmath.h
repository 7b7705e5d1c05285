// Vectorised exp for AVX-512 (about 2 ulp on the float range), so softmax, GELU and SiLU do not
// fall back to one libm call per element. Range reduction x = n·ln2 + r, |r| ≤ ln2/2, a degree-6
// polynomial for e^r, and scalef for 2^n. Callers guard AVX-512 paths with cpu_avx512().
#pragma once
#include <immintrin.h>

namespace kpig {

inline bool cpu_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return yes;
}

__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.72f)), _mm512_set1_ps(-103.9f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.3888889e-3f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3333333e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1666667e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666667e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// Natural log for x > 0: x = 2^e·m with m in [√½, √2), log m = 2·atanh((m−1)/(m+1)) by its series
// (|t| ≤ 0.172, five terms: under 1 ulp of float).
__attribute__((target("avx512f"))) static inline __m512 log512(__m512 x) {
  __m512 e = _mm512_getexp_ps(x);
  __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
  const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
  e = _mm512_mask_add_ps(e, big, e, _mm512_set1_ps(1.f));
  const __m512 t = _mm512_div_ps(_mm512_sub_ps(m, _mm512_set1_ps(1.f)), _mm512_add_ps(m, _mm512_set1_ps(1.f)));
  const __m512 t2 = _mm512_mul_ps(t, t);
  __m512 p = _mm512_set1_ps(1.f / 9.f);
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(1.f / 7.f));
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(1.f / 5.f));
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(1.f / 3.f));
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(1.f));
  return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693147180559945f), _mm512_mul_ps(_mm512_add_ps(t, t), p));
}

// tanh(x) = 1 − 2 / (e^{2x} + 1)
__attribute__((target("avx512f"))) static inline __m512 tanh512(__m512 x) {
  const __m512 e = exp512(_mm512_add_ps(x, x));
  return _mm512_sub_ps(_mm512_set1_ps(1.f), _mm512_div_ps(_mm512_set1_ps(2.f), _mm512_add_ps(e, _mm512_set1_ps(1.f))));
}

}  // namespace kpig
