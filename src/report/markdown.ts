/** The Markdown summary of one or more runs. */
import type { ReportSummary } from './report.js';
import type { RunData } from './run-dir.js';
import { comparisonTable, constantTable, DEFINITIONS, gateLines, runsGate, matrixTable, metricsTable, runFacts, stageTable, trainingTable, type TextTable } from './tables.js';

function cellText(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/**
 * A GitHub-flavoured Markdown table.
 *
 * @example
 * markdownTable({ header: ['a', 'b'], rows: [['1', '2']] }); // '| a | b |\n| --- | --- |\n| 1 | 2 |'
 */
export function markdownTable(t: TextTable): string {
  const line = (cells: string[]) => `| ${cells.map(cellText).join(' | ')} |`;
  return [line(t.header), line(t.header.map(() => '---')), ...t.rows.map(line)].join('\n');
}

function runSection(run: RunData, heading: string): string {
  const out: string[] = [`${heading} Run \`${run.name}\``, ''];
  for (const [k, v] of runFacts(run)) out.push(`- **${k}**: ${v}`);
  out.push('');
  if (run.missing.length) {
    out.push('**Missing** (the report covers what exists):', '', ...run.missing.map((m) => `- ${m}`), '');
  }
  if (run.problems.length) out.push('**Problems**:', '', ...run.problems.map((p) => `- ${p}`), '');
  const sub = `${heading}#`;
  out.push(`${sub} Stage × task ROUGE-L (×100)`, '', markdownTable(matrixTable(run)), '');
  out.push(
    `${sub} Continual-learning metrics`,
    '',
    `Computed from the ROUGE-L matrix over the seen tasks${run.metrics && run.metrics.stages < run.stagesTotal ? `, over the first ${run.metrics.stages} of ${run.stagesTotal} stages (the others have no evaluation)` : ''}; scores ×100. FWT is given in both conventions: raw a[j−1][j], and minus the base model's score a[0][j]. Relative gain uses u_j = a[j][j].`,
    '',
    markdownTable(metricsTable(run)),
    '',
  );
  out.push(`${sub} Instruction following and generalisation per stage`, '', markdownTable(stageTable(run)), '');
  out.push(`${sub} Constant answers per task (share of the most frequent answer, ×100)`, '', markdownTable(constantTable(run)), '');
  out.push(`${sub} Training`, '', markdownTable(trainingTable(run)), '');
  return out.join('\n');
}

/**
 * The Markdown report: a comparison table when there are several runs, then one section per run
 * (facts, what is missing, score matrix, metrics, per-stage P/V-scores, training), then the
 * definitions.
 *
 * @example
 * const md = renderMarkdown([await readRun('runs/a')]);
 */
export function renderMarkdown(runs: RunData[], summary?: ReportSummary): string {
  const out: string[] = [runs.length > 1 ? `# kpig report: ${runs.length} runs` : `# kpig report: ${runs[0].name}`, ''];
  if (summary) out.push(`## ${summary.title}`, '', markdownTable(summary.table), '', ...summary.notes.flatMap((n) => [n, '']));
  else out.push('## Validity gate', '', ...gateLines(runsGate(runs)).flatMap((l) => [l, '']));
  out.push('Scores are ROUGE-L (mean per task, ×100) unless a column says otherwise; "–" is not measured or undefined. The HTML report next to this file has the plots.', '');
  if (runs.length > 1) out.push('## Comparison', '', markdownTable(comparisonTable(runs)), '');
  for (const run of runs) out.push(runSection(run, '##'), '');
  out.push('## Definitions', '', ...DEFINITIONS.map(([k, v]) => `- **${k}**: ${v}`), '', 'Full rules: docs/eval.md in the kpig repository.', '');
  return out.join('\n');
}
