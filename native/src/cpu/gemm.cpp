#include "gemm.h"

#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../core/threadpool.h"
#include "../core/memory.h"
#include "gemm_amx.h"
#include "simd.h"

namespace kpig {

namespace {

// A kernel multiplies an MR-row panel of A by an NR-column panel of B over kc steps:
//   c(MR,NR) (=|+=) Σ_k a[k*MR + r] · b[k*NR + j]  (+ bias[j] when bias is given)
using KernelFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc, const float* bias);

struct Isa {
  const char* name;
  int mr, nr;
  KernelFn kernel;
};

template <int MR, int NR>
void kernel_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc, const float* bias) {
  float t[MR][NR] = {};
  for (int64_t k = 0; k < kc; k++, a += MR, b += NR)
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < NR; j++) t[r][j] += a[r] * b[j];
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < NR; j++) {
      const float v = bias ? t[r][j] + bias[j] : t[r][j];
      c[r * ldc + j] = acc ? c[r * ldc + j] + v : v;
    }
}

// 8 × 32 tile in 16 zmm accumulators: two 512-bit FMA pipes with latency 4 need ≥ 8 in flight.
__attribute__((target("avx512f,fma")))
void kernel_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc, const float* bias) {
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
  for (int64_t k = 0; k < kc; k++, a += 8, b += 32) {
    __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    __m512 x;
    x = _mm512_set1_ps(a[0]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
    x = _mm512_set1_ps(a[1]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
    x = _mm512_set1_ps(a[2]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
    x = _mm512_set1_ps(a[3]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
    x = _mm512_set1_ps(a[4]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
    x = _mm512_set1_ps(a[5]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
    x = _mm512_set1_ps(a[6]); c60 = _mm512_fmadd_ps(x, b0, c60); c61 = _mm512_fmadd_ps(x, b1, c61);
    x = _mm512_set1_ps(a[7]); c70 = _mm512_fmadd_ps(x, b0, c70); c71 = _mm512_fmadd_ps(x, b1, c71);
  }
  __m512 rows[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                       {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
  const __m512 bv0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps(), bv1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < 8; r++) {
    float* cr = c + r * ldc;
    rows[r][0] = _mm512_add_ps(rows[r][0], bv0);
    rows[r][1] = _mm512_add_ps(rows[r][1], bv1);
    if (acc) {
      rows[r][0] = _mm512_add_ps(rows[r][0], _mm512_loadu_ps(cr));
      rows[r][1] = _mm512_add_ps(rows[r][1], _mm512_loadu_ps(cr + 16));
    }
    _mm512_storeu_ps(cr, rows[r][0]);
    _mm512_storeu_ps(cr + 16, rows[r][1]);
  }
}

// 6 × 16 tile in 12 ymm accumulators. Two 256-bit FMA pipes of latency 4–5 need ≥ 10 independent
// chains. The k loop is written in assembly with fixed registers (ymm0–11 the tile, ymm12–13 the B
// row, ymm14–15 two A broadcasts): compiled from intrinsics, GCC spilled accumulators to the stack
// inside the loop once the epilogue (bias, accumulate) was in the same function. Unrolled by 4, with
// the A and B lines of 4 steps ahead prefetched. Each c(r, j) is still Σ_k in k order, one FMA per
// step, as the other kernels do.
__attribute__((target("avx2,fma")))
void kernel_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc, const float* bias) {
  for (int r = 0; r < 6; r++) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  int64_t k4 = kc / 4, k1 = kc % 4;
#define KPIG_AVX2_STEP(o)                                     \
  "vmovaps " #o "*64(%[b]), %%ymm12\n\t"                       \
  "vmovaps " #o "*64+32(%[b]), %%ymm13\n\t"                    \
  "vbroadcastss " #o "*24(%[a]), %%ymm14\n\t"                  \
  "vbroadcastss " #o "*24+4(%[a]), %%ymm15\n\t"                \
  "vfmadd231ps %%ymm12, %%ymm14, %[c00]\n\t"                   \
  "vfmadd231ps %%ymm13, %%ymm14, %[c01]\n\t"                   \
  "vfmadd231ps %%ymm12, %%ymm15, %[c10]\n\t"                   \
  "vfmadd231ps %%ymm13, %%ymm15, %[c11]\n\t"                   \
  "vbroadcastss " #o "*24+8(%[a]), %%ymm14\n\t"                \
  "vbroadcastss " #o "*24+12(%[a]), %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm14, %[c20]\n\t"                   \
  "vfmadd231ps %%ymm13, %%ymm14, %[c21]\n\t"                   \
  "vfmadd231ps %%ymm12, %%ymm15, %[c30]\n\t"                   \
  "vfmadd231ps %%ymm13, %%ymm15, %[c31]\n\t"                   \
  "vbroadcastss " #o "*24+16(%[a]), %%ymm14\n\t"               \
  "vbroadcastss " #o "*24+20(%[a]), %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm14, %[c40]\n\t"                   \
  "vfmadd231ps %%ymm13, %%ymm14, %[c41]\n\t"                   \
  "vfmadd231ps %%ymm12, %%ymm15, %[c50]\n\t"                   \
  "vfmadd231ps %%ymm13, %%ymm15, %[c51]\n\t"
  asm volatile(
      "vxorps %[c00], %[c00], %[c00]\n\t"
      "vxorps %[c01], %[c01], %[c01]\n\t"
      "vxorps %[c10], %[c10], %[c10]\n\t"
      "vxorps %[c11], %[c11], %[c11]\n\t"
      "vxorps %[c20], %[c20], %[c20]\n\t"
      "vxorps %[c21], %[c21], %[c21]\n\t"
      "vxorps %[c30], %[c30], %[c30]\n\t"
      "vxorps %[c31], %[c31], %[c31]\n\t"
      "vxorps %[c40], %[c40], %[c40]\n\t"
      "vxorps %[c41], %[c41], %[c41]\n\t"
      "vxorps %[c50], %[c50], %[c50]\n\t"
      "vxorps %[c51], %[c51], %[c51]\n\t"
      "test %[k4], %[k4]\n\t"
      "jz 2f\n\t"
      "1:\n\t"
      "prefetcht0 384(%[a])\n\t"
      "prefetcht0 1024(%[b])\n\t"
      "prefetcht0 1088(%[b])\n\t"
      "prefetcht0 1152(%[b])\n\t"
      "prefetcht0 1216(%[b])\n\t"
      KPIG_AVX2_STEP(0) KPIG_AVX2_STEP(1) KPIG_AVX2_STEP(2) KPIG_AVX2_STEP(3)
      "add $96, %[a]\n\t"
      "add $256, %[b]\n\t"
      "dec %[k4]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %[k1], %[k1]\n\t"
      "jz 4f\n\t"
      "3:\n\t"
      KPIG_AVX2_STEP(0)
      "add $24, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[k1]\n\t"
      "jnz 3b\n\t"
      "4:\n\t"
      : [c00] "=&x"(c00), [c01] "=&x"(c01), [c10] "=&x"(c10), [c11] "=&x"(c11), [c20] "=&x"(c20), [c21] "=&x"(c21),
        [c30] "=&x"(c30), [c31] "=&x"(c31), [c40] "=&x"(c40), [c41] "=&x"(c41), [c50] "=&x"(c50), [c51] "=&x"(c51),
        [a] "+r"(a), [b] "+r"(b), [k4] "+r"(k4), [k1] "+r"(k1)
      :
      : "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef KPIG_AVX2_STEP
  const __m256 rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 bv0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps(), bv1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  for (int r = 0; r < 6; r++) {
    float* cr = c + r * ldc;
    __m256 v0 = _mm256_add_ps(rows[r][0], bv0), v1 = _mm256_add_ps(rows[r][1], bv1);
    if (acc) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cr));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cr + 8));
    }
    _mm256_storeu_ps(cr, v0);
    _mm256_storeu_ps(cr + 8, v1);
  }
}

// 8 × 32 tile from bf16 pairs: a[kp*8 + r] holds (a(r, 2kp), a(r, 2kp+1)); b[(kp*32 + j)*2 + {0,1}]
// holds (b(2kp, j), b(2kp+1, j)). One vdpbf16ps does 16 lanes × 2 products.
__attribute__((target("avx512f,avx512bf16")))
void kernel_bf16(int64_t kp, const uint32_t* a, const uint16_t* b, float* c, int64_t ldc, bool acc, const float* bias) {
  __m512 t[8][2];
  for (int r = 0; r < 8; r++) t[r][0] = t[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kp; k++, a += 8, b += 64) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
    for (int r = 0; r < 8; r++) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(int(a[r]));
      t[r][0] = _mm512_dpbf16_ps(t[r][0], x, b0);
      t[r][1] = _mm512_dpbf16_ps(t[r][1], x, b1);
    }
  }
  const __m512 bv0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps(), bv1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < 8; r++) {
    float* cr = c + r * ldc;
    t[r][0] = _mm512_add_ps(t[r][0], bv0);
    t[r][1] = _mm512_add_ps(t[r][1], bv1);
    if (acc) {
      t[r][0] = _mm512_add_ps(t[r][0], _mm512_loadu_ps(cr));
      t[r][1] = _mm512_add_ps(t[r][1], _mm512_loadu_ps(cr + 16));
    }
    _mm512_storeu_ps(cr, t[r][0]);
    _mm512_storeu_ps(cr + 16, t[r][1]);
  }
}

