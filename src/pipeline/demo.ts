/**
 * `kpig demo`: the whole method on the built-in testbed. Generate the key-part task suite, build
 * (or reuse) the tiny base model, run the stream with several strategies, and compare them on
 * AP, BWT, forgetting, held-out P-score, V-score and ROUGE-L, over one or more seeds. Every run is
 * a normal run directory, so an interrupted demo resumes where it stopped.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeTaskSet } from '../data/store.js';
import { InputError, KpigIOError } from '../errors/index.js';
import { writeReport } from '../report/report.js';
import { readRun, type RunData } from '../report/run.js';
import { buildBaseModel, type BaseModelProgress } from '../synth/base-model.js';
import { generateSuite, type SuiteOptions } from '../synth/tasks.js';
import { resolveRunConfig, type StrategyName } from './config.js';
import { runContinual, type RunEvent } from './run.js';

/** The sizes of one demo: the suite, the replay budget, training and evaluation. */
export interface DemoPreset {
  suite: Required<Pick<SuiteOptions, 'seenTasks' | 'heldOutTasks' | 'trainPerTask' | 'testPerTask'>>;
  m: number;
  lr: number;
  epochs: number;
  batchSize: number;
  evalPerTask: number;
  maxNewTokens: number;
}

export const DEMO_PRESETS: Readonly<Record<'default' | 'quick', Readonly<DemoPreset>>> = {
  default: { suite: { seenTasks: 5, heldOutTasks: 3, trainPerTask: 200, testPerTask: 50 }, m: 20, lr: 1e-3, epochs: 2, batchSize: 8, evalPerTask: 50, maxNewTokens: 24 },
  quick: { suite: { seenTasks: 4, heldOutTasks: 3, trainPerTask: 100, testPerTask: 30 }, m: 10, lr: 1e-3, epochs: 2, batchSize: 8, evalPerTask: 30, maxNewTokens: 24 },
};

export const DEMO_STRATEGIES: readonly StrategyName[] = ['none', 'random', 'inscl', 'kpig'];

export interface DemoOptions {
  quick?: boolean;
  /** Seeds 0..seeds−1 (default 1). */
  seeds?: number;
  /** Where the runs and the report go (default `runs/demo` or `runs/demo-quick`). */
  out?: string;
  /** Base-model cache root (default `$KPIG_CACHE/base-models` or `~/.cache/kpig/base-models`). */
  cacheDir?: string;
  threads?: number;
  strategies?: readonly StrategyName[];
  signal?: AbortSignal;
  onEvent?: (e: DemoEvent) => void;
}

export type DemoEvent =
  | { type: 'base'; seed: number; progress: BaseModelProgress }
  | { type: 'base-ready'; seed: number; dir: string; reused: boolean }
  | { type: 'run-start'; seed: number; strategy: string; runDir: string; resumed: boolean; reused: boolean }
  | { type: 'run'; seed: number; strategy: string; event: RunEvent };

/** One row of the comparison: a strategy (or the base model) after the stream. */
export interface DemoRow {
  strategy: string;
  /** One value per seed; null where undefined (e.g. BWT of the base model). */
  ap: (number | null)[];
  bwt: (number | null)[];
  forgetting: (number | null)[];
  pScore: (number | null)[];
  vScore: (number | null)[];
  heldOutRougeL: (number | null)[];
}

export interface DemoResult {
  out: string;
  rows: DemoRow[];
  report: { markdown: string; html: string };
  seconds: number;
}

const mean = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
};

function summarize(run: RunData): Omit<DemoRow, 'strategy'> & { baseRow: Omit<DemoRow, 'strategy'> } {
  const last = run.stages[run.stages.length - 1]?.eval ?? null;
  const T = run.matrix.length - 1;
  const heldLast = run.heldOutMatrix[T] ?? [];
  return {
    ap: [run.metrics?.ap ?? null],
    bwt: [run.metrics?.bwt ?? null],
    forgetting: [run.metrics?.forgetting ?? null],
    pScore: [last?.p.mean ?? null],
    vScore: [last?.vHeldOut.mean ?? null],
    heldOutRougeL: [mean(heldLast)],
    baseRow: {
      ap: [mean(run.matrix[0] ?? [])],
      bwt: [null],
      forgetting: [null],
      pScore: [run.base?.p.mean ?? null],
      vScore: [run.base?.vHeldOut.mean ?? null],
      heldOutRougeL: [mean(run.heldOutMatrix[0] ?? [])],
    },
  };
}

