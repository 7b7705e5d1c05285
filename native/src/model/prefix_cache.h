// Shared token prefixes, computed once. Sequences of one call that begin with the same tokens (every
// instance of a task under one instruction; the masked variants of that instruction) take the
// keys and values of their common prefix from the first of them, and a bounded store (LRU by bytes)
// keeps such prefixes between calls, so the next batch of the same task starts after its
// instruction. Keys and values at position t depend only on tokens [0, t] (causal attention), so
// a prefix of any stored sequence serves any sequence that starts with it.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "model_impl.h"

namespace kpig {

class PrefixStore {
 public:
  // Shortest prefix worth storing or sharing (shorter ones cost more in copies than they save).
  static constexpr int64_t kMinShared = 8;

  // max_bytes = 0 turns sharing between sequences off (a pair's full and masked sequences still
  // share their common start: that is how IG scoring always ran).
  void set_max_bytes(int64_t bytes);
  int64_t max_bytes() const { return max_bytes_; }
  bool enabled() const { return max_bytes_ > 0; }
  // Drops every entry (the weights or the matmul mode changed).
  void clear();

  // The longest stored prefix of t[0, len): its cache and length (nullptr, 0 when none ≥ kMinShared).
  std::pair<const KVCache*, int64_t> find(const int32_t* t, int64_t len);
  // Keeps t[0, p) with its keys and values (positions [0, p) of src) unless an entry already holds
  // that prefix; evicts the least recently used entries past max_bytes.
  void add(const ModelConfig& c, const int32_t* t, int64_t p, const KVCache& src);

  PrefixCacheStats stats;

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    std::unique_ptr<KVCache> kv;
    int64_t bytes = 0;
  };
  std::list<Entry> lru_;  // most recently used first
  int64_t max_bytes_ = int64_t(256) << 20;
  int64_t bytes_ = 0;
};

// Plans the prefix sharing of one call's sequences, in order: for sequence i, the earlier sequence
// (its cache caches[j]) or store entry with the longest common prefix, capped at cap[i] (rows from
// cap[i] on are computed by the sequence itself). from[i] is what a SeqRun's prefix_of takes.
struct PrefixPlan {
  std::vector<int64_t> p;              // shared length per sequence
  std::vector<const KVCache*> from;    // where its first p positions come from (null when p = 0)
  std::vector<int64_t> common;         // longest common prefix with any other sequence or entry
};
PrefixPlan plan_prefixes(PrefixStore& store, const std::vector<const int32_t*>& seqs, const std::vector<int64_t>& lens,
                         const std::vector<int64_t>& cap, const std::vector<KVCache*>& caches);
// After the call: stores the shared prefixes (common ≥ kMinShared) of the sequences from their caches.
void store_prefixes(PrefixStore& store, const ModelConfig& c, const PrefixPlan& plan, const std::vector<const int32_t*>& seqs,
                    const std::vector<KVCache*>& caches);

}  // namespace kpig
