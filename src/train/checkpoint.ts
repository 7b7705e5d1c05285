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
import type { Model } from '../model/model.js';
import { trainingOf } from '../model/training.js';
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
  const matched = trainingOf(model).addLora({ ...settings, seed });
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
  trainingOf(model).mergeLora();
  loraOf.delete(model);
}

function tensorsOf(model: Model, pick: (name: string) => boolean, kind: 'param' | 'exp_avg' | 'exp_avg_sq', prefix = '') {
  const nat = trainingOf(model);
  const out: Record<string, TensorInput> = {};
  for (const t of nat.tensors()) if (pick(t.name)) out[prefix + t.name] = { dtype: 'F32', shape: t.shape, data: nat.read(t.name, kind) };
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
    // PEFT takes the shorthand only as a string; a list ['all-linear'] would name a module.
    target_modules: lora.targets.length === 1 && lora.targets[0] === 'all-linear' ? 'all-linear' : lora.targets,
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
  // PEFT reads a string target as a regular expression over full module names (all-linear aside).
  if (typeof rawTargets === 'string' && rawTargets !== 'all-linear')
    throw new ModelConfigError(`${cfgPath}: target_modules as a regular expression (${JSON.stringify(rawTargets)}) is not supported; list the module names`);
  const targets = typeof rawTargets === 'string' ? [rawTargets] : rawTargets;
  if (!Array.isArray(targets) || targets.some((t) => typeof t !== 'string'))
    throw new ModelConfigError(`${cfgPath}: field 'target_modules' must be a list of module names`);
  refuseUnsupported(cfg, cfgPath);
  const rsLora = cfg.use_rslora === true;
  const rankPattern = patternOf(cfg, 'rank_pattern', cfgPath, true);
  const alphaPattern = patternOf(cfg, 'alpha_pattern', cfgPath, false);
  const file = join(dir, 'adapter_model.safetensors');
  const st = await readSafetensors(file);
  // PEFT names may carry the adapter name ("...lora_A.default.weight"); ours do not.
  const stored = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  for (const [name, t] of st.tensors) {
    const key = name.replace(/\.lora_([AB])\.default\.weight$/, '.lora_$1.weight');
    stored.set(key, toFloat32(t));
    shapes.set(key, t.shape);
  }
  // Plain adapters load as they are. With rsLoRA or per-module ranks or alphas, every module's
  // scale s = α_m / r_m (α_m / √r_m with rsLoRA) is folded into its B, and A and B are padded with
  // zeros to the largest rank: the engine's one rank R and scale 1 then give exactly B·A·s.
  const folded = rsLora || rankPattern.size > 0 || alphaPattern.size > 0;
  const maxRank = Math.max(rank, ...rankPattern.values());
  let matched: string[];
  try {
    matched = addLora(model, folded ? { rank: maxRank, alpha: maxRank, dropout: dropoutOf(cfg), targets: targets as string[] } : { rank, alpha, dropout: dropoutOf(cfg), targets: targets as string[] });
  } catch (err) {
    throw new ModelConfigError(`${cfgPath}: does not fit this model: ${(err as Error).message}`);
  }
  const nat = trainingOf(model);
  const expected = nat.tensors().filter((t) => isLora(t.name));
  for (const t of expected) {
    const data = stored.get(t.name);
    if (!data) throw new ModelConfigError(`${file}: missing tensor '${t.name}' (the config targets ${matched.length} modules)`);
    const module = t.name.replace(/^base_model\.model\./, '').replace(/\.lora_[AB]\.weight$/, '');
    const r = patternValue(rankPattern, module) ?? rank;
    const isA = t.name.endsWith('.lora_A.weight');
    // A is [r, in], B is [out, r]; the engine's tensors are [R, in] and [out, R].
    const want = folded ? (isA ? [r, t.shape[1]] : [t.shape[0], r]) : t.shape;
    const got = shapes.get(t.name);
    if (data.length !== want[0] * want[1] || (got && got.join(',') !== want.join(',')))
      throw new ModelConfigError(`${file}: tensor '${t.name}' has shape [${got?.join(', ')}], the config implies [${want.join(', ')}] (r = ${r})`);
    if (!folded) nat.write(t.name, 'param', data);
    else {
      const a = patternValue(alphaPattern, module) ?? alpha;
      const scale = rsLora ? a / Math.sqrt(r) : a / r;
      const out = new Float32Array(t.shape[0] * t.shape[1]);
      if (isA) out.set(data); // rows r..R−1 stay zero
      else for (let i = 0; i < t.shape[0]; i++) for (let j = 0; j < r; j++) out[i * t.shape[1] + j] = data[i * r + j] * scale;
      nat.write(t.name, 'param', out);
    }
    stored.delete(t.name);
  }
  if (stored.size > 0) throw new ModelConfigError(`${file}: tensors the config does not explain: ${[...stored.keys()].slice(0, 3).join(', ')}`);
}

