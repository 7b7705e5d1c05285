/**
 * Saving and loading what training produces, in the formats other tools read:
 * - a full model as a Hugging Face folder (config.json + model.safetensors in F32 + tokenizer files);
 * - LoRA adapters as PEFT writes them (adapter_config.json + adapter_model.safetensors);
 * - AdamW state (optimizer.safetensors: exp_avg/<name>, exp_avg_sq/<name>, the step count).
 * Every folder is written atomically (a temp folder renamed into place).
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InputError, ModelConfigError } from '../errors/index.js';
import { writeDirAtomic } from '../io/atomic.js';
import { type Model, nativeOf } from '../model/model.js';
import { readSafetensors, toFloat32, writeSafetensors, type TensorInput } from '../model/safetensors.js';

/** LoRA settings as PEFT's adapter_config.json records them. */
export interface LoraSettings {
  rank: number;
  alpha: number;
  dropout: number;
  /** Module names (PEFT matching) or ['all-linear']. */
  targets: string[];
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'kpig-tokenizer.json', 'generation_config.json'];
const loraOf = new WeakMap<Model, LoraSettings>();

/**
 * Adds LoRA adapters (A random, B zero, as PEFT initialises them); the base weights stay frozen.
 * Returns the module paths that got an adapter.
 *
 * @example
 * addLora(model, { rank: 8, alpha: 16, dropout: 0.05, targets: ['q_proj', 'v_proj'] });
 */
export function addLora(model: Model, settings: LoraSettings, seed = 0): string[] {
  if (loraOf.has(model)) throw new InputError('the model already has LoRA adapters');
  const matched = nativeOf(model).loraAdd({ ...settings, seed });
  loraOf.set(model, { ...settings });
  return matched;
}

/** The model's LoRA settings, or undefined when it has none. */
export function loraSettings(model: Model): LoraSettings | undefined {
  return loraOf.get(model);
}

/**
 * Folds the adapters into the base weights (W += α/r·B·A) and removes them.
 *
 * @example
 * mergeLora(model); await saveModel(model, 'out/merged');
 */
export function mergeLora(model: Model): void {
  nativeOf(model).loraMerge();
  loraOf.delete(model);
}

function tensorsOf(model: Model, pick: (name: string) => boolean, kind: 'param' | 'exp_avg' | 'exp_avg_sq', prefix = '') {
  const nat = nativeOf(model);
  const out: Record<string, TensorInput> = {};
  for (const t of nat.tensors()) if (pick(t.name)) out[prefix + t.name] = { dtype: 'F32', shape: t.shape, data: nat.readTensor(t.name, kind) };
  return out;
}

const isLora = (name: string) => name.includes('.lora_A.') || name.includes('.lora_B.');

async function copyTokenizer(from: string, to: string): Promise<void> {
  for (const f of TOKENIZER_FILES) if (existsSync(join(from, f))) await copyFile(join(from, f), join(to, f));
}

/** Writes the model's base weights (F32) into `dir` (an existing folder). */
async function writeModelFiles(model: Model, dir: string): Promise<void> {
  const config = JSON.parse(await readFile(join(model.dir, 'config.json'), 'utf8'));
  config.torch_dtype = 'float32';
  delete config.dtype;
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, Object.keys(config).sort(), 2) + '\n');
  await writeSafetensors(join(dir, 'model.safetensors'), tensorsOf(model, (n) => !isLora(n), 'param'), { format: 'pt' });
  await copyTokenizer(model.dir, dir);
}

async function writeAdapterFiles(model: Model, dir: string): Promise<void> {
  const lora = loraOf.get(model);
  if (!lora) throw new InputError('the model has no LoRA adapters to save');
  const info = model.info;
  const config = {
    base_model_name_or_path: model.dir,
    bias: 'none',
    fan_in_fan_out: info.arch === 'gpt2',
    inference_mode: true,
    init_lora_weights: true,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: lora.rank,
    target_modules: lora.targets,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
  };
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensorsOf(model, isLora, 'param'), { format: 'pt' });
}

/**
 * Saves the model (with any adapters merged in by the caller first) as a Hugging Face folder that
 * `transformers` and this package load.
 *
 * @example
 * await saveModel(model, 'out/final');
 */
export async function saveModel(model: Model, dir: string, options: { overwrite?: boolean } = {}): Promise<void> {
  await writeDirAtomic(dir, (tmp) => writeModelFiles(model, tmp), options);
}

/**
 * Saves the LoRA adapters in PEFT's format.
 *
 * @example
 * await saveAdapter(model, 'out/adapter');
 */
export async function saveAdapter(model: Model, dir: string, options: { overwrite?: boolean } = {}): Promise<void> {
  await writeDirAtomic(dir, (tmp) => writeAdapterFiles(model, tmp), options);
}

/**
 * Loads PEFT adapters (adapter_config.json + adapter_model.safetensors) onto a base model. Checks
 * that the config fits the model and the tensors fit the config, naming what does not.
 *
 * @example
 * const model = await Model.load('base'); await loadAdapter(model, 'out/adapter');
 */
