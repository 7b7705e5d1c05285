// The CUDA row kernels (native/src/cuda/rows.h) against the CPU backend, op by op, on a GPU: the
// same normalised error (NMSE = Σ(gpu − cpu)² / Σ cpu²) as native/tests/test_ops.cpp, each under
// its threshold, then the time of each kernel at model sizes. Needs no Node.
//   kpig_cuda_ops [test|perf]    exit 0: every op within its threshold; 1: some op is not;
//                                3: no CUDA device or runtime here (says which and why)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "../src/backend/backend.h"
#include "parity.h"
#include "../src/cuda/attention.h"
#include "../src/cuda/ce.h"
#include "../src/cuda/gemm.h"
#include "../src/cuda/head.h"
#include "../src/cuda/rows.h"

using Vec = std::vector<float>;

namespace {

std::mt19937 rng(11);
Vec randn(size_t n, float scale = 1.f) { return kpig::parity::randn(rng, n, scale); }

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_)); \
  } while (0)

// A device copy of a host vector, copied back on request.
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    CK(cudaMalloc(&p, n * sizeof(T) + 1));
    if (n) CK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit Dev(size_t count) : n(count) { CK(cudaMalloc(&p, n * sizeof(T) + 1)); }
  ~Dev() { cudaFree(p); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    if (n) CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

using kpig::parity::nmse;

// Sequences of the given lengths packed back to back: T rows, each row's sequence start and end
// (exclusive), as the CUDA attention kernels take them.
struct Packing {
  int64_t T = 0;
  std::vector<int32_t> start, end;
};
Packing packing(const std::vector<int64_t>& lens) {
  Packing p;
  for (int64_t n : lens) {
    for (int64_t i = 0; i < n; i++) p.start.push_back(int32_t(p.T)), p.end.push_back(int32_t(p.T + n));
    p.T += n;
  }
  return p;
}

struct Case {
  std::string name;
  double max_nmse;
  std::function<double(kpig::Backend&)> run;  // the NMSE of the GPU against the CPU backend
};

std::vector<Case> cases() {
  std::vector<Case> all;
  for (bool plus_one : {false, true})
    all.push_back({std::string("rmsnorm R=64 C=4096") + (plus_one ? " (1 + w)" : ""), 1e-10, [plus_one](kpig::Backend& cpu) {
                     const int64_t R = 64, C = 4096;
                     Vec x = randn(static_cast<size_t>(R * C), 2.f), w = randn(static_cast<size_t>(C)), ref(static_cast<size_t>(R * C)), weff = w;
                     if (plus_one) for (auto& v : weff) v += 1.f;
                     for (int64_t r = 0; r < R; r++) cpu.rmsnorm_row(&x[static_cast<size_t>(r * C)], weff.data(), 1e-6f, C, &ref[static_cast<size_t>(r * C)]);
                     Dev<float> dx(x), dw(w), dout(static_cast<size_t>(R * C));
                     CK(kpig::cuda::rmsnorm(dx.p, dw.p, 1e-6f, plus_one, R, C, dout.p, nullptr, nullptr));
                     return nmse(dout.host(), ref);
                   }});
  all.push_back({"layernorm R=64 C=768", 1e-10, [](kpig::Backend& cpu) {
                   const int64_t R = 64, C = 768;
                   Vec x = randn(static_cast<size_t>(R * C), 2.f), w = randn(static_cast<size_t>(C)), b = randn(static_cast<size_t>(C)), ref(static_cast<size_t>(R * C));
                   for (int64_t r = 0; r < R; r++) cpu.layernorm_row(&x[static_cast<size_t>(r * C)], w.data(), b.data(), 1e-5f, C, &ref[static_cast<size_t>(r * C)]);
                   Dev<float> dx(x), dw(w), db(b), dout(static_cast<size_t>(R * C));
                   CK(kpig::cuda::layernorm(dx.p, dw.p, db.p, 1e-5f, R, C, dout.p, nullptr, nullptr, nullptr));
                   return nmse(dout.host(), ref);
                 }});
  for (int a = 0; a < 3; a++)
    all.push_back({std::string("mlp_activation ") + (a == 0 ? "gelu_tanh" : a == 1 ? "swiglu" : "geglu_tanh") + " R=32 F=2816", 1e-10,
                   [a](kpig::Backend& cpu) {
                     const int64_t R = 32, F = 2816, W = a == 0 ? F : 2 * F;
                     Vec ff = randn(static_cast<size_t>(R * W), 2.f), ref(static_cast<size_t>(R * F));
                     for (int64_t r = 0; r < R; r++) {
                       const float* row = &ff[static_cast<size_t>(r * W)];
                       float* out = &ref[static_cast<size_t>(r * F)];
                       if (a == 1) cpu.swiglu_row(row, F, out);
                       else {
                         std::copy(row, row + F, out);
                         cpu.gelu_tanh_inplace(out, F);
                         if (a == 2) for (int64_t i = 0; i < F; i++) out[i] *= row[F + i];
                       }
                     }
                     Dev<float> dff(ff), dact(static_cast<size_t>(R * F));
                     CK(kpig::cuda::mlp_activation(kpig::cuda::Act(a), dff.p, R, F, dact.p, nullptr));
                     return nmse(dact.host(), ref);
                   }});
  for (bool inverse : {false, true})
    all.push_back({std::string("rope R=48 H=8 D=128") + (inverse ? " inverse" : ""), 1e-11, [inverse](kpig::Backend& cpu) {
                     const int64_t R = 48, H = 8, D = 128;
                     Vec x = randn(static_cast<size_t>(R * H * D)), cs(static_cast<size_t>(R * D)), ref = x;
                     for (int64_t r = 0; r < R; r++)
                       for (int64_t i = 0; i < D / 2; i++) {
                         const double ang = double(r * 37) * std::pow(1e4, -2.0 * double(i) / double(D));
                         cs[static_cast<size_t>(r * D + i)] = float(std::cos(ang)), cs[static_cast<size_t>(r * D + D / 2 + i)] = float(std::sin(ang));
                       }
                     for (int64_t r = 0; r < R; r++) cpu.rope_row(&ref[static_cast<size_t>(r * H * D)], H, D, &cs[static_cast<size_t>(r * D)], inverse);
                     Dev<float> dx(x), dcs(cs);
                     CK(kpig::cuda::rope(dx.p, R, H * D, H, D, dcs.p, inverse, nullptr));
                     return nmse(dx.host(), ref);
                   }});
  all.push_back({"adamw n=1000003", 1e-12, [](kpig::Backend& cpu) {
                   const int64_t n = 1000003;
                   Vec p = randn(static_cast<size_t>(n)), g = randn(static_cast<size_t>(n)), m = randn(static_cast<size_t>(n), 0.1f), v = randn(static_cast<size_t>(n), 0.1f);
                   for (auto& x : v) x = std::abs(x);
                   Dev<float> dp(p), dg(g), dm(m), dv(v);
                   const float args[] = {0.7f, 0.999f, 0.9f, 0.999f, 1e-3f, 0.05f, 1e-8f};
                   cpu.adamw_update(p.data(), g.data(), m.data(), v.data(), n, args[0], args[1], args[2], args[3], args[4], args[5], args[6]);
                   CK(kpig::cuda::adamw(dp.p, dg.p, dm.p, dv.p, n, args[0], args[1], args[2], args[3], args[4], args[5], args[6], nullptr));
                   return std::max({nmse(dp.host(), p), nmse(dm.host(), m), nmse(dv.host(), v)});
                 }});
  all.push_back({"ig_token_stats R=16 V=50257", 1e-9, [](kpig::Backend& cpu) {
                   const int64_t R = 16, V = 50257;
                   Vec lf = randn(static_cast<size_t>(R * V), 3.f), lm = randn(static_cast<size_t>(R * V), 3.f);
                   std::vector<int32_t> y(static_cast<size_t>(R));
                   for (int64_t r = 0; r < R; r++) y[static_cast<size_t>(r)] = int32_t((r * 7919) % V);
                   std::vector<double> ref;
                   for (int64_t r = 0; r < R; r++) {
                     const kpig::IgTokenStats s = cpu.ig_token_stats(&lf[static_cast<size_t>(r * V)], &lm[static_cast<size_t>(r * V)], V, y[static_cast<size_t>(r)]);
                     ref.insert(ref.end(), {s.nll_f, s.nll_m, s.kl, s.js, s.h_f, s.h_m});
                   }
                   Dev<float> dlf(lf), dlm(lm);
                   Dev<int32_t> dy(y);
                   Dev<double> dout(static_cast<size_t>(R * 6));
                   CK(kpig::cuda::ig_token_stats(dlf.p, dlm.p, V, dy.p, R, V, dout.p, nullptr));
                   return nmse(dout.host(), ref);
                 }});
  // The tensor-core GEMM against the CPU backend's bf16 mode (operands rounded to bfloat16 by both,
  // float32 accumulation): both layouts of B, ragged edges, bias and accumulation.
  for (bool bt : {true, false})
    all.push_back({std::string("gemm_bf16 M=77 N=130 K=300 ") + (bt ? "x·Wᵀ" : "A·B") + " +bias +=C", 1e-10, [bt](kpig::Backend& cpu) {
                     const int64_t M = 77, N = 130, K = 300;
                     Vec A = randn(static_cast<size_t>(M * K)), B = randn(static_cast<size_t>(N * K)), bias = randn(static_cast<size_t>(N)), C0 = randn(static_cast<size_t>(M * N)), ref = C0;
                     cpu.set_matmul_bf16(true);
                     if (bt) cpu.gemm(M, N, K, A.data(), K, 1, B.data(), 1, K, ref.data(), N, true, bias.data());
                     else cpu.gemm(M, N, K, A.data(), K, 1, B.data(), N, 1, ref.data(), N, true, bias.data());
                     cpu.set_matmul_bf16(false);
                     Dev<float> dA(A), dB(B), dbias(bias), dC(C0);
                     CK(kpig::cuda::gemm_bf16(M, N, K, dA.p, K, dB.p, bt ? K : N, bt, dC.p, N, true, dbias.p, nullptr));
                     return nmse(dC.host(), ref);
                   }});
  // Causal attention over three packed sequences (lengths 37, 1, 90), grouped-query heads (H = 8,
  // K = 2), D = 64: every sequence and head against the CPU backend's attention_head_forward.
  all.push_back({"attention_forward packed 37+1+90 H=8 K=2 D=64", 1e-10, [](kpig::Backend& cpu) {
                   const std::vector<int64_t> lens = {37, 1, 90};
                   const int64_t H = 8, Kh = 2, D = 64, ld = (H + 2 * Kh) * D, qd = H * D;
                   const Packing pk = packing(lens);
                   const int64_t T = pk.T;
                   const float scale = 0.125f;
                   Vec qkv = randn(static_cast<size_t>(T * ld)), ref(static_cast<size_t>(T * qd)), ref_lse(static_cast<size_t>(T * H));
                   int64_t row0 = 0;
                   for (int64_t n : lens) {
                     Vec scratch(static_cast<size_t>(cpu.attention_scratch_size(n)));
                     for (int64_t h = 0; h < H; h++) {
                       const int64_t g = h / (H / Kh);
                       cpu.attention_head_forward(&qkv[static_cast<size_t>(row0 * ld + h * D)], ld, &qkv[static_cast<size_t>(row0 * ld + qd + g * D)],
                                                  &qkv[static_cast<size_t>(row0 * ld + qd + Kh * D + g * D)], ld, n, 0, D, scale, &ref[static_cast<size_t>(row0 * qd + h * D)], qd,
                                                  &ref_lse[static_cast<size_t>(row0 * H + h)], H, scratch.data());
                     }
                     row0 += n;
                   }
                   Dev<float> dqkv(qkv), dout(static_cast<size_t>(T * qd)), dlse(static_cast<size_t>(T * H));
                   Dev<int32_t> dstart(pk.start);
                   CK(kpig::cuda::attention_forward(dqkv.p, ld, dstart.p, T, H, Kh, D, scale, dout.p, qd, dlse.p, nullptr));
                   return std::max(nmse(dout.host(), ref), nmse(dlse.host(), ref_lse));
                 }});
  // The streamed IG head: 300 pairs in chunks of 128 against the CPU backend's bf16 head (the same
  // rounding of the operands) and its IG statistics.
  all.push_back({"ig_head P=300 C=256 V=5003 chunk=128", 1e-8, [](kpig::Backend& cpu) {
                   const int64_t P = 300, C = 256, V = 5003, rows = 700;
                   Vec hidden = randn(static_cast<size_t>(rows * C)), W = randn(static_cast<size_t>(V * C), 0.2f);
                   std::vector<int64_t> fr(static_cast<size_t>(P)), mr(static_cast<size_t>(P));
                   std::vector<int32_t> y(static_cast<size_t>(P));
                   for (int64_t p = 0; p < P; p++) fr[static_cast<size_t>(p)] = (p * 7) % rows, mr[static_cast<size_t>(p)] = (p * 13 + 5) % rows, y[static_cast<size_t>(p)] = int32_t((p * 31) % V);
                   std::vector<double> ref;
                   cpu.set_matmul_bf16(true);
                   Vec lf(static_cast<size_t>(V)), lm(static_cast<size_t>(V));
                   for (int64_t p = 0; p < P; p++) {
                     cpu.gemm(1, V, C, &hidden[static_cast<size_t>(fr[static_cast<size_t>(p)] * C)], C, 1, W.data(), 1, C, lf.data(), V, false);
                     cpu.gemm(1, V, C, &hidden[static_cast<size_t>(mr[static_cast<size_t>(p)] * C)], C, 1, W.data(), 1, C, lm.data(), V, false);
                     const kpig::IgTokenStats s = cpu.ig_token_stats(lf.data(), lm.data(), V, y[static_cast<size_t>(p)]);
                     ref.insert(ref.end(), {s.nll_f, s.nll_m, s.kl, s.js, s.h_f, s.h_m});
                   }
                   cpu.set_matmul_bf16(false);
                   const int64_t chunk = 128;
                   Dev<float> dh(hidden), dW(W), drows(static_cast<size_t>(2 * chunk * C)), dlog(static_cast<size_t>(2 * chunk * V));
                   Dev<int64_t> dfr(fr), dmr(mr);
                   Dev<int32_t> dy(y);
                   Dev<double> dout(static_cast<size_t>(P * 6));
                   CK(kpig::cuda::ig_head(dh.p, dfr.p, dmr.p, dy.p, P, C, dW.p, V, chunk, drows.p, dlog.p, dout.p, nullptr));
                   return nmse(dout.host(), ref);
                 }});
  // Attention backward over the same kind of packing (given the CPU's out and lse): dq, dk, dv against
  // the CPU backend's attention_head_backward, grouped-query heads summed into their kv head.
  all.push_back({"attention_backward packed 29+1+50 H=4 K=2 D=32", 1e-9, [](kpig::Backend& cpu) {
                   const std::vector<int64_t> lens = {29, 1, 50};
                   const int64_t H = 4, Kh = 2, D = 32, ld = (H + 2 * Kh) * D, qd = H * D;
                   const Packing pk = packing(lens);
                   const int64_t T = pk.T;
                   const float scale = 0.17f;
                   Vec qkv = randn(static_cast<size_t>(T * ld)), dout = randn(static_cast<size_t>(T * qd)), o(static_cast<size_t>(T * qd)),
                       l(static_cast<size_t>(T * H)), ref(static_cast<size_t>(T * ld), 0.f);
                   int64_t row0 = 0;
                   for (int64_t n : lens) {
                     Vec scratch(static_cast<size_t>(cpu.attention_scratch_size(n)));
                     for (int64_t h = 0; h < H; h++) {
                       const int64_t g = h / (H / Kh);
                       const size_t q = static_cast<size_t>(row0 * ld + h * D), k = static_cast<size_t>(row0 * ld + qd + g * D),
                                    v = static_cast<size_t>(row0 * ld + qd + Kh * D + g * D), oo = static_cast<size_t>(row0 * qd + h * D);
                       cpu.attention_head_forward(&qkv[q], ld, &qkv[k], &qkv[v], ld, n, 0, D, scale, &o[oo], qd, &l[static_cast<size_t>(row0 * H + h)], H,
                                                  scratch.data());
                       cpu.attention_head_backward(&qkv[q], &qkv[k], &qkv[v], ld, n, D, scale, &o[oo], qd, &dout[oo], qd,
                                                   &l[static_cast<size_t>(row0 * H + h)], H, &ref[q], &ref[k], &ref[v], scratch.data());
                     }
                     row0 += n;
                   }
                   Dev<float> dqkv(qkv), dO(o), dL(l), ddout(dout), dgrad(Vec(static_cast<size_t>(T * ld), 0.f));
                   Dev<int32_t> dstart(pk.start), dend(pk.end);
                   CK(kpig::cuda::attention_backward(dqkv.p, ld, dstart.p, dend.p, T, H, Kh, D, scale, dO.p, qd, dL.p, ddout.p, qd, dgrad.p, nullptr));
                   return nmse(dgrad.host(), ref);
                 }});
  // Norm backward: dx per row, the weight (and bias) gradients summed over the rows.
  for (bool plus_one : {false, true})
    all.push_back({std::string("rmsnorm_backward R=33 C=1000") + (plus_one ? " (1 + w)" : ""), 1e-10, [plus_one](kpig::Backend& cpu) {
                     const int64_t R = 33, C = 1000;
                     Vec x = randn(static_cast<size_t>(R * C)), w = randn(static_cast<size_t>(C)), dy = randn(static_cast<size_t>(R * C)), weff = w, tmp(static_cast<size_t>(C)), rstd(static_cast<size_t>(R)),
                         dx(static_cast<size_t>(R * C)), dw(static_cast<size_t>(C), 0.f);
                     if (plus_one) for (auto& v : weff) v += 1.f;
                     for (int64_t r = 0; r < R; r++) {
                       rstd[static_cast<size_t>(r)] = cpu.rmsnorm_row(&x[static_cast<size_t>(r * C)], weff.data(), 1e-6f, C, tmp.data());
                       cpu.rmsnorm_backward_row(&x[static_cast<size_t>(r * C)], weff.data(), rstd[static_cast<size_t>(r)], &dy[static_cast<size_t>(r * C)], C, &dx[static_cast<size_t>(r * C)], dw.data());
                     }
                     Dev<float> dx_(x), dw_(w), drs(rstd), ddy(dy), ddx(static_cast<size_t>(R * C)), ddw(Vec(static_cast<size_t>(C), 0.f));
                     CK(kpig::cuda::rmsnorm_backward(dx_.p, dw_.p, plus_one, drs.p, ddy.p, R, C, ddx.p, ddw.p, nullptr));
                     return std::max(nmse(ddx.host(), dx), nmse(ddw.host(), dw));
                   }});
  all.push_back({"layernorm_backward R=33 C=768", 1e-10, [](kpig::Backend& cpu) {
                   const int64_t R = 33, C = 768;
                   Vec x = randn(static_cast<size_t>(R * C)), w = randn(static_cast<size_t>(C)), b = randn(static_cast<size_t>(C)), dy = randn(static_cast<size_t>(R * C)), tmp(static_cast<size_t>(C)), mean(static_cast<size_t>(R)),
                       rstd(static_cast<size_t>(R)), dx(static_cast<size_t>(R * C)), dw(static_cast<size_t>(C), 0.f), db(static_cast<size_t>(C), 0.f);
                   for (int64_t r = 0; r < R; r++) {
                     rstd[static_cast<size_t>(r)] = cpu.layernorm_row(&x[static_cast<size_t>(r * C)], w.data(), b.data(), 1e-5f, C, tmp.data(), &mean[static_cast<size_t>(r)]);
                     cpu.layernorm_backward_row(&x[static_cast<size_t>(r * C)], w.data(), mean[static_cast<size_t>(r)], rstd[static_cast<size_t>(r)], &dy[static_cast<size_t>(r * C)], C, &dx[static_cast<size_t>(r * C)],
                                                dw.data(), db.data());
                   }
                   Dev<float> dx_(x), dw_(w), dmu(mean), drs(rstd), ddy(dy), ddx(static_cast<size_t>(R * C)), ddw(Vec(static_cast<size_t>(C), 0.f)), ddb(Vec(static_cast<size_t>(C), 0.f));
                   CK(kpig::cuda::layernorm_backward(dx_.p, dw_.p, dmu.p, drs.p, ddy.p, R, C, ddx.p, ddw.p, ddb.p, nullptr));
                   return std::max({nmse(ddx.host(), dx), nmse(ddw.host(), dw), nmse(ddb.host(), db)});
                 }});
  for (int a = 0; a < 3; a++)
    all.push_back({std::string("mlp_activation_backward ") + (a == 0 ? "gelu_tanh" : a == 1 ? "swiglu" : "geglu_tanh") + " R=16 F=1400", 1e-9,
                   [a](kpig::Backend& cpu) {
                     const int64_t R = 16, F = 1400, W = a == 0 ? F : 2 * F;
                     Vec ff = randn(static_cast<size_t>(R * W), 2.f), da = randn(static_cast<size_t>(R * F)), ref(static_cast<size_t>(R * W));
                     for (int64_t r = 0; r < R; r++) {
                       const float* row = &ff[static_cast<size_t>(r * W)];
                       const float* d = &da[static_cast<size_t>(r * F)];
                       float* out = &ref[static_cast<size_t>(r * W)];
                       if (a == 0) cpu.gelu_tanh_backward(row, d, F, out);
                       else if (a == 1) cpu.swiglu_backward_row(row, d, F, out);
                       else {  // d_gate = d·up·gelu'(gate), d_up = d·gelu(gate)
                         Vec t(static_cast<size_t>(F));
                         for (int64_t i = 0; i < F; i++) t[static_cast<size_t>(i)] = d[i] * row[F + i];
                         cpu.gelu_tanh_backward(row, t.data(), F, out);
                         std::copy(row, row + F, out + F);
                         cpu.gelu_tanh_inplace(out + F, F);
                         for (int64_t i = 0; i < F; i++) out[F + i] *= d[i];
                       }
                     }
                     Dev<float> dff(ff), dda(da), dout(static_cast<size_t>(R * W));
                     CK(kpig::cuda::mlp_activation_backward(kpig::cuda::Act(a), dff.p, dda.p, R, F, dout.p, nullptr));
                     return nmse(dout.host(), ref);
                   }});
  // The fused weighted CE, forward and backward, over 3 chunks, against the CPU backend's bf16 mode.
  // Both round the gradient of the logits to bfloat16 for the two backward GEMMs, and a last-bit
  // difference in exp can round one of them the other way: the bound is bf16's, not float32's.
  all.push_back({"fused_linear_ce n=150 of 200 rows C=96 V=3001 chunk=64", 1e-5, [](kpig::Backend& cpu) {
                   const int64_t R = 200, C = 96, V = 3001, chunk = 64;
                   Vec hidden = randn(static_cast<size_t>(R * C)), W = randn(static_cast<size_t>(V * C), 0.3f), dh_ref(static_cast<size_t>(R * C), 0.f), gW_ref(static_cast<size_t>(V * C), 0.f);
                   std::vector<kpig::CeRow> rows;
                   std::vector<int64_t> ri;
                   std::vector<int32_t> tg;
                   Vec wt;
                   for (int64_t r = 0; r < R; r++)
                     if (r % 4 != 3) {
                       const float w = (r % 5 == 0 ? -0.5f : 1.f) * float(r % 7 + 1) / 7.f;
                       rows.push_back({r, int32_t((r * 37) % V), w});
                       ri.push_back(r), tg.push_back(int32_t((r * 37) % V)), wt.push_back(w);
                     }
                   const int64_t n = int64_t(rows.size());
                   std::vector<double> nll_ref(static_cast<size_t>(n));
                   cpu.set_matmul_bf16(true);
                   cpu.fused_linear_ce(hidden.data(), C, W.data(), V, rows, dh_ref.data(), gW_ref.data(), nll_ref.data(), chunk);
                   cpu.set_matmul_bf16(false);
                   Dev<float> dhid(hidden), dW(W), dhb(static_cast<size_t>(chunk * C)), dlog(static_cast<size_t>(chunk * V)), ddhb(static_cast<size_t>(chunk * C)), ddh(Vec(static_cast<size_t>(R * C), 0.f)),
                       dgW(Vec(static_cast<size_t>(V * C), 0.f)), dwt(wt);
                   Dev<int64_t> dri(ri);
                   Dev<int32_t> dtg(tg);
                   Dev<double> dnll(static_cast<size_t>(n));
                   CK(kpig::cuda::fused_linear_ce(dhid.p, C, dW.p, V, dri.p, dtg.p, dwt.p, n, chunk, dhb.p, dlog.p, ddhb.p, ddh.p, dgW.p, dnll.p, nullptr));
                   return std::max({nmse(dnll.host(), nll_ref), nmse(ddh.host(), dh_ref), nmse(dgW.host(), gW_ref)});
                 }});
  return all;
}

int run_perf() {
  const int64_t R = 2048, C = 4096, F = 11008;
  Dev<float> x(randn(static_cast<size_t>(R * C))), w(randn(static_cast<size_t>(C))), out(static_cast<size_t>(R * C));
  Dev<float> ff(randn(static_cast<size_t>(R * 2 * F))), act(static_cast<size_t>(R * F));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  // The mean time of 20 calls, and `amount` (bytes moved, or FLOPs) per second in `unit`.
  auto time = [&](const char* name, double amount, const char* unit, const std::function<void()>& f) {
    f();
    CK(cudaEventRecord(a));
    for (int i = 0; i < 20; i++) f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    std::printf("  %-28s %9.1f µs  %8.1f %s\n", name, ms * 1e3 / 20, amount / (ms / 20 * 1e-3) / 1e9, unit);
  };
  {
    const int64_t M = 4096, N = 4096, K = 4096;
    Dev<float> A(randn(static_cast<size_t>(M * K))), B(randn(static_cast<size_t>(N * K))), Cm(static_cast<size_t>(M * N));
    time("gemm_bf16 4096³", 2.0 * M * N * K, "GFLOP/s", [&] { CK(kpig::cuda::gemm_bf16(M, N, K, A.p, K, B.p, K, true, Cm.p, N, false, nullptr, nullptr)); });
  }
  {
    const int64_t T = 1024, H = 16, D = 128, ld = 3 * H * D;
    Dev<float> qkv(randn(static_cast<size_t>(T * ld))), o(static_cast<size_t>(T * H * D)), l(static_cast<size_t>(T * H));
    Dev<int32_t> st(std::vector<int32_t>(static_cast<size_t>(T), 0));
    time("attention T=1024 H=16 D=128", 2.0 * T * T * D * H, "GFLOP/s",
         [&] { CK(kpig::cuda::attention_forward(qkv.p, ld, st.p, T, H, H, D, 0.088f, o.p, H * D, l.p, nullptr)); });
  }
  std::printf("CUDA row kernels, R = %lld rows:\n", (long long)R);
  time("rmsnorm C=4096", 2.0 * R * C * 4, "GB/s", [&] { CK(kpig::cuda::rmsnorm(x.p, w.p, 1e-6f, false, R, C, out.p, nullptr, nullptr)); });
  time("swiglu F=11008", 3.0 * R * F * 4, "GB/s", [&] { CK(kpig::cuda::mlp_activation(kpig::cuda::Act::SwiGLU, ff.p, R, F, act.p, nullptr)); });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "test";
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("no CUDA device here (cudaGetDeviceCount: %s, %d devices): nothing run\n", e == cudaSuccess ? "ok" : cudaGetErrorString(e), devices);
    return 3;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  try {
    if (mode == "perf") return run_perf();
    const std::unique_ptr<kpig::Backend> cpu = kpig::make_cpu_backend(0);
    int pass = 0, fail = 0;
    for (const Case& c : cases()) {
      const double err = c.run(*cpu);
      const bool ok = err <= c.max_nmse;
      ok ? pass++ : fail++;
      std::printf("%s  %-40s nmse vs CPU %.2e (max %.0e)\n", ok ? "ok  " : "FAIL", c.name.c_str(), err, c.max_nmse);
    }
    std::printf("CUDA row kernels vs the CPU backend: %d passed, %d failed\n", pass, fail);
    return fail == 0 ? 0 : 1;
  } catch (const std::exception& ex) {
    std::printf("FAIL: %s\n", ex.what());
    return 1;
  }
}
