/**
 * The record of a `kpig train` output folder (`kpig-train.json`): which model, which data and which
 * settings the run started with. It lets a new run refuse a folder that already holds one, lets
 * `--resume` refuse to continue a run with other data, batch size or model, and cleans the
 * temporary folders that killed runs leave behind.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, KpigIOError } from '../errors/index.js';
import { cleanTemps, isTemp, writeJsonAtomic } from '../io/atomic.js';

export const TRAIN_RECORD = 'kpig-train.json';

/** What decides a training run besides its step: compared field by field on resume. */
export interface TrainRunRecord {
  kind: 'kpig-train-run';
  model: { path: string; fingerprint: string };
  data: { path: string; sha256: string; rows: number };
  settings: Record<string, string | number | boolean | null>;
}

/** Entries a training run writes into its folder. */
function ownEntry(name: string): boolean {
  return name === TRAIN_RECORD || name === 'final' || name === 'final-adapter' || /^checkpoint-\d+$/.test(name) || isTemp(name);
}

/** The fields of two records that differ, as `name: was → now`. */
function differences(was: TrainRunRecord, now: TrainRunRecord): string[] {
  const out: string[] = [];
  if (was.model.fingerprint !== now.model.fingerprint) out.push(`model: ${was.model.path} → ${now.model.path} (other config or weights)`);
  if (was.data.sha256 !== now.data.sha256) out.push(`data: ${was.data.path} (${was.data.rows} rows) → ${now.data.path} (${now.data.rows} rows, other content)`);
  for (const k of new Set([...Object.keys(was.settings), ...Object.keys(now.settings)]))
    if (was.settings[k] !== now.settings[k]) out.push(`${k}: ${JSON.stringify(was.settings[k] ?? null)} → ${JSON.stringify(now.settings[k] ?? null)}`);
  return out;
}

export interface PreparedTrainFolder {
  /** Temporary folders of killed runs that were removed. */
  cleaned: string[];
  /** Entries of an earlier run removed by `force`. */
  replaced: string[];
}

/**
 * Makes `out` ready for a training run recorded as `record`:
 * - a missing or empty folder: created, the record written;
 * - `resume`: the folder's record must match `record` (model, data, every setting), else an
 *   InputError lists what differs;
 * - a folder holding anything else, without `resume`: an InputError unless `force`, which
 *   removes the earlier run's entries (checkpoints, final folders, its record) and nothing else.
 * Temporary folders of killed writers are removed in every case.
 *
 * @throws InputError as above; KpigIOError when the folder cannot be read or written
 * @example
 * await prepareTrainFolder('runs/sft', record, { resume: false, force: false });
 */
export async function prepareTrainFolder(out: string, record: TrainRunRecord, options: { resume: boolean; force: boolean }): Promise<PreparedTrainFolder> {
  try {
    await mkdir(out, { recursive: true });
  } catch (err) {
    throw new KpigIOError(`cannot create ${out}: ${(err as Error).message}`, { cause: err });
  }
  if (!(await stat(out)).isDirectory()) throw new InputError(`--out ${out} exists and is not a folder`);
  const cleaned = await cleanTemps(out);
  const entries = await readdir(out);
  const recordPath = join(out, TRAIN_RECORD);
  if (options.resume) {
    if (!existsSync(recordPath))
      throw new InputError(`--resume: ${out} has no ${TRAIN_RECORD}, so it holds no run of kpig train to continue${entries.length ? ` (it holds ${entries.slice(0, 5).join(', ')})` : ''}`);
    let was: TrainRunRecord;
    try {
      was = JSON.parse(await readFile(recordPath, 'utf8')) as TrainRunRecord;
    } catch (err) {
      throw new InputError(`--resume: ${recordPath} is not valid JSON: ${(err as Error).message}`);
    }
    const diff = differences(was, record);
    if (diff.length) throw new InputError(`--resume: the run in ${out} was started with other inputs; it would not continue the same run:\n  ${diff.join('\n  ')}`);
    return { cleaned, replaced: [] };
  }
  const replaced: string[] = [];
  if (entries.length > 0) {
    const own = entries.filter(ownEntry);
    if (!options.force)
      throw new InputError(
        `--out ${out} is not empty (${entries.slice(0, 5).join(', ')}${entries.length > 5 ? ', …' : ''}); pass --resume to continue the run there, --force to start over in it, or choose another folder`,
      );
    for (const name of own) {
      await rm(join(out, name), { recursive: true, force: true });
      replaced.push(name);
    }
  }
  await writeJsonAtomic(recordPath, record);
  return { cleaned, replaced };
}
