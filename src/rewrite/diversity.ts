/**
 * Diversity of instruction texts: distinct-n (unique n-grams over all n-grams of a pool of texts)
 * and the novel-n share of a variant (its n-grams that its seed lacks). Words are lower-cased
 * runs of letters and digits.
 */
import type { TaskSet } from '../data/taskset.js';

function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

function ngrams(text: string, n: number): string[] {
  const w = words(text);
  const out: string[] = [];
  for (let i = 0; i + n <= w.length; i++) out.push(w.slice(i, i + n).join(' '));
  return out;
}

/**
 * distinct-n of a pool of texts: unique n-grams / total n-grams (0 for a pool without n-grams).
 *
 * @example
 * distinctN(['a b c', 'a b d'], 2); // 3 unique of 4 bigrams = 0.75
 */
export function distinctN(texts: readonly string[], n: number): number {
  const all = texts.flatMap((t) => ngrams(t, n));
  return all.length ? new Set(all).size / all.length : 0;
}

/**
 * Share of the n-grams of `variant` that do not occur in `seed`.
 *
 * @example
 * novelN('a b c', 'a b d', 2); // 'b d' is new: 0.5
 */
export function novelN(seed: string, variant: string, n: number): number {
  const seen = new Set(ngrams(seed, n));
  const grams = ngrams(variant, n);
  return grams.length ? grams.filter((g) => !seen.has(g)).length / grams.length : 0;
}

/** How much the variants of a task set add to its seeds; see {@link diversityReport}. */
export interface DiversityReport {
  n: number;
  seeds: number;
  variants: number;
  /** Mean over seeds of distinct-n within {seed, its variants}. */
  perSeedDistinct: number;
  /** What {@link perSeedDistinct} would be if every variant were a copy of its seed: mean 1 / (1 + k). */
  copyBaseline: number;
  /** Mean novel-n share of a variant against its seed. */
  novel: number;
  /** Distinct n-grams of the seeds, and of seeds and variants together. */
  seedNgrams: number;
  allNgrams: number;
}

/**
 * Diversity figures of the rewrites in `set` (instructions whose parent is a seed).
 *
 * @example
 * const r = diversityReport(diverse, 2);
 * console.log(`distinct-2 per seed ${r.perSeedDistinct.toFixed(3)} vs ${r.copyBaseline.toFixed(3)} for copies`);
 */
export function diversityReport(set: TaskSet, n = 2): DiversityReport {
  const seeds = set.instructions.filter((r) => r.origin === 'seed');
  const variants = set.instructions.filter((r) => r.origin !== 'seed');
  let perSeed = 0;
  let baseline = 0;
  let novel = 0;
  for (const s of seeds) {
    const mine = variants.filter((v) => v.parent_id === s.instruction_id).map((v) => v.text);
    perSeed += distinctN([s.text, ...mine], n);
    baseline += 1 / (1 + mine.length);
    for (const v of mine) novel += novelN(s.text, v, n);
  }
  const uniq = (texts: string[]) => new Set(texts.flatMap((t) => ngrams(t, n))).size;
  return {
    n,
    seeds: seeds.length,
    variants: variants.length,
    perSeedDistinct: seeds.length ? perSeed / seeds.length : 0,
    copyBaseline: seeds.length ? baseline / seeds.length : 0,
    novel: variants.length ? novel / variants.length : 0,
    seedNgrams: uniq(seeds.map((s) => s.text)),
    allNgrams: uniq([...seeds, ...variants].map((s) => s.text)),
  };
}
