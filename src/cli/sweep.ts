/**
 * `kpig sweep`: one continual run per (strategy, seed) of a run config and a report over them,
 * here one after another or as a Slurm job array (`--slurm`).
 */
import { resolve, join, basename } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { KpigError } from '../errors/index.js';
import { CLI_SCRIPT, collect, int, overridesOf, requireSlurmFor, threads, usageErrors } from './util.js';

const list = (flag: string) => (v: string) => {
  const items = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (!items.length) throw new InvalidArgumentError(`${flag} wants a comma-separated list`);
  return items;
};

export function registerSweep(program: Command): void {
  program
    .command('sweep')
    .description('one continual run per (strategy, seed) of a run config, then a report over them: here one after another, or as a Slurm job array (--slurm)')
    .argument('[config]', 'run config (YAML or JSON), as kpig run takes it; with --task, the sweep folder')
    .option('--strategies <list>', 'comma-separated strategies (e.g. none,random,kpig)', list('--strategies'))
    .option('--seeds <list>', 'comma-separated seeds', list('--seeds'), ['0'])
    .option('-o, --out <dir>', 'sweep folder (default: runs/<config name>-sweep)')
    .option('--set <field=value>', 'override a config field for every run (repeatable), e.g. train.lr=1e-4', collect, [])
    .option('-t, --threads <n>', 'worker threads of each run (default: all cores; with --slurm, --cpus-per-task)', threads)
    .option('--slurm', 'submit the runs as a Slurm job array (one task per strategy and seed) and a report job after them; a re-submission runs only the runs that are not done')
    .option('--partition <name>', 'with --slurm: the partition the jobs run in')
    .option('--time <limit>', 'with --slurm: the time limit of each job, as sbatch reads it (e.g. 12:00:00)')
    .option('--cpus-per-task <n>', 'with --slurm: CPUs (and threads) of each run', int('--cpus-per-task', 1))
    .option('--dry-run', 'with --slurm: print the job scripts and which runs would start; submit and write nothing')
    .option('--task <i>', 'run task i of the sweep in the folder given as the argument (what each array task does)', int('--task', 0))
    .action(async (arg: string | undefined, o: Record<string, unknown>) => {
      const sweep = await import('../cluster/sweep-array.js');
      if (o.task !== undefined) {
        if (!arg) throw new InvalidArgumentError('--task needs the sweep folder as the argument');
        const controller = new AbortController();
        process.once('SIGTERM', () => controller.abort()); // scancel and the time limit send SIGTERM
        process.once('SIGINT', () => controller.abort());
        try {
          const r = await sweep.runSweepTask(arg, o.task as number, { signal: controller.signal });
          console.error(`kpig sweep: task ${o.task as number} ${r === 'done' ? 'was already done' : 'finished'}`);
        } catch (err) {
          if (err instanceof KpigError && err.code === 'E_CANCELLED') {
            console.error(`kpig sweep: task ${o.task as number} interrupted; a re-submission resumes it`);
            process.exit(130);
          }
          throw err;
        }
        return;
      }
      if (!arg) throw new InvalidArgumentError('a run config is required');
      if (!o.strategies) throw new InvalidArgumentError('--strategies is required (e.g. --strategies none,random,kpig)');
      requireSlurmFor(o);
      const seeds = (o.seeds as string[]).map((s) => {
        if (!/^\d+$/.test(s)) throw new InvalidArgumentError(`--seeds wants whole numbers, got '${s}'`);
        return Number(s);
      });
      const overrides = overridesOf(o.set as string[]);
      const cpus = o.slurm ? ((o.cpusPerTask as number | undefined) ?? 1) : (o.threads as number | undefined);
      if (cpus !== undefined) overrides.threads = String(cpus);
      const dir = resolve((o.out as string | undefined) ?? join('runs', `${basename(arg).replace(/\.[^.]+$/, '')}-sweep`));
      const plan = usageErrors(() => sweep.sweepPlan(arg, o.strategies as string[], seeds, overrides, dir));
      if (o.slurm) {
        const r = await sweep.submitSweep(plan, dir, {
          node: process.execPath,
          cli: CLI_SCRIPT,
          cpusPerTask: cpus ?? 1,
          partition: o.partition as string | undefined,
          time: o.time as string | undefined,
          dryRun: o.dryRun as boolean | undefined,
          log: (line) => console.error(`kpig sweep: ${line}`),
        });
        if (o.dryRun) {
          if (r.run.length) console.log(`# ${dir}/sweep.sbatch\n${r.arrayScript}`);
          console.log(`# ${dir}/report.sbatch${r.run.length ? ' (submitted with --dependency=afterok:<array job> --kill-on-invalid-dep=yes)' : ''}\n${r.reportScript}`);
        }
        return;
      }
      const { writeJsonAtomic } = await import('../io/atomic.js');
      const { mkdir } = await import('node:fs/promises');
      await mkdir(dir, { recursive: true });
      await writeJsonAtomic(join(dir, 'sweep.json'), plan);
      for (let i = 0; i < plan.pairs.length; i++) {
        const p = plan.pairs[i];
        console.error(`kpig sweep: run ${i + 1}/${plan.pairs.length}: ${p.strategy}, seed ${p.seed} → ${p.dir}`);
        const r = await sweep.runSweepTask(dir, i);
        if (r === 'done') console.error('kpig sweep: already done');
      }
      const { writeReport } = await import('../report/report.js');
      const report = await writeReport(plan.pairs.map((p) => p.dir), join(dir, 'report'));
      console.log(report.markdown);
      console.log(report.html);
    });
}
