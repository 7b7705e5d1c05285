/**
 * Exact optimal transport (the earth mover's distance) between two discrete distributions, as
 * InsCL uses it between the instruction-embedding sets of two tasks: a min-cost flow solved by
 * successive shortest paths (Dijkstra with potentials on the dense bipartite residual graph).
 * Each augmentation saturates a supply, a demand or a reverse edge, so the flow is exact up to
 * float rounding; n, m are instruction counts (tens to a few hundred), so O((n+m)²) per path is cheap.
 */
import { InputError } from '../errors/index.js';

function checkMass(w: readonly number[], what: string): number[] {
  if (w.length === 0) throw new InputError(`${what} has no points`);
  let s = 0;
  w.forEach((x, i) => {
    if (!(x >= 0) || !Number.isFinite(x)) throw new InputError(`${what} weight ${i} must be finite and ≥ 0, got ${x}`);
    s += x;
  });
  if (!(s > 0)) throw new InputError(`${what} weights sum to 0`);
  return w.map((x) => x / s);
}

/**
 * The exact Wasserstein-1 distance `min_P Σ P_ij C_ij` over couplings P with row sums `a` and
 * column sums `b` (both normalised to 1). `cost` is row-major (a.length × b.length), entries ≥ 0.
 *
 * @example
 * emd([0.5, 0.5], [1], [[0], [1]]); // 0.5
 */
export function emd(a: readonly number[], b: readonly number[], cost: readonly (readonly number[])[]): number {
  const pa = checkMass(a, 'source'), pb = checkMass(b, 'target');
  const n = pa.length, m = pb.length;
  if (cost.length !== n || cost.some((r) => r.length !== m)) throw new InputError(`the cost matrix must be ${n} × ${m}`);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < m; j++)
      if (!(cost[i][j] >= 0) || !Number.isFinite(cost[i][j])) throw new InputError(`cost[${i}][${j}] must be finite and ≥ 0, got ${cost[i][j]}`);
  // Nodes: 0..n−1 sources, n..n+m−1 sinks. Supplies/demands are kept as residuals; flow[i][j] is the
  // mass moved i → j (its reverse edge j → i has cost −C_ij and capacity flow[i][j]).
  const supply = [...pa], demand = [...pb];
  const flow = Array.from({ length: n }, () => new Float64Array(m));
  const pot = new Float64Array(n + m);
  const eps = 1e-15;
  let left = 1;
  while (left > 1e-12) {
    // Dijkstra from a virtual super-source S with an edge to every source with supply left, on
    // reduced costs c + pot[u] − pot[v]; S's potential is the largest of theirs, so its edges are ≥ 0.
    const dist = new Float64Array(n + m).fill(Infinity);
    const prev = new Int32Array(n + m).fill(-1);
    const done = new Uint8Array(n + m);
    let potS = -Infinity;
    for (let i = 0; i < n; i++) if (supply[i] > eps) potS = Math.max(potS, pot[i]);
    for (let i = 0; i < n; i++) if (supply[i] > eps) dist[i] = potS - pot[i];
    for (;;) {
      let u = -1;
      for (let v = 0; v < n + m; v++) if (!done[v] && dist[v] < Infinity && (u < 0 || dist[v] < dist[u])) u = v;
      if (u < 0) break;
      // A finished node is never relaxed again: rounding can leave a reduced cost at −1e-17, and
      // re-opening a node could then close a cycle in the path tree.
      done[u] = 1;
      if (u < n) {
        for (let j = 0; j < m; j++) {
          const d = dist[u] + cost[u][j] + pot[u] - pot[n + j];
          if (!done[n + j] && d < dist[n + j]) {
            dist[n + j] = d;
            prev[n + j] = u;
          }
        }
      } else {
        const j = u - n;
        for (let i = 0; i < n; i++)
          if (flow[i][j] > eps && !done[i]) {
            const d = dist[u] - cost[i][j] + pot[u] - pot[i];
            if (d < dist[i]) {
              dist[i] = d;
              prev[i] = u;
            }
          }
      }
    }
    // The sink with demand left at the least true distance (reduced distance + its potential) ends
    // the path: successive shortest paths stay optimal only along true shortest paths.
    let sink = -1;
    const trueDist = (j: number) => dist[n + j] + pot[n + j];
    for (let j = 0; j < m; j++) if (demand[j] > eps && dist[n + j] < Infinity && (sink < 0 || trueDist(j) < trueDist(sink))) sink = j;
    if (sink < 0) break;
    for (let v = 0; v < n + m; v++) if (dist[v] < Infinity) pot[v] += dist[v];
    // Bottleneck along the path, then push.
    let amount = demand[sink];
    let v = n + sink;
    while (prev[v] >= 0) {
      const u = prev[v];
      if (u >= n) amount = Math.min(amount, flow[v][u - n]);
      v = u;
    }
    amount = Math.min(amount, supply[v]);
    const start = v;
    v = n + sink;
    while (prev[v] >= 0) {
      const u = prev[v];
      if (u < n) flow[u][v - n] += amount;
      else flow[v][u - n] -= amount;
      v = u;
    }
    supply[start] -= amount;
    demand[sink] -= amount;
    left -= amount;
  }
  let total = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) total += flow[i][j] * cost[i][j];
  return total;
}

/**
 * Cosine-distance cost matrix `1 − cos(x_i, y_j)` between two sets of vectors.
 *
 * @example
 * cosineCost([[1, 0]], [[0, 1], [1, 0]]); // [[1, 0]]
 */
export function cosineCost(xs: readonly ArrayLike<number>[], ys: readonly ArrayLike<number>[]): number[][] {
  const norm = (v: ArrayLike<number>) => {
    let s = 0;
    for (let k = 0; k < v.length; k++) s += v[k] * v[k];
    return Math.sqrt(s);
  };
  const nx = xs.map(norm), ny = ys.map(norm);
  return xs.map((x, i) =>
    ys.map((y, j) => {
      if (x.length !== y.length) throw new InputError(`embeddings differ in size: ${x.length} vs ${y.length}`);
      let dot = 0;
      for (let k = 0; k < x.length; k++) dot += x[k] * y[k];
      const c = nx[i] > 0 && ny[j] > 0 ? dot / (nx[i] * ny[j]) : 0;
      return Math.max(0, 1 - c); // rounding can push cos a hair above 1
    }),
  );
}
