// C++ unit tests of the core that need no model: the strided GEMM against a plain triple loop for
// every operand layout and edge size, the safetensors reader on well-formed and malformed files,
// the vectorised exp/log/tanh row kernels against double-precision libm, the JSON reader and the
// thread pool. ctest runs it once per ISA (KPIG_ISA=avx2 | scalar) and once
// with the AVX512_BF16 kernel in place of AMX (KPIG_BF16_ISA=avx512_bf16).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>
#include <unistd.h>

#include "../src/core/json.h"
#include "../src/core/memory.h"
#include "../src/core/safetensors.h"
#include "../src/core/threadpool.h"
#include "../src/cpu/gemm.h"
#include "../src/cpu/gemm_amx.h"
#include "../src/cpu/ops.h"
#include "../src/cpu/simd.h"
#include "kpig/error.h"

static int g_pass = 0, g_fail = 0;

static void check(bool ok, const std::string& what) {
  if (ok) {
    g_pass++;
  } else {
    g_fail++;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

static void test_gemm(kpig::ThreadPool* pool) {
  std::mt19937 rng(42);
  std::normal_distribution<float> nd;
  const int sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {8, 32, 16}, {17, 33, 300}, {130, 70, 513}, {1, 600, 64},
                          {4, 257, 129}, {200, 1030, 40}, {5, 3, 0},
                          // whole 6-row panels of a transposed A, 16-column panels of B with a ragged
                          // edge, and few rows against many columns (the split into column blocks)
                          {96, 50, 77}, {6, 1030, 20}, {12, 2100, 30}};
  for (auto& s : sizes) {
    const int M = s[0], N = s[1], K = s[2];
    for (int layout = 0; layout < 4; layout++) {
      const bool ta = layout & 1, tb = layout & 2;
      std::vector<float> A(size_t(M) * K + 1), B(size_t(K) * N + 1), C(size_t(M) * N), R(size_t(M) * N);
      for (auto& v : A) v = nd(rng);
      for (auto& v : B) v = nd(rng);
      for (auto& v : C) v = nd(rng);
      // A is (M,K) row-major or stored transposed (K,M); B is (K,N) row-major or stored (N,K).
      const int64_t a_rs = ta ? 1 : K, a_cs = ta ? M : 1, b_rs = tb ? 1 : N, b_cs = tb ? K : 1;
      for (int accumulate = 0; accumulate < 2; accumulate++) {
        std::vector<float> Cc = C;
        for (int i = 0; i < M; i++)
          for (int j = 0; j < N; j++) {
            double acc = accumulate ? C[size_t(i) * N + j] : 0.0;
            for (int k = 0; k < K; k++) acc += double(A[i * a_rs + k * a_cs]) * double(B[k * b_rs + j * b_cs]);
            R[size_t(i) * N + j] = float(acc);
          }
        kpig::gemm(pool, M, N, K, A.data(), a_rs, a_cs, B.data(), b_rs, b_cs, Cc.data(), N, accumulate);
        double worst = 0;
        for (size_t i = 0; i < R.size(); i++) worst = std::max(worst, double(std::fabs(Cc[i] - R[i])) / (1.0 + std::sqrt(double(K))));
        check(worst < 1e-5, "gemm " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + " layout " +
                                std::to_string(layout) + " acc " + std::to_string(accumulate) + " err " + std::to_string(worst));
      }
    }
  }
}

// Random operands of an M × N × K product in one of four layouts: A is (M,K) row-major or stored
// transposed (K,M); B is (K,N) row-major or stored (N,K). C0 is a starting C for accumulation.
struct Operands {
  int64_t a_rs, a_cs, b_rs, b_cs;
  std::vector<float> A, B, C0;
};
static Operands make_operands(int M, int N, int K, int layout, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  const bool ta = layout & 1, tb = layout & 2;
  Operands o{ta ? 1 : K, ta ? M : 1, tb ? 1 : N, tb ? K : 1, std::vector<float>(size_t(M) * K), std::vector<float>(size_t(N) * K),
             std::vector<float>(size_t(M) * N)};
  for (auto* v : {&o.A, &o.B, &o.C0})
    for (auto& x : *v) x = nd(rng);
  return o;
}

// Calls fn(M, N, K, layout, operands) for every size and the four layouts.
template <size_t S, typename Fn>
static void for_each_case(const int (&sizes)[S][3], std::mt19937& rng, Fn fn) {
  for (auto& sz : sizes)
    for (int layout = 0; layout < 4; layout++) fn(sz[0], sz[1], sz[2], layout, make_operands(sz[0], sz[1], sz[2], layout, rng));
}

// float32 accuracy at sizes large enough for every float32 path (AMX from three bf16 pieces where the
// CPU has it, else the FMA kernels): the error against a double reference, relative to Σ|a·b|, must
// stay at float32's level (a bf16 or two-piece product would miss by 1e-5 and more). A B packed once
// gives the same products bit for bit (on AMX from gemm()'s 384 rows on, on the FMA kernels always),
// and also serves fewer rows than gemm() sends to AMX.
static void test_gemm_fp32_accuracy() {
  kpig::ThreadPool pool(2);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  check((std::string(kpig::gemm_isa()) == "amx") == kpig::amx_fp32(), "gemm_isa reports amx exactly when float32 runs on AMX");
  // Sizes cross the AMX driver's edges: 32-row/column tiles, 32-k steps, k blocks (K > 1024), 256-row and
  // 1024-column blocks; the first has fewer rows than gemm() sends to AMX.
  const int sizes[][3] = {{100, 45, 301}, {384, 33, 300}, {520, 70, 513}, {400, 1100, 40}, {390, 260, 1030}};
  for_each_case(sizes, rng, [&](int M, int N, int K, int layout, const Operands& o) {
      const int64_t a_rs = o.a_rs, a_cs = o.a_cs, b_rs = o.b_rs, b_cs = o.b_cs;
      const std::vector<float>&A = o.A, &B = o.B, &C0 = o.C0;
      kpig::PackedB packed;
      packed.pack(&pool, K, N, B.data(), b_rs, b_cs);
      check(!packed.empty(), "a float32 B packs (into AMX tiles or FMA panels)");
      std::vector<double> ref(size_t(M) * N), mag(size_t(M) * N);  // Σ a·b and Σ |a·b| in double
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
          double r = 0, m = 0;
          for (int k = 0; k < K; k++) {
            const double p = double(A[i * a_rs + k * a_cs]) * double(B[k * b_rs + j * b_cs]);
            r += p;
            m += std::fabs(p);
          }
          ref[size_t(i) * N + j] = r;
          mag[size_t(i) * N + j] = m;
        }
      for (int accumulate = 0; accumulate < 2; accumulate++) {
        std::vector<float> C = C0, Cp = C0;
        kpig::gemm(&pool, M, N, K, A.data(), a_rs, a_cs, B.data(), b_rs, b_cs, C.data(), N, accumulate);
        if (!packed.empty()) kpig::gemm_packed(&pool, M, A.data(), a_rs, a_cs, packed, Cp.data(), N, accumulate);
        const std::string what = std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + " layout " +
                                 std::to_string(layout) + " acc " + std::to_string(accumulate);
        // AMX serves gemm() from 384 rows on; the FMA panels serve every row count as gemm() does.
        if (!kpig::amx_fp32() || M >= 384) check(Cp == C, "float32 gemm with B packed once, bit for bit: " + what);
        for (const std::vector<float>* out : {&C, &Cp}) {
          if (out == &Cp && packed.empty()) continue;
          double worst = 0;
          for (size_t e = 0; e < C.size(); e++) {
            const double r = ref[e] + (accumulate ? C0[e] : 0.0), m = mag[e] + (accumulate ? std::fabs(C0[e]) : 0.0);
            worst = std::max(worst, std::fabs((*out)[e] - r) / (m + 1e-30));
          }
          check(worst < 5e-7, std::string("float32 gemm (") + kpig::gemm_isa() + (out == &Cp ? ", packed B) " : ") ") + what +
                                  " relative err " + std::to_string(worst));
        }
        // With a bias row (linear layers): C (=|+=) A·B + bias.
        std::vector<float> bias(static_cast<size_t>(N)), Cb = C0;
        for (auto& v : bias) v = nd(rng);
        kpig::gemm(&pool, M, N, K, A.data(), a_rs, a_cs, B.data(), b_rs, b_cs, Cb.data(), N, accumulate, bias.data());
        double worst = 0;
        for (size_t e = 0; e < C.size(); e++) {
          const double bj = bias[e % size_t(N)];
          const double r = ref[e] + (accumulate ? C0[e] : 0.0) + bj, m = mag[e] + (accumulate ? std::fabs(C0[e]) : 0.0) + std::fabs(bj);
          worst = std::max(worst, std::fabs(Cb[e] - r) / (m + 1e-30));
        }
        check(worst < 5e-7, std::string("float32 gemm with bias (") + kpig::gemm_isa() + ") " + what + " relative err " + std::to_string(worst));
      }
  });
}

