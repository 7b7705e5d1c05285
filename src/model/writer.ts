/**
 * Writes seeded random models in Hugging Face's format (`config.json` + `model.safetensors`, or
 * shards plus `model.safetensors.index.json`), with the tensor names and layouts of
 * {@link parameterShapes}, so that `transformers`, reference.py and the native loader all read them.
 *
 * Init follows reference.py's make-model: matrices, embeddings and biases ~ N(0, 0.02²) (biases
 * non-zero so that they are exercised), norm weights 1, or 1 + N(0, 0.1²) with `normInit: 'jitter'`
 * so that an engine that forgets the norm scale fails. Values are drawn in float64, in parameter
 * order, from one stream, then rounded to f32 and from there to f16/bf16 (the path torch's casts
 * take). The stream is our own, so the values differ from reference.py's torch draws; the file is
 * the model, and every consumer reads the rounded stored values.
 *
 * PRNG: xoshiro128** (Blackman & Vigna) seeded through splitmix32 from the 53-bit seed; normals by
 * Marsaglia & Tsang's ziggurat. Both are fast in 32-bit JavaScript arithmetic (gpt2-small in seconds).
 */

import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

import { InputError } from '../errors/index.js';
import { checkDestination, moveIntoPlace, writeJsonAtomic } from '../io/atomic.js';
import { type ConfigOverrides, type ModelConfig, parameterShapes, resolveConfig } from './config.js';
import { checkMemory, checkTensorBytes } from './memory.js';
import {
  f32ToBf16,
  f32ToF16,
  numel,
  type SafetensorsDtype,
  type TensorInput,
  writeSafetensors,
} from './safetensors.js';

/** Storage dtype of a written model. */
export type WeightsDtype = 'f32' | 'f16' | 'bf16';

/** Options of {@link createRandomModel}. */
export interface RandomModelOptions {
  /** A preset name (see `PRESETS` in config.ts); `config` fields override it. */
  preset?: string;
  /** HF config fields over the preset (or, without a preset, over HF's defaults for `model_type`). */
  config?: ConfigOverrides;
  /** Seed of the init stream: a non-negative safe integer. */
  seed: number;
  /** Storage dtype (default f32); `torch_dtype` in config.json follows it. */
  dtype?: WeightsDtype;
  /** Norm weights: 1 (default) or 1 + N(0, 0.1²). */
  normInit?: 'ones' | 'jitter';
  /** Split the weights into this many files with an HF index (default 1: one `model.safetensors`). */
  shards?: number;
  /**
   * GPT-2 naming: 'lm' (default) writes `transformer.`-prefixed names as GPT2LMHeadModel saves them;
   * 'bare' writes the old GPT2Model names (`wte.weight`, `h.0...`) of the original openai upload.
   */
  gpt2Names?: 'lm' | 'bare';
  /** Replace `outDir` when it exists and is not empty (default false: refuse). */
  overwrite?: boolean;
}

/** What {@link createRandomModel} wrote. */
export interface RandomModel {
  dir: string;
  config: ModelConfig;
  /** Stored parameters (a tied embedding counted once). */
  parameters: number;
  /** The files written, relative to `dir`. */
  files: string[];
}

const DTYPES: Readonly<Record<WeightsDtype, { st: SafetensorsDtype; torch: string }>> = {
  f32: { st: 'F32', torch: 'float32' },
  f16: { st: 'F16', torch: 'float16' },
  bf16: { st: 'BF16', torch: 'bfloat16' },
};

/**
 * Writes a seeded random model to `outDir` atomically: everything is built in a sibling
 * `<outDir>.tmp-*` folder and renamed into place, so `outDir` never holds a partial model.
 *
 * @throws InputError on bad options, or when `outDir` exists, is not empty and `overwrite` is not set;
 *   ModelConfigError / UnsupportedModelError for a bad config; KpigIOError when writing fails.
 * @example
 * await createRandomModel('out/llama-nano', { preset: 'llama-nano', seed: 7, dtype: 'bf16' });
 * await createRandomModel('out/gpt2-untied', {
 *   preset: 'gpt2-nano', config: { tie_word_embeddings: false }, seed: 1, normInit: 'jitter', shards: 3,
 * });
 */
