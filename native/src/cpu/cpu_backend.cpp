// The CPU backend: the engine's reference implementation of every op (native/src/backend/backend.h),
// over the thread pool, the GEMM (AVX-512 / AVX2 / scalar, AMX and AVX512_BF16 for bf16) and the
// row kernels compiled per ISA.
#include "../backend/backend.h"

#include "../core/threadpool.h"
#include "attention.h"
#include "fused_ce.h"
#include "gemm.h"
#include "gemm_amx.h"
#include "head_stream.h"
#include "ops.h"

namespace kpig {

namespace {

struct CpuPacked final : PackedWeight {
  PackedB b;
  bool empty() const override { return b.empty(); }
};

const PackedB* unwrap(const PackedWeight* p) { return p ? &static_cast<const CpuPacked*>(p)->b : nullptr; }

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : pool_(threads > 0 ? threads : default_thread_count()) {}
  const char* name() const override { return "cpu"; }

  int threads() const override { return pool_.size(); }
  void parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn) override { pool_.parallel_for(n, fn); }
  void set_matmul_bf16(bool on) override { pool_.matmul_bf16 = on; }
  bool matmul_bf16() const override { return pool_.matmul_bf16; }
  const char* matmul_isa() const override { return gemm_isa(); }
  const char* bf16_matmul_isa() const override { return gemm_bf16_isa(); }

  void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t b_rs, int64_t b_cs,
            float* C, int64_t ldc, bool accumulate, const float* bias) override {
    kpig::gemm(&pool_, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, accumulate, bias);
  }
  std::unique_ptr<PackedWeight> new_packed() override { return std::make_unique<CpuPacked>(); }
  void pack(PackedWeight& out, int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs) override {
    static_cast<CpuPacked&>(out).b.pack(&pool_, K, N, B, b_rs, b_cs);
  }
  void gemm_packed(int64_t M, const float* A, int64_t a_rs, int64_t a_cs, const PackedWeight& B, float* C, int64_t ldc,
                   bool accumulate) override {
    kpig::gemm_packed(&pool_, M, A, a_rs, a_cs, static_cast<const CpuPacked&>(B).b, C, ldc, accumulate);
  }

  float layernorm_row(const float* x, const float* w, const float* b, float eps, int64_t C, float* out, float* mean) override {
    return kpig::layernorm_row(x, w, b, eps, C, out, mean);
  }
  float rmsnorm_row(const float* x, const float* w, float eps, int64_t C, float* out) override { return kpig::rmsnorm_row(x, w, eps, C, out); }
  void layernorm_backward_row(const float* x, const float* w, float mean, float rstd, const float* dy, int64_t C, float* dx, float* dw,
                              float* db) override {
    kpig::layernorm_backward_row(x, w, mean, rstd, dy, C, dx, dw, db);
  }
  void rmsnorm_backward_row(const float* x, const float* w, float r, const float* dy, int64_t C, float* dx, float* dw) override {
    kpig::rmsnorm_backward_row(x, w, r, dy, C, dx, dw);
  }
  void gelu_tanh_inplace(float* x, int64_t n) override { kpig::gelu_new_inplace(x, n); }
  void gelu_tanh_backward(const float* x, const float* dy, int64_t n, float* dx) override { kpig::gelu_new_backward(x, dy, n, dx); }
  void swiglu_row(const float* gate_up, int64_t F, float* out) override { kpig::swiglu_row(gate_up, F, out); }
  void swiglu_backward_row(const float* gate_up, const float* dy, int64_t F, float* d_gate_up) override {
    kpig::swiglu_backward_row(gate_up, dy, F, d_gate_up);
  }
  void rope_row(float* x, int64_t n_heads, int64_t D, const float* cs, bool inverse) override { kpig::rope_row(x, n_heads, D, cs, inverse); }
  void add_inplace(float* y, const float* x, int64_t n) override { kpig::add_inplace(y, x, n); }
  float logsumexp_row(const float* x, int64_t V) override { return kpig::logsumexp_row(x, V); }
  int64_t argmax_row(const float* x, int64_t V) override { return kpig::argmax_row(x, V); }
  IgTokenStats ig_token_stats(const float* lf, const float* lm, int64_t V, int32_t y) override { return kpig::ig_token_stats(lf, lm, V, y); }
  void adamw_update(float* p, float* g, float* m, float* v, int64_t n, float clip, float decay, float b1, float b2, float step_size,
                    float bc2_sqrt, float eps) override {
    kpig::adamw_update(p, g, m, v, n, clip, decay, b1, b2, step_size, bc2_sqrt, eps);
  }

  int64_t attention_scratch_size(int64_t n) override { return kpig::attention_scratch_size(n); }
  void attention_head_forward(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldk, int64_t n, int64_t q_offset,
                              int64_t D, float scale, float* out, int64_t ldo, float* lse, int64_t lse_stride, float* scratch) override {
    kpig::attention_head_forward(q, ldq, k, v, ldk, n, q_offset, D, scale, out, ldo, lse, lse_stride, scratch);
  }
  void attention_head_backward(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                               const float* o, int64_t ldo, const float* d_out, int64_t lddo, const float* lse, int64_t lse_stride,
                               float* dq, float* dk, float* dv, float* scratch) override {
    kpig::attention_head_backward(q, k, v, ld, n, D, scale, o, ldo, d_out, lddo, lse, lse_stride, dq, dk, dv, scratch);
  }
  float attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale, float* scores,
                   float* out) override {
    return kpig::attend_row(q, k, v, ld, n, D, scale, scores, out);
  }

  void stream_head(int64_t n, int64_t chunk, int64_t C, int64_t V, const float* W, const PackedWeight* packed, Floats& hidden,
                   Floats& logits, const std::function<const float*(int64_t)>& row,
                   const std::function<void(int64_t, int64_t, float*, float*)>& reduce) override {
    kpig::stream_head(&pool_, n, chunk, C, V, W, unwrap(packed), hidden, logits, row, reduce);
  }
  void fused_linear_ce(const float* hidden, int64_t C, const float* W, int64_t V, const std::vector<CeRow>& rows, float* dh, float* gW,
                       double* nll, int64_t chunk) override {
    kpig::fused_linear_ce(&pool_, hidden, C, W, V, rows, dh, gW, nll, chunk);
  }

 private:
  ThreadPool pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace kpig