bool has_bf16_kernel() {
  static const bool yes = [] {
    const char* force = std::getenv("KPIG_ISA");
    const char* force16 = std::getenv("KPIG_BF16_ISA");
    __builtin_cpu_init();
    return !(force && (std::string(force) == "scalar" || std::string(force) == "avx2")) &&
           !(force16 && std::string(force16) == "emulated") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return yes;
}

const Isa& avx512_isa() {
  static const Isa isa{"avx512", 8, 32, kernel_avx512};
  return isa;
}

// The FMA kernel of the level the row kernels use (simd.h: the CPU's widest, or lower by KPIG_ISA).
const Isa& pick_isa() {
  static const Isa isa = [] {
    switch (simd_level()) {
      case SimdLevel::Avx512: return Isa{"avx512", 8, 32, kernel_avx512};
      case SimdLevel::Avx2: return Isa{"avx2", 6, 16, kernel_avx2};
      default: return Isa{"scalar", 4, 8, kernel_scalar<4, 8>};
    }
  }();
  return isa;
}

// Blocking parameters, with an environment override for tuning runs (bench/native/gemm.cpp).
int64_t tune(const char* name, int64_t dflt) {
  const char* v = std::getenv(name);
  return v && std::atoll(v) > 0 ? std::atoll(v) : dflt;
}

// Cache blocking from the measured cache sizes: a B micro-panel (KC × NR) takes part of L1 (the A
// micro-panel and C tile stream beside it), an A block (MC × KC) about a quarter of L2, and a task's
// B block (KC × NC, 1024 columns) stays in L2/L3 while its A blocks pass. The L1 share is 3/4 for the
// 6 × 16 AVX2 kernel (measured on an AMD EPYC, 32 KiB L1d: +6% on one thread and +3% on two over 1/2,
// the B micro-panel 24 KiB at KC = 384) and 1/2 for the 8 × 32 AVX-512 kernel (as measured when it
// was written). KPIG_KC, KPIG_MC (rows) and KPIG_NC (columns) override them.
struct Blocking {
  int64_t kc, mc, nc;
};
Blocking make_blocking(const Isa& isa) {
  long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (l1 <= 0) l1 = 32 << 10;
  if (l2 <= 0) l2 = 512 << 10;
  const int64_t l1_share = isa.nr == 16 ? l1 * 3 / 4 : l1 / 2;
  int64_t kc = std::clamp<int64_t>(l1_share / (isa.nr * 4) / 32 * 32, 128, 512);
  int64_t mc = std::clamp<int64_t>(l2 / 4 / (kc * 4) / isa.mr, 8, 32) * isa.mr;
  return {tune("KPIG_KC", kc), tune("KPIG_MC", mc) / isa.mr * isa.mr, tune("KPIG_NC", 1024) / isa.nr * isa.nr};
}
const Blocking& blocking(const Isa& isa) {
  static const Blocking avx512 = make_blocking(avx512_isa());
  static const Blocking picked = make_blocking(pick_isa());
  return isa.kernel == pick_isa().kernel ? picked : avx512;
}

// dst row c (8 floats, stride ld_dst) = column c of the 8 × 8 block at src (rows of stride ld_src).
__attribute__((target("avx2")))
void transpose8x8(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld_src), r2 = _mm256_loadu_ps(src + 2 * ld_src),
         r3 = _mm256_loadu_ps(src + 3 * ld_src), r4 = _mm256_loadu_ps(src + 4 * ld_src), r5 = _mm256_loadu_ps(src + 5 * ld_src),
         r6 = _mm256_loadu_ps(src + 6 * ld_src), r7 = _mm256_loadu_ps(src + 7 * ld_src);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44),
         u3 = _mm256_shuffle_ps(t1, t3, 0xEE), u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
         u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ld_dst, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld_dst, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld_dst, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld_dst, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld_dst, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld_dst, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld_dst, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// dst[k*6 + r] = src[r*ld_src + k] for r < 6, k < 8: six rows of 8 floats into 8 columns of 6.
