// Model: the public entry points. Validates every batch before touching it, then runs the packed
// forward pass and the LM head (streamed over row chunks where only a few numbers per row are kept).
#include <algorithm>
#include <cmath>

#include "model_impl.h"
#include "prefix_cache.h"

namespace kpig {

Model::Model(std::unique_ptr<ModelImpl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

namespace {
DeviceFactory& factory_slot() {
  static DeviceFactory f;
  return f;
}
}  // namespace

void set_device_factory(DeviceFactory factory) { factory_slot() = std::move(factory); }
const DeviceFactory& device_factory() { return factory_slot(); }

std::shared_ptr<Model> Model::load(const std::string& dir, const LoadOptions& options) {
  if (options.device != "cpu" && options.device != "cuda")
    fail(ErrorCode::Input, "unknown device '" + options.device + "' (use cpu or cuda)");
  std::unique_ptr<ModelImpl> impl = model_impl_load(dir, options);
  if (options.device == "cuda") {
    std::string why;
    if (!device_factory())
      why = "this build of kpig has no CUDA backend (nvcc was not found when it was built; rebuild with nvcc on PATH)";
    else
      impl->device = device_factory()(*impl, options.device, why);
    if (impl->device) impl->info.device = impl->device->name();
    else impl->info.device_note = "cuda was asked for and is not used: " + why + "; running on the CPU";
  }
  return std::shared_ptr<Model>(new Model(std::move(impl)));
}

const ModelInfo& Model::info() const { return impl_->info; }

void Model::validate(const PackedBatch& b) const {
  const ModelConfig& c = impl_->info.config;
  if (b.n_seqs <= 0) fail(ErrorCode::Input, "the batch has no sequences");
  if (b.offsets[0] != 0) fail(ErrorCode::Input, "offsets[0] must be 0, got " + std::to_string(b.offsets[0]));
  if (b.offsets[b.n_seqs] != b.n_tokens)
    fail(ErrorCode::Input, "offsets[" + std::to_string(b.n_seqs) + "] = " + std::to_string(b.offsets[b.n_seqs]) +
                               " must equal the number of tokens, " + std::to_string(b.n_tokens));
  for (int64_t s = 0; s < b.n_seqs; s++) {
    const int64_t len = int64_t(b.offsets[s + 1]) - int64_t(b.offsets[s]);
    if (len <= 0) fail(ErrorCode::Input, "sequence " + std::to_string(s) + " is empty (offsets must increase)");
    if (len > c.max_pos)
      fail(ErrorCode::Input, "sequence " + std::to_string(s) + " has " + std::to_string(len) +
                                 " tokens, more than the model's max_position_embeddings (" + std::to_string(c.max_pos) + ")");
    for (int64_t t = 0; t < len; t++) {
      const int32_t id = b.tokens[b.offsets[s] + t];
      if (id < 0 || id >= c.vocab)
        fail(ErrorCode::Input, "token id " + std::to_string(id) + " at position " + std::to_string(t) + " of sequence " +
                                   std::to_string(s) + " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")");
    }
  }
}

static std::vector<SeqRun> plain_runs(const PackedBatch& b) {
  std::vector<SeqRun> runs(size_t(b.n_seqs));
  for (int64_t s = 0; s < b.n_seqs; s++) runs[size_t(s)] = {b.offsets[s], int64_t(b.offsets[s + 1]) - b.offsets[s], 0, nullptr};
  return runs;
}

void Model::forward_logits(const PackedBatch& b, float* logits) {
  std::lock_guard<std::mutex> lock(mu_);
  validate(b);
  ModelImpl& m = *impl_;
  Floats hidden(size_t(b.n_tokens * m.info.config.hidden));
  m.forward_hidden(b.tokens, b.n_tokens, plain_runs(b), hidden.data());
  m.head_logits(b.n_tokens, hidden.data(), logits);
}

void Model::forward_logprobs(const PackedBatch& b, const int32_t* targets, float* logprobs) {
  std::lock_guard<std::mutex> lock(mu_);
  validate(b);
  ModelImpl& m = *impl_;
  const ModelConfig& c = m.info.config;
  for (int64_t t = 0; t < b.n_tokens; t++)
    if (targets[t] >= c.vocab)
      fail(ErrorCode::Input, "target id " + std::to_string(targets[t]) + " at row " + std::to_string(t) +
                                 " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")");
  const int64_t C = c.hidden, V = c.vocab;
  Floats hidden(size_t(b.n_tokens * C));
  m.forward_hidden(b.tokens, b.n_tokens, plain_runs(b), hidden.data());
  // Only rows with a target go through the head, a chunk at a time.
  std::vector<int64_t> rows;
  for (int64_t t = 0; t < b.n_tokens; t++) {
    if (targets[t] >= 0) rows.push_back(t);
    else logprobs[t] = 0.f;
  }
  const int64_t chunk = 64;
  Floats h, logits;
  const PackedWeight* head = rows.size() > size_t(chunk) ? m.pack_head() : nullptr;
  m.be->stream_head(int64_t(rows.size()), chunk, C, V, m.w.head_ptr(), head, h, logits,
              [&](int64_t i) { return &hidden[size_t(rows[size_t(i)] * C)]; },
              [&](int64_t i0, int64_t n, float*, float* lgs) {
                m.parallel_rows(n, 1, [&](int64_t r0, int64_t r1) {
                  for (int64_t i = r0; i < r1; i++) {
                    const int64_t row = rows[size_t(i0 + i)];
                    const float* lg = lgs + i * V;
                    logprobs[row] = lg[targets[row]] - m.be->logsumexp_row(lg, V);
                  }
                });
              });
}

void Model::forward_mean_hidden(const PackedBatch& b, float* embeddings) {
  std::lock_guard<std::mutex> lock(mu_);
  validate(b);
  ModelImpl& m = *impl_;
  const int64_t C = m.info.config.hidden;
  Floats hidden(size_t(b.n_tokens * C));  // (T, C)
  if (m.device) m.device->forward_hidden(m, b, hidden.data());
  else m.forward_hidden(b.tokens, b.n_tokens, plain_runs(b), hidden.data());
  for (int64_t s = 0; s < b.n_seqs; s++) {
    const int64_t t0 = b.offsets[s], t1 = b.offsets[s + 1];
    std::vector<double> sum(size_t(C), 0.0);  // double: the mean of a long sequence stays exact to float
    for (int64_t t = t0; t < t1; t++)
      for (int64_t c = 0; c < C; c++) sum[size_t(c)] += hidden[size_t(t * C + c)];
    for (int64_t c = 0; c < C; c++) embeddings[s * C + c] = float(sum[size_t(c)] / double(t1 - t0));
  }
}

void Model::forward_final_hidden(const PackedBatch& b, float* hidden) {
  std::lock_guard<std::mutex> lock(mu_);
  validate(b);
  if (impl_->device) impl_->device->forward_hidden(*impl_, b, hidden);
  else impl_->forward_hidden(b.tokens, b.n_tokens, plain_runs(b), hidden);
}

namespace {

// One draw from softmax(x / T) cut to top-k and top-p; the uniform number is a function of (seed,
// sequence, step) only, so a prompt's samples do not depend on what else is in its batch.
int32_t sample_row(const float* x, int64_t V, const GenerateOptions& opt, uint64_t seq, uint64_t step) {
  std::vector<std::pair<double, int32_t>> p(static_cast<size_t>(V));
  double mx = -INFINITY;
  for (int64_t v = 0; v < V; v++) mx = std::max(mx, double(x[v]));
  double z = 0;
  for (int64_t v = 0; v < V; v++) {
    const double e = std::exp((double(x[v]) - mx) / opt.temperature);
    p[size_t(v)] = {e, int32_t(v)};
    z += e;
  }
  // Most likely first, ties by token id, so the order (and the draw) is deterministic. Only as much
  // of the vocabulary is ordered as the cut needs: the top k, all of it for top-p alone, none for neither.
  const auto first = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = opt.top_k > 0 ? std::min<size_t>(size_t(opt.top_k), p.size()) : p.size();
  if (keep < p.size()) std::partial_sort(p.begin(), p.begin() + std::ptrdiff_t(keep), p.end(), first);
  else if (opt.top_p < 1.0) std::sort(p.begin(), p.end(), first);
  if (opt.top_p < 1.0) {
    double cum = 0;
    for (size_t i = 0; i < keep; i++) {
      cum += p[i].first / z;
      if (cum >= opt.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; i++) kept += p[i].first;
  const uint64_t bits = splitmix64(splitmix64(splitmix64(opt.seed) ^ seq) ^ step);
  const double u = double(bits >> 11) * (1.0 / 9007199254740992.0) * kept;  // uniform in [0, kept)
  double acc = 0;
  for (size_t i = 0; i < keep; i++) {
    acc += p[i].first;
    if (u < acc) return p[i].second;
  }
  return p[keep - 1].second;
}

}  // namespace

GenerateResult Model::generate(const PackedBatch& prompts, const GenerateOptions& opt) {
  std::lock_guard<std::mutex> lock(mu_);
  validate(prompts);
  if (opt.max_new_tokens < 0) fail(ErrorCode::Input, "max_new_tokens must be ≥ 0");
  if (!(opt.temperature >= 0) || !std::isfinite(opt.temperature)) fail(ErrorCode::Input, "temperature must be a finite number ≥ 0");
  if (opt.top_k < 0) fail(ErrorCode::Input, "top_k must be ≥ 0");
  if (!(opt.top_p > 0 && opt.top_p <= 1)) fail(ErrorCode::Input, "top_p must be in (0, 1]");
  ModelImpl& m = *impl_;
  const ModelConfig& c = m.info.config;
  const int64_t S = prompts.n_seqs, C = c.hidden, V = c.vocab;
  const std::vector<int32_t>& eos = opt.eos_ids.empty() ? c.eos_ids : opt.eos_ids;
  for (int32_t e : eos)
    if (e < 0 || e >= V) fail(ErrorCode::Input, "eos id " + std::to_string(e) + " is outside the vocabulary [0, " + std::to_string(V) + ")");

  std::vector<std::unique_ptr<KVCache>> caches;
  std::vector<int64_t> len(static_cast<size_t>(S));  // tokens already in each cache
  for (int64_t s = 0; s < S; s++) {
    len[size_t(s)] = prompts.offsets[s + 1] - prompts.offsets[s];
    caches.push_back(std::make_unique<KVCache>(c, std::min(c.max_pos, len[size_t(s)] + opt.max_new_tokens)));
  }
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(S));
  std::vector<uint8_t> finish(static_cast<size_t>(S), uint8_t(FinishReason::Length));
  std::vector<bool> active(static_cast<size_t>(S), opt.max_new_tokens > 0);

  // Prefill: all prompts packed, caches filled, the last row of each predicts its first token. A
  // prompt that starts with a prefix of an earlier prompt of the batch or of the prefix store (the
  // task's instruction) computes only what follows it; only the last row goes through the last
  // layer's MLP and norm.
  std::vector<const int32_t*> seq_tokens(static_cast<size_t>(S));
  std::vector<int64_t> cap(static_cast<size_t>(S));
  std::vector<KVCache*> seq_cache(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; s++) {
    seq_tokens[size_t(s)] = prompts.tokens + prompts.offsets[s];
    cap[size_t(s)] = len[size_t(s)] - 1;
    seq_cache[size_t(s)] = caches[size_t(s)].get();
  }
  const PrefixPlan plan = opt.max_new_tokens > 0 ? plan_prefixes(*m.prefixes, seq_tokens, len, cap, seq_cache) : PrefixPlan();
  std::vector<SeqRun> runs;
  std::vector<int32_t> fed;
  std::vector<std::pair<int64_t, int64_t>> keep;
  for (int64_t s = 0; s < S && opt.max_new_tokens > 0; s++) {
    const int64_t p = plan.p[size_t(s)], n = len[size_t(s)] - p;
    runs.push_back({int64_t(fed.size()), n, p, seq_cache[size_t(s)], plan.from[size_t(s)]});
    fed.insert(fed.end(), seq_tokens[size_t(s)] + p, seq_tokens[size_t(s)] + len[size_t(s)]);
    keep.push_back({n - 1, n});
  }
  Floats last(size_t(S * C)), logits(size_t(S * V));
  std::vector<int64_t> rows;  // sequences whose logits are in `logits`, in order
  if (opt.max_new_tokens > 0) {
    m.forward_hidden(fed.data(), int64_t(fed.size()), runs, last.data(), nullptr, 0, &keep);
    store_prefixes(*m.prefixes, c, plan, seq_tokens, seq_cache);
    for (int64_t s = 0; s < S; s++) rows.push_back(s);
  }
  std::vector<int32_t> step(static_cast<size_t>(S));
  // one decoding step per head call: pack the head once
  const PackedWeight* head = opt.max_new_tokens > 1 ? m.pack_head() : nullptr;
  while (true) {
    if (rows.empty()) break;
    m.head_logits(int64_t(rows.size()), last.data(), logits.data(), head);
    std::fill(step.begin(), step.end(), -1);
    for (size_t i = 0; i < rows.size(); i++) {
      const int64_t s = rows[i];
      const int32_t tok = opt.temperature > 0 ? sample_row(&logits[i * size_t(V)], V, opt, uint64_t(s), uint64_t(out[size_t(s)].size()))
                                              : int32_t(m.be->argmax_row(&logits[i * size_t(V)], V));
      if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
        finish[size_t(s)] = uint8_t(FinishReason::Eos);
        active[size_t(s)] = false;
        continue;
      }
      out[size_t(s)].push_back(tok);
      step[size_t(s)] = tok;
      if (int64_t(out[size_t(s)].size()) >= opt.max_new_tokens) {
        finish[size_t(s)] = uint8_t(FinishReason::Length);
        active[size_t(s)] = false;
      } else if (len[size_t(s)] >= c.max_pos) {  // no position left to feed this token at
        finish[size_t(s)] = uint8_t(FinishReason::Context);
        active[size_t(s)] = false;
      }
    }
    if (opt.on_step) opt.on_step(step.data(), S);
    if (opt.stop_flags)
      for (int64_t s = 0; s < S; s++)
        if (active[size_t(s)] && opt.stop_flags[s]) {
          finish[size_t(s)] = uint8_t(FinishReason::Stopped);
          active[size_t(s)] = false;
        }
    // Decode step: each active sequence feeds its newest token at the next position.
    std::vector<int32_t> toks;
    runs.clear();
    rows.clear();
    for (int64_t s = 0; s < S; s++) {
      if (!active[size_t(s)]) continue;
      runs.push_back({int64_t(toks.size()), 1, len[size_t(s)], caches[size_t(s)].get()});
      toks.push_back(out[size_t(s)].back());
      rows.push_back(s);
      len[size_t(s)]++;
    }
    if (rows.empty()) break;
    m.forward_hidden(toks.data(), int64_t(toks.size()), runs, last.data());
  }
  GenerateResult res;
  res.offsets.push_back(0);
  for (int64_t s = 0; s < S; s++) {
    res.tokens.insert(res.tokens.end(), out[size_t(s)].begin(), out[size_t(s)].end());
    res.offsets.push_back(int32_t(res.tokens.size()));
  }
  res.finish = std::move(finish);
  return res;
}

void Model::set_matmul_bf16(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  if (impl_->be->matmul_bf16() != on) impl_->prefixes->clear();  // stored keys/values are of the other mode
  impl_->be->set_matmul_bf16(on);
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

bool Model::matmul_bf16() const { return impl_->be->matmul_bf16(); }


}  // namespace kpig
