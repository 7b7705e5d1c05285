#include "ops.h"

#include "vecmath.h"

// GCC 12 flags its own AVX-512 intrinsics headers (_mm512_reduce_add_ps, roundscale) as reading an
// uninitialised value; the lanes in question are never used.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cmath>
#include <cstring>

#define KPIG_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace kpig {

KPIG_CLONES float layernorm_row(const float* x, const float* w, const float* b, float eps, int64_t C, float* out,
                               float* mean_out) {
  float mean = 0.f;
  for (int64_t i = 0; i < C; i++) mean += x[i];
  mean /= float(C);
  float var = 0.f;
  for (int64_t i = 0; i < C; i++) {
    float d = x[i] - mean;
    var += d * d;
  }
  var /= float(C);
  const float inv = 1.f / std::sqrt(var + eps);
  for (int64_t i = 0; i < C; i++) out[i] = (x[i] - mean) * inv * w[i] + b[i];
  if (mean_out) *mean_out = mean;
  return inv;
}

KPIG_CLONES float rmsnorm_row(const float* x, const float* w, float eps, int64_t C, float* out) {
  float ss = 0.f;
  for (int64_t i = 0; i < C; i++) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / float(C) + eps);
  for (int64_t i = 0; i < C; i++) out[i] = x[i] * inv * w[i];
  return inv;
}

KPIG_CLONES void layernorm_backward_row(const float* x, const float* w, float mean, float rstd, const float* dy, int64_t C,
                                        float* dx, float* dw, float* db) {
  float sum_g = 0.f, sum_gx = 0.f;
  for (int64_t i = 0; i < C; i++) {
    const float xh = (x[i] - mean) * rstd;
    const float g = dy[i] * w[i];
    sum_g += g;
    sum_gx += g * xh;
    if (dw) dw[i] += dy[i] * xh;
    if (db) db[i] += dy[i];
  }
  sum_g /= float(C);
  sum_gx /= float(C);
  for (int64_t i = 0; i < C; i++) {
    const float xh = (x[i] - mean) * rstd;
    dx[i] = rstd * (dy[i] * w[i] - sum_g - xh * sum_gx);
  }
}

KPIG_CLONES void rmsnorm_backward_row(const float* x, const float* w, float r, const float* dy, int64_t C, float* dx, float* dw) {
  float sum_gx = 0.f;
  for (int64_t i = 0; i < C; i++) {
    sum_gx += dy[i] * w[i] * x[i];
    if (dw) dw[i] += dy[i] * x[i] * r;
  }
  const float c = r * r * r * sum_gx / float(C);
  for (int64_t i = 0; i < C; i++) dx[i] = r * dy[i] * w[i] - x[i] * c;
}

__attribute__((target("avx512f"))) static int64_t gelu_new_backward_512(const float* x, const float* dy, int64_t n, float* dx) {
  const __m512 k = _mm512_set1_ps(0.7978845608028654f), c = _mm512_set1_ps(0.044715f), c3 = _mm512_set1_ps(3.f * 0.044715f);
  const __m512 one = _mm512_set1_ps(1.f), h = _mm512_set1_ps(0.5f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i), v2 = _mm512_mul_ps(v, v);
    const __m512 t = tanh512(_mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c, v), v2, v)));
    const __m512 dt = _mm512_mul_ps(_mm512_fnmadd_ps(t, t, one), _mm512_mul_ps(k, _mm512_fmadd_ps(c3, v2, one)));
    const __m512 g = _mm512_fmadd_ps(_mm512_mul_ps(h, v), dt, _mm512_mul_ps(h, _mm512_add_ps(one, t)));
    _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(dy + i), g));
  }
  return i;
}

KPIG_CLONES void gelu_new_backward(const float* x, const float* dy, int64_t n, float* dx) {
  const float k = 0.7978845608028654f;
  const int64_t done = cpu_avx512() ? gelu_new_backward_512(x, dy, n, dx) : 0;
  for (int64_t i = done; i < n; i++) {
    const float v = x[i];
    const float t = std::tanh(k * (v + 0.044715f * v * v * v));
    const float dt = (1.f - t * t) * k * (1.f + 3.f * 0.044715f * v * v);
    dx[i] = dy[i] * (0.5f * (1.f + t) + 0.5f * v * dt);
  }
}

__attribute__((target("avx512f"))) static int64_t swiglu_backward_512(const float* gate_up, const float* dy, int64_t F, float* d) {
  const __m512 one = _mm512_set1_ps(1.f);
  int64_t i = 0;
  for (; i + 16 <= F; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate_up + i), u = _mm512_loadu_ps(gate_up + F + i), y = _mm512_loadu_ps(dy + i);
    const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_storeu_ps(d + F + i, _mm512_mul_ps(y, _mm512_mul_ps(g, sig)));
    const __m512 ds = _mm512_mul_ps(sig, _mm512_fmadd_ps(g, _mm512_sub_ps(one, sig), one));
    _mm512_storeu_ps(d + i, _mm512_mul_ps(_mm512_mul_ps(y, u), ds));
  }
  return i;
}

