/**
 * A sweep: one continual run per (strategy, seed) of one run config, then one report over them.
 * `kpig sweep` runs the pairs here one after another, or (`--slurm`) as a Slurm job array with one
 * task per pair and a report job after them. The sweep folder holds `sweep.json` (the plan), one
 * run folder per pair (`<strategy>-s<seed>`), the job scripts, logs and the report. A pair whose
 * run finished is not run again; one that started resumes from its last checkpoint.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { InputError } from '../errors/index.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { loadRunConfig, resolveRunConfig } from '../pipeline/run-config.js';
import { runContinual, type RunEvent } from '../pipeline/continual.js';
import { sbatchScript, submitArrayThen, type SbatchOptions } from './slurm.js';

/** sweep.json: what every task of the sweep runs. */
export interface SweepPlan {
  format: 'kpig-sweep';
  version: 1;
  /** The run config (absolute path) and the `--set` overrides every pair shares. */
  config: string;
  overrides: Record<string, string>;
  pairs: { strategy: string; seed: number; dir: string }[];
}

/**
 * The plan of a sweep over `strategies` × `seeds` in `dir` (every pair's config is checked now, so
 * a bad strategy or field fails before anything runs). An existing sweep.json must be the same plan.
 *
 * @throws InputError for a bad config or override, or another sweep already in `dir`
 */
export function sweepPlan(configPath: string, strategies: readonly string[], seeds: readonly number[], overrides: Record<string, string>, dir: string): SweepPlan {
  if (!strategies.length || !seeds.length) throw new InputError('a sweep needs at least one strategy and one seed');
  const out = resolve(dir);
  const pairs = seeds.flatMap((seed) => strategies.map((strategy) => ({ strategy, seed, dir: join(out, `${strategy}-s${seed}`) })));
  for (const p of pairs) loadRunConfig(configPath, { ...overrides, 'strategy.name': p.strategy, seed: String(p.seed) });
  const plan: SweepPlan = { format: 'kpig-sweep', version: 1, config: resolve(configPath), overrides, pairs };
  const existing = join(out, 'sweep.json');
  if (existsSync(existing)) {
    const before = readFileSync(existing, 'utf8');
    if (before.trim() !== JSON.stringify(plan, null, 2))
      throw new InputError(`${existing}: another sweep (other config, overrides, strategies or seeds) is in ${out}; choose another --out or remove it`);
  }
  return plan;
}

/** Whether pair `i`'s run finished (its status.json says done). */
export function pairDone(plan: SweepPlan, i: number): boolean {
  try {
    return JSON.parse(readFileSync(join(plan.pairs[i].dir, 'status.json'), 'utf8')).state === 'done';
  } catch {
    return false;
  }
}

/**
 * Runs pair `i` of the sweep in `dir` (read from its sweep.json): nothing when its run is done, a
 * resume when it started, else a fresh run.
 */
export async function runSweepTask(dir: string, i: number, options: { signal?: AbortSignal; onEvent?: (e: RunEvent) => void } = {}): Promise<'done' | 'ran'> {
  const path = join(resolve(dir), 'sweep.json');
  let plan: SweepPlan;
  try {
    plan = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new InputError(`${path}: not a sweep plan: ${(err as Error).message}`);
  }
  if (plan.format !== 'kpig-sweep' || !Array.isArray(plan.pairs)) throw new InputError(`${path}: not a sweep plan`);
  if (!Number.isInteger(i) || i < 0 || i >= plan.pairs.length) throw new InputError(`--task ${i}: the sweep in ${dir} has tasks 0–${plan.pairs.length - 1}`);
  if (pairDone(plan, i)) return 'done';
  const p = plan.pairs[i];
  const started = existsSync(join(p.dir, 'config.json'));
  const config = started
    ? resolveRunConfig(JSON.parse(readFileSync(join(p.dir, 'config.json'), 'utf8')), { where: join(p.dir, 'config.json') })
    : loadRunConfig(plan.config, { ...plan.overrides, 'strategy.name': p.strategy, seed: String(p.seed) });
  await runContinual(config, p.dir, { resume: started, signal: options.signal, onEvent: options.onEvent });
  return 'ran';
}

export interface SweepSlurmOptions {
  node: string;
  cli: string;
  cpusPerTask: number;
  partition?: string;
  time?: string;
  dryRun?: boolean;
  log?: (line: string) => void;
}

/**
 * Writes sweep.json and submits the pairs whose runs are not done as a job array (task i runs
 * `kpig sweep --task i <dir>`), and a report job after them over every pair's run.
 *
 * @throws ClusterError when sbatch is missing or refuses a job
 */
export async function submitSweep(plan: SweepPlan, dir: string, o: SweepSlurmOptions) {
  const log = o.log ?? (() => undefined);
  const out = resolve(dir);
  const run = plan.pairs.map((_, i) => i).filter((i) => !pairDone(plan, i));
  const common: Omit<SbatchOptions, 'jobName' | 'output'> = { partition: o.partition, time: o.time };
  const arrayScript = sbatchScript(
    { ...common, jobName: 'kpig-sweep', output: join(out, 'logs', 'task-%a.log'), array: run, cpusPerTask: o.cpusPerTask },
    [o.node, o.cli, 'sweep', '--task', { prefix: '', suffix: '' }, out],
  );
  const reportScript = sbatchScript({ ...common, jobName: 'kpig-report', output: join(out, 'logs', 'report.log') }, [
    o.node, o.cli, 'report', ...plan.pairs.map((p) => p.dir), '-o', join(out, 'report'),
  ]);
  log(`${plan.pairs.length} runs in ${out}: ${run.length} to run${run.length ? ` (${run.map((i) => `${i}: ${plan.pairs[i].strategy} seed ${plan.pairs[i].seed}`).join(', ')})` : ''}, ${plan.pairs.length - run.length} done`);
  const result: { run: number[]; arrayScript: string; reportScript: string; arrayJob?: string; reportJob?: string } = { run, arrayScript, reportScript };
  if (o.dryRun) return result;
  await mkdir(join(out, 'logs'), { recursive: true });
  await writeJsonAtomic(join(out, 'sweep.json'), plan);
  const jobs = await submitArrayThen({ path: join(out, 'sweep.sbatch'), script: arrayScript, tasks: run }, { path: join(out, 'report.sbatch'), script: reportScript });
  result.arrayJob = jobs.arrayJob;
  result.reportJob = jobs.afterJob;
  if (jobs.arrayJob) log(`submitted array job ${jobs.arrayJob} (tasks ${run.join(',')}) and report job ${jobs.afterJob} (after ${jobs.arrayJob}) → ${join(out, 'report')}`);
  else log(`every run is done: submitted report job ${jobs.afterJob} → ${join(out, 'report')}`);
  return result;
}
