/**
 * `kpig score --slurm`: the shards of one scoring run as a Slurm job array, and a merge job that
 * runs after every array task succeeded. The work folder (`<out>.shards/`) holds the job scripts,
 * the shard files and the logs. A re-submission checks the shard files already there against
 * their manifests and runs only the shards that are missing or unusable.
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { shardFileState, type ShardManifest, type ShardSpec } from '../scoring/shard.js';
import { sbatchScript, submitArrayThen, type SbatchOptions } from './slurm.js';

export interface ScoreArrayOptions {
  /** node and the kpig CLI script the jobs run (absolute paths). */
  node: string;
  cli: string;
  model: string;
  data: string;
  out: string;
  /** Shards (array tasks). */
  count: number;
  /** The manifest shard i must carry. */
  manifest: (spec: ShardSpec) => ShardManifest;
  /** `kpig score` options every task passes on (flag, value pairs), besides --data, --out, --shard, --threads. */
  scoreArgs: readonly string[];
  cpusPerTask: number;
  partition?: string;
  time?: string;
  /** Print the scripts and what would run; write and submit nothing. */
  dryRun?: boolean;
  log?: (line: string) => void;
}

export interface ScoreArrayPlan {
  dir: string;
  shardFiles: string[];
  /** Shards to run (missing or unusable), and why each existing file is unusable. */
  run: number[];
  unusable: Map<number, string>;
  arrayScript: string;
  mergeScript: string;
  arrayJob?: string;
  mergeJob?: string;
}

/**
 * Plans and (unless dryRun) submits the array and the merge job.
 *
 * @throws ClusterError when sbatch is missing or refuses a job
 */
export async function submitScoreArray(o: ScoreArrayOptions): Promise<ScoreArrayPlan> {
  const log = o.log ?? (() => undefined);
  const out = resolve(o.out);
  const dir = `${out}.shards`;
  const n = o.count;
  const shardName = (i: number) => join(dir, `shard-${i}-of-${n}.arrow`);
  const shardFiles = Array.from({ length: n }, (_, i) => shardName(i));
  const run: number[] = [];
  const unusable = new Map<number, string>();
  for (let i = 0; i < n; i++) {
    const state = await shardFileState(shardFiles[i], o.manifest({ index: i, count: n }));
    if (state === 'ok') continue;
    run.push(i);
    if (state !== 'missing') unusable.set(i, state);
  }
  const common: Omit<SbatchOptions, 'jobName' | 'output'> = { partition: o.partition, time: o.time };
  const arrayScript = sbatchScript(
    { ...common, jobName: 'kpig-score', output: join(dir, 'logs', 'shard-%a.log'), array: run, cpusPerTask: o.cpusPerTask },
    [
      o.node, o.cli, 'score', resolve(o.model), '--data', resolve(o.data),
      '--out', { prefix: join(dir, 'shard-'), suffix: `-of-${n}.arrow` },
      '--shard', { prefix: '', suffix: `/${n}` },
      '--threads', String(o.cpusPerTask), ...o.scoreArgs,
    ],
  );
  const mergeScript = sbatchScript({ ...common, jobName: 'kpig-merge', output: join(dir, 'logs', 'merge.log') }, [o.node, o.cli, 'merge', ...shardFiles, '-o', out]);
  const plan: ScoreArrayPlan = { dir, shardFiles, run, unusable, arrayScript, mergeScript };
  for (const [i, why] of unusable) log(`shard ${i}/${n} runs again: ${why}`);
  log(`${n} shards in ${dir}: ${run.length} to run${run.length ? ` (${run.join(',')})` : ''}, ${n - run.length} already done`);
  if (o.dryRun) return plan;
  await mkdir(join(dir, 'logs'), { recursive: true });
  const jobs = await submitArrayThen({ path: join(dir, 'score.sbatch'), script: arrayScript, tasks: run }, { path: join(dir, 'merge.sbatch'), script: mergeScript });
  plan.arrayJob = jobs.arrayJob;
  plan.mergeJob = jobs.afterJob;
  if (jobs.arrayJob) log(`submitted array job ${jobs.arrayJob} (tasks ${run.join(',')}) and merge job ${jobs.afterJob} (after ${jobs.arrayJob}) → ${out}`);
  else log(`every shard is done: submitted merge job ${jobs.afterJob} → ${out}`);
  return plan;
}
