#include "ce.h"

#include <algorithm>

#include "gemm.h"
#include "reduce.cuh"

namespace kpig::cuda {

namespace {

__global__ void gather_rows_kernel(const float* hidden, const int64_t* rows, int64_t first, int64_t C, float* out) {
  const float* src = hidden + rows[first + blockIdx.x] * C;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) out[blockIdx.x * C + i] = src[i];
}

__global__ void scatter_rows_kernel(const float* in, const int64_t* rows, int64_t first, int64_t C, float* dh) {
  float* dst = dh + rows[first + blockIdx.x] * C;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) dst[i] = in[blockIdx.x * C + i];
}

// One row: nll = lse − logit[y]; the logits become w·softmax − w·onehot(y) (the gradient of w·nll).
__global__ void ce_rows_kernel(float* logits, int64_t V, const int32_t* targets, const float* weights, int64_t first, double* nll) {
  float* lg = logits + blockIdx.x * V;
  const int32_t y = targets[first + blockIdx.x];
  const float w = weights[first + blockIdx.x];
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, lg[i]);
  mx = block_max(mx);
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) s += expf(lg[i] - mx);
  const float lse = mx + logf(block_sum(s));
  const float target_logit = lg[y];
  __syncthreads();  // every thread has read lg[y] before it is overwritten
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) lg[i] = w * expf(lg[i] - lse) - (i == y ? w : 0.f);
  if (threadIdx.x == 0) nll[first + blockIdx.x] = double(lse) - double(target_logit);
}

}  // namespace

cudaError_t fused_linear_ce(const float* hidden, int64_t C, const float* W, int64_t V, const int64_t* rows, const int32_t* targets,
                            const float* weights, int64_t n, int64_t chunk, float* hbuf, float* logits, float* dhbuf, float* dh, float* gW,
                            double* nll, cudaStream_t stream) {
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t count = std::min(chunk, n - first);
    gather_rows_kernel<<<unsigned(count), 256, 0, stream>>>(hidden, rows, first, C, hbuf);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    // logits(count, V) = hbuf·Wᵀ
    if (cudaError_t e = gemm_bf16(count, V, C, hbuf, C, W, C, true, logits, V, false, nullptr, stream); e != cudaSuccess) return e;
    ce_rows_kernel<<<unsigned(count), 256, 0, stream>>>(logits, V, targets, weights, first, nll);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    // dhbuf(count, C) = dlogits·W ; gW(V, C) += dlogitsᵀ·hbuf
    if (cudaError_t e = gemm_bf16(count, C, V, logits, V, W, C, false, dhbuf, C, false, nullptr, stream); e != cudaSuccess) return e;
    if (gW)
      if (cudaError_t e = gemm_bf16(V, C, count, logits, V, hbuf, C, false, gW, C, true, nullptr, stream, true); e != cudaSuccess) return e;
    scatter_rows_kernel<<<unsigned(count), 256, 0, stream>>>(dhbuf, rows, first, C, dh);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace kpig::cuda
