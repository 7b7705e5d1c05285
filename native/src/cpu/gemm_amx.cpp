// bf16 matmuls on Intel AMX: both operands rounded to bfloat16 (round to nearest even) while they
// are packed, products accumulated in float32 by TDPBF16PS. A 32 × 32 block of C lives in four
// 16 × 16 float32 tiles; each step over 32 k values loads two A tiles (16 rows × 32 bf16) and two
// B tiles (16 k-pairs × 16 columns × 2, the "VNNI" layout) and issues four tile multiplies.
// Legend: KT = 32 k values per tile step; a micro-panel is 32 rows of A or 32 columns of B.
#include "gemm_amx.h"

// GCC 12 reports its own _mm512_undefined_* placeholders (self-initialised) as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <string>

#include "../core/threadpool.h"
#include "../core/memory.h"
#include "gemm.h"

namespace kpig {

namespace {

constexpr int64_t KT = 32;           // k values per tile step
constexpr int64_t TILE = 16 * 32;    // bf16 elements in one 16 × 64-byte tile
constexpr int64_t MC = 256;          // rows of A per packed block (8 micro-panels)
constexpr int64_t NC = 1024;         // columns of B per task block (32 micro-panels)
constexpr int64_t GROUP_ELEMS = int64_t(8) << 20;  // bf16 elements of B packed at a time (16 MiB)

// Linux keeps AMX tile data off until the process asks for it (ARCH_REQ_XCOMP_PERM).
bool request_amx() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

struct TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows × 64 bytes: tiles 0–3 hold C, 4–5 A, 6–7 B.
__attribute__((target("amx-tile"))) void configure_tiles() {
  thread_local bool done = false;
  if (done) return;
  alignas(64) TileConfig cfg;
  for (int t = 0; t < 8; t++) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // The intrinsic does not tell the compiler it reads cfg: without this barrier the stores above
  // are dropped as dead.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
  done = true;
}


// Mask of the first n (≤ 16) lanes.
inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }


// x rounded to bfloat16 (nearest even), as a float32.
__attribute__((target("avx512f"))) inline __m512 round_bf16(__m512 x) {
  __m512i u = _mm512_castps_si512(x);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd));
  return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(int(0xFFFF0000u))));
}

// The pieces of x: x itself for the one-piece (bf16) mode, where the conversion rounds it, or the
// split x = hi + mid + lo into bfloat16 values (exact for finite normal x): hi is x rounded to bf16,
// mid the rounded remainder, lo what is left (it fits in 8 bits). Inf and NaN keep hi only.
__attribute__((target("avx512f"))) inline void split(__m512 x, int parts, __m512 out[3]) {
  if (parts == 1) {
    out[0] = x;
    return;
  }
  const __m512 hi = round_bf16(x), r = _mm512_sub_ps(x, hi), mid = round_bf16(r);
  const __mmask16 finite = _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(INFINITY), _CMP_LT_OQ);
  out[0] = hi;
  out[1] = _mm512_maskz_mov_ps(finite, mid);
  out[2] = _mm512_maskz_mov_ps(finite, _mm512_sub_ps(r, mid));
}

// Piece q of x as bf16 bits.
__attribute__((target("avx512f"))) inline uint16_t piece_bits(float x, int parts, int q) {
  __m512 out[3];
  split(_mm512_set1_ps(x), parts, out);
  return f32_to_bf16(_mm512_cvtss_f32(out[q]));
}

// The pieces of the first n (≤ 32) floats at p, as 32 bf16 each, zeros after them.
__attribute__((target("avx512f,avx512bf16"))) inline void to_bf16_32(const float* p, int64_t n, int parts, __m512i out[3]) {
  __m512 lo[3], hi[3];
  split(_mm512_maskz_loadu_ps(lanes(n), p), parts, lo);
  split(n > 16 ? _mm512_maskz_loadu_ps(lanes(n - 16), p + 16) : _mm512_setzero_ps(), parts, hi);
  for (int q = 0; q < parts; q++) out[q] = __m512i(_mm512_cvtne2ps_pbh(hi[q], lo[q]));
}

