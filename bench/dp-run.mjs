#!/usr/bin/env node
// A whole continual run (`kpig run`) on this machine in one process with 2 threads, against
// `mpirun -np 2` with 1 thread per rank: the quick demo's task stream (4 seen + 3 held-out tasks,
// 100 training and 100 test instances each, its rewrites and probes) and its training settings, on a
// random model of a preset with the byte tokenizer. Prints the wall time of each and of its phases
// (base evaluation, plan, train, eval; from the run's own events), and whether the two runs wrote the
// same score matrix.
//   node bench/dp-run.mjs [--preset llama-tiny] [--strategy kpig] [--ranks 2]
// Needs Open MPI's mpirun and an addon built with MPI.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeTaskSet } from '../dist/data/store.js';
import { createRandomModel } from '../dist/model/writer.js';
import { DEMO_PRESETS, demoTaskSet } from '../dist/pipeline/demo-suite.js';
import { ByteTokenizer, writeByteTokenizer } from '../dist/tokenizer/index.js';
import { cpuDescription, repoRoot } from './common.mjs';

const { values: opt } = parseArgs({
  options: {
    preset: { type: 'string', default: 'llama-tiny' },
    strategy: { type: 'string', default: 'kpig' },
    ranks: { type: 'string', default: '2' },
  },
});

const root = mkdtempSync(join(tmpdir(), 'kpig-dp-run-'));
try {
  const model = join(root, 'model');
  await createRandomModel(model, { preset: opt.preset, seed: 0, config: { vocab_size: 259, bos_token_id: ByteTokenizer.BOS_ID, eos_token_id: ByteTokenizer.EOS_ID } });
  await writeByteTokenizer(model);
  const preset = DEMO_PRESETS.quick;
  const { set, stream } = await demoTaskSet(0, preset);
  await writeTaskSet(join(root, 'tasks'), set);
  const config = join(root, 'run.json');
  writeFileSync(config, JSON.stringify({
    model,
    data: join(root, 'tasks'),
    stream: stream.name,
    strategy: { name: opt.strategy, m: preset.m },
    train: { lr: preset.lr, epochs: preset.epochs, batchSize: preset.batchSize, checkpointEvery: 10, maxLength: 256 },
    eval: { maxInstancesPerTask: preset.evalPerTask, maxNewTokens: preset.maxNewTokens, batchSize: 50 },
    seed: 0,
  }));
  console.log(JSON.stringify({ ...cpuDescription(), preset: opt.preset, strategy: opt.strategy, tasks: `${stream.seen.length} seen + ${set.tasks.length - stream.seen.length} held out` }));

  /** Runs a command printing the run's JSON events; returns the wall time and the seconds spent in each phase. */
  const timedRun = (cmd, args) =>
    new Promise((done, fail) => {
      const child = spawn(cmd, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
      const t0 = Date.now();
      const phases = { base: 0, plan: 0, train: 0, eval: 0 };
      let current = null, since = t0, buf = '', err = '';
      const enter = (name) => {
        const now = Date.now();
        if (current) phases[current] += (now - since) / 1000;
        current = name;
        since = now;
      };
      child.stdout.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line.startsWith('{')) continue;
          const e = JSON.parse(line);
          if (e.type === 'phase') enter(e.stage === 0 ? 'base' : e.phase);
          if (e.type === 'stage' || e.type === 'done') enter(null);
        }
      });
      child.stderr.on('data', (d) => (err += d));
      child.on('exit', (code) => {
        if (code !== 0) return fail(new Error(`${cmd} exited with ${code}: ${err}`));
        const round = (x) => +x.toFixed(1);
        done({ wall_s: round((Date.now() - t0) / 1000), ...Object.fromEntries(Object.entries(phases).map(([k, v]) => [`${k}_s`, round(v)])) });
      });
    });

  const cli = join(repoRoot, 'dist', 'cli', 'main.js');
  const one = await timedRun(process.execPath, [cli, 'run', config, '--out', join(root, 'one'), '--threads', '2', '--json']);
  console.log(JSON.stringify({ ranks: 1, threads_per_rank: 2, ...one }));
  const k = Number(opt.ranks);
  const mpiArgs = [...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []), '--oversubscribe', '--mca', 'btl', 'self,vader', '--mca', 'btl_vader_single_copy_mechanism', 'none'];
  const dp = await timedRun('mpirun', [...mpiArgs, '-np', String(k), process.execPath, cli, 'run', config, '--out', join(root, 'dp'), '--threads', '1', '--json']);
  const matrix = (dir) => JSON.parse(readFileSync(join(root, dir, 'results.json'), 'utf8')).matrix;
  const same = JSON.stringify(matrix('one')) === JSON.stringify(matrix('dp'));
  console.log(JSON.stringify({ ranks: k, threads_per_rank: 1, ...dp, vs_one_process: +(one.wall_s / dp.wall_s).toFixed(3), same_score_matrix: same }));
} finally {
  rmSync(root, { recursive: true, force: true });
}
