/**
 * The tiny base model of the synthetic testbed: a LLaMA-style model with the built-in byte
 * tokenizer, initialised and fully fine-tuned by the toolkit on the general mixture of the suite
 * (every family, every key-part value, fresh inputs). It is the
 * "pretrained" starting point of a continual run when no pretrained model can be downloaded.
 *
 * Models are cached by a key that hashes everything that decides the weights (generator version,
 * recipe, seed), so repeated demos reuse one build. A build is written
 * atomically: an interrupted one leaves no folder at the cache path.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { tokenizeExample } from '../data/instructions.js';
import { InputError, KpigIOError } from '../errors/index.js';
import { writeDirAtomic } from '../io/atomic.js';
import { Model } from '../model/model.js';
import { createRandomModel } from '../model/writer.js';
import { ByteTokenizer, writeByteTokenizer } from '../tokenizer/index.js';
import { saveModel } from '../train/checkpoint.js';
import { Trainer } from '../train/trainer.js';
import { SYNTH_VERSION, mixtureExamples } from './tasks.js';

/** What decides a base model's weights besides the seed: its shape and its training. */
export interface BaseModelRecipe {
  hiddenSize: number;
  layers: number;
  heads: number;
  /** Key/value heads (GQA when fewer than `heads`). */
  kvHeads: number;
  intermediateSize: number;
  /** Context length; the suite's prompts stay under 200 bytes. */
  maxPositions: number;
  /** Rows of the general mixture. */
  mixtureSize: number;
  /** Share of each label-word list the mixture uses (1: all; see `mixtureExamples`). */
  mixtureLabelShare: number;
  epochs: number;
  lr: number;
  batchSize: number;
  warmupSteps: number;
  /**
   * Loss weight of the prompt tokens relative to the response's 1. A base model is a language
   * model of its whole corpus, and reading the prompt's words as targets teaches the tiny model
   * the vocabulary of the suite far sooner than the few response tokens alone.
   */
  promptWeight: number;
}

/**
 * The two recipes, sized on a 2-core x86 machine with one thread (docs/synth.md has the timings):
 * `default` for the full demo, `quick` for `--quick`.
 */
export const BASE_RECIPES: Readonly<Record<'default' | 'quick', Readonly<BaseModelRecipe>>> = {
  default: {
    hiddenSize: 128,
    layers: 4,
    heads: 4,
    kvHeads: 4,
    intermediateSize: 352,
    maxPositions: 256,
    mixtureSize: 12_000,
    mixtureLabelShare: 0.5,
    epochs: 2,
    lr: 3e-3,
    batchSize: 16,
    warmupSteps: 30,
    promptWeight: 0.2,
  },
  quick: {
    hiddenSize: 64,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    intermediateSize: 176,
    maxPositions: 256,
    mixtureSize: 14_000,
    mixtureLabelShare: 0.5,
    epochs: 1,
    lr: 4e-3,
    batchSize: 16,
    warmupSteps: 20,
    promptWeight: 0.2,
  },
};

export interface BaseModelProgress {
  phase: 'init' | 'train' | 'save';
  /** Optimizer steps done and planned (0 outside training). */
  step: number;
  totalSteps: number;
  /** Loss of the last step (null outside training). */
  loss: number | null;
  elapsedSeconds: number;
}

export interface BaseModelOptions {
  /** Where the model goes; default `<cacheDir>/<key>`. */
  dir?: string;
  /** Cache root; default `$KPIG_CACHE/base-models`, else `~/.cache/kpig/base-models`. */
  cacheDir?: string;
  /** The small recipe (default false). */
  quick?: boolean;
  /** Seed of the init, the mixture and the data order (default 0). */
  seed?: number;
  /** Worker threads (default 0: every core). */
  threads?: number;
  /** Fields over the chosen recipe (they enter the cache key). */
  recipe?: Partial<BaseModelRecipe>;
  onProgress?: (p: BaseModelProgress) => void;
  signal?: AbortSignal;
}

export interface BaseModel {
  dir: string;
  /** True when an existing build with the same key was used. */
  reused: boolean;
  /** The cache key: a hex digest of everything that decides the weights. */
  key: string;
  recipe: BaseModelRecipe;
}

