// Fused LM head + signed-weighted cross-entropy, forward and backward, streamed over row chunks:
//   loss = Σ_r w_r · (−log softmax(h_r·Wᵀ)[y_r])
//   dh_r = w_r · (softmax − onehot(y_r))·W,   gW += Σ_r w_r · (softmax − onehot(y_r))ᵀ·h_r
// Only `chunk × V` logits exist at a time (never rows × V), and rows with w = 0 are not passed in.
// Legend: C = hidden size, V = vocabulary.
#pragma once
#include <cstdint>
#include <vector>

#include "../backend/backend.h"  // CeRow

namespace kpig {

class ThreadPool;


// Writes dh rows of the listed rows (others untouched), adds into gW when non-null, and stores each
// row's NLL in nll[i]. `chunk` rows of logits are held at a time.
void fused_linear_ce(ThreadPool* pool, const float* hidden, int64_t C, const float* W, int64_t V,
                     const std::vector<CeRow>& rows, float* dh, float* gW, double* nll, int64_t chunk = 256);

}  // namespace kpig
