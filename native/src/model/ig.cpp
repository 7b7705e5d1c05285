// Information-gain scoring of full/masked pairs (DESIGN.md §1). Each pair's shared prefix runs once:
// the full sequence runs whole and the masked one only after the prefix, attending to the full
// sequence's prefix keys and values. The LM
// head runs only on response-predicting rows, a chunk of row pairs at a time, and every per-token
// quantity (NLLs, KL, JS, entropies) comes out of one pass over the two logit rows.
// Legend: C = hidden, V = vocab, R = response tokens of a pair.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../cpu/gemm.h"
#include "../cpu/ops.h"
#include "model_impl.h"

namespace kpig {

void Model::score_ig(const IgPair* pairs, int64_t n, IgScores* out, IgTokenScores* per_token) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  const ModelConfig& c = m.info.config;
  const int64_t C = c.hidden, V = c.vocab;
  auto check_seq = [&](int64_t i, const char* which, const int32_t* t, int64_t len) {
    if (len < 2) fail(ErrorCode::Input, "pair " + std::to_string(i) + ": the " + which + " sequence needs at least 2 tokens");
    if (len > c.max_pos)
      fail(ErrorCode::Input, "pair " + std::to_string(i) + ": the " + which + " sequence has " + std::to_string(len) +
                                 " tokens, more than the model's max_position_embeddings (" + std::to_string(c.max_pos) + ")");
    for (int64_t k = 0; k < len; k++)
      if (t[k] < 0 || t[k] >= V)
        fail(ErrorCode::Input, "pair " + std::to_string(i) + ": token id " + std::to_string(t[k]) + " at position " + std::to_string(k) +
                                   " of the " + which + " sequence is outside the vocabulary [0, " + std::to_string(V) + ")");
  };
  std::vector<int64_t> shared(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) {
    const IgPair& p = pairs[i];
    check_seq(i, "full", p.full, p.full_len);
    check_seq(i, "masked", p.masked, p.masked_len);
    const int64_t R = p.response_len;
    if (R < 1 || R > std::min(p.full_len, p.masked_len) - 1)
      fail(ErrorCode::Input, "pair " + std::to_string(i) + ": response_len " + std::to_string(R) + " must be in [1, " +
                                 std::to_string(std::min(p.full_len, p.masked_len) - 1) + "]");
    for (int64_t k = 0; k < R; k++)
      if (p.full[p.full_len - R + k] != p.masked[p.masked_len - R + k])
        fail(ErrorCode::Input, "pair " + std::to_string(i) + ": the full and masked sequences do not end with the same " + std::to_string(R) +
                                   " response tokens");
    int64_t s = 0;
    while (s < p.full_len && s < p.masked_len && p.full[s] == p.masked[s]) s++;
    shared[size_t(i)] = s;
  }

