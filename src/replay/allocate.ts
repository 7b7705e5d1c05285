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
 * KPIG's replay allocation at the start of a stage: task k gets `n_k ∝ w_k` of `budget`, with
 * exact-sum rounding and each task capped at its buffer size. Tasks the model half-listens to
 * (low IG) get more replay.
 *
 * - `τ = max(options.tau ?? std(IG), options.tauFloor ?? 0)` (population std of the task IGs).
 *   The floor keeps a near-tie in IG from turning into a lopsided split: with IGs 0 and 0.01 the
 *   std is 0.005 and the split is 88/12; with `tauFloor: 1` it is 50/50.
 * - `softmax_k = exp(−IG_k / τ) / Σ_j exp(−IG_j / τ)` (equal shares when τ = 0).
 * - Without `minShare`, `w_k = exp(−(IG_k − min IG) / τ)` (unnormalised, as returned). With it,
 *   `w_k = (1 − K·minShare)·softmax_k + minShare` (K tasks; the weights sum to 1), so every task's
 *   exact share is at least `minShare·budget` and its count at least `⌊minShare·budget⌋`, unless
 *   its cap (buffer size) is smaller.
 *
 * Returns the counts, the weights and the τ actually used.
 *
 * @example
 * kpigAllocation([0.1, 0.5, 0.9], 300); // most to the first task
 * kpigAllocation([0, 0.01], 100, { tauFloor: 1 }).counts; // [50, 50]
 * kpigAllocation([0, 5], 100, { tau: 0.1, minShare: 0.2 }).counts; // [80, 20]
 */
export function kpigAllocation(
  taskIgs: readonly number[],
  budget: number,
  options: { tau?: number; tauFloor?: number; minShare?: number; caps?: readonly number[] } = {},
): { counts: number[]; weights: number[]; tau: number } {
  taskIgs.forEach((g, i) => {
    if (!Number.isFinite(g)) throw new InputError(`task IG ${i} is not finite (${g})`);
  });
  const { tauFloor, minShare } = options;
  if (tauFloor !== undefined && !(tauFloor >= 0 && Number.isFinite(tauFloor))) throw new InputError(`tauFloor must be finite and ≥ 0, got ${tauFloor}`);
  const K = taskIgs.length;
  if (minShare !== undefined) {
    if (!(minShare >= 0 && Number.isFinite(minShare))) throw new InputError(`minShare must be finite and ≥ 0, got ${minShare}`);
    // A hair of slack so that e.g. 3 tasks × (1/3) is not refused over rounding.
    if (K * minShare > 1 + 1e-12) throw new InputError(`minShare ${minShare} × ${K} tasks = ${K * minShare} exceeds the whole budget (must be ≤ 1)`);
  }
  const tau = Math.max(options.tau ?? stdDev(taskIgs), tauFloor ?? 0);
  if (!(tau >= 0)) throw new InputError(`τ must be ≥ 0, got ${tau}`);
  let weights: number[];
  if (tau === 0) weights = taskIgs.map(() => 1);
  else {
    // exp(−(IG − min)/τ): the shift cancels in the normalisation and keeps exp() from underflowing.
    const lo = Math.min(...taskIgs);
    weights = taskIgs.map((g) => Math.exp(-(g - lo) / tau));
  }
  if (minShare !== undefined && K > 0) {
    const sum = weights.reduce((a, b) => a + b, 0);
    // Clamped: the slack above may leave 1 − K·minShare a rounding error below zero.
    const rest = Math.max(0, 1 - K * minShare);
    weights = weights.map((w) => rest * (w / sum) + minShare);
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

/**
 * Indices of `n` items chosen stratified by class (the gold label), lowest scores first inside each
 * class, so a replay set keeps the label mix of its buffer instead of collapsing onto the label the
 * model finds hardest.
 *
 * Quotas: class c (`s_c` of the `N` items) gets `n·s_c/N` rounded by {@link roundExactSum}
 * (largest remainder, ties to the class seen first; capped at `s_c`). When `n` ≥ the number of
 * classes, every class gets at least 1: each class rounded to 0 takes a unit from the class with
 * the largest surplus `quota − n·s_c/N` among those with 2 or more (ties to the class seen first).
 * Inside a class the lowest scores are taken, ties by index. The result is sorted ascending by
 * (score, index); `n` ≥ N returns every index.
 *
 * @example
 * stratifiedLowest([0.1, 0.2, 0.3, 0.9], ['yes', 'yes', 'yes', 'no'], 2); // [0, 3]
 */
export function stratifiedLowest(scores: readonly number[], classes: readonly string[], n: number): number[] {
  if (scores.length !== classes.length) throw new InputError(`scores has ${scores.length} items but classes has ${classes.length}`);
  if (!Number.isInteger(n) || n < 0) throw new InputError(`the number of items to choose must be a non-negative integer, got ${n}`);
  scores.forEach((s, i) => {
    if (!Number.isFinite(s)) throw new InputError(`score ${i} is not finite (${s})`);
  });
  const N = scores.length;
  const byScore = (a: number, b: number) => scores[a] - scores[b] || a - b;
  if (n >= N) return scores.map((_, i) => i).sort(byScore);
  const members = new Map<string, number[]>();
  classes.forEach((c, i) => {
    const m = members.get(c);
    if (m) m.push(i);
    else members.set(c, [i]);
  });
  const groups = [...members.values()];
  const sizes = groups.map((g) => g.length);
  const quota = roundExactSum(sizes, n, sizes);
  if (n >= groups.length) {
    const surplus = (c: number) => quota[c] - (n * sizes[c]) / N;
    for (let c = 0; c < groups.length; c++) {
      if (quota[c] > 0) continue;
      // A donor exists: the quotas sum to n ≥ #classes while this one is 0, so some class has ≥ 2.
      let donor = -1;
      for (let d = 0; d < groups.length; d++) if (quota[d] >= 2 && (donor < 0 || surplus(d) > surplus(donor))) donor = d;
      quota[donor]--;
      quota[c] = 1;
    }
  }
  return groups.flatMap((g, c) => [...g].sort(byScore).slice(0, quota[c])).sort(byScore);
}
