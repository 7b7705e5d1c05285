// Bad model files and bad inputs: each is a typed error whose message names the file, tensor or
// field, and none of them takes the process down (the model keeps working afterwards).
import { copyFileSync, mkdirSync, readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  InputError,
  KpigIOError,
  ModelConfigError,
  ModelWeightsError,
  OutOfMemoryError,
  SafetensorsError,
  UnsupportedModelError,
} from '../src/errors/index.js';
import { Model } from '../src/model/model.js';
import { createRandomModel } from '../src/model/writer.js';
import { readSafetensors, toFloat32, writeSafetensors } from '../src/model/safetensors.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

let good: string;
let n = 0;
beforeAll(async () => {
  good = await dirs.make({ preset: 'llama-nano', seed: 1 });
});

/** A copy of the good model folder, to be broken by the test. */
function copyModel(): string {
  const dir = join(dirs.root, `broken${n++}`);
  mkdirSync(dir);
  for (const f of readdirSync(good)) copyFileSync(join(good, f), join(dir, f));
  return dir;
}

/** Raw safetensors bytes from a header object and a data area, with an optional wrong length. */
function rawSafetensors(header: object, data: Uint8Array, declaredLength?: number): Uint8Array {
  const h = Buffer.from(JSON.stringify(header));
  const out = Buffer.alloc(8 + h.length + data.length);
  out.writeBigUInt64LE(BigInt(declaredLength ?? h.length), 0);
  h.copy(out, 8);
  Buffer.from(data).copy(out, 8 + h.length);
  return out;
}

/** Rewrites model.safetensors with the header edited by `edit` (data area unchanged). */
function editHeader(dir: string, edit: (h: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void): void {
  const file = join(dir, 'model.safetensors');
  const buf = readFileSync(file);
  const hlen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + hlen).toString('utf8'));
  edit(header);
  writeFileSync(file, rawSafetensors(header, buf.subarray(8 + hlen)));
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const file = join(dir, 'config.json');
  const cfg = JSON.parse(readFileSync(file, 'utf8'));
  edit(cfg);
  writeFileSync(file, JSON.stringify(cfg));
}

async function loadError(dir: string): Promise<Error> {
  try {
    await Model.load(dir);
  } catch (err) {
    return err as Error;
  }
  throw new Error(`loading ${dir} should have failed`);
}

