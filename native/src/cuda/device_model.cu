// The CUDA device: the engine's weights mirrored on the GPU buffer by buffer, the packed forward
// pass (forward.cpp's order of work, op for op), IG scoring with the streamed head, and full
// fine-tuning (the fused weighted cross-entropy, backward.cpp's backward pass, AdamW per registry
// tensor as adamw.cpp does it). Matmuls are bf16 on the tensor cores with float32 accumulation;
// everything else is float32. Deterministic: no atomics anywhere (embedding gradients are summed
// row by row per token), so a step gives the same bits every time.
// Legend: T = tokens, C = hidden, H/K = query/kv heads, D = head dim, F = MLP width, V = vocab.
#include "device_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include <cuda_runtime.h>
#include <dlfcn.h>

#include "../model/model_impl.h"
#include "attention.h"
#include "ce.h"
#include "gemm.h"
#include "head.h"
#include "rows.h"

namespace kpig::cuda {

namespace {

#define CK(x)                                                                                               \
  do {                                                                                                      \
    cudaError_t e_ = (x);                                                                                   \
    if (e_ != cudaSuccess) fail(ErrorCode::Internal, std::string("CUDA: ") + #x + ": " + cudaGetErrorString(e_)); \
  } while (0)

struct MemStats {
  int64_t now = 0, peak = 0;
};

// A device allocation that grows on demand (its contents are not kept when it grows).
class Buf {
 public:
  explicit Buf(MemStats* stats = nullptr) : stats_(stats) {}
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { release(); }
  void bind(MemStats* stats) { stats_ = stats; }
  template <typename T = float>
  T* ensure(size_t count) {
    const size_t bytes = count * sizeof(T);
    if (bytes > cap_) {
      release();
      CK(cudaMalloc(&p_, std::max<size_t>(bytes, 256)));
      cap_ = std::max<size_t>(bytes, 256);
      if (stats_) {
        stats_->now += int64_t(cap_);
        stats_->peak = std::max(stats_->peak, stats_->now);
      }
    }
    return static_cast<T*>(p_);
  }
  template <typename T = float>
  T* get() const {
    return static_cast<T*>(p_);
  }
  bool empty() const { return p_ == nullptr; }

 private:
  void release() {
    if (!p_) return;
    cudaFree(p_);
    if (stats_) stats_->now -= int64_t(cap_);
    p_ = nullptr;
    cap_ = 0;
  }
  void* p_ = nullptr;
  size_t cap_ = 0;
  MemStats* stats_ = nullptr;
};

template <typename T>
void upload(Buf& b, const T* host, size_t n, cudaStream_t s) {
  T* d = b.ensure<T>(n);
  if (n) CK(cudaMemcpyAsync(d, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
}

// ---- kernels of the model glue (the ops themselves are in rows.cu, attention.cu, ce.cu, gemm.cu) ----

__global__ void embed_kernel(const int32_t* tokens, const int32_t* pos, const float* tok_emb, const float* pos_emb, float scale, int64_t C,
                             float* x) {
  const int64_t r = blockIdx.x;
  const float* e = tok_emb + int64_t(tokens[r]) * C;
  const float* p = pos_emb ? pos_emb + int64_t(pos[r]) * C : nullptr;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) x[r * C + i] = e[i] * scale + (p ? p[i] : 0.f);
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) y[i] += x[i];
}

// gb[j] += Σ_r dy[r·ld + j], rows in order.
__global__ void colsum_add_kernel(const float* dy, int64_t R, int64_t N, int64_t ld, float* gb) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= N) return;
  float s = 0.f;
  for (int64_t r = 0; r < R; r++) s += dy[r * ld + j];
  gb[j] += s;
}

// Group g adds scale·Σ of its rows (rows[first[g] .. first[g+1]), in order) into out row target[g].
__global__ void scatter_add_kernel(const float* dx, const int32_t* rows, const int32_t* first, const int32_t* target, float scale, int64_t C,
                                   float* out) {
  const int64_t g = blockIdx.x;
  float* o = out + int64_t(target[g]) * C;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    float s = 0.f;
    for (int32_t k = first[g]; k < first[g + 1]; k++) s += dx[int64_t(rows[k]) * C + i];
    o[i] += scale * s;
  }
}

// y = a·x, n elements.
__global__ void scaled_copy_kernel(float* y, const float* x, float a, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) y[i] = a * x[i];
}

constexpr int64_t kNormChunk = 1 << 16;

// Σ g² of each 65536-element chunk (as adamw.cpp chunks it), in double.
__global__ void sumsq_kernel(const float* g, int64_t n, double* part) {
  const int64_t c = blockIdx.x, i0 = c * kNormChunk, i1 = min(n, i0 + kNormChunk);
  double s = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) s += double(g[i]) * double(g[i]);
  __shared__ double sh[256];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[c] = sh[0];
}

unsigned blocks_for(int64_t n, int per = 256) { return unsigned(std::min<int64_t>((n + per - 1) / per, 65535)); }

// A host buffer's device mirror: its parameter, and when training its gradient and AdamW moments.
struct Mirror {
  const float* host = nullptr;
  int64_t n = 0;
  Buf p, g, m, v;
};

