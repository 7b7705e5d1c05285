/**
 * Slurm: job scripts written as files, submitted with `sbatch --parsable`. kpig runs on the
 * cluster's own scheduler (job arrays, dependencies); it schedules nothing itself.
 */
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { ClusterError } from '../errors/index.js';

/** A word for bash, single-quoted where it needs quoting. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** What goes into the `#SBATCH` lines of a job script. */
export interface SbatchOptions {
  jobName: string;
  /** Array task ids (a job array), e.g. [0, 2, 5]. */
  array?: readonly number[];
  /** Log file; `%a` is the array task id, `%j` the job id. */
  output: string;
  cpusPerTask?: number;
  partition?: string;
  time?: string;
}

/** Array ids as sbatch writes them: runs become ranges (0-3,5,7-8). */
export function arraySpec(ids: readonly number[]): string {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** A command word that bash completes inside the job: `prefix`, the array task id, `suffix`. */
export interface TaskIdWord {
  prefix: string;
  suffix: string;
}

/**
 * A bash job script: the `#SBATCH` header, then `command` (argv words, quoted here).
 *
 * @example
 * sbatchScript({ jobName: 'kpig-merge', output: '/runs/logs/merge.log' }, ['node', 'kpig', 'merge', 'a.arrow', '-o', 'b.arrow']);
 */
export function sbatchScript(o: SbatchOptions, command: readonly (string | TaskIdWord)[]): string {
  const lines = ['#!/bin/bash', `#SBATCH --job-name=${shellQuote(o.jobName)}`, `#SBATCH --output=${shellQuote(o.output)}`];
  if (o.array?.length) lines.push(`#SBATCH --array=${arraySpec(o.array)}`);
  if (o.cpusPerTask) lines.push(`#SBATCH --cpus-per-task=${o.cpusPerTask}`);
  if (o.partition) lines.push(`#SBATCH --partition=${shellQuote(o.partition)}`);
  if (o.time) lines.push(`#SBATCH --time=${shellQuote(o.time)}`);
  const word = (w: string | TaskIdWord) =>
    typeof w === 'string' ? shellQuote(w) : `${w.prefix ? shellQuote(w.prefix) : ''}"$SLURM_ARRAY_TASK_ID"${w.suffix ? shellQuote(w.suffix) : ''}`;
  lines.push('set -euo pipefail', `exec ${command.map(word).join(' ')}`, '');
  return lines.join('\n');
}

/**
 * Writes `after` and, when `array` has tasks, `array`; submits the array, then `after` once every
 * array task succeeded (afterok; a failed or cancelled task cancels it). Without tasks, `after`
 * alone. Returns the job ids.
 *
 * @throws ClusterError when sbatch is missing or refuses a job
 */
export async function submitArrayThen(
  array: { path: string; script: string; tasks: readonly number[] },
  after: { path: string; script: string },
): Promise<{ arrayJob?: string; afterJob: string }> {
  await writeFile(after.path, after.script, { mode: 0o755 });
  if (!array.tasks.length) return { afterJob: sbatch(after.path) };
  await writeFile(array.path, array.script, { mode: 0o755 });
  const arrayJob = sbatch(array.path);
  return { arrayJob, afterJob: sbatch(after.path, [`--dependency=afterok:${arrayJob}`, '--kill-on-invalid-dep=yes']) };
}

/**
 * Submits a job script with `sbatch --parsable [args] script` and returns the job id.
 *
 * @throws ClusterError when sbatch is missing or refuses the job (its message included)
 */
export function sbatch(script: string, args: readonly string[] = []): string {
  const r = spawnSync('sbatch', ['--parsable', ...args, script], { encoding: 'utf8' });
  if (r.error) {
    const missing = (r.error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new ClusterError(
      missing ? 'sbatch was not found on PATH: --slurm needs a Slurm client on this machine (a login node of the cluster); --dry-run prints the scripts without it' : `sbatch ${script} failed: ${r.error.message}`,
      { cause: r.error },
    );
  }
  if (r.status !== 0) throw new ClusterError(`sbatch refused ${script}: ${(r.stderr || r.stdout).trim()}`);
  const id = r.stdout.trim().split(';')[0];
  if (!/^\d+$/.test(id)) throw new ClusterError(`sbatch ${script} answered '${r.stdout.trim()}', not a job id`);
  return id;
}