__attribute__((target("avx2")))
void transpose6x8(const float* src, int64_t ld_src, float* dst) {
  const __m256 z = _mm256_setzero_ps();
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld_src), r2 = _mm256_loadu_ps(src + 2 * ld_src),
         r3 = _mm256_loadu_ps(src + 3 * ld_src), r4 = _mm256_loadu_ps(src + 4 * ld_src), r5 = _mm256_loadu_ps(src + 5 * ld_src);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44),
         u3 = _mm256_shuffle_ps(t1, t3, 0xEE), u4 = _mm256_shuffle_ps(t4, z, 0x44), u5 = _mm256_shuffle_ps(t4, z, 0xEE),
         u6 = _mm256_shuffle_ps(t5, z, 0x44), u7 = _mm256_shuffle_ps(t5, z, 0xEE);
  // column k = rows 0–3 (a 128-bit lane of u*) then rows 4–5 (the low half of that lane of u4–u7)
  const __m128 lo[8] = {_mm256_castps256_ps128(u0), _mm256_castps256_ps128(u1), _mm256_castps256_ps128(u2),
                        _mm256_castps256_ps128(u3), _mm256_extractf128_ps(u0, 1), _mm256_extractf128_ps(u1, 1),
                        _mm256_extractf128_ps(u2, 1), _mm256_extractf128_ps(u3, 1)};
  const __m128 hi[8] = {_mm256_castps256_ps128(u4), _mm256_castps256_ps128(u5), _mm256_castps256_ps128(u6),
                        _mm256_castps256_ps128(u7), _mm256_extractf128_ps(u4, 1), _mm256_extractf128_ps(u5, 1),
                        _mm256_extractf128_ps(u6, 1), _mm256_extractf128_ps(u7, 1)};
  for (int k = 0; k < 8; k++) {
    _mm_storeu_ps(dst + 6 * k, lo[k]);
    _mm_storel_pi(reinterpret_cast<__m64*>(dst + 6 * k + 4), hi[k]);
  }
}

