// Run reports: reading a (fake) run directory into the score matrix and its metrics, hand-checked;
// the Markdown and HTML written from it; the HTML rendered in headless Chromium with every plot
// present; interrupted runs, foreign prediction files, several runs, and the CLI.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeTaskSet } from '../src/data/store.js';
import { KpigIOError } from '../src/errors/index.js';
import { COMPARE_PLOTS, RUN_PLOTS } from '../src/report/html.js';
import { writeReport } from '../src/report/report.js';
import { readRun } from '../src/report/run-dir.js';
import { stagePoints } from '../src/report/tables.js';
import { writeFakeRun } from './support/fake-run.js';
import { ModelDir } from './support/models.js';
import { decodePng } from './support/png.js';
import { tinyTaskSet } from './support/tasks.js';

const root = mkdtempSync(join(tmpdir(), 'kpig-report-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

// tinyTaskSet: seen task0..task2, held-out task3, 4 test instances each.
const set = tinyTaskSet({ seen: 3, heldOut: 1, train: 2, test: 4 });
// Right answers out of 4, rows base and stages 1..3, columns task0..task3.
const correct = [
  [1, 0, 1, 1],
  [4, 1, 0, 2],
  [3, 4, 1, 3],
  [2, 3, 4, 2],
];
// One answer outside the label set on every task at the base, one on the held-out task later.
const invalid = [
  [1, 1, 1, 1],
  [0, 0, 0, 1],
  [0, 0, 0, 1],
  [0, 0, 0, 1],
];

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));

/** Renders `html` headless; returns the DOM after load and the screenshot's path. */
function render(html: string, png: string): { dom: string } {
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--hide-scrollbars'];
  const shot = spawnSync(CHROMIUM!, [...args, `--screenshot=${png}`, '--window-size=1400,2400', `file://${html}`], { encoding: 'utf8', timeout: 90_000 });
  if (shot.status !== 0) throw new Error(`chromium --screenshot failed: ${shot.stderr}`);
  const dom = spawnSync(CHROMIUM!, [...args, '--dump-dom', `file://${html}`], { encoding: 'utf8', timeout: 90_000, maxBuffer: 1 << 26 });
  if (dom.status !== 0) throw new Error(`chromium --dump-dom failed: ${dom.stderr}`);
  return { dom: dom.stdout };
}

/** data-plot ids (with data-run where present) of the rendered <svg> elements. */
function plotsIn(dom: string): string[] {
  return [...dom.matchAll(/<svg\b[^>]*>/g)].map((m) => {
    const id = /data-plot="([^"]+)"/.exec(m[0])?.[1] ?? '?';
    const run = /data-run="([^"]+)"/.exec(m[0])?.[1];
    return run === undefined ? id : `${id}#${run}`;
  });
}

describe('readRun on a complete run', async () => {
  const dir = join(root, 'complete');
  await writeFakeRun(dir, { set, correct, invalid, name: 'kpig-run' });
  const run = await readRun(dir);

  it('reads the stream, the stages and nothing missing', () => {
    expect(run.name).toBe('kpig-run');
    expect(run.strategy).toBe('kpig');
    expect(run.seen).toEqual(['task0', 'task1', 'task2']);
    expect(run.heldOut).toEqual(['task3']);
    expect(run.stagesTotal).toBe(3);
    expect(run.missing).toEqual([]);
    expect(run.problems).toEqual([]);
    expect(run.stages.map((s) => [s.task_id, s.complete, s.steps.length])).toEqual([['task0', true, 6], ['task1', true, 6], ['task2', true, 6]]);
  });

  it('builds the ROUGE-L matrix from the predictions', () => {
    expect(run.matrix).toEqual(correct.map((r) => r.slice(0, 3).map((c) => c / 4)));
    expect(run.heldOutMatrix).toEqual(correct.map((r) => [r[3] / 4]));
  });

  it('matrix metrics by hand', () => {
    const m = run.metrics!;
    expect(m.stages).toBe(3);
    expect(m.ap).toBeCloseTo((0.5 + 0.75 + 1) / 3, 12); // 0.75
    expect(m.bwt).toBeCloseTo(((0.5 - 1) + (0.75 - 1)) / 2, 12); // -0.375
    expect(m.fwtRaw).toBeCloseTo((0.25 + 0.25) / 2, 12); // a[1][2], a[2][3]
    expect(m.fwtVsBase).toBeCloseTo(((0.25 - 0) + (0.25 - 0.25)) / 2, 12); // 0.125
    expect(m.forgetting).toBeCloseTo(((1 - 0.5) + (1 - 0.75)) / 2, 12); // 0.375
  });

  it('P-score, retention and V-scores per stage by hand', () => {
    const p = stagePoints(run);
    // Held-out task3 at the base: 1 right, 1 invalid, 2 wrong labels → P = 1/3, V = 3/4.
    expect(p[0].p).toBeCloseTo(1 / 3, 12);
    expect(p[0].vHeldOut).toBeCloseTo(0.75, 12);
    expect(p[0].vSeen).toBeCloseTo(0.75, 12);
    expect(p[0].ap).toBeNull();
    // After stage 3: 2 right, 1 invalid, 1 wrong → P = 2/3, retention (2/3)/(1/3) = 2.
    expect(p[3].p).toBeCloseTo(2 / 3, 12);
    expect(p[3].pRetention).toBeCloseTo(2, 12);
    expect(p[3].vSeen).toBe(1);
    expect(p[2].ap).toBeCloseTo((0.75 + 1) / 2, 12);
  });
});

