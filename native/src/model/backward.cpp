// The backward pass of the packed transformer, from the gradient of the final-normed hidden states
// to every trainable tensor (base weights when fine-tuning fully, LoRA adapters, or both).
// Every reduction runs in a fixed order, so gradients are bitwise reproducible whatever the thread
// scheduling. Legend: T = tokens, C = hidden, H/K = query/kv heads, D = head dim, F = MLP width.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "model_impl.h"

namespace kpig {

void ModelImpl::backward(const int32_t* tokens, int64_t T, const std::vector<SeqRun>& seqs, Acts& acts, Floats& dh) {
  const ModelConfig& c = info.config;
  Backend& BE = *be;
  const int64_t C = c.hidden, H = c.heads, K = c.kv_heads, D = c.head_dim, rep = H / K;
  const int64_t qd = H * D, kd = K * D, ld = qd + 2 * kd;
  const ArchTraits& arch = c.arch;
  const int64_t F = c.ffn, up_w = arch.gated() ? 2 * F : F;
  const bool layernorm = arch.norm == NormKind::LayerNorm;

  // Norm backward: dx (=|+=) through the norm of x; weight gradients summed row by row in order.
  Floats& tmp = ws.tmp;
  tmp.resize(size_t(T * C));
  // The weight gradient is the same for a (1 + w) scale: d(1 + w)/dw = 1.
  // n rows: T, or the kept rows of a trimmed last layer.
  auto norm_backward = [&](int64_t n, const Floats& x, const Floats& nw_, const Floats& mean,
                           const Floats& rstd, const float* dy, float* dx, bool accumulate,
                           Floats& gw, Floats& gb) {
    const NormWeight nw(arch, nw_);
    parallel_rows(n, 32, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float* out = accumulate ? &tmp[size_t(r * C)] : dx + r * C;
        if (layernorm) BE.layernorm_backward_row(&x[size_t(r * C)], nw.data(), mean[size_t(r)], rstd[size_t(r)], dy + r * C, C, out, nullptr, nullptr);
        else BE.rmsnorm_backward_row(&x[size_t(r * C)], nw.data(), rstd[size_t(r)], dy + r * C, C, out, nullptr);
        if (accumulate) for (int64_t i = 0; i < C; i++) dx[r * C + i] += out[i];
      }
    });
    if (gw.empty()) return;
    // Column ranges in parallel; each weight still sums its rows in order.
    constexpr int64_t kCols = 128;
    BE.parallel_for((C + kCols - 1) / kCols, [&](int64_t t, int) {
      const int64_t i0 = t * kCols, i1 = std::min(C, i0 + kCols);
      float* gwp = gw.data();
      float* gbp = layernorm ? gb.data() : nullptr;
      for (int64_t r = 0; r < n; r++) {
        const float* xr = &x[size_t(r * C)];
        const float* dyr = dy + r * C;
        if (layernorm) {
          const float m = mean[size_t(r)], rs = rstd[size_t(r)];
          for (int64_t i = i0; i < i1; i++) {
            gwp[i] += dyr[i] * (xr[i] - m) * rs;
            gbp[i] += dyr[i];
          }
        } else {
          const float rs = rstd[size_t(r)];
          for (int64_t i = i0; i < i1; i++) gwp[i] += dyr[i] * xr[i] * rs;
        }
      }
    });
  };

  // A trimmed last layer (Acts::kept): its tail and the final norm run on the Tk kept rows, whose
  // residual-stream gradient lives in dx_k until the attention's is scattered back to all T rows.
  const std::vector<int64_t>& kept = acts.kept;
  const int64_t Tk = int64_t(kept.size());
  Floats& dx = ws.dx;  // gradient of the residual stream
  dx.resize(size_t(T * C));
  Floats& dx_k = ws.dx_kept;
  const float* dy_final = dh.data();
  if (!kept.empty()) {
    Floats& dh_k = ws.dh_kept;
    dh_k.resize(size_t(Tk * C));
    dx_k.resize(size_t(Tk * C));
    gather_rows(dh.data(), kept, C, dh_k.data());
    dy_final = dh_k.data();
  }
  norm_backward(kept.empty() ? T : Tk, acts.x_final, w.norm_w, acts.mean_f, acts.rstd_f, dy_final, kept.empty() ? dx.data() : dx_k.data(), false,
                w.g_norm_w, w.g_norm_b);

  const Floats rope = arch.learned_positions ? Floats() : rope_table(c, acts.pos);
  int64_t max_len = 0;
  for (const SeqRun& s : seqs) max_len = std::max(max_len, s.len);
  std::vector<Floats>& scratch = ws.scores;
  scratch.resize(size_t(BE.threads()));
  for (auto& sc : scratch) sc.resize(std::max(sc.size(), size_t(BE.attention_scratch_size(max_len))));

  Floats&d_act = ws.d_act, &d_ff = ws.d_ff, &d_h = ws.d_h, &d_att = ws.d_att, &d_qkv = ws.d_qkv;
  d_act.resize(size_t(T * F));
  d_ff.resize(size_t(T * up_w));
  d_h.resize(size_t(T * C));
  d_att.resize(size_t(T * qd));
  d_qkv.resize(size_t(T * ld));
  for (int64_t l = c.layers - 1; l >= 0; l--) {
    Layer& L = w.layers[size_t(l)];
    LayerActs& A = acts.layers[size_t(l)];
    const bool trimmed = !kept.empty() && l == c.layers - 1;
    const int64_t n = trimmed ? Tk : T;  // rows of the tail
    float* dxt = trimmed ? dx_k.data() : dx.data();
    // MLP: x_out = x_mid + down(act(up(norm2(x_mid))))
    L.down.backward(BE, n, A.act.data(), F, dxt, C, d_act.data(), F, false, &A.s_down);
    parallel_rows(n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++)
        mlp_activation_backward(BE, arch.act, &A.ff[size_t(r * up_w)], &d_act[size_t(r * F)], F, &d_ff[size_t(r * up_w)]);
    });
    L.up.backward(BE, n, A.h2.data(), C, d_ff.data(), up_w, d_h.data(), C, false, &A.s_up);
    norm_backward(n, A.x_mid, L.norm2_w, A.mean2, A.rstd2, d_h.data(), dxt, true, L.g_norm2_w, L.g_norm2_b);

    // Attention: x_mid = x_in + o(attn(qkv(norm1(x_in))))
    if (trimmed) {
      // The kept rows' gradients go back to their places; the other rows' are zero (their outputs
      // reach no loss), so their attention queries get no gradient.
      Floats& d_att_k = ws.d_att_kept;
      d_att_k.resize(size_t(Tk * qd));
      L.o.backward(BE, Tk, A.att_kept.data(), qd, dx_k.data(), C, d_att_k.data(), qd, false, &A.s_o);
      std::fill(dx.begin(), dx.end(), 0.f);
      std::fill(d_att.begin(), d_att.end(), 0.f);
      scatter_rows(dx_k.data(), kept, C, dx.data());
      scatter_rows(d_att_k.data(), kept, qd, d_att.data());
    } else {
      L.o.backward(BE, T, A.att.data(), qd, dx.data(), C, d_att.data(), qd, false, &A.s_o);
    }
    std::fill(d_qkv.begin(), d_qkv.end(), 0.f);
    float scale = 1.f / std::sqrt(float(D));
    if (c.scale_attn_by_inverse_layer_idx) scale /= float(l + 1);
    // One task per (sequence, kv head): it owns that head's dk/dv rows, so no two tasks write the same memory.
    BE.parallel_for(int64_t(seqs.size()) * K, [&](int64_t t, int thread) {
      const SeqRun& s = seqs[size_t(t / K)];
      const int64_t g = t % K;
      const size_t base = size_t(s.row0 * ld);
      for (int64_t hh = g * rep; hh < (g + 1) * rep; hh++)
        BE.attention_head_backward(&A.qkv[base + size_t(hh * D)], &A.qkv[base + size_t(qd + g * D)], &A.qkv[base + size_t(qd + kd + g * D)],
                                ld, s.len, D, scale, &A.att[size_t(s.row0 * qd + hh * D)], qd, &d_att[size_t(s.row0 * qd + hh * D)], qd,
                                &A.lse[size_t(s.row0 * H + hh)], H, &d_qkv[base + size_t(hh * D)], &d_qkv[base + size_t(qd + g * D)],
                                &d_qkv[base + size_t(qd + kd + g * D)], scratch[size_t(thread)].data());
    });
    if (!arch.learned_positions)
      parallel_rows(T, 32, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++) {
          BE.rope_row(&d_qkv[size_t(r * ld)], H, D, &rope[size_t(r * D)], true);
          BE.rope_row(&d_qkv[size_t(r * ld + qd)], K, D, &rope[size_t(r * D)], true);
        }
      });
    L.qkv.backward(BE, T, A.h1.data(), C, d_qkv.data(), ld, d_h.data(), C, false, &A.s_qkv);
    norm_backward(T, A.x_in, L.norm1_w, A.mean1, A.rstd1, d_h.data(), dx.data(), true, L.g_norm1_w, L.g_norm1_b);
  }
  if (!w.g_tok_emb.empty()) {
    const float s = embedding_scale(c);
    for (int64_t r = 0; r < T; r++) {
      float* g = &w.g_tok_emb[size_t(tokens[r]) * size_t(C)];
      for (int64_t i = 0; i < C; i++) g[i] += s * dx[size_t(r * C + i)];  // s = 1 unless the family scales embeddings (exact)
    }
  }
  if (!w.g_pos_emb.empty()) {
    for (int64_t r = 0; r < T; r++) {
      float* g = &w.g_pos_emb[size_t(acts.pos[size_t(r)] * C)];
      for (int64_t i = 0; i < C; i++) g[i] += dx[size_t(r * C + i)];
    }
  }
}

}  // namespace kpig