// A LoRA adapter on output columns [o0, o1): y[:, o0:o1] += scale·(x·Aᵀ)·Bᵀ. u(T, r) = x·Aᵀ is kept
// for the backward pass.
struct DLora {
  float *A = nullptr, *B = nullptr, *gA = nullptr, *gB = nullptr;
  int64_t o0 = 0, o1 = 0, rank = 0;
  float scale = 1.f, dropout = 0.f;
  std::unique_ptr<Buf> u;
};

struct DLinear {
  float *w = nullptr, *b = nullptr, *gw = nullptr, *gb = nullptr;
  int64_t in = 0, out = 0;
  bool in_major = false;
  std::vector<DLora> lora;
};

struct DLayer {
  float *n1w = nullptr, *n1b = nullptr, *n2w = nullptr, *n2b = nullptr;
  float *g_n1w = nullptr, *g_n1b = nullptr, *g_n2w = nullptr, *g_n2b = nullptr;
  DLinear qkv, o, up, down;
};

// What one layer's forward keeps for the backward pass (or the shared scratch of inference).
struct DActs {
  Buf x_in, h1, mean1, rstd1, qkv, lse, att, x_mid, h2, mean2, rstd2, ff, act;
  void bind(MemStats* s) {
    for (Buf* b : {&x_in, &h1, &mean1, &rstd1, &qkv, &lse, &att, &x_mid, &h2, &mean2, &rstd2, &ff, &act}) b->bind(s);
  }
};