KPIG_CLONES void swiglu_backward_row(const float* gate_up, const float* dy, int64_t F, float* d_gate_up) {
  const float* up = gate_up + F;
  const int64_t done = cpu_avx512() ? swiglu_backward_512(gate_up, dy, F, d_gate_up) : 0;
  for (int64_t i = done; i < F; i++) {
    const float g = gate_up[i];
    const float sig = 1.f / (1.f + std::exp(-g));
    const float silu = g * sig;
    d_gate_up[F + i] = dy[i] * silu;
    d_gate_up[i] = dy[i] * up[i] * sig * (1.f + g * (1.f - sig));
  }
}

__attribute__((target("avx512f"))) static int64_t gelu_new_512(float* x, int64_t n) {
  const __m512 k = _mm512_set1_ps(0.7978845608028654f), c = _mm512_set1_ps(0.044715f), h = _mm512_set1_ps(0.5f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 u = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c, v), _mm512_mul_ps(v, v), v));
    const __m512 t = tanh512(u);
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mul_ps(h, v), _mm512_add_ps(_mm512_set1_ps(1.f), t)));
  }
  return i;
}

KPIG_CLONES void gelu_new_inplace(float* x, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2/π)
  const int64_t done = cpu_avx512() ? gelu_new_512(x, n) : 0;
  for (int64_t i = done; i < n; i++) {
    float v = x[i];
    x[i] = 0.5f * v * (1.f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

__attribute__((target("avx512f"))) static int64_t swiglu_512(const float* gate_up, int64_t F, float* out) {
  int64_t i = 0;
  for (; i + 16 <= F; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate_up + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), e));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(silu, _mm512_loadu_ps(gate_up + F + i)));
  }
  return i;
}

KPIG_CLONES void swiglu_row(const float* gate_up, int64_t F, float* out) {
  const float* up = gate_up + F;
  const int64_t done = cpu_avx512() ? swiglu_512(gate_up, F, out) : 0;
  for (int64_t i = done; i < F; i++) {
    float g = gate_up[i];
    out[i] = g / (1.f + std::exp(-g)) * up[i];
  }
}

KPIG_CLONES void rope_row(float* x, int64_t n_heads, int64_t D, const float* cs, bool inverse) {
  const int64_t half = D / 2;
  const float* c = cs;
  const float* s = cs + half;
  const float sign = inverse ? -1.f : 1.f;
  for (int64_t h = 0; h < n_heads; h++) {
    float* a = x + h * D;
    float* b = a + half;
    for (int64_t i = 0; i < half; i++) {
      float x1 = a[i], x2 = b[i];
      a[i] = x1 * c[i] - sign * x2 * s[i];
      b[i] = x2 * c[i] + sign * x1 * s[i];
    }
  }
}

KPIG_CLONES void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

KPIG_CLONES float attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D,
                             float scale, float* scores, float* out) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; j++) {
    const float* kj = k + j * ld;
    float s = 0.f;
    for (int64_t d = 0; d < D; d++) s += q[d] * kj[d];
    s *= scale;
    scores[j] = s;
    mx = s > mx ? s : mx;
  }
  float sum = 0.f;
  for (int64_t j = 0; j < n; j++) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  const float inv = 1.f / sum;
  std::memset(out, 0, sizeof(float) * D);
  for (int64_t j = 0; j < n; j++) {
    const float p = scores[j] * inv;
    const float* vj = v + j * ld;
    for (int64_t d = 0; d < D; d++) out[d] += p * vj[d];
  }
  return mx + std::log(sum);
}

KPIG_CLONES void attend_backward_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D,
                                     float scale, float lse, const float* d_out, float* dq, float* dk, float* dv,
                                     float* scratch) {
  float* P = scratch;       // (n) probabilities
  float* dP = scratch + n;  // (n) do·v_j
  float sum = 0.f;
  for (int64_t j = 0; j < n; j++) {
    const float* kj = k + j * ld;
    const float* vj = v + j * ld;
    float s = 0.f, dp = 0.f;
    for (int64_t d = 0; d < D; d++) {
      s += q[d] * kj[d];
      dp += d_out[d] * vj[d];
    }
    P[j] = std::exp(s * scale - lse);
    dP[j] = dp;
    sum += P[j] * dp;
    float* dvj = dv + j * ld;
    for (int64_t d = 0; d < D; d++) dvj[d] += P[j] * d_out[d];
  }
  std::memset(dq, 0, sizeof(float) * D);
  for (int64_t j = 0; j < n; j++) {
    const float ds = scale * P[j] * (dP[j] - sum);
    const float* kj = k + j * ld;
    float* dkj = dk + j * ld;
    for (int64_t d = 0; d < D; d++) {
      dq[d] += ds * kj[d];
      dkj[d] += ds * q[d];
    }
  }
}

