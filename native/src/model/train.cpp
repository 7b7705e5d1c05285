// One training step's gradients: the forward pass keeping activations, the fused signed-weighted
// cross-entropy over the LM head, the backward pass; and the gradient allreduce of data-parallel
// jobs. The registry, LoRA and AdamW live in registry.cpp, lora.cpp and adamw.cpp.
// Legend: T = tokens, C = hidden, V = vocab, Tc = rows of one head chunk, r = LoRA rank.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kpig/comm.h"
#include "model_impl.h"
#include "prefix_cache.h"

namespace kpig {

TrainResult Model::train_accumulate(const PackedBatch& b, const float* weights, float* nll_out, uint64_t seed, const float* hidden_grad) {
  std::lock_guard<std::mutex> lock(mu_);
  validate(b);
  ModelImpl& m = *impl_;
  const ModelConfig& c = m.info.config;
  bool any_trainable = false;
  for (const TensorRef& t : m.registry) any_trainable = any_trainable || t.grad;
  if (!any_trainable) fail(ErrorCode::Input, "nothing to train: call train_full() or add LoRA adapters first");
  const int64_t T = b.n_tokens, C = c.hidden, V = c.vocab;
  std::vector<CeRow> rows;
  for (int64_t s = 0; s < b.n_seqs; s++)
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) {
      const float wt = weights[t];
      if (!std::isfinite(wt)) fail(ErrorCode::Input, "weight at position " + std::to_string(t - b.offsets[s]) + " of sequence " + std::to_string(s) + " is not finite");
      if (wt == 0.f) continue;
      if (t == b.offsets[s + 1] - 1)
        fail(ErrorCode::Input, "sequence " + std::to_string(s) + " has a non-zero weight at its last position, which predicts no token");
      rows.push_back({t, b.tokens[t + 1], wt});
    }
  if (nll_out) std::fill(nll_out, nll_out + T, 0.f);
  TrainResult res;
  res.n_weighted = int64_t(rows.size());
  if (hidden_grad)
    for (int64_t i = 0; i < T * C; i++)
      if (!std::isfinite(hidden_grad[i])) fail(ErrorCode::Input, "hidden-state gradient at position " + std::to_string(i / C) + ", unit " + std::to_string(i % C) + " is not finite");
  if (rows.empty() && !hidden_grad) return res;  // nothing reaches the loss: no forward pass, no gradient

  std::vector<SeqRun> runs(size_t(b.n_seqs));
  for (int64_t s = 0; s < b.n_seqs; s++) runs[size_t(s)] = {b.offsets[s], int64_t(b.offsets[s + 1]) - b.offsets[s], 0, nullptr};
  Acts& acts = m.ws.acts;
  // The loss reads the final hidden states of the weighted rows only; when they are fewer than all,
  // the last layer's tail runs on them alone. Not with a hidden-state loss (it reads every row) or
  // LoRA dropout in that tail (its masks are drawn per row of the whole batch).
  acts.kept.clear();
  bool tail_dropout = false;
  for (const Linear* lin : {&m.w.layers.back().o, &m.w.layers.back().up, &m.w.layers.back().down})
    for (const LoraAdapter& a : lin->lora) tail_dropout = tail_dropout || a.dropout > 0.f;
  if (!hidden_grad && !tail_dropout && int64_t(rows.size()) < T)
    for (const CeRow& r : rows) acts.kept.push_back(r.row);
  Floats& hidden = m.ws.hidden;
  hidden.resize(size_t(T * C));
  m.forward_hidden(b.tokens, T, runs, hidden.data(), &acts, seed);

  Floats& dh = m.ws.dh;
  dh.assign(size_t(T * C), 0.f);
  float* g_head = !m.w.g_head.empty() ? m.w.g_head.data() : (c.tied && !m.w.g_tok_emb.empty() ? m.w.g_tok_emb.data() : nullptr);
  std::vector<double> nll(rows.size());
  if (!rows.empty()) m.be->fused_linear_ce(hidden.data(), C, m.w.head_ptr(), V, rows, dh.data(), g_head, nll.data());
  // The head writes its rows of dh; a loss on the hidden states adds to them.
  if (hidden_grad)
    for (int64_t i = 0; i < T * C; i++) dh[size_t(i)] += hidden_grad[i];
  for (size_t i = 0; i < rows.size(); i++) {
    res.loss += double(rows[i].weight) * nll[i];
    if (nll_out) nll_out[rows[i].row] = float(nll[i]);
  }
  m.backward(b.tokens, T, runs, acts, dh);
  return res;
}

void Model::allreduce_grads() {
  std::lock_guard<std::mutex> lock(mu_);
  // In registry order, which every rank shares (never in address order, which differs between
  // processes). A tensor whose gradient memory an earlier one already covers (tied weights) is
  // reduced once.
  std::vector<std::pair<const float*, const float*>> done;
  for (const TensorRef& t : impl_->registry) {
    if (!t.grad) continue;
    const float *b = t.grad, *e = t.grad + t.numel();
    bool covered = false;
    for (const auto& d : done) covered = covered || (b >= d.first && e <= d.second);
    if (covered) continue;
    comm_allreduce_sum(t.grad, t.numel());
    done.push_back({b, e});
  }
}


}  // namespace kpig