function dropoutOf(cfg: Record<string, unknown>): number {
  return typeof cfg.lora_dropout === 'number' ? cfg.lora_dropout : 0;
}

/** Adapter options whose effect the engine does not implement: refused by name rather than ignored. */
function refuseUnsupported(cfg: Record<string, unknown>, where: string): void {
  const set = (v: unknown) => v !== undefined && v !== null && v !== false && !(Array.isArray(v) && v.length === 0);
  if (cfg.use_dora === true) throw new ModelConfigError(`${where}: DoRA adapters (use_dora: true) are not supported`);
  if (cfg.bias !== undefined && cfg.bias !== 'none') throw new ModelConfigError(`${where}: bias ${JSON.stringify(cfg.bias)} is not supported (only 'none')`);
  for (const field of ['modules_to_save', 'layers_to_transform', 'layers_pattern', 'exclude_modules', 'trainable_token_indices'])
    if (set(cfg[field])) throw new ModelConfigError(`${where}: ${field} ${JSON.stringify(cfg[field])} is not supported`);
  if (cfg.use_rslora !== undefined && typeof cfg.use_rslora !== 'boolean') throw new ModelConfigError(`${where}: use_rslora must be true or false`);
}

/** A PEFT `rank_pattern` / `alpha_pattern`: module-name pattern → value. */
function patternOf(cfg: Record<string, unknown>, field: string, where: string, integer: boolean): Map<RegExp, number> {
  const raw = cfg[field];
  const out = new Map<RegExp, number>();
  if (raw === undefined || raw === null) return out;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ModelConfigError(`${where}: ${field} must be an object of module pattern → number`);
  for (const [pattern, value] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof value !== 'number' || !(value > 0) || (integer && !Number.isInteger(value)))
      throw new ModelConfigError(`${where}: ${field}[${JSON.stringify(pattern)}] must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(value)}`);
    let re: RegExp;
    try {
      // PEFT's matching: the pattern ends the module name, after a dot or at its start.
      re = new RegExp(`^(.*\\.)?(${pattern})$`);
    } catch (err) {
      throw new ModelConfigError(`${where}: ${field} key ${JSON.stringify(pattern)} is not a valid pattern: ${(err as Error).message}`);
    }
    out.set(re, value);
  }
  return out;
}

/** The value of the first pattern that matches `module` (PEFT takes the first match), or undefined. */
function patternValue(patterns: Map<RegExp, number>, module: string): number | undefined {
  for (const [re, v] of patterns) if (re.test(module)) return v;
  return undefined;
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
  const nat = trainingOf(model);
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
  const nat = trainingOf(model);
  const weights = await readSafetensors(join(dir, state.mode === 'full' ? 'model.safetensors' : 'adapter_model.safetensors'));
  const names = new Set(nat.tensors().map((t) => t.name));
  for (const [name, t] of weights.tensors) {
    if (!names.has(name)) throw new ModelConfigError(`${dir}: tensor '${name}' does not exist in this model`);
    nat.write(name, 'param', toFloat32(t));
  }
  const opt = await readSafetensors(join(dir, 'optimizer.safetensors'));
  for (const t of nat.tensors().filter((x) => x.trainable)) {
    const m = opt.tensors.get(`exp_avg/${t.name}`), v = opt.tensors.get(`exp_avg_sq/${t.name}`);
    if (!m || !v) throw new ModelConfigError(`${dir}/optimizer.safetensors: no AdamW state for '${t.name}'`);
    nat.write(t.name, 'exp_avg', toFloat32(m));
    nat.write(t.name, 'exp_avg_sq', toFloat32(v));
  }
  nat.setOptimizerSteps(Number(opt.metadata.step ?? state.step));
  return state;
}