bool cpu_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}

// Packs `panels` W-wide column panels of a row-major block (kc rows of stride ld) k-major:
// out[(p*kc + k)*W + j] = src[k*ld + p*W + j]. Row by row, so each source row is read once and in order.
template <int W>
__attribute__((target("avx2"))) void pack_rows_avx2(const float* src, int64_t ld, int64_t kc, int64_t panels, float* out) {
  for (int64_t k = 0; k < kc; k++) {
    const float* row = src + k * ld;
    float* o = out + k * W;
    if (k + 4 < kc) _mm_prefetch(reinterpret_cast<const char*>(row + 4 * ld), _MM_HINT_T0);
    for (int64_t p = 0; p < panels; p++, row += W, o += kc * W) {
      if constexpr (W == 16) {
        _mm256_storeu_ps(o, _mm256_loadu_ps(row));
        _mm256_storeu_ps(o + 8, _mm256_loadu_ps(row + 8));
      } else {
        static_assert(W == 6);
        _mm_storeu_ps(o, _mm_loadu_ps(row));
        _mm_storel_pi(reinterpret_cast<__m64*>(o + 4), _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(row + 4))));
      }
    }
  }
}

// Packs rows [i0, i0+mc) × cols [k0, k0+kc) of A into MR-row panels, k-major, zero-padded.
void pack_a(const float* A, int64_t a_rs, int64_t a_cs, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* out) {
  if (a_rs == 1 && mr == 6 && mc % 6 == 0 && cpu_avx2()) {  // A stored transposed (K, M), as dYᵀ in a weight gradient
    pack_rows_avx2<6>(A + k0 * a_cs + i0, a_cs, kc, mc / 6, out);
    return;
  }
  for (int64_t p = 0; p < mc; p += mr) {
    int64_t rows = std::min<int64_t>(mr, mc - p);
    if (a_cs == 1) {  // row-major A: read each row's k run contiguously, scatter into the panel
      int64_t kdone = 0;
      if (mr == 8 && rows == 8 && cpu_avx2()) {  // whole 8 × 8 blocks by register transposes
        const float* src = A + (i0 + p) * a_rs + k0;
        for (; kdone + 8 <= kc; kdone += 8) transpose8x8(src + kdone, a_rs, out + kdone * 8, 8);
      } else if (mr == 6 && rows == 6 && cpu_avx2()) {  // 6 rows × 8 k by register transposes
        const float* src = A + (i0 + p) * a_rs + k0;
        for (; kdone + 8 <= kc; kdone += 8) transpose6x8(src + kdone, a_rs, out + kdone * 6);
      }
      for (int64_t r = 0; r < rows; r++) {
        const float* src = A + (i0 + p + r) * a_rs + k0;
        for (int64_t k = kdone; k < kc; k++) out[k * mr + r] = src[k];
      }
      for (int64_t r = rows; r < mr; r++)
        for (int64_t k = 0; k < kc; k++) out[k * mr + r] = 0.f;
      out += kc * mr;
      continue;
    }
    if (a_rs == 1 && rows == mr) {  // A stored transposed (K, M), as dYᵀ in a weight gradient
      for (int64_t k = 0; k < kc; k++, out += mr) std::memcpy(out, A + (i0 + p) + (k0 + k) * a_cs, sizeof(float) * size_t(mr));
      continue;
    }
    for (int64_t k = 0; k < kc; k++) {
      const float* src = A + (i0 + p) * a_rs + (k0 + k) * a_cs;
      int64_t r = 0;
      for (; r < rows; r++) out[r] = src[r * a_rs];
      for (; r < mr; r++) out[r] = 0.f;
      out += mr;
    }
  }
}

