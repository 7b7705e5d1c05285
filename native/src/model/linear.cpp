// Linear layers with optional LoRA adapters: forward and backward through the strided GEMM.
// Legend: M = rows (tokens), in/out = the layer's widths, r = LoRA rank.
#include <algorithm>
#include <cstring>

#include "model_impl.h"

namespace kpig {

namespace {

// Dropout keep-decision of element i: a pure function of (seed, i), so a resumed run drops the
// same elements as an uninterrupted one.
bool keep(uint64_t seed, uint64_t i, float p) {
  return float(splitmix64(seed ^ splitmix64(i)) >> 40) * (1.f / 16777216.f) >= p;
}

}  // namespace

void Linear::apply(Backend& be, int64_t M, const float* x, int64_t ldx, float* y, int64_t ldy, bool accumulate,
                   LinearSaved* saved, uint64_t seed) const {
  const float* bias = b.empty() ? nullptr : b.data();
  if (in_major) be.gemm(M, out, in, x, ldx, 1, w.data(), out, 1, y, ldy, accumulate, bias);
  else be.gemm(M, out, in, x, ldx, 1, w.data(), 1, in, y, ldy, accumulate, bias);
  if (lora.empty()) return;
  if (saved) {
    saved->u.resize(lora.size());
    saved->xd.resize(lora.size());
    saved->mask.resize(lora.size());
  }
  for (size_t a = 0; a < lora.size(); a++) {
    const LoraAdapter& L = lora[a];
    const float* xin = x;
    int64_t ldin = ldx;
    Floats dropped;
    if (saved && L.dropout > 0.f) {
      Floats& xd = saved->xd[a];
      std::vector<uint8_t>& mk = saved->mask[a];
      xd.resize(size_t(M * in));
      mk.resize(size_t(M * in));
      const float inv = 1.f / (1.f - L.dropout);
      const uint64_t s = seed ^ splitmix64(uint64_t(a) + 0x1000);
      for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < in; k++) {
          const bool kp = keep(s, uint64_t(i * in + k), L.dropout);
          mk[size_t(i * in + k)] = kp;
          xd[size_t(i * in + k)] = kp ? x[i * ldx + k] * inv : 0.f;
        }
      xin = xd.data();
      ldin = in;
    }
    Floats local_u;
    Floats& u = saved ? saved->u[a] : local_u;
    u.resize(size_t(M * L.rank));
    // u(M, r) = xin(M, in)·Aᵀ ; y[:, o0:o1] += scale · u·Bᵀ
    be.gemm(M, L.rank, in, xin, ldin, 1, L.A.data(), 1, in, u.data(), L.rank, false);
    Floats us(u);
    for (float& v : us) v *= L.scale;
    be.gemm(M, L.o1 - L.o0, L.rank, us.data(), L.rank, 1, L.B.data(), 1, L.rank, y + L.o0, ldy, true);
  }
}

void Linear::backward(Backend& be, int64_t M, const float* x, int64_t ldx, const float* dy, int64_t lddy, float* dx,
                      int64_t lddx, bool dx_accumulate, const LinearSaved* saved) {
  if (!gw.empty()) {
    if (in_major)  // gw(in, out) += xᵀ·dy
      be.gemm(in, out, M, x, 1, ldx, dy, lddy, 1, gw.data(), out, true);
    else  // gw(out, in) += dyᵀ·x
      be.gemm(out, in, M, dy, 1, lddy, x, ldx, 1, gw.data(), in, true);
    if (!gb.empty()) {  // column ranges in parallel; each column still sums its rows in order
      constexpr int64_t kCols = 256;
      be.parallel_for((out + kCols - 1) / kCols, [&](int64_t t, int) {
        const int64_t j0 = t * kCols, j1 = std::min(out, j0 + kCols);
        float* g = gb.data();
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = j0; j < j1; j++) g[j] += dy[i * lddy + j];
      });
    }
  }
  if (dx) {
    if (in_major) be.gemm(M, in, out, dy, lddy, 1, w.data(), 1, out, dx, lddx, dx_accumulate);
    else be.gemm(M, in, out, dy, lddy, 1, w.data(), in, 1, dx, lddx, dx_accumulate);
  }
  for (size_t a = 0; a < lora.size(); a++) {
    LoraAdapter& L = lora[a];
    const int64_t o = L.o1 - L.o0, r = L.rank;
    const float* dya = dy + L.o0;
    const Floats& u = saved->u[a];
    const bool dropped = L.dropout > 0.f;
    const float* xin = dropped ? saved->xd[a].data() : x;
    const int64_t ldin = dropped ? in : ldx;
    // gB(o, r) += scale · dyaᵀ·u
    Floats us(u);
    for (float& v : us) v *= L.scale;
    be.gemm(o, r, M, dya, 1, lddy, us.data(), r, 1, L.gB.data(), r, true);
    // du(M, r) = scale · dya·B ; gA(r, in) += duᵀ·xin
    Floats du(size_t(M * r));
    be.gemm(M, r, o, dya, lddy, 1, L.B.data(), r, 1, du.data(), r, false);
    for (float& v : du) v *= L.scale;
    be.gemm(r, in, M, du.data(), 1, r, xin, ldin, 1, L.gA.data(), in, true);
    if (!dx) continue;
    // dx += (du·A) ⊙ dropout mask / (1 − p)
    if (!dropped) {
      be.gemm(M, in, r, du.data(), r, 1, L.A.data(), in, 1, dx, lddx, true);
    } else {
      Floats t(size_t(M * in));
      be.gemm(M, in, r, du.data(), r, 1, L.A.data(), in, 1, t.data(), in, false);
      const float inv = 1.f / (1.f - L.dropout);
      const std::vector<uint8_t>& mk = saved->mask[a];
      for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < in; k++)
          if (mk[size_t(i * in + k)]) dx[i * lddx + k] += t[size_t(i * in + k)] * inv;
    }
  }
}

}  // namespace kpig
