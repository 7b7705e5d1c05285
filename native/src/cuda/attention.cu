#include "attention.h"

#include <cmath>

namespace kpig::cuda {

namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxPerLane = 8;  // D ≤ 32 · 8

__global__ void attention_forward_kernel(const float* __restrict__ qkv, int64_t ld, const int32_t* __restrict__ start, int64_t T,
                                         int64_t H, int64_t K, int64_t D, float scale, float* __restrict__ out, int64_t ldo,
                                         float* __restrict__ lse) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t h = blockIdx.y;
  if (r >= T) return;
  const int64_t g = h / (H / K);
  const float* q = qkv + r * ld + h * D;
  const int64_t koff = H * D + g * D, voff = H * D + K * D + g * D;
  float qv[kMaxPerLane], acc[kMaxPerLane];
  for (int i = 0; i < kMaxPerLane; i++) {
    const int64_t d = lane + 32 * i;
    qv[i] = d < D ? q[d] * scale : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = start[r]; j <= r; j++) {
    const float* kr = qkv + j * ld + koff;
    float s = 0.f;
    for (int i = 0; i < kMaxPerLane; i++) {
      const int64_t d = lane + 32 * i;
      if (d < D) s += qv[i] * kr[d];
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), p = expf(s - m_new);
    l = l * corr + p;
    const float* vr = qkv + j * ld + voff;
    for (int i = 0; i < kMaxPerLane; i++) {
      const int64_t d = lane + 32 * i;
      if (d < D) acc[i] = acc[i] * corr + p * vr[d];
    }
    m = m_new;
  }
  for (int i = 0; i < kMaxPerLane; i++) {
    const int64_t d = lane + 32 * i;
    if (d < D) out[r * ldo + h * D + d] = acc[i] / l;
  }
  if (lane == 0) lse[r * H + h] = m + logf(l);
}

// delta(T, H): Σ_d d_out·out per row and head (softmax backward's row term).
__global__ void attention_delta_kernel(const float* __restrict__ out, int64_t ldo, const float* __restrict__ d_out, int64_t lddo, int64_t T,
                                       int64_t H, int64_t D, float* __restrict__ delta) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5), h = blockIdx.y;
  if (r >= T) return;
  float s = 0.f;
  for (int64_t d = lane; d < D; d += 32) s += out[r * ldo + h * D + d] * d_out[r * lddo + h * D + d];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) delta[r * H + h] = s;
}

// The score and its softmax-backward term of query row i, head h, against key row j: p = P_ij and
// ds = P_ij·(do_i·v_j − delta_i). Every lane gets both.
__device__ void score_terms(const float* qkv, int64_t ld, int64_t i, int64_t j, int64_t h, int64_t g, int64_t H, int64_t K, int64_t D,
                            float scale, const float* lse, const float* d_out, int64_t lddo, const float* delta, float* p, float* ds) {
  const int lane = threadIdx.x & 31;
  const float* q = qkv + i * ld + h * D;
  const float* k = qkv + j * ld + H * D + g * D;
  const float* v = qkv + j * ld + H * D + K * D + g * D;
  const float* dout = d_out + i * lddo + h * D;
  float s = 0.f, dp = 0.f;
  for (int64_t d = lane; d < D; d += 32) s += q[d] * k[d], dp += dout[d] * v[d];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o), dp += __shfl_xor_sync(0xffffffffu, dp, o);
  *p = expf(s * scale - lse[i * H + h]);
  *ds = *p * (dp - delta[i * H + h]);
}

__global__ void attention_dq_kernel(const float* __restrict__ qkv, int64_t ld, const int32_t* __restrict__ start, int64_t T, int64_t H,
                                    int64_t K, int64_t D, float scale, const float* __restrict__ lse, const float* __restrict__ d_out,
                                    int64_t lddo, const float* __restrict__ delta, float* __restrict__ dqkv) {
  const int lane = threadIdx.x & 31;
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5), h = blockIdx.y;
  if (i >= T) return;
  const int64_t g = h / (H / K);
  float acc[kMaxPerLane];
  for (int t = 0; t < kMaxPerLane; t++) acc[t] = 0.f;
  for (int64_t j = start[i]; j <= i; j++) {
    float p, ds;
    score_terms(qkv, ld, i, j, h, g, H, K, D, scale, lse, d_out, lddo, delta, &p, &ds);
    const float* k = qkv + j * ld + H * D + g * D;
    for (int t = 0; t < kMaxPerLane; t++) {
      const int64_t d = lane + 32 * t;
      if (d < D) acc[t] += scale * ds * k[d];
    }
  }
  for (int t = 0; t < kMaxPerLane; t++) {
    const int64_t d = lane + 32 * t;
    if (d < D) dqkv[i * ld + h * D + d] = acc[t];
  }
}