export async function createRandomModel(outDir: string, options: RandomModelOptions): Promise<RandomModel> {
  const { seed, dtype = 'f32', normInit = 'ones', shards = 1, gpt2Names = 'lm', overwrite = false } = options;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new InputError(`seed must be a non-negative integer, not ${seed}`);
  }
  if (!Object.hasOwn(DTYPES, dtype)) throw new InputError(`dtype must be f32, f16 or bf16, not ${dtype}`);
  if (normInit !== 'ones' && normInit !== 'jitter') {
    throw new InputError(`normInit must be ones or jitter, not ${normInit}`);
  }
  if (gpt2Names !== 'lm' && gpt2Names !== 'bare') {
    throw new InputError(`gpt2Names must be lm or bare, not ${gpt2Names}`);
  }
  const config = resolveConfig(options.preset, { ...options.config, torch_dtype: DTYPES[dtype].torch });
  const params = parameterShapes(config);
  const bytesPer = dtype === 'f32' ? 4 : 2;
  for (const p of params) checkTensorBytes(numel(p.shape) * bytesPer, p.name);
  const total = params.reduce((n, p) => n + numel(p.shape), 0);
  checkMemory(total * bytesPer, `creating a ${total.toLocaleString('en-US')}-parameter ${dtype} model (it is built in memory before it is written)`);
  if (!Number.isSafeInteger(shards) || shards < 1 || shards > params.length) {
    throw new InputError(`shards must be an integer from 1 to ${params.length} (the tensor count), not ${shards}`);
  }

  const dir = resolve(outDir);
  await checkDestination(dir, overwrite);
  await mkdir(dirname(dir), { recursive: true });
  const temp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(temp);
    await writeJsonAtomic(join(temp, 'config.json'), config);
    const rng = new Rng(seed);
    const tensors = params.map(({ name, shape, kind }) => {
      const [mean, std] = kind === 'norm' ? [1, normInit === 'jitter' ? 0.1 : 0] : [0, 0.02];
      const bare = gpt2Names === 'bare' && name.startsWith('transformer.');
      const fileName = bare ? name.slice('transformer.'.length) : name;
      return { name: fileName, tensor: randomTensor(rng, shape, mean, std, dtype) };
    });
    const files = await writeWeights(temp, tensors, shards);
    await moveIntoPlace(temp, dir, overwrite);
    const parameters = params.reduce((n, p) => n + numel(p.shape), 0);
    return { dir, config, parameters, files: ['config.json', ...files] };
  } catch (err) {
    await rm(temp, { recursive: true, force: true });
    throw err;
  }
}

/**
 * One tensor of `mean + std · N(0, 1)` draws rounded to the storage dtype. With std 0 (plain norm
 * weights) nothing is drawn, as in reference.py, so jitter is the only thing that shifts the stream.
 */
function randomTensor(rng: Rng, shape: number[], mean: number, std: number, dtype: WeightsDtype): TensorInput {
  const n = numel(shape);
  const draw = std === 0 ? (): number => mean : (): number => mean + std * rng.normal();
  if (dtype === 'f32') {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = draw();
    return { dtype: 'F32', shape, data };
  }
  const data = new Uint16Array(n);
  const encode = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < n; i++) data[i] = encode(Math.fround(draw()));
  return { dtype: DTYPES[dtype].st, shape, data };
}

/**
 * Writes the tensors as one `model.safetensors`, or as `shards` files named as HF names them plus the
 * index. Shards take consecutive tensors in parameter order, cut near equal byte counts, and are
 * never empty. Returns the file names.
 */
