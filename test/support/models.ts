/** Tiny models for tests, written by the project's own writer into a temp folder. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRandomModel, type RandomModelOptions } from '../../src/model/writer.js';
import { ByteTokenizer, writeByteTokenizer } from '../../src/tokenizer/index.js';

export class ModelDir {
  readonly root = mkdtempSync(join(tmpdir(), 'kpig-test-'));
  #n = 0;

  /** Writes a model (with the byte tokenizer and its special ids) and returns its folder. */
  async make(options: RandomModelOptions): Promise<string> {
    const dir = join(this.root, `m${this.#n++}`);
    const config = { bos_token_id: ByteTokenizer.BOS_ID, eos_token_id: ByteTokenizer.EOS_ID, ...options.config };
    await createRandomModel(dir, { ...options, config });
    await writeByteTokenizer(dir);
    return dir;
  }

  cleanup(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** A deterministic pseudo-random token sequence. */
export function tokens(n: number, vocab: number, seed: number): number[] {
  let x = seed * 2654435761 + 1;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out.push(x % vocab);
  }
  return out;
}