describe('bad model folders', () => {
  it('refuses more threads than the process may use, naming the cores', async () => {
    await expect(Model.load(good, { threads: 100_000 })).rejects.toThrow(/threads 100000 is more than the \d+ cores this process may use/);
  });

  it.each([NaN, Infinity, -Infinity])('a weight of %s: refused at load, naming the tensor and the element', async (bad) => {
    const dir = copyModel();
    const st = await readSafetensors(join(dir, 'model.safetensors'));
    const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const [name, t] of st.tensors) out[name] = { dtype: 'F32', shape: t.shape, data: toFloat32(t) };
    const name = 'model.layers.1.mlp.down_proj.weight';
    out[name].data[5] = bad;
    out[name].data[9] = bad;
    await writeSafetensors(join(dir, 'model.safetensors'), out, { format: 'pt' });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ModelWeightsError);
    expect(err.message).toContain(`tensor '${name}' holds 2 non-finite value(s) (NaN or ±Inf; the first at element 5)`);
  });

  it('a model too large for the machine is refused before anything is allocated, with what it needs', async () => {
    const { totalmem } = await import('node:os');
    // About 0.97 B parameters (3.9 GB of float32) per layer: enough layers for twice this machine's RAM.
    const layers = Math.ceil((2 * totalmem()) / (4 * (4 * 8192 * 8192 + 3 * 8192 * 28672)));
    const dir = copyModel();
    editConfig(dir, (c) => Object.assign(c, { hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: layers, num_attention_heads: 64, num_key_value_heads: 8, vocab_size: 32000 }));
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect(err.message).toMatch(/parameters as float32\) needs about [\d.]+ GiB, more than 85% of this machine's [\d.]+ GiB of RAM/);
    await expect(createRandomModel(join(dirs.root, 'huge'), { preset: 'llama-nano', seed: 1, config: { hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: layers, num_attention_heads: 64, num_key_value_heads: 8 } })).rejects.toThrow(OutOfMemoryError);
  });

  it('truncated safetensors file', async () => {
    const dir = copyModel();
    truncateSync(join(dir, 'model.safetensors'), 5);
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toContain(join(dir, 'model.safetensors'));
    expect(err.message).toContain('truncated');
  });

  it('file cut inside the data area', async () => {
    const dir = copyModel();
    const file = join(dir, 'model.safetensors');
    truncateSync(file, readFileSync(file).length - 100);
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toMatch(/out of range/);
  });

  it('header length beyond the file', async () => {
    const dir = copyModel();
    writeFileSync(join(dir, 'model.safetensors'), rawSafetensors({}, new Uint8Array(0), 1 << 20));
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toContain('runs past the end of the file');
  });

  it('offsets out of range', async () => {
    const dir = copyModel();
    editHeader(dir, (h) => {
      h['model.norm.weight'].data_offsets[1] += 1 << 20;
      h['model.norm.weight'].data_offsets[0] += 1 << 20;
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toMatch(/tensor 'model\.norm\.weight'.*out of range/);
  });

  it('overlapping tensors', async () => {
    const dir = copyModel();
    editHeader(dir, (h) => {
      h['model.norm.weight'].data_offsets = [...h['model.layers.0.input_layernorm.weight'].data_offsets];
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toMatch(/overlap/);
  });

  it('unknown dtype', async () => {
    const dir = copyModel();
    editHeader(dir, (h) => {
      h['model.norm.weight'].dtype = 'F8_E4M3';
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toContain("tensor 'model.norm.weight': unknown dtype 'F8_E4M3'");
  });

  it('shape × dtype size different from the byte length', async () => {
    const dir = copyModel();
    editHeader(dir, (h) => {
      h['model.norm.weight'].dtype = 'F16';
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toMatch(/tensor 'model\.norm\.weight': shape × dtype size = 128 bytes but data_offsets span 256/);
  });

  it('missing tensor', async () => {
    const dir = copyModel();
    editHeader(dir, (h) => {
      h['padding.unused'] = h['model.layers.1.mlp.up_proj.weight'];
      delete h['model.layers.1.mlp.up_proj.weight'];
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ModelWeightsError);
    expect(err.message).toContain("missing tensor 'model.layers.1.mlp.up_proj.weight' (expected shape [176, 64])");
  });

  it('unexpected tensor', async () => {
    const dir = copyModel();
    editHeader(dir, (h) => {
      h['model.layers.7.extra.weight'] = h['model.norm.weight'];
      delete h['model.norm.weight'];
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ModelWeightsError);
  });

  it('tensor shape not matching config.json', async () => {
    const dir = copyModel();
    editConfig(dir, (c) => {
      c.intermediate_size = 128;
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ModelWeightsError);
    expect(err.message).toContain("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [176, 64] but config.json implies [128, 64]");
  });

  it('unsupported model_type', async () => {
    const dir = copyModel();
    editConfig(dir, (c) => {
      c.model_type = 'mamba';
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(err.message).toContain("model_type 'mamba' is not supported");
    expect(err.message).toContain('config.json');
  });

  it('a RoPE variant the engine does not implement, by name; a variant without its fields', async () => {
    for (const [rope, want] of [
      [{ rope_scaling: { type: 'su', factor: 2 } }, /rope_scaling: rope_type 'su' is not supported \(default, linear, dynamic, llama3, yarn\)/],
      [{ partial_rotary_factor: 0.5 }, /partial_rotary_factor other than 1 is not supported/],
      [{ rope_parameters: { rope_type: 'longrope', rope_theta: 1e4 } }, /rope_parameters: rope_type 'longrope' is not supported/],
    ] as const) {
      const dir = copyModel();
      editConfig(dir, (c) => Object.assign(c, rope));
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(UnsupportedModelError);
      expect(err.message).toMatch(want);
    }
    const dir = copyModel();
    editConfig(dir, (c) => Object.assign(c, { rope_parameters: { rope_type: 'llama3', rope_theta: 5e5, factor: 8 } }));
    expect((await loadError(dir)).message).toMatch(/rope_parameters: field 'low_freq_factor' is missing/);
  });

  it('config.json with a bad or missing field', async () => {
    const dir = copyModel();
    editConfig(dir, (c) => {
      c.num_attention_heads = 'four';
      delete c.hidden_size;
    });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ModelConfigError);
    expect(err.message).toMatch(/config\.json: field '(hidden_size|num_attention_heads)'/);
  });

  it('config.json that is not JSON', async () => {
    const dir = copyModel();
    writeFileSync(join(dir, 'config.json'), '{"model_type": "llama",');
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ModelConfigError);
    expect(err.message).toMatch(/config\.json: not valid JSON: .*(at byte|at position) \d+/);
  });

  it('folder without weights or config', async () => {
    const dir = copyModel();
    writeFileSync(join(dir, 'model.safetensors'), '');
    const empty = join(dirs.root, 'empty');
    mkdirSync(empty);
    expect(await loadError(empty)).toBeInstanceOf(KpigIOError);
    expect(await loadError(join(dirs.root, 'nope'))).toBeInstanceOf(KpigIOError);
  });
});

describe('bad inputs', () => {
  let model: Model;
  beforeAll(async () => {
    model = await Model.load(good);
  });
  afterAll(() => model.dispose());

  it('token id ≥ vocab names the sequence and position', async () => {
    const err = await model.logits([[1, 2], [3, 4, 512, 5]]).catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe('token id 512 at position 2 of sequence 1 is outside the vocabulary [0, 512)');
  });

  it('negative and non-integer ids', async () => {
    await expect(model.logits([[1, -3]])).rejects.toBeInstanceOf(InputError);
    await expect(model.logits([[1, 2.5]])).rejects.toThrow(/token 1 of sequence 0 is 2.5/);
  });

  it('sequence longer than max_position_embeddings', async () => {
    const long = Array.from({ length: 129 }, (_, i) => i % 100);
    const err = await model.logprobs([[1, 2], long]).catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain("sequence 1 has 129 tokens, more than the model's max_position_embeddings (128)");
    await expect(model.generate([long], { maxNewTokens: 1 })).rejects.toBeInstanceOf(InputError);
  });

  it('empty sequence and empty batch', async () => {
    await expect(model.logits([[1], []])).rejects.toThrow(/sequence 1 is empty/);
    await expect(model.logits([])).rejects.toBeInstanceOf(InputError);
  });

  it('the model still works after every error', async () => {
    const [lp] = await model.logprobs([[1, 2, 3]]);
    expect(lp).toHaveLength(2);
    expect(Number.isFinite(lp[0])).toBe(true);
  });
});