/** What a built folder records about itself (`kpig-base.json`). */
export interface BaseModelManifest {
  kind: 'kpig-synth-base';
  key: string;
  synthVersion: number;
  seed: number;
  quick: boolean;
  recipe: BaseModelRecipe;
  finalLoss: number;
  trainSeconds: number;
}

const MANIFEST = 'kpig-base.json';

/**
 * The default cache root: `$KPIG_CACHE/base-models`, else `~/.cache/kpig/base-models`.
 *
 * @example
 * defaultBaseModelCache(); // '/home/me/.cache/kpig/base-models'
 */
export function defaultBaseModelCache(): string {
  const root = process.env.KPIG_CACHE;
  return root ? join(root, 'base-models') : join(homedir(), '.cache', 'kpig', 'base-models');
}

function checkRecipe(r: BaseModelRecipe): void {
  for (const name of ['hiddenSize', 'layers', 'heads', 'kvHeads', 'intermediateSize', 'maxPositions', 'mixtureSize', 'epochs', 'batchSize'] as const) {
    if (!Number.isSafeInteger(r[name]) || r[name] < 1) throw new InputError(`buildBaseModel: recipe.${name} must be a positive integer, got ${r[name]}`);
  }
  if (!Number.isSafeInteger(r.warmupSteps) || r.warmupSteps < 0) throw new InputError(`buildBaseModel: recipe.warmupSteps must be a non-negative integer, got ${r.warmupSteps}`);
  if (!(r.promptWeight >= 0) || !Number.isFinite(r.promptWeight)) throw new InputError(`buildBaseModel: recipe.promptWeight must be a non-negative number, got ${r.promptWeight}`);
  if (!(r.mixtureLabelShare > 0 && r.mixtureLabelShare <= 1)) throw new InputError(`buildBaseModel: recipe.mixtureLabelShare must be in (0, 1], got ${r.mixtureLabelShare}`);
  if (!(r.lr > 0) || !Number.isFinite(r.lr)) throw new InputError(`buildBaseModel: recipe.lr must be a positive number, got ${r.lr}`);
  if (r.hiddenSize % r.heads !== 0) throw new InputError(`buildBaseModel: recipe.hiddenSize ${r.hiddenSize} is not a multiple of recipe.heads ${r.heads}`);
  if (r.heads % r.kvHeads !== 0) throw new InputError(`buildBaseModel: recipe.heads ${r.heads} is not a multiple of recipe.kvHeads ${r.kvHeads}`);
}

async function readManifest(dir: string): Promise<BaseModelManifest | null> {
  try {
    const m = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as BaseModelManifest;
    await access(join(dir, 'model.safetensors'));
    await access(join(dir, 'config.json'));
    return m.kind === 'kpig-synth-base' ? m : null;
  } catch {
    return null;
  }
}

