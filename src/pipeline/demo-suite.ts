/**
 * `kpig demo`: the whole method on the built-in testbed. Generate the key-part task suite and its
 * instruction rewrites, build (or reuse) one tiny base model per seed, run the stream with every
 * strategy on the same instructions, check that the benchmark can tell listening apart (the
 * validity gate), and compare the strategies on AP, BWT, forgetting, held-out P-score, V-score,
 * ROUGE-L and the listening probe, with 95% intervals over seeds and the paired difference
 * KPIG − random. Every run is a normal run directory, so an interrupted demo resumes where it stopped.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeTaskSet } from '../data/store.js';
import type { TaskSet } from '../data/taskset.js';
import { InputError, KpigIOError } from '../errors/index.js';
import { formatInterval, keyVariation, meanInterval, pairedDifference, validityGateOverSeeds, type GateInput, type GateResult, type IntervalSummary } from '../eval/stats.js';
import { writeFileAtomic, writeJsonAtomic } from '../io/atomic.js';
import { writeReport } from '../report/report.js';
import { gateLines, type TextTable } from '../report/tables.js';
import { readRun, type EvalScores, type RunData } from '../report/run-dir.js';
import { offlineRewriter } from '../rewrite/offline.js';
import { diversify, type RewriteKind } from '../rewrite/variant.js';
import { BASE_RECIPES, buildBaseModel, type BaseModelProgress } from '../synth/base-model.js';
import { generateSuite, mixtureExamples, type SuiteOptions } from '../synth/tasks.js';
import { ADAPTER_STRATEGIES } from '../replay/config.js';
import { resolveRunConfig, type StrategyName } from './run-config.js';
import { runContinual, type RunEvent } from './continual.js';

/** The sizes of one demo: the suite, the replay budget, training and evaluation. */
export interface DemoPreset {
  suite: Required<Pick<SuiteOptions, 'seenTasks' | 'heldOutTasks' | 'trainPerTask' | 'testPerTask' | 'probePerTask'>>;
  m: number;
  lr: number;
  epochs: number;
  batchSize: number;
  evalPerTask: number;
  maxNewTokens: number;
  /** The offline rewrites every strategy trains on besides the instructions themselves. */
  rewrites: readonly RewriteKind[];
}

/** Training and evaluation of both presets: the stream's lr is where `none` forgets clearly (docs/synth.md). */
const STREAM_SETTINGS = { lr: 1e-3, epochs: 2, batchSize: 8, evalPerTask: 100, maxNewTokens: 12, rewrites: ['breadth', 'constraint'] } as const;

export const DEMO_PRESETS: Readonly<Record<'default' | 'quick', Readonly<DemoPreset>>> = {
  default: { suite: { seenTasks: 5, heldOutTasks: 3, trainPerTask: 200, testPerTask: 100, probePerTask: 50 }, m: 20, ...STREAM_SETTINGS },
  quick: { suite: { seenTasks: 4, heldOutTasks: 3, trainPerTask: 100, testPerTask: 100, probePerTask: 30 }, m: 10, ...STREAM_SETTINGS },
};

/** LoRA settings of the demo's adapter strategies (seqlora, olora, reglora): O-LoRA's rank and α. */
export const DEMO_LORA = { rank: 8, alpha: 32 } as const;

/**
 * GeRe's general samples in the demo: as many as the largest replay budget the replay strategies
 * get (m·(seen − 1), at the last stage), so the methods replay comparable amounts.
 */
export function generalCount(preset: DemoPreset): number {
  return preset.m * (preset.suite.seenTasks - 1);
}

/**
 * GeRe's general samples for a seed: the first rows of the general mixture that seed's base model
 * was trained on (written once to `seed-N/general.jsonl`).
 */
async function generalFile(seedDir: string, seed: number, preset: DemoPreset, quick?: boolean): Promise<string> {
  const path = join(seedDir, 'general.jsonl');
  if (!existsSync(path)) {
    const recipe = BASE_RECIPES[quick ? 'quick' : 'default'];
    const rows = mixtureExamples({ seed, size: generalCount(preset), labelShare: recipe.mixtureLabelShare });
    await writeFileAtomic(path, rows.map((r) => JSON.stringify({ instruction: r.instruction, input: r.input, output: r.output })).join('\n') + '\n');
  }
  return path;
}

