#include "gemm.h"

#include <cuda_bf16.h>
#include <mma.h>

namespace kpig::cuda {

namespace {

using namespace nvcuda;

constexpr int BM = 64, BN = 64, BK = 32, PAD = 8;  // block tile; K step; shared-memory row padding
constexpr int kWarps = 4;                           // 2 × 2 warps, each a 32 × 32 tile of 2 × 2 fragments

// One 64 × 64 tile of C per block. A and op(B) are staged through shared memory as bf16, K by 32.
__global__ void gemm_bf16_kernel(int64_t M, int64_t N, int64_t K, const float* __restrict__ A, int64_t lda, const float* __restrict__ B,
                                 int64_t ldb, bool bt, float* __restrict__ C, int64_t ldc, bool accumulate, const float* __restrict__ bias,
                                 bool at) {
  // WMMA wants 32-byte aligned fragment pointers and leading dimensions of 16 bytes.
  __shared__ __align__(32) __nv_bfloat16 As[BM][BK + PAD];  // As[m][k]
  __shared__ __align__(32) __nv_bfloat16 Bs[BN][BK + PAD];  // Bs[n][k]: op(B) column n, read as a column-major K × N fragment
  __shared__ __align__(32) float Cs[BM][BN + 4];
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);
  for (int64_t k0 = 0; k0 < K; k0 += BK) {
    for (int e = threadIdx.x; e < BM * BK; e += blockDim.x) {
      const int r = e / BK, k = e % BK;
      const int64_t gm = m0 + r, gk = k0 + k;
      As[r][k] = __float2bfloat16(gm < M && gk < K ? (at ? A[gk * lda + gm] : A[gm * lda + gk]) : 0.f);
    }
    for (int e = threadIdx.x; e < BN * BK; e += blockDim.x) {
      const int n = e / BK, k = e % BK;
      const int64_t gn = n0 + n, gk = k0 + k;
      float v = 0.f;
      if (gn < N && gk < K) v = bt ? B[gn * ldb + gk] : B[gk * ldb + gn];
      Bs[n][k] = __float2bfloat16(v);
    }
    __syncthreads();
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb[2];
      for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], &As[wm * 32 + i * 16][kk], BK + PAD);
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], &Bs[wn * 32 + j * 16][kk], BK + PAD);
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], BN + 4, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < BM * BN; e += blockDim.x) {
    const int r = e / BN, c = e % BN;
    const int64_t gm = m0 + r, gn = n0 + c;
    if (gm >= M || gn >= N) continue;
    float v = Cs[r][c] + (bias ? bias[gn] : 0.f);
    float* out = C + gm * ldc + gn;
    *out = accumulate ? *out + v : v;
  }
}

}  // namespace

cudaError_t gemm_bf16(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, bool b_transposed,
                      float* C, int64_t ldc, bool accumulate, const float* bias, cudaStream_t stream, bool a_transposed) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  const dim3 grid(unsigned((N + BN - 1) / BN), unsigned((M + BM - 1) / BM));
  gemm_bf16_kernel<<<grid, kWarps * 32, 0, stream>>>(M, N, K, A, lda, B, ldb, b_transposed, C, ldc, accumulate, bias, a_transposed);
  return cudaGetLastError();
}

}  // namespace kpig::cuda