class CudaDevice final : public DeviceCompute {
 public:
  CudaDevice(ModelImpl& m, int device) : device_(device) {
    CK(cudaSetDevice(device_));
    CK(cudaStreamCreate(&s_));
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, device_));
    name_ = "cuda:" + std::to_string(device_) + " " + prop.name;
    for (Buf* b : {&x_, &hidden_, &dh_, &dx_, &tmp_, &d_act_, &d_ff_, &d_h_, &d_att_, &d_qkv_, &tok_, &pos_, &start_, &end_, &rope_, &rows_,
                   &targets_, &weights_, &nll_, &hbuf_, &logits_, &dhbuf_, &fr_, &mr_, &y_, &stats_, &part_, &grp_rows_, &grp_first_,
                   &grp_target_, &mean_f_, &rstd_f_, &x_final_})
      b->bind(&mem_);
    scratch_.bind(&mem_);
    tmp_u_.bind(&mem_);
    tmp_du_.bind(&mem_);
    refresh(m);
  }
  ~CudaDevice() override {
    if (s_) cudaStreamDestroy(s_);
  }

  std::string name() const override { return name_; }
  int64_t bytes_in_use() const override { return mem_.now; }
  int64_t peak_bytes() const override { return mem_.peak; }

  void forward_hidden(ModelImpl& m, const PackedBatch& b, float* hidden) override {
    refresh(m);
    forward(m, b, false);
    CK(cudaMemcpyAsync(hidden, hidden_.get(), sizeof(float) * size_t(b.n_tokens * C_), cudaMemcpyDeviceToHost, s_));
    CK(cudaStreamSynchronize(s_));
  }

  std::vector<IgTokenStats> score_ig(ModelImpl& m, const IgPair* pairs, int64_t n) override {
    refresh(m);
    const ModelConfig& c = m.info.config;
    std::vector<IgTokenStats> out;
    // Groups of pairs of at most kTokens tokens: all full sequences, then all masked ones.
    constexpr int64_t kTokens = 1 << 15;
    int64_t i0 = 0;
    while (i0 < n) {
      int64_t i1 = i0, tokens = 0;
      while (i1 < n && (i1 == i0 || tokens + pairs[i1].full_len + pairs[i1].masked_len <= kTokens)) {
        tokens += pairs[i1].full_len + pairs[i1].masked_len;
        i1++;
      }
      std::vector<int32_t> tok;
      std::vector<int32_t> off{0};
      for (int64_t i = i0; i < i1; i++) tok.insert(tok.end(), pairs[i].full, pairs[i].full + pairs[i].full_len), off.push_back(int32_t(tok.size()));
      for (int64_t i = i0; i < i1; i++) tok.insert(tok.end(), pairs[i].masked, pairs[i].masked + pairs[i].masked_len), off.push_back(int32_t(tok.size()));
      PackedBatch b{tok.data(), int64_t(tok.size()), off.data(), int64_t(off.size()) - 1};
      forward(m, b, false);
      std::vector<int64_t> fr, mr;
      std::vector<int32_t> y;
      const int64_t np = i1 - i0;
      for (int64_t i = i0; i < i1; i++) {
        const IgPair& p = pairs[i];
        const int64_t R = p.response_len, fo = off[size_t(i - i0)], mo = off[size_t(np + i - i0)];
        for (int64_t j = 0; j < R; j++) {
          fr.push_back(fo + p.full_len - R - 1 + j);
          mr.push_back(mo + p.masked_len - R - 1 + j);
          y.push_back(p.full[p.full_len - R + j]);
        }
      }
      const int64_t P = int64_t(y.size()), chunk = 128;
      upload(fr_, fr.data(), fr.size(), s_);
      upload(mr_, mr.data(), mr.size(), s_);
      upload(y_, y.data(), y.size(), s_);
      double* st = stats_.ensure<double>(size_t(P * 6));
      CK(ig_head(hidden_.get(), fr_.get<int64_t>(), mr_.get<int64_t>(), y_.get<int32_t>(), P, C_, head_w(), c.vocab, chunk,
                 hbuf_.ensure(size_t(2 * chunk * C_)), logits_.ensure(size_t(2 * chunk * c.vocab)), st, s_));
      std::vector<double> h(static_cast<size_t>(P * 6));
      CK(cudaMemcpyAsync(h.data(), st, sizeof(double) * h.size(), cudaMemcpyDeviceToHost, s_));
      CK(cudaStreamSynchronize(s_));
      for (int64_t k = 0; k < P; k++) out.push_back({h[size_t(6 * k)], h[size_t(6 * k + 1)], h[size_t(6 * k + 2)], h[size_t(6 * k + 3)], h[size_t(6 * k + 4)], h[size_t(6 * k + 5)]});
      i0 = i1;
    }
    return out;
  }

  TrainResult train_accumulate(ModelImpl& m, const PackedBatch& b, const float* weights) override {
    refresh(m);
    ensure_training(m);
    for (const DLayer& L : layers_)
      for (const DLinear* lin : {&L.qkv, &L.o, &L.up, &L.down})
        for (const DLora& a : lin->lora)
          if (a.dropout > 0.f) fail(ErrorCode::Input, "LoRA dropout is not built on the CUDA device (this adapter has dropout " + std::to_string(a.dropout) + "; use 0, or the CPU)");
    const ModelConfig& c = m.info.config;
    const int64_t T = b.n_tokens;
    std::vector<int64_t> rows;
    std::vector<int32_t> targets;
    std::vector<float> wts;
    for (int64_t s = 0; s < b.n_seqs; s++)
      for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) {
        if (weights[t] == 0.f) continue;
        if (!std::isfinite(weights[t])) fail(ErrorCode::Input, "weight at position " + std::to_string(t - b.offsets[s]) + " of sequence " + std::to_string(s) + " is not finite");
        if (t == b.offsets[s + 1] - 1) fail(ErrorCode::Input, "sequence " + std::to_string(s) + " has a non-zero weight at its last position, which predicts no token");
        rows.push_back(t);
        targets.push_back(b.tokens[t + 1]);
        wts.push_back(weights[t]);
      }
    TrainResult res;
    res.n_weighted = int64_t(rows.size());
    if (rows.empty()) return res;
    forward(m, b, true);
    const int64_t n = int64_t(rows.size()), chunk = 256;
    upload(rows_, rows.data(), rows.size(), s_);
    upload(targets_, targets.data(), targets.size(), s_);
    upload(weights_, wts.data(), wts.size(), s_);
    float* dh = dh_.ensure(size_t(T * C_));
    CK(cudaMemsetAsync(dh, 0, sizeof(float) * size_t(T * C_), s_));
    double* nll = nll_.ensure<double>(size_t(n));
    CK(fused_linear_ce(hidden_.get(), C_, head_w(), c.vocab, rows_.get<int64_t>(), targets_.get<int32_t>(), weights_.get(), n, chunk,
                       hbuf_.ensure(size_t(chunk * C_)), logits_.ensure(size_t(chunk * c.vocab)), dhbuf_.ensure(size_t(chunk * C_)), dh,
                       head_g(), nll, s_));
    backward(m, b);
    std::vector<double> h(static_cast<size_t>(n));
    CK(cudaMemcpyAsync(h.data(), nll, sizeof(double) * h.size(), cudaMemcpyDeviceToHost, s_));
    CK(cudaStreamSynchronize(s_));
    for (int64_t i = 0; i < n; i++) res.loss += double(wts[size_t(i)]) * h[size_t(i)];
    return res;
  }

  StepResult optimizer_step(ModelImpl& m, const AdamWOptions& o) override {
    ensure_training(m);
    StepResult r;
    // Σ g² per registry tensor in 65536-element chunks, summed in order (adamw.cpp's order): every
    // chunk's sum into one buffer, one copy back.
    int64_t total = 0;
    for (const Tensor& t : params_) total += (t.n + kNormChunk - 1) / kNormChunk;
    double* part = part_.ensure<double>(static_cast<size_t>(total));
    int64_t at = 0;
    for (const Tensor& t : params_) {
      const int64_t chunks = (t.n + kNormChunk - 1) / kNormChunk;
      sumsq_kernel<<<unsigned(chunks), 256, 0, s_>>>(t.g, t.n, part + at);
      CK(cudaGetLastError());
      at += chunks;
    }
    std::vector<double> h(static_cast<size_t>(total));
    CK(cudaMemcpyAsync(h.data(), part, sizeof(double) * h.size(), cudaMemcpyDeviceToHost, s_));
    CK(cudaStreamSynchronize(s_));
    double ss = 0;
    for (double v : h) ss += v;
    r.grad_norm = std::sqrt(ss);
    if (!std::isfinite(r.grad_norm)) {
      for (const Tensor& t : params_) CK(cudaMemsetAsync(t.g, 0, sizeof(float) * size_t(t.n), s_));
      CK(cudaStreamSynchronize(s_));
      r.skipped = true;
      r.step = steps_;
      return r;
    }
    const float clip = (o.max_grad_norm > 0 && r.grad_norm > o.max_grad_norm) ? float(o.max_grad_norm / (r.grad_norm + 1e-6)) : 1.f;
    const int64_t step = ++steps_;
    const double bc1 = 1.0 - std::pow(o.beta1, double(step)), bc2 = 1.0 - std::pow(o.beta2, double(step));
    for (const Tensor& t : params_) {
      const float decay = (o.decay_all || t.decay) ? float(1.0 - o.lr * o.weight_decay) : 1.f;
      CK(adamw(t.p, t.g, t.m, t.v, t.n, clip, decay, float(o.beta1), float(o.beta2), float(o.lr / bc1), float(std::sqrt(bc2)), float(o.eps), s_));
    }
    CK(cudaStreamSynchronize(s_));
    r.step = step;
    return r;
  }

  void download(ModelImpl& m, bool grads) override {
    for (auto& [host, mir] : mirrors_) {
      float* h = const_cast<float*>(host);
      CK(cudaMemcpyAsync(h, mir->p.get(), sizeof(float) * size_t(mir->n), cudaMemcpyDeviceToHost, s_));
    }
    if (grads)
      for (auto& [host, mir] : mirrors_) {
        if (mir->g.empty()) continue;
        float* hg = host_grad_of(m, host);
        if (hg) CK(cudaMemcpyAsync(hg, mir->g.get(), sizeof(float) * size_t(mir->n), cudaMemcpyDeviceToHost, s_));
      }
    CK(cudaStreamSynchronize(s_));
    m.weights_version++;
    version_ = m.weights_version;
  }

 private:
  struct Tensor {
    float *p, *g, *m, *v;
    int64_t n;
    bool decay;
  };

  // The host gradient buffer that goes with a host parameter buffer (full fine-tuning), or null.
  static float* host_grad_of(ModelImpl& m, const float* host) {
    Weights& w = m.w;
    auto pick = [&](const Floats& p, Floats& g) -> float* { return p.data() == host && !g.empty() ? g.data() : nullptr; };
    if (float* g = pick(w.tok_emb, w.g_tok_emb)) return g;
    if (float* g = pick(w.pos_emb, w.g_pos_emb)) return g;
    if (float* g = pick(w.norm_w, w.g_norm_w)) return g;
    if (float* g = pick(w.norm_b, w.g_norm_b)) return g;
    if (float* g = pick(w.head, w.g_head)) return g;
    for (Layer& L : w.layers) {
      const std::pair<Floats*, Floats*> norms[] = {{&L.norm1_w, &L.g_norm1_w}, {&L.norm1_b, &L.g_norm1_b}, {&L.norm2_w, &L.g_norm2_w}, {&L.norm2_b, &L.g_norm2_b}};
      for (const auto& [p, g] : norms)
        if (float* r = pick(*p, *g)) return r;
      for (Linear* lin : {&L.qkv, &L.o, &L.up, &L.down}) {
        if (float* r = pick(lin->w, lin->gw)) return r;
        if (float* r = pick(lin->b, lin->gb)) return r;
        for (LoraAdapter& a : lin->lora) {
          if (float* r = pick(a.A, a.gA)) return r;
          if (float* r = pick(a.B, a.gB)) return r;
        }
      }
    }
    return nullptr;
  }

  Mirror& mirror(const Floats& host) {
    auto it = mirrors_.find(host.data());
    if (it != mirrors_.end() && it->second->n != int64_t(host.size())) {
      mirrors_.erase(it);  // a buffer freed and another allocated at its address
      it = mirrors_.end();
      structure_changed_ = true;
    }
    if (it == mirrors_.end()) {
      auto mir = std::make_unique<Mirror>();
      for (Buf* b : {&mir->p, &mir->g, &mir->m, &mir->v}) b->bind(&mem_);
      mir->host = host.data();
      mir->n = int64_t(host.size());
      it = mirrors_.emplace(host.data(), std::move(mir)).first;
      structure_changed_ = true;
    }
    return *it->second;
  }
  float* dev(const Floats& host) { return host.empty() ? nullptr : mirror(host).p.get(); }
  float* dev_grad(const Floats& host) { return host.empty() ? nullptr : mirror(host).g.get(); }

  // Copies the host weights up when they changed since the last copy (LoRA adapters folded in).
  void refresh(ModelImpl& m) {
    if (uploaded_ && version_ == m.weights_version) return;
    const ModelConfig& c = m.info.config;
    C_ = c.hidden;
    Weights& w = m.w;
    has_lora_ = false;
    std::set<const float*> live;
    auto put = [&](const Floats& host) {
      if (host.empty()) return;
      Mirror& mir = mirror(host);
      live.insert(host.data());
      upload(mir.p, host.data(), host.size(), s_);
    };
    for (const Floats* f : {&w.tok_emb, &w.pos_emb, &w.norm_w, &w.norm_b, &w.head}) put(*f);
    layers_.clear();
    layers_.resize(static_cast<size_t>(c.layers));
    for (size_t l = 0; l < w.layers.size(); l++) {
      Layer& L = w.layers[l];
      for (const Floats* f : {&L.norm1_w, &L.norm1_b, &L.norm2_w, &L.norm2_b}) put(*f);
      for (Linear* lin : {&L.qkv, &L.o, &L.up, &L.down}) {
        put(lin->b);
        put(lin->w);
        for (LoraAdapter& a : lin->lora) put(a.A), put(a.B);
      }
      DLayer& D = layers_[l];
      D.n1w = dev(L.norm1_w), D.n1b = dev(L.norm1_b), D.n2w = dev(L.norm2_w), D.n2b = dev(L.norm2_b);
      auto lin = [&](Linear& h, DLinear& d) {
        d.w = dev(h.w), d.b = dev(h.b), d.in = h.in, d.out = h.out, d.in_major = h.in_major;
        d.lora.clear();
        for (LoraAdapter& a : h.lora) {
          DLora x;
          x.A = dev(a.A), x.B = dev(a.B), x.o0 = a.o0, x.o1 = a.o1, x.rank = a.rank, x.scale = a.scale, x.dropout = a.dropout;
          x.u = std::make_unique<Buf>(&mem_);
          d.lora.push_back(std::move(x));
        }
        has_lora_ = has_lora_ || !h.lora.empty();
      };
      lin(L.qkv, D.qkv), lin(L.o, D.o), lin(L.up, D.up), lin(L.down, D.down);
    }
    CK(cudaStreamSynchronize(s_));
    // Mirrors of buffers the model no longer has (merged or removed adapters) go.
    for (auto it = mirrors_.begin(); it != mirrors_.end();)
      if (!live.count(it->first)) it = mirrors_.erase(it), structure_changed_ = true;
      else ++it;
    // Another set of tensors (adapters added or merged): the trainable ones are found again.
    if (structure_changed_) training_ = false, params_.clear();
    structure_changed_ = false;
    head_ = w.head.empty() ? dev(w.tok_emb) : dev(w.head);
    uploaded_ = true;
    version_ = m.weights_version;
    if (training_) bind_grads(m);
  }

  float* head_w() { return head_; }
  float* head_g() { return head_grad_; }

  // Gradients and AdamW moments for every base tensor (zero), the registry's tensors mapped onto them.
  void ensure_training(ModelImpl& m) {
    if (training_) return;
    bool any = false;
    for (const TensorRef& t : m.registry) any = any || t.grad;
    if (!any) fail(ErrorCode::Input, "nothing to train: call train_full() or add LoRA adapters first");
    // The mirrors that hold a trainable tensor get a gradient and AdamW moments (zero).
    std::vector<Mirror*> trained;
    for (const TensorRef& t : m.registry) {
      if (!t.grad) continue;
      Mirror* mir = containing(t.data);
      if (!mir) fail(ErrorCode::Internal, "tensor '" + t.name + "' has no device copy");
      if (mir->g.empty())
        for (Buf* b : {&mir->g, &mir->m, &mir->v}) {
          float* d = b->ensure(static_cast<size_t>(mir->n));
          CK(cudaMemsetAsync(d, 0, sizeof(float) * size_t(mir->n), s_));
        }
    }
    training_ = true;
    steps_ = m.adam_steps;
    bind_grads(m);
    // AdamW over the registry's tensors, in its order, with its decay flags: slices of the mirrors.
    params_.clear();
    for (const TensorRef& t : m.registry) {
      if (!t.grad) continue;
      Mirror* mir = containing(t.data);
      const int64_t at = t.data - mir->host;
      params_.push_back({mir->p.get() + at, mir->g.get() + at, mir->m.get() + at, mir->v.get() + at, t.numel(), t.decay});
    }
    CK(cudaStreamSynchronize(s_));
  }

  Mirror* containing(const float* p) {
    for (auto& [host, mir] : mirrors_)
      if (p >= host && p < host + mir->n) return mir.get();
    return nullptr;
  }

  void bind_grads(ModelImpl& m) {
    Weights& w = m.w;
    for (size_t l = 0; l < w.layers.size(); l++) {
      Layer& L = w.layers[l];
      DLayer& D = layers_[l];
      D.g_n1w = dev_grad(L.norm1_w), D.g_n1b = dev_grad(L.norm1_b), D.g_n2w = dev_grad(L.norm2_w), D.g_n2b = dev_grad(L.norm2_b);
      auto lin = [&](Linear& h, DLinear& d) {
        d.gw = dev_grad(h.w), d.gb = dev_grad(h.b);
        for (size_t a = 0; a < h.lora.size(); a++) d.lora[a].gA = dev_grad(h.lora[a].A), d.lora[a].gB = dev_grad(h.lora[a].B);
      };
      lin(L.qkv, D.qkv), lin(L.o, D.o), lin(L.up, D.up), lin(L.down, D.down);
    }
    g_tok_ = dev_grad(w.tok_emb), g_pos_ = dev_grad(w.pos_emb), g_norm_w_ = dev_grad(w.norm_w), g_norm_b_ = dev_grad(w.norm_b);
    head_grad_ = w.head.empty() ? g_tok_ : dev_grad(w.head);
  }

  // y(M, out) (=|+=) x·W + b, then each adapter: u = x·Aᵀ, y[:, o0:o1] += (scale·u)·Bᵀ (linear.cpp's order).
  void linear(DLinear& L, int64_t M, const float* x, int64_t ldx, float* y, int64_t ldy, bool acc) {
    CK(gemm_bf16(M, L.out, L.in, x, ldx, L.w, L.in_major ? L.out : L.in, !L.in_major, y, ldy, acc, L.b, s_));
    for (DLora& a : L.lora) {
      float* u = a.u->ensure(static_cast<size_t>(M * a.rank));
      float* us = tmp_u_.ensure(static_cast<size_t>(M * a.rank));
      CK(gemm_bf16(M, a.rank, L.in, x, ldx, a.A, L.in, true, u, a.rank, false, nullptr, s_));
      scaled_copy_kernel<<<blocks_for(M * a.rank), 256, 0, s_>>>(us, u, a.scale, M * a.rank);
      CK(cudaGetLastError());
      CK(gemm_bf16(M, a.o1 - a.o0, a.rank, us, a.rank, a.B, a.rank, true, y + a.o0, ldy, true, nullptr, s_));
    }
  }
  // Given dy(M, out): gw += and gb += (when the base trains), each adapter's gA and gB +=, and
  // dx(M, in) (=) when dx is not null: through W, then each adapter's du·A added.
  void linear_backward(DLinear& L, int64_t M, const float* x, int64_t ldx, const float* dy, int64_t lddy, float* dx, int64_t lddx) {
    if (L.gw) {
      if (L.in_major) CK(gemm_bf16(L.in, L.out, M, x, ldx, dy, lddy, false, L.gw, L.out, true, nullptr, s_, true));
      else CK(gemm_bf16(L.out, L.in, M, dy, lddy, x, ldx, false, L.gw, L.in, true, nullptr, s_, true));
      if (L.gb) {
        colsum_add_kernel<<<blocks_for(L.out), 256, 0, s_>>>(dy, M, L.out, lddy, L.gb);
        CK(cudaGetLastError());
      }
    }
    if (dx) {
      if (L.in_major) CK(gemm_bf16(M, L.in, L.out, dy, lddy, L.w, L.out, true, dx, lddx, false, nullptr, s_));
      else CK(gemm_bf16(M, L.in, L.out, dy, lddy, L.w, L.in, false, dx, lddx, false, nullptr, s_));
    }
    for (DLora& a : L.lora) {
      const int64_t o = a.o1 - a.o0, r = a.rank;
      const float* dya = dy + a.o0;
      float* us = tmp_u_.ensure(static_cast<size_t>(M * r));
      float* du = tmp_du_.ensure(static_cast<size_t>(M * r));
      scaled_copy_kernel<<<blocks_for(M * r), 256, 0, s_>>>(us, a.u->get(), a.scale, M * r);
      CK(cudaGetLastError());
      if (a.gB) CK(gemm_bf16(o, r, M, dya, lddy, us, r, false, a.gB, r, true, nullptr, s_, true));  // gB(o, r) += dyaᵀ·(scale·u)
      CK(gemm_bf16(M, r, o, dya, lddy, a.B, r, false, du, r, false, nullptr, s_));                   // du = dya·B
      scaled_copy_kernel<<<blocks_for(M * r), 256, 0, s_>>>(du, du, a.scale, M * r);                // du ·= scale
      CK(cudaGetLastError());
      if (a.gA) CK(gemm_bf16(r, L.in, M, du, r, x, ldx, false, a.gA, L.in, true, nullptr, s_, true));  // gA(r, in) += duᵀ·x
      if (dx) CK(gemm_bf16(M, L.in, r, du, r, a.A, L.in, false, dx, lddx, true, nullptr, s_));          // dx += du·A
    }
  }

  void norm(const ModelConfig& c, const float* x, const float* w, const float* b, int64_t R, float* out, float* mean, float* rstd) {
    if (c.arch.norm == NormKind::LayerNorm) CK(layernorm(x, w, b, float(c.eps), R, c.hidden, out, mean, rstd, s_));
    else CK(rmsnorm(x, w, float(c.eps), c.arch.norm_plus_one, R, c.hidden, out, rstd, s_));
  }
  void norm_backward(const ModelConfig& c, const float* x, const float* w, const float* mean, const float* rstd, const float* dy, int64_t R,
                     float* dx, float* dw, float* db) {
    if (c.arch.norm == NormKind::LayerNorm) CK(layernorm_backward(x, w, mean, rstd, dy, R, c.hidden, dx, dw, db, s_));
    else CK(rmsnorm_backward(x, w, c.arch.norm_plus_one, rstd, dy, R, c.hidden, dx, dw, s_));
  }

  static Act act_of(Activation a) { return a == Activation::GeluTanh ? Act::GeluTanh : a == Activation::SiluGLU ? Act::SwiGLU : Act::GeGLU; }

  // The packed forward pass into hidden_ (T, C); with keep, every layer's activations in acts_.
  void forward(ModelImpl& m, const PackedBatch& b, bool keep) {
    const ModelConfig& c = m.info.config;
    const ArchTraits& arch = c.arch;
    const int64_t T = b.n_tokens, C = c.hidden, H = c.heads, K = c.kv_heads, D = c.head_dim;
    const int64_t qd = H * D, kd = K * D, ld = qd + 2 * kd, F = c.ffn, up_w = arch.gated() ? 2 * F : F;
    std::vector<int32_t> pos32(static_cast<size_t>(T)), start(static_cast<size_t>(T)), end(static_cast<size_t>(T));
    std::vector<int64_t> pos(static_cast<size_t>(T));
    for (int64_t s = 0; s < b.n_seqs; s++)
      for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) {
        pos[size_t(t)] = t - b.offsets[s];
        pos32[size_t(t)] = int32_t(t - b.offsets[s]);
        start[size_t(t)] = b.offsets[s];
        end[size_t(t)] = b.offsets[s + 1];
      }
    upload(tok_, b.tokens, size_t(T), s_);
    upload(pos_, pos32.data(), pos32.size(), s_);
    upload(start_, start.data(), start.size(), s_);
    upload(end_, end.data(), end.size(), s_);
    if (!arch.learned_positions) {
      const Floats rope = rope_table(c, pos);
      upload(rope_, rope.data(), rope.size(), s_);
    }
    last_T_ = T;
    last_tokens_.assign(b.tokens, b.tokens + T);
    last_pos_ = pos32;
    float* x = x_.ensure(size_t(T * C));
    embed_kernel<<<unsigned(T), 256, 0, s_>>>(tok_.get<int32_t>(), pos_.get<int32_t>(), dev(m.w.tok_emb), arch.learned_positions ? dev(m.w.pos_emb) : nullptr,
                                             embedding_scale(c), C, x);
    CK(cudaGetLastError());
    if (keep && acts_.size() != size_t(c.layers)) {
      acts_.clear();
      for (int64_t l = 0; l < c.layers; l++) acts_.push_back(std::make_unique<DActs>()), acts_.back()->bind(&mem_);
    }
    for (int64_t l = 0; l < c.layers; l++) {
      DLayer& L = layers_[size_t(l)];
      DActs& A = keep ? *acts_[size_t(l)] : scratch_;
      if (keep) CK(cudaMemcpyAsync(A.x_in.ensure(size_t(T * C)), x, sizeof(float) * size_t(T * C), cudaMemcpyDeviceToDevice, s_));
      float* h1 = A.h1.ensure(size_t(T * C));
      norm(c, x, L.n1w, L.n1b, T, h1, keep ? A.mean1.ensure(size_t(T)) : nullptr, A.rstd1.ensure(size_t(T)));
      float* qkv = A.qkv.ensure(size_t(T * ld));
      linear(L.qkv, T, h1, C, qkv, ld, false);
      if (!arch.learned_positions) {
        CK(rope(qkv, T, ld, H, D, rope_.get(), false, s_));
        CK(rope(qkv + qd, T, ld, K, D, rope_.get(), false, s_));
      }
      float scale = 1.f / std::sqrt(float(D));
      if (c.scale_attn_by_inverse_layer_idx) scale /= float(l + 1);
      float* att = A.att.ensure(size_t(T * qd));
      CK(attention_forward(qkv, ld, start_.get<int32_t>(), T, H, K, D, scale, att, qd, A.lse.ensure(size_t(T * H)), s_));
      linear(L.o, T, att, qd, x, C, true);
      if (keep) CK(cudaMemcpyAsync(A.x_mid.ensure(size_t(T * C)), x, sizeof(float) * size_t(T * C), cudaMemcpyDeviceToDevice, s_));
      float* h2 = A.h2.ensure(size_t(T * C));
      norm(c, x, L.n2w, L.n2b, T, h2, keep ? A.mean2.ensure(size_t(T)) : nullptr, A.rstd2.ensure(size_t(T)));
      float* ff = A.ff.ensure(size_t(T * up_w));
      linear(L.up, T, h2, C, ff, up_w, false);
      float* act = A.act.ensure(size_t(T * F));
      CK(mlp_activation(act_of(arch.act), ff, T, F, act, s_));
      linear(L.down, T, act, F, x, C, true);
    }
    if (keep) CK(cudaMemcpyAsync(x_final_.ensure(size_t(T * C)), x, sizeof(float) * size_t(T * C), cudaMemcpyDeviceToDevice, s_));
    norm(c, x, dev(m.w.norm_w), dev(m.w.norm_b), T, hidden_.ensure(size_t(T * C)), keep ? mean_f_.ensure(size_t(T)) : nullptr,
         rstd_f_.ensure(size_t(T)));
  }

  // backward.cpp's pass from dh_ (the gradient of hidden_), on the activations forward(keep) left.
  void backward(ModelImpl& m, const PackedBatch& b) {
    const ModelConfig& c = m.info.config;
    const ArchTraits& arch = c.arch;
    const int64_t T = b.n_tokens, C = c.hidden, H = c.heads, K = c.kv_heads, D = c.head_dim;
    const int64_t qd = H * D, kd = K * D, ld = qd + 2 * kd, F = c.ffn, up_w = arch.gated() ? 2 * F : F;
    float* dx = dx_.ensure(size_t(T * C));
    float* tmp = tmp_.ensure(size_t(T * C));
    float* d_act = d_act_.ensure(size_t(T * F));
    float* d_ff = d_ff_.ensure(size_t(T * up_w));
    float* d_h = d_h_.ensure(size_t(T * C));
    float* d_att = d_att_.ensure(size_t(T * qd));
    float* d_qkv = d_qkv_.ensure(size_t(T * ld));
    norm_backward(c, x_final_.get(), dev(m.w.norm_w), mean_f_.get(), rstd_f_.get(), dh_.get(), T, dx, g_norm_w_, g_norm_b_);
    const unsigned add_blocks = blocks_for(T * C);
    for (int64_t l = c.layers - 1; l >= 0; l--) {
      DLayer& L = layers_[size_t(l)];
      DActs& A = *acts_[size_t(l)];
      linear_backward(L.down, T, A.act.get(), F, dx, C, d_act, F);
      CK(mlp_activation_backward(act_of(arch.act), A.ff.get(), d_act, T, F, d_ff, s_));
      linear_backward(L.up, T, A.h2.get(), C, d_ff, up_w, d_h, C);
      norm_backward(c, A.x_mid.get(), L.n2w, A.mean2.get(), A.rstd2.get(), d_h, T, tmp, L.g_n2w, L.g_n2b);
      add_kernel<<<add_blocks, 256, 0, s_>>>(dx, tmp, T * C);
      CK(cudaGetLastError());
      linear_backward(L.o, T, A.att.get(), qd, dx, C, d_att, qd);
      float scale = 1.f / std::sqrt(float(D));
      if (c.scale_attn_by_inverse_layer_idx) scale /= float(l + 1);
      CK(attention_backward(A.qkv.get(), ld, start_.get<int32_t>(), end_.get<int32_t>(), T, H, K, D, scale, A.att.get(), qd, A.lse.get(), d_att,
                            qd, d_qkv, s_));
      if (!arch.learned_positions) {
        CK(rope(d_qkv, T, ld, H, D, rope_.get(), true, s_));
        CK(rope(d_qkv + qd, T, ld, K, D, rope_.get(), true, s_));
      }
      linear_backward(L.qkv, T, A.h1.get(), C, d_qkv, ld, d_h, C);
      norm_backward(c, A.x_in.get(), L.n1w, A.mean1.get(), A.rstd1.get(), d_h, T, tmp, L.g_n1w, L.g_n1b);
      add_kernel<<<add_blocks, 256, 0, s_>>>(dx, tmp, T * C);
      CK(cudaGetLastError());
    }
    // Embedding gradients: per distinct token (and position), its rows summed in order.
    auto scatter = [&](const std::vector<int32_t>& key, float scale, float* out) {
      std::map<int32_t, std::vector<int32_t>> groups;
      for (int64_t r = 0; r < T; r++) groups[key[size_t(r)]].push_back(int32_t(r));
      std::vector<int32_t> rows, first{0}, target;
      for (auto& [k, rs] : groups) {
        rows.insert(rows.end(), rs.begin(), rs.end());
        first.push_back(int32_t(rows.size()));
        target.push_back(k);
      }
      upload(grp_rows_, rows.data(), rows.size(), s_);
      upload(grp_first_, first.data(), first.size(), s_);
      upload(grp_target_, target.data(), target.size(), s_);
      scatter_add_kernel<<<unsigned(target.size()), 256, 0, s_>>>(dx, grp_rows_.get<int32_t>(), grp_first_.get<int32_t>(), grp_target_.get<int32_t>(),
                                                                  scale, C, out);
      CK(cudaGetLastError());
      CK(cudaStreamSynchronize(s_));  // the group buffers are reused by the next call
    };
    if (g_tok_) scatter(last_tokens_, embedding_scale(c), g_tok_);
    if (g_pos_ && arch.learned_positions) scatter(last_pos_, 1.f, g_pos_);
    CK(cudaStreamSynchronize(s_));
  }

  int device_ = 0;
  cudaStream_t s_ = nullptr;
  std::string name_;
  MemStats mem_;
  std::map<const float*, std::unique_ptr<Mirror>> mirrors_;
  std::vector<DLayer> layers_;
  std::vector<std::unique_ptr<DActs>> acts_;
  DActs scratch_;
  Buf tmp_u_, tmp_du_;
  Buf x_, hidden_, dh_, dx_, tmp_, d_act_, d_ff_, d_h_, d_att_, d_qkv_, tok_, pos_, start_, end_, rope_, rows_, targets_, weights_, nll_, hbuf_,
      logits_, dhbuf_, fr_, mr_, y_, stats_, part_, grp_rows_, grp_first_, grp_target_, mean_f_, rstd_f_, x_final_;
  std::vector<Tensor> params_;
  std::vector<int32_t> last_tokens_, last_pos_;
  int64_t last_T_ = 0, C_ = 0, steps_ = 0;
  float *head_ = nullptr, *head_grad_ = nullptr, *g_tok_ = nullptr, *g_pos_ = nullptr, *g_norm_w_ = nullptr, *g_norm_b_ = nullptr;
  bool uploaded_ = false, training_ = false, has_lora_ = false, structure_changed_ = false;
  uint64_t version_ = 0;
};

}  // namespace

