// GEMM throughput of the engine's float32 matmul on the projection shapes of the bench models:
// y(M,N) = x(M,K)·W(N,K)ᵀ (nn.Linear layout, as the forward pass calls it). Prints one JSON line per
// shape with the median GFLOP/s of `reps` calls; bench/gemm.mjs sets KPIG_ISA and compares with
// the FMA peak measured in the same run.
//   kpig_bench_gemm [threads=2] [reps=7] [M=2048] [shapes=N:K,N:K,...]
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
  for (auto [N, K] : shapes) {
    kpig::Floats x(size_t(M * K)), W(size_t(N * K)), y(size_t(M * N));  // aligned, as the engine's arrays
    for (auto& v : x) v = rnd();
    for (auto& v : W) v = rnd();
    std::vector<double> ts;
    for (int r = 0; r < reps + 1; r++) {
      const auto t0 = std::chrono::steady_clock::now();
      kpig::linear(&pool, M, N, K, x.data(), K, W.data(), nullptr, y.data(), N);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r) ts.push_back(dt);
    }
    std::sort(ts.begin(), ts.end());
    const double med = ts[ts.size() / 2];
    std::printf("{\"isa\":\"%s\",\"M\":%lld,\"N\":%lld,\"K\":%lld,\"gflops\":%.1f,\"best_gflops\":%.1f}\n", kpig::gemm_isa(),
                (long long)M, (long long)N, (long long)K, 2.0 * M * N * K / med / 1e9, 2.0 * M * N * K / ts[0] / 1e9);
  }
  return 0;
}
