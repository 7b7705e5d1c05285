// The KPIG options against their definitions: stratified lowest-score replay (checked against a
// plain reference), τ floor and minimum share in the allocation, varied placeholders,
// counterfactual key-part values and their per-task pools.
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors/index.js';
import { deriveSeed, mulberry32 } from '../src/random/rng.js';
import { kpigAllocation, stratifiedLowest } from '../src/replay/allocate.js';
import { PLACEHOLDER_POOL, counterfactualInstruction, keyValuePools, pickPlaceholder, validateSpans } from '../src/scoring/mask.js';

/**
 * The stratified choice written out plainly: classes in first-seen order, largest-remainder quotas
 * (no caps needed, since n < N keeps every exact share below its class size), then the floor of 1
 * taken from the class with the largest surplus. The share is computed as n·s/N, the same
 * floating-point expression the implementation's rounding uses, so remainder ties agree.
 */
function referenceStratified(scores: number[], classes: string[], n: number): number[] {
  const N = scores.length;
  const key = (i: number) => [scores[i], i] as const;
  const less = (a: number, b: number) => key(a)[0] < key(b)[0] || (key(a)[0] === key(b)[0] && a < b);
  const sortIdx = (xs: number[]) => {
    // Insertion sort, deliberately not Array.prototype.sort with the implementation's comparator.
    const out: number[] = [];
    for (const x of xs) {
      let j = out.length;
      while (j > 0 && less(x, out[j - 1])) j--;
      out.splice(j, 0, x);
    }
    return out;
  };
  const all = scores.map((_, i) => i);
  if (n >= N) return sortIdx(all);
  const names: string[] = [];
  for (const c of classes) if (!names.includes(c)) names.push(c);
  const size = names.map((c) => classes.filter((x) => x === c).length);
  const exact = size.map((s) => (n * s) / N);
  const q = exact.map(Math.floor);
  let left = n - q.reduce((a, b) => a + b, 0);
  const byRemainder = names.map((_, c) => c).sort((a, b) => exact[b] - q[b] - (exact[a] - q[a]) || a - b);
  for (const c of byRemainder) if (left > 0) (q[c]++, left--);
  if (n >= names.length)
    for (let c = 0; c < names.length; c++)
      if (q[c] === 0) {
        let best = -1;
        for (let d = 0; d < names.length; d++) if (q[d] >= 2 && (best === -1 || q[d] - exact[d] > q[best] - exact[best])) best = d;
        q[best]--;
        q[c] = 1;
      }
  const picked: number[] = [];
  names.forEach((name, c) => picked.push(...sortIdx(all.filter((i) => classes[i] === name)).slice(0, q[c])));
  return sortIdx(picked);
}

function randomCase(rnd: () => number) {
  const N = 1 + Math.floor(rnd() * 40);
  const nClasses = 1 + Math.floor(rnd() * 5);
  // Skewed class probabilities, so some classes are tiny and the floor matters.
  const p = Array.from({ length: nClasses }, (_, c) => (c === 0 ? 6 : rnd()));
  const ps = p.reduce((a, b) => a + b, 0);
  const classes = Array.from({ length: N }, () => {
    let u = rnd() * ps, c = 0;
    while (c < nClasses - 1 && u >= p[c]) u -= p[c++];
    return `label${c}`;
  });
  // Coarse scores, so ties occur.
  const scores = Array.from({ length: N }, () => Math.round(rnd() * 8) / 4 - 1);
  const n = Math.floor(rnd() * (N + 3));
  return { scores, classes, n };
}

