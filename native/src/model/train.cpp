// Training: the fused signed-weighted cross-entropy over the LM head, gradients through the
// backward pass, AdamW with global-norm clipping, LoRA adapters (add, merge) and named access to
// every tensor, its gradient and its optimizer moments.
// Legend: T = tokens, C = hidden, V = vocab, Tc = rows of one head chunk, r = LoRA rank.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../cpu/fused_ce.h"
#include "kpig/comm.h"
#include "../cpu/gemm.h"
#include "../cpu/ops.h"
#include "model_impl.h"
#include "prefix_cache.h"

namespace kpig {

namespace {

void add_ref(std::vector<TensorRef>& reg, std::string name, std::vector<int64_t> shape, float* data, float* grad, bool decay) {
  TensorRef t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.data = data;
  t.grad = grad;
  t.decay = decay;
  reg.push_back(std::move(t));
}

float* maybe(Floats& g, int64_t offset = 0) { return g.empty() ? nullptr : g.data() + offset; }

// Every linear module as PEFT names it (path, linear, output rows [o0, o1)), layer by layer.
struct Module {
  std::string path;
  Linear* lin;
  int64_t o0, o1;
};

std::vector<Module> lora_modules(const ModelConfig& c, Weights& w) {
  const Architecture& a = architecture_of(c);
  std::vector<Module> out;
  for (const TensorSlot& s : a.tensors(c, a.prefixes.front()))
    if (!s.module.empty()) out.push_back({s.module, &linear_of(w.layers[size_t(s.layer)], s.part), s.o0, s.o1});
  return out;
}

// The next number of a SplitMix64 stream whose state is `s` (advanced).
uint64_t splitmix64_next(uint64_t& s) {
  const uint64_t r = splitmix64(s);
  s += 0x9E3779B97F4A7C15ull;
  return r;
}

}  // namespace

void ModelImpl::rebuild_registry() {
  const ModelConfig& c = info.config;
  const Architecture& arch = architecture_of(c);
  std::vector<TensorRef> reg;
  // The checkpoint's tensors under their Hugging Face names (slices of fused buffers where fused).
  for (const TensorSlot& s : arch.tensors(c, arch.prefixes.front())) {
    const int64_t at = slot_offset(w, s);
    add_ref(reg, s.name, s.shape, slot_buffer(w, s).data() + at, maybe(slot_buffer(w, s, true), at), s.decay);
  }
  for (int64_t l = 0; l < c.layers; l++) {
    Layer& L = w.layers[size_t(l)];
    for (Linear* lin : {&L.qkv, &L.o, &L.up, &L.down})
      for (LoraAdapter& a : lin->lora) {
        const std::string n = "base_model.model." + a.path;
        add_ref(reg, n + ".lora_A.weight", {a.rank, lin->in}, a.A.data(), a.gA.data(), false);
        add_ref(reg, n + ".lora_B.weight", {a.o1 - a.o0, a.rank}, a.B.data(), a.gB.data(), false);
      }
  }
  registry = std::move(reg);
}

const TensorRef& ModelImpl::tensor(const std::string& name) const {
  for (const TensorRef& t : registry)
    if (t.name == name) return t;
  fail(ErrorCode::Input, "no tensor named '" + name + "' in this model");
}

void Model::set_matmul_bf16(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  if (impl_->pool->matmul_bf16 != on) impl_->prefixes->clear();  // stored keys/values are of the other mode
  impl_->pool->matmul_bf16 = on;
}

void Model::set_prefix_cache(int64_t max_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (max_bytes < 0) fail(ErrorCode::Input, "the prefix cache size must be ≥ 0 bytes, got " + std::to_string(max_bytes));
  impl_->prefixes->set_max_bytes(max_bytes);
  if (max_bytes == 0) impl_->prefixes->clear();
}

void Model::clear_prefix_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  impl_->prefixes->clear();
}

PrefixCacheStats Model::prefix_cache_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return impl_->prefixes->stats;
}

bool Model::matmul_bf16() const { return impl_->pool->matmul_bf16; }

