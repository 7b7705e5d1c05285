// Peak memory of the LM-head loss (forward + backward) for R rows × vocab V: the fused streaming
// kernel of the engine versus a naive implementation that materialises all R × V logits. Run once
// per mode (each in its own process, so peak RSS is that mode's); bench/ce-memory.mjs compares.
//   kpig_bench_ce fused|naive [rows=4096] [vocab=50257] [hidden=768]
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../native/src/core/threadpool.h"
#include "../../native/src/cpu/fused_ce.h"
#include "../../native/src/cpu/gemm.h"
#include "../../native/src/cpu/ops.h"

static double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "fused";
  const int64_t R = argc > 2 ? std::atoll(argv[2]) : 4096, V = argc > 3 ? std::atoll(argv[3]) : 50257,
                C = argc > 4 ? std::atoll(argv[4]) : 768;
  kpig::ThreadPool pool(kpig::default_thread_count());
  // Inputs and the outputs both modes must produce: hidden, head weight, dh, gW.
  std::vector<float> h(size_t(R * C)), W(size_t(V * C)), dh(size_t(R * C)), gW(size_t(V * C), 0.f);
  uint64_t s = 12345;
  auto rnd = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return float(double(s >> 40) / double(1ull << 24) - 0.5);
  };
  for (auto& x : h) x = rnd();
  for (auto& x : W) x = 0.05f * rnd();
  std::vector<kpig::CeRow> rows(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; r++) rows[size_t(r)] = {r, int32_t((r * 7919) % V), 1.f / float(R)};
  std::vector<double> nll(static_cast<size_t>(R));
  std::memset(dh.data(), 0, dh.size() * 4);
  std::memset(gW.data(), 0, gW.size() * 4);
  const double base = peak_rss_mb();  // inputs and outputs resident

  double loss = 0;
  if (mode == "fused") {
    kpig::fused_linear_ce(&pool, h.data(), C, W.data(), V, rows, dh.data(), gW.data(), nll.data());
    for (double x : nll) loss += x / double(R);
  } else if (mode == "naive") {
    std::vector<float> logits(size_t(R * V));  // all R × V logits at once
    kpig::gemm(&pool, R, V, C, h.data(), C, 1, W.data(), 1, C, logits.data(), V, false);
    for (int64_t r = 0; r < R; r++) {
      float* lg = &logits[size_t(r * V)];
      const float lse = kpig::logsumexp_row(lg, V);
      loss += (double(lse) - double(lg[rows[size_t(r)].target])) / double(R);
      kpig::exp_shift_inplace(lg, V, lse, rows[size_t(r)].weight);
      lg[rows[size_t(r)].target] -= rows[size_t(r)].weight;
    }
    kpig::gemm(&pool, R, C, V, logits.data(), V, 1, W.data(), C, 1, dh.data(), C, false);
    kpig::gemm(&pool, V, C, R, logits.data(), 1, V, h.data(), C, 1, gW.data(), C, true);
  } else {
    std::fprintf(stderr, "usage: kpig_bench_ce fused|naive [rows] [vocab] [hidden]\n");
    return 2;
  }
  double checksum = 0;
  for (size_t i = 0; i < dh.size(); i += 997) checksum += dh[i];
  for (size_t i = 0; i < gW.size(); i += 997) checksum += gW[i];
  std::printf("{\"mode\":\"%s\",\"rows\":%lld,\"vocab\":%lld,\"hidden\":%lld,\"loss\":%.9f,\"checksum\":%.9g,"
              "\"base_rss_mb\":%.1f,\"peak_rss_mb\":%.1f,\"head_mb\":%.1f}\n",
              mode.c_str(), (long long)R, (long long)V, (long long)C, loss, checksum, base, peak_rss_mb(), peak_rss_mb() - base);
  return 0;
}
