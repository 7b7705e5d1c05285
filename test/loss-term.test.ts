// A user strategy contributes its own loss term through the public hooks, without touching the
// stage loop: its step sequences are what trains, its gradient hook changes the update, and what
// it keeps at the end of a stage comes back at the start of the next (also after a resume).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { runContinual } from '../src/pipeline/continual.js';
import { resolveRunConfig } from '../src/pipeline/run-config.js';
import { plainSequences, type LossTerm } from '../src/replay/loss-terms.js';
import { randomPlan, type Strategy } from '../src/replay/strategy.js';
import { ModelDir } from './support/models.js';
import { tinyRunInputs } from './support/run-inputs.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

let model: string;
let data: string;
beforeAll(async () => {
  ({ model, data } = await tinyRunInputs(dirs));
});

const config = () =>
  resolveRunConfig({
    model,
    data,
    stream: 'main',
    strategy: { name: 'random', m: 2 },
    train: { batchSize: 4, lr: 3e-3, checkpointEvery: 1, maxLength: 128 },
    eval: { maxInstancesPerTask: 2, maxNewTokens: 2, batchSize: 8 },
    seed: 1,
    threads: 1,
  });

/** A term that pulls every weight towards zero (L2, λ = `pull`) and counts what it was asked. */
function l2Term(pull: number) {
  const calls = { steps: 0, sequences: 0, gradients: 0, starts: [] as Array<number | null>, ends: [] as number[] };
  const term: LossTerm = {
    name: 'l2',
    async startStage(ctx) {
      const kept = await ctx.previous('l2.safetensors');
      calls.starts.push(kept ? kept.get('ended')![0] : null);
    },
    async stepSequences(items, ctx) {
      calls.steps++;
      const out = plainSequences(items, ctx);
      calls.sequences += out.sequences.length;
      return out;
    },
    beforeOptimizer(g) {
      calls.gradients++;
      for (const name of g.names()) {
        const p = g.param(name), grad = g.read(name);
        for (let i = 0; i < grad.length; i++) grad[i] += pull * p[i];
        g.write(name, grad);
      }
    },
    async endStage(ctx) {
      calls.ends.push(ctx.stage);
      await ctx.save('l2.safetensors', new Map([['ended', { shape: [1], data: Float32Array.of(ctx.stage) }]]));
    },
  };
  return { term, calls };
}

async function finalWeights(dir: string): Promise<Map<string, Float32Array>> {
  const st = await readSafetensors(join(dir, 'stage-03', 'final', 'model.safetensors'));
  return new Map([...st.tensors].map(([n, t]) => [n, toFloat32(t)]));
}

describe('a user loss term through the public hooks', () => {
  it('trains on its sequences, adds its gradient, and gets back what it kept at the next stage', async () => {
    const none = l2Term(0), strong = l2Term(50);
    const a = join(dirs.root, 'l2-0'), b = join(dirs.root, 'l2-50');
    const strategy = (term: LossTerm): Strategy => ({ name: 'random-l2', plan: (ctx) => randomPlan(ctx), lossTerm: term });
    await runContinual(config(), a, { strategy: strategy(none.term) });
    await runContinual(config(), b, { strategy: strategy(strong.term) });
    // 3 stages: 8 items (2 steps), 8 + 2 (3 steps), 8 + 4 (3 steps).
    expect(none.calls.steps).toBe(8);
    expect(none.calls.gradients).toBe(8);
    expect(none.calls.sequences).toBe(8 + 10 + 12);
    expect(none.calls.ends).toEqual([1, 2, 3]);
    expect(none.calls.starts).toEqual([null, 1, 2]);
    expect(existsSync(join(a, 'stage-02', 'l2.safetensors'))).toBe(true);
    // The pull towards zero shrank the weights.
    const wa = await finalWeights(a), wb = await finalWeights(b);
    let na = 0, nb = 0;
    for (const [name, x] of wa) {
      const y = wb.get(name)!;
      for (let i = 0; i < x.length; i++) (na += x[i] * x[i]), (nb += y[i] * y[i]);
    }
    expect(nb).toBeLessThan(0.9 * na);
  });

  it('a resumed run starts its stage with what the previous stage kept', async () => {
    const first = l2Term(0), second = l2Term(0);
    const dir = join(dirs.root, 'l2-resume');
    const strategy = (term: LossTerm): Strategy => ({ name: 'random-l2', plan: (ctx) => randomPlan(ctx), lossTerm: term });
    await expect(runContinual(config(), dir, { strategy: strategy(first.term), stopAfterSteps: 3 })).rejects.toThrow(/stopped after 3 steps/);
    expect(first.calls.starts).toEqual([null, 1]);
    await runContinual(config(), dir, { strategy: strategy(second.term), resume: true });
    expect(second.calls.starts).toEqual([1, 2]);
    expect(second.calls.ends).toEqual([2, 3]);
  });
});
