#include "rows.h"

#include "reduce.cuh"

#include <algorithm>
#include <cmath>

namespace kpig::cuda {

namespace {

constexpr int kThreads = 256;

__device__ float gelu_tanh(float x) { return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }

__global__ void rmsnorm_kernel(const float* x, const float* w, float eps, bool plus_one, int64_t C, float* out, float* rstd) {
  const float* xr = x + blockIdx.x * C;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
  const float r = rsqrtf(block_sum(ss) / float(C) + eps);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) out[blockIdx.x * C + i] = xr[i] * r * (plus_one ? 1.f + w[i] : w[i]);
  if (threadIdx.x == 0 && rstd) rstd[blockIdx.x] = r;
}

__global__ void layernorm_kernel(const float* x, const float* w, const float* b, float eps, int64_t C, float* out, float* mean,
                                 float* rstd) {
  const float* xr = x + blockIdx.x * C;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
  const float mu = block_sum(s) / float(C);
  float v = 0.f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) v += (xr[i] - mu) * (xr[i] - mu);
  const float r = rsqrtf(block_sum(v) / float(C) + eps);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) out[blockIdx.x * C + i] = (xr[i] - mu) * r * w[i] + b[i];
  if (threadIdx.x == 0) {
    if (mean) mean[blockIdx.x] = mu;
    if (rstd) rstd[blockIdx.x] = r;
  }
}

__global__ void mlp_kernel(int a, const float* ff, int64_t F, float* act) {
  const int64_t W = a == 0 ? F : 2 * F;
  const float* row = ff + blockIdx.x * W;
  for (int64_t i = threadIdx.x; i < F; i += blockDim.x) {
    const float g = row[i];
    float y;
    if (a == 0) y = gelu_tanh(g);
    else if (a == 1) y = g / (1.f + expf(-g)) * row[F + i];
    else y = gelu_tanh(g) * row[F + i];
    act[blockIdx.x * F + i] = y;
  }
}

__global__ void rope_kernel(float* x, int64_t stride, int64_t n_heads, int64_t D, const float* cs, bool inverse) {
  float* row = x + blockIdx.x * stride;
  const float* c = cs + blockIdx.x * D;
  const int64_t half = D / 2;
  for (int64_t k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
    const int64_t h = k / half, i = k % half;
    const float co = c[i], si = inverse ? -c[half + i] : c[half + i];
    float* hp = row + h * D;
    const float a = hp[i], bb = hp[half + i];
    hp[i] = a * co - bb * si;
    hp[half + i] = bb * co + a * si;
  }
}

__global__ void adamw_kernel(float* p, float* g, float* m, float* v, int64_t n, float clip, float decay, float b1, float b2, float step_size,
                             float bc2_sqrt, float eps) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] * clip;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    g[i] = 0.f;
  }
}

__global__ void ig_kernel(const float* lf, const float* lm, int64_t stride, const int32_t* y, int64_t V, double* out) {
  const float* a = lf + blockIdx.x * stride;
  const float* b = lm + blockIdx.x * stride;
  float ma = -INFINITY, mb = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) ma = fmaxf(ma, a[i]), mb = fmaxf(mb, b[i]);
  ma = block_max(ma);
  mb = block_max(mb);
  float sa = 0.f, sb = 0.f;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) sa += expf(a[i] - ma), sb += expf(b[i] - mb);
  const float lse_a = ma + logf(block_sum(sa)), lse_b = mb + logf(block_sum(sb));
  double kl = 0, js = 0, hf = 0, hm = 0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float la = a[i] - lse_a, lb = b[i] - lse_b, p = expf(la), q = expf(lb);
    // log of the mixture ½(p + q) = max(la, lb) + log(1 + e^{−|la − lb|}) − ln 2
    const float lmix = fmaxf(la, lb) + log1pf(expf(-fabsf(la - lb))) - 0.6931471805599453f;
    kl += double(p) * (la - lb);
    hf -= double(p) * la;
    hm -= double(q) * lb;
    js += 0.5 * (double(p) * (la - lmix) + double(q) * (lb - lmix));
  }
  kl = block_sum_d(kl);
  js = block_sum_d(js);
  hf = block_sum_d(hf);
  hm = block_sum_d(hm);
  if (threadIdx.x == 0) {
    double* o = out + blockIdx.x * 6;
    const int32_t t = y[blockIdx.x];
    o[0] = double(lse_a) - double(a[t]);
    o[1] = double(lse_b) - double(b[t]);
    o[2] = kl, o[3] = js, o[4] = hf, o[5] = hm;
  }
}

}  // namespace

cudaError_t rmsnorm(const float* x, const float* w, float eps, bool plus_one, int64_t R, int64_t C, float* out, float* rstd,
                    cudaStream_t stream) {
  if (R > 0) rmsnorm_kernel<<<unsigned(R), kThreads, 0, stream>>>(x, w, eps, plus_one, C, out, rstd);
  return cudaGetLastError();
}

cudaError_t layernorm(const float* x, const float* w, const float* b, float eps, int64_t R, int64_t C, float* out, float* mean,
                      float* rstd, cudaStream_t stream) {
  if (R > 0) layernorm_kernel<<<unsigned(R), kThreads, 0, stream>>>(x, w, b, eps, C, out, mean, rstd);
  return cudaGetLastError();
}

cudaError_t mlp_activation(Act a, const float* ff, int64_t R, int64_t F, float* act, cudaStream_t stream) {
  if (R > 0) mlp_kernel<<<unsigned(R), kThreads, 0, stream>>>(int(a), ff, F, act);
  return cudaGetLastError();
}

cudaError_t rope(float* x, int64_t R, int64_t row_stride, int64_t n_heads, int64_t D, const float* cs, bool inverse, cudaStream_t stream) {
  if (R > 0) rope_kernel<<<unsigned(R), 128, 0, stream>>>(x, row_stride, n_heads, D, cs, inverse);
  return cudaGetLastError();
}

cudaError_t adamw(float* p, float* g, float* m, float* v, int64_t n, float clip, float decay, float b1, float b2, float step_size,
                  float bc2_sqrt, float eps, cudaStream_t stream) {
  if (n > 0) {
    const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
    adamw_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(p, g, m, v, n, clip, decay, b1, b2, step_size, bc2_sqrt, eps);
  }
  return cudaGetLastError();
}

cudaError_t ig_token_stats(const float* lf, const float* lm, int64_t stride, const int32_t* y, int64_t R, int64_t V, double* out,
                           cudaStream_t stream) {
  if (R > 0) ig_kernel<<<unsigned(R), kThreads, 0, stream>>>(lf, lm, stride, y, V, out);
  return cudaGetLastError();
}

}  // namespace kpig::cuda
