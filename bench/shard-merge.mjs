#!/usr/bin/env node
// Sharded scoring on one machine: N generated rows (SuperNI-shaped: 50 tasks, one instruction each)
// scored unsharded, then as n shards with `kpig score --shard i/n` run k processes at a time
// (k = 1, 2: what 1 and 2 array tasks of a Slurm job do on this machine), merged with `kpig merge`
// and compared byte for byte with the unsharded output. Prints samples/s and shards/s per k, per
// core, and the merge time.
//   node bench/shard-merge.mjs [--rows 100000] [--shards 7] [--parallel 1,2] [--threads-per-task 0]
// --threads-per-task 0 gives each of the k tasks ⌊cores / k⌋ threads.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { cpuDescription, repoRoot } from './common.mjs';

const { values: opt } = parseArgs({
  options: {
    rows: { type: 'string', default: '100000' },
    shards: { type: 'string', default: '7' },
    parallel: { type: 'string', default: '1,2' },
    'threads-per-task': { type: 'string', default: '0' },
    preset: { type: 'string', default: 'gpt2-tiny' },
  },
});
const N = Number(opt.rows), n = Number(opt.shards), cores = availableParallelism();
const cli = join(repoRoot, 'dist', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'kpig-shard-bench-'));
const run = (args) => {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kpig ${args.join(' ')} failed:\n${r.stderr}`);
  return r;
};
const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

try {
  console.log(JSON.stringify({ ...cpuDescription(), cores, rows: N, shards: n, preset: opt.preset }));
  const model = join(dir, 'model');
  run(['create-model', model, '--preset', opt.preset, '--seed', '1']);
  const data = join(dir, 'rows.jsonl');
  const w = createWriteStream(data);
  const labels = ['yes', 'no', 'maybe', 'unclear', 'true', 'false'];
  for (let i = 0; i < N; i++) {
    const task = i % 50, a = labels[task % 6], b = labels[(task + 1) % 6];
    const instruction = `Definition of task ${task}: read the statement and answer "${a}" or "${b}" only. Do not explain.`;
    const sa = instruction.indexOf(`"${a}"`), sb = instruction.indexOf(`"${b}"`);
    const row = { task_id: `task${task}`, instance_id: `i${i}`, instruction, key_spans: [[sa, sa + a.length + 2], [sb, sb + b.length + 2]], input: `statement number ${i}`, output: i % 3 ? a : b };
    if (!w.write(JSON.stringify(row) + '\n')) await once(w, 'drain');
  }
  w.end();
  await once(w, 'finish');

  const full = join(dir, 'full.arrow');
  let t0 = process.hrtime.bigint();
  run(['score', model, '--data', data, '--out', full, '--threads', String(cores)]);
  const fullSec = seconds(t0);
  console.log(JSON.stringify({ run: 'unsharded', threads: cores, sec: +fullSec.toFixed(2), samples_per_s: Math.round(N / fullSec) }));

  for (const k of opt.parallel.split(',').map(Number)) {
    const threads = Number(opt['threads-per-task']) || Math.max(1, Math.floor(cores / k));
    const outs = Array.from({ length: n }, (_, i) => join(dir, `k${k}-shard${i}.arrow`));
    t0 = process.hrtime.bigint();
    // k tasks at a time, as k array tasks of a Slurm job would run them.
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        const child = spawn(process.execPath, [cli, 'score', model, '--data', data, '--out', outs[i], '--shard', `${i}/${n}`, '--threads', String(threads)], { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        child.stderr.on('data', (d) => (err += d));
        const [code] = await once(child, 'exit');
        if (code !== 0) throw new Error(`shard ${i}/${n} failed:\n${err}`);
      }
    };
    await Promise.all(Array.from({ length: k }, worker));
    const shardSec = seconds(t0);
    const merged = join(dir, `k${k}-merged.arrow`);
    t0 = process.hrtime.bigint();
    run(['merge', ...outs, '-o', merged]);
    const mergeSec = seconds(t0);
    const identical = Buffer.compare(readFileSync(merged), readFileSync(full)) === 0;
    console.log(
      JSON.stringify({
        run: 'sharded',
        parallel_tasks: k,
        threads_per_task: threads,
        sec: +shardSec.toFixed(2),
        samples_per_s: Math.round(N / shardSec),
        samples_per_s_per_core: Math.round(N / shardSec / Math.min(cores, k * threads)),
        shards_per_s: +(n / shardSec).toFixed(3),
        vs_unsharded: +(fullSec / shardSec).toFixed(3),
        merge_sec: +mergeSec.toFixed(2),
        identical_to_unsharded: identical,
      }),
    );
    if (!identical) process.exitCode = 1;
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