describe('writeReport', () => {
  it('writes Markdown with the tables and an offline HTML page', async () => {
    const dir = join(root, 'md');
    await writeFakeRun(dir, { set, correct, invalid });
    const { markdown, html } = await writeReport([dir]);
    expect(markdown).toBe(join(dir, 'report', 'report.md'));
    const md = readFileSync(markdown, 'utf8');
    expect(md).toContain('| 1–3 of 3 | 75.00 | -37.50 | 25.00 | 12.50 | 37.50 |');
    expect(md).toContain('| stage 3 | task2 | 50.00 | 75.00 | 100.00 | 50.00 |');
    expect(md).toContain('| stage 3 | 75.00 | 66.67 | 2.000 | 75.00 | 100.00 |');
    expect(md).toMatch(/FWT is given in both conventions/);
    // One run cannot show the ceiling and the floor: the gate is unknown, and the report says so.
    expect(md).toMatch(/validity gate: FAIL \(no multitask run: the ceiling cannot be checked/);
    expect(md).toMatch(/not evidence of instruction following/);
    // Constant answers per task: one row per task, a column for the base model and each stage.
    const constant = md.split('Constant answers per task')[1].split('\n').filter((l) => l.startsWith('| task'));
    expect(constant.length).toBeGreaterThanOrEqual(3);
    for (const row of constant) expect(row.split('|').length - 2).toBe(5);
    const page = readFileSync(html, 'utf8');
    expect(page).toContain('<section id="gate">');
    expect(page).not.toMatch(/<script|<link|\bsrc=|@import|url\(/i);
    expect(page.match(/https?:\/\/[^"'\s]+/g)?.every((u) => u === 'http://www.w3.org/2000/svg')).toBe(true);
    for (const id of RUN_PLOTS) expect(page).toContain(`data-plot="${id}" data-run="0"`);
  });

  it('renders in headless Chromium with every plot present and a non-blank screenshot', async (ctx) => {
    if (!CHROMIUM) {
      console.log('skipped: chromium is not installed (/usr/bin/chromium); CI installs it');
      ctx.skip();
    }
    const dir = join(root, 'render');
    await writeFakeRun(dir, { set, correct, invalid, name: 'render-check' });
    const { html } = await writeReport([dir]);
    const png = join(root, 'report.png');
    const { dom } = render(html, png);
    expect(plotsIn(dom).sort()).toEqual(RUN_PLOTS.map((id) => `${id}#0`).sort());
    // Every plot drew something: heat-map cells, polylines for the curves.
    expect((dom.match(/<rect [^>]*fill="rgb\(/g) ?? []).length).toBeGreaterThanOrEqual(16);
    expect((dom.match(/<polyline /g) ?? []).length).toBeGreaterThanOrEqual(4);
    const img = decodePng(readFileSync(png));
    expect([img.width, img.height]).toEqual([1400, 2400]);
    let ink = 0;
    const colours = new Set<number>();
    for (let i = 0; i < img.width * img.height; i++) {
      const [r, g, b] = [img.pixels[i * 4], img.pixels[i * 4 + 1], img.pixels[i * 4 + 2]];
      if (r < 240 || g < 240 || b < 240) ink++;
      colours.add((r << 16) | (g << 8) | b);
    }
    expect(ink / (img.width * img.height)).toBeGreaterThan(0.01);
    expect(colours.size).toBeGreaterThan(50);
    const keep = join(tmpdir(), 'kpig-report-screenshot.png');
    copyFileSync(png, keep);
    console.log(`report screenshot: ${keep} (${(100 * ink / (img.width * img.height)).toFixed(1)}% non-white, ${colours.size} colours)`);
  });

  it('compares several runs', async (ctx) => {
    const a = join(root, 'cmp-a'), b = join(root, 'cmp-b');
    await writeFakeRun(a, { set, correct, invalid, name: 'kpig' });
    await writeFakeRun(b, { set, correct: correct.map((r, t) => r.map((c) => (t === 0 ? c : Math.max(0, c - 1)))), name: 'random', strategy: 'random', ig: false });
    const out = join(root, 'cmp-out');
    const { markdown, html } = await writeReport([a, b], out);
    const md = readFileSync(markdown, 'utf8');
    expect(md).toContain('## Comparison');
    expect(md).toMatch(/\| kpig \| kpig \| 3 of 3 \| 75\.00 \|/);
    expect(md).toMatch(/\| random \| random \| 3 of 3 \| 50\.00 \|/);
    const page = readFileSync(html, 'utf8');
    expect(page).toContain('no IG recorded (strategy random does not compute it)');
    if (!CHROMIUM) {
      console.log('skipped the render: chromium is not installed');
      ctx.skip();
    }
    const { dom } = render(html, join(root, 'cmp.png'));
    expect(plotsIn(dom).sort()).toEqual([...COMPARE_PLOTS, ...RUN_PLOTS.map((id) => `${id}#0`), ...RUN_PLOTS.map((id) => `${id}#1`)].sort());
  });
});

describe('bad input', () => {
  it('an interrupted run: reports what exists and lists what is missing', async () => {
    const dir = join(root, 'interrupted');
    await writeFakeRun(dir, { set, correct, invalid, stagesDone: 1, partialStage: true });
    const run = await readRun(dir);
    expect(run.status?.state).toBe('running');
    expect(run.missing).toEqual([
      'stage-02/done.json (stage 2 did not finish)',
      'stage-02/eval.arrow (stage 2 was not evaluated)',
      'stage-03/ (stage 3 of 3, task task2: not started)',
    ]);
    expect(run.evaluatedStages).toBe(1);
    expect(run.metrics!.stages).toBe(1);
    expect(run.metrics!.ap).toBe(1);
    expect(run.metrics!.bwt).toBeNull();
    expect(run.matrix[2]).toEqual([null, null, null]);
    expect(run.stages[1].steps).toHaveLength(6); // the killed stage's log is still shown
    const { markdown, html } = await writeReport([dir]);
    const md = readFileSync(markdown, 'utf8');
    expect(md).toContain('running or interrupted: 1 of 3 stages finished');
    expect(md).toContain('- stage-03/ (stage 3 of 3, task task2: not started)');
    expect(md).toContain('over the first 1 of 3 stages');
    expect(readFileSync(html, 'utf8')).toContain('data-missing="3"');
  });

  it('a run without config, status or base evaluation still reads from its stage folders', async () => {
    const dir = join(root, 'bare');
    await writeFakeRun(dir, { set, correct, invalid, noBase: true });
    rmSync(join(dir, 'config.json'));
    rmSync(join(dir, 'status.json'));
    const run = await readRun(dir);
    expect(run.missing).toEqual([
      'config.json (the run config: name, strategy and stream unknown)',
      'status.json (run state unknown)',
      'base/eval.arrow (the base model was not evaluated: no stage-0 row, no FWT vs base, no P retention)',
    ]);
    expect(run.stagesTotal).toBe(3);
    expect(run.seen).toEqual(['task0', 'task1', 'task2']); // from done.json
    expect(run.metrics!.fwtVsBase).toBeNull();
    expect(run.metrics!.bwt).toBeCloseTo(-0.375, 12);
  });

  it('a prediction file for another task set is left out and reported', async () => {
    const dir = join(root, 'foreign');
    await writeFakeRun(dir, { set, correct, invalid });
    const other = join(root, 'foreign-src');
    await writeFakeRun(other, { set, correct, invalid, fingerprint: 'f'.repeat(64) });
    copyFileSync(join(other, 'stage-02', 'eval.arrow'), join(dir, 'stage-02', 'eval.arrow'));
    const run = await readRun(dir);
    expect(run.problems).toHaveLength(1);
    expect(run.problems[0]).toMatch(/^stage-02\/eval\.arrow: predictions for another task set than base\/eval\.arrow/);
    expect(run.matrix[2]).toEqual([null, null, null]);
    expect(run.evaluatedStages).toBe(1);
  });

  it('unreadable files are problems, not crashes; a missing folder is an error', async () => {
    const dir = join(root, 'broken');
    await writeFakeRun(dir, { set, correct, invalid });
    writeFileSync(join(dir, 'stage-03', 'eval.arrow'), 'garbage');
    writeFileSync(join(dir, 'status.json'), '{oops');
    const run = await readRun(dir);
    expect(run.problems.some((p) => p.startsWith('status.json: unreadable'))).toBe(true);
    expect(run.problems.some((p) => /^stage-03\/eval\.arrow: not a (readable Arrow IPC file|kpig prediction table)/.test(p))).toBe(true);
    expect(run.evaluatedStages).toBe(2);
    await expect(readRun(join(root, 'nope'))).rejects.toThrow(KpigIOError);
    await expect(writeReport([])).rejects.toThrow(/at least one run directory/);
  });

  it('an empty test split: the task has no row and its cells are not evaluated', async () => {
    const dir = join(root, 'empty-split');
    const noTest = structuredClone(set);
    noTest.instances = noTest.instances.filter((r) => !(r.task_id === 'task3' && r.split === 'test'));
    await writeFakeRun(dir, { set: noTest, correct, invalid });
    const run = await readRun(dir);
    expect(run.heldOutMatrix.every((r) => r[0] === null)).toBe(true);
    expect(stagePoints(run)[3].p).toBeNull();
    expect(stagePoints(run)[3].vHeldOut).toBeNull();
    const md = readFileSync((await writeReport([dir])).markdown, 'utf8');
    expect(md).toContain('| stage 3 | task2 | 50.00 | 75.00 | 100.00 | – |');
  });
});

describe('kpig report (CLI)', () => {
  it('writes the report of a run and names what an interrupted one misses', async () => {
    const dir = join(root, 'cli-run');
    await writeFakeRun(dir, { set, correct, invalid, stagesDone: 2 });
    const r = spawnSync(process.execPath, ['dist/cli/main.js', 'report', dir, '--out', join(root, 'cli-out')], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([join(root, 'cli-out', 'report.md'), join(root, 'cli-out', 'report.html')]);
    expect(r.stderr).toContain('is incomplete; missing: stage-03/ (stage 3 of 3, task task2: not started)');
    const bad = spawnSync(process.execPath, ['dist/cli/main.js', 'report', join(root, 'absent')], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^kpig: run directory .*absent: /);
  });
});

describe('a run written by the continual-run engine (kpig run)', () => {
  const models = new ModelDir();
  afterAll(() => models.cleanup());

  it('is read without gaps, and after losing its last stage reports it as missing', async (ctx) => {
    const model = await models.make({ preset: 'llama-nano', seed: 3, config: { vocab_size: 259 } });
    const data = join(models.root, 'tasks');
    await writeTaskSet(data, tinyTaskSet());
    const cfg = join(models.root, 'run.json');
    writeFileSync(cfg, JSON.stringify({
      name: 'engine', model, data, stream: 'main', strategy: { name: 'kpig', m: 2 },
      train: { batchSize: 4, lr: 3e-3, maxLength: 128 }, eval: { maxInstancesPerTask: 2, maxNewTokens: 4, batchSize: 8 }, seed: 1, threads: 1,
    }));
    const dir = join(models.root, 'run');
    const r = spawnSync(process.execPath, ['dist/cli/main.js', 'run', cfg, '-o', dir, '-q'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const run = await readRun(dir);
    expect(run.missing).toEqual([]);
    expect(run.problems).toEqual([]);
    expect(run.seen).toEqual(['task0', 'task1', 'task2']);
    expect(run.heldOut).toEqual(['task3']);
    expect(run.evaluatedStages).toBe(3);
    expect(run.stages.every((s) => s.steps.length > 0 && s.steps.every((x) => x.ig !== null))).toBe(true);
    expect(run.matrix.flat().every((x) => x !== null && x >= 0 && x <= 1)).toBe(true);

    // As a kill during stage 3 leaves it: no stage-03 results, no results.json, status still running.
    rmSync(join(dir, 'stage-03'), { recursive: true });
    rmSync(join(dir, 'results.json'));
    writeFileSync(join(dir, 'status.json'), JSON.stringify({ state: 'running', stages_done: 2, stages_total: 3 }));
    const cut = await readRun(dir);
    expect(cut.seen).toEqual(['task0', 'task1', 'task2']); // the stream, from the task set config.json names
    expect(cut.missing).toEqual(['stage-03/ (stage 3 of 3, task task2: not started)']);
    expect(cut.evaluatedStages).toBe(2);
    const { html } = await writeReport([dir]);
    if (!CHROMIUM) {
      console.log('skipped the render: chromium is not installed');
      ctx.skip();
    }
    const { dom } = render(html, join(models.root, 'engine.png'));
    expect(plotsIn(dom).sort()).toEqual(RUN_PLOTS.map((id) => `${id}#0`).sort());
  });
});
