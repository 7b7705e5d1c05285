/** `writeReport`: read one or more run directories and write `report.md` and `report.html`. */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { InputError } from '../errors/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { renderHtml } from './html.js';
import { renderMarkdown } from './markdown.js';
import { readRun, type RunData } from './run-dir.js';
import type { TextTable } from './tables.js';

/** A section put before the runs: a benchmark's comparison over seeds and what to make of it. */
export interface ReportSummary {
  title: string;
  table: TextTable;
  /** Paragraphs under the table (plain text). */
  notes: string[];
}

export interface ReportFiles {
  markdown: string;
  html: string;
  /** The runs as read, with what each is missing. */
  runs: RunData[];
}

/**
 * Writes `report.md` and `report.html` for the runs (after `options.summary`, when given) into `outDir` (default: `<run-dir>/report`
 * for one run, `./kpig-report` for several) and returns their paths. Partial runs are reported
 * with what they are missing.
 *
 * @throws InputError when no run directory is given
 * @throws KpigIOError when a run directory does not exist or the files cannot be written
 * @example
 * const { html } = await writeReport(['runs/kpig', 'runs/random'], 'reports/compare');
 */
export async function writeReport(runDirs: string[], outDir?: string, options: { summary?: ReportSummary } = {}): Promise<ReportFiles> {
  if (runDirs.length === 0) throw new InputError('writeReport: give at least one run directory');
  const runs: RunData[] = [];
  for (const d of runDirs) runs.push(await readRun(d));
  const dir = resolve(outDir ?? (runDirs.length === 1 ? join(runDirs[0], 'report') : 'kpig-report'));
  await mkdir(dir, { recursive: true });
  const markdown = join(dir, 'report.md');
  const html = join(dir, 'report.html');
  await writeFileAtomic(markdown, renderMarkdown(runs, options.summary));
  await writeFileAtomic(html, renderHtml(runs, options.summary));
  return { markdown, html, runs };
}
