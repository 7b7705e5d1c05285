/**
 * Seeded pseudo-random numbers for everything that must replay exactly from a seed (data order,
 * replay sampling, generated tasks): mulberry32, a 32-bit generator with a full 2^32 period.
 */

/** A generator of floats in [0, 1). */
export type Rng = () => number;

/**
 * mulberry32 seeded with the low 32 bits of `seed`.
 *
 * @example
 * const rnd = mulberry32(42); rnd(); // 0.6011037519201636
 */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A seed derived from a base seed and labels (a stage, a task id), so that independent draws do
 * not share a stream. FNV-1a over the labels' text.
 *
 * @example
 * const rnd = mulberry32(deriveSeed(0, 'replay', 3, 'task12'));
 */
export function deriveSeed(seed: number, ...labels: Array<string | number>): number {
  // The seed enters only as text: mixing it into the start state as well would cancel against its
  // own first digit (seeds 0–9 would all hash alike).
  let h = 0x811c9dc5;
  for (const ch of `${seed >>> 0}|${labels.join('|')}`) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * A Fisher–Yates shuffle of `items` (a new array).
 *
 * @example
 * shuffled([1, 2, 3, 4], mulberry32(1));
 */
export function shuffled<T>(items: readonly T[], rnd: Rng): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * `k` distinct items drawn uniformly without replacement, in the order drawn.
 *
 * @example
 * sampleWithoutReplacement(['a', 'b', 'c'], 2, mulberry32(7));
 */
export function sampleWithoutReplacement<T>(items: readonly T[], k: number, rnd: Rng): T[] {
  return shuffled(items, rnd).slice(0, Math.min(k, items.length));
}
