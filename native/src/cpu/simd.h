// Float vectors of the three instruction-set levels behind one interface, so each row kernel is
// written once (ops_kernels.inc) and compiled per level: F1 (one float, libm), F8 (AVX2 + FMA,
// 8 lanes) and F16 (AVX-512F, 16 lanes). Each type's code is compiled for its own ISA only, so the
// AVX2 build never issues an AVX-512 instruction and runs on AVX2-only CPUs.
//
// vexp / vlog / vtanh, vector forms (F8, F16):
//   exp:  x = n·ln2 + r, |r| ≤ ln2/2 (ln2 in two parts), degree-6 Taylor polynomial for e^r, 2^n
//         put in the exponent (F8) or by scalef (F16): ≤ 2 ulp on [−87.3, 88.3]; F8 returns 0 below
//         −87.3 (e^x is under the smallest normal float there), F16 returns the subnormal.
//   log:  x = 2^e·m, m in [√½, √2), log m = 2·atanh((m−1)/(m+1)) by five series terms: ≤ 1 ulp
//         for normal x > 0.
//   tanh: 1 − 2/(e^{2x} + 1): absolute error ≤ 2e-7 (its relative error grows near 0, where the
//         callers add it to 1).
// simd_level() is the level in use: the widest the CPU has, or lower with KPIG_ISA=avx2|scalar.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>

// Every F8 / F16 function carries its target explicitly: GCC does not apply `#pragma GCC target`
// to friend functions defined inside a class.
#define KPIG_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline
#define KPIG_AVX512 __attribute__((target("avx512f,fma"), always_inline)) inline

