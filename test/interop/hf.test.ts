// Checkpoints written by Hugging Face transformers (5, where the RoPE settings live in
// `rope_parameters`): kpig loads each folder and must give the logits transformers computed,
// within 1e-4, for Llama with θ = 5e5 and with llama3, linear and dynamic scaling, Qwen2 with
// θ = 1e6, Mistral, GPT-2, and YaRN (defaults; given betas, truncate and attention factor; DeepSeek's
// mscale pair); a RoPE variant the engine does not implement (longrope) is refused by name. The Python side needs torch and transformers (test/interop/python.ts says where it looks).
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { interopPython, runPython, scratch } from './python.js';

const python = interopPython(['torch', 'transformers']);
const root = scratch('kpig-hf-');
afterAll(() => root.cleanup());

interface Case {
  name: string;
  dir: string;
  ids: number[];
  logits: number[];
}

describe.skipIf(!python.ok)(`transformers checkpoints${python.ok ? '' : ` (skipped: ${python.reason})`}`, () => {
  let cases: Case[] = [];
  it('transformers writes the models and their logits', () => {
    const out = runPython(python.path!, [join(__dirname, 'hf_models.py'), root.dir]);
    const parsed = JSON.parse(out) as { transformers: string; cases: Case[] };
    expect(Number(parsed.transformers.split('.')[0])).toBeGreaterThanOrEqual(5);
    cases = parsed.cases;
    expect(cases.map((c) => c.name)).toContain('llama-llama3');
  });

  it.each(['llama-theta5e5', 'llama-llama3', 'llama-linear', 'llama-dynamic', 'qwen2-theta1e6', 'mistral', 'gpt2', 'llama-yarn', 'qwen2-yarn-betas', 'llama-yarn-mscale', 'gemma'])('%s: kpig logits = transformers logits within 1e-4', async (name) => {
    const c = cases.find((x) => x.name === name)!;
    const model = await Model.load(c.dir, { tokenizer: false, threads: 1 });
    const [got] = await model.logits([c.ids]);
    expect(got.length).toBe(c.logits.length);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - c.logits[i]));
    expect(worst).toBeLessThan(1e-4);
    // The TypeScript reading of config.json agrees with the engine's.
    const shape = describeConfig(JSON.parse(readFileSync(join(c.dir, 'config.json'), 'utf8')));
    if (name !== 'gpt2') expect([shape.ropeType, shape.ropeTheta]).toEqual([model.info.ropeType, model.info.ropeTheta]);
    model.dispose();
  });

  it('refuses a RoPE variant it does not implement (longrope) by name, in the engine and in TypeScript', async () => {
    const c = cases.find((x) => x.name === 'llama-theta5e5')!;
    const dir = join(root.dir, 'llama-longrope');
    cpSync(c.dir, dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    cfg.rope_parameters = { rope_type: 'longrope', rope_theta: 1e4, short_factor: [1], long_factor: [2], original_max_position_embeddings: 16 };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    await expect(Model.load(dir, { tokenizer: false })).rejects.toThrow(/rope_type 'longrope' is not supported \(default, linear, dynamic, llama3, yarn\)/);
    expect(() => describeConfig(cfg)).toThrow(/rope_type 'longrope' is not supported/);
  });
});
