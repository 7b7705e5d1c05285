// Gradients of the weighted NLL against central finite differences of the loss, where the loss
// comes from the inference path (streamed log-probs), not the training path under test.
import { afterAll, describe, expect, it } from 'vitest';
import { PRESETS, type ConfigOverrides } from '../src/model/config.js';
import { Model, nativeOf, packSequences } from '../src/model/model.js';
import { ModelDir, tokens } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

const SEQS = [tokens(12, 250, 1), tokens(7, 250, 2)];
// weights[t] weighs predicting token t+1: negative, zero and positive, 0 at each sequence's end.
const WEIGHTS = SEQS.map((s) => s.map((_, t) => (t === s.length - 1 ? 0 : [0.4, -0.3, 0, 0.7, 0.2][t % 5])));

async function lossOf(model: Model): Promise<number> {
  const lp = await model.logprobs(SEQS);
  let loss = 0;
  lp.forEach((row, s) => row.forEach((v, t) => (loss -= WEIGHTS[s][t] * v)));
  return loss;
}

describe.each([
  { name: 'gpt2-nano', preset: 'gpt2-nano' },
  { name: 'llama-nano', preset: 'llama-nano' },
  { name: 'qwen2-nano', preset: 'qwen2-nano' },
  // Gemma's traits: GeGLU, RMSNorm scaling by (1 + w), embeddings times √C, a tied head.
  { name: 'gemma (llama-nano sizes)', config: { ...PRESETS['llama-nano'], model_type: 'gemma' as const, head_dim: 16 } },
])('finite differences: $name', ({ preset, config }: { preset?: string; config?: ConfigOverrides }) => {
  it('full model and LoRA gradients match central differences', async () => {
    const model = await Model.load(await dirs.make({ preset, config, seed: 6, normInit: 'jitter' }));
    const nat = nativeOf(model);
    nat.trainFull();
    const lora = nat.loraAdd({ rank: 2, alpha: 4, targets: preset === 'gpt2-nano' ? ['c_attn', 'mlp.c_fc'] : ['v_proj', 'up_proj'] });
    expect(lora.length).toBe(4);
    // Give B a value so A has a gradient too.
    for (const t of nat.tensors().filter((x) => x.name.endsWith('lora_B.weight')))
      nat.writeTensor(t.name, 'param', Float32Array.from({ length: t.shape[0] * t.shape[1] }, (_, i) => 0.05 * Math.sin(i + 1)));
    const packed = packSequences(SEQS);
    const r = await nat.trainAccumulate(packed.tokens, packed.offsets, Float32Array.from(WEIGHTS.flat()), 0, false);
    expect(Math.abs(r.loss - (await lossOf(model)))).toBeLessThan(1e-4);
    const h = 1e-2;
    let checked = 0;
    for (const t of nat.tensors()) {
      const grad = nat.readTensor(t.name, 'grad');
      const param = nat.readTensor(t.name, 'param');
      // The two largest-magnitude entries of each tensor: small gradients drown in float32 noise.
      const idx = [...grad.keys()].sort((a, b) => Math.abs(grad[b]) - Math.abs(grad[a])).slice(0, 2);
      for (const i of idx) {
        const p = param.slice();
        p[i] = param[i] + h;
        nat.writeTensor(t.name, 'param', p);
        const up = await lossOf(model);
        p[i] = param[i] - h;
        nat.writeTensor(t.name, 'param', p);
        const down = await lossOf(model);
        nat.writeTensor(t.name, 'param', param);
        const fd = (up - down) / (2 * h);
        expect(Math.abs(fd - grad[i]), `${t.name}[${i}]: fd ${fd} vs ${grad[i]}`).toBeLessThan(2e-3 + 3e-2 * Math.abs(grad[i]));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(30);
    model.dispose();
  });
});
