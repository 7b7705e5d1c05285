// Block-wide reductions of the CUDA kernels (every thread of the block gets the result). The
// block size must be a multiple of 32, at most 1024.
#pragma once
#include <cmath>

namespace kpig::cuda {

// op over the block's values of v; identity is op's neutral element.
template <typename T, typename Op>
__device__ inline T block_reduce(T v, Op op, T identity) {
  __shared__ T part[32];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // a previous reduction's readers are done with part
  if (lane == 0) part[warp] = v;
  __syncthreads();
  T t = lane < int(blockDim.x + 31) / 32 ? part[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) t = op(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

struct Plus {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__device__ inline float block_sum(float v) { return block_reduce(v, Plus{}, 0.f); }
__device__ inline double block_sum_d(double v) { return block_reduce(v, Plus{}, 0.0); }
__device__ inline float block_max(float v) { return block_reduce(v, Max{}, -INFINITY); }

}  // namespace kpig::cuda