void Model::train_full() {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  if (m.train_base) return;
  auto zeros = [](Floats& g, const Floats& like) { g.assign(like.size(), 0.f); };
  Weights& w = m.w;
  zeros(w.g_tok_emb, w.tok_emb);
  zeros(w.g_pos_emb, w.pos_emb);
  zeros(w.g_norm_w, w.norm_w);
  zeros(w.g_norm_b, w.norm_b);
  zeros(w.g_head, w.head);
  for (Layer& L : w.layers) {
    zeros(L.g_norm1_w, L.norm1_w);
    zeros(L.g_norm1_b, L.norm1_b);
    zeros(L.g_norm2_w, L.norm2_w);
    zeros(L.g_norm2_b, L.norm2_b);
    for (Linear* lin : {&L.qkv, &L.o, &L.up, &L.down}) {
      zeros(lin->gw, lin->w);
      zeros(lin->gb, lin->b);
    }
  }
  m.train_base = true;
  m.rebuild_registry();
}

std::vector<std::string> Model::lora_add(const LoraConfig& cfg) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  m.prefixes->clear();
  const ModelConfig& c = m.info.config;
  if (cfg.rank <= 0) fail(ErrorCode::Input, "LoRA rank must be ≥ 1, got " + std::to_string(cfg.rank));
  if (!(cfg.alpha > 0)) fail(ErrorCode::Input, "LoRA alpha must be > 0");
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) fail(ErrorCode::Input, "LoRA dropout must be in [0, 1)");
  std::vector<std::string> targets = cfg.targets;
  if (targets.empty()) targets = c.arch.lora_targets;
  const bool all = std::find(targets.begin(), targets.end(), "all-linear") != targets.end();
  std::vector<bool> used(targets.size(), false);
  std::vector<std::string> matched;
  uint64_t rng = cfg.seed * 0x2545F4914F6CDD1Dull + 1;
  {
    for (const Module& mod : lora_modules(c, m.w)) {
      const std::string& path = mod.path;
      bool hit = all;
      for (size_t t = 0; t < targets.size(); t++) {
        const std::string& tg = targets[t];
        const bool match = path == tg || (path.size() > tg.size() && path.compare(path.size() - tg.size(), tg.size(), tg) == 0 &&
                                          path[path.size() - tg.size() - 1] == '.');
        if (match) used[t] = true;
        hit = hit || match;
      }
      if (!hit) continue;
      for (const LoraAdapter& a : mod.lin->lora)
        if (a.path == path) fail(ErrorCode::Input, "module " + path + " already has a LoRA adapter");
      LoraAdapter a;
      a.path = path;
      a.o0 = mod.o0;
      a.o1 = mod.o1;
      a.rank = cfg.rank;
      a.scale = cfg.alpha / float(cfg.rank);
      a.dropout = cfg.dropout;
      const int64_t in = mod.lin->in;
      a.A.resize(size_t(cfg.rank * in));
      const double bound = 1.0 / std::sqrt(double(in));
      for (float& v : a.A) v = float((double(splitmix64_next(rng) >> 11) * 0x1.0p-53 * 2.0 - 1.0) * bound);
      a.B.assign(size_t((mod.o1 - mod.o0) * cfg.rank), 0.f);
      a.gA.assign(a.A.size(), 0.f);
      a.gB.assign(a.B.size(), 0.f);
      mod.lin->lora.push_back(std::move(a));
      matched.push_back(path);
    }
  }
  for (size_t t = 0; t < targets.size(); t++)
    if (!used[t] && targets[t] != "all-linear")
      fail(ErrorCode::Input, "LoRA target '" + targets[t] + "' matches no module of this " + c.model_type + " model");
  m.rebuild_registry();
  return matched;
}

