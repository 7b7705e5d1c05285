// The run config: defaults, YAML and JSON files, dotted overrides, and one clear error per bad field.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../src/errors/index.js';
import { RunConfigError, loadRunConfig, resolveRunConfig } from '../src/pipeline/run-config.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('run config', () => {
  it('fills in the defaults and resolves paths against the config folder', () => {
    const c = resolveRunConfig({ model: 'm', data: 'd', strategy: 'random' }, { baseDir: '/runs' });
    expect(c.model).toBe('/runs/m');
    expect(c.data).toBe('/runs/d');
    expect(c.strategy).toMatchObject({ name: 'random', m: 200, lambda: 0.1, gamma: 0.5, tau: null, ig: 'ce' });
    expect(c.train).toMatchObject({ mode: 'full', batchSize: 8, epochs: 1 });
    expect(c.stream).toBe('default');
    expect(c.name).toBe('random');
    // Resolving a resolved config changes nothing (what --resume relies on).
    expect(resolveRunConfig(JSON.parse(JSON.stringify(c)))).toEqual(c);
  });

  it('reads YAML with overrides by dotted path', () => {
    const path = join(dir, 'run.yaml');
    writeFileSync(path, 'model: base\ndata: tasks\nstrategy:\n  name: kpig\n  m: 20\ntrain:\n  lr: 0.01\n');
    const c = loadRunConfig(path, { 'strategy.m': '7', 'strategy.diversity': 'false', 'train.loraTargets': '["q_proj"]', seed: '3' });
    expect(c.strategy.m).toBe(7);
    expect(c.strategy.diversity).toBe(false);
    expect(c.train.loraTargets).toEqual(['q_proj']);
    expect(c.train.lr).toBe(0.01);
    expect(c.seed).toBe(3);
    expect(c.model).toBe(join(dir, 'base'));
  });

  it.each([
    [{ model: 'm', data: 'd', strategy: { name: 'magic' } }, 'strategy.name', /not one of none, random, multitask, kpig, inscl, ewc, lwf/],
    [{ model: 'm', data: 'd', strategy: { name: 'kpig', m: -1 } }, 'strategy.m', /must be ≥ 0, got -1/],
    [{ model: 'm', data: 'd', strategy: { name: 'kpig', m: 2.5 } }, 'strategy.m', /must be an integer/],
    [{ model: 'm', data: 'd', strategy: { name: 'kpig', tau: 0 } }, 'strategy.tau', /must be > 0/],
    [{ model: 'm', data: 'd', train: { mode: 'half' } }, 'train.mode', /not one of full, lora/],
    [{ model: 'm', data: 'd', train: { batchsize: 4 } }, 'train.batchsize', /unknown field/],
    [{ data: 'd' }, 'model', /must be a non-empty string/],
    [{ model: 'm', data: 'd', stream: { seen: [] } }, 'stream.seen', /at least one task/],
    [{ model: 'm', data: 'd', seed: -2 }, 'seed', /must be ≥ 0/],
  ])('names the bad field: %j', (raw, field, message) => {
    let err: unknown;
    try {
      resolveRunConfig(raw);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RunConfigError);
    expect((err as RunConfigError).field).toBe(field);
    expect((err as Error).message).toMatch(message);
  });

  it('says which file is not valid YAML or JSON', () => {
    const path = join(dir, 'bad.json');
    writeFileSync(path, '{"model": ');
    expect(() => loadRunConfig(path)).toThrow(InputError);
    expect(() => loadRunConfig(path)).toThrow(/bad\.json: not valid JSON/);
    expect(() => loadRunConfig(join(dir, 'missing.yaml'))).toThrow(/cannot read the run config/);
  });
});