// 16 × 16 transpose of 32-bit lanes: row i of the result is lane i of r[0..15].
__attribute__((target("avx512f"))) void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4b + q] now holds, in each 128-bit lane L, elements q (of the 4) of rows 4b..4b+3 of lane L.
  for (int i = 0; i < 16; i += 8)
    for (int q = 0; q < 4; q++) {
      t[i + q] = _mm512_shuffle_i32x4(r[i + q], r[i + 4 + q], 0x88);      // lanes 0,2 of each
      t[i + 4 + q] = _mm512_shuffle_i32x4(r[i + q], r[i + 4 + q], 0xDD);  // lanes 1,3 of each
    }
  for (int q = 0; q < 4; q++) {
    r[q] = _mm512_shuffle_i32x4(t[q], t[8 + q], 0x88);           // 128-bit lane 0
    r[8 + q] = _mm512_shuffle_i32x4(t[q], t[8 + q], 0xDD);       // lane 1
    r[4 + q] = _mm512_shuffle_i32x4(t[4 + q], t[12 + q], 0x88);  // lane 2
    r[12 + q] = _mm512_shuffle_i32x4(t[4 + q], t[12 + q], 0xDD); // lane 3
  }
}

// Packs 32-row micro-panel p of A (rows 32p … 32p+31, all K) as kt_n steps of two tiles (rows 0–15,
// 16–31) of 16 rows × 32 bf16, one such panel per piece, ps elements apart. Rows past M and k past K
// are zero.
__attribute__((target("avx512f,avx512bf16")))
void pack_a_panel(const float* A, int64_t a_rs, int64_t a_cs, int64_t M, int64_t K, int64_t p, int parts, int64_t ps,
                  uint16_t* panel) {
  const int64_t kt_n = (K + KT - 1) / KT;
  if (a_rs == 1 && a_cs != 1) {
    // A(i, k) = A[i + k·a_cs] (a transposed operand, as in weight gradients): each k holds 16 rows
    // contiguously; two 16 × 16 transposes give 16 rows × 32 k.
    for (int64_t half = 0; half < 2; half++) {
      const int64_t i0 = 32 * p + 16 * half, rows = std::max<int64_t>(0, std::min<int64_t>(16, M - i0));
      for (int64_t kt = 0; kt < kt_n; kt++) {
        const int64_t n = std::min(KT, K - kt * KT);
        __m512i lo[16], hi[16];
        for (int64_t k = 0; k < 16; k++) {
          lo[k] = k < n && rows ? _mm512_castps_si512(_mm512_maskz_loadu_ps(lanes(rows), A + i0 + (kt * KT + k) * a_cs)) : _mm512_setzero_si512();
          hi[k] = k + 16 < n && rows ? _mm512_castps_si512(_mm512_maskz_loadu_ps(lanes(rows), A + i0 + (kt * KT + k + 16) * a_cs))
                                     : _mm512_setzero_si512();
        }
        transpose16(lo);
        transpose16(hi);
        uint16_t* dst = panel + kt * 2 * TILE + half * TILE;
        for (int r = 0; r < 16; r++) {
          __m512 l[3], h[3];
          split(_mm512_castsi512_ps(lo[r]), parts, l);
          split(_mm512_castsi512_ps(hi[r]), parts, h);
          for (int q = 0; q < parts; q++) _mm512_store_si512(dst + q * ps + r * KT, __m512i(_mm512_cvtne2ps_pbh(h[q], l[q])));
        }
      }
    }
    return;
  }
  for (int64_t r = 0; r < 32; r++) {
    uint16_t* dst_row = panel + (r / 16) * TILE + (r % 16) * KT;
    const int64_t i = 32 * p + r;
    const float* src = A + std::min(i, M - 1) * a_rs;  // rows past M are written as zeros (n = 0)
    for (int64_t kt = 0; kt < kt_n; kt++) {
      const int64_t n = i < M ? std::min(KT, K - kt * KT) : 0;
      uint16_t* dst = dst_row + kt * 2 * TILE;
      if (a_cs == 1) {
        __m512i v[3];
        to_bf16_32(src + kt * KT, n, parts, v);
        for (int q = 0; q < parts; q++) _mm512_store_si512(dst + q * ps, v[q]);
      } else {
        for (int q = 0; q < parts; q++)
          for (int64_t k = 0; k < KT; k++) dst[q * ps + k] = k < n ? piece_bits(src[(kt * KT + k) * a_cs], parts, q) : 0;
      }
    }
  }
}

