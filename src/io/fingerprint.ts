/**
 * Fingerprints of inputs, so that a resumed run can tell that a path now holds other content:
 * a model folder (config and weight headers) and any file (SHA-256, streamed).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { KpigIOError } from '../errors/index.js';

async function sha256File(path: string, limit = Infinity): Promise<string> {
  const hash = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    const s = createReadStream(path, limit === Infinity ? {} : { start: 0, end: limit - 1 });
    s.on('data', (c) => hash.update(c));
    s.on('end', () => resolve());
    s.on('error', reject);
  });
  return hash.digest('hex');
}

/**
 * A fingerprint of a model folder that changes when its config or weights change: the hash of
 * config.json, and of each weights file its size and first 64 KiB (the safetensors header, which
 * names every tensor, shape and offset).
 *
 * @example
 * await modelFingerprint('models/tiny'); // '3f1c…'
 */
export async function modelFingerprint(dir: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    hash.update(await readFile(join(dir, 'config.json')));
    for (const f of (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort()) {
      const size = (await stat(join(dir, f))).size;
      hash.update(`${f}:${size}:${await sha256File(join(dir, f), 65536)}`);
    }
  } catch (err) {
    throw new KpigIOError(`cannot read the model folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return hash.digest('hex');
}

/** The SHA-256 of a data file, read as a stream. */
export async function dataFingerprint(path: string): Promise<string> {
  try {
    return await sha256File(path);
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}