// bf16 matmuls: both operands rounded to bfloat16, float32 accumulation; the reference sums the
// products of the rounded values in double.
static void test_gemm_bf16() {
  kpig::ThreadPool pool(2);
  pool.matmul_bf16 = true;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  auto round = [](float x) {
    const uint32_t u = uint32_t(kpig::f32_to_bf16(x)) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  check(kpig::f32_to_bf16(1.0f) == 0x3F80 && kpig::f32_to_bf16(1.00390625f) == 0x3F80 && kpig::f32_to_bf16(1.01171875f) == 0x3F82,
        "bf16 rounding is to nearest even");
  // Sizes cross every blocking edge of the AMX and AVX512_BF16 drivers (32-row/column tiles, 32-k
  // steps, k blocks (K > 1024), 256-row and 1024-column blocks).
  const int sizes[][3] = {{8, 32, 16}, {17, 45, 301}, {130, 70, 513}, {3, 100, 7}, {300, 1100, 1030}};
  for_each_case(sizes, rng, [&](int M, int N, int K, int layout, const Operands& o) {
      const int64_t a_rs = o.a_rs, a_cs = o.a_cs, b_rs = o.b_rs, b_cs = o.b_cs;
      const std::vector<float>&A = o.A, &B = o.B, &C0 = o.C0;
      for (int accumulate = 0; accumulate < 2; accumulate++) {
        std::vector<float> C = C0;
        kpig::gemm(&pool, M, N, K, A.data(), a_rs, a_cs, B.data(), b_rs, b_cs, C.data(), N, accumulate);
        // B packed once (the LM head's path): the same products, bit for bit.
        kpig::PackedB packed;
        packed.pack(&pool, K, N, B.data(), b_rs, b_cs);
        check(packed.empty() == !kpig::amx_available(), "a packed B exists exactly when AMX runs the bf16 matmuls");
        if (!packed.empty()) {
          std::vector<float> Cp = C0;
          kpig::gemm_packed(&pool, M, A.data(), a_rs, a_cs, packed, Cp.data(), N, accumulate);
          check(Cp == C, "bf16 gemm with B packed once " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) +
                             " layout " + std::to_string(layout) + " acc " + std::to_string(accumulate));
        }
        std::vector<float> Ar(A.size()), Br(B.size());
        for (size_t e = 0; e < A.size(); e++) Ar[e] = round(A[e]);
        for (size_t e = 0; e < B.size(); e++) Br[e] = round(B[e]);
        double worst = 0;
        for (int i = 0; i < M; i++)
          for (int j = 0; j < N; j++) {
            double ref = accumulate ? C0[size_t(i) * N + j] : 0.0, mag = std::fabs(ref);
            for (int k = 0; k < K; k++) {
              const double p = double(Ar[i * a_rs + k * a_cs]) * double(Br[k * b_rs + j * b_cs]);
              ref += p;
              mag += std::fabs(p);
            }
            worst = std::max(worst, std::fabs(C[size_t(i) * N + j] - ref) / (mag + 1e-30));
          }
        check(worst < 1e-5, std::string("bf16 gemm (") + kpig::gemm_bf16_isa() + ") " + std::to_string(M) + "x" + std::to_string(N) +
                                "x" + std::to_string(K) + " layout " + std::to_string(layout) + " acc " + std::to_string(accumulate) +
                                " err " + std::to_string(worst));
      }
  });
}

