#include "head_stream.h"

#include <algorithm>
#include <cstring>

#include "gemm.h"
#include "gemm_amx.h"

namespace kpig {

void stream_head(ThreadPool* pool, int64_t n, int64_t chunk, int64_t C, int64_t V, const float* W, const PackedB* packed,
                 Floats& hidden, Floats& logits, const std::function<const float*(int64_t i)>& row,
                 const std::function<void(int64_t first, int64_t count, float* hidden, float* logits)>& reduce) {
  if (n <= 0) return;
  const int64_t rows = std::min(chunk, n);
  hidden.resize(size_t(rows * C));
  logits.resize(size_t(rows * V));
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t count = std::min(chunk, n - first);
    for (int64_t i = 0; i < count; i++) std::memcpy(&hidden[size_t(i * C)], row(first + i), sizeof(float) * size_t(C));
    if (packed && !packed->empty()) gemm_packed(pool, count, hidden.data(), C, 1, *packed, logits.data(), V, false);
    else gemm(pool, count, V, C, hidden.data(), C, 1, W, 1, C, logits.data(), V, false);
    reduce(first, count, hidden.data(), logits.data());
  }
}

}  // namespace kpig
