// The packed transformer forward pass of every architecture (its traits say which norm, activation,
// positions and embedding scale), shared by scoring, generation and training. Sequences are packed back to back with no padding; each is causal with its own
// positions. With a KV cache, new keys/values are appended and attention reads the cache. With
// Acts, every activation the backward pass needs is kept (one buffer set per layer).
#include <cmath>
#include <cstring>

#include "model_impl.h"

namespace kpig {

void ModelImpl::parallel_rows(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t tasks = (n + grain - 1) / grain;
  be->parallel_for(tasks, [&](int64_t t, int) { fn(t * grain, std::min(n, (t + 1) * grain)); });
}

void ModelImpl::gather_rows(const float* src, const std::vector<int64_t>& rows, int64_t width, float* dst) {
  parallel_rows(int64_t(rows.size()), 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) std::memcpy(dst + r * width, src + rows[size_t(r)] * width, sizeof(float) * size_t(width));
  });
}

void ModelImpl::scatter_rows(const float* src, const std::vector<int64_t>& rows, int64_t width, float* dst) {
  parallel_rows(int64_t(rows.size()), 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) std::memcpy(dst + rows[size_t(r)] * width, src + r * width, sizeof(float) * size_t(width));
  });
}

const PackedWeight* ModelImpl::pack_head() {
  const ModelConfig& c = info.config;
  if (!ws.head) ws.head = be->new_packed();
  be->pack(*ws.head, c.hidden, c.vocab, w.head_ptr(), 1, c.hidden);
  return ws.head.get();
}

void ModelImpl::head_logits(int64_t M, const float* hidden, float* logits, const PackedWeight* packed) {
  const ModelConfig& c = info.config;
  if (packed && !packed->empty()) return be->gemm_packed(M, hidden, c.hidden, 1, *packed, logits, c.vocab, false);
  be->gemm(M, c.vocab, c.hidden, hidden, c.hidden, 1, w.head_ptr(), 1, c.hidden, logits, c.vocab, false);
}

// cos/sin tables (T, D) of every row's position, times the attention scale; angles in double, since pos·θ^(−2i/D) loses
// precision in float32 at long positions.
Floats rope_table(const ModelConfig& c, const std::vector<int64_t>& pos) {
  const int64_t D = c.head_dim, half = D / 2, T = int64_t(pos.size());
  Floats rope(size_t(T * D));
  for (int64_t r = 0; r < T; r++)
    for (int64_t i = 0; i < half; i++) {
      double a = double(pos[size_t(r)]) * c.inv_freq[size_t(i)];
      rope[size_t(r * D + i)] = float(std::cos(a) * c.rope_attention_scale);
      rope[size_t(r * D + half + i)] = float(std::sin(a) * c.rope_attention_scale);
    }
  return rope;
}

float embedding_scale(const ModelConfig& c) { return c.arch.embed_scale ? float(std::sqrt(double(c.hidden))) : 1.f; }

NormWeight::NormWeight(const ArchTraits& a, const Floats& w) : w_(w.data()) {
  if (!a.norm_plus_one) return;
  plus_.resize(w.size());
  for (size_t i = 0; i < w.size(); i++) plus_[i] = 1.f + w[i];
}

void mlp_activation(Backend& BE, Activation a, const float* ff, int64_t F, float* act) {
  switch (a) {
    case Activation::GeluTanh:
      if (act != ff) std::memcpy(act, ff, sizeof(float) * size_t(F));
      BE.gelu_tanh_inplace(act, F);
      return;
    case Activation::SiluGLU:
      BE.swiglu_row(ff, F, act);
      return;
    case Activation::GeluTanhGLU:
      std::memcpy(act, ff, sizeof(float) * size_t(F));
      BE.gelu_tanh_inplace(act, F);
      for (int64_t i = 0; i < F; i++) act[i] *= ff[F + i];
      return;
  }
}

void mlp_activation_backward(Backend& BE, Activation a, const float* ff, const float* d_act, int64_t F, float* d_ff) {
  switch (a) {
    case Activation::GeluTanh:
      BE.gelu_tanh_backward(ff, d_act, F, d_ff);
      return;
    case Activation::SiluGLU:
      BE.swiglu_backward_row(ff, d_act, F, d_ff);
      return;
    case Activation::GeluTanhGLU: {
      // act = gelu(g)·u: d_g = d_act·u·gelu'(g), d_u = d_act·gelu(g). The up half of d_ff holds
      // d_act·u until the gate's gradient has read it.
      float* d_g = d_ff;
      float* d_u = d_ff + F;
      for (int64_t i = 0; i < F; i++) d_u[i] = d_act[i] * ff[F + i];
      BE.gelu_tanh_backward(ff, d_u, F, d_g);
      std::memcpy(d_u, ff, sizeof(float) * size_t(F));
      BE.gelu_tanh_inplace(d_u, F);
      for (int64_t i = 0; i < F; i++) d_u[i] *= d_act[i];
      return;
    }
  }
}