/** Creates `dir` (and its parents) and checks it is writable, or says which folder is not. */
async function ensureWritable(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, constants.W_OK);
  } catch (err) {
    throw new KpigIOError(`cannot write the base-model cache folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Builds the tiny base model of the synthetic suite, or reuses the cached build with the same key.
 * The model is a LLaMA-style config with vocab 259 (the byte tokenizer), initialised from `seed`,
 * then fully fine-tuned with {@link Trainer} on `mixtureExamples({ seed })`. The folder is a Hugging Face model
 * (config.json, model.safetensors, kpig-tokenizer.json) plus `kpig-base.json`.
 *
 * @throws InputError for a bad seed, thread count or recipe field, or when `dir` already holds
 *   something other than this build; KpigIOError when the cache folder cannot be written
 * @example
 * const base = await buildBaseModel({ quick: true, seed: 0, threads: 1, onProgress: (p) => console.log(p.phase, p.step) });
 * const model = await Model.load(base.dir);
 */
export async function buildBaseModel(options: BaseModelOptions = {}): Promise<BaseModel> {
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new InputError(`buildBaseModel: seed must be a non-negative integer, got ${seed}`);
  const threads = options.threads ?? 0;
  if (!Number.isSafeInteger(threads) || threads < 0) throw new InputError(`buildBaseModel: threads must be a non-negative integer, got ${threads}`);
  const quick = options.quick ?? false;
  const recipe: BaseModelRecipe = { ...BASE_RECIPES[quick ? 'quick' : 'default'], ...options.recipe };
  checkRecipe(recipe);
  const key = createHash('sha256')
    .update(JSON.stringify({ synthVersion: SYNTH_VERSION, recipe: Object.entries(recipe).sort(), seed, quick }))
    .digest('hex')
    .slice(0, 16);

  let dir: string;
  if (options.dir !== undefined) {
    dir = resolve(options.dir);
    await ensureWritable(resolve(dir, '..'));
  } else {
    const cache = resolve(options.cacheDir ?? defaultBaseModelCache());
    await ensureWritable(cache);
    dir = join(cache, key);
  }
  const found = await readManifest(dir);
  if (found?.key === key) return { dir, reused: true, key, recipe };
  if (found) throw new InputError(`buildBaseModel: ${dir} holds another base model (key ${found.key}, wanted ${key}); remove it or choose another dir`);

  const t0 = Date.now();
  const elapsed = () => (Date.now() - t0) / 1000;
  options.onProgress?.({ phase: 'init', step: 0, totalSteps: 0, loss: null, elapsedSeconds: 0 });
  try {
    await writeDirAtomic(dir, (tmp) => train(tmp, { seed, threads, quick, recipe, key, options, elapsed }));
  } catch (err) {
    // Another process may have finished the same build first: its folder is as good as ours.
    if ((await readManifest(dir))?.key === key) return { dir, reused: true, key, recipe };
    throw err;
  }
  return { dir, reused: false, key, recipe };
}

interface TrainJob {
  seed: number;
  threads: number;
  quick: boolean;
  recipe: BaseModelRecipe;
  key: string;
  options: BaseModelOptions;
  elapsed: () => number;
}

/** Initialises, trains and saves the model into the (empty) folder `tmp`. */
async function train(tmp: string, job: TrainJob): Promise<void> {
  const { seed, threads, quick, recipe, key, options, elapsed } = job;
  await createRandomModel(tmp, {
    preset: 'llama-nano',
    seed,
    overwrite: true,
    config: {
      vocab_size: ByteTokenizer.VOCAB_SIZE,
      bos_token_id: ByteTokenizer.BOS_ID,
      eos_token_id: ByteTokenizer.EOS_ID,
      hidden_size: recipe.hiddenSize,
      num_hidden_layers: recipe.layers,
      num_attention_heads: recipe.heads,
      num_key_value_heads: recipe.kvHeads,
      intermediate_size: recipe.intermediateSize,
      max_position_embeddings: recipe.maxPositions,
    },
  });
  await writeByteTokenizer(tmp);
  const model = await Model.load(tmp, { threads });
  try {
    const rows = mixtureExamples({ seed, size: recipe.mixtureSize, labelShare: recipe.mixtureLabelShare });
    const sequences = rows.flatMap((r) => {
      const seq = tokenizeExample(model.tokenizer!, r, recipe.maxPositions);
      if (!seq) return [];
      return [{ tokens: seq.tokens, weights: seq.weights.map((w, t) => (w > 0 || t === seq.tokens.length - 1 ? w : recipe.promptWeight)) }];
    });
    const trainer = new Trainer(model, {
      mode: 'full',
      lr: recipe.lr,
      epochs: recipe.epochs,
      batchSize: recipe.batchSize,
      warmupSteps: recipe.warmupSteps,
      schedule: 'cosine',
      seed,
    });
    const summary = await trainer.train(sequences, {
      signal: options.signal,
      onProgress: (p) => options.onProgress?.({ phase: 'train', step: p.step, totalSteps: p.totalSteps, loss: p.loss, elapsedSeconds: elapsed() }),
    });
    options.onProgress?.({ phase: 'save', step: summary.steps, totalSteps: summary.steps, loss: summary.losses.at(-1) ?? null, elapsedSeconds: elapsed() });
    await saveModel(model, tmp, { overwrite: true });
    const manifest: BaseModelManifest = {
      kind: 'kpig-synth-base',
      key,
      synthVersion: SYNTH_VERSION,
      seed,
      quick,
      recipe,
      finalLoss: summary.losses.at(-1) ?? NaN,
      trainSeconds: elapsed(),
    };
    await writeFile(join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  } finally {
    model.dispose();
  }
}
