/**
 * Small-sample statistics for benchmark reports: 95% t-intervals over seeds, paired differences
 * between two methods, a degenerate-output detector, and the validity gate that a continual
 * instruction tuning (CIT) benchmark must pass before its comparisons mean anything.
 *
 * Everything is self-contained: the t quantile comes from the regularized incomplete beta function
 * here rather than from a dependency, because reports only ever need the 0.975 quantile at small
 * integer degrees of freedom (a handful of seeds).
 */
import { InputError, KpigError } from '../errors/index.js';

/** A mean with the half-width of its 95% t-interval (null when fewer than two values). */
export interface IntervalSummary {
  mean: number;
  half: number | null;
  n: number;
}

// Lanczos coefficients (g = 7, 9 terms): about 15 significant digits for positive arguments, which
// is all the incomplete beta prefactor needs.
const LANCZOS_G = 7;
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0. */
function lnGamma(x: number): number {
  if (x < 0.5) {
    // The reflection formula: the Lanczos series loses accuracy below 1/2.
    return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  }
  const z = x - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i] / (z + i);
  const t = z + LANCZOS_G + 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}

/**
 * The continued fraction of I_x(a, b) (Numerical Recipes' betacf), evaluated with the modified
 * Lentz method so that no partial numerator or denominator is computed twice.
 */
function betaContinuedFraction(a: number, b: number, x: number): number {
  const TINY = 1e-300;
  const EPS = 1e-16;
  const qab = a + b;
  const qap = a + 1;
  const qam = a - 1;
  let c = 1;
  let d = 1 - (qab * x) / qap;
  if (Math.abs(d) < TINY) d = TINY;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 10_000; m++) {
    const m2 = 2 * m;
    // Even step.
    let aa = (m * (b - m) * x) / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + aa / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    h *= d * c;
    // Odd step.
    aa = (-(a + m) * (qab + m) * x) / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + aa / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < EPS) return h;
  }
  // Unreachable for the arguments this module passes (a ≥ 1/2, b = 1/2); a silent wrong quantile
  // would be worse than a loud failure.
  throw new KpigError('E_INTERNAL', `incomplete beta continued fraction did not converge (a=${a}, b=${b}, x=${x})`);
}

/** The regularized incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1]. */
function regularizedIncompleteBeta(a: number, b: number, x: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lnFront = a * Math.log(x) + b * Math.log1p(-x) - (lnGamma(a) + lnGamma(b) - lnGamma(a + b));
  const front = Math.exp(lnFront);
  // The fraction converges fast only left of the mean (a+1)/(a+b+2); right of it, the symmetry
  // I_x(a, b) = 1 − I_{1−x}(b, a) moves the argument there.
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(a, b, x)) / a;
  return 1 - (front * betaContinuedFraction(b, a, 1 - x)) / b;
}

/** P(T > t) for Student's t with `df` degrees of freedom and t ≥ 0. */
function tUpperTail(t: number, df: number): number {
  return 0.5 * regularizedIncompleteBeta(df / 2, 0.5, df / (df + t * t));
}

/**
 * The 0.975 quantile of Student's t distribution with `df` degrees of freedom (the multiplier of a
 * two-sided 95% interval), accurate to about 1e-12.
 *
 * @example
 * tQuantile975(2); // 4.3026527297...
 * tQuantile975(9); // 2.2621571627...
 */