export async function loadAdapter(model: Model, dir: string): Promise<void> {
  const cfgPath = join(dir, 'adapter_config.json');
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
  } catch (err) {
    throw new ModelConfigError(`${cfgPath}: cannot read a PEFT adapter config: ${(err as Error).message}`);
  }
  if (cfg.peft_type !== 'LORA') throw new ModelConfigError(`${cfgPath}: peft_type must be LORA, got ${String(cfg.peft_type)}`);
  const rank = cfg.r, alpha = cfg.lora_alpha;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1) throw new ModelConfigError(`${cfgPath}: field 'r' must be a positive integer`);
  if (typeof alpha !== 'number' || !(alpha > 0)) throw new ModelConfigError(`${cfgPath}: field 'lora_alpha' must be a positive number`);
  const rawTargets = cfg.target_modules;
  const targets = typeof rawTargets === 'string' ? [rawTargets] : rawTargets;
  if (!Array.isArray(targets) || targets.some((t) => typeof t !== 'string'))
    throw new ModelConfigError(`${cfgPath}: field 'target_modules' must be a list of module names`);
  const file = join(dir, 'adapter_model.safetensors');
  const st = await readSafetensors(file);
  // PEFT names may carry the adapter name ("...lora_A.default.weight"); ours do not.
  const stored = new Map<string, Float32Array>();
  for (const [name, t] of st.tensors) stored.set(name.replace(/\.lora_([AB])\.default\.weight$/, '.lora_$1.weight'), toFloat32(t));
  let matched: string[];
  try {
    matched = addLora(model, { rank, alpha, dropout: typeof cfg.lora_dropout === 'number' ? cfg.lora_dropout : 0, targets: targets as string[] });
  } catch (err) {
    throw new ModelConfigError(`${cfgPath}: does not fit this model: ${(err as Error).message}`);
  }
  const nat = nativeOf(model);
  const expected = nat.tensors().filter((t) => isLora(t.name));
  for (const t of expected) {
    const data = stored.get(t.name);
    if (!data) throw new ModelConfigError(`${file}: missing tensor '${t.name}' (the config targets ${matched.length} modules)`);
    const want = t.shape.reduce((a, b) => a * b, 1);
    const got = st.tensors.get(t.name) ?? st.tensors.get(t.name.replace(/\.weight$/, '.default.weight'));
    if (data.length !== want || (got && got.shape.join(',') !== t.shape.join(',')))
      throw new ModelConfigError(`${file}: tensor '${t.name}' has shape [${got?.shape.join(', ')}], the config implies [${t.shape.join(', ')}] (r = ${rank})`);
    nat.writeTensor(t.name, 'param', data);
    stored.delete(t.name);
  }
  if (stored.size > 0) throw new ModelConfigError(`${file}: tensors the config does not explain: ${[...stored.keys()].slice(0, 3).join(', ')}`);
}

/** Trainer bookkeeping stored with a checkpoint. */
export interface TrainerState {
  version: 1;
  step: number;
  totalSteps: number;
  seed: number;
  mode: 'full' | 'lora';
  lora?: LoraSettings;
  dataSize: number;
  losses: number[];
}

/**
 * Writes a resumable checkpoint: the model (full) or adapters (LoRA), AdamW state and the trainer
 * state, as one atomically renamed folder.
 *
 * @example
 * await saveCheckpoint(model, 'out/checkpoint-100', state);
 */
export async function saveCheckpoint(model: Model, dir: string, state: TrainerState): Promise<void> {
  const nat = nativeOf(model);
  await writeDirAtomic(
    dir,
    async (tmp) => {
      if (state.mode === 'full') await writeModelFiles(model, tmp);
      else await writeAdapterFiles(model, tmp);
      const trainable = new Set(nat.tensors().filter((t) => t.trainable).map((t) => t.name));
      await writeSafetensors(
        join(tmp, 'optimizer.safetensors'),
        { ...tensorsOf(model, (n) => trainable.has(n), 'exp_avg', 'exp_avg/'), ...tensorsOf(model, (n) => trainable.has(n), 'exp_avg_sq', 'exp_avg_sq/') },
        { step: String(nat.optimizerSteps()) },
      );
      await writeFile(join(tmp, 'trainer_state.json'), JSON.stringify(state) + '\n');
    },
    { overwrite: true },
  );
}

/**
 * Restores a checkpoint written by {@link saveCheckpoint} into a model prepared the same way
 * (full fine-tuning enabled, or the same LoRA adapters added): weights, AdamW moments and step.
 *
 * @example
 * const state = await loadCheckpoint(model, 'out/checkpoint-100');
 */
export async function loadCheckpoint(model: Model, dir: string): Promise<TrainerState> {
  const statePath = join(dir, 'trainer_state.json');
  let state: TrainerState;
  try {
    state = JSON.parse(await readFile(statePath, 'utf8'));
  } catch (err) {
    throw new ModelConfigError(`${statePath}: not a readable checkpoint: ${(err as Error).message}`);
  }
  const nat = nativeOf(model);
  const weights = await readSafetensors(join(dir, state.mode === 'full' ? 'model.safetensors' : 'adapter_model.safetensors'));
  const names = new Set(nat.tensors().map((t) => t.name));
  for (const [name, t] of weights.tensors) {
    if (!names.has(name)) throw new ModelConfigError(`${dir}: tensor '${name}' does not exist in this model`);
    nat.writeTensor(name, 'param', toFloat32(t));
  }
  const opt = await readSafetensors(join(dir, 'optimizer.safetensors'));
  for (const t of nat.tensors().filter((x) => x.trainable)) {
    const m = opt.tensors.get(`exp_avg/${t.name}`), v = opt.tensors.get(`exp_avg_sq/${t.name}`);
    if (!m || !v) throw new ModelConfigError(`${dir}/optimizer.safetensors: no AdamW state for '${t.name}'`);
    nat.writeTensor(t.name, 'exp_avg', toFloat32(m));
    nat.writeTensor(t.name, 'exp_avg_sq', toFloat32(v));
  }
  nat.setOptimizerSteps(Number(opt.metadata.step ?? state.step));
  return state;
}
