// LoRA adapters as PEFT defines them: added on the architecture's linear modules (default targets
// from its table), trained through Linear::apply/backward, and merged into the base weights.
// Legend: r = LoRA rank.
#include <algorithm>
#include <cmath>

#include "model_impl.h"
#include "prefix_cache.h"

namespace kpig {

namespace {

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

std::vector<std::string> Model::lora_add(const LoraConfig& cfg) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  m.prefixes->clear();
  m.weights_version++;
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
  m.weights_version++;
  for (Layer& L : m.w.layers)
    for (Linear* lin : {&L.qkv, &L.o, &L.up, &L.down}) {
      for (const LoraAdapter& a : lin->lora) {
        const int64_t o = a.o1 - a.o0, in = lin->in;
        // delta(o, in) = scale·B·A, added to W's rows (out, in) or columns (in, out).
        Floats delta(size_t(o * in));
        m.be->gemm(o, in, a.rank, a.B.data(), a.rank, 1, a.A.data(), in, 1, delta.data(), in, false);
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


}  // namespace kpig
