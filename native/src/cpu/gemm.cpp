#include "gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../core/threadpool.h"
#include "aligned.h"
#include "gemm_amx.h"

namespace kpig {

namespace {

// A kernel multiplies an MR-row panel of A by an NR-column panel of B over kc steps:
//   c(MR,NR) (=|+=) Σ_k a[k*MR + r] · b[k*NR + j]
using KernelFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc);

struct Isa {
  const char* name;
  int mr, nr;
  KernelFn kernel;
};

template <int MR, int NR>
void kernel_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc) {
  float t[MR][NR] = {};
  for (int64_t k = 0; k < kc; k++, a += MR, b += NR)
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < NR; j++) t[r][j] += a[r] * b[j];
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < NR; j++) c[r * ldc + j] = acc ? c[r * ldc + j] + t[r][j] : t[r][j];
}

// 8 × 32 tile in 16 zmm accumulators: two 512-bit FMA pipes with latency 4 need ≥ 8 in flight.
__attribute__((target("avx512f,fma")))
void kernel_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc) {
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
  for (int r = 0; r < 8; r++) {
    float* cr = c + r * ldc;
    if (acc) {
      rows[r][0] = _mm512_add_ps(rows[r][0], _mm512_loadu_ps(cr));
      rows[r][1] = _mm512_add_ps(rows[r][1], _mm512_loadu_ps(cr + 16));
    }
    _mm512_storeu_ps(cr, rows[r][0]);
    _mm512_storeu_ps(cr + 16, rows[r][1]);
  }
}

// 6 × 16 tile in 12 ymm accumulators.
__attribute__((target("avx2,fma")))
void kernel_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool acc) {
  __m256 t[6][2];
  for (int r = 0; r < 6; r++) t[r][0] = t[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++, a += 6, b += 16) {
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    for (int r = 0; r < 6; r++) {
      __m256 x = _mm256_broadcast_ss(a + r);
      t[r][0] = _mm256_fmadd_ps(x, b0, t[r][0]);
      t[r][1] = _mm256_fmadd_ps(x, b1, t[r][1]);
    }
  }
  for (int r = 0; r < 6; r++) {
    float* cr = c + r * ldc;
    if (acc) {
      t[r][0] = _mm256_add_ps(t[r][0], _mm256_loadu_ps(cr));
      t[r][1] = _mm256_add_ps(t[r][1], _mm256_loadu_ps(cr + 8));
    }
    _mm256_storeu_ps(cr, t[r][0]);
    _mm256_storeu_ps(cr + 8, t[r][1]);
  }
}