export function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1) {
    throw new InputError(`tQuantile975: degrees of freedom must be an integer ≥ 1, got ${df}`);
  }
  const target = 0.025;
  // The quantile is at least the normal one (1.96) and at most 12.71 (df = 1), so this bracket
  // holds for every df; bisection on it cannot wander off, unlike a bare Newton iteration in the
  // heavy df = 1 tail.
  let lo = 1.9;
  let hi = 13;
  for (let i = 0; i < 200 && hi - lo > 1e-14 * hi; i++) {
    const mid = 0.5 * (lo + hi);
    if (tUpperTail(mid, df) > target) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

/** The finite values of `xs`, nulls and NaN/±Infinity dropped. */
function finiteValues(xs: readonly (number | null)[]): number[] {
  const out: number[] = [];
  for (const x of xs) if (x !== null && Number.isFinite(x)) out.push(x);
  return out;
}

/**
 * The mean of the finite non-null values and the half-width of its 95% t-interval,
 * t_{0.975, n−1} · s / √n with s the sample standard deviation (n − 1 denominator). `half` is null
 * for a single value; the result is null when there is no value at all.
 *
 * @example
 * meanInterval([0.8, 0.9, null, 1.0]); // { mean: 0.9, half: 0.2484..., n: 3 }
 * meanInterval([0.7]); // { mean: 0.7, half: null, n: 1 }
 */
export function meanInterval(xs: readonly (number | null)[]): IntervalSummary | null {
  const v = finiteValues(xs);
  const n = v.length;
  if (n === 0) return null;
  let sum = 0;
  for (const x of v) sum += x;
  const mean = sum / n;
  if (n < 2) return { mean, half: null, n };
  // Two passes (mean first, then squared deviations): the one-pass sum-of-squares formula cancels
  // catastrophically for scores that differ only in the third decimal.
  let ss = 0;
  for (const x of v) ss += (x - mean) * (x - mean);
  const s = Math.sqrt(ss / (n - 1));
  return { mean, half: (tQuantile975(n - 1) * s) / Math.sqrt(n), n };
}

/**
 * The mean and 95% t-interval of the per-index differences a[i] − b[i], over the indices where both
 * are finite: a paired comparison of two methods run on the same seeds, whose interval is much
 * tighter than comparing the two separate intervals when seed effects are shared.
 *
 * @example
 * pairedDifference([0.9, 0.8, null], [0.7, 0.75, 0.6]); // { mean: 0.125, half: ..., n: 2 }
 */
export function pairedDifference(
  a: readonly (number | null)[],
  b: readonly (number | null)[],
): IntervalSummary | null {
  if (a.length !== b.length) {
    throw new InputError(`pairedDifference: the two series differ in length (${a.length} vs ${b.length}); pair them by seed first`);
  }
  const diffs: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x !== null && y !== null && Number.isFinite(x) && Number.isFinite(y)) diffs.push(x - y);
  }
  return meanInterval(diffs);
}

/**
 * A summary as report text: `0.123 ± 0.045`, `0.123` when there is no half-width, '–' when there is
 * no summary.
 *
 * @example
 * formatInterval({ mean: 0.1234, half: 0.0451 }); // '0.123 ± 0.045'
 * formatInterval({ mean: 0.5, half: null }, 2); // '0.50'
 * formatInterval(null); // '–'
 */
export function formatInterval(s: { mean: number; half: number | null } | null, digits = 3): string {
  if (!Number.isInteger(digits) || digits < 0 || digits > 20) {
    throw new InputError(`formatInterval: digits must be an integer in 0..20, got ${digits}`);
  }
  if (s === null) return '–';
  const mean = s.mean.toFixed(digits);
  return s.half === null ? mean : `${mean} ± ${s.half.toFixed(digits)}`;
}

/**
 * The share of predictions equal to the most frequent one after trimming, lower-casing and
 * collapsing whitespace; 0 for no predictions. A value near 1 flags a collapsed model that answers
 * every item alike, whose exact-match score is then only the label prior.
 *
 * @example
 * constantAnswerRate(['Yes', ' yes ', 'No', 'YES']); // 0.75
 */
export function constantAnswerRate(predictions: readonly string[]): number {
  if (predictions.length === 0) return 0;
  const counts = new Map<string, number>();
  let best = 0;
  for (const p of predictions) {
    const key = p.trim().toLowerCase().replace(/\s+/g, ' ');
    const c = (counts.get(key) ?? 0) + 1;
    counts.set(key, c);
    if (c > best) best = c;
  }
  return best / predictions.length;
}

/** The scores of one seed that the validity gate reads (AP: average performance; V: V-score). */
export interface GateInput {
  /** The untuned base model. */
  base: { seenAp: number | null; heldOutV: number | null };
  /** Joint training on all tasks at once: the upper bound; null when it was not run. */
  multitask: { heldOutV: number | null } | null;
  /** Plain sequential fine-tuning with no continual method; null when it was not run. */
  none: { seenAp: number | null; heldOutV: number | null } | null;
  /**
   * Of the seen tasks, how many ask their training instances with at least two different sets of
   * key-part values ({@link keyVariation}); absent: not checked.
   */
  variation?: { varying: number; total: number } | null;
}

/** One check of the gate; `pass` is null when its inputs are missing. */
export interface GateCheck {
  name: string;
  pass: boolean | null;
  detail: string;
}

/** The gate's verdict: it passes only when every check passes. */
export interface GateResult {
  pass: boolean;
  checks: GateCheck[];
  reason: string;
}

