/**
 * ROUGE-L as SuperNI's official evaluation computes it: Google's `rouge-score` with
 * `use_stemmer=True` (sentence-level LCS F-measure), maximised over the reference outputs.
 *
 * Tokenisation (rouge-score's default tokenizer): lower-case; every run of characters outside
 * [a-z0-9] becomes one space (so accented letters, CJK and punctuation all separate words and
 * vanish); split on whitespace; Porter-stem tokens longer than 3 characters; drop empty tokens.
 */
import { InputError } from '../errors/index.js';
import { porterStem } from './porter.js';

/** Precision, recall and F-measure of one prediction against one reference. */
export interface RougeScore {
  precision: number;
  recall: number;
  fmeasure: number;
}

/**
 * The tokens rouge-score compares: see the file comment for the rules.
 *
 * @example
 * rougeTokenize('The cats were running!'); // ['the', 'cat', 'were', 'run']
 * rougeTokenize('Café au lait', { stem: false }); // ['caf', 'au', 'lait']
 */
export function rougeTokenize(text: string, options: { stem?: boolean } = {}): string[] {
  const stem = options.stem ?? true;
  const out: string[] = [];
  for (const token of text.toLowerCase().split(/[^a-z0-9]+/)) {
    if (token.length === 0) continue;
    out.push(stem && token.length > 3 ? porterStem(token) : token);
  }
  return out;
}

/**
 * Length of the longest common subsequence of two token lists (dynamic programme, O(|a|·|b|)
 * time, O(|b|) memory).
 *
 * @example
 * lcsLength(['a', 'b', 'c', 'd'], ['a', 'c', 'd', 'b']); // 3
 */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  let prev = new Int32Array(b.length + 1);
  let cur = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/**
 * ROUGE-L of `prediction` against one `reference`:
 * P = LCS / |pred|, R = LCS / |ref|, F = 2PR / (P + R); all zero when either side has no tokens.
 *
 * @example
 * rougeLScore('the cat sat', 'the cat sat down'); // { precision: 1, recall: 0.75, fmeasure: 0.857… }
 */
export function rougeLScore(prediction: string, reference: string): RougeScore {
  const p = rougeTokenize(prediction);
  const r = rougeTokenize(reference);
  if (p.length === 0 || r.length === 0) return { precision: 0, recall: 0, fmeasure: 0 };
  const lcs = lcsLength(r, p);
  const precision = lcs / p.length;
  const recall = lcs / r.length;
  return { precision, recall, fmeasure: precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0 };
}

/**
 * ROUGE-L F-measure in [0, 1] of `prediction`, the best over `references` (SuperNI's
 * `metric_max_over_ground_truths`).
 *
 * @throws InputError when `references` is empty
 * @example
 * rougeL('Positive', ['negative', 'positive']); // 1
 */
export function rougeL(prediction: string, references: readonly string[]): number {
  if (references.length === 0) throw new InputError('rougeL: an instance needs at least one reference output');
  let best = 0;
  for (const ref of references) best = Math.max(best, rougeLScore(prediction, ref).fmeasure);
  return best;
}