// Packs rows [k0, k0+kc) × cols [j0, j0+nc) of B into NR-column panels, k-major, zero-padded.
void pack_b(const float* B, int64_t b_rs, int64_t b_cs, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* out) {
  if (b_cs == 1 && nr == 16 && cpu_avx2()) {  // row-major B: whole panels by vector copies, the edge panel below
    const int64_t whole = nc / 16;
    pack_rows_avx2<16>(B + k0 * b_rs + j0, b_rs, kc, whole, out);
    if (whole * 16 == nc) return;
    out += whole * 16 * kc;
    j0 += whole * 16;
    nc -= whole * 16;
  }
  for (int64_t p = 0; p < nc; p += nr) {
    int64_t cols = std::min<int64_t>(nr, nc - p);
    if (b_cs == 1 && cols == nr) {
      for (int64_t k = 0; k < kc; k++) {
        std::memcpy(out, B + (k0 + k) * b_rs + j0 + p, sizeof(float) * nr);
        out += nr;
      }
      continue;
    }
    if (b_rs == 1) {  // B stored transposed (N, K): read each column's k run contiguously
      int64_t jdone = 0;
      if (cpu_avx2())  // 8 columns × 8 k at a time by register transposes
        for (; jdone + 8 <= cols; jdone += 8) {
          const float* src = B + (j0 + p + jdone) * b_cs + k0;
          int64_t k = 0;
          for (; k + 8 <= kc; k += 8) transpose8x8(src + k, b_cs, out + k * nr + jdone, nr);
          for (; k < kc; k++)
            for (int64_t j = 0; j < 8; j++) out[k * nr + jdone + j] = src[j * b_cs + k];
        }
      for (int64_t j = jdone; j < cols; j++) {
        const float* src = B + (j0 + p + j) * b_cs + k0;
        for (int64_t k = 0; k < kc; k++) out[k * nr + j] = src[k];
      }
      for (int64_t j = cols; j < nr; j++)
        for (int64_t k = 0; k < kc; k++) out[k * nr + j] = 0.f;
      out += kc * nr;
      continue;
    }
    for (int64_t k = 0; k < kc; k++) {
      const float* src = B + (k0 + k) * b_rs + (j0 + p) * b_cs;
      int64_t j = 0;
      for (; j < cols; j++) out[j] = src[j * b_cs];
      for (; j < nr; j++) out[j] = 0.f;
      out += nr;
    }
  }
}

// Per-thread packing buffers, kept between calls (fp32 panels, and their bf16 forms).
struct Scratch {
  AlignedBuf<float> a, b, a16, b16;
  AlignedBuf<float> shared_b, shared_b16;  // B blocks packed by all threads (the calling thread's)
};

// Widest B block packed jointly by the threads (KC × this many columns: 6 MB at KC = 384, in L3).
constexpr int64_t kSharedNC = 4096;

