// Single-precision matrix multiply for the CPU backend.
//   C(M,N) = A(M,K) · B(K,N)   [+ C when accumulate]
// Any operand layout is given by strides: A(i,k) = A[i*a_rs + k*a_cs], B(k,j) = B[k*b_rs + j*b_cs],
// so transposed operands need no copy. The driver packs blocks of A and B into micro-panels
// (zero-padded) and runs an ISA-specific register-tiled kernel chosen once at run time. Where the
// CPU has AMX, products of 384 rows and more run on its tiles at float32 accuracy (gemm_amx.h:
// each operand split into three bf16 pieces); fewer rows, or KPIG_ISA=avx512|avx2|scalar, use the
// FMA kernels. Within a path, each C element is summed in the same order whatever M is, so a row's
// result does not depend on what else is in the batch (packed sequences, batched decoding); across
// the 384-row threshold it may differ in the last bits.
#pragma once
#include <cstdint>

namespace kpig {

class ThreadPool;

//
// With the pool's bf16 setting on (ThreadPool::matmul_bf16), both operands are rounded to bfloat16
// (round to nearest even) and the products accumulate in float32: AMX tiles (TDPBF16PS) where the CPU
// has them, else AVX512_BF16 `vdpbf16ps`, else the same rounding followed by the float32 kernel.
// With bias (N values), every row also gets the bias: C = A·B + bias, or C += A·B + bias.
void gemm(ThreadPool* pool, int64_t M, int64_t N, int64_t K,
          const float* A, int64_t a_rs, int64_t a_cs,
          const float* B, int64_t b_rs, int64_t b_cs,
          float* C, int64_t ldc, bool accumulate, const float* bias = nullptr);

// float32 → bfloat16 bits, round to nearest even (NaN stays NaN).
uint16_t f32_to_bf16(float x);

// "amx", "avx512_bf16" or "emulated": how bf16 matmuls run on this CPU. KPIG_BF16_ISA=avx512_bf16 or
// emulated forces a lower path (KPIG_ISA=avx2|scalar implies emulated).
const char* gemm_bf16_isa();

// B packed once for the FMA kernels (float32 mode), for products that reuse it (PackedB in
// gemm_amx.h holds it): fma_packed_size floats, in k blocks of the driver's split, NR-column panels.
int64_t fma_packed_size(int64_t K, int64_t N);
void fma_pack_b(ThreadPool* pool, int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs, float* out);
// The FMA driver behind gemm(); with `prepacked` (fma_pack_b of this B, float32 mode) it reads B's
// panels from there, and each C element is summed exactly as gemm() sums it.
void gemm_fma(ThreadPool* pool, int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs,
              const float* B, int64_t b_rs, int64_t b_cs, const float* prepacked, float* C, int64_t ldc, bool accumulate,
              const float* bias = nullptr);

// Name of the float32 path in use for large products ("amx", "avx512", "avx2" or "scalar");
// KPIG_ISA=avx512|avx2|scalar forces a lower one.
const char* gemm_isa();

}  // namespace kpig
