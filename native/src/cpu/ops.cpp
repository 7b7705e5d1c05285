#include "ops.h"

#include <cmath>
#include <cstring>

#define KPIG_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace kpig {

KPIG_CLONES void layernorm_row(const float* x, const float* w, const float* b, float eps, int64_t C, float* out) {
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
}

KPIG_CLONES void rmsnorm_row(const float* x, const float* w, float eps, int64_t C, float* out) {
  float ss = 0.f;
  for (int64_t i = 0; i < C; i++) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / float(C) + eps);
  for (int64_t i = 0; i < C; i++) out[i] = x[i] * inv * w[i];
}

KPIG_CLONES void gelu_new_inplace(float* x, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2/π)
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    x[i] = 0.5f * v * (1.f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

KPIG_CLONES void swiglu_row(const float* gate_up, int64_t F, float* out) {
  const float* up = gate_up + F;
  for (int64_t i = 0; i < F; i++) {
    float g = gate_up[i];
    out[i] = g / (1.f + std::exp(-g)) * up[i];
  }
}

KPIG_CLONES void rope_row(float* x, int64_t n_heads, int64_t D, const float* cs) {
  const int64_t half = D / 2;
  const float* c = cs;
  const float* s = cs + half;
  for (int64_t h = 0; h < n_heads; h++) {
    float* a = x + h * D;
    float* b = a + half;
    for (int64_t i = 0; i < half; i++) {
      float x1 = a[i], x2 = b[i];
      a[i] = x1 * c[i] - x2 * s[i];
      b[i] = x2 * c[i] + x1 * s[i];
    }
  }
}

KPIG_CLONES void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

KPIG_CLONES void attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D,
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
}

KPIG_CLONES float logsumexp_row(const float* x, int64_t V) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
  float sum = 0.f;
  for (int64_t i = 0; i < V; i++) sum += std::exp(x[i] - mx);
  return mx + std::log(sum);
}

int64_t argmax_row(const float* x, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace kpig