// Packs k [k0, k0+kc) × columns [j0, j0+nc) of B into 32-column micro-panels: for each k step, two
// tiles (columns 0–15, 16–31), tile row q holding (B(2q, j), B(2q+1, j)) for its 16 columns; one
// such block per piece, ps elements apart.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void pack_b(const float* B, int64_t b_rs, int64_t b_cs, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int parts, int64_t ps,
            uint16_t* out) {
  const int64_t kt_n = (kc + KT - 1) / KT;
  // Interleaves the two 16-value halves of 32 bf16: (a0 b0 a1 b1 …).
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                              5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t p = 0; p < nc; p += 32)
    for (int64_t kt = 0; kt < kt_n; kt++)
      for (int64_t half = 0; half < 2; half++) {
        uint16_t* tile = out + ((p / 32) * kt_n + kt) * 2 * TILE + half * TILE;
        const int64_t jb = p + half * 16, cols = std::max<int64_t>(0, std::min<int64_t>(16, nc - jb));
        const int64_t kb = kt * KT, kn = std::min(KT, kc - kb);
        if (b_rs == 1 && cols > 0) {  // B(k, j) = B[j·b_cs + k]: each column's k run is contiguous
          __m512i r[3][16], v[3];
          for (int64_t j = 0; j < 16; j++) {
            to_bf16_32(B + (j0 + jb + std::min(j, cols - 1)) * b_cs + k0 + kb, j < cols ? kn : 0, parts, v);
            for (int q = 0; q < parts; q++) r[q][j] = v[q];
          }
          for (int q = 0; q < parts; q++) {
            transpose16(r[q]);
            for (int t = 0; t < 16; t++) _mm512_store_si512(tile + q * ps + t * 32, r[q][t]);
          }
          continue;
        }
        if (b_cs == 1 && cols > 0) {  // row-major B: two k rows of 16 columns per tile row
          for (int64_t q = 0; q < 16; q++) {
            const float* src = B + (k0 + kb + 2 * q) * b_rs + j0 + jb;
            __m512 lo[3], hi[3];
            split(2 * q < kn ? _mm512_maskz_loadu_ps(lanes(cols), src) : _mm512_setzero_ps(), parts, lo);
            split(2 * q + 1 < kn ? _mm512_maskz_loadu_ps(lanes(cols), src + b_rs) : _mm512_setzero_ps(), parts, hi);
            for (int e = 0; e < parts; e++)
              _mm512_store_si512(tile + e * ps + q * 32, _mm512_permutexvar_epi16(interleave, __m512i(_mm512_cvtne2ps_pbh(hi[e], lo[e]))));
          }
          continue;
        }
        for (int pc = 0; pc < parts; pc++)
          for (int64_t q = 0; q < 16; q++)
            for (int64_t j = 0; j < 16; j++)
              for (int64_t e = 0; e < 2; e++) {
                const int64_t k = 2 * q + e;
                tile[pc * ps + q * 32 + j * 2 + e] =
                    (j < cols && k < kn) ? piece_bits(B[(k0 + kb + k) * b_rs + (j0 + jb + j) * b_cs], parts, pc) : 0;
              }
      }
}

// The two A tiles (rows 0–15, 16–31) and the two B tiles (columns 0–15, 16–31) of one tile step.
#define KPIG_LOAD_A(p) \
  do {                                \
    _tile_loadd(4, (p), 64);          \
    _tile_loadd(5, (p) + TILE, 64);   \
  } while (0)
#define KPIG_LOAD_B(p) \
  do {                                \
    _tile_loadd(6, (p), 64);          \
    _tile_loadd(7, (p) + TILE, 64);   \
  } while (0)
