/**
 * A continual run described by one file (YAML or JSON), validated up front: every error names the
 * field and, where it is a choice, the allowed values. CLI flags override fields by dotted path.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { InputError } from '../errors/index.js';
import { ADAPTER_STRATEGIES, DEFAULT_STRATEGY, MASK_SCHEMES, STRATEGY_NAMES, type StrategyConfig } from '../replay/config.js';
import { isNamedTemplate, templateSpec } from '../template/index.js';

// The strategy's fields belong to the replay layer; a run config holds them under `strategy`.
export { MASK_SCHEMES, STRATEGY_NAMES, type MaskScheme, type StrategyConfig, type StrategyName } from '../replay/config.js';

export interface TrainConfig {
  mode: 'full' | 'lora';
  loraRank: number;
  loraAlpha: number;
  loraTargets: string[] | null;
  lr: number;
  epochs: number;
  batchSize: number;
  /** Training instances of the current task per stage (0 = all). */
  maxInstances: number;
  maxLength: number;
  warmupSteps: number;
  schedule: 'cosine' | 'linear' | 'constant';
  checkpointEvery: number;
}

export interface EvalConfig {
  maxInstancesPerTask: number;
  maxNewTokens: number;
  batchSize: number;
}

export interface RunConfig {
  name: string;
  /** Base model folder (Hugging Face format). */
  model: string;
  /** Task-set folder (Arrow files, see docs/data.md). */
  data: string;
  /** Stream name in the task set, or an explicit stream. */
  stream: string | { seen: string[]; held_out: string[] };
  strategy: StrategyConfig;
  train: TrainConfig;
  eval: EvalConfig;
  /**
   * The prompt template of training, scoring and evaluation: `superni` (default), `chat` (the
   * model's chat template) or the path of a template file (`.jinja`: a chat template; else a
   * string with `{instruction}` and `{input}` slots).
   */
  template: string;
  seed: number;
  threads: number;
  /** Where IG scoring and embeddings run: `cpu` (default) or `cuda` (falls back to the CPU, saying why). */
  device: 'cpu' | 'cuda';
}

const DEFAULT_TRAIN: TrainConfig = {
  mode: 'full',
  loraRank: 8,
  loraAlpha: 16,
  loraTargets: null,
  lr: 1e-3,
  epochs: 1,
  batchSize: 8,
  maxInstances: 0,
  maxLength: 512,
  warmupSteps: 0,
  schedule: 'constant',
  checkpointEvery: 20,
};

const DEFAULT_EVAL: EvalConfig = { maxInstancesPerTask: 50, maxNewTokens: 32, batchSize: 16 };

/** One invalid field: a path like `strategy.m` and what is wrong with it. */
export class RunConfigError extends InputError {
  constructor(
    readonly field: string,
    message: string,
    where = 'run config',
  ) {
    super(`${where}: ${field}: ${message}`);
  }
}

type Raw = Record<string, unknown>;

function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(obj: Raw, allowed: readonly string[], path: string, where: string) {
  for (const k of Object.keys(obj))
    if (!allowed.includes(k)) throw new RunConfigError(path ? `${path}.${k}` : k, `unknown field (allowed: ${allowed.join(', ')})`, where);
}

function num(v: unknown, field: string, where: string, opts: { min?: number; int?: boolean; gt?: number } = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new RunConfigError(field, `must be a number, got ${JSON.stringify(v)}`, where);
  if (opts.int && !Number.isInteger(v)) throw new RunConfigError(field, `must be an integer, got ${v}`, where);
  if (opts.min !== undefined && v < opts.min) throw new RunConfigError(field, `must be ≥ ${opts.min}, got ${v}`, where);
  if (opts.gt !== undefined && !(v > opts.gt)) throw new RunConfigError(field, `must be > ${opts.gt}, got ${v}`, where);
  return v;
}

function choice<T extends string>(v: unknown, allowed: readonly T[], field: string, where: string): T {
  if (typeof v !== 'string' || !allowed.includes(v as T))
    throw new RunConfigError(field, `${JSON.stringify(v)} is not one of ${allowed.join(', ')}`, where);
  return v as T;
}

