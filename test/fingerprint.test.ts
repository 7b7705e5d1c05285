// Fingerprints that resume checks rely on: a model folder's changes with its weights even where two
// checkpoints share every header byte, and a file's is its SHA-256.
import { createHash } from 'node:crypto';
import { cpSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dataFingerprint, modelFingerprint } from '../src/io/fingerprint.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

describe('fingerprints', () => {
  it('tell apart checkpoints of one architecture, also when only the last weights differ', async () => {
    const a = await dirs.make({ preset: 'llama-nano', seed: 1 });
    const b = await dirs.make({ preset: 'llama-nano', seed: 2 });
    expect(statSync(join(a, 'model.safetensors')).size).toBeGreaterThan(4 * 65536); // past both samples
    const copy = join(dirs.root, 'copy');
    cpSync(a, copy, { recursive: true });
    expect(await modelFingerprint(copy)).toBe(await modelFingerprint(a));
    expect(await modelFingerprint(b)).not.toBe(await modelFingerprint(a));
    // The same header and the same first bytes; only the end of the data area changed.
    const file = join(copy, 'model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 3] ^= 0x40;
    writeFileSync(file, bytes);
    expect(await modelFingerprint(copy)).not.toBe(await modelFingerprint(a));
  });

  it("a data file's fingerprint is its SHA-256", async () => {
    const path = join(dirs.root, 'rows.jsonl');
    writeFileSync(path, '{"a": 1}\n'.repeat(10000));
    expect(await dataFingerprint(path)).toBe(createHash('sha256').update(readFileSync(path)).digest('hex'));
  });
});
