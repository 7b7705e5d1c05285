// Matmuls on Intel AMX (TDPBF16PS), the fast path of gemm() where the CPU has it:
// - bf16 mode (the pool's bf16 setting): both operands rounded to bf16, float32 accumulation;
// - float32: each operand split exactly into three bf16 pieces (x = hi + mid + lo) and the six
//   products hi·hi, hi·mid, mid·hi, hi·lo, mid·mid, lo·hi accumulated in float32. The terms left out
//   are below 2^-26 of |a·b|, under float32's own rounding of a product (2^-24), so the result has
//   float32 accuracy.
#pragma once
#include <cstdint>

namespace kpig {

class ThreadPool;

// True when the CPU has AMX-BF16 and the kernel granted this process the tile state.
// KPIG_BF16_ISA=avx512_bf16 (or any value other than "amx") turns the AMX path off.
bool amx_available();

// True when float32 matmuls run on AMX as above: the CPU has AMX and KPIG_ISA is unset or "amx"
// (KPIG_ISA=avx512|avx2|scalar picks the FMA kernels).
bool amx_fp32();

// Same contract as gemm(), in the pool's mode (bf16, or float32 from three pieces). With bias and not
// accumulate, C starts from the bias row instead of zero.
void gemm_amx(ThreadPool* pool, int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs,
              const float* B, int64_t b_rs, int64_t b_cs, float* C, int64_t ldc, bool accumulate, const float* bias = nullptr);

// A B operand (a weight) packed once, for products that reuse it many times (the LM head over
// chunks of rows), in the pool's mode at packing time: into the AMX layout where AMX serves that
// mode, else (float32 mode) into the FMA kernels' panels. Empty in bf16 mode without AMX; callers
// then fall back to gemm(). Use it in the mode it was packed in. Packing again into the same shape
// reuses the memory.
class PackedB {
 public:
  PackedB() = default;
  ~PackedB();
  PackedB(const PackedB&) = delete;
  PackedB& operator=(const PackedB&) = delete;
  // B(k, j) = B[k*b_rs + j*b_cs], K × N.
  void pack(ThreadPool* pool, int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs);
  bool empty() const { return data_ == nullptr && fma_ == nullptr; }

 private:
  friend void gemm_packed(ThreadPool*, int64_t, const float*, int64_t, int64_t, const PackedB&, float*, int64_t, bool);
  int64_t K_ = 0, N_ = 0, plane_ = 0;  // plane_: elements between pieces
  int parts_ = 1;
  uint16_t* data_ = nullptr;
  float* fma_ = nullptr;  // the FMA panels (fma_n_ floats) when AMX is not used
  int64_t fma_n_ = 0;
};

// C(M, N) (=|+=) A(M, K) · B with B packed (not empty).
void gemm_packed(ThreadPool* pool, int64_t M, const float* A, int64_t a_rs, int64_t a_cs, const PackedB& B, float* C, int64_t ldc,
                 bool accumulate);

}  // namespace kpig
