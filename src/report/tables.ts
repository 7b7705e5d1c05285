/**
 * The report's content as plain tables and lines, shared by the Markdown and the HTML renderers so
 * the two never disagree. Scores are shown ×100 with two decimals; "–" marks a value that was not
 * measured or is undefined.
 */
import { validityGateOverSeeds, type GateInput, type GateResult } from '../eval/stats.js';
import type { RunData } from './run-dir.js';

export interface TextTable {
  header: string[];
  rows: string[][];
}

/**
 * ×100 with two decimals, or "–".
 *
 * @example
 * pct(0.1234); // '12.34'
 */
export function pct(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : (100 * x).toFixed(2);
}

function plain(x: number | null | undefined, digits: number): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

/**
 * One line on the run's state.
 *
 * @example
 * statusLine(run); // 'running or interrupted: 1 of 3 stages finished'
 */
export function statusLine(run: RunData): string {
  const finished = run.stages.filter((s) => s.complete).length;
  const state = run.status?.state ?? 'unknown';
  const label = state === 'running' ? 'running or interrupted' : state;
  return `${label}: ${finished} of ${run.stagesTotal} stage${run.stagesTotal === 1 ? '' : 's'} finished`;
}

/**
 * Facts about the run: strategy, seed, versions, machine.
 *
 * @example
 * for (const [k, v] of runFacts(run)) console.log(`${k}: ${v}`);
 */
export function runFacts(run: RunData): [string, string][] {
  const env = run.environment ?? {};
  const facts: [string, string][] = [
    ['directory', run.dir],
    ['status', statusLine(run)],
    ['strategy', run.strategy ?? '–'],
    ['seed', String(run.config?.seed ?? env.seed ?? '–')],
    ['seen tasks (stream order)', run.seen.join(', ') || '–'],
    ['held-out tasks', run.heldOut.join(', ') || '–'],
  ];
  if (env.kpig_version) facts.push(['kpig', String(env.kpig_version)]);
  if (env.node) facts.push(['node', String(env.node)]);
  if (env.cpu) facts.push(['cpu', `${String(env.cpu)}${env.threads ? `, ${String(env.threads)} threads` : ''}`]);
  if (run.fingerprint) facts.push(['task-set fingerprint', `${run.fingerprint.slice(0, 16)}…`]);
  return facts;
}

const stageLabel = (run: RunData, t: number) => (t === 0 ? 'base' : `stage ${t}`);

/**
 * The stage × task ROUGE-L matrix: seen tasks, then held-out tasks marked "(held-out)".
 *
 * @example
 * matrixTable(run).rows[0][0]; // 'base'
 */
export function matrixTable(run: RunData): TextTable {
  return {
    header: ['after', 'trained task', ...run.seen, ...run.heldOut.map((h) => `${h} (held-out)`)],
    rows: run.matrix.map((row, t) => [
      stageLabel(run, t),
      t === 0 ? '–' : run.stages[t - 1]?.task_id ?? '–',
      ...row.map(pct),
      ...run.heldOutMatrix[t].map(pct),
    ]),
  };
}

const MATRIX_HEADER = ['AP', 'BWT', 'FWT (raw)', 'FWT (vs base)', 'forgetting', 'relative gain (%)'];

/** The matrix metrics as table cells, in the order of MATRIX_HEADER. */
function matrixCells(m: RunData['metrics']): string[] {
  return [pct(m?.ap), pct(m?.bwt), pct(m?.fwtRaw), pct(m?.fwtVsBase), pct(m?.forgetting), plain(m?.relativeGain, 2)];
}

/**
 * AP, BWT, FWT (both conventions), forgetting, relative gain.
 *
 * @example
 * metricsTable(run).rows[0]; // ['1–3 of 3', '75.00', '-37.50', …]
 */
export function metricsTable(run: RunData): TextTable {
  const m = run.metrics;
  return {
    header: ['stages', ...MATRIX_HEADER],
    rows: [
      [
        m ? `1–${m.stages} of ${run.stagesTotal}` : `0 of ${run.stagesTotal}`,
        ...matrixCells(m),
      ],
    ],
  };
}

/** Per evaluated model (base, each stage): AP over the tasks seen so far, P-score, V-scores. */
export interface StagePoint {
  stage: number;
  ap: number | null;
  p: number | null;
  pRetention: number | null;
  vHeldOut: number | null;
  vSeen: number | null;
  /** Listening probe: share of answers that follow the instruction given (held-out, seen). */
  listenHeldOut: number | null;
  listenSeen: number | null;
}

