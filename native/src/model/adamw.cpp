// AdamW as torch.optim.AdamW computes it, with global-norm gradient clipping and a step that is
// skipped (weights untouched) when a gradient is not finite.
#include <cmath>

#include "model_impl.h"
#include "prefix_cache.h"

namespace kpig {

void Model::zero_grad() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const TensorRef& t : impl_->registry)
    if (t.grad) std::fill(t.grad, t.grad + t.numel(), 0.f);
}

StepResult Model::optimizer_step(const AdamWOptions& o) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelImpl& m = *impl_;
  m.prefixes->clear();
  m.weights_version++;
  if (!(o.lr >= 0) || !(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1) || !(o.eps > 0) || !(o.weight_decay >= 0) ||
      !(o.max_grad_norm >= 0))
    fail(ErrorCode::Input, "AdamW options out of range (lr ≥ 0, 0 ≤ β < 1, eps > 0, weight_decay ≥ 0, max_grad_norm ≥ 0)");
  StepResult r;
  // Σ g² in fixed chunks of each tensor, summed in order: the same value whatever the threads.
  constexpr int64_t kNormChunk = 1 << 16;
  double ss = 0;
  std::vector<double> part;
  for (const TensorRef& t : m.registry) {
    if (!t.grad) continue;
    const int64_t n = t.numel(), chunks = (n + kNormChunk - 1) / kNormChunk;
    part.assign(size_t(chunks), 0.0);
    const float* g = t.grad;
    m.parallel_rows(chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) {
        double acc[4] = {0, 0, 0, 0};
        const int64_t i1 = std::min(n, (c + 1) * kNormChunk);
        int64_t i = c * kNormChunk;
        for (; i + 4 <= i1; i += 4)
          for (int j = 0; j < 4; j++) acc[j] += double(g[i + j]) * double(g[i + j]);
        for (; i < i1; i++) acc[0] += double(g[i]) * double(g[i]);
        part[size_t(c)] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      }
    });
    for (double v : part) ss += v;
  }
  r.grad_norm = std::sqrt(ss);
  auto clear = [&] {
    for (const TensorRef& t : m.registry)
      if (t.grad) std::fill(t.grad, t.grad + t.numel(), 0.f);
  };
  if (!std::isfinite(r.grad_norm)) {
    r.skipped = true;
    r.step = m.adam_steps;
    clear();
    return r;
  }
  const float clip = (o.max_grad_norm > 0 && r.grad_norm > o.max_grad_norm) ? float(o.max_grad_norm / (r.grad_norm + 1e-6)) : 1.f;
  const int64_t step = ++m.adam_steps;
  const double bc1 = 1.0 - std::pow(o.beta1, double(step)), bc2 = 1.0 - std::pow(o.beta2, double(step));
  const float step_size = float(o.lr / bc1), bc2_sqrt = float(std::sqrt(bc2));
  const float b1 = float(o.beta1), b2 = float(o.beta2), eps = float(o.eps);
  for (const TensorRef& t : m.registry) {
    if (!t.grad) continue;
    AdamState& st = m.adam[t.name];
    const size_t n = size_t(t.numel());
    if (st.m.size() != n) st.m.assign(n, 0.f), st.v.assign(n, 0.f);
    const float decay = (o.decay_all || t.decay) ? float(1.0 - o.lr * o.weight_decay) : 1.f;
    // One pass over the tensor: the update, then the gradient cleared for the next accumulation.
    m.parallel_rows(int64_t(n), 1 << 14, [&, p = t.data, g = t.grad, mp = st.m.data(), vp = st.v.data()](int64_t i0, int64_t i1) {
      impl_->be->adamw_update(p + i0, g + i0, mp + i0, vp + i0, i1 - i0, clip, decay, b1, b2, step_size, bc2_sqrt, eps);
    });
  }
  r.step = step;
  return r;
}

int64_t Model::optimizer_steps() const { return impl_->adam_steps; }
void Model::set_optimizer_steps(int64_t steps) {
  std::lock_guard<std::mutex> lock(mu_);
  if (steps < 0) fail(ErrorCode::Input, "optimizer steps must be ≥ 0");
  impl_->adam_steps = steps;
}


}  // namespace kpig
