// The device seam (native/src/model/device.h) without a GPU: a fake device that computes on the CPU
// by another route (whole sequences, the head on every pair's rows, no shared prefix) is registered
// as the factory, and the model must send hidden states and IG scoring to it, copy weights again
// after they change, and report what it is; a factory that fails must leave the model on the CPU
// with the reason. The CUDA device sits behind the same seam (native/src/cuda/device_model.cu).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>
#include <unistd.h>

#include "../src/model/model_impl.h"
#include "kpig/error.h"
#include "kpig/model.h"

using namespace kpig;

static int g_pass = 0, g_fail = 0;
static void check(bool ok, const std::string& what) {
  if (ok) g_pass++;
  else {
    g_fail++;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// A tiny LLaMA-style model folder: config.json and F32 safetensors of random weights.
static std::string write_model() {
  char tmpl[] = "/tmp/kpig-seam-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const int C = 32, L = 2, H = 4, K = 2, D = C / H, F = 64, V = 64;
  std::ofstream(dir + "/config.json") << "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": " << C
                                      << ", \"num_hidden_layers\": " << L << ", \"num_attention_heads\": " << H
                                      << ", \"num_key_value_heads\": " << K << ", \"intermediate_size\": " << F << ", \"vocab_size\": " << V
                                      << ", \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": false}";
  std::vector<std::pair<std::string, std::vector<int64_t>>> ts = {{"model.embed_tokens.weight", {V, C}}, {"model.norm.weight", {C}}, {"lm_head.weight", {V, C}}};
  for (int l = 0; l < L; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.push_back({p + "input_layernorm.weight", {C}});
    ts.push_back({p + "post_attention_layernorm.weight", {C}});
    ts.push_back({p + "self_attn.q_proj.weight", {H * D, C}});
    ts.push_back({p + "self_attn.k_proj.weight", {K * D, C}});
    ts.push_back({p + "self_attn.v_proj.weight", {K * D, C}});
    ts.push_back({p + "self_attn.o_proj.weight", {C, H * D}});
    ts.push_back({p + "mlp.gate_proj.weight", {F, C}});
    ts.push_back({p + "mlp.up_proj.weight", {F, C}});
    ts.push_back({p + "mlp.down_proj.weight", {C, F}});
  }
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 0.2f);
  std::string header = "{";
  std::vector<float> data;
  for (size_t i = 0; i < ts.size(); i++) {
    int64_t n = 1;
    std::string shape;
    for (int64_t d : ts[i].second) n *= d, shape += (shape.empty() ? "" : ",") + std::to_string(d);
    const size_t at = data.size() * 4;
    const bool norm = ts[i].first.find("norm") != std::string::npos;
    for (int64_t k = 0; k < n; k++) data.push_back(norm ? 1.f + nd(rng) * 0.1f : nd(rng));
    header += (i ? "," : "") + std::string("\"") + ts[i].first + "\":{\"dtype\":\"F32\",\"shape\":[" + shape + "],\"data_offsets\":[" +
              std::to_string(at) + "," + std::to_string(data.size() * 4) + "]}";
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::ofstream f(dir + "/model.safetensors", std::ios::binary);
  const uint64_t hl = header.size();
  f.write(reinterpret_cast<const char*>(&hl), 8);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size() * 4));
  return dir;
}

// Computes on the CPU, whole sequences at a time; counts the passes and the weight copies.
struct FakeDevice final : DeviceCompute {
  int passes = 0, copies = 0;
  uint64_t version = ~0ull;
  std::string name() const override { return "fake:0"; }
  void sync(ModelImpl& m) {
    passes++;
    if (version != m.weights_version) copies++, version = m.weights_version;
  }
  static std::vector<SeqRun> runs(const PackedBatch& b) {
    std::vector<SeqRun> r;
    for (int64_t s = 0; s < b.n_seqs; s++) r.push_back({b.offsets[s], int64_t(b.offsets[s + 1]) - b.offsets[s], 0, nullptr});
    return r;
  }
  void forward_hidden(ModelImpl& m, const PackedBatch& b, float* hidden) override {
    sync(m);
    m.forward_hidden(b.tokens, b.n_tokens, runs(b), hidden);
  }
  std::vector<IgTokenStats> score_ig(ModelImpl& m, const IgPair* pairs, int64_t n) override {
    sync(m);
    const int64_t C = m.info.config.hidden, V = m.info.config.vocab;
    std::vector<IgTokenStats> out;
    for (int64_t i = 0; i < n; i++) {
      const IgPair& p = pairs[i];
      std::vector<int32_t> tok(p.full, p.full + p.full_len);
      tok.insert(tok.end(), p.masked, p.masked + p.masked_len);
      const int32_t off[3] = {0, int32_t(p.full_len), int32_t(p.full_len + p.masked_len)};
      const PackedBatch b{tok.data(), int64_t(tok.size()), off, 2};
      Floats h(tok.size() * static_cast<size_t>(C)), lf(static_cast<size_t>(V)), lm(static_cast<size_t>(V));
      m.forward_hidden(b.tokens, b.n_tokens, runs(b), h.data());
      for (int64_t j = 0; j < p.response_len; j++) {
        const int64_t rf = p.full_len - p.response_len - 1 + j, rm = p.full_len + p.masked_len - p.response_len - 1 + j;
        m.head_logits(1, &h[size_t(rf * C)], lf.data());
        m.head_logits(1, &h[size_t(rm * C)], lm.data());
        out.push_back(m.be->ig_token_stats(lf.data(), lm.data(), V, p.full[p.full_len - p.response_len + j]));
      }
    }
    return out;
  }
  TrainResult train_accumulate(ModelImpl&, const PackedBatch&, const float*) override { fail(ErrorCode::Internal, "not in the fake"); }
  StepResult optimizer_step(ModelImpl&, const AdamWOptions&) override { fail(ErrorCode::Internal, "not in the fake"); }
  void download(ModelImpl&, bool) override {}
  int64_t bytes_in_use() const override { return 0; }
  int64_t peak_bytes() const override { return 0; }
};

