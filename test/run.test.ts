// Continual runs through `kpig run` on a tiny generated model and task stream: every strategy end
// to end, each replay plan against its definition, resume after SIGKILL with bit-identical final
// metrics, and invalid configs refused before any work starts.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTaskSet } from '../src/data/store.js';
import { kpigAllocation, lowestIndices, stdDev } from '../src/replay/allocate.js';
import { killRunAt } from './support/kill.js';
import { ModelDir } from './support/models.js';
import { tinyRunInputs } from './support/run-inputs.js';
import { tinyTaskSet } from './support/tasks.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

let model: string;
let data: string;
beforeAll(async () => {
  ({ model, data } = await tinyRunInputs(dirs));
});

const M = 3; // replay instances per finished task

function config(strategy: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return {
    model,
    data,
    stream: 'main',
    strategy: { m: M, fisherSamples: 4, ...strategy },
    train: { batchSize: 4, lr: 3e-3, checkpointEvery: 1, maxLength: 128 },
    eval: { maxInstancesPerTask: 2, maxNewTokens: 4, batchSize: 8 },
    seed: 1,
    threads: 1,
    ...extra,
  };
}

function kpig(args: string[]) {
  return spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });
}

function writeConfig(name: string, c: unknown): string {
  const path = join(dirs.root, `${name}.json`);
  writeFileSync(path, JSON.stringify(c));
  return path;
}

function plan(runDir: string, stage: number) {
  const t = tableFromIPC(readFileSync(join(runDir, `stage-0${stage}`, 'plan.arrow')));
  return t.toArray().map((r) => r.toJSON() as { task_id: string; instance_id: string; instruction_id: string; role: string; target: string | null });
}

const runs = new Map<string, string>();
async function run(strategy: string, extra: Record<string, unknown> = {}): Promise<string> {
  const key = `${strategy}${JSON.stringify(extra)}`;
  if (runs.has(key)) return runs.get(key)!;
  const out = join(dirs.root, `run-${runs.size}`);
  const r = kpig(['run', writeConfig(`c${runs.size}`, config({ name: strategy, ...extra }, {})), '--out', out, '--quiet']);
  expect(r.stderr + r.stdout).toContain('done');
  expect(r.status).toBe(0);
  runs.set(key, out);
  return out;
}