__attribute__((target("avx512f"))) static float sum_exp_512(const float* x, int64_t V, float mx, int64_t* done) {
  __m512 acc = _mm512_setzero_ps();
  const __m512 m = _mm512_set1_ps(mx);
  int64_t i = 0;
  for (; i + 16 <= V; i += 16) acc = _mm512_add_ps(acc, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), m)));
  *done = i;
  return _mm512_reduce_add_ps(acc);
}

KPIG_CLONES float logsumexp_row(const float* x, int64_t V) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
  float sum = 0.f;
  int64_t done = 0;
  if (cpu_avx512()) sum = sum_exp_512(x, V, mx, &done);
  for (int64_t i = done; i < V; i++) sum += std::exp(x[i] - mx);
  return mx + std::log(sum);
}

__attribute__((target("avx512f"))) static int64_t exp_shift_512(float* x, int64_t n, float shift, float scale) {
  const __m512 s = _mm512_set1_ps(shift), k = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(k, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s))));
  return i;
}

void exp_shift_inplace(float* x, int64_t n, float shift, float scale) {
  const int64_t done = cpu_avx512() ? exp_shift_512(x, n, shift, scale) : 0;
  for (int64_t i = done; i < n; i++) x[i] = scale * std::exp(x[i] - shift);
}

__attribute__((target("avx512f"))) static float softmax_unnormalised_512(float* s, int64_t valid, float scale, float* m) {
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < valid; i += 16)
    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), __mmask16(valid - i >= 16 ? 0xFFFF : (1u << (valid - i)) - 1), s + i));
  const float shift = scale * _mm512_reduce_max_ps(mx);
  const __m512 k = _mm512_set1_ps(scale), sh = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < valid; i += 16) {
    const __mmask16 lanes = __mmask16(valid - i >= 16 ? 0xFFFF : (1u << (valid - i)) - 1);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_mul_ps(k, _mm512_maskz_loadu_ps(lanes, s + i)), sh));
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(lanes, e));
    _mm512_mask_storeu_ps(s + i, lanes, e);
  }
  *m = shift;
  return _mm512_reduce_add_ps(sum);
}

float softmax_unnormalised_row(float* s, int64_t valid, int64_t n, float scale, float* m) {
  float sum = 0.f;
  if (cpu_avx512()) {
    sum = softmax_unnormalised_512(s, valid, scale, m);
  } else {
    float mx = -INFINITY;
    for (int64_t j = 0; j < valid; j++) mx = std::max(mx, scale * s[j]);
    for (int64_t j = 0; j < valid; j++) sum += s[j] = std::exp(scale * s[j] - mx);
    *m = mx;
  }
  std::memset(s + valid, 0, sizeof(float) * size_t(n - valid));
  return sum;
}

int64_t argmax_row(const float* x, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace kpig

namespace kpig {

namespace {

struct IgSums {
  double kl = 0, js = 0, h_f = 0, h_m = 0;
};

__attribute__((target("avx512f"))) int64_t ig_sums_512(const float* lf, const float* lm, int64_t V, float lse_f, float lse_m, IgSums* out) {
  __m512 kl = _mm512_setzero_ps(), js = kl, hf = kl, hm = kl;
  const __m512 sf = _mm512_set1_ps(lse_f), sm = _mm512_set1_ps(lse_m), one = _mm512_set1_ps(1.f), half = _mm512_set1_ps(0.5f);
  const __m512 ln2 = _mm512_set1_ps(0.693147180559945f);
  int64_t v = 0;
  for (; v + 16 <= V; v += 16) {
    const __m512 a = _mm512_sub_ps(_mm512_loadu_ps(lf + v), sf), b = _mm512_sub_ps(_mm512_loadu_ps(lm + v), sm);
    const __m512 p = exp512(a), q = exp512(b);
    const __m512 d = _mm512_sub_ps(a, b);
    kl = _mm512_fmadd_ps(p, d, kl);
    hf = _mm512_fnmadd_ps(p, a, hf);
    hm = _mm512_fnmadd_ps(q, b, hm);
    // log of the mixture ½(p + q) = max(a, b) + log(1 + e^{−|a−b|}) − ln 2
    const __m512 ad = _mm512_abs_ps(d);
    const __m512 lmix = _mm512_sub_ps(_mm512_add_ps(_mm512_max_ps(a, b), log512(_mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), ad))))), ln2);
    js = _mm512_fmadd_ps(half, _mm512_fmadd_ps(p, _mm512_sub_ps(a, lmix), _mm512_mul_ps(q, _mm512_sub_ps(b, lmix))), js);
  }
  out->kl = _mm512_reduce_add_ps(kl);
  out->js = _mm512_reduce_add_ps(js);
  out->h_f = _mm512_reduce_add_ps(hf);
  out->h_m = _mm512_reduce_add_ps(hm);
  return v;
}

}  // namespace

IgTokenStats ig_token_stats(const float* lf, const float* lm, int64_t V, int32_t y) {
  const float lse_f = logsumexp_row(lf, V), lse_m = logsumexp_row(lm, V);
  IgSums s;
  const int64_t done = cpu_avx512() ? ig_sums_512(lf, lm, V, lse_f, lse_m, &s) : 0;
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

}  // namespace kpig