async function writeWeights(
  dir: string,
  tensors: { name: string; tensor: TensorInput }[],
  shards: number,
): Promise<string[]> {
  const metadata = { format: 'pt' };
  if (shards === 1) {
    const all = Object.fromEntries(tensors.map((t) => [t.name, t.tensor]));
    await writeSafetensors(join(dir, 'model.safetensors'), all, metadata);
    return ['model.safetensors'];
  }
  const total = tensors.reduce((n, t) => n + t.tensor.data.byteLength, 0);
  const groups: { name: string; tensor: TensorInput }[][] = [[]];
  let before = 0;
  tensors.forEach((t, i) => {
    const current = groups.length - 1;
    const full = before >= ((current + 1) * total) / shards;
    // Once the tensors left are exactly enough for one per remaining shard, each must open a shard.
    const mustAdvance = tensors.length - i === shards - 1 - current;
    if (groups[current]!.length > 0 && current < shards - 1 && (full || mustAdvance)) groups.push([]);
    groups[groups.length - 1]!.push(t);
    before += t.tensor.data.byteLength;
  });

  const pad = (k: number): string => String(k).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  for (const [k, group] of groups.entries()) {
    const file = `model-${pad(k + 1)}-of-${pad(shards)}.safetensors`;
    const shard = Object.fromEntries(group.map((t) => [t.name, t.tensor]));
    await writeSafetensors(join(dir, file), shard, metadata);
    for (const t of group) weightMap[t.name] = file;
    files.push(file);
  }
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)));
  await writeJsonAtomic(join(dir, 'model.safetensors.index.json'), {
    metadata: { total_size: total },
    weight_map: sortedMap,
  });
  return [...files, 'model.safetensors.index.json'];
}

/** Fails early, before any work, when `dir` may not be written. */
/**
 * xoshiro128** for uniform bits, and Marsaglia & Tsang's ziggurat (128 layers) for normals: ~99% of
 * draws cost one 32-bit number and one table compare, which is what makes gpt2-small quick to write.
 * Seeding runs splitmix32 over the seed's low and high 32-bit halves, so every 53-bit seed gives its
 * own stream and the state is never all zero.
 */
class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) | 0, 0x9e3779b9);
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return z ^ (z >>> 16);
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** A uniform 32-bit integer, as a signed int32. */
  int32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A uniform draw in (0, 1), never 0, so that its logarithm is finite. */
  uniform(): number {
    return ((this.int32() >>> 0) + 0.5) * 2 ** -32;
  }

  /**
   * A standard normal draw. The low 7 bits pick the layer and the other 25 give the signed
   * abscissa, so layer and value never share bits (the flaw Doornik found in the original RNOR).
   */
  normal(): number {
    for (;;) {
      const r = this.int32();
      const layer = r & 127;
      const hz = r >> 7; // signed, in [−2^24, 2^24)
      const x = hz * ZIG.w[layer]!;
      if (Math.abs(hz) < ZIG.k[layer]!) return x; // strictly inside the layer's rectangle
      if (layer === 0) {
        // The tail beyond R, sampled by Marsaglia's exponential method.
        let tx: number;
        let ty: number;
        do {
          tx = -Math.log(this.uniform()) / ZIG_R;
          ty = -Math.log(this.uniform());
        } while (ty + ty < tx * tx);
        return hz > 0 ? ZIG_R + tx : -ZIG_R - tx;
      }
      // The wedge between the rectangle and the curve: accept under the density, else redraw.
      const f0 = ZIG.f[layer]!;
      if (f0 + this.uniform() * (ZIG.f[layer - 1]! - f0) < Math.exp(-0.5 * x * x)) return x;
    }
  }
}

/** Right edge of the ziggurat's base layer, for 128 layers of area ZIG_V each. */
const ZIG_R = 3.442619855899;
const ZIG_V = 9.91256303526217e-3;

/**
 * Ziggurat tables (Marsaglia & Tsang 2000, zigset, scaled for 25-bit signed abscissas): for layer i,
 * w = x-scale, k = acceptance bound on |hz|, f = density at the layer's right edge.
 */
const ZIG = ((): { k: Float64Array; w: Float64Array; f: Float64Array } => {
  const m = 2 ** 24;
  const k = new Float64Array(128);
  const w = new Float64Array(128);
  const f = new Float64Array(128);
  let dn = ZIG_R;
  let tn = dn;
  const q = ZIG_V / Math.exp(-0.5 * dn * dn);
  k[0] = (dn / q) * m;
  k[1] = 0;
  w[0] = q / m;
  w[127] = dn / m;
  f[0] = 1;
  f[127] = Math.exp(-0.5 * dn * dn);
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2 * Math.log(ZIG_V / dn + Math.exp(-0.5 * dn * dn)));
    k[i + 1] = (dn / tn) * m;
    tn = dn;
    f[i] = Math.exp(-0.5 * dn * dn);
    w[i] = dn / m;
  }
  return { k, w, f };
})();

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
