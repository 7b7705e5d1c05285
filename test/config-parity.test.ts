// config.json is read twice: by the engine (native/src/model/config.cpp, which loads the model)
// and by TypeScript (describeConfig, for presets, memory estimates and `kpig info` without
// weights). The two must never disagree: on a battery of edited configs of each family, both
// accept or both refuse, and where both accept they agree on every shape and RoPE field.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelWeightsError } from '../src/errors/index.js';
import { describeConfig } from '../src/model/config.js';
import { Model } from '../src/model/model.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

type Edit = Record<string, unknown>;
const DELETE = Symbol('delete');

const EDITS: Record<string, Edit[]> = {
  'llama-nano': [
    {},
    { rope_theta: 5e5 },
    { rope_scaling: { type: 'linear', factor: 2 } },
    { rope_scaling: { rope_type: 'dynamic', factor: 2 } },
    { rope_scaling: { type: 'dynamic', factor: -1 } },
    { rope_scaling: { rope_type: 'llama3', factor: 8 } },
    { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } },
    { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 16 } },
    { rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 2, original_max_position_embeddings: 64 } },
    { rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, beta_fast: -1 } },
    { rope_parameters: { rope_type: 'default', rope_theta: 5e5 } },
    { rope_parameters: { rope_type: 'longrope', rope_theta: 1e4 } },
    { rope_parameters: 5 },
    { rope_scaling: { type: 'su' } },
    { partial_rotary_factor: 0.5 },
    { rope_parameters: { rope_type: 'default', rope_theta: 1e4, partial_rotary_factor: 0.5 } },
    { hidden_act: 'gelu' },
    { mlp_bias: true },
    { attention_bias: true },
    { max_position_embeddings: DELETE },
    { num_key_value_heads: 3 },
    { head_dim: 7 },
    { rms_norm_eps: -1 },
    { rope_theta: 0 },
  ],
  'gpt2-nano': [
    {},
    { activation_function: 'relu' },
    { activation_function: 'gelu_pytorch_tanh' },
    { scale_attn_weights: false },
    { add_cross_attention: true },
    { n_positions: DELETE, n_ctx: 64 },
    { scale_attn_by_inverse_layer_idx: true },
    { layer_norm_epsilon: 0 },
    { n_head: 5 },
  ],
  'qwen2-nano': [
    {},
    { use_sliding_window: true },
    { use_sliding_window: false, sliding_window: 8 },
    { model_type: 'mistral', sliding_window: null },
    { model_type: 'mistral', sliding_window: 8 },
    { model_type: 'mistral', sliding_window: 1 << 20 },
  ],
};

describe('the engine and TypeScript read config.json alike', () => {
  it.each(Object.keys(EDITS))('%s: every edit is accepted by both or refused by both, with the same shape', async (preset) => {
    const base = await dirs.make({ preset, seed: 1, config: { vocab_size: 259 } });
    const original = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8')) as Edit;
    for (const edit of EDITS[preset]) {
      const cfg: Edit = { ...original };
      for (const [k, v] of Object.entries(edit)) {
        if (v === DELETE) delete cfg[k];
        else cfg[k] = v;
      }
      writeFileSync(join(base, 'config.json'), JSON.stringify(cfg));
      const label = `${preset} ${JSON.stringify(edit, (_k, v) => (v === DELETE ? '(deleted)' : v))}`;
      let ts: ReturnType<typeof describeConfig> | null = null;
      let tsError = '';
      try {
        ts = describeConfig(cfg as never);
      } catch (err) {
        tsError = (err as Error).message;
      }
      let engine: Model | null = null;
      let engineError = '';
      let weightsOnly = false;
      try {
        engine = await Model.load(base, { tokenizer: false, threads: 1 });
      } catch (err) {
        engineError = (err as Error).message;
        // The config was read and accepted; the weights do not fit it (an edit that changes shapes).
        weightsOnly = err instanceof ModelWeightsError;
      }
      expect({ accepted: ts !== null, why: tsError }, label).toEqual({ accepted: engine !== null || weightsOnly, why: ts !== null ? '' : tsError });
      if (ts === null) expect(engineError, label).not.toBe('');
      if (ts && engine) {
        const i = engine.info;
        expect(
          { ctx: ts.ctx, kvHeads: ts.kvHeads, headDim: ts.headDim, ffn: ts.ffn, tied: ts.tied, ropeType: ts.ropeType ?? 'default', ropeTheta: ts.ropeTheta ?? i.ropeTheta },
          label,
        ).toEqual({ ctx: i.maxPositions, kvHeads: i.numKvHeads, headDim: i.headDim, ffn: i.intermediateSize, tied: i.tiedEmbeddings, ropeType: i.ropeType, ropeTheta: i.ropeTheta });
        engine.dispose();
      }
    }
    writeFileSync(join(base, 'config.json'), JSON.stringify(original));
  });
});