#define KPIG_MUL4()            \
  do {                         \
    _tile_dpbf16ps(0, 4, 6);   \
    _tile_dpbf16ps(1, 4, 7);   \
    _tile_dpbf16ps(2, 5, 6);   \
    _tile_dpbf16ps(3, 5, 7);   \
  } while (0)

// C(32, 32) (=|+=) A panel · B panel over kt_n tile steps, starting from bias (32 values, one per
// column) instead of zero when it is given and acc is not.
// PARTS = 1: one bf16 piece per operand. PARTS = 3: the pieces (hi, mid, lo) of each operand lie
// a_ps (b_ps) elements apart, and the six products that carry float32's precision accumulate,
// ordered so that each step loads 14 tiles for 24 multiplies.
template <int PARTS>
__attribute__((target("amx-tile,amx-bf16")))
void kernel(int64_t kt_n, const uint16_t* a, int64_t a_ps, const uint16_t* b, int64_t b_ps, float* c, int64_t ldc, bool acc,
            const float* bias) {
  const int64_t stride = ldc * int64_t(sizeof(float));
  if (acc) {
    _tile_loadd(0, c, stride);
    _tile_loadd(1, c + 16, stride);
    _tile_loadd(2, c + 16 * ldc, stride);
    _tile_loadd(3, c + 16 * ldc + 16, stride);
  } else if (bias) {  // every row starts from the bias (a row stride of 0)
    _tile_loadd(0, bias, 0);
    _tile_loadd(1, bias + 16, 0);
    _tile_loadd(2, bias, 0);
    _tile_loadd(3, bias + 16, 0);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t kt = 0; kt < kt_n; kt++, a += 2 * TILE, b += 2 * TILE) {
    if (PARTS == 1) {
      KPIG_LOAD_A(a);
      KPIG_LOAD_B(b);
      KPIG_MUL4();
      continue;
    }
    // hi·lo, hi·mid, mid·mid, mid·hi, lo·hi, hi·hi (the smallest terms first)
    KPIG_LOAD_A(a);
    KPIG_LOAD_B(b + 2 * b_ps);
    KPIG_MUL4();
    KPIG_LOAD_B(b + b_ps);
    KPIG_MUL4();
    KPIG_LOAD_A(a + a_ps);
    KPIG_MUL4();
    KPIG_LOAD_B(b);
    KPIG_MUL4();
    KPIG_LOAD_A(a + 2 * a_ps);
    KPIG_MUL4();
    KPIG_LOAD_A(a);
    KPIG_MUL4();
  }
  _tile_stored(0, c, stride);
  _tile_stored(1, c + 16, stride);
  _tile_stored(2, c + 16 * ldc, stride);
  _tile_stored(3, c + 16 * ldc + 16, stride);
}
#undef KPIG_LOAD_A
#undef KPIG_LOAD_B
#undef KPIG_MUL4

}  // namespace

