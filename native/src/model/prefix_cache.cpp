#include "prefix_cache.h"

#include <algorithm>
#include <cstring>

namespace kpig {

namespace {
int64_t lcp(const int32_t* a, int64_t na, const int32_t* b, int64_t nb) {
  const int64_t n = std::min(na, nb);
  int64_t i = 0;
  while (i < n && a[i] == b[i]) i++;
  return i;
}
int64_t bytes_per_token(const ModelConfig& c) { return int64_t(c.layers) * 2 * c.kv_heads * c.head_dim * int64_t(sizeof(float)); }
}  // namespace

void PrefixStore::set_max_bytes(int64_t bytes) {
  max_bytes_ = std::max<int64_t>(0, bytes);
  while (bytes_ > max_bytes_ && !lru_.empty()) {
    bytes_ -= lru_.back().bytes;
    lru_.pop_back();
    stats.evictions++;
  }
  stats.entries = int64_t(lru_.size());
  stats.bytes = bytes_;
}

void PrefixStore::clear() {
  lru_.clear();
  bytes_ = 0;
  stats.entries = stats.bytes = 0;
}

std::pair<const KVCache*, int64_t> PrefixStore::find(const int32_t* t, int64_t len) {
  auto best = lru_.end();
  int64_t best_n = 0;
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    const int64_t n = lcp(t, len, it->tokens.data(), int64_t(it->tokens.size()));
    if (n > best_n) best_n = n, best = it;
  }
  if (best == lru_.end() || best_n < kMinShared) return {nullptr, 0};
  lru_.splice(lru_.begin(), lru_, best);  // most recently used
  return {lru_.front().kv.get(), best_n};
}

void PrefixStore::add(const ModelConfig& c, const int32_t* t, int64_t p, const KVCache& src) {
  if (!enabled() || p < kMinShared) return;
  for (auto it = lru_.begin(); it != lru_.end(); ++it)
    if (lcp(t, p, it->tokens.data(), int64_t(it->tokens.size())) == p) {  // already held (as a prefix of an entry)
      lru_.splice(lru_.begin(), lru_, it);
      return;
    }
  const int64_t bytes = p * bytes_per_token(c);
  if (bytes > max_bytes_) return;
  Entry e;
  e.tokens.assign(t, t + p);
  e.kv = std::make_unique<KVCache>(c, p);
  const size_t n = size_t(p * c.kv_heads * c.head_dim);
  for (int64_t l = 0; l < c.layers; l++) {
    std::memcpy(e.kv->k[size_t(l)].data(), src.k[size_t(l)].data(), n * sizeof(float));
    std::memcpy(e.kv->v[size_t(l)].data(), src.v[size_t(l)].data(), n * sizeof(float));
  }
  e.bytes = bytes;
  // An entry that is a prefix of the new one is now redundant.
  for (auto it = lru_.begin(); it != lru_.end();)
    if (int64_t(it->tokens.size()) <= p && lcp(t, p, it->tokens.data(), int64_t(it->tokens.size())) == int64_t(it->tokens.size())) {
      bytes_ -= it->bytes;
      it = lru_.erase(it);
    } else {
      ++it;
    }
  lru_.push_front(std::move(e));
  bytes_ += bytes;
  while (bytes_ > max_bytes_ && lru_.size() > 1) {
    bytes_ -= lru_.back().bytes;
    lru_.pop_back();
    stats.evictions++;
  }
  stats.entries = int64_t(lru_.size());
  stats.bytes = bytes_;
}

PrefixPlan plan_prefixes(PrefixStore& store, const std::vector<const int32_t*>& seqs, const std::vector<int64_t>& lens,
                         const std::vector<int64_t>& cap, const std::vector<KVCache*>& caches) {
  const size_t n = seqs.size();
  PrefixPlan plan;
  plan.p.assign(n, 0);
  plan.from.assign(n, nullptr);
  plan.common.assign(n, 0);
  if (!store.enabled()) return plan;
  for (size_t i = 0; i < n; i++) {
    int64_t best = 0;
    const KVCache* from = nullptr;
    for (size_t j = 0; j < n; j++) {
      if (j == i) continue;
      const int64_t l = lcp(seqs[i], lens[i], seqs[j], lens[j]);
      plan.common[i] = std::max(plan.common[i], l);
      if (j < i && l > best) best = l, from = caches[j];
    }
    const auto [kv, sl] = store.find(seqs[i], lens[i]);
    plan.common[i] = std::max(plan.common[i], sl);
    const bool stored = sl > best;
    if (stored) best = sl, from = kv;
    best = std::min(best, cap[i]);
    if (best < PrefixStore::kMinShared) continue;
    plan.p[i] = best;
    plan.from[i] = from;
    store.stats.hits++;
    store.stats.tokens_reused += best;
    if (stored) store.stats.store_hits++;
  }
  store.stats.sequences += int64_t(n);
  for (size_t i = 0; i < n; i++) store.stats.tokens += lens[i];
  return plan;
}

void store_prefixes(PrefixStore& store, const ModelConfig& c, const PrefixPlan& plan, const std::vector<const int32_t*>& seqs,
                    const std::vector<KVCache*>& caches) {
  if (!store.enabled()) return;
  for (size_t i = 0; i < seqs.size(); i++) {
    // Positions [0, min(common, computed end)) of the sequence's cache hold its keys and values.
    const int64_t p = std::min(plan.common[i], caches[i] ? caches[i]->capacity : 0);
    if (p >= PrefixStore::kMinShared && caches[i]) store.add(c, seqs[i], p, *caches[i]);
  }
}

}  // namespace kpig
