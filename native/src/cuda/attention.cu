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

}  // namespace

cudaError_t attention_forward(const float* qkv, int64_t ld, const int32_t* start, int64_t T, int64_t H, int64_t K, int64_t D, float scale,
                              float* out, int64_t ldo, float* lse, cudaStream_t stream) {
  if (D > 32 * kMaxPerLane || H % K != 0) return cudaErrorInvalidValue;
  if (T <= 0) return cudaSuccess;
  const dim3 grid(unsigned((T + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned(H));
  attention_forward_kernel<<<grid, kWarpsPerBlock * 32, 0, stream>>>(qkv, ld, start, T, H, K, D, scale, out, ldo, lse);
  return cudaGetLastError();
}

}  // namespace kpig::cuda
