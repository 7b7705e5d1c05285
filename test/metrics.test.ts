// Exact match, validity, V-score, P-score and the score-matrix metrics on hand-computed cases.
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors/index.js';
import { matrixMetrics } from '../src/eval/matrix.js';
import { exactMatch, isValidOutput, normalizeAnswer, normalizeLabel, pScore, vScore, type ScoredOutput } from '../src/eval/metrics.js';

describe('exact match (SuperNI normalisation)', () => {
  it('lower-cases, drops ASCII punctuation, collapses whitespace, keeps articles', () => {
    expect(normalizeAnswer('  The  Answer: "Yes"! ')).toBe('the answer yes');
    expect(normalizeAnswer('a\u00a0b\u3000c')).toBe('a b c'); // Python str.split() whitespace
    expect(exactMatch('Yes.', ['yes'])).toBe(1);
    expect(exactMatch('an apple', ['apple'])).toBe(0);
    expect(exactMatch('not_entailment', ['not entailment'])).toBe(0); // "_" is deleted, not a space
    expect(exactMatch('Not-Entailment', ['notentailment'])).toBe(1);
  });

  it('multi-reference, empty prediction and unicode', () => {
    expect(exactMatch('B', ['a', 'b'])).toBe(1);
    expect(exactMatch('', ['a'])).toBe(0);
    expect(exactMatch('', ['...'])).toBe(1); // both normalise to ''
    expect(exactMatch('CAFÉ', ['café'])).toBe(1);
    expect(exactMatch('«oui»', ['oui'])).toBe(0); // « » are not in string.punctuation
    expect(() => exactMatch('x', [])).toThrow(InputError);
  });
});

describe('validity against a label set', () => {
  it('ignores case, surrounding punctuation and extra spaces', () => {
    expect(normalizeLabel(' "Not  Entailment." ')).toBe('not entailment');
    expect(isValidOutput('POSITIVE!', ['Positive', 'Negative'])).toBe(true);
    expect(isValidOutput('"not   entailment"', ['Not entailment', 'Entailment'])).toBe(true);
    expect(isValidOutput('(B)', ['A', 'B', 'C'])).toBe(true);
  });

  it('rejects outputs outside the set', () => {
    expect(isValidOutput('positive review', ['positive', 'negative'])).toBe(false);
    expect(isValidOutput('Entailment', ['Not entailment'])).toBe(false);
    expect(isValidOutput('', ['yes', 'no'])).toBe(false);
  });

  it('labels that are punctuation, and unicode forms', () => {
    expect(isValidOutput('-', ['+', '-'])).toBe(true);
    expect(isValidOutput('', ['+', '-'])).toBe(false);
    expect(isValidOutput('cafe\u0301', ['Café'])).toBe(true); // NFD vs NFC
    expect(isValidOutput('Ja.', ['ja', 'nein'])).toBe(true);
    expect(isValidOutput('「はい」', ['はい', 'いいえ'])).toBe(true);
    expect(() => isValidOutput('x', [])).toThrow(InputError);
  });
});

const row = (task_id: string, valid: boolean | null, rouge_l: number): ScoredOutput => ({ task_id, valid, rouge_l });

describe('V-score', () => {
  it('per task share of valid outputs, averaged over tasks with a label set', () => {
    const rows = [row('a', true, 0), row('a', false, 0), row('a', true, 0), row('a', true, 0), row('b', false, 0), row('b', false, 0), row('c', null, 0), row('c', null, 0)];
    const v = vScore(rows);
    expect(v.perTask).toEqual({ a: 0.75, b: 0, c: null });
    expect(v.mean).toBeCloseTo(0.375, 12);
    expect(v.counted).toBe(2);
    expect(vScore(rows, { tasks: ['a', 'z'] }).perTask).toEqual({ a: 0.75, z: null });
    expect(vScore([]).mean).toBeNull();
  });
});

