/** Reading an Arrow IPC file (file or stream format) with typed errors that name the path. */
import { readFile } from 'node:fs/promises';
import { type Table, tableFromIPC } from 'apache-arrow';
import { InputError, KpigIOError } from '../errors/index.js';

/**
 * The table stored at `path`.
 *
 * @throws KpigIOError when the file cannot be read; InputError when it is not Arrow IPC
 * @example
 * const table = await readArrowTable('run/stage-01/plan.arrow');
 */
export async function readArrowTable(path: string): Promise<Table> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return tableFromIPC(bytes);
  } catch (err) {
    throw new InputError(`${path}: not a readable Arrow IPC file: ${(err as Error).message}`, { cause: err });
  }
}