void Model::lora_merge() {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  m.prefixes->clear();
  for (Layer& L : m.w.layers)
    for (Linear* lin : {&L.qkv, &L.o, &L.up, &L.down}) {
      for (const LoraAdapter& a : lin->lora) {
        const int64_t o = a.o1 - a.o0, in = lin->in;
        // delta(o, in) = scale·B·A, added to W's rows (out, in) or columns (in, out).
        Floats delta(size_t(o * in));
        gemm(m.pool.get(), o, in, a.rank, a.B.data(), a.rank, 1, a.A.data(), in, 1, delta.data(), in, false);
        for (int64_t i = 0; i < o; i++)
          for (int64_t k = 0; k < in; k++) {
            const float d = a.scale * delta[size_t(i * in + k)];
            if (lin->in_major) lin->w[size_t(k * lin->out + a.o0 + i)] += d;
            else lin->w[size_t((a.o0 + i) * in + k)] += d;
          }
        for (const char* part : {".lora_A.weight", ".lora_B.weight"}) m.adam.erase("base_model.model." + a.path + part);
      }
      lin->lora.clear();
    }
  m.rebuild_registry();
}

TrainResult Model::train_accumulate(const PackedBatch& b, const float* weights, float* nll_out, uint64_t seed) {
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
  if (rows.empty()) return res;  // nothing reaches the loss: no forward pass, no gradient

  std::vector<SeqRun> runs(size_t(b.n_seqs));
  for (int64_t s = 0; s < b.n_seqs; s++) runs[size_t(s)] = {b.offsets[s], int64_t(b.offsets[s + 1]) - b.offsets[s], 0, nullptr};
  Acts& acts = m.ws.acts;
  Floats& hidden = m.ws.hidden;
  hidden.resize(size_t(T * C));
  m.forward_hidden(b.tokens, T, runs, hidden.data(), &acts, seed);

  Floats& dh = m.ws.dh;
  dh.assign(size_t(T * C), 0.f);
  float* g_head = !m.w.g_head.empty() ? m.w.g_head.data() : (c.tied && !m.w.g_tok_emb.empty() ? m.w.g_tok_emb.data() : nullptr);
  std::vector<double> nll(rows.size());
  fused_linear_ce(m.pool.get(), hidden.data(), C, m.w.head_ptr(), V, rows, dh.data(), g_head, nll.data());
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

void Model::zero_grad() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const TensorRef& t : impl_->registry)
    if (t.grad) std::fill(t.grad, t.grad + t.numel(), 0.f);
}

StepResult Model::optimizer_step(const AdamWOptions& o) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  m.prefixes->clear();
  if (!(o.lr >= 0) || !(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1) || !(o.eps > 0) || !(o.weight_decay >= 0) ||
      !(o.max_grad_norm >= 0))
    fail(ErrorCode::Input, "AdamW options out of range (lr ≥ 0, 0 ≤ β < 1, eps > 0, weight_decay ≥ 0, max_grad_norm ≥ 0)");
  StepResult r;
  // Σ g² in fixed chunks of each tensor, summed in order: the same value whatever the threads.
  constexpr int64_t kNormChunk = 1 << 16;
  double ss = 0;
  std::vector<double> part;
  for (const TensorRef& t : m.registry) {
    if (!t.grad) continue;
    const int64_t n = t.numel(), chunks = (n + kNormChunk - 1) / kNormChunk;
    part.assign(size_t(chunks), 0.0);
    const float* g = t.grad;
    m.parallel_rows(chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) {
        double acc[4] = {0, 0, 0, 0};
        const int64_t i1 = std::min(n, (c + 1) * kNormChunk);
        int64_t i = c * kNormChunk;
        for (; i + 4 <= i1; i += 4)
          for (int j = 0; j < 4; j++) acc[j] += double(g[i + j]) * double(g[i + j]);
        for (; i < i1; i++) acc[0] += double(g[i]) * double(g[i]);
        part[size_t(c)] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      }
    });
    for (double v : part) ss += v;
  }
  r.grad_norm = std::sqrt(ss);
  auto clear = [&] {
    for (const TensorRef& t : m.registry)
      if (t.grad) std::fill(t.grad, t.grad + t.numel(), 0.f);
  };
  if (!std::isfinite(r.grad_norm)) {
    r.skipped = true;
    r.step = m.adam_steps;
    clear();
    return r;
  }
  const float clip = (o.max_grad_norm > 0 && r.grad_norm > o.max_grad_norm) ? float(o.max_grad_norm / (r.grad_norm + 1e-6)) : 1.f;
  const int64_t step = ++m.adam_steps;
  const double bc1 = 1.0 - std::pow(o.beta1, double(step)), bc2 = 1.0 - std::pow(o.beta2, double(step));
  const float step_size = float(o.lr / bc1), bc2_sqrt = float(std::sqrt(bc2));
  const float b1 = float(o.beta1), b2 = float(o.beta2), eps = float(o.eps);
  for (const TensorRef& t : m.registry) {
    if (!t.grad) continue;
    AdamState& st = m.adam[t.name];
    const size_t n = size_t(t.numel());
    if (st.m.size() != n) st.m.assign(n, 0.f), st.v.assign(n, 0.f);
    const float decay = (o.decay_all || t.decay) ? float(1.0 - o.lr * o.weight_decay) : 1.f;
    // One pass over the tensor: the update, then the gradient cleared for the next accumulation.
    m.parallel_rows(int64_t(n), 1 << 14, [&, p = t.data, g = t.grad, mp = st.m.data(), vp = st.v.data()](int64_t i0, int64_t i1) {
      adamw_update(p + i0, g + i0, mp + i0, vp + i0, i1 - i0, clip, decay, b1, b2, step_size, bc2_sqrt, eps);
    });
  }
  r.step = step;
  return r;
}