inline float bf16_round(float x) {
  const uint32_t u = uint32_t(f32_to_bf16(x)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// fp32 panels (k-major) → bf16 pair panels; an odd last k pairs with zero.
void to_bf16_pairs_a(const float* a, int64_t kc, int mr, uint32_t* out) {
  for (int64_t k = 0; k < kc; k += 2)
    for (int r = 0; r < mr; r++) {
      const uint32_t lo = f32_to_bf16(a[k * mr + r]), hi = k + 1 < kc ? f32_to_bf16(a[(k + 1) * mr + r]) : 0;
      *out++ = lo | (hi << 16);
    }
}
void to_bf16_pairs_b(const float* b, int64_t kc, int nr, uint16_t* out) {
  for (int64_t k = 0; k < kc; k += 2)
    for (int j = 0; j < nr; j++) {
      *out++ = f32_to_bf16(b[k * nr + j]);
      *out++ = k + 1 < kc ? f32_to_bf16(b[(k + 1) * nr + j]) : 0;
    }
}
thread_local Scratch tl_scratch;

// float32 on AMX packs three pieces of B per call: worth it from a few hundred rows on (weights
// reused across calls go through PackedB instead).
constexpr int64_t kAmxFp32MinRows = 384;

}  // namespace

const char* gemm_isa() { return amx_fp32() ? "amx" : pick_isa().name; }
const char* gemm_bf16_isa() { return amx_available() ? "amx" : has_bf16_kernel() ? "avx512_bf16" : "emulated"; }

uint16_t f32_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

void gemm(ThreadPool* pool, int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs,
          const float* B, int64_t b_rs, int64_t b_cs, float* C, int64_t ldc, bool accumulate, const float* bias) {
  if (M <= 0 || N <= 0) return;
  const bool bf16 = pool && pool->matmul_bf16;
  const bool amx = bf16 ? amx_available() : amx_fp32() && M >= kAmxFp32MinRows;
  if (bias && (K <= 0 || (amx && accumulate))) {  // C (=|+=) bias, then the product on top
    for (int64_t i = 0; i < M; i++) {
      float* ci = C + i * ldc;
      if (accumulate)
        for (int64_t j = 0; j < N; j++) ci[j] += bias[j];
      else
        std::memcpy(ci, bias, sizeof(float) * size_t(N));
    }
    return gemm(pool, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, true);
  }
  if (bias && amx) return gemm_amx(pool, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, false, bias);
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; i++) std::memset(C + i * ldc, 0, sizeof(float) * N);
    return;
  }
  if (amx) {
    gemm_amx(pool, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, accumulate);
    return;
  }
  gemm_fma(pool, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, nullptr, C, ldc, accumulate, bias);
}

namespace {

// Even k blocks of at most the blocking's KC: the packed layout and every driver use this split.
int64_t k_block(int64_t K, int64_t kcmax) {
  const int64_t blocks = (K + kcmax - 1) / kcmax;
  return (K + blocks - 1) / blocks;
}

}  // namespace

