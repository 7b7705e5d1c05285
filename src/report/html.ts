/**
 * The HTML report: one self-contained page (inline CSS and SVG, no script, no external resource)
 * with the same tables as the Markdown summary and the plots: stage × task heat map, per-stage
 * AP / P-score / V-score curves, and loss and IG over the training steps; for several runs also
 * comparison curves. Plot ids (`data-plot`): heatmap, stage-scores, train-loss, train-ig per run
 * (with `data-run="<index>"`), and compare-ap, compare-p across runs.
 */
import type { ReportSummary } from './report.js';
import type { RunData } from './run-dir.js';
import { esc, heatmapSvg, lineChartSvg, type Series } from './svg.js';
import { comparisonTable, constantTable, DEFINITIONS, gateLines, runLabel, runsGate, matrixTable, metricsTable, runFacts, stagePoints, stageTable, trainingTable, type TextTable } from './tables.js';

/** The plot ids of one run's section, in page order. */
export const RUN_PLOTS = ['heatmap', 'stage-scores', 'train-loss', 'train-ig'] as const;
/** The plot ids of the comparison section (several runs only). */
export const COMPARE_PLOTS = ['compare-ap', 'compare-p', 'compare-listen'] as const;

const CSS = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1240px;color:#1b1b1b;padding:0 16px}
h1{font-size:24px}h2{font-size:20px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}h3{font-size:16px;margin-top:24px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:14px}dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.note{background:#fff6e0;border-left:4px solid #e0a000;padding:8px 12px;margin:12px 0;font-size:14px}
.bad{background:#fdecec;border-left-color:#c0392b}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots figure{margin:0}.scroll{overflow-x:auto}
figcaption{font-size:12px;color:#555;max-width:680px}
`;

function htmlTable(t: TextTable): string {
  const head = `<tr>${t.header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>`;
  const body = t.rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('');
  return `<div class="scroll"><table>${head}${body}</table></div>`;
}

const figure = (svg: string, caption: string) => `<figure>${svg}<figcaption>${esc(caption)}</figcaption></figure>`;

function runSection(run: RunData, index: number): string {
  const attrs = `data-run="${index}"`;
  const out: string[] = [`<section id="run-${index}"><h2>Run <code>${esc(run.name)}</code></h2>`];
  out.push(`<dl class="facts">${runFacts(run).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`);
  if (run.missing.length)
    out.push(`<div class="note" data-missing="${run.missing.length}"><strong>Missing</strong> (the report covers what exists):<ul>${run.missing.map((m) => `<li>${esc(m)}</li>`).join('')}</ul></div>`);
  if (run.problems.length) out.push(`<div class="note bad"><strong>Problems</strong>:<ul>${run.problems.map((p) => `<li>${esc(p)}</li>`).join('')}</ul></div>`);

  const rowLabels = run.matrix.map((_, t) => (t === 0 ? 'base' : `stage ${t}: ${run.stages[t - 1]?.task_id ?? '?'}`));
  const heat = heatmapSvg({
    id: 'heatmap',
    attrs,
    title: 'ROUGE-L ×100 after each stage (rows) on each task (columns)',
    rowLabels,
    colLabels: [...run.seen, ...run.heldOut.map((h) => `${h} (held-out)`)],
    values: run.matrix.map((row, t) => [...row, ...run.heldOutMatrix[t]]),
    splitAt: run.heldOut.length ? run.seen.length : undefined,
  });
  out.push('<h3>Stage × task scores</h3>', figure(heat, 'Seen tasks left of the bold line in stream order, held-out tasks right of it; grey cells were not evaluated.'));

  const points = stagePoints(run);
  const curve = (get: (p: (typeof points)[number]) => number | null): [number, number | null][] => points.map((p) => [p.stage, get(p) === null ? null : 100 * get(p)!]);
  const scores = lineChartSvg({
    id: 'stage-scores',
    attrs,
    title: 'Per stage: AP, P-score, V-score and listening (×100)',
    xLabel: 'stage (0 = base model)',
    yLabel: 'score ×100',
    yRange: [0, 100],
    series: [
      { name: 'AP (seen so far)', points: curve((p) => p.ap) },
      { name: 'P-score (held-out)', points: curve((p) => p.p) },
      { name: 'V-score (held-out)', points: curve((p) => p.vHeldOut) },
      { name: 'V-score (seen)', points: curve((p) => p.vSeen), dashed: true },
      { name: 'listening (held-out)', points: curve((p) => p.listenHeldOut) },
      { name: 'listening (seen)', points: curve((p) => p.listenSeen), dashed: true },
    ],
    empty: 'no evaluation yet',
  });

  // Training steps run on across stages; each stage starts where the previous one ended.
  const lossPts: [number, number | null][] = [];
  const igPts: [number, number | null][] = [];
  const marks: { x: number; label: string }[] = [];
  let offset = 0;
  for (const s of run.stages) {
    if (s.steps.length === 0) continue;
    marks.push({ x: offset, label: `S${s.stage}` });
    for (const st of s.steps) {
      lossPts.push([offset + st.step, st.loss]);
      igPts.push([offset + st.step, st.ig]);
    }
    offset += Math.max(...s.steps.map((x) => x.step));
    lossPts.push([offset, null]);
    igPts.push([offset, null]);
  }
  const loss = lineChartSvg({ id: 'train-loss', attrs, title: 'Training loss per optimizer step', xLabel: 'step (all stages)', yLabel: 'loss', series: [{ name: 'loss', points: lossPts }], marks, empty: 'no training log' });
  const ig = lineChartSvg({
    id: 'train-ig',
    attrs,
    title: 'Key-part information gain per optimizer step',
    xLabel: 'step (all stages)',
    yLabel: 'IG (nats/token)',
    series: [{ name: 'IG (batch mean)', points: igPts, color: '#D55E00' }],
    marks,
    empty: `no IG recorded${run.strategy ? ` (strategy ${run.strategy} does not compute it)` : ''}`,
  });
  out.push(
    '<h3>Trends</h3>',
    `<div class="plots">${figure(scores, 'AP averages the seen tasks trained so far; P-score is held-out ROUGE-L over valid outputs; V-score the share of outputs inside the label set.')}${figure(loss, 'Dashed lines mark the start of each stage.')}${figure(ig, 'Mean IG of the batch (KPIG objective); gaps where a stage logged none.')}</div>`,
  );
  out.push('<h3>Stage × task ROUGE-L (×100)</h3>', htmlTable(matrixTable(run)));
  out.push(
    '<h3>Continual-learning metrics</h3>',
    `<p>From the ROUGE-L matrix over the seen tasks${run.metrics && run.metrics.stages < run.stagesTotal ? `, over the first ${run.metrics.stages} of ${run.stagesTotal} stages` : ''}; ×100. FWT in both conventions: raw a[j−1][j], and minus the base model's a[0][j]. Relative gain uses u<sub>j</sub> = a[j][j].</p>`,
    htmlTable(metricsTable(run)),
  );
  out.push(
    '<h3>Per stage</h3>',
    htmlTable(stageTable(run)),
    '<h3>Constant answers per task (share of the most frequent answer, ×100)</h3>',
    htmlTable(constantTable(run)),
    '<h3>Training</h3>',
    htmlTable(trainingTable(run)),
    '</section>',
  );
  return out.join('\n');
}

function comparison(runs: RunData[]): string {
  const byRun = (get: (p: ReturnType<typeof stagePoints>[number]) => number | null): Series[] =>
    runs.map((run) => ({ name: runLabel(run, runs), points: stagePoints(run).map((p): [number, number | null] => [p.stage, get(p) === null ? null : 100 * get(p)!]) }));
  const ap = lineChartSvg({ id: 'compare-ap', title: 'AP over the seen tasks so far, per run', xLabel: 'stage', yLabel: 'ROUGE-L ×100', yRange: [0, 100], series: byRun((p) => p.ap) });
  const p = lineChartSvg({ id: 'compare-p', title: 'P-score (held-out), per run', xLabel: 'stage (0 = base model)', yLabel: 'ROUGE-L ×100', yRange: [0, 100], series: byRun((x) => x.p) });
  const listen = lineChartSvg({ id: 'compare-listen', title: 'Listening probe (held-out), per run', xLabel: 'stage (0 = base model)', yLabel: 'follows the instruction ×100', yRange: [0, 100], series: byRun((x) => x.listenHeldOut) });
  return `<section id="comparison"><h2>Comparison</h2>${htmlTable(comparisonTable(runs))}<div class="plots">${figure(ap, '')}${figure(p, '')}${figure(listen, '')}</div></section>`;
}

/**
 * The report page for one or more runs.
 *
 * @example
 * writeFileSync('report.html', renderHtml([await readRun('runs/a'), await readRun('runs/b')]));
 */
export function renderHtml(runs: RunData[], summary?: ReportSummary): string {
  const title = runs.length > 1 ? `kpig report: ${runs.length} runs` : `kpig report: ${runs[0].name}`;
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${esc(title)}</title><style>${CSS}</style></head><body>`,
    `<h1>${esc(title)}</h1>`,
    summary
      ? `<section id="summary"><h2>${esc(summary.title)}</h2>${htmlTable(summary.table)}${summary.notes.map((n) => `<p>${esc(n)}</p>`).join('')}</section>`
      : `<section id="gate"><h2>Validity gate</h2>${gateLines(runsGate(runs)).map((l) => `<p>${esc(l)}</p>`).join('')}</section>`,
    '<p>Scores are ROUGE-L (mean per task, ×100) unless stated; “–” is not measured or undefined.</p>',
    runs.length > 1 ? comparison(runs) : '',
    ...runs.map((r, i) => runSection(r, i)),
    `<section id="definitions"><h2>Definitions</h2><dl class="facts">${DEFINITIONS.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl><p>Full rules: docs/eval.md in the kpig repository.</p></section>`,
    '</body></html>',
    '',
  ].join('\n');
}
