// Paired information-gain scoring: parity with the PyTorch oracle (reference.py ig), real prefix
// sharing, independence from the rest of the batch, and bad pairs.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../src/errors/index.js';
import { Model } from '../src/model/model.js';
import { scorePairs, type IgPairInput } from '../src/scoring/pairs.js';
import { findOracle, runOracle } from './support/oracle.js';
import { ModelDir, tokens } from './support/models.js';

const oracle = findOracle();
if ('skip' in oracle) console.warn(`IG parity SKIPPED: ${oracle.skip}`);
const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

/** Pairs like the peers' examples: a masked span in the instruction, a shared input and response. */
function makePairs(): IgPairInput[] {
  const pairs: IgPairInput[] = [];
  for (let i = 0; i < 5; i++) {
    const instr = tokens(12 + i, 500, 10 + i), input = tokens(9, 500, 20 + i), resp = tokens(4 + i, 500, 30 + i);
    const masked = [...instr.slice(0, 3 + i), 3, 3, ...instr.slice(8 + i)]; // a key span replaced by two mask ids
    pairs.push({ full: [...instr, ...input, ...resp], masked: [...masked, ...input, ...resp], responseLen: resp.length });
  }
  const same = tokens(10, 500, 99);
  pairs.push({ full: same, masked: same, responseLen: 3 }); // nothing masked: every gain is 0
  pairs.push({ full: [7, ...tokens(8, 500, 5)], masked: [8, ...tokens(8, 500, 5)], responseLen: 2 }); // differ at token 0
  // The key part deleted right before the response: the masked sequence's first response-predicting
  // position lies in the shared prefix.
  const instr = tokens(10, 500, 41), resp = [401, 402, 403];
  pairs.push({ full: [...instr, ...resp], masked: [...instr.slice(0, 8), ...resp], responseLen: resp.length });
  return pairs;
}

