// `device: 'cuda'`: a machine without a usable GPU (or a build without the CUDA backend) keeps the
// model on the CPU, says why, and gives the CPU's very scores; on a machine with one, the GPU's
// scores are held to the CPU's within bf16 rounding. Unknown devices are refused.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../src/model/model.js';
import { resolveRunConfig } from '../src/pipeline/run-config.js';
import { scorePairs } from '../src/scoring/pairs.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

let dir: string;
beforeAll(async () => {
  dir = await dirs.make({ preset: 'llama-nano', seed: 2, config: { vocab_size: 259 } });
});

const pairs = Array.from({ length: 6 }, (_, i) => {
  const full = Array.from({ length: 30 + i }, (_, k) => (k * 7 + i * 13) % 250);
  const masked = full.map((t, k) => (k >= 3 && k < 9 ? (t + 11) % 250 : t));
  return { full, masked, responseLen: 5 };
});

describe("device: 'cuda'", () => {
  it('falls back to the CPU saying why, with the CPU’s scores; or, on a GPU, scores within bf16 rounding', async () => {
    const cpu = await Model.load(dir, { threads: 1, tokenizer: false });
    const gpu = await Model.load(dir, { threads: 1, tokenizer: false, device: 'cuda' });
    try {
      const a = await scorePairs(cpu, pairs), b = await scorePairs(gpu, pairs);
      if (gpu.info.deviceNote) {
        expect(gpu.info.device).toBe('cpu');
        expect(gpu.info.deviceNote).toMatch(/^cuda was asked for and is not used: .+; running on the CPU$/);
        expect(gpu.info.deviceNote).toMatch(/no CUDA backend|libcuda\.so\.1|cudaGetDeviceCount|compute capability/);
        expect(b).toEqual(a);
      } else {
        expect(gpu.info.device).toMatch(/^cuda:/);
        for (let i = 0; i < a.length; i++) for (const k of ['ceFull', 'ceMasked', 'igCe', 'igKl', 'igJs'] as const) expect(Math.abs(a[i][k] - b[i][k])).toBeLessThan(2e-2);
      }
    } finally {
      cpu.dispose();
      gpu.dispose();
    }
  });

  it('refuses an unknown device, in Model.load and in a run config', async () => {
    await expect(Model.load(dir, { device: 'tpu' as 'cuda', tokenizer: false })).rejects.toThrow(/device must be cpu or cuda, got 'tpu'/);
    expect(() => resolveRunConfig({ model: dir, data: dir, device: 'gpu' })).toThrow(/device: "gpu" is not one of cpu, cuda/);
    expect(resolveRunConfig({ model: dir, data: dir }).device).toBe('cpu');
  });

  it('kpig score --device cuda says where it runs and writes what the CPU writes', () => {
    const rows = join(dirs.root, 'rows.jsonl');
    writeFileSync(
      rows,
      Array.from({ length: 8 }, (_, i) => JSON.stringify({ task_id: "t", instance_id: `i${i}`, instruction: `Answer "yes" or "no" about ${i}.`, input: `case ${i}`, output: i % 2 ? 'yes' : 'no', key_spans: [[7, 12], [16, 20]] })).join('\n') + '\n',
    );
    const run = (device: string, out: string) => spawnSync(process.execPath, ['dist/cli/main.js', 'score', dir, '--data', rows, '--out', out, '--device', device, '-t', '1'], { encoding: 'utf8' });
    const a = run('cpu', join(dirs.root, 'cpu.arrow')), b = run('cuda', join(dirs.root, 'cuda.arrow'));
    expect(a.status, a.stderr).toBe(0);
    expect(b.status, b.stderr).toBe(0);
    if (/cuda was asked for and is not used/.test(b.stderr)) expect(readFileSync(join(dirs.root, 'cuda.arrow')).equals(readFileSync(join(dirs.root, 'cpu.arrow')))).toBe(true);
    expect(a.stderr).not.toMatch(/cuda was asked for/);
    expect(run('tpu', join(dirs.root, 'x.arrow')).status).toBe(2);
  });
});
