// Greedy generation with the KV cache against greedy decoding by repeated full forward passes,
// and every way a sequence can finish: EOS, max tokens, stop string, full context, cancellation.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelledError } from '../src/errors/index.js';
import { Model } from '../src/model/model.js';
import { ModelDir, tokens } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Greedy decoding without a cache: one full forward pass per new token. */
async function naiveGreedy(model: Model, prompt: number[], n: number, eos: number[] = []): Promise<number[]> {
  const seq = [...prompt];
  const out: number[] = [];
  const V = model.info.vocabSize;
  for (let i = 0; i < n && seq.length <= model.info.maxPositions; i++) {
    const [logits] = await model.logits([seq]);
    const next = argmax(logits.subarray((seq.length - 1) * V, seq.length * V));
    if (eos.includes(next)) break;
    out.push(next);
    seq.push(next);
  }
  return out;
}

describe.each([
  { name: 'gpt2-nano', preset: 'gpt2-nano' },
  { name: 'llama-nano', preset: 'llama-nano' },
  { name: 'qwen2-nano', preset: 'qwen2-nano' },
])('generation on $name', ({ preset }) => {
  let model: Model;
  // vocab 259: every generated id is a byte-tokenizer id, so texts decode.
  beforeAll(async () => {
    model = await Model.load(await dirs.make({ preset, seed: 5, normInit: 'jitter', config: { vocab_size: 259 } }));
  });
  afterAll(() => model.dispose());
  const prompts = [tokens(7, 256, 1), tokens(2, 256, 2), tokens(19, 256, 3)];

  it('matches greedy decoding by full forward passes, for every prompt of a batch', async () => {
    const got = await model.generate(prompts, { maxNewTokens: 12, eosIds: [] });
    for (let i = 0; i < prompts.length; i++) {
      expect(got[i].tokens).toEqual(await naiveGreedy(model, prompts[i], 12));
      expect(got[i].finishReason).toBe('length');
    }
  });

  it('gives a prompt the same output alone and in a batch', async () => {
    const batch = await model.generate(prompts, { maxNewTokens: 10, eosIds: [] });
    const alone = await model.generate([prompts[2]], { maxNewTokens: 10, eosIds: [] });
    expect(alone[0].tokens).toEqual(batch[2].tokens);
  });

  it('stops a sequence at EOS without emitting it', async () => {
    const free = await model.generate([prompts[0]], { maxNewTokens: 8, eosIds: [] });
    const eos = free[0].tokens[3];
    const firstAt = free[0].tokens.indexOf(eos);
    const [g] = await model.generate([prompts[0]], { maxNewTokens: 8, eosIds: [eos] });
    expect(g.tokens).toEqual(free[0].tokens.slice(0, firstAt));
    expect(g.finishReason).toBe('eos');
  });

  it('stops at a stop string and cuts the text before it', async () => {
    const free = await model.generate(['ab'], { maxNewTokens: 24, eosIds: [] });
    const text = free[0].text;
    // The stop string: the first generated ASCII byte after the first two tokens, as text.
    const at = free[0].tokens.findIndex((t, i) => i >= 2 && t >= 32 && t < 127);
    expect(at).toBeGreaterThan(0);
    const stop = String.fromCharCode(free[0].tokens[at]);
    const [g] = await model.generate(['ab'], { maxNewTokens: 24, eosIds: [], stop: [stop] });
    expect(g.finishReason).toBe('stop');
    expect(g.text).toBe(text.slice(0, text.indexOf(stop)));
    expect(model.tokenizer!.decode(g.tokens)).toContain(stop);
  });

  it('stops when the context is full', async () => {
    const max = model.info.maxPositions;
    const long = tokens(max - 2, 256, 9);
    const [g] = await model.generate([long], { maxNewTokens: 10, eosIds: [] });
    expect(g.finishReason).toBe('context');
    expect(g.tokens).toEqual(await naiveGreedy(model, long, 10));
    expect(g.tokens.length).toBe(3); // positions max−2 and max−1 are fed, the last prediction is kept
  });

  it('streams tokens through onToken in order', async () => {
    const seen: number[][] = [[], []];
    const got = await model.generate(prompts.slice(0, 2), {
      maxNewTokens: 6,
      eosIds: [],
      onToken: (i, t) => seen[i].push(t),
    });
    expect(seen[0]).toEqual(got[0].tokens);
    expect(seen[1]).toEqual(got[1].tokens);
  });
});