describe.skipIf('skip' in oracle)('IG scores against reference.py ig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kpig-ig-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const python = 'python' in oracle ? oracle.python : '';

  it.each(['gpt2-nano', 'llama-nano', 'qwen2-nano'])('%s: every per-sample and per-token quantity within 1e-4', async (preset) => {
    const modelDir = join(dir, preset);
    runOracle(python, ['make-model', '--preset', preset, '--seed', '11', '--norm-init', 'jitter', '--out', modelDir]);
    const pairs = makePairs();
    const input = join(dir, `${preset}.json`), output = join(dir, `${preset}.out.json`);
    writeFileSync(input, JSON.stringify({ pairs: pairs.map((p) => ({ full: p.full, masked: p.masked, response_len: p.responseLen })) }));
    runOracle(python, ['ig', '--model', modelDir, '--input', input, '--out', output, '--per-token']);
    const ref = JSON.parse(readFileSync(output, 'utf8'));
    const model = await Model.load(modelDir, { tokenizer: false });
    const ours = await scorePairs(model, pairs, { perToken: true });
    let worst = 0;
    ours.forEach((s, i) => {
      const r = ref[i];
      const pairsOf: [number, number][] = [
        [s.ceFull, r.ce_full], [s.ceMasked, r.ce_masked], [s.igCe, r.ig_ce], [s.igKl, r.ig_kl], [s.igJs, r.ig_js],
        [s.entropyFull, r.entropy_full], [s.entropyMasked, r.entropy_masked],
      ];
      for (const [a, b] of pairsOf) worst = Math.max(worst, Math.abs(a - b));
      expect(s.nTokens).toBe(r.n_tokens);
      const pt = s.perToken!;
      const keys = [['nllFull', 'nll_full'], ['nllMasked', 'nll_masked'], ['kl', 'kl'], ['js', 'js'], ['entropyFull', 'entropy_full'], ['entropyMasked', 'entropy_masked']] as const;
      for (const [ok, rk] of keys) for (let t = 0; t < s.nTokens; t++) worst = Math.max(worst, Math.abs(pt[ok][t] - r.per_token[rk][t]));
    });
    console.log(`${preset}: worst |Δ| over every IG quantity ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(1e-4);
    const same = ours[5];
    expect([same.igCe, same.igKl, same.igJs]).toEqual([0, 0, 0]);
    model.dispose();
  });
});

describe('IG scoring', () => {
  it('computes the shared prefix once: positions = len(full) + len(masked) − min(shared, first response-predicting row)', async () => {
    const model = await Model.load(await dirs.make({ preset: 'llama-nano', seed: 2 }));
    const pairs = makePairs();
    const scores = await scorePairs(model, pairs);
    scores.forEach((s, i) => {
      const { full, masked } = pairs[i];
      let shared = 0;
      while (shared < full.length && shared < masked.length && full[shared] === masked[shared]) shared++;
      expect(s.sharedPrefix).toBe(shared);
      // A masked sequence computes its own response-predicting rows, from len − R − 1 on.
      expect(s.positionsComputed).toBe(full.length + masked.length - Math.min(shared, masked.length - pairs[i].responseLen - 1));
    });
    expect(scores[0].sharedPrefix).toBe(3);
    expect(scores[6].sharedPrefix).toBe(0);
    expect(scores[7].sharedPrefix).toBe(8);
    // Sharing changes nothing: scoring a pair alone, or its sequences as unrelated plain runs, agrees.
    const alone = await scorePairs(model, [pairs[2]]);
    expect(Math.abs(alone[0].igKl - scores[2].igKl)).toBeLessThan(1e-6);
    const [lpFull, lpMasked] = await model.logprobs([pairs[2].full, pairs[2].masked]);
    const R = pairs[2].responseLen;
    const ce = (lp: Float32Array) => -lp.subarray(lp.length - R).reduce((a, b) => a + b, 0) / R;
    expect(Math.abs(ce(lpFull) - scores[2].ceFull)).toBeLessThan(1e-4);
    expect(Math.abs(ce(lpMasked) - scores[2].ceMasked)).toBeLessThan(1e-4);
    model.dispose();
  });

  it('scores with bf16 matmuls within bf16 rounding of fp32, the head packed once across chunks', async () => {
    const model = await Model.load(await dirs.make({ preset: 'llama-nano', seed: 4 }));
    // 3 pairs × 40 response tokens: more than one 64-row-pair head chunk, so the packed head is reused.
    const pairs: IgPairInput[] = [0, 1, 2].map((i) => {
      const instr = tokens(14, 500, 40 + i), input = tokens(6, 500, 50 + i), resp = tokens(40, 500, 60 + i);
      const masked = [...instr.slice(0, 2 + i), 3, 3, 3, ...instr.slice(7 + i)];
      return { full: [...instr, ...input, ...resp], masked: [...masked, ...input, ...resp], responseLen: resp.length };
    });
    const fp32 = await scorePairs(model, pairs);
    model.setMatmulPrecision('bf16');
    const bf16 = await scorePairs(model, pairs);
    const [lpFull] = await model.logprobs([pairs[1].full]);
    model.setMatmulPrecision('fp32');
    for (let i = 0; i < pairs.length; i++) {
      for (const k of ['ceFull', 'ceMasked', 'entropyFull', 'entropyMasked'] as const) {
        expect(Math.abs(bf16[i][k] - fp32[i][k]) / fp32[i][k]).toBeLessThan(1e-2);
        expect(bf16[i][k]).not.toBe(fp32[i][k]); // the rounding really happened
      }
      expect(Math.abs(bf16[i].igCe - fp32[i].igCe)).toBeLessThan(1e-2);
      expect(Math.abs(bf16[i].igKl - fp32[i].igKl)).toBeLessThan(1e-2);
    }
    // A row's bf16 product does not depend on the batch: the streamed log-probs give the same CE.
    const R = pairs[1].responseLen;
    const ce = -lpFull.subarray(lpFull.length - R).reduce((a, b) => a + b, 0) / R;
    expect(Math.abs(ce - bf16[1].ceFull)).toBeLessThan(1e-4);
    model.dispose();
  });

  it('rejects bad pairs with the pair and the reason', async () => {
    const model = await Model.load(await dirs.make({ preset: 'gpt2-nano', seed: 2 }));
    await expect(scorePairs(model, [{ full: [1, 2, 3, 4], masked: [1, 5, 3, 9], responseLen: 1 }])).rejects.toThrow(
      'pair 0: the full and masked sequences do not end with the same 1 response tokens',
    );
    await expect(scorePairs(model, [{ full: [1, 2, 3], masked: [1, 2, 3], responseLen: 0 }])).rejects.toThrow(/response_len 0 must be in \[1, 2\]/);
    await expect(scorePairs(model, [{ full: [1, 2, 3], masked: [1, 2, 3], responseLen: 1 }, { full: [1, 600, 3], masked: [1, 2, 3], responseLen: 1 }])).rejects.toThrow(
      /pair 1: token id 600 at position 1 of the full sequence/,
    );
    await expect(scorePairs(model, [{ full: tokens(200, 500, 1), masked: tokens(200, 500, 1), responseLen: 1 }])).rejects.toBeInstanceOf(InputError);
    model.dispose();
  });
});
