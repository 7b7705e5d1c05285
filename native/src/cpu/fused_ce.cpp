#include "fused_ce.h"

#include <algorithm>
#include <cstring>

#include "../core/memory.h"
#include "../core/threadpool.h"
#include "gemm.h"
#include "ops.h"

namespace kpig {

void fused_linear_ce(ThreadPool* pool, const float* hidden, int64_t C, const float* W, int64_t V,
                     const std::vector<CeRow>& rows, float* dh, float* gW, double* nll, int64_t chunk) {
  Floats hc(size_t(chunk * C)), logits(size_t(chunk * V)), dhc(size_t(chunk * C));
  for (size_t i0 = 0; i0 < rows.size(); i0 += size_t(chunk)) {
    const int64_t n = std::min<int64_t>(chunk, int64_t(rows.size() - i0));
    for (int64_t i = 0; i < n; i++) std::memcpy(&hc[size_t(i * C)], hidden + rows[i0 + size_t(i)].row * C, sizeof(float) * size_t(C));
    // logits(n, V) = hc·Wᵀ
    gemm(pool, n, V, C, hc.data(), C, 1, W, 1, C, logits.data(), V, false);
    auto body = [&](int64_t i, int) {
      const CeRow& r = rows[i0 + size_t(i)];
      float* lg = &logits[size_t(i * V)];
      const float lse = logsumexp_row(lg, V);
      nll[i0 + size_t(i)] = double(lse) - double(lg[r.target]);
      exp_shift_inplace(lg, V, lse, r.weight);  // w·softmax
      lg[r.target] -= r.weight;
    };
    if (pool) pool->parallel_for(n, body);
    else for (int64_t i = 0; i < n; i++) body(i, 0);
    // dhc(n, C) = dlogits·W ; gW(V, C) += dlogitsᵀ·hc
    gemm(pool, n, C, V, logits.data(), V, 1, W, C, 1, dhc.data(), C, false);
    if (gW) gemm(pool, V, C, n, logits.data(), 1, V, hc.data(), C, 1, gW, C, true);
    for (int64_t i = 0; i < n; i++) std::memcpy(dh + rows[i0 + size_t(i)].row * C, &dhc[size_t(i * C)], sizeof(float) * size_t(C));
  }
}

}  // namespace kpig