void ModelImpl::forward_hidden(const int32_t* tokens, int64_t T, const std::vector<SeqRun>& seqs, float* out, Acts* acts,
                               uint64_t seed, const std::vector<std::pair<int64_t, int64_t>>* keep) {
  const ModelConfig& c = info.config;
  Backend& BE = *be;
  const int64_t C = c.hidden, H = c.heads, K = c.kv_heads, D = c.head_dim;
  const int64_t qd = H * D, kd = K * D, ld = qd + 2 * kd;
  const ArchTraits& arch = c.arch;
  const int64_t F = c.ffn, up_w = arch.gated() ? 2 * F : F;

  std::vector<int64_t> pos(static_cast<size_t>(T));     // position of every row
  std::vector<int32_t> seq_of(static_cast<size_t>(T));  // sequence of every row
  for (size_t s = 0; s < seqs.size(); s++)
    for (int64_t i = 0; i < seqs[s].len; i++) {
      pos[size_t(seqs[s].row0 + i)] = seqs[s].pos0 + i;
      seq_of[size_t(seqs[s].row0 + i)] = int32_t(s);
    }

  // Buffers: shared scratch for inference, one set per layer when training.
  Floats&x = ws.x, &h = ws.h, &qkv = ws.qkv, &att = ws.att, &ff = ws.ff, &act = ws.act;
  x.resize(size_t(T * C));
  auto sized = [](Floats& v, int64_t n) -> float* {
    v.resize(size_t(n));
    return v.data();
  };
  if (acts) {
    acts->layers.resize(size_t(c.layers));
    acts->pos = pos;
  }

  const float emb_scale = embedding_scale(c);
  parallel_rows(T, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* xr = &x[size_t(r * C)];
      std::memcpy(xr, &w.tok_emb[size_t(tokens[r]) * size_t(C)], sizeof(float) * size_t(C));
      if (arch.embed_scale) for (int64_t i = 0; i < C; i++) xr[i] *= emb_scale;
      if (arch.learned_positions) BE.add_inplace(xr, &w.pos_emb[size_t(pos[size_t(r)] * C)], C);
    }
  });
  const Floats rope = arch.learned_positions ? Floats() : rope_table(c, pos);

  // Attention work items: a whole (sequence, head) through the blocked GEMM path when the sequence
  // starts at position 0; (sequence, head, 16 queries) against the KV cache when decoding.
  struct Item { int32_t seq, head; int64_t q0, q1; };
  std::vector<Item> items;
  int64_t max_ctx = 0, max_fresh = 0;
  for (size_t s = 0; s < seqs.size(); s++) {
    max_ctx = std::max(max_ctx, seqs[s].pos0 + seqs[s].len);
    if (seqs[s].pos0 == 0 || seqs[s].len >= 4) max_fresh = std::max(max_fresh, seqs[s].pos0 + seqs[s].len);
    const int64_t step = seqs[s].len >= 4 ? seqs[s].len : 16;
    for (int64_t hh = 0; hh < H; hh++)
      for (int64_t q = 0; q < seqs[s].len; q += step) items.push_back({int32_t(s), int32_t(hh), q, std::min(seqs[s].len, q + step)});
  }
  const int64_t scratch_n = std::max(max_ctx, BE.attention_scratch_size(max_fresh));
  std::vector<Floats>& scores = ws.scores;
  scores.resize(size_t(BE.threads()));
  for (auto& sc : scores) sc.resize(size_t(scratch_n));

  const float eps = float(c.eps);
  // norm(x) into h, keeping per-row stats when training.
  auto norm_n = [&](int64_t n, const Floats& nw_, const Floats& nb, const float* xs, float* hs, float* mu,
                    float* rs) {
    const NormWeight nw(arch, nw_);
    parallel_rows(n, 32, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float m = 0.f;
        const float v = arch.norm == NormKind::LayerNorm ? BE.layernorm_row(xs + r * C, nw.data(), nb.data(), eps, C, hs + r * C, &m)
                                                         : BE.rmsnorm_row(xs + r * C, nw.data(), eps, C, hs + r * C);
        if (rs) rs[r] = v;
        if (mu) mu[r] = m;
      }
    });
  };
  auto norm = [&](const Floats& nw, const Floats& nb, const float* xs, float* hs, float* mu, float* rs) {
    norm_n(T, nw, nb, xs, hs, mu, rs);
  };
  // The MLP activation of n rows: GELU in place (act_p == ff_p) or into act_p; a gated one
  // (SwiGLU, GeGLU) from [gate | up] into act_p.
  auto activate = [&](int64_t n, float* ff_p, float* act_p) {
    parallel_rows(n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) mlp_activation(BE, arch.act, ff_p + r * up_w, F, act_p + r * F);
    });
  };
  // The block after attention, on n rows (all of them, or the last layer's kept ones):
  // x += o(att); h = norm2(x); x += down(act(up(h))). With A, what the backward needs is kept.
  auto block_tail = [&](const Layer& L, int64_t n, const float* att_p, float* xs, Floats& h_buf, Floats& ff_buf, Floats& act_buf,
                        LayerActs* A, uint64_t lseed) {
    L.o.apply(BE, n, att_p, qd, xs, C, true, A ? &A->s_o : nullptr, lseed + 1);
    if (A) A->x_mid.assign(xs, xs + n * C);
    float* h2 = sized(h_buf, n * C);
    norm_n(n, L.norm2_w, L.norm2_b, xs, h2, A ? sized(A->mean2, n) : nullptr, A ? sized(A->rstd2, n) : nullptr);
    float* ff_p = sized(ff_buf, n * up_w);
    L.up.apply(BE, n, h2, C, ff_p, up_w, false, A ? &A->s_up : nullptr, lseed + 2);
    // An ungated GELU runs in place for inference; training keeps the pre-activation for its backward.
    float* act_p = (!arch.gated() && !A) ? ff_p : sized(act_buf, n * F);
    activate(n, ff_p, act_p);
    L.down.apply(BE, n, act_p, F, xs, C, true, A ? &A->s_down : nullptr, lseed + 3);
  };
  if (keep && acts) fail(ErrorCode::Internal, "forward_hidden: kept rows are for inference; training keeps every row");
  const bool trim = keep != nullptr;
  for (int64_t l = 0; l < c.layers; l++) {
    const Layer& L = w.layers[size_t(l)];
    LayerActs* A = acts ? &acts->layers[size_t(l)] : nullptr;
    const uint64_t lseed = seed * 1000003ull + uint64_t(l) * 4;
    if (A) A->x_in = x;
    float* h1 = sized(A ? A->h1 : h, T * C);
    float* qkv_p = sized(A ? A->qkv : qkv, T * ld);
    float* att_p = sized(A ? A->att : att, T * qd);
    float* lse_p = A ? sized(A->lse, T * H) : nullptr;
    norm(L.norm1_w, L.norm1_b, x.data(), h1, A ? sized(A->mean1, T) : nullptr, A ? sized(A->rstd1, T) : nullptr);
    L.qkv.apply(BE, T, h1, C, qkv_p, ld, false, A ? &A->s_qkv : nullptr, lseed);
    parallel_rows(T, 32, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float* row = qkv_p + r * ld;
        if (!arch.learned_positions) {
          BE.rope_row(row, H, D, &rope[size_t(r * D)]);
          BE.rope_row(row + qd, K, D, &rope[size_t(r * D)]);
        }
        const SeqRun& s = seqs[size_t(seq_of[size_t(r)])];
        if (s.cache) {
          const size_t at = size_t(pos[size_t(r)] * kd);
          std::memcpy(&s.cache->k[size_t(l)][at], row + qd, sizeof(float) * size_t(kd));
          std::memcpy(&s.cache->v[size_t(l)][at], row + qd + kd, sizeof(float) * size_t(kd));
        }
      }
    });
    for (const SeqRun& s : seqs)
      if (s.prefix_of) {
        const size_t bytes = sizeof(float) * size_t(s.pos0 * kd);
        std::memcpy(s.cache->k[size_t(l)].data(), s.prefix_of->k[size_t(l)].data(), bytes);
        std::memcpy(s.cache->v[size_t(l)].data(), s.prefix_of->v[size_t(l)].data(), bytes);
      }
    float scale = 1.f / std::sqrt(float(D));
    if (c.scale_attn_by_inverse_layer_idx) scale /= float(l + 1);
    if (trim && l == c.layers - 1) {
      // Last layer, kept rows only: every row's keys and values are in place; attention, the
      // output projection, the MLP and the final norm run on the kept queries.
      std::vector<int64_t> rows, base(seqs.size());
      for (size_t s = 0; s < seqs.size(); s++) {
        base[s] = int64_t(rows.size());
        for (int64_t r = (*keep)[s].first; r < (*keep)[s].second; r++) rows.push_back(seqs[s].row0 + r);
      }
      const int64_t Tk = int64_t(rows.size());
      Floats &att_k = ws.kept_att, &lse_k = ws.kept_lse, &x_k = ws.kept_x;
      sized(att_k, Tk * qd), sized(lse_k, Tk * H), sized(x_k, Tk * C);
      BE.parallel_for(int64_t(seqs.size()) * H, [&](int64_t t, int thread) {
        const size_t si = size_t(t / H);
        const int64_t hh = t % H, a = (*keep)[si].first, n = (*keep)[si].second - a, g = hh / (H / K);
        if (n <= 0) return;
        const SeqRun& s = seqs[si];
        const float* k = s.pos0 == 0 ? qkv_p + s.row0 * ld + qd + g * D : s.cache->k[size_t(l)].data() + g * D;
        const float* v = s.pos0 == 0 ? qkv_p + s.row0 * ld + qd + kd + g * D : s.cache->v[size_t(l)].data() + g * D;
        BE.attention_head_forward(qkv_p + (s.row0 + a) * ld + hh * D, ld, k, v, s.pos0 == 0 ? ld : kd, n, s.pos0 + a, D, scale,
                               att_k.data() + base[si] * qd + hh * D, qd, lse_k.data() + base[si] * H + hh, H,
                               scores[size_t(thread)].data());
      });
      gather_rows(x.data(), rows, C, x_k.data());
      block_tail(L, Tk, att_k.data(), x_k.data(), ws.kept_h, ws.kept_ff, ws.kept_act, nullptr, lseed);
      norm_n(Tk, w.norm_w, w.norm_b, x_k.data(), out, nullptr, nullptr);
      return;
    }
    if (!lse_p) lse_p = sized(ws.lse, T * H);
    BE.parallel_for(int64_t(items.size()), [&](int64_t t, int thread) {
      const Item& it = items[size_t(t)];
      const SeqRun& s = seqs[size_t(it.seq)];
      const int64_t g = it.head / (H / K);  // GQA: consecutive query heads share a kv head
      if (s.pos0 == 0) {
        BE.attention_head_forward(qkv_p + s.row0 * ld + it.head * D, ld, qkv_p + s.row0 * ld + qd + g * D,
                               qkv_p + s.row0 * ld + qd + kd + g * D, ld, s.len, 0, D, scale, att_p + s.row0 * qd + it.head * D, qd,
                               lse_p + s.row0 * H + it.head, H, scores[size_t(thread)].data());
        return;
      }
      const float* kb = s.cache->k[size_t(l)].data() + g * D;
      const float* vb = s.cache->v[size_t(l)].data() + g * D;
      if (s.len >= 4) {  // a continuation after a cached prefix: blocked GEMM path over the cache
        BE.attention_head_forward(qkv_p + s.row0 * ld + it.head * D, ld, kb, vb, kd, s.len, s.pos0, D, scale,
                               att_p + s.row0 * qd + it.head * D, qd, lse_p + s.row0 * H + it.head, H, scores[size_t(thread)].data());
        return;
      }
      for (int64_t q = it.q0; q < it.q1; q++) {
        const int64_t r = s.row0 + q;
        lse_p[r * H + it.head] = BE.attend_row(qkv_p + r * ld + it.head * D, kb, vb, kd, s.pos0 + q + 1, D, scale,
                                            scores[size_t(thread)].data(), att_p + r * qd + it.head * D);
      }
    });
    if (A && !acts->kept.empty() && l == c.layers - 1) {
      // Training, last layer: the tail runs on the rows the loss reads (Acts::kept); the others'
      // final hidden states are zero.
      const std::vector<int64_t>& rows = acts->kept;
      const int64_t Tk = int64_t(rows.size());
      float* att_k = sized(A->att_kept, Tk * qd);
      Floats& x_k = ws.kept_x;
      sized(x_k, Tk * C);
      gather_rows(x.data(), rows, C, x_k.data());
      gather_rows(att_p, rows, qd, att_k);
      block_tail(L, Tk, att_k, x_k.data(), A->h2, A->ff, A->act, A, lseed);
      acts->x_final = x_k;
      Floats& out_k = ws.kept_h;
      norm_n(Tk, w.norm_w, w.norm_b, x_k.data(), sized(out_k, Tk * C), sized(acts->mean_f, Tk), sized(acts->rstd_f, Tk));
      std::memset(out, 0, sizeof(float) * size_t(T * C));
      scatter_rows(out_k.data(), rows, C, out);
      return;
    }
    block_tail(L, T, att_p, x.data(), A ? A->h2 : h, A ? A->ff : ff, A ? A->act : act, A, lseed);
  }
  if (acts) acts->x_final = x;
  norm(w.norm_w, w.norm_b, x.data(), out, acts ? sized(acts->mean_f, T) : nullptr, acts ? sized(acts->rstd_f, T) : nullptr);
}

}  // namespace kpig