int64_t Model::optimizer_steps() const { return impl_->adam_steps; }
void Model::set_optimizer_steps(int64_t steps) {
  std::lock_guard<std::mutex> lock(mu_);
  if (steps < 0) fail(ErrorCode::Input, "optimizer steps must be ≥ 0");
  impl_->adam_steps = steps;
}

std::vector<TensorInfo> Model::tensors() const {
  std::vector<TensorInfo> out;
  for (const TensorRef& t : impl_->registry) out.push_back({t.name, t.shape, t.grad != nullptr});
  return out;
}

void Model::read_tensor(const std::string& name, const std::string& kind, float* out) const {
  const ModelImpl& m = *impl_;
  const TensorRef& t = m.tensor(name);
  const size_t n = size_t(t.numel());
  if (kind == "param") {
    std::memcpy(out, t.data, n * 4);
  } else if (kind == "grad") {
    if (t.grad) std::memcpy(out, t.grad, n * 4);
    else std::fill(out, out + n, 0.f);
  } else if (kind == "exp_avg" || kind == "exp_avg_sq") {
    auto it = m.adam.find(name);
    if (it == m.adam.end() || it->second.m.size() != n) std::fill(out, out + n, 0.f);
    else std::memcpy(out, (kind == "exp_avg" ? it->second.m : it->second.v).data(), n * 4);
  } else {
    fail(ErrorCode::Input, "unknown tensor kind '" + kind + "' (param, grad, exp_avg, exp_avg_sq)");
  }
}

void Model::write_tensor(const std::string& name, const std::string& kind, const float* in) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  const TensorRef& t = m.tensor(name);
  const size_t n = size_t(t.numel());
  if (kind == "param") {
    std::memcpy(t.data, in, n * 4);
    m.prefixes->clear();
  } else if (kind == "grad") {
    // Regularisers computed outside the engine (EWC's penalty) add their gradient here.
    if (!t.grad) fail(ErrorCode::Input, "tensor '" + name + "' does not train, so it has no gradient");
    std::memcpy(t.grad, in, n * 4);
  } else if (kind == "exp_avg" || kind == "exp_avg_sq") {
    if (!t.grad) fail(ErrorCode::Input, "tensor '" + name + "' does not train, so it has no optimizer state");
    AdamState& st = m.adam[name];
    if (st.m.size() != n) st.m.assign(n, 0.f), st.v.assign(n, 0.f);
    std::memcpy((kind == "exp_avg" ? st.m : st.v).data(), in, n * 4);
  } else {
    fail(ErrorCode::Input, "cannot write tensor kind '" + kind + "' (param, grad, exp_avg, exp_avg_sq)");
  }
}

}  // namespace kpig