function bool(v: unknown, field: string, where: string): boolean {
  if (typeof v !== 'boolean') throw new RunConfigError(field, `must be true or false, got ${JSON.stringify(v)}`, where);
  return v;
}

function str(v: unknown, field: string, where: string): string {
  if (typeof v !== 'string' || v.length === 0) throw new RunConfigError(field, `must be a non-empty string, got ${JSON.stringify(v)}`, where);
  return v;
}

function strList(v: unknown, field: string, where: string): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !x)) throw new RunConfigError(field, 'must be a list of non-empty strings', where);
  return v as string[];
}

/**
 * Checks a parsed config object and fills in defaults. Relative `model` / `data` paths resolve
 * against `baseDir`. Throws {@link RunConfigError} naming the first bad field.
 *
 * @example
 * const config = resolveRunConfig({ model: 'models/base', data: 'tasks', stream: 'main', strategy: { name: 'kpig', m: 20 } });
 */
export function resolveRunConfig(raw: unknown, options: { baseDir?: string; where?: string } = {}): RunConfig {
  const where = options.where ?? 'run config';
  const base = options.baseDir ?? process.cwd();
  if (!isObject(raw)) throw new RunConfigError('(top level)', 'must be a mapping of fields', where);
  checkKeys(raw, ['name', 'model', 'data', 'stream', 'strategy', 'train', 'eval', 'template', 'seed', 'threads', 'device'], '', where);
  const model = resolve(base, str(raw.model, 'model', where));
  const data = resolve(base, str(raw.data, 'data', where));
  let stream: RunConfig['stream'] = 'default';
  if (raw.stream !== undefined) {
    if (typeof raw.stream === 'string') stream = str(raw.stream, 'stream', where);
    else if (isObject(raw.stream)) {
      checkKeys(raw.stream, ['seen', 'held_out'], 'stream', where);
      stream = { seen: strList(raw.stream.seen, 'stream.seen', where), held_out: strList(raw.stream.held_out ?? [], 'stream.held_out', where) };
      if (stream.seen.length === 0) throw new RunConfigError('stream.seen', 'must name at least one task', where);
    } else throw new RunConfigError('stream', 'must be a stream name or { seen: [...], held_out: [...] }', where);
  }
  const s = raw.strategy === undefined ? {} : raw.strategy;
  if (typeof s === 'string') return resolveRunConfig({ ...raw, strategy: { name: s } }, options);
  if (!isObject(s)) throw new RunConfigError('strategy', `must be a strategy name (${STRATEGY_NAMES.join(', ')}) or a mapping`, where);
  checkKeys(s, ['name', ...Object.keys(DEFAULT_STRATEGY)], 'strategy', where);
  const st = { ...DEFAULT_STRATEGY, ...s } as Raw;
  const strategy: StrategyConfig = {
    name: choice(s.name ?? 'kpig', STRATEGY_NAMES, 'strategy.name', where),
    m: num(st.m, 'strategy.m', where, { min: 0, int: true }),
    tau: st.tau === null ? null : num(st.tau, 'strategy.tau', where, { gt: 0 }),
    lambda: num(st.lambda, 'strategy.lambda', where, { min: 0 }),
    gamma: num(st.gamma, 'strategy.gamma', where, { min: 0 }),
    ig: choice(st.ig, ['ce', 'kl', 'js'] as const, 'strategy.ig', where),
    igLevel: choice(st.igLevel, ['token', 'sequence'] as const, 'strategy.igLevel', where),
    selection: choice(st.selection, ['lowest', 'stratified'] as const, 'strategy.selection', where),
    replayMask: choice(st.replayMask, MASK_SCHEMES, 'strategy.replayMask', where),
    objectiveMask: choice(st.objectiveMask, MASK_SCHEMES, 'strategy.objectiveMask', where),
    tauFloor: num(st.tauFloor, 'strategy.tauFloor', where, { min: 0 }),
    minShare: num(st.minShare, 'strategy.minShare', where, { min: 0 }),
    diversity: bool(st.diversity, 'strategy.diversity', where),
    igReplay: bool(st.igReplay, 'strategy.igReplay', where),
    igObjective: bool(st.igObjective, 'strategy.igObjective', where),
    bufferSize: num(st.bufferSize, 'strategy.bufferSize', where, { min: 0, int: true }),
    ewcLambda: num(st.ewcLambda, 'strategy.ewcLambda', where, { min: 0 }),
    fisherSamples: num(st.fisherSamples, 'strategy.fisherSamples', where, { min: 1, int: true }),
    lwfLambda: num(st.lwfLambda, 'strategy.lwfLambda', where, { min: 0 }),
    tagger: choice(st.tagger, ['offline', 'llm'] as const, 'strategy.tagger', where),
    oloraLambda1: num(st.oloraLambda1, 'strategy.oloraLambda1', where, { min: 0 }),
    oloraLambda2: num(st.oloraLambda2, 'strategy.oloraLambda2', where, { min: 0 }),
    regloraShare: num(st.regloraShare, 'strategy.regloraShare', where, { gt: 0 }),
    regloraLambda: num(st.regloraLambda, 'strategy.regloraLambda', where, { min: 0 }),
    generalData: st.generalData === null ? null : resolve(base, str(st.generalData, 'strategy.generalData', where)),
    generalSamples: num(st.generalSamples, 'strategy.generalSamples', where, { min: 1, int: true }),
    gereWeight: num(st.gereWeight, 'strategy.gereWeight', where, { min: 0 }),
    adaptClusters: num(st.adaptClusters, 'strategy.adaptClusters', where, { min: 1, int: true }),
    adaptBins: num(st.adaptBins, 'strategy.adaptBins', where, { min: 1, int: true }),
    adaptPoolFactor: num(st.adaptPoolFactor, 'strategy.adaptPoolFactor', where, { min: 0 }),
  };
  if (strategy.regloraShare > 1) throw new RunConfigError('strategy.regloraShare', `must be ≤ 1 (a share of each matrix's entries), got ${strategy.regloraShare}`, where);
  if (strategy.adaptPoolFactor > 0 && strategy.adaptPoolFactor < 1)
    throw new RunConfigError('strategy.adaptPoolFactor', `must be 0 (no pruning) or ≥ 1 (the pool must hold the budget), got ${strategy.adaptPoolFactor}`, where);
  if (strategy.name === 'gere' && strategy.generalData === null)
    throw new RunConfigError('strategy.generalData', 'gere replays a fixed set of general samples: name their file (JSONL, Arrow or Parquet rows of instruction, input, output)', where);
  if (strategy.minShare > 1) throw new RunConfigError('strategy.minShare', `must be ≤ 1 (a fraction of an equal share), got ${strategy.minShare}`, where);
  const t = raw.train === undefined ? {} : raw.train;
  if (!isObject(t)) throw new RunConfigError('train', 'must be a mapping', where);
  checkKeys(t, Object.keys(DEFAULT_TRAIN), 'train', where);
  const tr = { ...DEFAULT_TRAIN, ...t } as Raw;
  const train: TrainConfig = {
    mode: choice(tr.mode, ['full', 'lora'] as const, 'train.mode', where),
    loraRank: num(tr.loraRank, 'train.loraRank', where, { min: 1, int: true }),
    loraAlpha: num(tr.loraAlpha, 'train.loraAlpha', where, { gt: 0 }),
    loraTargets: tr.loraTargets === null ? null : strList(tr.loraTargets, 'train.loraTargets', where),
    lr: num(tr.lr, 'train.lr', where, { gt: 0 }),
    epochs: num(tr.epochs, 'train.epochs', where, { min: 1, int: true }),
    batchSize: num(tr.batchSize, 'train.batchSize', where, { min: 1, int: true }),
    maxInstances: num(tr.maxInstances, 'train.maxInstances', where, { min: 0, int: true }),
    maxLength: num(tr.maxLength, 'train.maxLength', where, { min: 8, int: true }),
    warmupSteps: num(tr.warmupSteps, 'train.warmupSteps', where, { min: 0, int: true }),
    schedule: choice(tr.schedule, ['cosine', 'linear', 'constant'] as const, 'train.schedule', where),
    checkpointEvery: num(tr.checkpointEvery, 'train.checkpointEvery', where, { min: 0, int: true }),
  };
  const e = raw.eval === undefined ? {} : raw.eval;
  if (!isObject(e)) throw new RunConfigError('eval', 'must be a mapping', where);
  checkKeys(e, Object.keys(DEFAULT_EVAL), 'eval', where);
  const ev = { ...DEFAULT_EVAL, ...e } as Raw;
  const evalConfig: EvalConfig = {
    maxInstancesPerTask: num(ev.maxInstancesPerTask, 'eval.maxInstancesPerTask', where, { min: 1, int: true }),
    maxNewTokens: num(ev.maxNewTokens, 'eval.maxNewTokens', where, { min: 1, int: true }),
    batchSize: num(ev.batchSize, 'eval.batchSize', where, { min: 1, int: true }),
  };
  if (ADAPTER_STRATEGIES.includes(strategy.name) && train.mode !== 'lora')
    throw new RunConfigError('train.mode', `strategy ${strategy.name} trains a new LoRA adapter per task: set train.mode: lora (got ${train.mode})`, where);
  const name = raw.name === undefined ? `${strategy.name}` : str(raw.name, 'name', where);
  return {
    name,
    model,
    data,
    stream,
    strategy,
    train,
    eval: evalConfig,
    template: raw.template === undefined ? 'superni' : templateSpec(str(raw.template, 'template', where), base),
    seed: raw.seed === undefined ? 0 : num(raw.seed, 'seed', where, { min: 0, int: true }),
    threads: raw.threads === undefined ? 0 : num(raw.threads, 'threads', where, { min: 0, int: true }),
    device: raw.device === undefined ? 'cpu' : choice(raw.device, ['cpu', 'cuda'] as const, 'device', where),
  };
}

