/**
 * Fingerprints of inputs, so that a resumed run can tell that a path now holds other content:
 * a model folder (config and weight headers) and any file (SHA-256, streamed).
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { KpigIOError } from '../errors/index.js';

/** Feeds bytes [start, end) of a file (to its end by default) into `hash`. */
async function hashRange(hash: Hash, path: string, start = 0, end = Infinity): Promise<void> {
  if (end <= start) return;
  await new Promise<void>((resolve, reject) => {
    const s = createReadStream(path, end === Infinity ? { start } : { start, end: end - 1 });
    s.on('data', (c) => hash.update(c));
    s.on('end', () => resolve());
    s.on('error', reject);
  });
}

const SAMPLE = 65536;

/**
 * A fingerprint of a model folder that changes when its config or weights change: the hash of
 * config.json and, of each weights file, its size, its whole safetensors header (every tensor's
 * name, dtype, shape and offsets) and the first and last 64 KiB of its data. Two checkpoints of one
 * architecture share the header; trained weights differ from the first tensor to the last, so the
 * samples tell them apart without reading gigabytes.
 *
 * @example
 * await modelFingerprint('models/tiny'); // '3f1c…'
 */
export async function modelFingerprint(dir: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    hash.update(await readFile(join(dir, 'config.json')));
    for (const f of (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort()) {
      const path = join(dir, f);
      const size = (await stat(path)).size;
      hash.update(`${f}:${size}:`);
      // The header's length is the file's first 8 bytes (little-endian); a file too short for it is hashed whole.
      const handle = await open(path, 'r');
      const head = Buffer.alloc(8);
      try {
        await handle.read(head, 0, 8, 0);
      } finally {
        await handle.close();
      }
      const dataStart = size >= 8 ? Math.min(size, 8 + Number(head.readBigUInt64LE(0))) : size;
      await hashRange(hash, path, 0, Math.min(size, dataStart + SAMPLE));
      await hashRange(hash, path, Math.max(dataStart + SAMPLE, size - SAMPLE));
    }
  } catch (err) {
    throw new KpigIOError(`cannot read the model folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return hash.digest('hex');
}

/** The SHA-256 of a data file, read as a stream. */
export async function dataFingerprint(path: string): Promise<string> {
  try {
    const hash = createHash('sha256');
    await hashRange(hash, path);
    return hash.digest('hex');
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}
