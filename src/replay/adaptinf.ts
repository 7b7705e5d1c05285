/**
 * Adapt-∞-style data selection over the pool of earlier tasks (docs/continual.md): pseudo-task
 * clusters of hidden-state features (k-means), per cluster the scoring function whose histogram
 * has the highest entropy, an equal budget per cluster, coverage-centric selection (CCS) inside
 * each cluster, and permanent pruning of the most redundant pool items (the highest cosine
 * similarity to an earlier item of the same cluster).
 */
import { InputError } from '../errors/index.js';
import { mulberry32, sampleWithoutReplacement } from '../random/rng.js';

function unit(v: Float32Array): Float64Array {
  let s = 0;
  for (const x of v) s += x * x;
  const n = Math.sqrt(s) || 1;
  return Float64Array.from(v, (x) => x / n);
}

function dist2(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s;
}

/**
 * k-means of L2-normalised features: k-means++ seeding from `seed`, then Lloyd iterations until no
 * assignment changes (at most `maxIter`). k is cut to the number of distinct points. Returns the
 * cluster of every point (0..k−1).
 */
export function kMeans(features: readonly Float32Array[], k: number, seed: number, maxIter = 100): Int32Array {
  const n = features.length;
  const assign = new Int32Array(n);
  if (n === 0) return assign;
  const X = features.map(unit);
  const rnd = mulberry32(seed);
  const centers: Float64Array[] = [X[Math.floor(rnd() * n)].slice()];
  const d = X.map((x) => dist2(x, centers[0]));
  while (centers.length < Math.min(k, n)) {
    const total = d.reduce((a, b) => a + b, 0);
    if (total <= 0) break; // every point sits on a centre already
    let r = rnd() * total, i = 0;
    while (i < n - 1 && r >= d[i]) r -= d[i++];
    centers.push(X[i].slice());
    for (let j = 0; j < n; j++) d[j] = Math.min(d[j], dist2(X[j], X[i]));
  }
  const C = X[0].length;
  for (let iter = 0; iter < maxIter; iter++) {
    let changed = iter === 0;
    for (let j = 0; j < n; j++) {
      let best = 0, bestD = Infinity;
      centers.forEach((c, ci) => {
        const dd = dist2(X[j], c);
        if (dd < bestD) (bestD = dd), (best = ci);
      });
      if (assign[j] !== best) (assign[j] = best), (changed = true);
    }
    if (!changed) break;
    centers.forEach((c, ci) => {
      const sum = new Float64Array(C);
      let m = 0;
      for (let j = 0; j < n; j++)
        if (assign[j] === ci) {
          m++;
          for (let q = 0; q < C; q++) sum[q] += X[j][q];
        }
      if (m > 0) for (let q = 0; q < C; q++) c[q] = sum[q] / m;
    });
  }
  return assign;
}

/**
 * Shannon entropy (nats) of the histogram of z-scored values over [−4, 4] in `bins` equal bins
 * (values outside go to the end bins). Zero for fewer than two values or no spread.
 */
export function histogramEntropy(values: readonly number[], bins: number): number {
  const n = values.length;
  if (n < 2) return 0;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / n);
  if (!(sd > 0)) return 0;
  const counts = new Array<number>(bins).fill(0);
  for (const v of values) {
    const z = (v - mean) / sd;
    counts[Math.min(bins - 1, Math.max(0, Math.floor(((z + 4) / 8) * bins)))]++;
  }
  let h = 0;
  for (const c of counts) if (c > 0) h -= (c / n) * Math.log(c / n);
  return h;
}

/**
 * An equal share of `budget` per group; a group smaller than its share keeps all it has and the
 * rest is shared again among the larger ones. Leftover units (integer division) go to the groups
 * in order. Σ = min(budget, Σ sizes).
 */