// 8 × 32 tile from bf16 pairs: a[kp*8 + r] holds (a(r, 2kp), a(r, 2kp+1)); b[(kp*32 + j)*2 + {0,1}]
// holds (b(2kp, j), b(2kp+1, j)). One vdpbf16ps does 16 lanes × 2 products.
__attribute__((target("avx512f,avx512bf16")))
void kernel_bf16(int64_t kp, const uint32_t* a, const uint16_t* b, float* c, int64_t ldc, bool acc) {
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
  for (int r = 0; r < 8; r++) {
    float* cr = c + r * ldc;
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

const Isa& pick_isa() {
  static const Isa isa = [] {
    const char* force = std::getenv("KPIG_ISA");
    std::string f = force ? force : "";
    __builtin_cpu_init();
    if (f != "scalar" && f != "avx2" && __builtin_cpu_supports("avx512f")) return Isa{"avx512", 8, 32, kernel_avx512};
    if (f != "scalar" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa{"avx2", 6, 16, kernel_avx2};
    return Isa{"scalar", 4, 8, kernel_scalar<4, 8>};
  }();
  return isa;
}

constexpr int64_t KC = 256;

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

bool cpu_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}

// Packs rows [i0, i0+mc) × cols [k0, k0+kc) of A into MR-row panels, k-major, zero-padded.
void pack_a(const float* A, int64_t a_rs, int64_t a_cs, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* out) {
  for (int64_t p = 0; p < mc; p += mr) {
    int64_t rows = std::min<int64_t>(mr, mc - p);
    if (a_cs == 1) {  // row-major A: read each row's k run contiguously, scatter into the panel
      int64_t kdone = 0;
      if (mr == 8 && rows == 8 && cpu_avx2()) {  // whole 8 × 8 blocks by register transposes
        const float* src = A + (i0 + p) * a_rs + k0;
        for (; kdone + 8 <= kc; kdone += 8) transpose8x8(src + kdone, a_rs, out + kdone * 8, 8);
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
};

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
  if (bias) {
    if (amx && !accumulate && K > 0) return gemm_amx(pool, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, false, bias);
    for (int64_t i = 0; i < M; i++) {
      float* ci = C + i * ldc;
      if (accumulate)
        for (int64_t j = 0; j < N; j++) ci[j] += bias[j];
      else
        std::memcpy(ci, bias, sizeof(float) * size_t(N));
    }
    return gemm(pool, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, true);
  }
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; i++) std::memset(C + i * ldc, 0, sizeof(float) * N);
    return;
  }
  if (amx) {
    gemm_amx(pool, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, accumulate);
    return;
  }
  const bool bf16_hw = bf16 && has_bf16_kernel();
  const Isa& isa = bf16_hw ? avx512_isa() : pick_isa();
  const int mr = isa.mr, nr = isa.nr;
  // Blocking: A blocks (MC × KC) stay in L2 and each B micro-panel (KC × NR) in L1 while it is
  // swept over a whole A block. A task owns a column block (NC) and a range of rows; it packs each
  // B block once and reuses it for all its rows, so B is packed once per task, not per row block.
  const int64_t MC = mr * 16, NC = nr * 32;
  const int nthreads = pool ? pool->size() : 1;
  const int64_t nb = (N + NC - 1) / NC;
  // Enough row ranges that every thread has work (at least 2 tasks per thread when N is narrow).
  int64_t mb = nb >= 2 * nthreads ? 1 : (2 * nthreads + nb - 1) / nb;
  mb = std::max<int64_t>(1, std::min(mb, (M + MC - 1) / MC));
  const int64_t rows_per = ((M + mb - 1) / mb + mr - 1) / mr * mr;
  auto body = [&](int64_t task, int) {
    const int64_t ib = task % mb, jb = task / mb;
    const int64_t r0 = ib * rows_per, r1 = std::min(M, r0 + rows_per);
    const int64_t j0 = jb * NC, nc = std::min(NC, N - j0);
    if (r0 >= r1) return;
    Scratch& s = tl_scratch;
    const int64_t nc_pad = (nc + nr - 1) / nr * nr;
    float* pa = s.a.get(size_t(MC * KC));
    float* pb = s.b.get(size_t(nc_pad * KC));
    alignas(64) float tile[8 * 32];
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      const bool acc = accumulate || k0 > 0;
      pack_b(B, b_rs, b_cs, k0, kc, j0, nc, nr, pb);
      const int64_t kp = (kc + 1) / 2;
      uint16_t* pb16 = nullptr;
      if (bf16_hw) {
        pb16 = reinterpret_cast<uint16_t*>(s.b16.get(size_t(nc_pad * kp)));
        for (int64_t jp = 0; jp < nc; jp += nr) to_bf16_pairs_b(pb + jp * kc, kc, nr, pb16 + jp * kp * 2);
      } else if (bf16) {
        for (int64_t i = 0; i < nc_pad * kc; i++) pb[i] = bf16_round(pb[i]);
      }
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
          for (int64_t ip = 0; ip < mc; ip += mr) {
            const float* ap = pa + ip * kc;
            const int64_t rows = std::min<int64_t>(mr, mc - ip);
            float* c = C + (i0 + ip) * ldc + j0 + jp;
            if (bf16_hw) {
              const uint32_t* a16 = pa16 + ip * kp;
              const uint16_t* b16 = pb16 + jp * kp * 2;
              if (rows == mr && cols == nr) {
                kernel_bf16(kp, a16, b16, c, ldc, acc);
                continue;
              }
              kernel_bf16(kp, a16, b16, tile, nr, false);
              for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < cols; j++)
                  c[r * ldc + j] = acc ? c[r * ldc + j] + tile[r * nr + j] : tile[r * nr + j];
            } else if (rows == mr && cols == nr) {
              isa.kernel(kc, ap, bp, c, ldc, acc);
            } else {  // edge tile: compute into a full tile, copy the valid part
              isa.kernel(kc, ap, bp, tile, nr, false);
              for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < cols; j++)
                  c[r * ldc + j] = acc ? c[r * ldc + j] + tile[r * nr + j] : tile[r * nr + j];
            }
          }
        }
      }
    }
  };
  if (pool && mb * nb > 1) pool->parallel_for(mb * nb, body);
  else for (int64_t t = 0; t < mb * nb; t++) body(t, 0);
}

void linear(ThreadPool* pool, int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const float* W,
            const float* bias, float* y, int64_t ldy) {
  gemm(pool, M, N, K, x, ldx, 1, W, 1, K, y, ldy, false, bias);
}

}  // namespace kpig
