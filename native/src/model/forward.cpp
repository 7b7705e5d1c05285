// The packed transformer forward pass (GPT-2 and the LLaMA family), shared by scoring and
// generation. Sequences are packed back to back with no padding; each is causal with its own
// positions. With a KV cache, new keys/values are appended and attention reads the cache.
#include <cmath>
#include <cstring>

#include "../cpu/gemm.h"
#include "../cpu/ops.h"
#include "model_impl.h"

namespace kpig {

void ModelImpl::parallel_rows(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t tasks = (n + grain - 1) / grain;
  pool->parallel_for(tasks, [&](int64_t t, int) { fn(t * grain, std::min(n, (t + 1) * grain)); });
}

void ModelImpl::head_logits(int64_t M, const float* hidden, float* logits) {
  const ModelConfig& c = info.config;
  gemm(pool.get(), M, c.vocab, c.hidden, hidden, c.hidden, 1, w.head_ptr(), 1, c.hidden, logits, c.vocab, false);
}

void ModelImpl::forward_hidden(const int32_t* tokens, int64_t T, const std::vector<SeqRun>& seqs, float* out) {
  const ModelConfig& c = info.config;
  const int64_t C = c.hidden, H = c.heads, K = c.kv_heads, D = c.head_dim;
  const int64_t qd = H * D, kd = K * D, ld = qd + 2 * kd;
  const int64_t F = c.ffn, up_w = c.arch == Arch::GPT2 ? F : 2 * F;
  const bool gpt2 = c.arch == Arch::GPT2;

  std::vector<int64_t> pos(static_cast<size_t>(T));       // position of every row
  std::vector<int32_t> seq_of(static_cast<size_t>(T));    // sequence of every row
  for (size_t s = 0; s < seqs.size(); s++)
    for (int64_t i = 0; i < seqs[s].len; i++) {
      pos[size_t(seqs[s].row0 + i)] = seqs[s].pos0 + i;
      seq_of[size_t(seqs[s].row0 + i)] = int32_t(s);
    }

  std::vector<float> x(size_t(T * C));     // (T, C) residual stream
  std::vector<float> h(size_t(T * C));     // (T, C) normed input of a sub-block
  std::vector<float> qkv(size_t(T * ld));  // (T, qd + 2kd)
  std::vector<float> att(size_t(T * qd));  // (T, H·D)
  std::vector<float> ff(size_t(T * up_w)); // (T, F) or (T, 2F)
  std::vector<float> act(gpt2 ? 0 : size_t(T * F));
  std::vector<float> rope;                 // (T, D): cos then sin for D/2 frequencies

  parallel_rows(T, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      std::memcpy(&x[size_t(r * C)], &w.tok_emb[size_t(tokens[r]) * size_t(C)], sizeof(float) * size_t(C));
      if (gpt2) add_inplace(&x[size_t(r * C)], &w.pos_emb[size_t(pos[size_t(r)] * C)], C);
    }
  });
  if (!gpt2) {
    // Angles in double: pos·θ^(−2i/D) loses precision in float32 at long positions.
    rope.resize(size_t(T * D));
    const int64_t half = D / 2;
    for (int64_t r = 0; r < T; r++)
      for (int64_t i = 0; i < half; i++) {
        double a = double(pos[size_t(r)]) * std::pow(c.rope_theta, -2.0 * double(i) / double(D));
        rope[size_t(r * D + i)] = float(std::cos(a));
        rope[size_t(r * D + half + i)] = float(std::sin(a));
      }
  }

  // Attention work items: (sequence, head, block of 16 queries).
  struct Item { int32_t seq, head; int64_t q0, q1; };
  std::vector<Item> items;
  int64_t max_ctx = 0;
  for (size_t s = 0; s < seqs.size(); s++) {
    max_ctx = std::max(max_ctx, seqs[s].pos0 + seqs[s].len);
    for (int64_t hh = 0; hh < H; hh++)
      for (int64_t q = 0; q < seqs[s].len; q += 16) items.push_back({int32_t(s), int32_t(hh), q, std::min(seqs[s].len, q + 16)});
  }
  std::vector<std::vector<float>> scores(size_t(pool->size()), std::vector<float>(size_t(max_ctx)));

  const float eps = float(c.eps);
  for (int64_t l = 0; l < c.layers; l++) {
    const Layer& L = w.layers[size_t(l)];
    parallel_rows(T, 32, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        if (gpt2) layernorm_row(&x[size_t(r * C)], L.norm1_w.data(), L.norm1_b.data(), eps, C, &h[size_t(r * C)]);
        else rmsnorm_row(&x[size_t(r * C)], L.norm1_w.data(), eps, C, &h[size_t(r * C)]);
      }
    });
    L.qkv.apply(pool.get(), T, h.data(), C, qkv.data(), ld, false);
    parallel_rows(T, 32, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float* row = &qkv[size_t(r * ld)];
        if (!gpt2) {
          rope_row(row, H, D, &rope[size_t(r * D)]);
          rope_row(row + qd, K, D, &rope[size_t(r * D)]);
        }
        const SeqRun& s = seqs[size_t(seq_of[size_t(r)])];
        if (s.cache) {
          const size_t at = size_t(pos[size_t(r)] * kd);
          std::memcpy(&s.cache->k[size_t(l)][at], row + qd, sizeof(float) * size_t(kd));
          std::memcpy(&s.cache->v[size_t(l)][at], row + qd + kd, sizeof(float) * size_t(kd));
        }
      }
    });
    float scale = 1.f / std::sqrt(float(D));
    if (c.scale_attn_by_inverse_layer_idx) scale /= float(l + 1);
    pool->parallel_for(int64_t(items.size()), [&](int64_t t, int thread) {
      const Item& it = items[size_t(t)];
      const SeqRun& s = seqs[size_t(it.seq)];
      const int64_t g = it.head / (H / K);  // GQA: consecutive query heads share a kv head
      const float *kb, *vb;
      int64_t kv_ld;
      if (s.cache) {
        kb = s.cache->k[size_t(l)].data() + g * D;
        vb = s.cache->v[size_t(l)].data() + g * D;
        kv_ld = kd;
      } else {
        kb = &qkv[size_t(s.row0 * ld + qd + g * D)];
        vb = &qkv[size_t(s.row0 * ld + qd + kd + g * D)];
        kv_ld = ld;
      }
      for (int64_t q = it.q0; q < it.q1; q++) {
        const int64_t r = s.row0 + q;
        const int64_t n_keys = (s.cache ? s.pos0 : 0) + q + 1;
        attend_row(&qkv[size_t(r * ld + it.head * D)], kb, vb, kv_ld, n_keys, D, scale, scores[size_t(thread)].data(),
                   &att[size_t(r * qd + it.head * D)]);
      }
    });
    L.o.apply(pool.get(), T, att.data(), qd, x.data(), C, true);
    parallel_rows(T, 32, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        if (gpt2) layernorm_row(&x[size_t(r * C)], L.norm2_w.data(), L.norm2_b.data(), eps, C, &h[size_t(r * C)]);
        else rmsnorm_row(&x[size_t(r * C)], L.norm2_w.data(), eps, C, &h[size_t(r * C)]);
      }
    });
    L.up.apply(pool.get(), T, h.data(), C, ff.data(), up_w, false);
    parallel_rows(T, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        if (gpt2) gelu_new_inplace(&ff[size_t(r * F)], F);
        else swiglu_row(&ff[size_t(r * 2 * F)], F, &act[size_t(r * F)]);
      }
    });
    L.down.apply(pool.get(), T, gpt2 ? ff.data() : act.data(), F, x.data(), C, true);
  }
  parallel_rows(T, 32, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      if (gpt2) layernorm_row(&x[size_t(r * C)], w.norm_w.data(), w.norm_b.data(), eps, C, out + r * C);
      else rmsnorm_row(&x[size_t(r * C)], w.norm_w.data(), eps, C, out + r * C);
    }
  });
}

}  // namespace kpig
