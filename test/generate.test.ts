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
