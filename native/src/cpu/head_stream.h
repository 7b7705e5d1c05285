// The LM head streamed over rows, shared by log-probabilities, IG scoring and the fused weighted
// cross-entropy: only `chunk` rows of logits exist at a time (never rows × V).
// Legend: C = hidden size, V = vocabulary.
#pragma once
#include <cstdint>
#include <functional>

#include "../core/memory.h"

namespace kpig {

class ThreadPool;
class PackedB;

// For each chunk of rows [first, first + count) of the n: row(i) points at row i's hidden state
// (C floats), which is gathered into `hidden`; logits(count, V) = hidden·Wᵀ, with W (V, C) row-major,
// or `packed` when given and not empty; then reduce(first, count, hidden, logits). `hidden` and
// `logits` are the caller's buffers (kept between calls), sized here.
void stream_head(ThreadPool* pool, int64_t n, int64_t chunk, int64_t C, int64_t V, const float* W, const PackedB* packed,
                 Floats& hidden, Floats& logits, const std::function<const float*(int64_t i)>& row,
                 const std::function<void(int64_t first, int64_t count, float* hidden, float* logits)>& reduce);

}  // namespace kpig