describe('stratified lowest-score selection', () => {
  it('matches the reference and its invariants over many random cases', () => {
    const rnd = mulberry32(deriveSeed(0, 'stratified'));
    let floorUsed = 0;
    for (let k = 0; k < 600; k++) {
      const { scores, classes, n } = randomCase(rnd);
      const got = stratifiedLowest(scores, classes, n);
      expect(got).toEqual(referenceStratified(scores, classes, n));
      const N = scores.length;
      expect(got.length).toBe(Math.min(n, N));
      expect(new Set(got).size).toBe(got.length);
      // Sorted by (score, index).
      for (let i = 1; i < got.length; i++) expect(scores[got[i - 1]] < scores[got[i]] || (scores[got[i - 1]] === scores[got[i]] && got[i - 1] < got[i])).toBe(true);
      const names = [...new Set(classes)];
      const chosen = new Set(got);
      const count = names.map((c) => got.filter((i) => classes[i] === c).length);
      if (n >= names.length) count.forEach((x) => expect(x).toBeGreaterThanOrEqual(1));
      if (names.length === 2 && n >= 2) expect(new Set(got.map((i) => classes[i])).size).toBeGreaterThanOrEqual(2);
      if (n < N) {
        const exact = names.map((c) => (n * classes.filter((x) => x === c).length) / N);
        // The floor moves at most one unit per class whose exact share is below 1, and only to
        // such a class, so: never a unit or more above the exact share, and below it by under
        // 1 + (units the floor may move).
        const movable = n >= names.length ? exact.filter((e) => e < 1).length : 0;
        count.forEach((x, c) => {
          expect(x).toBeLessThan(exact[c] + 1);
          expect(x).toBeGreaterThan(exact[c] - 1 - movable);
        });
        if (movable > 0 && count.some((x, c) => x === 1 && exact[c] < 0.5)) floorUsed++;
      }
      // Within a class, every chosen item is at least as low as every item left out.
      for (const c of names) {
        const inC = scores.map((_, i) => i).filter((i) => classes[i] === c);
        const taken = inC.filter((i) => chosen.has(i)), left = inC.filter((i) => !chosen.has(i));
        for (const a of taken) for (const b of left) expect(scores[a] < scores[b] || (scores[a] === scores[b] && a < b)).toBe(true);
      }
    }
    // The random cases must exercise the floor, or the checks above prove little about it.
    expect(floorUsed).toBeGreaterThan(30);
  });

  it('keeps both labels of a lopsided buffer even when the rare one scores high', () => {
    const scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 5];
    const classes = ['yes', 'yes', 'yes', 'yes', 'yes', 'yes', 'yes', 'yes', 'yes', 'no'];
    expect(stratifiedLowest(scores, classes, 2)).toEqual([0, 9]);
    expect(stratifiedLowest(scores, classes, 5)).toEqual([0, 1, 2, 3, 9]);
    // One slot cannot hold two classes: the proportional quota goes to the common label.
    expect(stratifiedLowest(scores, classes, 1)).toEqual([0]);
    expect(stratifiedLowest(scores, classes, 0)).toEqual([]);
    expect(stratifiedLowest([3, 1, 2], ['a', 'b', 'a'], 7)).toEqual([1, 2, 0]);
  });

  it('splits proportionally when no class needs the floor', () => {
    // 60/40 of 10 items, choose 5: exact 3 and 2.
    const classes = ['a', 'b', 'a', 'b', 'a', 'b', 'a', 'b', 'a', 'a'];
    const scores = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
    const got = stratifiedLowest(scores, classes, 5);
    expect(got.filter((i) => classes[i] === 'a')).toEqual([9, 8, 6]);
    expect(got.filter((i) => classes[i] === 'b')).toEqual([7, 5]);
  });

  it('rejects mismatched lengths, a bad n and non-finite scores', () => {
    expect(() => stratifiedLowest([1, 2], ['a'], 1)).toThrow(InputError);
    expect(() => stratifiedLowest([1, 2], ['a'], 1)).toThrow(/2 items.*1/);
    expect(() => stratifiedLowest([1], ['a'], -1)).toThrow(InputError);
    expect(() => stratifiedLowest([1], ['a'], 1.5)).toThrow(/non-negative integer/);
    expect(() => stratifiedLowest([1, NaN], ['a', 'b'], 1)).toThrow(/score 1/);
    expect(() => stratifiedLowest([1, Infinity], ['a', 'b'], 1)).toThrow(InputError);
  });
});