namespace {

// The CPU has AMX-BF16 (and the AVX-512 used to pack for it) and Linux granted the tile state.
bool amx_hardware() {
  static const bool yes = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512bf16"))
      return false;
    unsigned eax, ebx, ecx, edx;
    __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
    const bool amx_bf16 = (edx >> 22) & 1, amx_tile = (edx >> 24) & 1;
    return amx_bf16 && amx_tile && request_amx();
  }();
  return yes;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

bool amx_available() {
  static const bool yes = [] {
    const std::string bf16 = env("KPIG_BF16_ISA"), isa = env("KPIG_ISA");
    return (bf16.empty() || bf16 == "amx") && isa != "scalar" && isa != "avx2" && amx_hardware();
  }();
  return yes;
}

bool amx_fp32() {
  static const bool yes = [] {
    const std::string isa = env("KPIG_ISA");
    return (isa.empty() || isa == "amx") && amx_hardware();
  }();
  return yes;
}

namespace {

// The driver, for parts = 1 (bf16) or 3 (float32 as three bf16 pieces). Both operands are packed
// once per call and shared by the threads: A whole, B a column group at a time (bounded scratch),
// unless prepacked holds the whole B (pack_b's layout over all of K and N: 32-column panels of
// kt_all steps, piece after piece, prepacked_ps elements apart). Then tasks (a column block and a
// range of rows) sweep their blocks.
void run_amx(ThreadPool* pool, int parts, int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs,
             const float* B, int64_t b_rs, int64_t b_cs, const uint16_t* prepacked, int64_t prepacked_ps, float* C, int64_t ldc,
             bool accumulate, const float* bias) {
  const int64_t panels = (M + 31) / 32, kt_all = (K + KT - 1) / KT, panel_size = kt_all * 2 * TILE;
  thread_local AlignedBuf<uint16_t> packed_a, packed_b;
  auto each = [&](int64_t n, const std::function<void(int64_t, int)>& fn) {
    if (pool && n > 1) pool->parallel_for(n, fn);
    else for (int64_t t = 0; t < n; t++) fn(t, 0);
  };
  uint16_t* pa = packed_a.get(size_t(panels * parts * panel_size));
  each(panels, [&](int64_t p, int) { pack_a_panel(A, a_rs, a_cs, M, K, p, parts, panel_size, pa + p * parts * panel_size); });

  // Columns per group: whole NC blocks whose packed B fits in GROUP_ELEMS.
  const int64_t group = prepacked ? N : std::max<int64_t>(1, GROUP_ELEMS / (parts * panel_size * (NC / 32))) * NC;
  const int nthreads = pool ? pool->size() : 1;
  const auto run_kernel = parts == 1 ? kernel<1> : kernel<3>;
  // k values per block: all of K up to 1024, so that each C block is written once; longer K in
  // equal blocks of at most 768 (A block and B micro-panel stay within L2). A function of K only.
  const int64_t k_blocks = K <= 1024 ? 1 : (K + 767) / 768;
  const int64_t KC = ((K + k_blocks - 1) / k_blocks + KT - 1) / KT * KT;
  for (int64_t g0 = 0; g0 < N; g0 += group) {
    const int64_t gn = std::min(group, N - g0);
    const uint16_t* pb = prepacked;
    int64_t b_ps = prepacked_ps;
    if (!prepacked) {
      const int64_t gpanels = (gn + 31) / 32;
      b_ps = gpanels * panel_size;
      uint16_t* buf = packed_b.get(size_t(parts * b_ps));
      each(gpanels, [&](int64_t p, int) {
        pack_b(B, b_rs, b_cs, 0, K, g0 + 32 * p, std::min<int64_t>(32, gn - 32 * p), parts, b_ps, buf + p * panel_size);
      });
      pb = buf;
    }
    const int64_t nb = (gn + NC - 1) / NC;
    int64_t mb = nb >= 2 * nthreads ? 1 : (2 * nthreads + nb - 1) / nb;
    mb = std::max<int64_t>(1, std::min(mb, panels));
    const int64_t rows_per = ((M + mb - 1) / mb + 31) / 32 * 32;
    each(mb * nb, [&](int64_t task, int) {
      const int64_t ib = task % mb, jb = task / mb;
      const int64_t r0 = ib * rows_per, r1 = std::min(M, r0 + rows_per);
      const int64_t j0 = jb * NC, nc = std::min(NC, gn - j0);  // relative to the group
      if (r0 >= r1) return;
      configure_tiles();
      alignas(64) float tile[32 * 32], bias_pad[32];
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kt_n = (std::min(KC, K - k0) + KT - 1) / KT;
        const bool acc = accumulate || k0 > 0;
        for (int64_t i0 = r0; i0 < r1; i0 += MC) {
          const int64_t mc = std::min(MC, r1 - i0);
          for (int64_t jp = 0; jp < nc; jp += 32) {
            const uint16_t* bp = pb + ((j0 + jp) / 32) * panel_size + (k0 / KT) * 2 * TILE;
            const int64_t cols = std::min<int64_t>(32, nc - jp);
            for (int64_t ip = 0; ip < mc; ip += 32) {
              const uint16_t* ap = pa + ((i0 + ip) / 32) * parts * panel_size + (k0 / KT) * 2 * TILE;
              const int64_t rows = std::min<int64_t>(32, mc - ip);
              float* c = C + (i0 + ip) * ldc + g0 + j0 + jp;
              const float* bj = bias ? bias + g0 + j0 + jp : nullptr;
              if (bj && cols < 32) {
                std::memset(bias_pad, 0, sizeof bias_pad);
                std::memcpy(bias_pad, bj, sizeof(float) * size_t(cols));
                bj = bias_pad;
              }
              if (rows == 32 && cols == 32) {
                run_kernel(kt_n, ap, panel_size, bp, b_ps, c, ldc, acc, bj);
                continue;
              }
              // Edge block: through a full tile, with the same arithmetic as a whole block, so a
              // row's result does not depend on where the block edges fall.
              if (acc)
                for (int64_t r = 0; r < rows; r++) std::memcpy(tile + r * 32, c + r * ldc, sizeof(float) * size_t(cols));
              run_kernel(kt_n, ap, panel_size, bp, b_ps, tile, 32, acc, bj);
              for (int64_t r = 0; r < rows; r++) std::memcpy(c + r * ldc, tile + r * 32, sizeof(float) * size_t(cols));
            }
          }
        }
      }
    });
  }
}

// Pieces per operand for this pool's matmuls: 1 in bf16 mode, 3 for float32.
int parts_of(const ThreadPool* pool) { return pool && pool->matmul_bf16 ? 1 : 3; }

}  // namespace