/** The strategies a demo compares; `multitask` is the ceiling the validity gate needs, `none` the floor. */
export const DEMO_STRATEGIES: readonly StrategyName[] = ['none', 'random', 'inscl', 'kpig', 'multitask'];

export interface DemoOptions {
  quick?: boolean;
  /** Seeds 0..seeds−1 (default 1); each has its own suite draw and its own base model. */
  seeds?: number;
  /** Where the runs and the report go (default `runs/demo` or `runs/demo-quick`). */
  out?: string;
  /** Base-model cache root (default `$KPIG_CACHE/base-models` or `~/.cache/kpig/base-models`). */
  cacheDir?: string;
  threads?: number;
  strategies?: readonly StrategyName[];
  /** Extra strategy fields for the `kpig` runs (an ablation: `{ selection: 'lowest' }`); they enter the config, so such runs are not reused as the default's. */
  kpig?: Record<string, unknown>;
  signal?: AbortSignal;
  onEvent?: (e: DemoEvent) => void;
}

export type DemoEvent =
  | { type: 'base'; seed: number; progress: BaseModelProgress }
  | { type: 'base-ready'; seed: number; dir: string; reused: boolean }
  | { type: 'run-start'; seed: number; strategy: string; runDir: string; resumed: boolean; reused: boolean }
  | { type: 'run'; seed: number; strategy: string; event: RunEvent };

/** The metrics of the comparison, in table order. */
export const DEMO_METRICS = ['ap', 'bwt', 'forgetting', 'pScore', 'vScore', 'heldOutRougeL', 'listenHeldOut', 'listenSeen', 'constantRate'] as const;
export type DemoMetric = (typeof DEMO_METRICS)[number];

/** Which metrics speak of held-out instruction following: they are evidence only when the validity gate passes. */
export const HELD_OUT_METRICS: readonly DemoMetric[] = ['pScore', 'vScore', 'heldOutRougeL', 'listenHeldOut'];

/** One row of the comparison: a strategy (or the base model) after the stream; one value per seed, null where undefined. */
export type DemoRow = { strategy: string } & Record<DemoMetric, (number | null)[]>;

export interface DemoResult {
  out: string;
  seeds: number;
  rows: DemoRow[];
  /** Mean and 95% t-interval over seeds, per row and metric. */
  intervals: Record<string, Record<DemoMetric, IntervalSummary | null>>;
  /** KPIG − random per metric, paired by seed (null when either is not in the comparison). */
  paired: Record<DemoMetric, IntervalSummary | null> | null;
  gate: GateResult;
  /** Per seed, strategy and task: the share of the most frequent answer after the last stage. */
  constantAnswers: { seed: number; strategy: string; task_id: string; rate: number }[];
  report: { markdown: string; html: string };
  seconds: number;
}

const mean = (xs: readonly (number | null | undefined)[]) => {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
};

function metricsOf(e: EvalScores | null, seenAp: number | null, bwt: number | null, forgetting: number | null, heldOutRouge: number | null): Record<DemoMetric, number | null> {
  return {
    ap: seenAp,
    bwt,
    forgetting,
    pScore: e?.p.mean ?? null,
    vScore: e?.vHeldOut.mean ?? null,
    heldOutRougeL: heldOutRouge,
    listenHeldOut: e?.listeningHeldOut ?? null,
    listenSeen: e?.listeningSeen ?? null,
    constantRate: mean(e?.tasks.map((t) => t.constant_rate) ?? []),
  };
}