describe('generation control', () => {
  it('is cancelled by an AbortSignal with a CancelledError', async () => {
    const model = await Model.load(await dirs.make({ preset: 'gpt2-tiny', seed: 2, config: { vocab_size: 259 } }));
    const controller = new AbortController();
    let n = 0;
    const p = model.generate([tokens(8, 256, 1)], {
      maxNewTokens: 200,
      eosIds: [],
      signal: controller.signal,
      onToken: () => {
        if (++n === 3) controller.abort();
      },
    });
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    expect(n).toBeLessThan(200);
    // The model is still usable afterwards.
    const [g] = await model.generate([tokens(4, 256, 2)], { maxNewTokens: 2, eosIds: [] });
    expect(g.tokens).toHaveLength(2);
    model.dispose();
  });

  it('uses the config EOS by default and accepts maxNewTokens 0', async () => {
    const model = await Model.load(await dirs.make({ preset: 'llama-nano', seed: 8, config: { vocab_size: 259 } }));
    expect(model.info.eosIds).toEqual([257]);
    const [g] = await model.generate(['x'], { maxNewTokens: 0 });
    expect(g.tokens).toEqual([]);
    expect(g.finishReason).toBe('length');
    model.dispose();
  });
});

describe('sampling', () => {
  let model: Model;
  const prompt = [1, 40, 41, 42, 43];
  let probs: number[] = [];
  let sharp: number[] = [];
  const softmax = (row: number[], t: number) => {
    const mx = Math.max(...row);
    const e = row.map((x) => Math.exp((x - mx) / t));
    const z = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / z);
  };
  beforeAll(async () => {
    model = await Model.load(await dirs.make({ preset: 'llama-nano', seed: 8, normInit: 'jitter', config: { vocab_size: 259 } }), { tokenizer: false });
    const V = model.info.vocabSize;
    const [logits] = await model.logits([prompt]);
    const row = Array.from(logits.subarray((prompt.length - 1) * V, prompt.length * V));
    probs = softmax(row, 1);
    // This random model's top logits differ by hundredths: at T = 0.05 its top five are far from
    // uniform (about 0.35 … 0.09), so a sampler that ignored the probabilities would fail below.
    sharp = softmax(row, 0.05);
  });
  afterAll(() => model.dispose());
  const ranked = () => probs.map((p, i) => [p, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const draws = async (n: number, o: { temperature?: number; topK?: number; topP?: number; seed?: number }) =>
    (await model.generate(Array.from({ length: n }, () => prompt), { maxNewTokens: 1, eosIds: [], ...o })).map((g) => g.tokens[0]);

  it('is greedy at temperature 0, with top-k 1, and with a tiny top-p', async () => {
    const greedy = (await model.generate([prompt], { maxNewTokens: 6, eosIds: [] }))[0].tokens;
    for (const o of [{ temperature: 0 }, { temperature: 1.5, topK: 1 }, { temperature: 1.5, topP: 1e-9 }])
      expect((await model.generate([prompt], { maxNewTokens: 6, eosIds: [], ...o }))[0].tokens, JSON.stringify(o)).toEqual(greedy);
  });

  it('draws from softmax(logits / T) cut to the top k, renormalised (4000 draws, total variation < 0.04)', async () => {
    const top = sharp.map((p, i) => [p, i] as const).sort((a, b) => b[0] - a[0]).slice(0, 5);
    const got = await draws(4000, { temperature: 0.05, topK: 5, seed: 3 });
    const allowed = new Set(top.map(([, i]) => i));
    expect(got.every((t) => allowed.has(t))).toBe(true);
    const mass = top.reduce((a, [p]) => a + p, 0);
    const freq = (i: number) => got.filter((t) => t === i).length / got.length;
    const tv = top.reduce((a, [p, i]) => a + Math.abs(freq(i) - p / mass), 0) / 2;
    expect(tv).toBeLessThan(0.04);
    // Uniform draws over the same five would be far off.
    expect(top.reduce((a, [p]) => a + Math.abs(0.2 - p / mass), 0) / 2).toBeGreaterThan(0.1);
  });

  it('keeps the smallest set whose probability reaches top-p', async () => {
    const r = ranked();
    const got = await draws(2000, { temperature: 1, topP: r[0][0] + r[1][0] * 0.5, seed: 4 });
    expect(new Set(got)).toEqual(new Set([r[0][1], r[1][1]]));
  });

  it('is a function of the seed and the prompt index, not of the rest of the batch', async () => {
    const o = { maxNewTokens: 8, eosIds: [], temperature: 1, seed: 11 };
    const [a1] = await model.generate([prompt, [1, 50, 51]], o);
    const [a2] = await model.generate([prompt, [1, 60, 61, 62, 63]], o);
    const [a3] = await model.generate([prompt], o);
    expect(a2.tokens).toEqual(a1.tokens);
    expect(a3.tokens).toEqual(a1.tokens);
    const [other] = await model.generate([prompt], { ...o, seed: 12 });
    expect(other.tokens).not.toEqual(a1.tokens);
  });

  it('refuses bad sampling options', async () => {
    await expect(model.generate([prompt], { temperature: -1 })).rejects.toThrow(/temperature must be a finite number ≥ 0/);
    await expect(model.generate([prompt], { topP: 0 })).rejects.toThrow(/topP must be in \(0, 1\]/);
    await expect(model.generate([prompt], { topK: 1.5 })).rejects.toThrow(/topK must be a non-negative integer/);
  });
});
