// Information-gain scoring of full/masked pairs (DESIGN.md §1). A prefix shared by sequences of the
// call (a pair's full and masked sequences; every instance of one instruction) or held by the
// prefix store runs once: later sequences start after it, attending to its keys and values. The LM
// head runs only on response-predicting rows, a chunk of row pairs at a time, and every per-token
// quantity (NLLs, KL, JS, entropies) comes out of one pass over the two logit rows.
// Legend: C = hidden, V = vocab, R = response tokens of a pair.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "model_impl.h"
#include "prefix_cache.h"

namespace kpig {

namespace {

// Checks every pair (lengths, vocabulary, the shared response) and returns, per pair, how many
// leading tokens its full and masked sequences share.
std::vector<int64_t> check_pairs(const ModelConfig& c, const IgPair* pairs, int64_t n) {
  const int64_t V = c.vocab;
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

  return shared;
}

// Per pair and response token: the full and masked rows that predict it, after the forward pass.
struct IgRows {
  Floats* hidden;                // (kept rows, C)
  std::vector<int64_t> out_row;  // where each sequence's kept rows start (full 2i, masked 2i + 1)
  std::vector<int64_t> start;    // per sequence: the position its computed rows start at (after a shared prefix)
};

IgRows ig_forward(ModelImpl& m, const IgPair* pairs, int64_t n, const std::vector<int64_t>& shared) {
  const ModelConfig& c = m.info.config;
  const int64_t C = c.hidden;
  // One forward pass over every pair's full and masked sequences (in that order). A sequence starts
  // after the longest prefix it shares with an earlier one of the call or with a stored prefix
  // (prefix_cache.h), reading that prefix's keys and values from there (copied layer by layer inside
  // the pass); with the store off, a masked sequence still starts after what it shares with its own
  // full sequence. Rows from the first response-predicting one on are always computed by the
  // sequence itself. Caches, hidden states and logits live in the workspace between calls.
  std::vector<std::unique_ptr<KVCache>>& caches = m.ws.ig_caches;
  std::vector<const int32_t*> seq_tokens;
  std::vector<int64_t> seq_len, cap;
  for (int64_t i = 0; i < n; i++) {
    const IgPair& p = pairs[i];
    seq_tokens.push_back(p.full), seq_len.push_back(p.full_len), cap.push_back(p.full_len - p.response_len - 1);
    seq_tokens.push_back(p.masked), seq_len.push_back(p.masked_len), cap.push_back(p.masked_len - p.response_len - 1);
  }
  const size_t n_seq = seq_tokens.size();
  while (caches.size() < n_seq) caches.push_back(nullptr);
  std::vector<KVCache*> seq_cache(n_seq);
  for (size_t x = 0; x < n_seq; x++) {
    if (!caches[x] || caches[x]->capacity < seq_len[x]) caches[x] = std::make_unique<KVCache>(c, seq_len[x]);
    seq_cache[x] = caches[x].get();
  }
  PrefixPlan plan = plan_prefixes(*m.prefixes, seq_tokens, seq_len, cap, seq_cache);
  for (int64_t i = 0; i < n; i++) {  // at least the start a masked sequence shares with its own full one
    const size_t x = size_t(2 * i + 1);
    const int64_t own = std::min(shared[size_t(i)], cap[x]);
    if (plan.p[x] < own) plan.p[x] = own, plan.from[x] = seq_cache[x - 1];
  }
  std::vector<int32_t> toks;
  std::vector<SeqRun> runs;
  // Only the response-predicting rows leave the last layer: run-local [cap − p, len − 1 − p).
  std::vector<std::pair<int64_t, int64_t>> keep;
  std::vector<int64_t> out_row(n_seq);  // where each sequence's kept rows start in `hidden`
  int64_t kept = 0;
  for (size_t x = 0; x < n_seq; x++) {
    const int64_t p = plan.p[x];
    runs.push_back({int64_t(toks.size()), seq_len[x] - p, p, seq_cache[x], plan.from[x]});
    toks.insert(toks.end(), seq_tokens[x] + p, seq_tokens[x] + seq_len[x]);
    keep.push_back({cap[x] - p, seq_len[x] - 1 - p});
    out_row[x] = kept;
    kept += seq_len[x] - 1 - cap[x];
  }
  Floats& hidden = m.ws.ig_hidden;
  hidden.resize(size_t(kept * C));
  m.forward_hidden(toks.data(), int64_t(toks.size()), runs, hidden.data(), nullptr, 0, &keep);
  store_prefixes(*m.prefixes, c, plan, seq_tokens, seq_cache);
  return {&hidden, out_row, plan.p};
}

// The per-token IG statistics of every (pair, response token), through the streamed head.
struct Job {
  int64_t pair, t;
};

std::vector<IgTokenStats> ig_head(ModelImpl& m, const IgPair* pairs, int64_t n, const IgRows& rows) {
  const ModelConfig& c = m.info.config;
  const int64_t C = c.hidden, V = c.vocab;
  const Floats& hidden = *rows.hidden;
  const std::vector<int64_t>& out_row = rows.out_row;
  // The hidden state predicting response token t of pair i, full or masked.
  auto hidden_at = [&](int64_t i, bool full, int64_t t) -> const float* {
    return &hidden[size_t((out_row[size_t(2 * i + (full ? 0 : 1))] + t) * C)];
  };
  std::vector<Job> jobs;
  for (int64_t i = 0; i < n; i++)
    for (int64_t t = 0; t < pairs[i].response_len; t++) jobs.push_back({i, t});
  std::vector<IgTokenStats> stats(jobs.size());
  // Rows 2j and 2j + 1 of the head stream are job j's full and masked hidden states; a chunk holds
  // whole pairs (2·128 rows: 2·128 × V logits at a time).
  const int64_t chunk = 128;
  const PackedWeight* head = jobs.size() > size_t(chunk) ? m.pack_head() : nullptr;
  m.be->stream_head(2 * int64_t(jobs.size()), 2 * chunk, C, V, m.w.head_ptr(), head, m.ws.ig_head_rows, m.ws.ig_logits,
              [&](int64_t r) { return hidden_at(jobs[size_t(r / 2)].pair, r % 2 == 0, jobs[size_t(r / 2)].t); },
              [&](int64_t first, int64_t count, float*, float* logits) {
                const int64_t j0 = first / 2;
                m.be->parallel_for(count / 2, [&](int64_t j, int) {
                  const Job& jb = jobs[size_t(j0 + j)];
                  const IgPair& p = pairs[jb.pair];
                  stats[size_t(j0 + j)] = m.be->ig_token_stats(logits + 2 * j * V, logits + (2 * j + 1) * V, V, p.full[p.full_len - p.response_len + jb.t]);
                });
              });
  return stats;
}

}  // namespace

void Model::score_ig(const IgPair* pairs, int64_t n, IgScores* out, IgTokenScores* per_token) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  const std::vector<int64_t> shared = check_pairs(m.info.config, pairs, n);
  // On a device every sequence runs whole (no shared prefix yet); on the CPU a shared start runs once.
  std::vector<int64_t> start(size_t(2 * n), 0);
  std::vector<IgTokenStats> stats;
  if (m.device) stats = m.device->score_ig(m, pairs, n);
  else {
    const IgRows rows = ig_forward(m, pairs, n, shared);
    stats = ig_head(m, pairs, n, rows);
    start = rows.start;
  }
  // Means over each pair's response tokens.
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
    o.positions_computed = p.full_len - start[size_t(2 * i)] + p.masked_len - start[size_t(2 * i + 1)];
  }
}

}  // namespace kpig