/** A run's row after its last stage, and the base model's row from the same run. */
function summarize(run: RunData): { row: Record<DemoMetric, number | null>; base: Record<DemoMetric, number | null>; last: EvalScores | null } {
  const last = run.stages[run.stages.length - 1]?.eval ?? null;
  const T = run.matrix.length - 1;
  return {
    row: metricsOf(last, run.metrics?.ap ?? null, run.metrics?.bwt ?? null, run.metrics?.forgetting ?? null, mean(run.heldOutMatrix[T] ?? [])),
    base: metricsOf(run.base, mean(run.matrix[0] ?? []), null, null, mean(run.heldOutMatrix[0] ?? [])),
    last,
  };
}

/**
 * The demo's task set for a seed: the suite with the offline rewrites of every instruction that a
 * train or test instance is asked with (probes keep their instruction as it is).
 */
export async function demoTaskSet(seed: number, preset: DemoPreset): Promise<{ set: TaskSet; stream: { name: string; seen: string[] } }> {
  const suite = generateSuite({ seed, ...preset.suite });
  const used = new Set(suite.set.instances.filter((x) => x.split !== 'probe').map((x) => x.instruction_id));
  const { set } = await diversify(suite.set, offlineRewriter(), { kinds: preset.rewrites, seed, only: (ins) => used.has(ins.instruction_id) });
  return { set, stream: suite.stream };
}

