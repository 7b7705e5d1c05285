// t quantiles, t-intervals (hand-computed and by simulated coverage), paired differences, report
// formatting, the constant-answer detector and the CIT validity gate.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors/index.js';
import {
  constantAnswerRate,
  formatInterval,
  meanInterval,
  pairedDifference,
  tQuantile975,
  validityGate,
  validityGateOverSeeds,
  type GateInput,
} from '../src/eval/stats.js';
import { mulberry32, type Rng } from '../src/random/rng.js';

// Published two-sided 95% critical values of Student's t (standard tables, to 9–10 significant digits).
const T_TABLE: Array<[number, number]> = [
  [1, 12.7062047],
  [2, 4.302652729],
  [3, 3.182446305],
  [4, 2.776445105],
  [5, 2.570581836],
  [9, 2.262157163],
  [10, 2.228138852],
  [20, 2.085963447],
  [30, 2.042272456],
  [100, 1.983971519],
];

/** A Python with scipy, or null; looked up once, since spawning is slow. */
function findScipyPython(): string | null {
  for (const python of [process.env.KPIG_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p)) {
    const r = spawnSync(python, ['-c', 'import scipy.stats'], { stdio: 'ignore' });
    if (r.status === 0) return python;
  }
  return null;
}
const scipyPython = findScipyPython();