// The FMA (and AVX512_BF16) driver. With `prepacked` (fma_pack_b's layout, float32 mode), B's blocks
// are read from there instead of being packed per task.
void gemm_fma(ThreadPool* pool, int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs,
              const float* B, int64_t b_rs, int64_t b_cs, const float* prepacked, float* C, int64_t ldc, bool accumulate,
              const float* bias) {
  const bool bf16 = !prepacked && pool && pool->matmul_bf16;  // prepacked panels are float32
  const bool bf16_hw = bf16 && has_bf16_kernel();
  const Isa& isa = bf16_hw ? avx512_isa() : pick_isa();
  const int mr = isa.mr, nr = isa.nr;
  // Blocking: A blocks (MC × KC) stay in L2 and each B micro-panel (KC × NR) in L1 while it is
  // swept over a whole A block. A task owns a column block (NC) and a range of rows; it packs each
  // B block once and reuses it for all its rows, so B is packed once per task, not per row block
  // (and once per product where many rows split into row ranges: the shared path below).
  const Blocking& blk = blocking(isa);
  const int64_t MC = blk.mc, NCMAX = blk.nc, KCMAX = blk.kc;
  const int64_t KC = k_block(K, KCMAX);
  const int nthreads = pool ? pool->size() : 1;
  // Tasks: mb row ranges × nb column blocks (at most NCMAX wide, of equal width in NR panels). Each
  // task packs its B block (K × NC) and its rows of A (rows × K), so the split costs mb·N + nb·M
  // packed elements per k; the cheapest split with at least 2 tasks per thread (a multiple of the
  // threads) wins: column blocks for few rows (an LM-head chunk), row ranges for many.
  const int64_t row_blocks = (M + MC - 1) / MC;
  const int64_t panels = (N + nr - 1) / nr;
  const int64_t want = nthreads > 1 ? 2 * nthreads : 1;
  int64_t nb = 0, mb = 0, best = -1;
  for (int64_t cb = (N + NCMAX - 1) / NCMAX; cb <= panels; cb++) {
    const int64_t cw = (panels + cb - 1) / cb * nr, cn = (N + cw - 1) / cw;  // the widths round to NR panels
    if (cn != cb) continue;
    int64_t rb = std::max<int64_t>(1, std::min((want + cb - 1) / cb, row_blocks));
    if (nthreads > 1)  // a multiple of the threads where the rows allow it
      while (rb < row_blocks && (rb * cb) % nthreads) rb++;
    // Too few tasks rank below every split with enough, and among themselves by their count.
    const int64_t cost = cb * rb >= want ? (prepacked ? 0 : rb * N) + cb * M : (int64_t(1) << 62) - cb * rb;
    if (best < 0 || cost < best) best = cost, nb = cb, mb = rb;
    if (cb * rb >= want && rb == 1) break;  // more column blocks only add packing of A
  }
  const int64_t NC = (panels + nb - 1) / nb * nr;
  const int64_t rows_per = ((M + mb - 1) / mb + mr - 1) / mr * mr;
  // Rows [r0, r1) × columns [j0, j0 + nc) of one k block against its B panels at pb (fp32) or pb16.
  auto rows_block = [&](int64_t r0, int64_t r1, int64_t j0, int64_t nc, int64_t k0, int64_t kc, const float* pb,
                        const uint16_t* pb16) {
    Scratch& s = tl_scratch;
    float* pa = s.a.get(size_t(MC * KC));
    alignas(64) float tile[8 * 32];
    const bool acc = accumulate || k0 > 0;
    const int64_t kp = (kc + 1) / 2;
    for (int64_t i0 = r0; i0 < r1; i0 += MC) {
      const int64_t mc = std::min(MC, r1 - i0);
      pack_a(A, a_rs, a_cs, i0, mc, k0, kc, mr, pa);
      uint32_t* pa16 = nullptr;
      const int64_t mc_pad = (mc + mr - 1) / mr * mr;
      if (bf16_hw) {
        pa16 = reinterpret_cast<uint32_t*>(s.a16.get(size_t(MC * kp)));
        for (int64_t ip = 0; ip < mc; ip += mr) to_bf16_pairs_a(pa + ip * kc, kc, mr, pa16 + ip * kp);
      } else if (bf16) {
        for (int64_t i = 0; i < mc_pad * kc; i++) pa[i] = bf16_round(pa[i]);
      }
      for (int64_t jp = 0; jp < nc; jp += nr) {
        const float* bp = pb + jp * kc;
        const int64_t cols = std::min<int64_t>(nr, nc - jp);
        // The bias joins on the first k block only (a full tile reads NR values of it).
        const float* bias_j = bias && k0 == 0 ? bias + j0 + jp : nullptr;
        for (int64_t ip = 0; ip < mc; ip += mr) {
          const float* ap = pa + ip * kc;
          const int64_t rows = std::min<int64_t>(mr, mc - ip);
          float* c = C + (i0 + ip) * ldc + j0 + jp;
          if (rows == mr && cols == nr) {
            if (bf16_hw) kernel_bf16(kp, pa16 + ip * kp, pb16 + jp * kp * 2, c, ldc, acc, bias_j);
            else isa.kernel(kc, ap, bp, c, ldc, acc, bias_j);
            continue;
          }
          // edge tile: compute into a full tile, copy the valid part in the kernels' order
          if (bf16_hw) kernel_bf16(kp, pa16 + ip * kp, pb16 + jp * kp * 2, tile, nr, false, nullptr);
          else isa.kernel(kc, ap, bp, tile, nr, false, nullptr);
          for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) {  // (product + bias), then + C
              const float t = bias_j ? tile[r * nr + j] + bias_j[j] : tile[r * nr + j];
              c[r * ldc + j] = acc ? c[r * ldc + j] + t : t;
            }
        }
      }
    }
  };
  // B panels of one k block for columns [j0, j0 + nc) into pb (and their bf16 pairs into pb16).
  auto pack_b_block = [&](int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* pb, uint16_t* pb16) {
    pack_b(B, b_rs, b_cs, k0, kc, j0, nc, nr, pb);
    const int64_t kp = (kc + 1) / 2, nc_pad = (nc + nr - 1) / nr * nr;
    if (bf16_hw)
      for (int64_t jp = 0; jp < nc; jp += nr) to_bf16_pairs_b(pb + jp * kc, kc, nr, pb16 + jp * kp * 2);
    else if (bf16)
      for (int64_t i = 0; i < nc_pad * kc; i++) pb[i] = bf16_round(pb[i]);
  };

  if (mb > 1 && !prepacked && pool && nthreads > 1) {
    // Many rows: the tasks would pack the same B block mb times. Instead all threads pack each B
    // block (KC × up to kSharedNC columns) once, then the row ranges run against it; A is packed
    // once per column block. The same tiles and k order as below, so the same sums.
    const int64_t cb = (N + kSharedNC - 1) / kSharedNC;
    const int64_t SNC = (panels + cb - 1) / cb * nr;
    const int64_t row_panels = (M + mr - 1) / mr;
    const int64_t rt = std::min<int64_t>(row_panels, want), rows_per_t = (row_panels + rt - 1) / rt * mr;
    Scratch& s = tl_scratch;
    float* pb = s.shared_b.get(size_t(SNC * KC));
    uint16_t* pb16 = bf16_hw ? reinterpret_cast<uint16_t*>(s.shared_b16.get(size_t(SNC * ((KC + 1) / 2)))) : nullptr;
    constexpr int64_t kPackPanels = 8;  // panels per packing task
    for (int64_t j0 = 0; j0 < N; j0 += SNC) {
      const int64_t nc = std::min(SNC, N - j0), groups = ((nc + nr - 1) / nr + kPackPanels - 1) / kPackPanels;
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = std::min(KC, K - k0), kp = (kc + 1) / 2;
        pool->parallel_for(groups, [&](int64_t g, int) {
          const int64_t off = g * kPackPanels * nr;
          pack_b_block(k0, kc, j0 + off, std::min(kPackPanels * nr, nc - off), pb + off * kc, pb16 ? pb16 + off * kp * 2 : nullptr);
        });
        pool->parallel_for(rt, [&](int64_t t, int) {
          const int64_t r0 = t * rows_per_t, r1 = std::min(M, r0 + rows_per_t);
          if (r0 < r1) rows_block(r0, r1, j0, nc, k0, kc, pb, pb16);
        });
      }
    }
    return;
  }

  auto body = [&](int64_t task, int) {
    const int64_t ib = task % mb, jb = task / mb;
    const int64_t r0 = ib * rows_per, r1 = std::min(M, r0 + rows_per);
    const int64_t j0 = jb * NC, nc = std::min(NC, N - j0);
    if (r0 >= r1) return;
    Scratch& s = tl_scratch;
    const int64_t nc_pad = (nc + nr - 1) / nr * nr;
    float* pb = prepacked ? nullptr : s.b.get(size_t(nc_pad * KC));
    uint16_t* pb16 = bf16_hw ? reinterpret_cast<uint16_t*>(s.b16.get(size_t(nc_pad * ((KC + 1) / 2)))) : nullptr;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      if (prepacked) pb = const_cast<float*>(prepacked) + k0 * panels * nr + j0 * kc;  // k block k0, panels from j0 / nr
      else pack_b_block(k0, kc, j0, nc, pb, pb16);
      rows_block(r0, r1, j0, nc, k0, kc, pb, pb16);
    }
  };
  if (pool && mb * nb > 1) pool->parallel_for(mb * nb, body);
  else for (int64_t t = 0; t < mb * nb; t++) body(t, 0);
}

int64_t fma_packed_size(int64_t K, int64_t N) {
  const int nr = pick_isa().nr;
  return K * ((N + nr - 1) / nr * nr);
}

void fma_pack_b(ThreadPool* pool, int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs, float* out) {
  const Isa& isa = pick_isa();
  const int64_t nr = isa.nr, KC = k_block(K, blocking(isa).kc), panels = (N + nr - 1) / nr;
  // Block (k0, panel p) at out + k0·panels·nr + p·kc·nr: a task's column block is one run per k block.
  auto body = [&](int64_t p, int) {
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      pack_b(B, b_rs, b_cs, k0, kc, p * nr, std::min<int64_t>(nr, N - p * nr), int(nr), out + k0 * panels * nr + p * kc * nr);
    }
  };
  if (pool) pool->parallel_for(panels, body);
  else for (int64_t p = 0; p < panels; p++) body(p, 0);
}

}  // namespace kpig
