/**
 * Continual-learning metrics from the stage × task score matrix. Convention (docs/eval.md):
 * `a[t][j-1]` is the score of seen task j (1-based) after training stage t; row 0 is the base
 * model, stage t trains seen task t, so the matrix has T+1 rows of T entries. A null entry is a
 * score that was not measured; a metric that needs it is null.
 */
import { InputError } from '../errors/index.js';

export type ScoreMatrix = readonly (readonly (number | null)[])[];

export interface MatrixMetricOptions {
  /**
   * The base model's scores (row 0). When given, `a` holds only the stage rows 1..T and this row is
   * put in front of them.
   */
  base?: readonly (number | null)[];
  /**
   * InsCL's per-task upper bound u_j for the relative gain (e.g. the task trained alone, or the
   * multitask run). Default: a[j][j], the score just after the task's own stage.
   */
  upper?: readonly (number | null)[];
}

export interface MatrixMetrics {
  /** T: the number of stages (seen tasks). */
  stages: number;
  /** AP = (1/T) Σ_j a[T][j]. */
  ap: number | null;
  /** BWT = 1/(T−1) Σ_{j<T} (a[T][j] − a[j][j]). */
  bwt: number | null;
  /** FWT (raw) = 1/(T−1) Σ_{j=2..T} a[j−1][j]. */
  fwtRaw: number | null;
  /** FWT (vs base) = 1/(T−1) Σ_{j=2..T} (a[j−1][j] − a[0][j]). */
  fwtVsBase: number | null;
  /** Forgetting = 1/(T−1) Σ_{j<T} (max_{t∈[j,T−1]} a[t][j] − a[T][j]). */
  forgetting: number | null;
  /** InsCL's relative gain after the last stage, RG_T (a percentage). */
  relativeGain: number | null;
  /** RG_i = (100/i) Σ_{j≤i} a[i][j] / u_j for i = 1..T. */
  relativeGainCurve: (number | null)[];
  /** AP_i = (1/i) Σ_{j≤i} a[i][j] for i = 1..T: average performance over the tasks seen so far. */
  apCurve: (number | null)[];
  /** Which u_j the relative gain used. */
  upperBound: 'given' | 'diagonal';
}

/** Mean of terms, null when any is null (a metric over a partly unmeasured matrix is unknown). */
function meanOf(terms: (number | null)[]): number | null {
  if (terms.length === 0 || terms.some((x) => x === null)) return null;
  return (terms as number[]).reduce((s, x) => s + x, 0) / terms.length;
}

const diff = (x: number | null, y: number | null) => (x === null || y === null ? null : x - y);

/**
 * AP, BWT, FWT (raw and vs the base model), forgetting and InsCL's relative gain of a score matrix.
 * Metrics that average over T−1 terms are null when T = 1.
 *
 * @throws InputError when the matrix is not (T+1) × T or holds a non-finite number
 * @example
 * const m = matrixMetrics([
 *   [0.1, 0.2],  // base model
 *   [0.8, 0.3],  // after stage 1 (task 1)
 *   [0.6, 0.9],  // after stage 2 (task 2)
 * ]);
 * // m.ap = 0.75, m.bwt = -0.2, m.fwtRaw = 0.3, m.fwtVsBase = 0.1, m.forgetting = 0.2
 */
export function matrixMetrics(a: ScoreMatrix, options: MatrixMetricOptions = {}): MatrixMetrics {
  const rows = options.base ? [options.base, ...a] : a;
  const T = rows.length - 1;
  if (T < 1) throw new InputError(`score matrix: needs the base row and at least one stage row, got ${rows.length} row(s)`);
  rows.forEach((row, t) => {
    if (row.length !== T) throw new InputError(`score matrix: row ${t} has ${row.length} entries; a matrix of ${T} stages needs ${T} (one per seen task)`);
    row.forEach((x, j) => {
      if (x !== null && !Number.isFinite(x)) throw new InputError(`score matrix: a[${t}][${j + 1}] is ${x}, not a finite number or null`);
    });
  });
  if (options.upper && options.upper.length !== T) throw new InputError(`score matrix: upper has ${options.upper.length} entries, expected ${T}`);
  // at(t, j): stage t (0..T), task j (1..T).
  const at = (t: number, j: number) => rows[t][j - 1];
  const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, k) => from + k);

  const apCurve = range(1, T).map((i) => meanOf(range(1, i).map((j) => at(i, j))));
  const upper = (j: number) => (options.upper ? options.upper[j - 1] : at(j, j));
  const relativeGainCurve = range(1, T).map((i) => {
    const ratios = range(1, i).map((j) => {
      const x = at(i, j), u = upper(j);
      return x === null || u === null || u === 0 ? null : x / u;
    });
    const m = meanOf(ratios);
    return m === null ? null : 100 * m;
  });
  const earlier = range(1, T - 1);
  const later = range(2, T);
  return {
    stages: T,
    ap: apCurve[T - 1],
    bwt: T > 1 ? meanOf(earlier.map((j) => diff(at(T, j), at(j, j)))) : null,
    fwtRaw: T > 1 ? meanOf(later.map((j) => at(j - 1, j))) : null,
    fwtVsBase: T > 1 ? meanOf(later.map((j) => diff(at(j - 1, j), at(0, j)))) : null,
    forgetting:
      T > 1
        ? meanOf(
            earlier.map((j) => {
              const seen = range(j, T - 1).map((t) => at(t, j));
              return seen.some((x) => x === null) ? null : diff(Math.max(...(seen as number[])), at(T, j));
            }),
          )
        : null,
    relativeGain: relativeGainCurve[T - 1],
    relativeGainCurve,
    apCurve,
    upperBound: options.upper ? 'given' : 'diagonal',
  };
}