describe('P-score', () => {
  const rows = [row('a', true, 1), row('a', false, 0.5), row('a', true, 0.5), row('b', null, 0.2), row('b', null, 0.4), row('c', false, 0.9)];
  it('held-out ROUGE-L over valid outputs, macro-averaged', () => {
    const p = pScore(rows);
    expect(p.perTask.a).toBeCloseTo(0.75, 12);
    expect(p.perTask.b).toBeCloseTo(0.3, 12);
    expect(p.perTask.c).toBeNull(); // no valid output
    expect(p.mean).toBeCloseTo(0.525, 12);
    expect(p.retention).toBeNull();
    expect(pScore(rows, { tasks: ['b'] }).mean).toBeCloseTo(0.3, 12);
  });

  it('retention ratio against the base model over the tasks both have', () => {
    const base = [row('a', true, 0.5), row('b', null, 0.2), row('c', true, 0.4)];
    // model over {a, b}: 0.525; base over {a, b}: 0.35.
    expect(pScore(rows, { base }).retention).toBeCloseTo(1.5, 12);
    expect(pScore(rows, { base: [row('a', true, 0)] }).retention).toBeNull();
  });
});

describe('matrix metrics', () => {
  // rows: base, stage 1, 2, 3; columns: seen tasks 1, 2, 3.
  const a = [
    [0.1, 0.2, 0.3],
    [0.8, 0.25, 0.35],
    [0.95, 0.9, 0.4],
    [0.5, 0.7, 0.85],
  ];

  it('AP, BWT, FWT (both), forgetting', () => {
    const m = matrixMetrics(a);
    expect(m.stages).toBe(3);
    expect(m.ap).toBeCloseTo((0.5 + 0.7 + 0.85) / 3, 12);
    expect(m.bwt).toBeCloseTo(((0.5 - 0.8) + (0.7 - 0.9)) / 2, 12); // -0.25
    expect(m.fwtRaw).toBeCloseTo((0.25 + 0.4) / 2, 12); // 0.325
    expect(m.fwtVsBase).toBeCloseTo(((0.25 - 0.2) + (0.4 - 0.3)) / 2, 12); // 0.075
    // task 1 peaked at 0.95 after stage 2, task 2 at 0.9: (0.45 + 0.2) / 2.
    expect(m.forgetting).toBeCloseTo(0.325, 12);
    expect(m.apCurve.map((x) => Number(x!.toFixed(10)))).toEqual([0.8, 0.925, Number(((0.5 + 0.7 + 0.85) / 3).toFixed(10))]);
  });

  it("InsCL's relative gain, against the diagonal or a given upper bound", () => {
    const m = matrixMetrics(a);
    expect(m.upperBound).toBe('diagonal');
    expect(m.relativeGainCurve[0]).toBeCloseTo(100, 10);
    expect(m.relativeGainCurve[1]).toBeCloseTo(50 * (0.95 / 0.8 + 1), 10); // 109.375
    expect(m.relativeGain).toBeCloseTo((100 / 3) * (0.5 / 0.8 + 0.7 / 0.9 + 1), 10);
    const u = matrixMetrics(a, { upper: [1, 1, 1] });
    expect(u.upperBound).toBe('given');
    expect(u.relativeGain).toBeCloseTo((100 / 3) * (0.5 + 0.7 + 0.85), 10);
  });

  it('base row given apart gives the same result', () => {
    expect(matrixMetrics(a.slice(1), { base: a[0] })).toEqual(matrixMetrics(a));
  });

  it('T = 1 and unmeasured entries give null, not a number', () => {
    const one = matrixMetrics([[0.2], [0.6]]);
    expect(one.ap).toBeCloseTo(0.6, 12);
    expect([one.bwt, one.fwtRaw, one.fwtVsBase, one.forgetting]).toEqual([null, null, null, null]);
    const gaps = matrixMetrics([[null, null], [0.8, 0.3], [0.6, 0.9]]);
    expect(gaps.fwtVsBase).toBeNull();
    expect(gaps.fwtRaw).toBeCloseTo(0.3, 12);
    expect(gaps.bwt).toBeCloseTo(-0.2, 12);
  });

  it('rejects a matrix of the wrong shape or with NaN', () => {
    expect(() => matrixMetrics([[0.1, 0.2], [0.3, 0.4], [0.5]])).toThrow(/row 2 has 1 entries/);
    expect(() => matrixMetrics([[0.1]])).toThrow(InputError);
    expect(() => matrixMetrics([[0.1], [NaN]])).toThrow(/not a finite number/);
  });
});