const f3 = (x: number): string => x.toFixed(3);

function checkMargin(margin: number): void {
  if (!Number.isFinite(margin) || margin < 0) {
    throw new InputError(`validityGate: margin must be a finite number ≥ 0, got ${margin}`);
  }
}

/** The check's detail when an input is missing, or null when both are present. */
function missingDetail(run: string, runPresent: boolean, values: Array<[string, number | null]>, what: string): string | null {
  if (!runPresent) return `no ${run} run: ${what} cannot be checked`;
  const absent = values.filter(([, v]) => v === null || !Number.isFinite(v)).map(([label]) => label);
  return absent.length > 0 ? `${absent.join(' and ')} missing: ${what} cannot be checked` : null;
}

/** A check that the `none` run ends below the base model on one score (null inputs: unknown). */
function noneBelowBase(name: string, none: GateInput['none'], value: number | null, baseValue: number | null, what: string): GateCheck {
  const missing = missingDetail(
    'none',
    none !== null,
    [
      [`none ${what}`, value],
      [`base ${what}`, baseValue],
    ],
    name,
  );
  if (missing !== null) return { name, pass: null, detail: missing };
  const pass = value! < baseValue!;
  return { name, pass, detail: `none ${what} ${f3(value!)} ${pass ? '<' : '≥'} base ${f3(baseValue!)}` };
}

function gateChecks(input: GateInput, margin: number): GateCheck[] {
  const { base, multitask, none } = input;
  const checks: GateCheck[] = [];

  // Key variation: when every training instance of a task is asked with the same key values,
  // nothing in training rewards reading them, and held-out instruction following measures luck.
  if (input.variation !== undefined) {
    const v = input.variation;
    if (v === null || v.total === 0) checks.push({ name: 'key variation', pass: null, detail: 'no seen task to check key variation on' });
    else {
      const pass = v.varying === v.total;
      checks.push({ name: 'key variation', pass, detail: `${v.varying} of ${v.total} seen tasks vary their key-part values across training instances` });
    }
  }

  // Ceiling: if joint training does not beat the untuned model on held-out tasks, the benchmark's
  // held-out tasks are not learnable from its training tasks and no CIT method can be judged on them.
  {
    const missing = missingDetail(
      'multitask',
      multitask !== null,
      [
        ['multitask held-out V', multitask?.heldOutV ?? null],
        ['base held-out V', base.heldOutV],
      ],
      'the ceiling',
    );
    if (missing !== null) checks.push({ name: 'ceiling', pass: null, detail: missing });
    else {
      const mt = multitask!.heldOutV!;
      const b = base.heldOutV!;
      const pass = mt >= b - margin;
      const suffix = margin > 0 ? ` − margin ${f3(margin)}` : '';
      checks.push({ name: 'ceiling', pass, detail: `multitask held-out V ${f3(mt)} ${pass ? '≥' : '<'} base ${f3(b)}${suffix}` });
    }
  }

  // Forgetting: without measurable forgetting by the naive baseline there is nothing for a
  // continual method to prevent, so every method would look equally good.
  checks.push(noneBelowBase('forgetting', none, none?.seenAp ?? null, base.seenAp, 'seen AP'));
  // Half-listening: the KPIG paper's failure mode (the tuned model stops following unseen
  // instructions) must actually show up in the naive baseline for V-score gains to be meaningful.
  checks.push(noneBelowBase('half-listening', none, none?.heldOutV ?? null, base.heldOutV, 'held-out V'));
  return checks;
}

function summarise(checks: GateCheck[]): GateResult {
  const problems = checks
    .filter((c) => c.pass !== true)
    .map((c) => (c.pass === null ? c.detail : `${c.name} fails: ${c.detail}`));
  return { pass: problems.length === 0, checks, reason: problems.length === 0 ? 'all checks pass' : problems.join('; ') };
}

/**
 * The validity gate of a CIT benchmark run: (0) 'key variation', when `variation` is given — every
 * seen task varies its key-part values across training instances; (1) 'ceiling' — multitask held-out V ≥ base held-out
 * V − margin; (2) 'forgetting' — the `none` run's seen AP is below the base model's; (3)
 * 'half-listening' — the `none` run's held-out V is below the base model's. A check with a missing
 * input has `pass: null` and fails the gate, since an unverified benchmark is not a valid one.
 *
 * @example
 * validityGate({
 *   base: { seenAp: 0.65, heldOutV: 0.88 },
 *   multitask: { heldOutV: 0.912 },
 *   none: { seenAp: 0.41, heldOutV: 0.70 },
 * }); // { pass: true, reason: 'all checks pass', checks: [...] }
 */