describe('KPIG allocation options', () => {
  it('keeps a near-tie near-even with a τ floor, and is unchanged without one', () => {
    // std([0, 0.01]) = 0.005, so the gap is 2τ: shares 1/(1+e^−2) = 0.881 and 0.119.
    const plain = kpigAllocation([0, 0.01], 100);
    expect(plain.tau).toBeCloseTo(0.005, 12);
    expect(plain.counts).toEqual([88, 12]);
    const floored = kpigAllocation([0, 0.01], 100, { tauFloor: 1 });
    expect(floored.tau).toBe(1);
    expect(floored.counts).toEqual([50, 50]); // 100/(1+e^−0.01) = 50.25
    // The floor only ever raises τ: a larger fixed τ wins.
    expect(kpigAllocation([0, 0.01], 100, { tau: 3, tauFloor: 1 }).tau).toBe(3);
    expect(kpigAllocation([0, 1], 100, { tauFloor: 0.1 }).tau).toBe(0.5);
  });

  it('gives every task at least ⌊minShare·budget⌋ and follows (1 − K·m)·softmax + m exactly', () => {
    expect(kpigAllocation([0, 5], 100, { tau: 0.1, minShare: 0.2 }).counts).toEqual([80, 20]);
    expect(kpigAllocation([0, 5], 100, { tau: 0.1 }).counts).toEqual([100, 0]);
    const rnd = mulberry32(deriveSeed(0, 'min-share'));
    for (let k = 0; k < 400; k++) {
      const K = 1 + Math.floor(rnd() * 8);
      const igs = Array.from({ length: K }, () => rnd() * 3 - 1);
      const budget = Math.floor(rnd() * 500);
      const m = (rnd() * 1) / K;
      const { counts, weights, tau } = kpigAllocation(igs, budget, { minShare: m });
      expect(counts.reduce((a, b) => a + b, 0)).toBe(budget);
      counts.forEach((c) => expect(c).toBeGreaterThanOrEqual(Math.floor(m * budget)));
      const e = igs.map((g) => (tau === 0 ? 1 : Math.exp(-g / tau)));
      const es = e.reduce((a, b) => a + b, 0);
      e.forEach((x, i) => {
        const w = (1 - K * m) * (x / es) + m;
        expect(weights[i]).toBeCloseTo(w, 10);
        expect(Math.abs(counts[i] - budget * w)).toBeLessThan(1 + 1e-9);
      });
    }
  });

  it('accepts K·minShare = 1 as an even split and rejects bad options', () => {
    expect(kpigAllocation([0, 1, 2], 30, { minShare: 1 / 3 }).counts).toEqual([10, 10, 10]);
    expect(() => kpigAllocation([0, 1, 2], 30, { minShare: 0.34 })).toThrow(InputError);
    expect(() => kpigAllocation([0, 1, 2], 30, { minShare: 0.34 })).toThrow(/exceeds/);
    expect(() => kpigAllocation([0, 1], 30, { minShare: -0.1 })).toThrow(/minShare/);
    expect(() => kpigAllocation([0, 1], 30, { minShare: NaN })).toThrow(InputError);
    expect(() => kpigAllocation([0, 1], 30, { tauFloor: -1 })).toThrow(/tauFloor/);
    expect(() => kpigAllocation([0, 1], 30, { tauFloor: Infinity })).toThrow(InputError);
  });
});

describe('placeholders', () => {
  it('picks the same placeholder for the same seed and labels, and varies over seeds', () => {
    expect(PLACEHOLDER_POOL.length).toBeGreaterThanOrEqual(10);
    expect(new Set(PLACEHOLDER_POOL).size).toBe(PLACEHOLDER_POOL.length);
    expect(PLACEHOLDER_POOL).toContain('[MASK]');
    expect(pickPlaceholder(7, 'task1', 3)).toBe(pickPlaceholder(7, 'task1', 3));
    const seen = new Map<string, number>();
    for (let s = 0; s < 600; s++) {
      const p = pickPlaceholder(s, 'task1', 3);
      expect(PLACEHOLDER_POOL).toContain(p);
      seen.set(p, (seen.get(p) ?? 0) + 1);
    }
    // 600 draws over 12 values: each is expected 50 times; every one appearing and none
    // dominating rules out a constant or badly skewed pick.
    expect(seen.size).toBe(PLACEHOLDER_POOL.length);
    for (const c of seen.values()) expect(c).toBeLessThan(100);
    const overLabels = new Set(Array.from({ length: 100 }, (_, i) => pickPlaceholder(0, 'task1', i)));
    expect(overLabels.size).toBeGreaterThan(5);
  });
});