__global__ void attention_dkv_kernel(const float* __restrict__ qkv, int64_t ld, const int32_t* __restrict__ end, int64_t T, int64_t H,
                                     int64_t K, int64_t D, float scale, const float* __restrict__ lse, const float* __restrict__ d_out,
                                     int64_t lddo, const float* __restrict__ delta, float* __restrict__ dqkv) {
  const int lane = threadIdx.x & 31;
  const int64_t j = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5), g = blockIdx.y;
  if (j >= T) return;
  float dk[kMaxPerLane], dv[kMaxPerLane];
  for (int t = 0; t < kMaxPerLane; t++) dk[t] = dv[t] = 0.f;
  for (int64_t h = g * (H / K); h < (g + 1) * (H / K); h++)
    for (int64_t i = j; i < end[j]; i++) {
      float p, ds;
      score_terms(qkv, ld, i, j, h, g, H, K, D, scale, lse, d_out, lddo, delta, &p, &ds);
      const float* q = qkv + i * ld + h * D;
      const float* dout = d_out + i * lddo + h * D;
      for (int t = 0; t < kMaxPerLane; t++) {
        const int64_t d = lane + 32 * t;
        if (d < D) dk[t] += scale * ds * q[d], dv[t] += p * dout[d];
      }
    }
  for (int t = 0; t < kMaxPerLane; t++) {
    const int64_t d = lane + 32 * t;
    if (d < D) {
      dqkv[j * ld + H * D + g * D + d] = dk[t];
      dqkv[j * ld + H * D + K * D + g * D + d] = dv[t];
    }
  }
}

}  // namespace

cudaError_t attention_forward(const float* qkv, int64_t ld, const int32_t* start, int64_t T, int64_t H, int64_t K, int64_t D, float scale,
                              float* out, int64_t ldo, float* lse, cudaStream_t stream) {
  if (D > 32 * kMaxPerLane || H % K != 0) return cudaErrorInvalidValue;
  if (T <= 0) return cudaSuccess;
  const dim3 grid(unsigned((T + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned(H));
  attention_forward_kernel<<<grid, kWarpsPerBlock * 32, 0, stream>>>(qkv, ld, start, T, H, K, D, scale, out, ldo, lse);
  return cudaGetLastError();
}

cudaError_t attention_backward(const float* qkv, int64_t ld, const int32_t* start, const int32_t* end, int64_t T, int64_t H, int64_t K,
                               int64_t D, float scale, const float* out, int64_t ldo, const float* lse, const float* d_out, int64_t lddo,
                               float* dqkv, cudaStream_t stream) {
  if (D > 32 * kMaxPerLane || H % K != 0) return cudaErrorInvalidValue;
  if (T <= 0) return cudaSuccess;
  float* delta = nullptr;
  if (cudaError_t e = cudaMallocAsync(&delta, size_t(T * H) * sizeof(float), stream); e != cudaSuccess) return e;
  const unsigned blocks = unsigned((T + kWarpsPerBlock - 1) / kWarpsPerBlock);
  attention_delta_kernel<<<dim3(blocks, unsigned(H)), kWarpsPerBlock * 32, 0, stream>>>(out, ldo, d_out, lddo, T, H, D, delta);
  attention_dq_kernel<<<dim3(blocks, unsigned(H)), kWarpsPerBlock * 32, 0, stream>>>(qkv, ld, start, T, H, K, D, scale, lse, d_out, lddo, delta, dqkv);
  attention_dkv_kernel<<<dim3(blocks, unsigned(K)), kWarpsPerBlock * 32, 0, stream>>>(qkv, ld, end, T, H, K, D, scale, lse, d_out, lddo, delta, dqkv);
  const cudaError_t launched = cudaGetLastError();
  const cudaError_t freed = cudaFreeAsync(delta, stream);
  return launched != cudaSuccess ? launched : freed;
}

}  // namespace kpig::cuda
