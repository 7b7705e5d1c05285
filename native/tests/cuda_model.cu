// The CUDA device model against the CPU backend, whole model (native/src/cuda/device_model.cu), and
// its speed. The CPU reference runs with bf16 matmuls (operands rounded to bfloat16, float32
// accumulation), the GPU's numerics, so the two differ only by summation order. Needs no Node.
//   kpig_cuda_model test <model-dir>   hidden states, IG scores, gradients and one AdamW step;
//                                      exit 0: all within their thresholds; 1: not; 3: no usable GPU
//   kpig_cuda_model bench <model-dir> [pairs] [len]   IG scoring pairs/s and training tokens/s,
//                                      achieved TFLOP/s, MFU against the bf16 dense peak, peak memory
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "../include/kpig/model.h"
#include "../src/cuda/device_model.h"
#include "../src/model/model_impl.h"
#include "parity.h"

using namespace kpig;

namespace {

std::mt19937 rng(7);

std::vector<int32_t> random_tokens(int64_t n, int64_t V) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(V - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

using kpig::parity::nmse;

struct Batch {
  std::vector<int32_t> tokens, offsets{0};
  void add(const std::vector<int32_t>& s) {
    tokens.insert(tokens.end(), s.begin(), s.end());
    offsets.push_back(int32_t(tokens.size()));
  }
  PackedBatch packed() const { return {tokens.data(), int64_t(tokens.size()), offsets.data(), int64_t(offsets.size()) - 1}; }
};

// Full/masked pairs: a shared start, an instruction that differs, the same input and response.
struct Pairs {
  std::vector<std::vector<int32_t>> full, masked;
  std::vector<IgPair> pairs;
  Pairs(int64_t n, int64_t len, int64_t R, int64_t V) {
    for (int64_t i = 0; i < n; i++) {
      std::vector<int32_t> f = random_tokens(len, V), m = f;
      for (int64_t k = 4; k < std::min<int64_t>(len - R, 16); k++) m[size_t(k)] = random_tokens(1, V)[0];
      full.push_back(f), masked.push_back(m);
    }
    for (int64_t i = 0; i < n; i++) pairs.push_back({full[size_t(i)].data(), len, masked[size_t(i)].data(), len, R});
  }
};

int check(const char* what, double err, double limit) {
  const bool ok = err <= limit && std::isfinite(err);
  std::printf("%-48s %.3e  (limit %.0e)  %s\n", what, err, limit, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

int test(const std::string& dir) {
  LoadOptions cpu_opts;
  cpu_opts.threads = 0;
  LoadOptions gpu_opts = cpu_opts;
  gpu_opts.device = "cuda";
  auto cpu = Model::load(dir, cpu_opts);
  auto gpu = Model::load(dir, gpu_opts);
  if (!gpu->info().device_note.empty()) {
    std::printf("%s\n", gpu->info().device_note.c_str());
    return 3;
  }
  cpu->set_matmul_bf16(true);
  const ModelConfig& c = cpu->info().config;
  std::printf("model %s (%s): %lld layers, hidden %lld, vocab %lld; device %s\n", dir.c_str(), c.model_type.c_str(), (long long)c.layers,
              (long long)c.hidden, (long long)c.vocab, gpu->info().device.c_str());
  int bad = 0;

  // 1. Hidden states of a packed batch of uneven sequences.
  Batch b;
  for (int64_t len : {37, 64, 5, 100}) b.add(random_tokens(std::min(len, c.max_pos), c.vocab));
  std::vector<float> hc(b.tokens.size() * size_t(c.hidden)), hg(hc.size());
  cpu->forward_final_hidden(b.packed(), hc.data());
  gpu->forward_final_hidden(b.packed(), hg.data());
  bad += check("final hidden states (NMSE)", nmse(hg, hc), 1e-4);

  // 2. IG scores of 12 pairs.
  Pairs P(12, std::min<int64_t>(48, c.max_pos), 6, c.vocab);
  std::vector<IgScores> sc(P.pairs.size()), sg(P.pairs.size());
  cpu->score_ig(P.pairs.data(), int64_t(P.pairs.size()), sc.data());
  gpu->score_ig(P.pairs.data(), int64_t(P.pairs.size()), sg.data());
  double worst = 0;
  for (size_t i = 0; i < sc.size(); i++)
    for (auto f : {&IgScores::ce_full, &IgScores::ce_masked, &IgScores::ig_ce, &IgScores::ig_kl, &IgScores::ig_js, &IgScores::entropy_full})
      worst = std::max(worst, std::fabs(sc[i].*f - sg[i].*f));
  bad += check("IG scores, every field (max |diff|, nats)", worst, 5e-3);

  // 3. Gradients of a weighted cross-entropy (signed weights, as KPIG's objective makes them).
  cpu->train_full();
  gpu->train_full();
  std::vector<float> w(b.tokens.size(), 0.f);
  for (size_t s = 0; s + 1 < b.offsets.size(); s++)
    for (int32_t t = b.offsets[s] + 1; t + 1 < b.offsets[s + 1]; t++) w[size_t(t)] = (t % 5 == 0) ? -0.3f : 0.02f;
  const TrainResult rc = cpu->train_accumulate(b.packed(), w.data(), nullptr, 0);
  ModelImpl& gi = gpu->internals();
  const TrainResult rg = gi.device->train_accumulate(gi, b.packed(), w.data());
  gi.device->download(gi, true);
  bad += check("loss Σ w·NLL (relative)", std::fabs(rg.loss - rc.loss) / std::max(1e-12, std::fabs(rc.loss)), 1e-3);
  double gworst = 0;
  std::string gname;
  for (const TensorInfo& t : cpu->tensors()) {
    if (!t.trainable) continue;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    std::vector<float> a(static_cast<size_t>(n)), r(static_cast<size_t>(n));
    cpu->read_tensor(t.name, "grad", r.data());
    gpu->read_tensor(t.name, "grad", a.data());
    const double e = nmse(a, r);
    if (e > gworst || !std::isfinite(e)) gworst = e, gname = t.name;
  }
  bad += check(("gradients, worst tensor (NMSE): " + gname).c_str(), gworst, 1e-3);

  // 4. One AdamW step with clipping and decay: the norm and the weights after it.
  AdamWOptions o;
  o.lr = 1e-3, o.weight_decay = 0.01, o.max_grad_norm = 1.0;
  std::vector<std::vector<float>> before;
  for (const TensorInfo& t : cpu->tensors()) {
    if (!t.trainable) continue;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    before.emplace_back(static_cast<size_t>(n));
    cpu->read_tensor(t.name, "param", before.back().data());
  }
  const StepResult sc1 = cpu->optimizer_step(o);
  const StepResult sg1 = gi.device->optimizer_step(gi, o);
  gi.device->download(gi, false);
  bad += check("AdamW: gradient norm (relative)", std::fabs(sg1.grad_norm - sc1.grad_norm) / std::max(1e-12, sc1.grad_norm), 1e-3);
  double uworst = 0;
  size_t k = 0;
  for (const TensorInfo& t : cpu->tensors()) {
    if (!t.trainable) continue;
    std::vector<float> a(before[k].size()), r(before[k].size());
    cpu->read_tensor(t.name, "param", r.data());
    gpu->read_tensor(t.name, "param", a.data());
    for (size_t i = 0; i < r.size(); i++) a[i] -= before[k][i], r[i] -= before[k][i];
    uworst = std::max(uworst, nmse(a, r));
    k++;
  }
  // The first update is about lr·sign(g): a gradient near zero may flip its sign, hence the looser limit.
  bad += check("AdamW: the update, worst tensor (NMSE)", uworst, 2e-2);
  std::printf("device memory: %.1f MiB in use, %.1f MiB at most\n", gi.device->bytes_in_use() / 1048576.0, gi.device->peak_bytes() / 1048576.0);

  // 5. LoRA: the family's default targets, B drawn at random (it starts at zero, which would leave A
  // without a gradient), the same on both: hidden states through the adapters, and their gradients.
  auto lc = Model::load(dir, cpu_opts), lg = Model::load(dir, gpu_opts);
  lc->set_matmul_bf16(true);
  LoraConfig lora;
  lora.rank = 4, lora.alpha = 8.f, lora.seed = 3;
  lc->lora_add(lora), lg->lora_add(lora);
  std::normal_distribution<float> nd(0.f, 0.05f);
  for (const TensorInfo& t : lc->tensors()) {
    if (t.name.find("lora_B") == std::string::npos) continue;
    std::vector<float> v(static_cast<size_t>(t.shape[0] * t.shape[1]));
    for (auto& x : v) x = nd(rng);
    lc->write_tensor(t.name, "param", v.data()), lg->write_tensor(t.name, "param", v.data());
  }
  lc->forward_final_hidden(b.packed(), hc.data());
  lg->forward_final_hidden(b.packed(), hg.data());
  bad += check("LoRA: final hidden states (NMSE)", nmse(hg, hc), 1e-4);
  lc->train_accumulate(b.packed(), w.data(), nullptr, 0);
  ModelImpl& li = lg->internals();
  li.device->train_accumulate(li, b.packed(), w.data());
  li.device->download(li, true);
  double lworst = 0;
  std::string lname;
  int n_lora = 0;
  for (const TensorInfo& t : lc->tensors()) {
    if (!t.trainable) continue;
    n_lora++;
    std::vector<float> a(static_cast<size_t>(t.shape[0] * t.shape[1])), r(a.size());
    lc->read_tensor(t.name, "grad", r.data());
    lg->read_tensor(t.name, "grad", a.data());
    const double e = nmse(a, r);
    if (e > lworst || !std::isfinite(e)) lworst = e, lname = t.name;
  }
  bad += check(("LoRA: gradients of " + std::to_string(n_lora) + " adapter tensors, worst (NMSE): " + lname).c_str(), lworst, 1e-3);
  std::printf("%s\n", bad ? "FAIL" : "PASS");
  return bad ? 1 : 0;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Dense bf16 tensor-core peak of the GPU (TFLOP/s), from its name; 0 when unknown.
double bf16_peak(const std::string& name) {
  if (name.find("H100") != std::string::npos) return name.find("PCIe") != std::string::npos ? 756.0 : 989.4;
  if (name.find("H200") != std::string::npos || name.find("GH200") != std::string::npos) return 989.4;
  if (name.find("A100") != std::string::npos) return 312.0;
  return 0;
}

int bench(const std::string& dir, int64_t n_pairs, int64_t len) {
  LoadOptions o;
  o.device = "cuda";
  auto m = Model::load(dir, o);
  if (!m->info().device_note.empty()) {
    std::printf("%s\n", m->info().device_note.c_str());
    return 3;
  }
  ModelImpl& mi = m->internals();
  const ModelConfig& c = m->info().config;
  const double N = double(m->info().n_params);
  const double peak = bf16_peak(m->info().device);
  // IG scoring: n_pairs pairs of len tokens each side, 16 response tokens.
  Pairs P(n_pairs, len, 16, c.vocab);
  std::vector<IgScores> out(P.pairs.size());
  m->score_ig(P.pairs.data(), n_pairs, out.data());  // warm-up (upload, allocations)
  const int reps = 5;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; r++) m->score_ig(P.pairs.data(), n_pairs, out.data());
  const double ig_s = seconds_since(t0) / reps;
  // Forward FLOPs: 2·N per token, plus attention 4·layers·len²/2·hidden per sequence (causal), both sides.
  const double ig_flops = 2.0 * (2 * N * len + 2.0 * c.layers * len * len * c.hidden) * n_pairs;
  std::printf("ig: %lld pairs × 2 × %lld tokens: %.4f s per call, %.1f pairs/s, %.1f TFLOP/s", (long long)n_pairs, (long long)len, ig_s,
              n_pairs / ig_s, ig_flops / ig_s / 1e12);
  if (peak > 0) std::printf(", MFU %.1f%% of %.0f", 100 * ig_flops / ig_s / 1e12 / peak, peak);
  std::printf("\n");
  // Training: 8 sequences of len tokens, loss on every position, then AdamW.
  m->train_full();
  Batch b;
  for (int i = 0; i < 8; i++) b.add(random_tokens(len, c.vocab));
  std::vector<float> w(b.tokens.size(), 0.f);
  for (size_t s = 0; s + 1 < b.offsets.size(); s++)
    for (int32_t t = b.offsets[s]; t + 1 < b.offsets[s + 1]; t++) w[size_t(t)] = 1.f / float(b.tokens.size() - 8);
  AdamWOptions ao;
  ao.lr = 1e-5;
  ao.max_grad_norm = 1.0;
  mi.device->train_accumulate(mi, b.packed(), w.data());
  mi.device->optimizer_step(mi, ao);
  const int steps = 5;
  t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < steps; r++) {
    mi.device->train_accumulate(mi, b.packed(), w.data());
    mi.device->optimizer_step(mi, ao);
  }
  cudaDeviceSynchronize();
  const double st = seconds_since(t0) / steps;
  const double tokens = double(b.tokens.size());
  const double tr_flops = 6 * N * tokens + 3.0 * 8 * 2.0 * c.layers * len * len * c.hidden;
  std::printf("train: 8 × %lld tokens: %.4f s per step, %.0f tokens/s, %.1f TFLOP/s", (long long)len, st, tokens / st, tr_flops / st / 1e12);
  if (peak > 0) std::printf(", MFU %.1f%% of %.0f", 100 * tr_flops / st / 1e12 / peak, peak);
  std::printf("\npeak device memory: %.2f GiB\n", mi.device->peak_bytes() / 1073741824.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  kpig::cuda::register_device();
  const std::string mode = argc > 1 ? argv[1] : "test";
  if (argc < 3) {
    std::fprintf(stderr, "usage: kpig_cuda_model test|bench <model-dir> [pairs] [len]\n");
    return 2;
  }
  try {
    if (mode == "test") return test(argv[2]);
    if (mode == "bench") return bench(argv[2], argc > 3 ? std::atoll(argv[3]) : 64, argc > 4 ? std::atoll(argv[4]) : 256);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
