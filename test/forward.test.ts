// The packed forward pass against the plain TypeScript reference (float64), packing independence,
// streamed log-probs, sharded and half-precision checkpoints, and a responsive event loop.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../src/model/model.js';
import { loadReferenceModel, referenceHidden, referenceLogits } from './support/reference-forward.js';
import { ModelDir, tokens } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

const SEQS = [tokens(9, 300, 1), tokens(3, 300, 2), tokens(40, 300, 3), tokens(1, 300, 4)];

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.each([
  { name: 'gpt2-nano', options: { preset: 'gpt2-nano', normInit: 'jitter' as const } },
  { name: 'gpt2-nano untied, bare names, 3 shards', options: { preset: 'gpt2-nano', config: { tie_word_embeddings: false }, gpt2Names: 'bare' as const, shards: 3 } },
  { name: 'llama-nano', options: { preset: 'llama-nano', normInit: 'jitter' as const } },
  { name: 'qwen2-nano, 2 shards', options: { preset: 'qwen2-nano', normInit: 'jitter' as const, shards: 2 } },
  { name: 'GQA 4:1', options: { preset: 'llama-nano', config: { num_attention_heads: 8, num_key_value_heads: 2 } } },
  { name: 'llama-nano bf16', options: { preset: 'llama-nano', dtype: 'bf16' as const } },
  { name: 'qwen2-nano f16', options: { preset: 'qwen2-nano', dtype: 'f16' as const } },
])('$name', ({ options }) => {
  let dir: string;
  let model: Model;
  beforeAll(async () => {
    dir = await dirs.make({ seed: 11, ...options });
    model = await Model.load(dir);
  });
  afterAll(() => model.dispose());

  it('matches the plain TypeScript reference forward pass', async () => {
    const ref = await referenceLogits(dir, SEQS);
    const ours = await model.logits(SEQS);
    for (let s = 0; s < SEQS.length; s++) expect(maxDiff(ours[s], ref[s])).toBeLessThan(1e-4);
  });

  it("gives a sequence the same logits whatever else is packed with it", async () => {
    const alone = await model.logits([SEQS[2]]);
    const packedFirst = await model.logits([SEQS[2], SEQS[0]]);
    const packedLast = await model.logits([SEQS[1], SEQS[3], SEQS[0], SEQS[2]]);
    expect(maxDiff(packedFirst[0], alone[0])).toBe(0);
    expect(maxDiff(packedLast[3], alone[0])).toBe(0);
  });

  it('embeds a sequence as the mean of its final-normed hidden states', async () => {
    const ref = await loadReferenceModel(dir);
    const C = model.info.hiddenSize;
    const ours = await model.embed(SEQS);
    for (let s = 0; s < SEQS.length; s++) {
      const h = referenceHidden(ref, SEQS[s]);
      const mean = new Float64Array(C);
      for (let t = 0; t < SEQS[s].length; t++) for (let c = 0; c < C; c++) mean[c] += h[t * C + c] / SEQS[s].length;
      expect(maxDiff(ours[s], mean)).toBeLessThan(1e-4);
    }
  });

  it('streams teacher-forced log-probs equal to log-softmax of the logits', async () => {
    const logits = await model.logits(SEQS);
    const lp = await model.logprobs(SEQS);
    const V = model.info.vocabSize;
    for (let s = 0; s < SEQS.length; s++) {
      expect(lp[s].length).toBe(SEQS[s].length - 1);
      for (let t = 0; t + 1 < SEQS[s].length; t++) {
        const row = logits[s].subarray(t * V, (t + 1) * V);
        const mx = Math.max(...row);
        let sum = 0;
        for (const v of row) sum += Math.exp(v - mx);
        const expected = row[SEQS[s][t + 1]] - mx - Math.log(sum);
        expect(Math.abs(lp[s][t] - expected)).toBeLessThan(1e-5);
      }
    }
  });
});

describe('engine', () => {
  it('keeps the event loop responsive during a long forward pass', async () => {
    const dir = await dirs.make({ preset: 'gpt2-tiny', seed: 3 });
    const model = await Model.load(dir, { threads: 2 });
    const batch = Array.from({ length: 8 }, (_, i) => tokens(256, 8192, i));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let settled = false;
    const call = model.logprobs(batch).then((r) => {
      settled = true;
      return r;
    });
    // The call has returned a pending Promise; timers keep firing while the worker computes.
    expect(settled).toBe(false);
    const ticksSeen: number[] = [];
    while (!settled) {
      await new Promise((r) => setTimeout(r, 2));
      ticksSeen.push(ticks);
    }
    clearInterval(timer);
    const out = await call;
    expect(out).toHaveLength(8);
    expect(ticksSeen.length).toBeGreaterThan(1);
    expect(ticks).toBeGreaterThan(1);
    model.dispose();
  });

  it('reports architecture, parameters, dtype and memory', async () => {
    const dir = await dirs.make({ preset: 'llama-nano', seed: 1, dtype: 'bf16' });
    const model = await Model.load(dir);
    expect(model.info.modelType).toBe('llama');
    expect(model.info.numKvHeads).toBe(2);
    expect(model.info.weightsDtype).toBe('BF16');
    // llama-nano: embeddings + untied head (2·512·64) + 2 layers of attention and MLP + norms.
    const C = 64, F = 176, V = 512, qd = 64, kd = 32;
    const perLayer = C * qd + 2 * C * kd + qd * C + 3 * C * F + 2 * C;
    expect(model.info.numParams).toBe(2 * V * C + 2 * perLayer + C);
    expect(model.info.memoryBytes).toBe(4 * model.info.numParams);
    expect(model.info.weightsFileBytes).toBeGreaterThan(2 * model.info.numParams);
    model.dispose();
  });

  it('rejects calls on a disposed model', async () => {
    const dir = await dirs.make({ preset: 'gpt2-nano', seed: 1 });
    const model = await Model.load(dir);
    model.dispose();
    await expect(model.logits([[1, 2]])).rejects.toMatchObject({ code: 'E_INPUT' });
  });
});