describe('tQuantile975', () => {
  it('matches published table values', () => {
    for (const [df, expected] of T_TABLE) {
      // The table is rounded to 9–10 significant digits, so 1e-6 is a fair tolerance (and the brief's).
      expect(Math.abs(tQuantile975(df) - expected), `df=${df}`).toBeLessThan(1e-6);
    }
  });

  it('matches the closed forms for df = 1, 2 and 4 to 1e-10', () => {
    const p = 0.975;
    expect(Math.abs(tQuantile975(1) - Math.tan(Math.PI * (p - 0.5)))).toBeLessThan(1e-10);
    expect(Math.abs(tQuantile975(2) - (2 * p - 1) / Math.sqrt(2 * p * (1 - p)))).toBeLessThan(1e-10);
    const alpha = 4 * p * (1 - p);
    const q = Math.cos(Math.acos(Math.sqrt(alpha)) / 3) / Math.sqrt(alpha);
    expect(Math.abs(tQuantile975(4) - 2 * Math.sqrt(q - 1))).toBeLessThan(1e-10);
  });

  it('decreases with df towards the normal quantile 1.959964', () => {
    let prev = Infinity;
    for (let df = 1; df <= 200; df++) {
      const t = tQuantile975(df);
      expect(t).toBeLessThan(prev);
      prev = t;
    }
    expect(Math.abs(tQuantile975(1_000_000) - 1.959963985)).toBeLessThan(1e-5);
  });

  it('rejects non-integer and non-positive df', () => {
    for (const df of [0, -1, 2.5, Number.NaN, Infinity]) expect(() => tQuantile975(df)).toThrow(InputError);
  });

  it('agrees with scipy.stats.t.ppf when scipy is available', (ctx) => {
    if (scipyPython === null) {
      console.log('stats.test: no python3 with scipy (set KPIG_PYTHON to one); skipping the scipy reference for t quantiles');
      ctx.skip();
      return;
    }
    const dfs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 25, 50, 120, 1000];
    const script = `import json, scipy.stats as s; print(json.dumps([float(s.t.ppf(0.975, d)) for d in ${JSON.stringify(dfs)}]))`;
    const r = spawnSync(scipyPython, ['-c', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const ref = JSON.parse(r.stdout) as number[];
    // 1e-7, ten times tighter than the stated 1e-6: Debian 12's scipy 1.10 is itself 2.4e-9 off the
    // tabled t(0.975, 6) = 2.446911851144969.
    dfs.forEach((df, i) => expect(Math.abs(tQuantile975(df) - ref[i]), `df=${df}`).toBeLessThan(1e-7));
  });
});

/** A standard normal draw by Box–Muller; 1 − u keeps the logarithm's argument in (0, 1]. */
function normal(rnd: Rng): number {
  const u1 = 1 - rnd();
  const u2 = rnd();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

describe('meanInterval', () => {
  it('computes the mean and t·s/√n on hand-computed cases', () => {
    // 1..5: mean 3, s² = 10/4, so s/√n = √(2.5/5) = √½.
    const a = meanInterval([1, 2, 3, 4, 5])!;
    expect(a.n).toBe(5);
    expect(a.mean).toBeCloseTo(3, 12);
    expect(a.half!).toBeCloseTo(2.776445105 * Math.SQRT1_2, 8);
    // 2, 4, 9: mean 5, squared deviations 9 + 1 + 16 = 26, s² = 13, s/√n = √(13/3).
    const b = meanInterval([2, 4, 9])!;
    expect(b.mean).toBeCloseTo(5, 12);
    expect(b.half!).toBeCloseTo(4.302652729 * Math.sqrt(13 / 3), 8);
  });

  it('skips null and non-finite values; null half for one value, null for none', () => {
    const r = meanInterval([null, 2, Number.NaN, 4, Infinity, 9, null])!;
    expect(r.n).toBe(3);
    expect(r.mean).toBeCloseTo(5, 12);
    expect(r.half!).toBeCloseTo(4.302652729 * Math.sqrt(13 / 3), 8);
    expect(meanInterval([null, 0.7])).toEqual({ mean: 0.7, half: null, n: 1 });
    expect(meanInterval([])).toBeNull();
    expect(meanInterval([null, Number.NaN])).toBeNull();
  });

  it('has ~95% coverage on simulated normal samples of n = 5 (and a z-interval does not)', () => {
    const rnd = mulberry32(20240611);
    const reps = 2000;
    const trueMean = 0.4;
    let covered = 0;
    let coveredByZ = 0;
    for (let r = 0; r < reps; r++) {
      const xs = Array.from({ length: 5 }, () => trueMean + 0.1 * normal(rnd));
      const s = meanInterval(xs)!;
      if (Math.abs(s.mean - trueMean) <= s.half!) covered++;
      // The same interval with the normal multiplier: it under-covers at n = 5 (about 88%), which is
      // why the t quantile matters and what this test would catch.
      if (Math.abs(s.mean - trueMean) <= (s.half! / tQuantile975(4)) * 1.959964) coveredByZ++;
    }
    const coverage = covered / reps;
    expect(coverage).toBeGreaterThanOrEqual(0.93);
    expect(coverage).toBeLessThanOrEqual(0.97);
    expect(coveredByZ / reps).toBeLessThan(0.92);
  });
});

describe('pairedDifference', () => {
  it('differences only the indices where both sides are finite', () => {
    const r = pairedDifference([0.9, 0.8, null, 0.7, Number.NaN], [0.7, 0.75, 0.6, null, 0.5])!;
    expect(r.n).toBe(2);
    expect(r.mean).toBeCloseTo(0.125, 12);
    // Differences 0.2 and 0.05: s = 0.15/√2, s/√n = 0.075.
    expect(r.half!).toBeCloseTo(12.7062047 * 0.075, 6);
  });

  it('is the interval of the differences, not of either side', () => {
    // Large shared seed effects, constant difference: the paired interval has zero width.
    const r = pairedDifference([0.5, 0.9, 0.2], [0.4, 0.8, 0.1])!;
    expect(r.mean).toBeCloseTo(0.1, 12);
    expect(r.half!).toBeLessThan(1e-12);
  });

  it('returns null when no index is paired, and throws on a length mismatch', () => {
    expect(pairedDifference([null, 1], [1, null])).toBeNull();
    expect(pairedDifference([], [])).toBeNull();
    expect(() => pairedDifference([1, 2], [1])).toThrow(InputError);
  });
});

describe('formatInterval', () => {
  it('formats with and without a half-width, and null as a dash', () => {
    expect(formatInterval({ mean: 0.1234, half: 0.0451 })).toBe('0.123 ± 0.045');
    expect(formatInterval({ mean: 0.1234, half: null })).toBe('0.123');
    expect(formatInterval({ mean: 0.5, half: 0.01234 }, 2)).toBe('0.50 ± 0.01');
    expect(formatInterval(null)).toBe('–');
    expect(() => formatInterval({ mean: 1, half: null }, -1)).toThrow(InputError);
  });
});

describe('constantAnswerRate', () => {
  it('is the share of the most frequent normalised prediction', () => {
    expect(constantAnswerRate(['Yes', ' yes ', 'No', 'YES'])).toBe(0.75);
    expect(constantAnswerRate(['not  entailment', 'Not entailment\n', 'entailment'])).toBeCloseTo(2 / 3, 12);
    expect(constantAnswerRate(['a', 'b', 'c', 'd'])).toBe(0.25);
    expect(constantAnswerRate(['same', 'same'])).toBe(1);
    expect(constantAnswerRate([])).toBe(0);
  });
});

const GOOD: GateInput = {
  base: { seenAp: 0.65, heldOutV: 0.88 },
  multitask: { heldOutV: 0.912 },
  none: { seenAp: 0.41, heldOutV: 0.7 },
};

describe('validityGate', () => {
  it('passes when all three checks hold, with the numbers in the details', () => {
    const g = validityGate(GOOD);
    expect(g.pass).toBe(true);
    expect(g.reason).toBe('all checks pass');
    expect(g.checks.map((c) => [c.name, c.pass])).toEqual([
      ['ceiling', true],
      ['forgetting', true],
      ['half-listening', true],
    ]);
    expect(g.checks[0].detail).toBe('multitask held-out V 0.912 ≥ base 0.880');
    expect(g.checks[1].detail).toBe('none seen AP 0.410 < base 0.650');
    expect(g.checks[2].detail).toBe('none held-out V 0.700 < base 0.880');
  });

  it('fails each check on its own condition', () => {
    const ceiling = validityGate({ ...GOOD, multitask: { heldOutV: 0.85 } });
    expect(ceiling.pass).toBe(false);
    expect(ceiling.checks.map((c) => c.pass)).toEqual([false, true, true]);
    expect(ceiling.reason).toBe('ceiling fails: multitask held-out V 0.850 < base 0.880');

    const forgetting = validityGate({ ...GOOD, none: { seenAp: 0.65, heldOutV: 0.7 } }); // equal is not below
    expect(forgetting.checks.map((c) => c.pass)).toEqual([true, false, true]);
    expect(forgetting.reason).toBe('forgetting fails: none seen AP 0.650 ≥ base 0.650');

    const both = validityGate({ ...GOOD, none: { seenAp: 0.7, heldOutV: 0.9 } });
    expect(both.pass).toBe(false);
    expect(both.reason).toBe('forgetting fails: none seen AP 0.700 ≥ base 0.650; half-listening fails: none held-out V 0.900 ≥ base 0.880');
  });

  it('lets the ceiling pass within the margin', () => {
    const input = { ...GOOD, multitask: { heldOutV: 0.87 } };
    expect(validityGate(input).pass).toBe(false);
    const g = validityGate(input, { margin: 0.02 });
    expect(g.pass).toBe(true);
    expect(g.checks[0].detail).toBe('multitask held-out V 0.870 ≥ base 0.880 − margin 0.020');
    expect(() => validityGate(GOOD, { margin: -0.1 })).toThrow(InputError);
    expect(() => validityGate(GOOD, { margin: Number.NaN })).toThrow(InputError);
  });

  it('fails with pass: null checks when a run or a value is missing', () => {
    const noMt = validityGate({ ...GOOD, multitask: null });
    expect(noMt.pass).toBe(false);
    expect(noMt.checks[0]).toEqual({ name: 'ceiling', pass: null, detail: 'no multitask run: the ceiling cannot be checked' });
    expect(noMt.reason).toBe('no multitask run: the ceiling cannot be checked');

    const noNone = validityGate({ ...GOOD, none: null });
    expect(noNone.checks.map((c) => c.pass)).toEqual([true, null, null]);
    expect(noNone.reason).toBe('no none run: forgetting cannot be checked; no none run: half-listening cannot be checked');

    const nullValue = validityGate({ ...GOOD, base: { seenAp: null, heldOutV: 0.88 } });
    expect(nullValue.pass).toBe(false);
    expect(nullValue.checks.map((c) => c.pass)).toEqual([true, null, true]);
    expect(nullValue.reason).toBe('base seen AP missing: forgetting cannot be checked');
  });
});

describe('validityGateOverSeeds', () => {
  const seeds: GateInput[] = [
    { base: { seenAp: 0.6, heldOutV: 0.88 }, multitask: { heldOutV: 0.93 }, none: { seenAp: 0.4, heldOutV: 0.7 } },
    { base: { seenAp: 0.7, heldOutV: 0.86 }, multitask: { heldOutV: 0.85 }, none: { seenAp: 0.5, heldOutV: 0.75 } },
    { base: { seenAp: 0.65, heldOutV: 0.9 }, multitask: { heldOutV: 0.95 }, none: { seenAp: null, heldOutV: 0.8 } },
  ];

  it('gates the means and counts the seeds where each check holds', () => {
    const g = validityGateOverSeeds(seeds);
    expect(g.pass).toBe(true);
    expect(g.reason).toBe('all checks pass');
    // Means: base V 0.88, multitask V 0.91; seed 2 fails the ceiling on its own.
    expect(g.checks[0].detail).toBe('multitask held-out V 0.910 ≥ base 0.880 (2/3 seeds)');
    // none seen AP is the mean of the two defined values (0.45); seed 3 cannot be checked.
    expect(g.checks[1].detail).toBe('none seen AP 0.450 < base 0.650 (2/3 seeds, 1 without data)');
    expect(g.checks[2].detail).toBe('none held-out V 0.750 < base 0.880 (3/3 seeds)');
  });

  it('fails on the means even when some seeds pass, and treats an everywhere-absent run as missing', () => {
    const bad = seeds.map((s, i) => (i === 0 ? s : { ...s, multitask: { heldOutV: 0.7 } }));
    const g = validityGateOverSeeds(bad);
    expect(g.pass).toBe(false);
    expect(g.checks[0].pass).toBe(false);
    expect(g.checks[0].detail).toBe('multitask held-out V 0.777 < base 0.880 (1/3 seeds)');

    const noMt = validityGateOverSeeds(seeds.map((s) => ({ ...s, multitask: null })));
    expect(noMt.checks[0].pass).toBeNull();
    expect(noMt.reason).toBe('no multitask run: the ceiling cannot be checked (0/3 seeds, 3 without data)');

    // A run present in one seed only: its mean is that seed's value.
    const oneMt = validityGateOverSeeds(seeds.map((s, i) => ({ ...s, multitask: i === 2 ? s.multitask : null })));
    expect(oneMt.checks[0].detail).toBe('multitask held-out V 0.950 ≥ base 0.880 (1/3 seeds, 2 without data)');
    expect(() => validityGateOverSeeds([])).toThrow(InputError);
  });
});