export function equalShares(sizes: readonly number[], budget: number): number[] {
  const out = sizes.map(() => 0);
  let left = Math.min(budget, sizes.reduce((a, b) => a + b, 0));
  let open = sizes.map((_, i) => i).filter((i) => sizes[i] > 0);
  while (left > 0 && open.length) {
    const share = Math.floor(left / open.length);
    if (share === 0) {
      for (const i of open) if (left > 0 && out[i] < sizes[i]) (out[i]++, left--);
      break;
    }
    for (const i of open) {
      const take = Math.min(share, sizes[i] - out[i]);
      out[i] += take;
      left -= take;
    }
    open = open.filter((i) => out[i] < sizes[i]);
  }
  return out;
}

/**
 * Coverage-centric selection: drop the lowest and highest `cut` share of the scores, split the
 * rest's range into `bins` equal-width bins, and fill the budget bin by bin from the smallest,
 * each taking min(its size, what is left / bins left) at random. Falls back to the cut items when
 * the kept ones are too few. Returns indices into `scores`.
 */
export function coverageSelect(scores: readonly number[], budget: number, bins: number, rnd: () => number, cut = 0.05): number[] {
  const n = scores.length;
  if (budget >= n) return scores.map((_, i) => i);
  const order = scores.map((_, i) => i).sort((a, b) => scores[a] - scores[b] || a - b);
  const lo = Math.floor(cut * n), hi = n - Math.floor(cut * n);
  const kept = order.slice(lo, hi);
  if (kept.length < budget) return sampleWithoutReplacement(order, budget, rnd);
  const min = scores[kept[0]], max = scores[kept[kept.length - 1]];
  const width = (max - min) / bins;
  const groups: number[][] = Array.from({ length: bins }, () => []);
  for (const i of kept) groups[width > 0 ? Math.min(bins - 1, Math.floor((scores[i] - min) / width)) : 0].push(i);
  const live = groups.filter((g) => g.length > 0).sort((a, b) => a.length - b.length);
  const picked: number[] = [];
  let left = budget;
  live.forEach((g, at) => {
    const take = Math.min(g.length, Math.floor(left / (live.length - at)));
    picked.push(...sampleWithoutReplacement(g, take, rnd));
    left -= take;
  });
  // Integer shares can leave a few slots: fill them from what is left, at random.
  if (left > 0) {
    const taken = new Set(picked);
    picked.push(...sampleWithoutReplacement(kept.filter((i) => !taken.has(i)), left, rnd));
  }
  return picked.sort((a, b) => a - b);
}

/** For each item of a group (in order), its largest cosine similarity to an earlier item of the group (−1 for the first). */
export function redundancy(features: readonly Float32Array[]): number[] {
  const X = features.map(unit);
  return X.map((x, i) => {
    let m = -1;
    for (let j = 0; j < i; j++) {
      let s = 0;
      for (let q = 0; q < x.length; q++) s += x[q] * X[j][q];
      m = Math.max(m, s);
    }
    return m;
  });
}

/**
 * Which pool items to keep when the pool may hold `cap` items: the cap split equally over the
 * clusters (`equalShares`), and inside each cluster the items least redundant with earlier ones.
 * Returns a keep flag per item.
 */
export function pruneRedundant(features: readonly Float32Array[], clusters: Int32Array, cap: number): boolean[] {
  if (features.length !== clusters.length) throw new InputError('pruneRedundant: one cluster per item');
  const keep = features.map(() => true);
  if (cap >= features.length) return keep;
  const k = clusters.reduce((a, c) => Math.max(a, c + 1), 0);
  const members: number[][] = Array.from({ length: k }, () => []);
  clusters.forEach((c, i) => members[c].push(i));
  const quota = equalShares(members.map((m) => m.length), cap);
  members.forEach((m, c) => {
    const red = redundancy(m.map((i) => features[i]));
    const order = m.map((_, j) => j).sort((a, b) => red[a] - red[b] || a - b);
    for (const j of order.slice(quota[c])) keep[m[j]] = false;
  });
  return keep;
}