describe.each(['none', 'random', 'multitask', 'kpig', 'inscl', 'ewc', 'lwf'])('strategy %s', (strategy) => {
  it('runs end to end and writes the whole run directory', async () => {
    const dir = await run(strategy);
    for (const f of ['config.json', 'environment.json', 'status.json', 'results.json', 'base/eval.arrow'])
      expect(existsSync(join(dir, f)), f).toBe(true);
    for (let t = 1; t <= 3; t++)
      for (const f of ['plan.arrow', 'train.jsonl', 'eval.arrow', 'done.json', 'final/trainer_state.json'])
        expect(existsSync(join(dir, `stage-0${t}`, f)), `stage ${t} ${f}`).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8'))).toMatchObject({ state: 'done', stages_done: 3, stages_total: 3 });
    const results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
    expect(results.tasks).toEqual(['task0', 'task1', 'task2', 'task3']);
    expect(results.matrix).toHaveLength(4); // base + 3 stages
    for (const row of results.matrix) for (const v of row) expect(v).toBeGreaterThanOrEqual(0);
    // No stage left its in-stage checkpoint behind.
    for (let t = 1; t <= 3; t++) expect(readdirSync(join(dir, `stage-0${t}`))).not.toContain('checkpoint');
    const lines = readFileSync(join(dir, 'stage-02', 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual(lines.map((_, i) => i + 1));
    for (const l of lines) expect(Number.isFinite(l.loss)).toBe(true);
  });
});

describe('replay plans obey their definitions', () => {
  it('none trains the current task only', async () => {
    const dir = await run('none');
    for (let t = 1; t <= 3; t++) {
      const p = plan(dir, t);
      expect(new Set(p.map((x) => x.task_id))).toEqual(new Set([`task${t - 1}`]));
      expect(p).toHaveLength(8);
    }
  });

  it('random replays m distinct instances of every previous task', async () => {
    const dir = await run('random');
    const p = plan(dir, 3).filter((x) => x.role === 'replay');
    for (const task of ['task0', 'task1']) {
      const ids = p.filter((x) => x.task_id === task).map((x) => x.instance_id);
      expect(ids).toHaveLength(M);
      expect(new Set(ids).size).toBe(M);
    }
  });

  it('multitask trains on every seen task jointly', async () => {
    const dir = await run('multitask');
    expect(plan(dir, 3)).toHaveLength(24);
    expect(new Set(plan(dir, 3).map((x) => x.task_id))).toEqual(new Set(['task0', 'task1', 'task2']));
  });

  it('kpig, as DESIGN.md reads it, allocates m·(t−1) by exp(−IG/τ) and takes the lowest-IG instances', async () => {
    const dir = await run('kpig', { selection: 'lowest', igLevel: 'token', tauFloor: 0, minShare: 0, replayMask: 'fixed', objectiveMask: 'fixed' });
    for (const t of [2, 3]) {
      const scores = tableFromIPC(readFileSync(join(dir, `stage-0${t}`, 'ig.arrow'))).toArray().map((r) => r.toJSON() as { task_id: string; instance_id: string; ig_ce: number; masked_instruction: string });
      for (const s of scores) expect(s.masked_instruction).toMatch(/^Is the word even\? Answer '\[MASK\]' or '\[MASK\]'\.$|^Reply '\[MASK\]' when/);
      const prev = Array.from({ length: t - 1 }, (_, k) => `task${k}`);
      const perTask = prev.map((task) => scores.filter((s) => s.task_id === task));
      const taskIg = perTask.map((s) => s.reduce((a, x) => a + x.ig_ce, 0) / s.length);
      const { counts } = kpigAllocation(taskIg, M * (t - 1), { caps: perTask.map((s) => s.length) });
      const alloc = JSON.parse(readFileSync(join(dir, `stage-0${t}`, 'allocation.json'), 'utf8'));
      expect(alloc.tau).toBeCloseTo(stdDev(taskIg), 12);
      const replay = plan(dir, t).filter((x) => x.role === 'replay');
      expect(replay).toHaveLength(M * (t - 1));
      prev.forEach((task, k) => {
        const chosen = new Set(replay.filter((x) => x.task_id === task).map((x) => x.instance_id));
        expect(chosen.size).toBe(counts[k]);
        const lowest = lowestIndices(perTask[k].map((s) => s.ig_ce), counts[k]).map((i) => perTask[k][i].instance_id);
        expect(chosen).toEqual(new Set(lowest));
      });
    }
    // The IG objective ran: stage 2 logged an IG for its steps.
    const lines = readFileSync(join(dir, 'stage-02', 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.some((l) => typeof l.ig === 'number')).toBe(true);
    // Instruction diversity: training items use both the seed and the rewrite.
    expect(new Set(plan(dir, 1).map((x) => x.instruction_id.split('/')[1]))).toEqual(new Set(['seed', 'breadth-1']));
  });

  it('kpig by default: sequence-level IG, τ floor and minimum share, stratified by gold label, counterfactual masking recorded', async () => {
    const dir = await run('kpig');
    const masking = JSON.parse(readFileSync(join(dir, 'masking.json'), 'utf8'));
    expect(masking).toMatchObject({ replay: 'counterfactual', objective: 'counterfactual', seed: 1 });
    expect(masking.placeholder_pool.length).toBeGreaterThan(5);
    const words = ['yes', 'no', 'up', 'down', 'hot', 'cold', 'red', 'blue'];
    for (const t of [2, 3]) {
      const scores = tableFromIPC(readFileSync(join(dir, `stage-0${t}`, 'ig.arrow'))).toArray().map(
        (r) => r.toJSON() as { task_id: string; instance_id: string; instruction_id: string; ig_ce: number; n_tokens: number; masked_instruction: string },
      );
      for (const s of scores) {
        // Other label words of the set stand where the task's own were: no placeholder for the objective to learn.
        const quotedWords = [...s.masked_instruction.matchAll(/'([^']+)'/g)].map((m) => m[1]);
        expect(quotedWords).toHaveLength(2);
        for (const w of quotedWords) expect(words).toContain(w);
        expect(s.masked_instruction).not.toMatch(/MASK/);
      }
      const prev = Array.from({ length: t - 1 }, (_, k) => `task${k}`);
      const perTask = prev.map((task) => scores.filter((s) => s.task_id === task));
      const taskIg = perTask.map((s) => s.reduce((a, x) => a + x.ig_ce * x.n_tokens, 0) / s.length);
      const alloc = JSON.parse(readFileSync(join(dir, `stage-0${t}`, 'allocation.json'), 'utf8'));
      // τ = max(std, 0.5); every task at least half an equal share.
      expect(alloc.tau).toBeCloseTo(Math.max(stdDev(taskIg), 0.5), 12);
      const replay = plan(dir, t).filter((x) => x.role === 'replay');
      expect(replay).toHaveLength(M * (t - 1));
      prev.forEach((task, k) => {
        const chosen = replay.filter((x) => x.task_id === task).map((x) => x.instance_id);
        expect(chosen.length).toBeGreaterThanOrEqual(Math.floor((0.5 * M * (t - 1)) / (t - 1)));
        // Gold classes of the buffer: the answer's position in the label set (even / odd word length).
        const cls = (id: string) => (Number(id.split('-')[1]) < 8 ? ['ant', 'bee', 'cat', 'dog', 'eel', 'fox', 'gnu', 'hen', 'ibis', 'jay', 'kiwi', 'lynx', 'mole', 'newt', 'orca', 'puma'][(Number(id.split('-')[1]) * 5 + k * 3) % 16].length % 2 : -1);
        if (chosen.length >= 2) expect(new Set(chosen.map(cls)).size).toBe(2);
        // Within a class, the chosen are its lowest-IG items.
        for (const c of [0, 1]) {
          const inClass = perTask[k].filter((s) => cls(s.instance_id) === c).sort((a, b) => a.ig_ce * a.n_tokens - b.ig_ce * b.n_tokens);
          const picked = chosen.filter((id) => cls(id) === c);
          expect(new Set(picked)).toEqual(new Set(inClass.slice(0, picked.length).map((s) => s.instance_id)));
        }
      });
    }
  });

  it('kpig ablations: no diversity uses seed instructions only; no IG replay is random', async () => {
    const dir = await run('kpig', { diversity: false, igReplay: false });
    for (let t = 1; t <= 3; t++) for (const x of plan(dir, t)) expect(x.instruction_id).toMatch(/\/seed$/);
    expect(existsSync(join(dir, 'stage-02', 'ig.arrow'))).toBe(false);
    const p = plan(dir, 3).filter((x) => x.role === 'replay');
    expect(p.filter((x) => x.task_id === 'task0')).toHaveLength(M);
  });

  it('inscl splits m·(t−1) by Wasserstein distance with an exact sum', async () => {
    const dir = await run('inscl');
    const alloc = JSON.parse(readFileSync(join(dir, 'stage-03', 'allocation.json'), 'utf8')).allocation as { task_id: string; count: number; score: number }[];
    expect(alloc.map((a) => a.task_id)).toEqual(['task0', 'task1']);
    expect(alloc.reduce((a, x) => a + x.count, 0)).toBe(2 * M);
    for (const a of alloc) expect(a.score).toBeGreaterThanOrEqual(0);
    const W = alloc.map((a) => a.score), sum = W[0] + W[1];
    alloc.forEach((a, k) => expect(Math.abs(a.count - (W[k] / sum) * 2 * M)).toBeLessThan(1));
    expect(plan(dir, 3).filter((x) => x.role === 'replay')).toHaveLength(2 * M);
  });

  it('ewc stores the Fisher diagonal; lwf trains on the old model’s answers', async () => {
    expect(existsSync(join(await run('ewc'), 'stage-01', 'ewc.safetensors'))).toBe(true);
    const lwf = plan(await run('lwf'), 2).filter((x) => x.role === 'lwf');
    for (const x of lwf) {
      expect(x.task_id).toBe('task1');
      expect(x.target).toBeTruthy();
    }
  });
});

describe('resume', () => {
  it('a run killed mid-stage and resumed ends with bit-identical metrics', async () => {
    const whole = await run('kpig');
    const out = join(dirs.root, 'run-killed');
    const cfg = writeConfig('killed', config({ name: 'kpig' }));
    // Kill the process (SIGKILL: no cleanup) in the middle of stage 2 (3 steps), after its first in-stage checkpoint.
    await killRunAt(cfg, out, 2, 2);
    expect(existsSync(join(out, 'stage-02', 'checkpoint'))).toBe(true);
    expect(existsSync(join(out, 'stage-02', 'done.json'))).toBe(false);
    const r = kpig(['run', '--resume', out, '--quiet']);
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(out, 'results.json'), 'utf8')).toBe(readFileSync(join(whole, 'results.json'), 'utf8'));
    for (let t = 1; t <= 3; t++) {
      expect(readFileSync(join(out, `stage-0${t}`, 'train.jsonl'), 'utf8').split('\n').map((l) => (l ? JSON.parse(l).loss : null))).toEqual(
        readFileSync(join(whole, `stage-0${t}`, 'train.jsonl'), 'utf8').split('\n').map((l) => (l ? JSON.parse(l).loss : null)),
      );
      expect(readFileSync(join(out, `stage-0${t}`, 'eval.arrow')).equals(readFileSync(join(whole, `stage-0${t}`, 'eval.arrow')))).toBe(true);
    }
  });

  it('--stop-after stops at a resumable point with status 0, and the resumed run ends where an uninterrupted one does', async () => {
    const whole = await run('kpig');
    const out = join(dirs.root, 'run-stopped');
    const cfg = writeConfig('stopped', config({ name: 'kpig' }));
    // Stage 1 has 2 steps and stage 2 has 3: the 3rd step is stage 2's first, after which it is checkpointed.
    let r = kpig(['run', cfg, '--out', out, '--stop-after', '3']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`stopped after 3 steps (--stop-after); continue with: kpig run --resume ${out}`);
    expect(existsSync(join(out, 'stage-02', 'checkpoint'))).toBe(true);
    expect(existsSync(join(out, 'results.json'))).toBe(false);
    expect(kpig(['run', cfg, '--out', join(dirs.root, 'never'), '--stop-after', '0']).status).toBe(2);
    r = kpig(['run', '--resume', out, '--quiet']);
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(out, 'results.json'), 'utf8')).toBe(readFileSync(join(whole, 'results.json'), 'utf8'));
    const losses = (dir: string, t: number) => readFileSync(join(dir, `stage-0${t}`, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
    for (let t = 1; t <= 3; t++) expect(losses(out, t)).toEqual(losses(whole, t));
  });
});

describe('invalid configs fail before any work starts', () => {
  const cases: Array<[string, () => Record<string, unknown>, RegExp]> = [
    ['unknown strategy', () => config({ name: 'magic' }), /strategy\.name: "magic" is not one of none, random, multitask, kpig, inscl, ewc, lwf/],
    ['negative budget', () => config({ name: 'kpig', m: -5 }), /strategy\.m: must be ≥ 0, got -5/],
    ['held-out task also seen', () => config({ name: 'none' }, { stream: { seen: ['task0', 'task1'], held_out: ['task1'] } }), /task 'task1' is both seen and held out/],
    ['missing model folder', () => config({ name: 'none' }, { model: join(dirs.root, 'nope') }), /model: no model folder at .*nope/],
    ['unknown field', () => config({ name: 'none' }, { trian: {} }), /trian: unknown field/],
    ['RegLoRA share above 1', () => config({ name: 'reglora', regloraShare: 1.5 }, { train: { mode: 'lora' } }), /strategy\.regloraShare: must be ≤ 1/],
    ['O-LoRA negative weight', () => config({ name: 'olora', oloraLambda1: -1 }, { train: { mode: 'lora' } }), /strategy\.oloraLambda1: must be ≥ 0, got -1/],
    ['Adapt-∞ pool smaller than the budget', () => config({ name: 'adaptinf', adaptPoolFactor: 0.5 }), /strategy\.adaptPoolFactor: must be 0 \(no pruning\) or ≥ 1/],
    ['Adapt-∞ no clusters', () => config({ name: 'adaptinf', adaptClusters: 0 }), /strategy\.adaptClusters: must be ≥ 1, got 0/],
    ['GeRe no general samples', () => config({ name: 'gere', generalData: 'x.jsonl', generalSamples: 0 }), /strategy\.generalSamples: must be ≥ 1, got 0/],
    ['unknown device', () => config({ name: 'none' }, { device: 'gpu' }), /device: "gpu" is not one of cpu, cuda/],
  ];
  it.each(cases)('%s', (_name, make, message) => {
    const out = join(dirs.root, `bad-${Math.random().toString(36).slice(2)}`);
    const r = kpig(['run', writeConfig('bad', make()), '--out', out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(existsSync(join(out, 'base'))).toBe(false);
  });

  it('skips training instances longer than the length limit, counts them in length.json, and finishes', async () => {
    const set = tinyTaskSet();
    const seen = set.instances.filter((x) => x.split === 'train' && x.task_id === set.instances[0].task_id);
    const long = seen[1];
    long.input = 'a very long input '.repeat(30); // over 500 byte tokens, past maxLength 128
    const longData = join(dirs.root, 'tasks-long');
    await writeTaskSet(longData, set);
    const out = join(dirs.root, 'run-long');
    const r = kpig(['run', writeConfig('long', config({ name: 'kpig' }, { data: longData })), '--out', out]);
    expect(r.stderr + r.stdout).toContain(`${long.task_id}: 1 training instance(s) longer than 128 tokens were skipped (length.json)`);
    expect(r.status).toBe(0);
    const record = JSON.parse(readFileSync(join(out, 'length.json'), 'utf8'));
    expect(record.limit_tokens).toBe(128);
    expect(record.skipped).toEqual({ [long.task_id]: { count: 1, instance_ids: [long.instance_id] } });
    // It is neither trained nor replayed.
    for (const stage of readdirSync(out).filter((d) => d.startsWith('stage-')))
      expect(plan(out, Number(stage.slice(-1))).some((x) => x.task_id === long.task_id && x.instance_id === long.instance_id)).toBe(false);
  });

  it('resume refuses a data folder whose content changed since the run started, and cleans killed writers\' temp folders', async () => {
    const own = join(dirs.root, 'tasks-resume');
    await writeTaskSet(own, tinyTaskSet());
    const out = join(dirs.root, 'run-resume-inputs');
    const cfg = writeConfig('resume-inputs', config({ name: 'none' }, { data: own }));
    expect(kpig(['run', cfg, '--out', out, '--quiet']).status).toBe(0);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(out, 'stage-01', '.final.tmp-999999-0badc0de'));
    expect(kpig(['run', '--resume', out, '--quiet']).status).toBe(0);
    expect(readdirSync(join(out, 'stage-01')).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const changed = tinyTaskSet();
    changed.instances[0].outputs = ['something else'];
    await writeTaskSet(own, changed, { overwrite: true });
    const r = kpig(['run', '--resume', out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`the data (${own}) changed since the run started; it would not continue the same run`);
  });

  it('a seen task with no training instances', async () => {
    const bad = join(dirs.root, 'tasks-empty');
    await writeTaskSet(bad, tinyTaskSet({ emptyTrainTask: true }));
    const out = join(dirs.root, 'bad-empty');
    const r = kpig(['run', writeConfig('bad-empty', config({ name: 'none' }, { data: bad })), '--out', out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/stream\.seen: task 'task0' has no training instances/);
    expect(existsSync(join(out, 'base'))).toBe(false);
  });
});
