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

__global__ void rmsnorm_backward_kernel(const float* x, const float* w, bool plus_one, const float* rstd, const float* dy, int64_t C, float* dx) {
  const float* xr = x + blockIdx.x * C;
  const float* g = dy + blockIdx.x * C;
  const float r = rstd[blockIdx.x];
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += g[i] * (plus_one ? 1.f + w[i] : w[i]) * xr[i];
  const float gx = block_sum(s);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
    dx[blockIdx.x * C + i] = r * g[i] * (plus_one ? 1.f + w[i] : w[i]) - xr[i] * r * r * r * gx / float(C);
}

__global__ void layernorm_backward_kernel(const float* x, const float* w, const float* mean, const float* rstd, const float* dy, int64_t C,
                                          float* dx) {
  const float* xr = x + blockIdx.x * C;
  const float* g = dy + blockIdx.x * C;
  const float mu = mean[blockIdx.x], r = rstd[blockIdx.x];
  float s1 = 0.f, s2 = 0.f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    const float gw = g[i] * w[i];
    s1 += gw;
    s2 += gw * (xr[i] - mu) * r;
  }
  const float mg = block_sum(s1) / float(C), mgx = block_sum(s2) / float(C);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) dx[blockIdx.x * C + i] = r * (g[i] * w[i] - mg - (xr[i] - mu) * r * mgx);
}

// Per column i (one thread each): Σ over the rows, in row order, of dy·x̂ (and of dy for db).
__global__ void norm_weight_grad_kernel(const float* x, const float* mean, const float* rstd, const float* dy, int64_t R, int64_t C, float* dw,
                                        float* db) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= C) return;
  float sw = 0.f, sb = 0.f;
  for (int64_t r = 0; r < R; r++) {
    const float xh = (x[r * C + i] - (mean ? mean[r] : 0.f)) * rstd[r];
    sw += dy[r * C + i] * xh;
    sb += dy[r * C + i];
  }
  if (dw) dw[i] += sw;
  if (db) db[i] += sb;
}

__device__ float gelu_tanh_grad(float x) {
  const float k = 0.7978845608028654f, u = k * (x + 0.044715f * x * x * x), t = tanhf(u);
  return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * k * (1.f + 3.f * 0.044715f * x * x);
}

__global__ void mlp_backward_kernel(int a, const float* ff, const float* d_act, int64_t F, float* d_ff) {
  const int64_t W = a == 0 ? F : 2 * F;
  const float* row = ff + blockIdx.x * W;
  const float* da = d_act + blockIdx.x * F;
  float* out = d_ff + blockIdx.x * W;
  for (int64_t i = threadIdx.x; i < F; i += blockDim.x) {
    const float g = row[i];
    if (a == 0) {
      out[i] = da[i] * gelu_tanh_grad(g);
    } else if (a == 1) {
      const float sg = 1.f / (1.f + expf(-g)), up = row[F + i];
      out[i] = da[i] * up * sg * (1.f + g * (1.f - sg));
      out[F + i] = da[i] * g * sg;
    } else {
      const float up = row[F + i];
      out[i] = da[i] * up * gelu_tanh_grad(g);
      out[F + i] = da[i] * gelu_tanh(g);
    }
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

cudaError_t rmsnorm_backward(const float* x, const float* w, bool plus_one, const float* rstd, const float* dy, int64_t R, int64_t C, float* dx,
                             float* dw, cudaStream_t stream) {
  if (R <= 0) return cudaSuccess;
  rmsnorm_backward_kernel<<<unsigned(R), kThreads, 0, stream>>>(x, w, plus_one, rstd, dy, C, dx);
  if (dw) norm_weight_grad_kernel<<<unsigned((C + kThreads - 1) / kThreads), kThreads, 0, stream>>>(x, nullptr, rstd, dy, R, C, dw, nullptr);
  return cudaGetLastError();
}

cudaError_t layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy, int64_t R, int64_t C,
                               float* dx, float* dw, float* db, cudaStream_t stream) {
  if (R <= 0) return cudaSuccess;
  layernorm_backward_kernel<<<unsigned(R), kThreads, 0, stream>>>(x, w, mean, rstd, dy, C, dx);
  if (dw || db) norm_weight_grad_kernel<<<unsigned((C + kThreads - 1) / kThreads), kThreads, 0, stream>>>(x, mean, rstd, dy, R, C, dw, db);
  return cudaGetLastError();
}

cudaError_t mlp_activation_backward(Act a, const float* ff, const float* d_act, int64_t R, int64_t F, float* d_ff, cudaStream_t stream) {
  if (R > 0) mlp_backward_kernel<<<unsigned(R), kThreads, 0, stream>>>(int(a), ff, d_act, F, d_ff);
  return cudaGetLastError();
}

}  // namespace kpig::cuda
