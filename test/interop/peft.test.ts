// PEFT adapters both ways: adapters PEFT wrote (plain, rsLoRA, rank_pattern + alpha_pattern) give
// PEFT's logits within 1e-4 when kpig loads them onto the base; DoRA is refused by name; an
// adapter kpig trained on all-linear targets loads in PEFT with kpig's logits.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Model } from '../../src/model/model.js';
import { loadAdapter, saveAdapter } from '../../src/train/checkpoint.js';
import { Trainer } from '../../src/train/trainer.js';
import { interopPython, runPython, scratch } from './python.js';

const python = interopPython(['torch', 'transformers', 'peft']);
const root = scratch('kpig-peft-');
afterAll(() => root.cleanup());
const script = join(__dirname, 'peft_adapters.py');

function worst(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]));
  return w;
}

describe.skipIf(!python.ok)(`PEFT adapters${python.ok ? '' : ` (skipped: ${python.reason})`}`, () => {
  let written: { base: string; ids: number[]; cases: { name: string; dir: string; logits: number[] }[] };
  it('PEFT writes the adapters and their logits', () => {
    written = JSON.parse(runPython(python.path!, [script, 'write', root.dir]));
    expect(written.cases).toHaveLength(5);
  });

  it.each(['plain', 'rslora', 'patterns', 'rslora-patterns'])('%s: kpig logits = PEFT logits within 1e-4', async (name) => {
    const c = written.cases.find((x) => x.name === name)!;
    const model = await Model.load(written.base, { tokenizer: false, threads: 1 });
    const [plain] = await model.logits([written.ids]);
    await loadAdapter(model, c.dir);
    const [got] = await model.logits([written.ids]);
    expect(worst(got, c.logits)).toBeLessThan(1e-4);
    // The adapter moves the logits far more than the tolerance: a wrong scale cannot pass.
    expect(worst(plain, c.logits)).toBeGreaterThan(1e-2);
    model.dispose();
  });

  it('refuses a DoRA adapter by name', async () => {
    const model = await Model.load(written.base, { tokenizer: false, threads: 1 });
    await expect(loadAdapter(model, written.cases.find((x) => x.name === 'dora')!.dir)).rejects.toThrow(/DoRA adapters \(use_dora: true\) are not supported/);
    model.dispose();
  });

  it('an adapter kpig trained on all-linear targets loads in PEFT with the same logits', async () => {
    const model = await Model.load(written.base, { tokenizer: false, threads: 1 });
    const trainer = new Trainer(model, { mode: 'lora', lora: { rank: 4, alpha: 8, targets: ['all-linear'] }, lr: 5e-2, batchSize: 2, seed: 1 });
    const seq = { tokens: written.ids, weights: written.ids.map((_, i) => (i < written.ids.length - 1 ? 1 : 0)) };
    for (let i = 0; i < 3; i++) await trainer.trainStep([seq, seq], 5e-2);
    const [ours] = await model.logits([written.ids]);
    const dir = join(root.dir, 'kpig-adapter');
    await saveAdapter(model, dir);
    const theirs = JSON.parse(runPython(python.path!, [script, 'read', written.base, dir, JSON.stringify(written.ids)])).logits as number[];
    expect(worst(ours, theirs)).toBeLessThan(1e-4);
    model.dispose();
  });
});
