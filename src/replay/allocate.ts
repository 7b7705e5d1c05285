/**
 * How a replay budget is split across previous tasks. Every function is pure; the formulas are
 * those of DESIGN.md §1 (KPIG) and InsCL, and docs/continual.md shows them next to worked examples.
 */
import { InputError } from '../errors/index.js';

/**
 * Integer counts proportional to `weights` that sum exactly to `total` (largest-remainder rounding:
 * floor every share, then hand the leftover units to the largest fractional parts, ties to the
 * lower index). With `caps`, no count exceeds its cap; the excess is re-split among tasks with
 * room, so the sum is `min(total, Σ caps)`.
 *
 * @example
 * roundExactSum([1, 1, 1], 10); // [4, 3, 3]
 */
export function roundExactSum(weights: readonly number[], total: number, caps?: readonly number[]): number[] {
  if (!Number.isInteger(total) || total < 0) throw new InputError(`the replay budget must be a non-negative integer, got ${total}`);
  weights.forEach((w, i) => {
    if (!(w >= 0) || !Number.isFinite(w)) throw new InputError(`weight ${i} must be finite and ≥ 0, got ${w}`);
  });
  const n = weights.length;
  const counts = new Array<number>(n).fill(0);
  const cap = (i: number) => (caps ? caps[i] : Infinity);
  let left = Math.min(total, caps ? caps.reduce((a, b) => a + b, 0) : total);
  // Each round splits what is left among the tasks with room; a capped task leaves the pool.
  while (left > 0) {
    const open = weights.map((_, i) => i).filter((i) => counts[i] < cap(i));
    if (open.length === 0) break;
    let wsum = open.reduce((a, i) => a + weights[i], 0);
    const w = (i: number) => (wsum > 0 ? weights[i] : 1);
    if (wsum === 0) wsum = open.length;
    const share = open.map((i) => (left * w(i)) / wsum);
    const add = share.map(Math.floor);
    let rest = left - add.reduce((a, b) => a + b, 0);
    const order = open.map((_, k) => k).sort((a, b) => share[b] - add[b] - (share[a] - add[a]) || a - b);
    for (const k of order) {
      if (rest === 0) break;
      add[k]++;
      rest--;
    }
    let given = 0;
    open.forEach((i, k) => {
      const g = Math.min(add[k], cap(i) - counts[i]);
      counts[i] += g;
      given += g;
    });
    left -= given;
    if (given === 0) break;
  }
  return counts;
}

/** The spread of task IGs used as the softmax temperature τ when none is fixed. */
export function stdDev(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / xs.length);
}

/**
 * KPIG's replay allocation at the start of a stage: task k gets `n_k ∝ exp(−IG_k / τ)` of
 * `budget` (`τ` = the population std of the task IGs unless given; equal shares when τ = 0), with
 * exact-sum rounding and each task capped at its buffer size. Tasks the model half-listens to
 * (low IG) get more replay.
 *
 * @example
 * kpigAllocation([0.1, 0.5, 0.9], 300); // most to the first task
 */
export function kpigAllocation(taskIgs: readonly number[], budget: number, options: { tau?: number; caps?: readonly number[] } = {}): { counts: number[]; weights: number[]; tau: number } {
  taskIgs.forEach((g, i) => {
    if (!Number.isFinite(g)) throw new InputError(`task IG ${i} is not finite (${g})`);
  });
  const tau = options.tau ?? stdDev(taskIgs);
  if (!(tau >= 0)) throw new InputError(`τ must be ≥ 0, got ${tau}`);
  let weights: number[];
  if (tau === 0) weights = taskIgs.map(() => 1);
  else {
    // exp(−(IG − min)/τ): the shift cancels in the normalisation and keeps exp() from underflowing.
    const lo = Math.min(...taskIgs);
    weights = taskIgs.map((g) => Math.exp(-(g - lo) / tau));
  }
  return { counts: roundExactSum(weights, budget, options.caps), weights, tau };
}

/**
 * InsCL's allocation: previous task j gets `α_j = W_j / Σ W · α` replay slots (W_j: Wasserstein
 * distance between its instructions and the current task's, so less similar tasks get more),
 * rounded to integers that sum exactly to α (capped at buffer sizes).
 *
 * @example
 * insclAllocation([0.2, 0.6], 80); // [20, 60]
 */
export function insclAllocation(distances: readonly number[], alpha: number, caps?: readonly number[]): number[] {
  return roundExactSum(distances, alpha, caps);
}

/**
 * Indices of the `n` lowest scores (ties broken by index, so the choice is deterministic).
 *
 * @example
 * lowestIndices([0.3, 0.1, 0.2], 2); // [1, 2]
 */
export function lowestIndices(scores: readonly number[], n: number): number[] {
  return scores
    .map((s, i) => [s, i] as const)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1])
    .slice(0, Math.max(0, n))
    .map(([, i]) => i);
}
