#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemm.h"
#include "ops.h"

namespace kpig {

namespace {
constexpr int64_t QB = 64;  // queries per block
}

int64_t attention_scratch_size(int64_t n) { return 2 * QB * n; }

void attention_head_forward(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldk, int64_t n,
                            int64_t q_offset, int64_t D, float scale, float* out, int64_t ldo, float* lse, int64_t lse_stride,
                            float* scratch) {
  for (int64_t q0 = 0; q0 < n; q0 += QB) {
    const int64_t q1 = std::min(n, q0 + QB), nq = q1 - q0, nk = q_offset + q1;
    float* S = scratch;  // (nq, nk)
    gemm(nullptr, nq, nk, D, q + q0 * ldq, ldq, 1, k, 1, ldk, S, nk, false);
    float inv[QB];  // the softmax's normalisation, applied to the output rows
    for (int64_t i = 0; i < nq; i++) {
      float mx;
      const float sum = softmax_unnormalised_row(S + i * nk, q_offset + q0 + i + 1, nk, scale, &mx);
      inv[i] = 1.f / sum;
      lse[(q0 + i) * lse_stride] = mx + std::log(sum);
    }
    gemm(nullptr, nq, D, nk, S, nk, 1, v, ldk, 1, out + q0 * ldo, ldo, false);
    for (int64_t i = 0; i < nq; i++)
      for (int64_t d = 0; d < D; d++) out[(q0 + i) * ldo + d] *= inv[i];
  }
}

void attention_head_backward(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                             const float* o, int64_t ldo, const float* d_out, int64_t lddo, const float* lse,
                             int64_t lse_stride, float* dq, float* dk, float* dv, float* scratch) {
  for (int64_t q0 = 0; q0 < n; q0 += QB) {
    const int64_t q1 = std::min(n, q0 + QB), nq = q1 - q0, nk = q1;
    float* P = scratch;            // (nq, nk)
    float* dS = scratch + QB * n;  // (nq, nk): dP, then dS
    gemm(nullptr, nq, nk, D, q + q0 * ld, ld, 1, k, 1, ld, P, nk, false);
    gemm(nullptr, nq, nk, D, d_out + q0 * lddo, lddo, 1, v, 1, ld, dS, nk, false);
    for (int64_t i = 0; i < nq; i++) {
      float* p = P + i * nk;
      float* ds = dS + i * nk;
      const int64_t valid = q0 + i + 1;
      for (int64_t j = 0; j < valid; j++) p[j] *= scale;
      exp_shift_inplace(p, valid, lse[(q0 + i) * lse_stride], 1.f);
      std::memset(p + valid, 0, sizeof(float) * size_t(nk - valid));
      // Σ_j P_j dP_j = do·o for this query
      const float* oi = o + (q0 + i) * ldo;
      const float* doi = d_out + (q0 + i) * lddo;
      float di = 0.f;
      for (int64_t d = 0; d < D; d++) di += oi[d] * doi[d];
      for (int64_t j = 0; j < nk; j++) ds[j] = scale * p[j] * (ds[j] - di);
    }
    gemm(nullptr, nq, D, nk, dS, nk, 1, k, ld, 1, dq + q0 * ld, ld, false);
    gemm(nullptr, nk, D, nq, dS, 1, nk, q + q0 * ld, ld, 1, dk, ld, true);
    gemm(nullptr, nk, D, nq, P, 1, nk, d_out + q0 * lddo, lddo, 1, dv, ld, true);
  }
}

}  // namespace kpig