/**
 * The per-stage curves behind the stage table and the "scores per stage" plot.
 *
 * @example
 * const last = stagePoints(run).at(-1); // { stage: 3, ap, p, pRetention, vHeldOut, vSeen }
 */
export function stagePoints(run: RunData): StagePoint[] {
  const evals = [run.base, ...run.stages.map((s) => s.eval)];
  return evals.map((e, t) => {
    const row = run.matrix[t].slice(0, t);
    return {
      stage: t,
      ap: t > 0 && e && row.every((x) => x !== null) ? mean(row as number[]) : null,
      p: e?.p.mean ?? null,
      pRetention: e?.p.retention ?? null,
      vHeldOut: e?.vHeldOut.mean ?? null,
      vSeen: e?.vSeen.mean ?? null,
      listenHeldOut: e?.listeningHeldOut ?? null,
      listenSeen: e?.listeningSeen ?? null,
    };
  });
}

/**
 * {@link stagePoints} as a table, ×100.
 *
 * @example
 * stageTable(run).header[2]; // 'P-score (held-out)'
 */
export function stageTable(run: RunData): TextTable {
  return {
    header: ['after', 'AP (seen so far)', 'P-score (held-out)', 'P retention vs base', 'V-score (held-out)', 'V-score (seen)', 'listening (held-out)', 'listening (seen)'],
    rows: stagePoints(run).map((p) => [stageLabel(run, p.stage), pct(p.ap), pct(p.p), plain(p.pRetention, 3), pct(p.vHeldOut), pct(p.vSeen), pct(p.listenHeldOut), pct(p.listenSeen)]),
  };
}

/**
 * Per task: the constant-answer rate (share of the most frequent answer) of the base model and
 * after every evaluated stage, ×100; 100 means one answer for every instance, a collapse that a
 * V-score alone can hide.
 *
 * @example
 * constantTable(run).rows[0]; // ['task0', '25.00', '50.00', …]
 */
export function constantTable(run: RunData): TextTable {
  const evals = [run.base, ...run.stages.map((s) => s.eval)];
  const tasks = [...run.seen, ...run.heldOut];
  return {
    header: ['task', ...evals.map((_, t) => (t === 0 ? 'base' : `stage ${t}`))],
    rows: tasks.map((task) => [task, ...evals.map((e) => pct(e?.tasks.find((x) => x.task_id === task)?.constant_rate))]),
  };
}

/**
 * Per stage: optimizer steps, loss and IG (means over the stage's steps), throughput, time.
 *
 * @example
 * trainingTable(run).rows.map((r) => r[3]); // mean loss per stage
 */
export function trainingTable(run: RunData): TextTable {
  return {
    header: ['stage', 'task', 'steps', 'mean loss', 'last loss', 'mean IG', 'tokens/s', 'seconds', 'finished'],
    rows: run.stages.map((s) => {
      const igs = s.steps.map((x) => x.ig).filter((x): x is number => x !== null);
      const seconds = typeof s.done?.seconds === 'number' ? s.done.seconds : null;
      return [
        String(s.stage),
        s.task_id ?? '–',
        String(s.steps.length),
        plain(mean(s.steps.map((x) => x.loss)), 4),
        plain(s.steps.at(-1)?.loss, 4),
        plain(mean(igs), 4),
        plain(mean(s.steps.map((x) => x.tokens_per_s)), 0),
        plain(seconds, 1),
        s.complete ? 'yes' : 'no',
      ];
    }),
  };
}

/**
 * How a report names a run: its name, with its seed when another run of the report has the same
 * name (a demo's strategies over several seeds).
 *
 * @example
 * runLabel(run, runs); // 'kpig (seed 1)'
 */
export function runLabel(run: RunData, runs: readonly RunData[]): string {
  if (runs.filter((r) => r.name === run.name).length < 2) return run.name;
  return `${run.name} (seed ${String((run.config as { seed?: unknown } | null)?.seed ?? '?')})`;
}

/**
 * One row per run: its final metrics, for comparing runs.
 *
 * @example
 * comparisonTable([runA, runB]).rows.map((r) => [r[0], r[3]]); // name and AP of each run
 */
