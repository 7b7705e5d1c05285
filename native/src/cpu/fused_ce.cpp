#include "fused_ce.h"

#include <algorithm>
#include <cstring>

#include "../core/memory.h"
#include "../core/threadpool.h"
#include "gemm.h"
#include "head_stream.h"
#include "ops.h"

namespace kpig {

void fused_linear_ce(ThreadPool* pool, const float* hidden, int64_t C, const float* W, int64_t V,
                     const std::vector<CeRow>& rows, float* dh, float* gW, double* nll, int64_t chunk) {
  Floats hc, logits, dhc(size_t(std::min<int64_t>(chunk, int64_t(rows.size())) * C));
  stream_head(pool, int64_t(rows.size()), chunk, C, V, W, nullptr, hc, logits, [&](int64_t i) { return hidden + rows[size_t(i)].row * C; },
              [&](int64_t i0, int64_t n, float* hcp, float* lgs) {
                auto body = [&](int64_t i, int) {
                  const CeRow& r = rows[size_t(i0 + i)];
                  float* lg = lgs + i * V;
                  const float lse = logsumexp_row(lg, V);
                  nll[i0 + i] = double(lse) - double(lg[r.target]);
                  exp_shift_inplace(lg, V, lse, r.weight);  // w·softmax
                  lg[r.target] -= r.weight;
                };
                if (pool) pool->parallel_for(n, body);
                else for (int64_t i = 0; i < n; i++) body(i, 0);
                // dhc(n, C) = dlogits·W ; gW(V, C) += dlogitsᵀ·hc
                gemm(pool, n, C, V, lgs, V, 1, W, C, 1, dhc.data(), C, false);
                if (gW) gemm(pool, V, C, n, lgs, 1, V, hcp, C, 1, gW, C, true);
                for (int64_t i = 0; i < n; i++) std::memcpy(dh + rows[size_t(i0 + i)].row * C, &dhc[size_t(i * C)], sizeof(float) * size_t(C));
              });
}

}  // namespace kpig
