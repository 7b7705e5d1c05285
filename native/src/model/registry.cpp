// The tensor registry: every tensor of the model under its Hugging Face or PEFT name (from the
// architecture's table, slices of fused buffers where the engine fused them), which of them train,
// and named reads and writes of parameters, gradients and AdamW moments.
#include <cstring>

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
    m.weights_version++;
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
