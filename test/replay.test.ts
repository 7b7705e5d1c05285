// Replay plans against their definitions: exact-sum rounding, KPIG's allocation and lowest-IG
// choice, InsCL's Wasserstein distances (hand-computed cases and POT's ot.emd2), InsInfo, and the
// uniformity of random replay.
import { describe, expect, it } from 'vitest';
import { InputError } from '../src/errors/index.js';
import { deriveSeed, mulberry32, sampleWithoutReplacement } from '../src/random/rng.js';
import { insclAllocation, kpigAllocation, lowestIndices, roundExactSum, stdDev } from '../src/replay/allocate.js';
import { insInfo, offlineTags } from '../src/replay/insinfo.js';
import { cosineCost, emd } from '../src/replay/ot.js';
import { havePot, potEmd2 } from './support/pot.js';

describe('exact-sum rounding', () => {
  it('splits by largest remainder, ties to the lower index', () => {
    expect(roundExactSum([1, 1, 1], 10)).toEqual([4, 3, 3]);
    expect(roundExactSum([0.5, 0.3, 0.2], 7)).toEqual([4, 2, 1]); // 3.5, 2.1, 1.4 → floors 3,2,1 + 1 to the .5
    expect(roundExactSum([2, 0, 1], 3)).toEqual([2, 0, 1]);
    expect(roundExactSum([1, 2], 0)).toEqual([0, 0]);
  });
  it('always sums to the budget over many random cases', () => {
    const rnd = mulberry32(5);
    for (let k = 0; k < 500; k++) {
      const w = Array.from({ length: 1 + Math.floor(rnd() * 9) }, () => rnd() * 3);
      const total = Math.floor(rnd() * 1000);
      const c = roundExactSum(w, total);
      expect(c.reduce((a, b) => a + b, 0)).toBe(total);
      // Each count is within one unit of its exact share.
      const ws = w.reduce((a, b) => a + b, 0);
      c.forEach((x, i) => expect(Math.abs(x - (total * w[i]) / ws)).toBeLessThan(1 + 1e-9));
    }
  });
  it('respects caps and hands the excess to tasks with room', () => {
    expect(roundExactSum([1, 1, 1], 30, [5, 100, 100])).toEqual([5, 13, 12]);
    expect(roundExactSum([1, 1], 30, [4, 6])).toEqual([4, 6]);
  });
  it('rejects a negative budget or weight', () => {
    expect(() => roundExactSum([1], -1)).toThrow(InputError);
    expect(() => roundExactSum([1, -2], 3)).toThrow(/weight 1/);
  });
});

describe('KPIG allocation', () => {
  it('gives n_k ∝ exp(−IG_k/τ) with τ = std of the task IGs', () => {
    const igs = [0.2, 0.8, 0.5];
    const tau = stdDev(igs); // population std: sqrt(((−0.3)²+0.3²+0²)/3) = 0.2449…
    expect(tau).toBeCloseTo(Math.sqrt(0.06), 12);
    const { counts, weights } = kpigAllocation(igs, 400);
    const e = igs.map((g) => Math.exp(-g / tau));
    const es = e.reduce((a, b) => a + b, 0);
    // exact shares 400·e_k/Σe = 247.6…, 21.0…, 131.2… (hand-checked with the formula)
    const exact = e.map((x) => (400 * x) / es);
    counts.forEach((c, k) => expect(Math.abs(c - exact[k])).toBeLessThan(1));
    expect(counts.reduce((a, b) => a + b, 0)).toBe(400);
    expect(counts[0]).toBeGreaterThan(counts[2]);
    expect(counts[2]).toBeGreaterThan(counts[1]);
    expect(weights[0] / weights[1]).toBeCloseTo(Math.exp(0.6 / tau), 10);
  });
  it('splits equally when every task has the same IG (τ = 0), and honours a fixed τ', () => {
    expect(kpigAllocation([0.4, 0.4, 0.4], 9).counts).toEqual([3, 3, 3]);
    const { counts } = kpigAllocation([0, 1], 100, { tau: 1 });
    expect(counts).toEqual([73, 27]); // 100·1/(1+e^−1) = 73.1
  });
  it('takes the lowest-IG items, ties by position', () => {
    expect(lowestIndices([0.3, -0.1, 0.2, 0.2, 0.9], 3)).toEqual([1, 2, 3]);
    expect(lowestIndices([1, 2], 5)).toEqual([0, 1]);
  });
});