describe('counterfactual instructions', () => {
  const text = 'Answer "yes" or "no", then rate it from 1 to 5.';
  const spans = [
    { start: text.indexOf('no'), end: text.indexOf('no') + 2 },
    { start: text.indexOf('yes'), end: text.indexOf('yes') + 3 },
    { start: text.indexOf('5'), end: text.indexOf('5') + 1 },
  ];

  it('replaces every span with a different valid value and keeps the rest verbatim', () => {
    const labels = ['yes', 'no', 'maybe', 'true', 'false'];
    const numbers = ['3', '5', '10'];
    const sorted = validateSpans(text, spans);
    const seenOut = new Set<string>();
    for (let s = 0; s < 200; s++) {
      const calls: Array<[number, string]> = [];
      const out = counterfactualInstruction(text, spans, (i, t) => (calls.push([i, t]), i < 2 ? labels : numbers), mulberry32(deriveSeed(s, 'cf')));
      expect(out).not.toBeNull();
      // The callback sees the spans in start order with their own text.
      expect(calls).toEqual([[0, 'yes'], [1, 'no'], [2, '5']]);
      const m = /^Answer "([^"]*)" or "([^"]*)", then rate it from 1 to (.*)\.$/.exec(out!);
      expect(m).not.toBeNull();
      const [, a, b, c] = m!;
      expect(labels).toContain(a);
      expect(labels).toContain(b);
      expect(numbers).toContain(c);
      expect(a).not.toBe('yes');
      expect(b).not.toBe('no');
      expect(c).not.toBe('5');
      expect(a).not.toBe(b);
      seenOut.add(out!);
      expect(sorted.length).toBe(3);
    }
    // Drawn, not fixed: several different counterfactuals over the seeds.
    expect(seenOut.size).toBeGreaterThan(5);
  });

  it('finds distinct values where a greedy pick would collide', () => {
    // Span 0 may take 'x' or 'y'; span 1 only 'x'. Distinct is possible only as ('y', 'x').
    const t = 'ab';
    for (let s = 0; s < 50; s++) {
      const out = counterfactualInstruction(t, [{ start: 0, end: 1 }, { start: 1, end: 2 }], (i) => (i === 0 ? ['x', 'y'] : ['x']), mulberry32(s));
      expect(out).toBe('yx');
    }
    // When distinct values are impossible, a shared one is still used.
    expect(counterfactualInstruction(t, [{ start: 0, end: 1 }, { start: 1, end: 2 }], () => ['z'], mulberry32(1))).toBe('zz');
  });

  it('returns null when some span has no alternative, and rejects bad spans', () => {
    expect(counterfactualInstruction(text, spans, (i) => (i === 2 ? ['5'] : ['maybe']), mulberry32(1))).toBeNull();
    expect(counterfactualInstruction(text, spans, (i) => (i === 1 ? [] : ['maybe', '7']), mulberry32(1))).toBeNull();
    expect(counterfactualInstruction('plain', [], () => [], mulberry32(1))).toBe('plain');
    expect(() => counterfactualInstruction('ab', [{ start: 0, end: 5 }], () => ['x'], mulberry32(1))).toThrow(InputError);
  });
});

describe('key value pools', () => {
  const instructions = [
    { task_id: 't1', text: 'Say pos or neg.', key_spans: [{ start: 4, end: 7, kind: 'label' }, { start: 11, end: 14, kind: 'label' }] },
    { task_id: 't1', text: 'Say neg or mixed.', key_spans: [{ start: 11, end: 16, kind: 'label' }, { start: 4, end: 7, kind: 'label' }] },
    { task_id: 't2', text: 'Reply true.', key_spans: [{ start: 6, end: 10, kind: 'label' }, { start: 0, end: 5 }] },
    { task_id: 't3', text: 'Answer in 3 words.', key_spans: [{ start: 10, end: 11, kind: 'number' }] },
    { task_id: 't3', text: 'Answer in 7 words.', key_spans: [{ start: 10, end: 11, kind: 'number' }] },
  ];

  it('gives the distinct span texts per task and kind, first seen first', () => {
    const pools = keyValuePools(instructions);
    expect(pools('t1', 'label')).toEqual(['pos', 'neg', 'mixed']);
    expect(pools('t3', 'number')).toEqual(['3', '7']);
    // A fresh array each call.
    pools('t1', 'label').push('junk');
    expect(pools('t1', 'label')).toEqual(['pos', 'neg', 'mixed']);
  });

  it('falls back to the kind over all tasks when a task has fewer than 2 values', () => {
    const pools = keyValuePools(instructions);
    expect(pools('t2', 'label')).toEqual(['pos', 'neg', 'mixed', 'true']);
    // Kind undefined is 'other'; t2's single 'Reply' falls back to all 'other' spans (just itself).
    expect(pools('t2', undefined)).toEqual(['Reply']);
    expect(pools('t2', 'other')).toEqual(['Reply']);
    expect(pools('t1', 'number')).toEqual(['3', '7']);
    expect(pools('nope', 'label')).toEqual(['pos', 'neg', 'mixed', 'true']);
    expect(pools('t1', 'unknown-kind')).toEqual([]);
  });

  it('feeds counterfactualInstruction and rejects a bad span with its instruction named', () => {
    const pools = keyValuePools(instructions);
    const out = counterfactualInstruction(instructions[0].text, instructions[0].key_spans, (_, t) => pools('t1', 'label').filter((v) => v !== t), mulberry32(3));
    expect(out).toMatch(/^Say (pos|neg|mixed) or (pos|neg|mixed)\.$/);
    expect(out).not.toBe('Say pos or neg.');
    expect(() => keyValuePools([{ task_id: 'tx', text: 'ab', key_spans: [{ start: 1, end: 9 }] }])).toThrow(/instruction 0 \(task tx\)/);
  });
});
