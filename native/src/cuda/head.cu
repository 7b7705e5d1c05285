#include "head.h"

#include <algorithm>

#include "gemm.h"
#include "rows.h"

namespace kpig::cuda {

namespace {

// rows(2·count, C): row 2j = hidden[full_row[first + j]], row 2j + 1 = hidden[masked_row[first + j]].
__global__ void gather_pairs_kernel(const float* hidden, const int64_t* full_row, const int64_t* masked_row, int64_t first, int64_t C,
                                    float* rows) {
  const int64_t j = blockIdx.x;
  const float* f = hidden + full_row[first + j] * C;
  const float* m = hidden + masked_row[first + j] * C;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    rows[(2 * j) * C + i] = f[i];
    rows[(2 * j + 1) * C + i] = m[i];
  }
}

}  // namespace

cudaError_t ig_head(const float* hidden, const int64_t* full_row, const int64_t* masked_row, const int32_t* y, int64_t P, int64_t C,
                    const float* W, int64_t V, int64_t chunk, float* rows_buf, float* logits_buf, double* out, cudaStream_t stream) {
  for (int64_t first = 0; first < P; first += chunk) {
    const int64_t count = std::min(chunk, P - first);
    gather_pairs_kernel<<<unsigned(count), 256, 0, stream>>>(hidden, full_row, masked_row, first, C, rows_buf);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    if (cudaError_t e = gemm_bf16(2 * count, V, C, rows_buf, C, W, C, true, logits_buf, V, false, nullptr, stream); e != cudaSuccess) return e;
    // Pair j's full row is logits row 2j and its masked row 2j + 1: stride 2V between pairs.
    if (cudaError_t e = ig_token_stats(logits_buf, logits_buf + V, 2 * V, y + first, count, V, out + first * 6, stream); e != cudaSuccess)
      return e;
  }
  return cudaSuccess;
}

}  // namespace kpig::cuda