int main() {
  const std::string dir = write_model();
  FakeDevice* fake = nullptr;
  set_device_factory([&](ModelImpl&, const std::string& name, std::string&) -> std::unique_ptr<DeviceCompute> {
    auto d = std::make_unique<FakeDevice>();
    fake = d.get();
    return name == "cuda" ? std::move(d) : nullptr;
  });
  LoadOptions cpu_opts, dev_opts;
  cpu_opts.threads = dev_opts.threads = 1;
  dev_opts.device = "cuda";
  auto cpu = Model::load(dir, cpu_opts);
  auto dev = Model::load(dir, dev_opts);
  check(dev->info().device == "fake:0" && dev->info().device_note.empty(), "the model reports the device it opened");
  check(cpu->info().device == "cpu", "a CPU model says cpu");

  // Hidden states and embeddings go to the device (the same CPU code there: equal exactly).
  std::vector<int32_t> tokens = {1, 5, 9, 33, 2, 7, 7, 40, 11, 3, 60};
  const int32_t offs[3] = {0, 6, 11};
  const PackedBatch b{tokens.data(), int64_t(tokens.size()), offs, 2};
  const int64_t C = cpu->info().config.hidden;
  std::vector<float> ha(tokens.size() * size_t(C)), hb(ha.size()), ea(size_t(2 * C)), eb(ea.size());
  cpu->forward_final_hidden(b, ha.data());
  dev->forward_final_hidden(b, hb.data());
  check(ha == hb && fake->passes == 1, "final hidden states: computed by the device, equal to the CPU's");
  cpu->forward_mean_hidden(b, ea.data());
  dev->forward_mean_hidden(b, eb.data());
  check(ea == eb && fake->passes == 2, "mean hidden states: computed by the device");

  // IG scoring: the device's route (no shared prefix) against the CPU's (shared prefix, streamed head).
  std::vector<int32_t> f1 = {1, 2, 3, 4, 5, 6, 7, 8, 9}, m1 = {1, 2, 30, 31, 5, 6, 7, 8, 9}, f2 = {4, 4, 8, 15, 16, 23, 42, 1}, m2 = {9, 4, 8, 15, 16, 23, 42, 1};
  const IgPair pairs[2] = {{f1.data(), 9, m1.data(), 9, 3}, {f2.data(), 8, m2.data(), 8, 2}};
  IgScores sa[2], sb[2];
  cpu->score_ig(pairs, 2, sa);
  dev->score_ig(pairs, 2, sb);
  double worst = 0;
  for (int i = 0; i < 2; i++)
    for (auto fld : {&IgScores::ce_full, &IgScores::ce_masked, &IgScores::ig_ce, &IgScores::ig_kl, &IgScores::ig_js, &IgScores::entropy_full, &IgScores::entropy_masked})
      worst = std::max(worst, std::fabs(sa[i].*fld - sb[i].*fld));
  check(worst < 1e-5, "IG scores through the device within 1e-5 of the CPU's (max diff " + std::to_string(worst) + ")");
  check(sb[0].n_tokens == 3 && sb[0].shared_prefix == 2 && sb[0].positions_computed == 18, "a device pair runs both sequences whole");
  check(sa[0].positions_computed < 18, "the CPU runs the shared prefix once");
  check(fake->passes == 3 && fake->copies == 1, "one copy of the weights while they do not change");

  // A weight written on the host: the device copies them again before its next pass.
  std::vector<float> nw(static_cast<size_t>(C));
  dev->read_tensor("model.norm.weight", "param", nw.data());
  nw[0] += 0.5f;
  dev->write_tensor("model.norm.weight", "param", nw.data());
  dev->forward_final_hidden(b, hb.data());
  check(fake->copies == 2, "a changed weight is copied to the device again");
  check(hb != ha, "and the device computes with it");

  // A factory that cannot open a device: the model stays on the CPU and says why.
  set_device_factory([](ModelImpl&, const std::string&, std::string& why) -> std::unique_ptr<DeviceCompute> {
    why = "no CUDA driver: dlopen(\"libcuda.so.1\") failed (test)";
    return nullptr;
  });
  auto fallback = Model::load(dir, dev_opts);
  check(fallback->info().device == "cpu", "a failed device leaves the model on the CPU");
  check(fallback->info().device_note == "cuda was asked for and is not used: no CUDA driver: dlopen(\"libcuda.so.1\") failed (test); running on the CPU",
        "the note names the reason: " + fallback->info().device_note);
  bool refused = false;
  try {
    LoadOptions bad = cpu_opts;
    bad.device = "tpu";
    Model::load(dir, bad);
  } catch (const Error& e) {
    refused = std::string(e.what()).find("unknown device 'tpu'") != std::string::npos;
  }
  check(refused, "an unknown device is refused");
  std::printf("device seam: %d passed, %d failed\n", g_pass, g_fail);
  std::system(("rm -rf " + dir).c_str());
  return g_fail ? 1 : 0;
}