/**
 * Runs the demo and returns the comparison rows (the base model first), their intervals over
 * seeds, the paired KPIG − random differences, the validity gate and the report paths.
 *
 * @example
 * const { rows, gate, report } = await runDemo({ quick: true, onEvent: (e) => console.log(e.type) });
 * if (!gate.pass) console.log('held-out columns are not evidence:', gate.reason);
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
    if (!rows.has(name)) rows.set(name, { strategy: name, ...(Object.fromEntries(DEMO_METRICS.map((m) => [m, []])) as unknown as Record<DemoMetric, (number | null)[]>) });
    return rows.get(name)!;
  };
  const runDirs: string[] = [];
  const gates: GateInput[] = [];
  const constantAnswers: DemoResult['constantAnswers'] = [];
  for (let seed = 0; seed < seeds; seed++) {
    const base = await buildBaseModel({
      quick: options.quick,
      seed,
      cacheDir: options.cacheDir,
      threads: options.threads,
      signal: options.signal,
      onProgress: (progress) => emit({ type: 'base', seed, progress }),
    });
    emit({ type: 'base-ready', seed, dir: base.dir, reused: base.reused });
    const seedDir = join(out, `seed-${seed}`);
    const data = join(seedDir, 'tasks');
    const { set, stream } = await demoTaskSet(seed, preset);
    if (!existsSync(join(data, 'tasks.arrow'))) await writeTaskSet(data, set, { overwrite: true });
    let baseRow: Record<DemoMetric, number | null> | null = null;
    const finals = new Map<string, Record<DemoMetric, number | null>>();
    let firstRun: string | undefined;
    for (const name of strategies) {
      const config = resolveRunConfig({
        name,
        model: base.dir,
        data,
        stream: stream.name,
        strategy: { name, m: preset.m, ...(name === 'kpig' ? options.kpig : {}), ...(name === 'gere' ? { generalData: await generalFile(seedDir, seed, preset, options.quick) , generalSamples: generalCount(preset) } : {}) },
        train: {
          lr: preset.lr,
          epochs: preset.epochs,
          batchSize: preset.batchSize,
          checkpointEvery: 10,
          maxLength: 256,
          // A new adapter per task: O-LoRA's LoRA settings (rank 8, α 32 on the attention's q and v).
          ...(ADAPTER_STRATEGIES.includes(name) ? { mode: 'lora', loraRank: DEMO_LORA.rank, loraAlpha: DEMO_LORA.alpha } : {}),
        },
        eval: { maxInstancesPerTask: preset.evalPerTask, maxNewTokens: preset.maxNewTokens, batchSize: 50 },
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
      if (!reused)
        await runContinual(config, runDir, {
          resume,
          overwrite: !resume,
          signal: options.signal,
          baseFrom: firstRun,
          onEvent: (event) => emit({ type: 'run', seed, strategy: name, event }),
        });
      firstRun ??= runDir;
      runDirs.push(runDir);
      const s = summarize(await readRun(runDir));
      baseRow ??= s.base;
      finals.set(name, s.row);
      const r = row(name);
      for (const m of DEMO_METRICS) r[m].push(s.row[m]);
      for (const t of s.last?.tasks ?? []) constantAnswers.push({ seed, strategy: name, task_id: t.task_id, rate: t.constant_rate });
    }
    if (baseRow) {
      const b = row('base model');
      for (const m of DEMO_METRICS) b[m].push(baseRow[m]);
      const none = finals.get('none'), multi = finals.get('multitask');
      gates.push({
        base: { seenAp: baseRow.ap, heldOutV: baseRow.vScore },
        multitask: multi ? { heldOutV: multi.vScore } : null,
        none: none ? { seenAp: none.ap, heldOutV: none.vScore } : null,
        variation: keyVariation(set, stream.seen),
      });
    }
  }
  const gate = validityGateOverSeeds(gates);
  const ordered = [rows.get('base model')!, ...strategies.map((s) => rows.get(s)!)].filter(Boolean);
  const intervals = Object.fromEntries(ordered.map((r) => [r.strategy, Object.fromEntries(DEMO_METRICS.map((m) => [m, meanInterval(r[m])]))])) as DemoResult['intervals'];
  const kp = rows.get('kpig'), rnd = rows.get('random');
  const paired = kp && rnd ? (Object.fromEntries(DEMO_METRICS.map((m) => [m, pairedDifference(kp[m], rnd[m])])) as Record<DemoMetric, IntervalSummary | null>) : null;
  const summary = {
    title: `Comparison over ${seeds} seed${seeds > 1 ? 's' : ''}`,
    table: demoTable({ rows: ordered, intervals, paired, gate }),
    notes: [...gateText({ gate }).split('\n'), 'Cells: mean ± half-width of the 95% t-interval over seeds (the mean alone for one seed); the last row is the paired difference KPIG − random.'],
  };
  const report = await writeReport(runDirs, join(out, 'report'), { summary });
  const result: DemoResult = { out, seeds, rows: ordered, intervals, paired, gate, constantAnswers, report: { markdown: report.markdown, html: report.html }, seconds: (Date.now() - t0) / 1000 };
  await writeJsonAtomic(join(out, 'comparison.json'), result);
  return result;
}

const HEADINGS: Record<DemoMetric, string> = {
  ap: 'AP',
  bwt: 'BWT',
  forgetting: 'forgetting',
  pScore: 'P-score (held-out)',
  vScore: 'V-score (held-out)',
  heldOutRougeL: 'held-out ROUGE-L',
  listenHeldOut: 'listening (held-out)',
  listenSeen: 'listening (seen)',
  constantRate: 'constant answers',
};

/**
 * The comparison as a table (what the README shows): mean ± half-width of the 95%
 * t-interval over seeds (the mean alone for one seed), then the paired difference KPIG − random.
 * When the validity gate fails, the held-out columns are marked as not evidence.
 */
export function demoTable(result: Pick<DemoResult, 'rows' | 'intervals' | 'paired' | 'gate'>): TextTable {
  const mark = (m: DemoMetric) => (HELD_OUT_METRICS.includes(m) && !result.gate.pass ? ' (not evidence)' : '');
  const rows = result.rows.map((r) => [r.strategy, ...DEMO_METRICS.map((m) => formatInterval(result.intervals[r.strategy]?.[m] ?? null))]);
  if (result.paired) rows.push(['kpig − random (paired)', ...DEMO_METRICS.map((m) => formatInterval(result.paired![m]))]);
  return { header: ['strategy', ...DEMO_METRICS.map((m) => HEADINGS[m] + mark(m))], rows };
}

/** The validity gate as lines of text. */
export function gateText(result: Pick<DemoResult, 'gate'>): string {
  const [head, ...rest] = gateLines(result.gate);
  return [head, ...rest.map((l) => `  ${l}`)].join('\n');
}

function sameConfig(path: string, config: unknown): boolean {
  try {
    return JSON.stringify(JSON.parse(readFileSync(path, 'utf8'))) === JSON.stringify(config);
  } catch {
    return false;
  }
}
