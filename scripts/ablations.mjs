#!/usr/bin/env node
// The KPIG ablations on a finished `kpig demo`: for every seed of the demo, KPIG again with one of
// its changes over DESIGN.md's reading turned off (and once with all of them off), on the same
// base model, task set and base evaluation; then a Markdown table of mean ± 95% interval over seeds
// and the paired difference to the default KPIG. Runs are kept beside the demo's
// (seed-N/kpig-<variant>), so a second call reuses them.
//
//   node scripts/ablations.mjs [--demo runs/demo] [--only a,b] [--seeds seed-0,seed-1]
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { meanInterval, pairedDifference, formatInterval } from '../dist/eval/stats.js';
import { resolveRunConfig } from '../dist/pipeline/run-config.js';
import { runContinual } from '../dist/pipeline/continual.js';
import { readRun } from '../dist/report/run-dir.js';

const { values } = parseArgs({ options: { demo: { type: 'string', default: 'runs/demo' }, only: { type: 'string' }, seeds: { type: 'string' } } });
const demo = resolve(values.demo);

/** Each variant turns one change off (back to DESIGN.md's reading, or to the other option). */
const VARIANTS = {
  'lowest-selection': { selection: 'lowest' },
  'fixed-mask': { replayMask: 'fixed', objectiveMask: 'fixed' },
  'token-ig': { igLevel: 'token' },
  'no-tau-floor-min-share': { tauFloor: 0, minShare: 0 },
  'no-diversity': { diversity: false },
  'pool-mask': { replayMask: 'pool', objectiveMask: 'pool' },
  'no-objective': { igObjective: false },
  'no-ig-replay': { igReplay: false },
  'design-reading': { selection: 'lowest', igLevel: 'token', tauFloor: 0, minShare: 0, replayMask: 'fixed', objectiveMask: 'fixed' },
};
const names = values.only ? values.only.split(',') : Object.keys(VARIANTS);
for (const n of names) if (!VARIANTS[n]) throw new Error(`--only: unknown variant '${n}' (${Object.keys(VARIANTS).join(', ')})`);

const seeds = readdirSync(demo)
  .filter((d) => /^seed-\d+$/.test(d) && (!values.seeds || values.seeds.split(',').includes(d)))
  .filter((d) => existsSync(join(demo, d, 'kpig', 'status.json')) && JSON.parse(readFileSync(join(demo, d, 'kpig', 'status.json'), 'utf8')).state === 'done')
  .sort();
if (seeds.length === 0) throw new Error(`${demo} has no finished kpig run of a demo (seed-N/kpig)`);
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const metricsOf = async (dir) => {
  const r = await readRun(dir);
  const last = r.stages.at(-1)?.eval ?? null;
  return { ap: r.metrics?.ap ?? null, forgetting: r.metrics?.forgetting ?? null, vHeld: last?.vHeldOut.mean ?? null, listenHeld: last?.listeningHeldOut ?? null, listenSeen: last?.listeningSeen ?? null, constant: mean(last?.tasks.map((t) => t.constant_rate) ?? []) };
};
const rows = new Map([['kpig (default)', []], ...names.map((n) => [n, []])]);
for (const seed of seeds) {
  const ref = join(demo, seed, 'kpig');
  const base = JSON.parse(readFileSync(join(ref, 'config.json'), 'utf8'));
  rows.get('kpig (default)').push(await metricsOf(ref));
  for (const n of names) {
    const config = resolveRunConfig({ ...base, name: `kpig-${n}`, strategy: { ...base.strategy, ...VARIANTS[n] } });
    const dir = join(demo, seed, `kpig-${n}`);
    const status = existsSync(join(dir, 'status.json')) ? JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')).state : null;
    const same = existsSync(join(dir, 'config.json')) && readFileSync(join(dir, 'config.json'), 'utf8').trim() === JSON.stringify(config, null, 2).trim();
    if (status !== 'done') {
      const t0 = Date.now();
      await runContinual(config, dir, { resume: same && status !== null, overwrite: !(same && status !== null), baseFrom: ref });
      console.error(`${seed} ${n}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
    rows.get(n).push(await metricsOf(dir));
  }
}
const cols = [['ap', 'AP'], ['forgetting', 'forgetting'], ['vHeld', 'V-score (held-out)'], ['listenHeld', 'listening (held-out)'], ['listenSeen', 'listening (seen)'], ['constant', 'constant answers']];
const def = rows.get('kpig (default)');
console.log(`| variant | ${cols.map((c) => c[1]).join(' | ')} | Δ AP vs default, paired | Δ listening (held-out) vs default, paired |`);
console.log(`| --- | ${cols.map(() => '---').join(' | ')} | --- | --- |`);
for (const [name, rs] of rows) {
  const cells = cols.map(([k]) => formatInterval(meanInterval(rs.map((r) => r[k]))));
  const paired = (k) => (name === 'kpig (default)' ? '–' : formatInterval(pairedDifference(rs.map((r) => r[k]), def.map((r) => r[k]))));
  console.log(`| ${name} | ${cells.join(' | ')} | ${paired('ap')} | ${paired('listenHeld')} |`);
}
console.log(`\n${seeds.length} seed(s) of ${demo}; mean ± half-width of the 95% t-interval over seeds.`);