std::unique_ptr<DeviceCompute> open_device(ModelImpl& m, const std::string& name, std::string& why) {
  if (name != "cuda") {
    why = "unknown device '" + name + "'";
    return nullptr;
  }
  // The runtime is linked in statically; the driver is a shared library of the machine.
  if (void* h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL)) dlclose(h);
  else {
    const char* err = dlerror();
    why = std::string("no CUDA driver: dlopen(\"libcuda.so.1\") failed (") + (err ? err : "not found") + ")";
    return nullptr;
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(e) +
          (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
               ? " (the CUDA runtime is linked in statically and found no usable driver, libcuda.so.1, or no GPU)"
               : "");
    return nullptr;
  }
  if (count == 0) {
    why = "cudaGetDeviceCount found no CUDA device";
    return nullptr;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major < 8) {
    why = std::string("GPU 0 (") + prop.name + ") has compute capability " + std::to_string(prop.major) + "." + std::to_string(prop.minor) +
          "; the bf16 tensor-core kernels need 8.0 or later";
    return nullptr;
  }
  try {
    return std::make_unique<CudaDevice>(m, 0);
  } catch (const std::exception& ex) {
    why = ex.what();
    return nullptr;
  }
}

void register_device() { set_device_factory(open_device); }

}  // namespace kpig::cuda
