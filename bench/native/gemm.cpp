// GEMM throughput of the engine's float32 matmul on the projection shapes of the bench models, in
// the three layouts a training step calls (W in nn.Linear's (N, K) layout):
//   fwd: y(M,N) = x(M,K)·Wᵀ        dx: dx(M,K) = dy(M,N)·W        dw: gW(N,K) += dyᵀ·x (M summed)
// Prints one JSON line per shape and layout with the median GFLOP/s of `reps` calls; bench/gemm.mjs
// sets KPIG_ISA and compares with the FMA peak measured in the same run.
//   kpig_bench_gemm [threads=2] [reps=7] [M=2048] [shapes=N:K,N:K,...] [layouts=fwd]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include <algorithm>

#include "../../native/src/core/memory.h"
#include "../../native/src/core/threadpool.h"
#include "../../native/src/cpu/gemm.h"

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 7;
  const int64_t M = argc > 3 ? std::atoll(argv[3]) : 2048;
  std::string spec = argc > 4 ? argv[4] : "2304:768,768:768,3072:768,768:3072,960:576,576:576,3072:576,576:1536";
  kpig::ThreadPool pool(threads);
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (size_t p = 0; p < spec.size();) {
    size_t q = spec.find(',', p);
    if (q == std::string::npos) q = spec.size();
    const std::string s = spec.substr(p, q - p);
    const size_t c = s.find(':');
    shapes.push_back({std::atoll(s.substr(0, c).c_str()), std::atoll(s.substr(c + 1).c_str())});
    p = q + 1;
  }
  uint64_t st = 12345;
  auto rnd = [&] {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    return float(double(st >> 40) / double(1ull << 24) - 0.5);
  };
  std::string layouts = argc > 5 ? argv[5] : "fwd";
  for (auto [N, K] : shapes)
    for (const char* layout : {"fwd", "dx", "dw"}) {
      if (layouts.find(layout) == std::string::npos) continue;
      const std::string l = layout;
      kpig::Floats x(size_t(M * K)), W(size_t(N * K)), dy(size_t(M * N)), out(size_t(std::max(M * N, std::max(M * K, N * K))));
      for (auto& v : x) v = rnd();
      for (auto& v : W) v = rnd();
      for (auto& v : dy) v = rnd();
      for (auto& v : out) v = 0.f;
      std::vector<double> ts;
      for (int r = 0; r < reps + 1; r++) {
        const auto t0 = std::chrono::steady_clock::now();
        if (l == "fwd") kpig::gemm(&pool, M, N, K, x.data(), K, 1, W.data(), 1, K, out.data(), N, false);  // x · Wᵀ
        else if (l == "dx") kpig::gemm(&pool, M, K, N, dy.data(), N, 1, W.data(), K, 1, out.data(), K, false);
        else kpig::gemm(&pool, N, K, M, dy.data(), 1, N, x.data(), K, 1, out.data(), K, true);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r) ts.push_back(dt);
      }
      std::sort(ts.begin(), ts.end());
      const double med = ts[ts.size() / 2];
      std::printf("{\"isa\":\"%s\",\"layout\":\"%s\",\"M\":%lld,\"N\":%lld,\"K\":%lld,\"gflops\":%.1f,\"best_gflops\":%.1f}\n",
                  kpig::gemm_isa(), layout, (long long)M, (long long)N, (long long)K, 2.0 * M * N * K / med / 1e9,
                  2.0 * M * N * K / ts[0] / 1e9);
    }
  return 0;
}
