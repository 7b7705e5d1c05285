// Data-parallel training over MPI: `mpirun -np 2 kpig train` against one process on the same
// global batches (losses and weights within 1e-6 relative over 20 steps), resume across rank
// counts, and a failing rank ending the whole job instead of leaving the other one waiting.
// Needs Open MPI's mpirun and an addon built with MPI (`apt-get install -y openmpi-bin
// libopenmpi-dev` before `npm install`); without them these tests say so and are skipped.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAddon } from '../src/native/index.js';
import { readSafetensors } from '../src/model/safetensors.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
const root = mkdtempSync(join(tmpdir(), 'kpig-mpi-'));
afterAll(() => {
  dirs.cleanup();
  rmSync(root, { recursive: true, force: true });
});

const hasMpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
const built = loadAddon().distInfo().built;
const why = !built ? 'the addon was built without MPI' : !hasMpirun ? 'mpirun is not installed' : '';
const title = why ? ` (skipped: ${why}; apt-get install -y openmpi-bin libopenmpi-dev, then rebuild)` : '';

// Shared memory between the ranks of this one machine, no network.
const MPI_ARGS = [
  ...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []),
  '--oversubscribe', '--mca', 'btl', 'self,vader', '--mca', 'btl_vader_single_copy_mechanism', 'none',
];
const cli = ['dist/cli/main.js'];
const kpig = (args: string[]) => spawnSync(process.execPath, [...cli, ...args], { encoding: 'utf8' });
const mpirun = (np: number, args: string[]) => spawnSync('mpirun', [...MPI_ARGS, '-np', String(np), process.execPath, ...cli, ...args], { encoding: 'utf8', timeout: 240_000 });

async function state(dir: string) {
  const losses: number[] = JSON.parse(await readFile(join(dir, 'trainer_state.json'), 'utf8')).losses;
  const weights = await readSafetensors(join(dir, 'model.safetensors'));
  return { losses, weights };
}

/** Largest relative loss difference, and largest per-tensor relative L2 difference of the weights. */
async function compare(a: string, b: string) {
  const x = await state(a), y = await state(b);
  expect(y.losses).toHaveLength(x.losses.length);
  const loss = Math.max(...x.losses.map((l, i) => Math.abs(l - y.losses[i]) / Math.abs(l)));
  let weights = 0;
  expect(x.weights.tensors.size).toBeGreaterThan(0);
  for (const [name, t] of x.weights.tensors) {
    expect(t.dtype).toBe('F32');
    const u = new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
    const o = y.weights.tensors.get(name)!;
    const v = new Float32Array(o.bytes.buffer, o.bytes.byteOffset, o.bytes.byteLength / 4);
    let num = 0, den = 0;
    for (let i = 0; i < u.length; i++) {
      num += (u[i] - v[i]) ** 2;
      den += u[i] ** 2;
    }
    weights = Math.max(weights, Math.sqrt(num / Math.max(den, 1e-30)));
  }
  return { loss, weights };
}

describe('data-parallel training over MPI', () => {
  let model: string;
  let data: string;
  const train = (out: string, steps: number, extra: string[] = []) => [
    'train', model, '--data', data, '--out', out, '--full', '--batch-size', '8', '--lr', '1e-3', '--schedule', 'constant',
    '--checkpoint-every', '5', '--max-steps', String(steps), '--threads', '1', ...extra,
  ];
  beforeAll(async () => {
    model = await dirs.make({ preset: 'llama-nano', seed: 2, config: { vocab_size: 259 } });
    data = join(root, 'rows.jsonl');
    const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta'];
    writeFileSync(data, Array.from({ length: 160 }, (_, i) => JSON.stringify({ instruction: `Say word ${i % 7}.`, input: `item ${i}`, output: words[i % 7] })).join('\n') + '\n');
  });

  it(`2 ranks give one process's losses and weights within 1e-6 over 20 steps; rank 0 alone writes${title}`, { skip: Boolean(why), timeout: 300_000 }, async () => {
    const one = join(root, 'one'), two = join(root, 'two');
    expect(kpig(train(one, 20)).status).toBe(0);
    const r = mpirun(2, train(two, 20));
    expect(r.stderr).toContain('data-parallel over 2 ranks');
    expect(r.status).toBe(0);
    const d = await compare(join(one, 'checkpoint-20'), join(two, 'checkpoint-20'));
    expect(d.loss).toBeLessThan(1e-6);
    expect(d.weights).toBeLessThan(1e-6);
    // The ranks did not compute the same thing twice: the first step's loss is the whole batch's.
    const l1 = (await state(join(one, 'checkpoint-20'))).losses[0], l2 = (await state(join(two, 'checkpoint-20'))).losses[0];
    expect(Math.abs(l1 - l2) / l1).toBeLessThan(1e-12);
    expect((r.stdout + r.stderr).match(/model saved to/g)).toHaveLength(1);
  });

  it(`resume works across rank counts: 2 ranks then 1, and 1 then 2, end where one process ends${title}`, { skip: Boolean(why), timeout: 300_000 }, async () => {
    const ref = join(root, 'ref'), a = join(root, 'two-then-one'), b = join(root, 'one-then-two');
    expect(kpig(train(ref, 20)).status).toBe(0);
    expect(mpirun(2, train(a, 10)).status).toBe(0);
    let r = kpig([...train(a, 20), '--resume']);
    expect(r.stderr).toContain('resumed from');
    expect(r.status).toBe(0);
    expect(kpig(train(b, 10)).status).toBe(0);
    r = mpirun(2, [...train(b, 20), '--resume']);
    expect(r.stderr).toContain('resumed from');
    expect(r.status).toBe(0);
    for (const dir of [a, b]) {
      const d = await compare(join(ref, 'checkpoint-20'), join(dir, 'checkpoint-20'));
      expect(d.loss).toBeLessThan(1e-6);
      expect(d.weights).toBeLessThan(1e-6);
    }
  });

  it(`a rank that fails ends the job with its error instead of leaving the other rank waiting${title}`, { skip: Boolean(why), timeout: 120_000 }, () => {
    const busy = join(root, 'busy');
    expect(kpig(train(busy, 2)).status).toBe(0);
    // Rank 0 refuses the non-empty folder; rank 1 would wait in its first allreduce forever.
    const r = mpirun(2, train(busy, 2));
    expect(r.error).toBeUndefined(); // not killed by the timeout
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('is not empty');
  });

  it(`any command but train refuses to start as several ranks, before writing anything${title}`, { skip: Boolean(why), timeout: 120_000 }, () => {
    const out = join(root, 'run-under-mpi');
    const r = mpirun(2, ['run', join(root, 'no-such-config.yaml'), '-o', out]);
    expect(r.error).toBeUndefined();
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('kpig run was started as 2 MPI ranks, but only kpig train runs data-parallel');
    expect(existsSync(out)).toBe(false);
  });
});