export function comparisonTable(runs: RunData[]): TextTable {
  return {
    header: ['run', 'strategy', 'stages', ...MATRIX_HEADER, 'P-score', 'P retention', 'V-score (held-out)', 'V-score (seen)', 'listening (held-out)', 'listening (seen)'],
    rows: runs.map((run) => {
      const m = run.metrics;
      const last = m ? stagePoints(run)[m.stages] : null;
      return [
        runLabel(run, runs),
        run.strategy ?? '–',
        `${run.evaluatedStages} of ${run.stagesTotal}`,
        ...matrixCells(m),
        pct(last?.p),
        plain(last?.pRetention, 3),
        pct(last?.vHeldOut),
        pct(last?.vSeen),
        pct(last?.listenHeldOut),
        pct(last?.listenSeen),
      ];
    }),
  };
}

/**
 * The validity gate (docs/eval.md) over the runs of a report, per seed (`config.seed`): the base
 * model's evaluation, the last evaluated stage of the `multitask` and the `none` run. Without a
 * `multitask` or a `none` run the gate is unknown and fails: a report of other runs alone cannot
 * show held-out instruction following as evidence.
 *
 * @example
 * runsGate([kpigRun, noneRun, multitaskRun]).pass;
 */
export function runsGate(runs: RunData[]): GateResult {
  const seeds = new Map<string, RunData[]>();
  for (const r of runs) {
    const seed = String((r.config as { seed?: unknown } | null)?.seed ?? '?');
    seeds.set(seed, [...(seeds.get(seed) ?? []), r]);
  }
  const last = (r: RunData | undefined) => (r ? ([...r.stages].reverse().find((s) => s.eval)?.eval ?? null) : null);
  const inputs: GateInput[] = [...seeds.values()].map((rs) => {
    const base = rs.find((r) => r.base);
    const mt = rs.find((r) => r.strategy === 'multitask'), none = rs.find((r) => r.strategy === 'none');
    return {
      base: { seenAp: base ? mean((base.matrix[0] ?? []).filter((x): x is number => x !== null)) : null, heldOutV: base?.base?.vHeldOut.mean ?? null },
      multitask: mt ? { heldOutV: last(mt)?.vHeldOut.mean ?? null } : null,
      none: none ? { seenAp: none.metrics?.ap ?? null, heldOutV: last(none)?.vHeldOut.mean ?? null } : null,
    };
  });
  return validityGateOverSeeds(inputs);
}

/** The gate as lines: the verdict, one line per check, and what a failure means for the held-out columns. */
export function gateLines(gate: GateResult): string[] {
  const lines = [`validity gate: ${gate.pass ? 'PASS' : 'FAIL'} (${gate.reason})`];
  for (const c of gate.checks) lines.push(`${c.pass === null ? '?' : c.pass ? '✓' : '✗'} ${c.name}: ${c.detail}`);
  if (!gate.pass) lines.push('The held-out columns (P-score, held-out V-score, held-out listening) are not evidence of instruction following here.');
  return lines;
}

/** What the numbers mean, in the words of docs/eval.md. */
export const DEFINITIONS: [string, string][] = [
  ['Score matrix', 'a[t][j] = mean ROUGE-L (SuperNI / rouge-score tokenisation, Porter stemming, best reference) of seen task j on its test instances after stage t; t = 0 is the base model. Shown ×100.'],
  ['AP', '(1/T) Σ_j a[T][j]: average over the seen tasks after the last evaluated stage T.'],
  ['BWT', '1/(T−1) Σ_{j<T} (a[T][j] − a[j][j]).'],
  ['FWT (raw)', '1/(T−1) Σ_{j=2..T} a[j−1][j]: a task’s score just before its own stage.'],
  ['FWT (vs base)', '1/(T−1) Σ_{j=2..T} (a[j−1][j] − a[0][j]): the same minus the base model’s score.'],
  ['Forgetting', '1/(T−1) Σ_{j<T} (max_{t∈[j,T−1]} a[t][j] − a[T][j]).'],
  ['Relative gain', 'InsCL: RG_T = (100/T) Σ_j a[T][j] / u_j, with u_j = a[j][j] (the score right after the task’s own stage) unless an upper bound is given.'],
  ['P-score', 'Mean ROUGE-L of the held-out tasks over their valid outputs (all outputs for tasks without a label set), macro-averaged over tasks; retention = P / P(base model).'],
  ['V-score', 'Share of outputs inside the task’s label set (case, surrounding punctuation and spacing ignored), macro-averaged over tasks with a label set.'],
  ['Listening', 'Counterfactual probe: test inputs asked with other valid key values (new label words, another format or target); the share of answers that exact-match the answer of the instruction actually given, macro-averaged over tasks.'],
];