export function validityGate(input: GateInput, options: { margin?: number } = {}): GateResult {
  const margin = options.margin ?? 0;
  checkMargin(margin);
  return summarise(gateChecks(input, margin));
}

/** The mean of the finite non-null values, or null when there is none. */
function meanOrNull(xs: Array<number | null | undefined>): number | null {
  const v = finiteValues(xs.map((x) => x ?? null));
  return v.length === 0 ? null : v.reduce((s, x) => s + x, 0) / v.length;
}

/**
 * The validity gate applied to the per-field means over seeds (each mean over the seeds where the
 * field is defined; a run absent from every seed stays absent). Each check's detail also says in how
 * many seeds it holds on its own, e.g. "(3/3 seeds)", since a gate passed on the means but by only
 * one seed is a weak result.
 *
 * @example
 * validityGateOverSeeds([seed0, seed1, seed2]).checks[0].detail;
 * // 'multitask held-out V 0.910 ≥ base 0.880 (3/3 seeds)'
 */
export function validityGateOverSeeds(perSeed: readonly GateInput[], options: { margin?: number } = {}): GateResult {
  if (perSeed.length === 0) throw new InputError('validityGateOverSeeds: no seeds given');
  const margin = options.margin ?? 0;
  checkMargin(margin);

  const anyMultitask = perSeed.some((s) => s.multitask !== null);
  const anyNone = perSeed.some((s) => s.none !== null);
  const means: GateInput = {
    base: {
      seenAp: meanOrNull(perSeed.map((s) => s.base.seenAp)),
      heldOutV: meanOrNull(perSeed.map((s) => s.base.heldOutV)),
    },
    multitask: anyMultitask ? { heldOutV: meanOrNull(perSeed.map((s) => s.multitask?.heldOutV)) } : null,
    none: anyNone
      ? {
          seenAp: meanOrNull(perSeed.map((s) => s.none?.seenAp)),
          heldOutV: meanOrNull(perSeed.map((s) => s.none?.heldOutV)),
        }
      : null,
  };

  const varied = perSeed.filter((s) => s.variation !== undefined && s.variation !== null);
  if (perSeed.some((s) => s.variation !== undefined))
    means.variation = varied.length ? { varying: varied.reduce((a, s) => a + s.variation!.varying, 0), total: varied.reduce((a, s) => a + s.variation!.total, 0) } : null;
  const perSeedChecks = perSeed.map((s) => gateChecks(s, margin));
  const checks = gateChecks(means, margin).map((c, i) => {
    const holds = perSeedChecks.filter((sc) => sc[i].pass === true).length;
    const unknown = perSeedChecks.filter((sc) => sc[i].pass === null).length;
    const extra = unknown > 0 ? `, ${unknown} without data` : '';
    return { ...c, detail: `${c.detail} (${holds}/${perSeed.length} seeds${extra})` };
  });
  return summarise(checks);
}

/** The fields of a task set that {@link keyVariation} reads. */
interface VariationInput {
  instructions: readonly { instruction_id: string; text: string; key_spans: readonly { start: number; end: number }[] }[];
  instances: readonly { task_id: string; split: string; instruction_id?: string | null }[];
}

/**
 * How many of `tasks` ask their training instances with at least two different tuples of key-part
 * values (the texts of their instructions' key spans, in order). Instances without an instruction
 * of their own count as asked with one fixed instruction.
 *
 * @example
 * keyVariation(suite.set, suite.stream.seen); // { varying: 5, total: 5 }
 */
export function keyVariation(set: VariationInput, tasks: readonly string[]): { varying: number; total: number } {
  const byId = new Map(set.instructions.map((i) => [i.instruction_id, i]));
  let varying = 0;
  for (const task of tasks) {
    const keys = new Set<string>();
    for (const x of set.instances) {
      if (x.task_id !== task || x.split !== 'train') continue;
      const ins = x.instruction_id != null ? byId.get(x.instruction_id) : undefined;
      keys.add(ins ? JSON.stringify([...ins.key_spans].sort((a, b) => a.start - b.start).map((s) => ins.text.slice(s.start, s.end))) : '(task instruction)');
    }
    if (keys.size >= 2) varying++;
  }
  return { varying, total: tasks.length };
}
