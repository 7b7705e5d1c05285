/**
 * Seeded train/test splits and instance caps, per task. An instance's rank is the SHA-256 of
 * (seed, task, instance id), so the split of one instance does not depend on which other instances
 * the file holds or in what order: adding a row never moves another row between splits.
 */
import { createHash } from 'node:crypto';
import { InputError } from '../errors/index.js';
import type { Split } from './taskset.js';

export interface SplitOptions {
  /** Seed of the split (default 0). */
  seed?: number;
  /** Share of the kept instances that go to test (default 0.1), rounded to the nearest count. */
  testFraction?: number;
  /** Test instances per task; wins over `testFraction`. */
  testSize?: number;
  /** Keep at most this many instances per task (a seeded sample, in original order). */
  maxInstances?: number;
}

/**
 * Which instances of one task to keep and their split, in input order. Returns one entry per kept
 * instance: its index into `ids` and its split.
 *
 * @throws InputError on a bad option
 * @example
 * splitTask('task1', ['a', 'b', 'c', 'd'], { seed: 1, testSize: 1 }); // e.g. [{ index: 0, split: 'train' }, …]
 */
export function splitTask(taskId: string, ids: readonly string[], options: SplitOptions = {}): { index: number; split: Split }[] {
  const seed = options.seed ?? 0;
  const fraction = options.testFraction ?? 0.1;
  if (!(fraction >= 0 && fraction <= 1)) throw new InputError(`testFraction must be in [0, 1], got ${fraction}`);
  if (options.testSize !== undefined && !(Number.isInteger(options.testSize) && options.testSize >= 0))
    throw new InputError(`testSize must be an integer ≥ 0, got ${options.testSize}`);
  if (options.maxInstances !== undefined && !(Number.isInteger(options.maxInstances) && options.maxInstances >= 1))
    throw new InputError(`maxInstances must be an integer ≥ 1, got ${options.maxInstances}`);
  const ranked = ids
    .map((id, index) => ({ index, key: createHash('sha256').update(`${seed}\u0000${taskId}\u0000${id}`).digest('hex') }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.index - b.index));
  const kept = ranked.slice(0, options.maxInstances ?? ranked.length);
  const nTest = Math.min(kept.length, options.testSize ?? Math.round(kept.length * fraction));
  return kept
    .map((r, rank) => ({ index: r.index, split: (rank < nTest ? 'test' : 'train') as Split }))
    .sort((a, b) => a.index - b.index);
}