void gemm_amx(ThreadPool* pool, int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
              int64_t b_rs, int64_t b_cs, float* C, int64_t ldc, bool accumulate, const float* bias) {
  run_amx(pool, parts_of(pool), M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, nullptr, 0, C, ldc, accumulate, bias);
}

PackedB::~PackedB() {
  std::free(data_);
  std::free(fma_);
}

void PackedB::pack(ThreadPool* pool, int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs) {
  std::free(data_);
  data_ = nullptr;
  K_ = K;
  N_ = N;
  parts_ = parts_of(pool);
  if (K <= 0 || N <= 0) return;
  if (!(parts_ == 1 ? amx_available() : amx_fp32())) {
    if (parts_ == 1) return;  // bf16 without AMX: gemm() rounds and packs per call
    const int64_t n = fma_packed_size(K, N);
    if (n != fma_n_) {
      std::free(fma_);
      fma_n_ = 0;
      fma_ = static_cast<float*>(std::aligned_alloc(64, (size_t(n) * sizeof(float) + 63) / 64 * 64));
      if (!fma_) throw std::bad_alloc();
      fma_n_ = n;
    }
    fma_pack_b(pool, K, N, B, b_rs, b_cs, fma_);
    return;
  }
  std::free(fma_);
  fma_ = nullptr;
  fma_n_ = 0;
  // The whole of K in one pack_b call per 32-column panel: panel jp holds kt_all steps.
  const int64_t kt_all = (K + KT - 1) / KT, panels = (N + 31) / 32, panel_size = kt_all * 2 * TILE;
  plane_ = panels * panel_size;
  data_ = static_cast<uint16_t*>(std::aligned_alloc(64, size_t(parts_ * plane_) * sizeof(uint16_t)));
  if (!data_) throw std::bad_alloc();
  pool->parallel_for(panels, [&](int64_t p, int) {
    pack_b(B, b_rs, b_cs, 0, K, 32 * p, std::min<int64_t>(32, N - 32 * p), parts_, plane_, data_ + p * panel_size);
  });
}

void gemm_packed(ThreadPool* pool, int64_t M, const float* A, int64_t a_rs, int64_t a_cs, const PackedB& B, float* C, int64_t ldc,
                 bool accumulate) {
  if (M <= 0) return;
  if (B.fma_) return gemm_fma(pool, M, B.N_, B.K_, A, a_rs, a_cs, nullptr, 0, 0, B.fma_, C, ldc, accumulate);
  run_amx(pool, B.parts_, M, B.N_, B.K_, A, a_rs, a_cs, nullptr, 0, 0, B.data_, B.plane_, C, ldc, accumulate, nullptr);
}

}  // namespace kpig