  // One forward pass: each pair's full sequence from position 0, writing its keys and values into a
  // cache, and its masked continuation after the shared prefix, whose attention reads the prefix
  // from a copy of that cache (made layer by layer inside the pass).
  // Caches, hidden states and logits live in the workspace between calls (no fresh pages per batch).
  std::vector<std::unique_ptr<KVCache>>& caches = m.ws.ig_caches;
  size_t used = 0;
  auto cache = [&](int64_t cap) {
    if (used == caches.size()) caches.push_back(nullptr);
    std::unique_ptr<KVCache>& kv = caches[used++];
    if (!kv || kv->capacity < cap) kv = std::make_unique<KVCache>(c, cap);
    return kv.get();
  };
  std::vector<int32_t> toks;
  std::vector<SeqRun> runs;
  for (int64_t i = 0; i < n; i++) {
    const IgPair& p = pairs[i];
    const int64_t s = shared[size_t(i)];
    KVCache* const ca = s > 0 ? cache(p.full_len) : nullptr;
    KVCache* const cb = s > 0 ? cache(p.masked_len) : nullptr;
    runs.push_back({int64_t(toks.size()), p.full_len, 0, ca});
    toks.insert(toks.end(), p.full, p.full + p.full_len);
    if (p.masked_len > s) {
      runs.push_back({int64_t(toks.size()), p.masked_len - s, s, cb, ca});
      toks.insert(toks.end(), p.masked + s, p.masked + p.masked_len);
    }
  }
  // Only the response-predicting rows leave the last layer. A masked sequence's response-predicting
  // positions inside the shared prefix (when the masked part ends right before the response) are
  // the full sequence's, so its kept range starts there.
  std::vector<std::pair<int64_t, int64_t>> keep;
  // Per pair: first kept row of each run (run-local) and where its rows start in the output.
  std::vector<int64_t> full_first(static_cast<size_t>(n)), masked_first(static_cast<size_t>(n));
  std::vector<int64_t> full_out(static_cast<size_t>(n)), masked_out(static_cast<size_t>(n));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; i++) {
    const IgPair& p = pairs[i];
    const int64_t s = shared[size_t(i)], R = p.response_len, mf = p.masked_len - R - 1;
    full_first[size_t(i)] = std::min(p.full_len - R - 1, mf < s ? mf : p.full_len);
    keep.push_back({full_first[size_t(i)], p.full_len - 1});
    full_out[size_t(i)] = kept;
    kept += p.full_len - 1 - full_first[size_t(i)];
    if (p.masked_len > s) {
      masked_first[size_t(i)] = std::max<int64_t>(0, mf - s);
      keep.push_back({masked_first[size_t(i)], p.masked_len - 1 - s});
      masked_out[size_t(i)] = kept;
      kept += keep.back().second - keep.back().first;
    }
  }
  std::vector<float>& hidden = m.ws.ig_hidden;
  hidden.resize(size_t(kept * C));
  m.forward_hidden(toks.data(), int64_t(toks.size()), runs, hidden.data(), nullptr, 0, &keep);
  // The hidden state predicting response token t of pair i, full or masked (position len − R − 1 + t).
  auto hidden_at = [&](int64_t i, bool full, int64_t t) -> const float* {
    const IgPair& p = pairs[i];
    const int64_t s = shared[size_t(i)], pos = (full ? p.full_len : p.masked_len) - p.response_len - 1 + t;
    if (full || pos < s) return &hidden[size_t((full_out[size_t(i)] + pos - full_first[size_t(i)]) * C)];
    return &hidden[size_t((masked_out[size_t(i)] + pos - s - masked_first[size_t(i)]) * C)];
  };
  struct Job { int64_t pair, t; };
  std::vector<Job> jobs;
  for (int64_t i = 0; i < n; i++)
    for (int64_t t = 0; t < pairs[i].response_len; t++) jobs.push_back({i, t});
  std::vector<IgTokenStats> stats(jobs.size());
  const int64_t chunk = 128;  // row pairs per head pass: 2·chunk × V logits at a time
  std::vector<float> hbuf(size_t(2 * chunk * C));
  std::vector<float>& logits = m.ws.ig_logits;
  logits.resize(size_t(2 * chunk * V));
  PackedB head;
  if (jobs.size() > size_t(chunk)) m.pack_head(head);
  for (size_t j0 = 0; j0 < jobs.size(); j0 += size_t(chunk)) {
    const int64_t nj = std::min<int64_t>(chunk, int64_t(jobs.size() - j0));
    for (int64_t j = 0; j < nj; j++) {
      const Job& jb = jobs[j0 + size_t(j)];
      std::memcpy(&hbuf[size_t(2 * j * C)], hidden_at(jb.pair, true, jb.t), sizeof(float) * size_t(C));
      std::memcpy(&hbuf[size_t((2 * j + 1) * C)], hidden_at(jb.pair, false, jb.t), sizeof(float) * size_t(C));
    }
    m.head_logits(2 * nj, hbuf.data(), logits.data(), &head);
    m.pool->parallel_for(nj, [&](int64_t j, int) {
      const Job& jb = jobs[j0 + size_t(j)];
      const IgPair& p = pairs[jb.pair];
      stats[j0 + size_t(j)] = ig_token_stats(&logits[size_t(2 * j * V)], &logits[size_t((2 * j + 1) * V)], V,
                                          p.full[p.full_len - p.response_len + jb.t]);
    });
  }
  size_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    const IgPair& p = pairs[i];
    IgScores& o = out[i];
    o = IgScores();
    const int64_t R = p.response_len;
    IgTokenScores* pt = per_token ? &per_token[i] : nullptr;
    if (pt) *pt = IgTokenScores();
    for (int64_t t = 0; t < R; t++, at++) {
      const IgTokenStats& s = stats[at];
      o.ce_full += s.nll_f;
      o.ce_masked += s.nll_m;
      o.ig_kl += s.kl;
      o.ig_js += s.js;
      o.entropy_full += s.h_f;
      o.entropy_masked += s.h_m;
      if (pt) {
        pt->nll_full.push_back(float(s.nll_f));
        pt->nll_masked.push_back(float(s.nll_m));
        pt->kl.push_back(float(s.kl));
        pt->js.push_back(float(s.js));
        pt->entropy_full.push_back(float(s.h_f));
        pt->entropy_masked.push_back(float(s.h_m));
      }
    }
    for (double* v : {&o.ce_full, &o.ce_masked, &o.ig_kl, &o.ig_js, &o.entropy_full, &o.entropy_masked}) *v /= double(R);
    o.ig_ce = o.ce_masked - o.ce_full;
    o.n_tokens = R;
    o.shared_prefix = shared[size_t(i)];
    o.positions_computed = p.full_len + p.masked_len - shared[size_t(i)];
  }
}

}  // namespace kpig
