/**
 * Atomic file writes: the data goes to a temporary file in the destination's folder, is flushed to
 * disk, and is renamed over the destination. A reader sees the old file or the new one, never half
 * of one, and an interrupted run leaves no truncated artefact behind (DESIGN.md §5).
 */

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { InputError, KpigIOError } from '../errors/index.js';

/** What {@link writeFileAtomic} accepts: text (UTF-8), bytes, or a list of byte chunks written in order. */
export type AtomicData = string | Uint8Array | readonly Uint8Array[];

/**
 * Writes `data` to `path` atomically (temp file in the same folder + fsync + rename). On failure the
 * temporary file is removed and a {@link KpigIOError} naming `path` is thrown. Chunks let callers
 * write large payloads (checkpoints) without concatenating them first.
 *
 * @example
 * await writeFileAtomic('out/results.json', JSON.stringify(results));
 * await writeFileAtomic('out/model.safetensors', [header, tensorBytes]);
 */
export async function writeFileAtomic(path: string, data: AtomicData): Promise<void> {
  const chunks: readonly Uint8Array[] =
    typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  const temp = tempSiblingPath(path);
  try {
    const handle = await open(temp, 'wx');
    try {
      for (const chunk of chunks) {
        // A single write() call may be short for very large buffers; loop until the chunk is out.
        let done = 0;
        while (done < chunk.byteLength) {
          const { bytesWritten } = await handle.write(chunk, done, chunk.byteLength - done);
          done += bytesWritten;
        }
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw new KpigIOError(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
  await syncDir(dirname(path));
}

/**
 * Writes `value` as pretty JSON (2-space indent, trailing newline) to `path` atomically.
 *
 * @example
 * await writeJsonAtomic('out/config.json', { model_type: 'llama', vocab_size: 512 });
 */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Flushes a folder's entry table so a completed rename survives a crash. Some file systems refuse
 * fsync on folders; the rename has still happened, so that refusal is not an error.
 *
 * @example
 * await syncDir('out');
 */
export async function syncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    return;
  } finally {
    await handle?.close();
  }
}

/**
 * A fresh name for a temporary sibling of `path`, e.g. `/out/.model.safetensors.tmp-4242-9f1c2a7b`.
 * The leading dot hides it from casual listings; the pid and random suffix keep concurrent writers
 * of the same file apart.
 */
export function tempSiblingPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Throws unless `dir` is absent, an empty folder, or any folder with `overwrite`.
 *
 * @example
 * await checkDestination('out/model', false);
 */
export async function checkDestination(dir: string, overwrite: boolean): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new KpigIOError(`cannot inspect ${dir}: ${(err as Error).message}`, { cause: err });
  }
  if (!isDir) throw new InputError(`${dir} exists and is not a folder`);
  if (!overwrite && (await readdir(dir)).length > 0) {
    throw new InputError(`${dir} exists and is not empty; pass overwrite: true to replace it`);
  }
}

/**
 * Renames the finished `temp` folder to `dir` (use {@link writeDirAtomic} to build one). A folder already at `dir` (empty, or any with
 * `overwrite`) is first moved aside and deleted afterwards, so `dir` is only missing for the instant
 * between two renames and never holds a mix of old and new files.
 */
export async function moveIntoPlace(temp: string, dir: string, overwrite: boolean): Promise<void> {
  await checkDestination(dir, overwrite);
  const aside = join(dirname(dir), `.${basename(dir)}.old-${process.pid}-${Date.now()}`);
  let movedAside = false;
  try {
    await rename(dir, aside);
    movedAside = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new KpigIOError(`cannot replace ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }
  try {
    await rename(temp, dir);
  } catch (err) {
    if (movedAside) await rename(aside, dir);
    throw new KpigIOError(`cannot move the new folder into ${dir}: ${(err as Error).message}`, { cause: err });
  }
  await syncDir(dirname(dir));
  if (movedAside) await rm(aside, { recursive: true, force: true });
}

/**
 * Builds a folder atomically: `fill` writes into a fresh sibling temp folder, which then replaces
 * `dir` in one rename. A failure (or a kill) leaves `dir` as it was and no half-written folder.
 *
 * @example
 * await writeDirAtomic('out/checkpoint-10', async (tmp) => { await writeFile(join(tmp, 'a.json'), '{}'); }, { overwrite: true });
 */
export async function writeDirAtomic(dir: string, fill: (temp: string) => Promise<void>, options: { overwrite?: boolean } = {}): Promise<void> {
  const overwrite = options.overwrite ?? false;
  await checkDestination(dir, overwrite);
  await mkdir(dirname(dir), { recursive: true });
  const temp = join(dirname(dir), `.${basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(temp);
  try {
    await fill(temp);
    await moveIntoPlace(temp, dir, overwrite);
  } catch (err) {
    await rm(temp, { recursive: true, force: true });
    throw err;
  }
}

/** A temporary sibling from an atomic write (`.<name>.tmp-<pid>-<hex>`) or a folder moved aside (`.<name>.old-<pid>-<ms>`); group 1 is the writer's pid. */
const TEMP_NAME = /^\..+\.(?:tmp|old)-(\d+)-[0-9a-f]+$/;

/** True for the name of such a temporary sibling. */
export function isTemp(name: string): boolean {
  return TEMP_NAME.test(name);
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes temporary folders and files of killed writers from `dir` (those whose process is gone)
 * and returns their names.
 *
 * @example
 * await cleanTemps('runs/sft'); // ['.checkpoint-40.tmp-4242-9f1c2a7b']
 */
export async function cleanTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of existsSync(dir) ? await readdir(dir) : []) {
    const m = TEMP_NAME.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}
