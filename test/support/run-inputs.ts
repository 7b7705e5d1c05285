/**
 * What continual-run tests start from: the tiny llama-nano model and the tiny task set written
 * under a folder, and a small file of general samples (GeRe).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeTaskSet } from '../../src/data/store.js';
import type { ModelDir } from './models.js';
import { tinyTaskSet } from './tasks.js';

/** The model folder and the task-set folder (`<root>/tasks`) of a run test. */
export async function tinyRunInputs(dirs: ModelDir, root = dirs.root): Promise<{ model: string; data: string }> {
  const model = await dirs.make({ preset: 'llama-nano', seed: 3, config: { vocab_size: 259 } });
  const data = join(root, 'tasks');
  await writeTaskSet(data, tinyTaskSet());
  return { model, data };
}

/** Three instruction rows as a JSONL file of general samples (`<root>/general.jsonl`). */
export function writeGeneralSamples(root: string): string {
  const path = join(root, 'general.jsonl');
  writeFileSync(path, ['count the words', 'repeat the word', 'say yes or no'].map((ins, i) => JSON.stringify({ instruction: ins, input: `row ${i}`, output: `answer ${i}` })).join('\n') + '\n');
  return path;
}
