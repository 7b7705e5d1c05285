/**
 * GeRe's activation-state constraint (docs/continual.md): the reference model's final-normed hidden
 * states on the general samples set per-unit thresholds μ ± σ and a state per (position, unit):
 * negative (h⁰ ≤ μ − σ), neutral, or positive (h⁰ ≥ μ + σ). The threshold-based margin (TM) loss
 * then penalises a current state h that leaves its class:
 *   negative: relu(h − (μ − σ));  neutral: relu(h − (μ + σ)) + relu((μ − σ) − h);  positive: relu((μ + σ) − h),
 * summed and divided by the number of violating entries (+1e-8), as the paper's code reduces it.
 */
import { InputError } from '../errors/index.js';

export interface ActivationStats {
  mean: Float32Array;
  std: Float32Array;
}

/** Per-unit mean and population standard deviation over every position of every sequence. */
export function activationStats(states: readonly Float32Array[], hidden: number): ActivationStats {
  const sum = new Float64Array(hidden), sq = new Float64Array(hidden);
  let n = 0;
  for (const h of states) {
    if (h.length % hidden !== 0) throw new InputError(`activationStats: a state array has ${h.length} entries, not a multiple of hidden = ${hidden}`);
    for (let t = 0; t < h.length; t += hidden) {
      for (let c = 0; c < hidden; c++) {
        sum[c] += h[t + c];
        sq[c] += h[t + c] * h[t + c];
      }
      n++;
    }
  }
  if (n === 0) throw new InputError('activationStats: no positions');
  const mean = new Float32Array(hidden), std = new Float32Array(hidden);
  for (let c = 0; c < hidden; c++) {
    const m = sum[c] / n;
    mean[c] = m;
    std[c] = Math.sqrt(Math.max(0, sq[c] / n - m * m));
  }
  return { mean, std };
}

/** The state of every entry of a reference sequence: −1 negative, 0 neutral, 1 positive. */
export function activationClasses(reference: Float32Array, stats: ActivationStats): Int8Array {
  const C = stats.mean.length;
  const out = new Int8Array(reference.length);
  for (let i = 0; i < reference.length; i++) {
    const c = i % C;
    const lo = stats.mean[c] - stats.std[c], hi = stats.mean[c] + stats.std[c];
    out[i] = reference[i] >= hi ? 1 : reference[i] <= lo ? -1 : 0;
  }
  return out;
}

/** The TM loss of current states `h` against reference classes, and its gradient (the count of violations held constant). */
export function marginLoss(h: Float32Array, classes: Int8Array, stats: ActivationStats): { loss: number; grad: Float32Array } {
  if (h.length !== classes.length) throw new InputError(`marginLoss: ${h.length} states for ${classes.length} reference entries`);
  const C = stats.mean.length;
  const sign = new Int8Array(h.length);
  let total = 0;
  let count = 0;
  for (let i = 0; i < h.length; i++) {
    const c = i % C;
    const lo = stats.mean[c] - stats.std[c], hi = stats.mean[c] + stats.std[c];
    const x = h[i];
    let v = 0;
    if (classes[i] < 0) {
      if (x > lo) (v = x - lo), (sign[i] = 1);
    } else if (classes[i] > 0) {
      if (x < hi) (v = hi - x), (sign[i] = -1);
    } else if (x > hi) (v = x - hi), (sign[i] = 1);
    else if (x < lo) (v = lo - x), (sign[i] = -1);
    if (v > 0) {
      total += v;
      count++;
    }
  }
  const denom = count + 1e-8;
  const grad = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) if (sign[i] !== 0) grad[i] = sign[i] / denom;
  return { loss: total / denom, grad };
}