/**
 * Runs the demo and returns the comparison rows (the base model first) and the report paths.
 *
 * @example
 * const { rows, report } = await runDemo({ quick: true, onEvent: (e) => console.log(e.type) });
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const t0 = Date.now();
  const seeds = options.seeds ?? 1;
  if (!Number.isInteger(seeds) || seeds < 1) throw new InputError(`--seeds must be an integer ≥ 1, got ${seeds}`);
  const preset = DEMO_PRESETS[options.quick ? 'quick' : 'default'];
  const out = resolve(options.out ?? join('runs', options.quick ? 'demo-quick' : 'demo'));
  try {
    await mkdir(out, { recursive: true });
  } catch (err) {
    throw new KpigIOError(`cannot create the demo folder ${out}: ${(err as Error).message}`);
  }
  const strategies = options.strategies ?? DEMO_STRATEGIES;
  const emit = options.onEvent ?? (() => {});
  const rows = new Map<string, DemoRow>();
  const row = (name: string) => {
    if (!rows.has(name)) rows.set(name, { strategy: name, ap: [], bwt: [], forgetting: [], pScore: [], vScore: [], heldOutRougeL: [] });
    return rows.get(name)!;
  };
  const runDirs: string[] = [];
  for (let seed = 0; seed < seeds; seed++) {
    const suite = generateSuite({ seed, ...preset.suite });
    const base = await buildBaseModel({
      quick: options.quick,
      seed,
      cacheDir: options.cacheDir,
      threads: options.threads,
      suite: { seenTasks: preset.suite.seenTasks, heldOutTasks: preset.suite.heldOutTasks },
      signal: options.signal,
      onProgress: (progress) => emit({ type: 'base', seed, progress }),
    });
    emit({ type: 'base-ready', seed, dir: base.dir, reused: base.reused });
    const seedDir = join(out, `seed-${seed}`);
    const data = join(seedDir, 'tasks');
    if (!existsSync(join(data, 'tasks.arrow'))) await writeTaskSet(data, suite.set, { overwrite: true });
    let baseRow: Omit<DemoRow, 'strategy'> | null = null;
    for (const name of strategies) {
      const config = resolveRunConfig({
        name,
        model: base.dir,
        data,
        stream: suite.stream.name,
        strategy: { name, m: preset.m },
        train: { lr: preset.lr, epochs: preset.epochs, batchSize: preset.batchSize, checkpointEvery: 10, maxLength: 256 },
        eval: { maxInstancesPerTask: preset.evalPerTask, maxNewTokens: preset.maxNewTokens, batchSize: 32 },
        seed,
        threads: options.threads ?? 0,
      });
      const runDir = join(seedDir, name);
      // A finished run with the same config is reused; an interrupted one resumes; anything else starts over.
      let resume = false, reused = false;
      if (existsSync(join(runDir, 'config.json'))) {
        const same = sameConfig(join(runDir, 'config.json'), config);
        if (same) {
          const status = existsSync(join(runDir, 'status.json')) ? (JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8')) as { state?: string }).state : undefined;
          reused = status === 'done';
          resume = !reused;
        }
      }
      emit({ type: 'run-start', seed, strategy: name, runDir, resumed: resume, reused });
      if (!reused) await runContinual(config, runDir, { resume, overwrite: !resume, signal: options.signal, onEvent: (event) => emit({ type: 'run', seed, strategy: name, event }) });
      runDirs.push(runDir);
      const s = summarize(await readRun(runDir));
      baseRow ??= s.baseRow;
      const r = row(name);
      for (const k of ['ap', 'bwt', 'forgetting', 'pScore', 'vScore', 'heldOutRougeL'] as const) r[k].push(...s[k]);
    }
    if (baseRow) {
      const b = row('base model');
      for (const k of ['ap', 'bwt', 'forgetting', 'pScore', 'vScore', 'heldOutRougeL'] as const) b[k].push(...baseRow[k]);
    }
  }
  const report = await writeReport(runDirs, join(out, 'report'));
  const ordered = [rows.get('base model')!, ...strategies.map((s) => rows.get(s)!)].filter(Boolean);
  return { out, rows: ordered, report: { markdown: report.markdown, html: report.html }, seconds: (Date.now() - t0) / 1000 };
}

function sameConfig(path: string, config: unknown): boolean {
  try {
    return JSON.stringify(JSON.parse(readFileSync(path, 'utf8'))) === JSON.stringify(config);
  } catch {
    return false;
  }
}

/** Mean and population standard deviation of the defined values. */
export function meanStd(xs: (number | null)[]): { mean: number; std: number; n: number } | null {
  const v = xs.filter((x): x is number => x !== null && Number.isFinite(x));
  if (!v.length) return null;
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  return { mean: m, std: Math.sqrt(v.reduce((a, x) => a + (x - m) ** 2, 0) / v.length), n: v.length };
}