/**
 * Sets `value` at a dotted path (`strategy.m`) of a raw config: how CLI flags override the file.
 * Values are parsed as JSON when they parse (numbers, booleans, lists), else kept as strings.
 *
 * @example
 * applyOverride(raw, 'strategy.m', '50');
 */
export function applyOverride(raw: Raw, path: string, value: string): void {
  const keys = path.split('.');
  let at = raw;
  for (const k of keys.slice(0, -1)) {
    if (typeof at[k] === 'string' && k === 'strategy') at[k] = { name: at[k] };
    if (!isObject(at[k])) at[k] = {};
    at = at[k] as Raw;
  }
  let v: unknown = value;
  try {
    v = JSON.parse(value);
  } catch {
    // a bare word stays a string
  }
  at[keys[keys.length - 1]] = v;
}

/**
 * Reads a YAML or JSON run config, applies `overrides` (dotted path → value) and validates it.
 *
 * @example
 * const config = loadRunConfig('runs/kpig.yaml', { 'strategy.m': '50' });
 */
export function loadRunConfig(path: string, overrides: Record<string, string> = {}): RunConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read the run config ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new InputError(`${path}: not valid ${extname(path).toLowerCase() === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  if (!isObject(raw)) throw new RunConfigError('(top level)', 'must be a mapping of fields', path);
  for (const [k, v] of Object.entries(overrides)) applyOverride(raw, k, v);
  return resolveRunConfig(raw, { baseDir: dirname(resolve(path)), where: path });
}

/**
 * Checks what the config points at before any work starts: the model folder, the task set, the
 * stream (every task known, none both seen and held out, every seen task with train instances).
 */
export function checkRunInputs(config: RunConfig, options: { needData?: boolean; where?: string } = {}): void {
  const where = options.where ?? 'run config';
  if (!existsSync(config.model) || !statSync(config.model).isDirectory())
    throw new RunConfigError('model', `no model folder at ${config.model}`, where);
  if (!existsSync(resolve(config.model, 'config.json'))) throw new RunConfigError('model', `${config.model} has no config.json`, where);
  if (!isNamedTemplate(config.template) && !existsSync(config.template))
    throw new RunConfigError('template', `no template file at ${config.template} (use superni, chat or a file)`, where);
  if (config.strategy.generalData !== null && !existsSync(config.strategy.generalData))
    throw new RunConfigError('strategy.generalData', `no file of general samples at ${config.strategy.generalData}`, where);
  if (options.needData !== false && (!existsSync(config.data) || !statSync(config.data).isDirectory())) throw new RunConfigError('data', `no task-set folder at ${config.data}`, where);
}