namespace kpig {

enum class SimdLevel { Scalar = 0, Avx2 = 1, Avx512 = 2 };
SimdLevel simd_level();
const char* simd_level_name();

struct F1 {
  static constexpr int N = 1;
  float v;
  static F1 load(const float* p) { return {*p}; }
  void store(float* p) const { *p = v; }
  static F1 set1(float x) { return {x}; }
  friend F1 operator+(F1 a, F1 b) { return {a.v + b.v}; }
  friend F1 operator-(F1 a, F1 b) { return {a.v - b.v}; }
  friend F1 operator*(F1 a, F1 b) { return {a.v * b.v}; }
  friend F1 operator/(F1 a, F1 b) { return {a.v / b.v}; }
  friend F1 vfma(F1 a, F1 b, F1 c) { return {a.v * b.v + c.v}; }
  friend F1 vfnma(F1 a, F1 b, F1 c) { return {c.v - a.v * b.v}; }
  friend F1 vmax(F1 a, F1 b) { return {a.v > b.v ? a.v : b.v}; }
  friend F1 vabs(F1 a) { return {std::fabs(a.v)}; }
  friend F1 vexp(F1 a) { return {std::exp(a.v)}; }
  friend F1 vlog(F1 a) { return {std::log(a.v)}; }
  friend F1 vtanh(F1 a) { return {std::tanh(a.v)}; }
  float sum() const { return v; }
  float maxval() const { return v; }
};

#pragma GCC push_options
#pragma GCC target("avx2,fma")
struct F8 {
  static constexpr int N = 8;
  __m256 v;
  KPIG_AVX2 static F8 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  KPIG_AVX2 void store(float* p) const { _mm256_storeu_ps(p, v); }
  KPIG_AVX2 static F8 set1(float x) { return {_mm256_set1_ps(x)}; }
  KPIG_AVX2 friend F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
  KPIG_AVX2 friend F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
  KPIG_AVX2 friend F8 operator*(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
  KPIG_AVX2 friend F8 operator/(F8 a, F8 b) { return {_mm256_div_ps(a.v, b.v)}; }
  KPIG_AVX2 friend F8 vfma(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  KPIG_AVX2 friend F8 vfnma(F8 a, F8 b, F8 c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
  KPIG_AVX2 friend F8 vmax(F8 a, F8 b) { return {_mm256_max_ps(a.v, b.v)}; }
  KPIG_AVX2 friend F8 vabs(F8 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.f), a.v)}; }
  KPIG_AVX2 friend F8 vexp(F8 a) {
    const __m256 lo = _mm256_set1_ps(-87.33654f);
    const __m256 x = _mm256_max_ps(_mm256_min_ps(a.v, _mm256_set1_ps(88.37626f)), lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.3888889e-3f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3333333e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1666667e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666667e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return {_mm256_and_ps(y, _mm256_cmp_ps(a.v, lo, _CMP_GE_OQ))};
  }
  KPIG_AVX2 friend F8 vlog(F8 a) {
    const __m256i bits = _mm256_castps_si256(a.v);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
    const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_add_ps(e, _mm256_and_ps(big, _mm256_set1_ps(1.f)));
    const __m256 t = _mm256_div_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.f)), _mm256_add_ps(m, _mm256_set1_ps(1.f)));
    const __m256 t2 = _mm256_mul_ps(t, t);
    __m256 p = _mm256_set1_ps(1.f / 9.f);
    p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(1.f / 7.f));
    p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(1.f / 5.f));
    p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(1.f / 3.f));
    p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(1.f));
    return {_mm256_fmadd_ps(e, _mm256_set1_ps(0.693147180559945f), _mm256_mul_ps(_mm256_add_ps(t, t), p))};
  }
  KPIG_AVX2 friend F8 vtanh(F8 a) {
    const F8 one = set1(1.f);
    return one - set1(2.f) / (vexp(a + a) + one);
  }
  KPIG_AVX2 float sum() const {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
  KPIG_AVX2 float maxval() const {
    const __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 h = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
  }
};
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,fma")
struct F16 {
  static constexpr int N = 16;
  __m512 v;
  KPIG_AVX512 static F16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  KPIG_AVX512 void store(float* p) const { _mm512_storeu_ps(p, v); }
  KPIG_AVX512 static F16 set1(float x) { return {_mm512_set1_ps(x)}; }
  KPIG_AVX512 friend F16 operator+(F16 a, F16 b) { return {_mm512_add_ps(a.v, b.v)}; }
  KPIG_AVX512 friend F16 operator-(F16 a, F16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
  KPIG_AVX512 friend F16 operator*(F16 a, F16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
  KPIG_AVX512 friend F16 operator/(F16 a, F16 b) { return {_mm512_div_ps(a.v, b.v)}; }
  KPIG_AVX512 friend F16 vfma(F16 a, F16 b, F16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  KPIG_AVX512 friend F16 vfnma(F16 a, F16 b, F16 c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }
  KPIG_AVX512 friend F16 vmax(F16 a, F16 b) { return {_mm512_max_ps(a.v, b.v)}; }
  KPIG_AVX512 friend F16 vabs(F16 a) { return {_mm512_abs_ps(a.v)}; }
  KPIG_AVX512 friend F16 vexp(F16 a) {
    const __m512 x = _mm512_max_ps(_mm512_min_ps(a.v, _mm512_set1_ps(88.72f)), _mm512_set1_ps(-103.9f));
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
    return {_mm512_scalef_ps(p, n)};
  }
  KPIG_AVX512 friend F16 vlog(F16 a) {
    __m512 e = _mm512_getexp_ps(a.v);
    __m512 m = _mm512_getmant_ps(a.v, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
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
    return {_mm512_fmadd_ps(e, _mm512_set1_ps(0.693147180559945f), _mm512_mul_ps(_mm512_add_ps(t, t), p))};
  }
  KPIG_AVX512 friend F16 vtanh(F16 a) {
    const F16 one = set1(1.f);
    return one - set1(2.f) / (vexp(a + a) + one);
  }
  KPIG_AVX512 float sum() const { return _mm512_reduce_add_ps(v); }
  KPIG_AVX512 float maxval() const { return _mm512_reduce_max_ps(v); }
};
#pragma GCC pop_options

}  // namespace kpig