static std::string tmp_path(const char* name) { return "/tmp/kpig_test_" + std::to_string(getpid()) + "_" + name; }

static void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

static std::string st_file(const std::string& header, const std::string& data, int64_t declared_len = -1) {
  std::string h = header;
  uint64_t n = declared_len >= 0 ? uint64_t(declared_len) : h.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[size_t(i)] = char((n >> (8 * i)) & 0xFF);
  return out + h + data;
}

static void expect_error(const std::string& name, const std::string& bytes, const std::string& needle) {
  const std::string path = tmp_path(name.c_str());
  write_file(path, bytes);
  try {
    kpig::SafetensorsFile f(path);
    check(false, "safetensors '" + name + "' should fail");
  } catch (const kpig::Error& e) {
    const std::string msg = e.what();
    check(e.code() == kpig::ErrorCode::Safetensors, "safetensors '" + name + "' code");
    check(msg.find(path) != std::string::npos, "safetensors '" + name + "' names the file: " + msg);
    check(msg.find(needle) != std::string::npos, "safetensors '" + name + "' says '" + needle + "': " + msg);
  }
  std::remove(path.c_str());
}

static void test_safetensors() {
  // A valid file: one F32 (2,2) and one BF16 (3) tensor.
  std::string data(16 + 6, '\0');
  float vals[4] = {1.f, -2.f, 3.5f, 0.25f};
  std::memcpy(&data[0], vals, 16);
  const uint16_t bf[3] = {0x3F80, 0xC000, 0x4049};  // 1, -2, 3.140625
  std::memcpy(&data[16], bf, 6);
  const std::string hdr =
      R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"__metadata__":{"format":"pt"}})";
  const std::string good = tmp_path("good.safetensors");
  write_file(good, st_file(hdr, data));
  {
    kpig::SafetensorsFile f(good);
    check(f.tensors().size() == 2, "two tensors");
    check(f.metadata().at("format") == "pt", "metadata");
    std::vector<float> a(4), b(3);
    kpig::tensor_to_f32(*f.find("a"), a.data());
    kpig::tensor_to_f32(*f.find("b"), b.data());
    check(a[1] == -2.f && a[3] == 0.25f, "F32 values");
    check(b[0] == 1.f && b[1] == -2.f && b[2] == 3.140625f, "BF16 values");
  }
  std::remove(good.c_str());
  check(kpig::f16_to_f32(0x3C00) == 1.f && kpig::f16_to_f32(0xC000) == -2.f, "f16 normals");
  check(kpig::f16_to_f32(0x0001) == std::ldexp(1.f, -24), "f16 subnormal");
  check(std::isinf(kpig::f16_to_f32(0x7C00)), "f16 inf");

  expect_error("truncated", std::string("\x10\x00\x00", 3), "truncated");
  expect_error("header_beyond", st_file("{}", "", 1000), "runs past the end");
  expect_error("not_json", st_file("{nope", ""), "not valid JSON");
  expect_error("unknown_dtype", st_file(R"({"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", std::string(1, '\0')), "unknown dtype 'F8'");
  expect_error("size_mismatch", st_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')), "shape × dtype size = 12");
  expect_error("out_of_range", st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')), "out of range");
  expect_error("overlap",
               st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       std::string(12, '\0')),
               "overlap");
  expect_error("gap", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')), "gap");
  expect_error("trailing", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0')), "trailing");
  try {
    kpig::SafetensorsFile f("/nonexistent/kpig.safetensors");
    check(false, "missing file should fail");
  } catch (const kpig::Error& e) {
    check(e.code() == kpig::ErrorCode::IO, "missing file is an IO error");
  }
}

static void test_json() {
  const char* t = R"({"a": [1, 2.5, -3e2], "b": "x\u00e9\n", "c": {"d": null, "e": true}})";
  kpig::Json j = kpig::Json::parse(t, std::strlen(t));
  check(j.find("a")->array.size() == 3 && j.find("a")->array[2].number == -300, "json numbers");
  check(j.find("a")->array[0].is_integer && !j.find("a")->array[1].is_integer, "json integer flag");
  check(j.find("b")->str == "x\xc3\xa9\n", "json string escapes");
  check(j.find("c")->find("e")->boolean, "json nested");
  for (const char* bad : {"{", "[1,]", "{\"a\" 1}", "tru", "1 2", "\"\\q\""}) {
    bool threw = false;
    try {
      kpig::Json::parse(bad, std::strlen(bad));
    } catch (const std::runtime_error& e) {
      threw = std::string(e.what()).find("at byte") != std::string::npos;
    }
    check(threw, std::string("json rejects ") + bad);
  }
}

static void test_threadpool(kpig::ThreadPool* pool) {
  std::vector<int> hits(1000, 0);
  pool->parallel_for(1000, [&](int64_t t, int) { hits[size_t(t)]++; });
  bool all_once = true;
  for (int h : hits) all_once &= h == 1;
  check(all_once, "parallel_for runs every task once");
  bool caught = false;
  try {
    pool->parallel_for(100, [&](int64_t t, int) {
      if (t == 37) throw std::runtime_error("boom");
    });
  } catch (const std::runtime_error&) {
    caught = true;
  }
  check(caught, "parallel_for rethrows");
  int after = 0;
  pool->parallel_for(10, [&](int64_t, int) { __atomic_add_fetch(&after, 1, __ATOMIC_RELAXED); });
  check(after == 10, "pool usable after an exception");
}

// A row's result does not depend on how many rows share the call (packed sequences): with a bias,
// accumulating, for a row that lands in a full register tile in one call and an edge tile in another.
static void test_gemm_row_independence(kpig::ThreadPool* pool) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t N = 45, K = 70;
  std::vector<float> A(static_cast<size_t>(40 * K)), B(static_cast<size_t>(N * K)), bias(static_cast<size_t>(N)), C0(static_cast<size_t>(40 * N));
  for (auto* v : {&A, &B, &bias, &C0})
    for (auto& x : *v) x = nd(rng);
  bool same = true;
  std::vector<float> ref;
  for (int64_t M : {40, 19, 9, 3}) {  // row 2 sits in a full tile (M = 40, 19, 9) and in an edge tile (M = 3)
    std::vector<float> C(C0.begin(), C0.begin() + M * N);
    kpig::gemm(pool, M, N, K, A.data(), K, 1, B.data(), 1, K, C.data(), N, true, bias.data());
    std::vector<float> row(C.begin() + 2 * N, C.begin() + 3 * N);
    if (ref.empty()) ref = row;
    same = same && row == ref;
  }
  check(same, std::string("gemm (") + kpig::gemm_isa() + "): a row's result is the same whatever M is (bias, accumulate)");
}

// The row kernels of the level in use (KPIG_ISA picks it) against double-precision references, at
// the accuracy simd.h states, over lengths with and without a vector tail.
static void test_vector_math() {
  const char* force = std::getenv("KPIG_ISA");
  const std::string f = force ? force : "";
  if (f == "avx2" || f == "scalar") check(f == kpig::simd_level_name(), "KPIG_ISA=" + f + " selects the " + f + " row kernels");
  std::mt19937 rng(7);
  for (int64_t n : {1, 7, 16, 37, 1000}) {
    std::vector<float> x(static_cast<size_t>(n)), y;
    std::uniform_real_distribution<float> wide(-87.f, 88.f), act(-12.f, 12.f), logit(-30.f, 30.f);
    // exp: relative error ≤ 4 float ulps
    for (auto& v : x) v = wide(rng);
    y = x;
    kpig::exp_shift_inplace(y.data(), n, 0.f, 1.f);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) worst = std::max(worst, std::fabs(double(y[size_t(i)]) / std::exp(double(x[size_t(i)])) - 1));
    check(worst < 4.8e-7, std::string("exp (") + kpig::simd_level_name() + ") n=" + std::to_string(n) + " rel err " + std::to_string(worst));
    // GELU (tanh form) and SwiGLU: absolute error ≤ 1e-6 · max(1, |x|)
    for (auto& v : x) v = act(rng);
    y = x;
    kpig::gelu_new_inplace(y.data(), n);
    worst = 0;
    for (int64_t i = 0; i < n; i++) {
      const double v = x[size_t(i)], g = 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
      worst = std::max(worst, std::fabs(y[size_t(i)] - g) / std::max(1.0, std::fabs(v)));
    }
    check(worst < 1e-6, std::string("gelu_new (") + kpig::simd_level_name() + ") n=" + std::to_string(n) + " err " + std::to_string(worst));
    std::vector<float> gu(static_cast<size_t>(2 * n)), out(static_cast<size_t>(n));
    for (auto& v : gu) v = act(rng);
    kpig::swiglu_row(gu.data(), n, out.data());
    worst = 0;
    for (int64_t i = 0; i < n; i++) {
      const double g = gu[size_t(i)], u = gu[size_t(n + i)], r = g / (1 + std::exp(-g)) * u;
      worst = std::max(worst, std::fabs(out[size_t(i)] - r) / std::max(1.0, std::fabs(r)));
    }
    check(worst < 2e-6, std::string("swiglu (") + kpig::simd_level_name() + ") n=" + std::to_string(n) + " err " + std::to_string(worst));
    // log-sum-exp and the IG statistics of two logit rows: KL, JS and entropies within 2e-5 nats
    std::vector<float> lf(static_cast<size_t>(n)), lm(static_cast<size_t>(n));
    for (auto& v : lf) v = logit(rng);
    for (size_t i = 0; i < lm.size(); i++) lm[i] = lf[i] + 0.5f * logit(rng) / 30.f * 8.f;
    double mf = -1e300, mm = -1e300;
    for (int64_t i = 0; i < n; i++) mf = std::max(mf, double(lf[size_t(i)])), mm = std::max(mm, double(lm[size_t(i)]));
    double sf = 0, sm = 0;
    for (int64_t i = 0; i < n; i++) sf += std::exp(lf[size_t(i)] - mf), sm += std::exp(lm[size_t(i)] - mm);
    const double lse_f = mf + std::log(sf), lse_m = mm + std::log(sm);
    check(std::fabs(kpig::logsumexp_row(lf.data(), n) - lse_f) < 2e-6 * std::max(1.0, std::fabs(lse_f)),
          std::string("logsumexp (") + kpig::simd_level_name() + ") n=" + std::to_string(n));
    double kl = 0, js = 0, hf = 0;
    for (int64_t i = 0; i < n; i++) {
      const double a = lf[size_t(i)] - lse_f, b = lm[size_t(i)] - lse_m, p = std::exp(a), q = std::exp(b), mix = std::log(0.5 * (p + q));
      kl += p * (a - b);
      hf -= p * a;
      js += 0.5 * (p * (a - mix) + q * (b - mix));
    }
    const kpig::IgTokenStats st = kpig::ig_token_stats(lf.data(), lm.data(), n, 0);
    check(std::fabs(st.kl - kl) < 2e-5 && std::fabs(st.js - js) < 2e-5 && std::fabs(st.h_f - hf) < 2e-5 &&
              std::fabs(st.nll_f - (lse_f - lf[0])) < 2e-5,
          std::string("ig_token_stats (") + kpig::simd_level_name() + ") n=" + std::to_string(n) + " kl " + std::to_string(st.kl - kl) +
              " js " + std::to_string(st.js - js) + " h " + std::to_string(st.h_f - hf));
  }
  // exp underflows to 0 (or a subnormal), never to garbage, and tanh saturates at ±1
  std::vector<float> tiny = {-200.f, -104.f, -90.f, -88.f, -87.5f, 0.f, 88.f, -150.f, -95.f, -89.f, -87.2f, 1.f, 2.f, 3.f, 4.f, 5.f, -300.f};
  std::vector<float> e = tiny;
  kpig::exp_shift_inplace(e.data(), int64_t(e.size()), 0.f, 1.f);
  bool ok = true;
  for (size_t i = 0; i < e.size(); i++) ok = ok && e[i] >= 0.f && std::fabs(double(e[i]) - std::exp(double(tiny[i]))) <= 1e-6 * std::exp(double(tiny[i])) + 1.2e-38;
  check(ok, std::string("exp on the underflow edge (") + kpig::simd_level_name() + ")");
  std::vector<float> big(32, 40.f);
  for (size_t i = 16; i < big.size(); i++) big[i] = -40.f;
  kpig::gelu_new_inplace(big.data(), int64_t(big.size()));
  check(big[0] == 40.f && big[31] == 0.f, std::string("gelu saturates (") + kpig::simd_level_name() + ")");
}

// The engine's arrays start on a cache line, and large ones on a 2 MiB boundary (memory.h).
static void test_aligned_memory() {
  for (size_t n : {size_t(1), size_t(17), size_t(1000), size_t(1) << 20, size_t(3) << 20}) {
    kpig::Floats v(n, 1.f);
    const auto addr = reinterpret_cast<uintptr_t>(v.data());
    const size_t want = n * sizeof(float) >= (size_t(4) << 20) ? (size_t(2) << 20) : 64;
    check(addr % want == 0, "Floats of " + std::to_string(n) + " starts on a " + std::to_string(want) + "-byte boundary");
    check(v[n - 1] == 1.f, "Floats of " + std::to_string(n) + " holds its values");
  }
  kpig::AlignedBuf<float> buf;
  float* p = buf.get(100);
  check(reinterpret_cast<uintptr_t>(p) % 64 == 0, "AlignedBuf starts on a cache line");
  p = buf.get(5000);
  check(reinterpret_cast<uintptr_t>(p) % 64 == 0, "AlignedBuf starts on a cache line after growing");
}

int main() {
  std::printf("gemm kernel: %s, bf16: %s\n", kpig::gemm_isa(), kpig::gemm_bf16_isa());
  kpig::ThreadPool pool(3);
  test_gemm(nullptr);
  test_gemm(&pool);
  test_gemm_fp32_accuracy();
  test_gemm_row_independence(&pool);
  test_gemm_bf16();
  test_vector_math();
  test_aligned_memory();
  test_safetensors();
  test_json();
  test_threadpool(&pool);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