describe('InsCL', () => {
  it('allocates α_j = W_j/ΣW·α with an exact sum', () => {
    expect(insclAllocation([0.2, 0.6], 80)).toEqual([20, 60]);
    expect(insclAllocation([1, 1, 1], 100)).toEqual([34, 33, 33]);
  });
  it('computes hand-checked Wasserstein distances', () => {
    expect(emd([0.5, 0.5], [1], [[0], [1]])).toBeCloseTo(0.5, 14);
    expect(emd([1, 1], [1, 1], [[0, 1], [1, 0]])).toBeCloseTo(0, 14);
    // Move 0.3 from source 0 to sink 1 free, 0.6 from 1 to 0 free, and 0.1 from 1 to 1 at cost 1.
    expect(emd([0.3, 0.7], [0.6, 0.4], [[1, 0], [0, 1]])).toBeCloseTo(0.1, 14);
    // Three points on a line, unit spacing: moving mass (1,0,0) to (0,0,1) costs 2.
    expect(emd([1, 0, 0], [0, 0, 1], [[0, 1, 2], [1, 0, 1], [2, 1, 0]])).toBeCloseTo(2, 14);
  });
  it('uses 1 − cos as the cost', () => {
    const c = cosineCost([[1, 0], [1, 1]], [[0, 2], [3, 0]]);
    expect(c[0]).toEqual([1, 0]);
    expect(c[1][0]).toBeCloseTo(1 - Math.SQRT1_2, 12);
  });
  it.skipIf(!havePot())('agrees with POT ot.emd2 on random cases', () => {
    const rnd = mulberry32(11);
    const cases = Array.from({ length: 120 }, (_, k) => {
      const n = 1 + Math.floor(rnd() * 25), m = 1 + Math.floor(rnd() * 25);
      const a = Array.from({ length: n }, () => rnd()), b = Array.from({ length: m }, () => rnd());
      if (k % 4 === 0 && n > 1) a[0] = 0;
      const sa = a.reduce((x, y) => x + y, 0), sb = b.reduce((x, y) => x + y, 0);
      const xs = Array.from({ length: n }, () => Array.from({ length: 6 }, () => rnd() - 0.5));
      const ys = Array.from({ length: m }, () => Array.from({ length: 6 }, () => rnd() - 0.3));
      return { a: a.map((x) => x / sa), b: b.map((x) => x / sb), C: cosineCost(xs, ys) };
    });
    const ref = potEmd2(cases);
    cases.forEach((c, k) => expect(Math.abs(emd(c.a, c.b, c.C) - ref[k])).toBeLessThan(1e-9));
  });
  it('scores instructions by InsInfo = Σ log(N / f_tag)', () => {
    const info = insInfo([['a', 'b'], ['a'], ['c']]);
    expect(info[0]).toBeCloseTo(Math.log(3 / 2) + Math.log(3), 12);
    expect(info[1]).toBeCloseTo(Math.log(3 / 2), 12);
    expect(info[2]).toBeCloseTo(Math.log(3), 12);
    expect(offlineTags('Answer with "good" or "bad".', [{ start: 13, end: 17 }, { start: 23, end: 26 }])).toEqual(['key:good', 'key:bad', 'word:good']);
  });
  it('rejects empty or massless sets', () => {
    expect(() => emd([], [1], [])).toThrow(InputError);
    expect(() => emd([0, 0], [1], [[1], [1]])).toThrow(/sum to 0/);
  });
});

describe('random replay', () => {
  it('derives a different stream for every seed', () => {
    const seeds = new Set(Array.from({ length: 1000 }, (_, s) => deriveSeed(s, 'random-replay', 2, 'task0')));
    expect(seeds.size).toBe(1000);
    expect(deriveSeed(3, 'a', 1)).not.toBe(deriveSeed(3, 'a', 2));
  });

  it('draws uniformly without replacement', () => {
    const items = Array.from({ length: 10 }, (_, i) => i);
    const hits = new Array(10).fill(0);
    const trials = 20000;
    for (let k = 0; k < trials; k++) {
      const pick = sampleWithoutReplacement(items, 3, mulberry32(deriveSeed(7, 'trial', k)));
      expect(new Set(pick).size).toBe(3);
      for (const i of pick) hits[i]++;
    }
    // Each item is expected 6000 times (3/10 of the trials); a chi-square with 9 degrees of
    // freedom stays under 27.9 with probability 0.999.
    const expected = (trials * 3) / 10;
    const chi2 = hits.reduce((a, h) => a + (h - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(27.9);
  });
});

describe('LLM tagger', () => {
  it('asks an OpenAI-compatible endpoint for tags, caches them, and retries a malformed answer', async () => {
    const { createServer } = await import('node:http');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { ChatClient } = await import('../src/llm/client.js');
    const { llmTags } = await import('./../src/replay/insinfo.js');
    let calls = 0;
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        calls++;
        const prompt = JSON.parse(body).messages[1].content as string;
        // The first answer is not the JSON asked for; the client must retry, not cache it.
        const content = calls === 1 ? 'tags: yes/no' : JSON.stringify({ tags: prompt.includes('yes') ? ['Yes/No answer', 'sentiment', 'sentiment'] : ['math'] });
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ choices: [{ message: { role: 'assistant', content } }] }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const cacheDir = mkdtempSync(join(tmpdir(), 'kpig-tags-'));
    try {
      const client = new ChatClient({ baseUrl: `http://127.0.0.1:${port}/v1`, model: 'm', apiKey: 'k', cacheDir, backoffMs: 1, maxRetries: 2 });
      expect(await llmTags(client, 'Answer "yes" or "no".')).toEqual(['yes/no answer', 'sentiment']);
      expect(calls).toBe(2);
      expect(await llmTags(client, 'Answer "yes" or "no".')).toEqual(['yes/no answer', 'sentiment']);
      expect(calls).toBe(2); // from the cache
    } finally {
      server.close();
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
});
