// The CUDA GEMM of the backend: bf16 operands on the tensor cores (WMMA 16×16×16), float32
// accumulation, float32 in and out (operands are rounded to bfloat16 as they are staged, as the
// CPU backend's bf16 mode rounds them). Device pointers; row-major with leading dimensions.
// Legend: M rows of A and C, N columns of C, K the reduced dimension.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace kpig::cuda {

// C(M,N) (=|+=) op(A)·op(B) [+ bias(N)]. op(A) = A (M,K) row-major (lda), or Aᵀ with A (K,M)
// row-major when a_transposed; op(B) = Bᵀ with B (N,K) row-major (ldb; the layout of nn.Linear
// weights: y = x·Wᵀ) when b_transposed, else B (K,N) row-major.
cudaError_t gemm_bf16(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, bool b_transposed,
                      float* C, int64_t ldc, bool accumulate, const float* bias, cudaStream_t stream, bool a_transposed = false);

}  // namespace kpig::cuda
