// evaluateModel end to end on a tiny random model (its answers are junk; what is checked is that
// every selected instance is generated, stopped and scored correctly), the prediction table on disk,
// the per-task summary, and bad input: unknown or empty tasks, another task set, a non-prediction file.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTaskSet } from '../src/data/store.js';
import type { TaskSet } from '../src/data/taskset.js';
import { CancelledError, InputError } from '../src/errors/index.js';
import { evaluateModel } from '../src/eval/evaluate.js';
import { exactMatch, isValidOutput } from '../src/eval/metrics.js';
import { readPredictionFile, readPredictions, summarizeTasks, taskSetFingerprint, writePredictions, type PredictionRow } from '../src/eval/predictions.js';
import { rougeL } from '../src/eval/rouge.js';
import { Model } from '../src/model/model.js';
import { ModelDir } from './support/models.js';
import { tinyTaskSet } from './support/tasks.js';

const dirs = new ModelDir();
let model: Model;
const set = tinyTaskSet({ seen: 3, heldOut: 1, train: 2, test: 4 });

beforeAll(async () => {
  model = await Model.load(await dirs.make({ preset: 'llama-nano', seed: 11, normInit: 'jitter', config: { vocab_size: 259 } }), { threads: 1 });
});
afterAll(() => {
  model?.dispose();
  dirs.cleanup();
});

describe('evaluateModel', () => {
  let rows: PredictionRow[];
  const progress: [number, number][] = [];

  it('generates and scores every test instance, task by task', async () => {
    rows = await evaluateModel(model, set, { maxNewTokens: 12, batchSize: 5, onProgress: (d, t) => progress.push([d, t]) });
    const expected = set.instances.filter((r) => r.split === 'test');
    expect(rows.map((r) => [r.task_id, r.instance_id])).toEqual(expected.map((r) => [r.task_id, r.instance_id]));
    expect(progress.at(-1)).toEqual([16, 16]);
    expect(progress.map((p) => p[0])).toEqual([5, 10, 15, 16]);
    for (const [i, r] of rows.entries()) {
      expect(r.references).toEqual(expected[i].outputs);
      expect(r.prediction).not.toContain('\n');
      expect(r.prediction).toBe(r.prediction.trim());
      const labels = set.tasks.find((t) => t.task_id === r.task_id)!.label_set!;
      expect(r.rouge_l).toBe(rougeL(r.prediction, r.references));
      expect(r.exact_match).toBe(exactMatch(r.prediction, r.references));
      expect(r.valid).toBe(isValidOutput(r.prediction, labels));
    }
    // A random byte-level model still says something for most prompts.
    expect(rows.filter((r) => r.prediction.length > 0).length).toBeGreaterThan(0);
  });

  it('batching and the length-sorted order do not change the predictions', async () => {
    const one = await evaluateModel(model, set, { maxNewTokens: 12, batchSize: 1 });
    expect(one.map((r) => r.prediction)).toEqual(rows.map((r) => r.prediction));
  });

  it('selects tasks, caps instances, takes the train split and a custom instruction', async () => {
    const seenBy: string[] = [];
    const r = await evaluateModel(model, set, {
      tasks: ['task3', 'task1'],
      split: 'train',
      maxInstancesPerTask: 1,
      maxNewTokens: 4,
      instructionFor: (t) => {
        seenBy.push(t.task_id);
        return 'Say yes.';
      },
    });
    expect(r.map((x) => x.instance_id)).toEqual(['task3-0', 'task1-0']);
    expect(seenBy).toEqual(['task3', 'task1']);
  });

  it('keeps the end of a prompt longer than the context', async () => {
    const long: TaskSet = structuredClone(set);
    long.instances.find((r) => r.split === 'test' && r.task_id === 'task0')!.input = 'word '.repeat(200);
    const r = await evaluateModel(model, long, { tasks: ['task0'], maxNewTokens: 4, maxInstancesPerTask: 1 });
    expect(r).toHaveLength(1);
  });

  it('rejects unknown tasks, empty test splits, a missing seed instruction and bad options', async () => {
    await expect(evaluateModel(model, set, { tasks: ['nope'] })).rejects.toThrow(/unknown task\(s\) nope/);
    const noTest: TaskSet = { ...set, instances: set.instances.filter((r) => !(r.task_id === 'task2' && r.split === 'test')) };
    await expect(evaluateModel(model, noTest)).rejects.toThrow(/task\(s\) task2 have no 'test' instances/);
    const noSeed: TaskSet = { ...set, instructions: set.instructions.filter((i) => i.instruction_id !== 'task1/seed') };
    await expect(evaluateModel(model, noSeed, { tasks: ['task1'] })).rejects.toThrow(/no seed instruction 'task1\/seed'/);
    await expect(evaluateModel(model, set, { batchSize: 0 })).rejects.toThrow(InputError);
    await expect(evaluateModel(model, set, { maxNewTokens: 500 })).rejects.toThrow(/leaves no room/);
  });

  it('stops when cancelled', async () => {
    const c = new AbortController();
    c.abort();
    await expect(evaluateModel(model, set, { signal: c.signal })).rejects.toThrow(CancelledError);
  });

  it('prediction tables round-trip with their fingerprint and summarise per task', async () => {
    const path = join(dirs.root, 'preds.arrow');
    await writePredictions(path, rows, { fingerprint: taskSetFingerprint(set), extra: { model: 'tiny' } });
    const { rows: back, meta } = await readPredictionFile(path);
    expect(back).toEqual(rows);
    expect(meta.fingerprint).toBe(taskSetFingerprint(set));
    expect(meta.extra).toEqual({ model: 'tiny' });
    expect(await readPredictions(path, { expect: set })).toEqual(rows);

    const summary = summarizeTasks(back, set);
    expect(summary.map((s) => s.task_id)).toEqual(['task0', 'task1', 'task2', 'task3']);
    for (const s of summary) {
      const mine = rows.filter((r) => r.task_id === s.task_id);
      expect(s.n).toBe(4);
      expect(s.rouge_l).toBeCloseTo(mine.reduce((a, r) => a + r.rouge_l, 0) / 4, 12);
      expect(s.v_score).toBeCloseTo(mine.filter((r) => r.valid).length / 4, 12);
    }
  });
});

describe('prediction tables: hand-made rows and bad input', () => {
  const mk = (task_id: string, instance_id: string, prediction: string, references: string[], valid: boolean | null): PredictionRow => ({
    task_id, instance_id, prediction, references, valid, rouge_l: rougeL(prediction, references), exact_match: exactMatch(prediction, references),
  });

  it('summarizeTasks: means per task, null V-score without a label set, the constant-answer rate', () => {
    const open: TaskSet = structuredClone(set);
    open.tasks[1].label_set = null;
    const rows = [
      mk('task0', 'task0-2', 'yes', ['yes'], true),
      mk('task0', 'task0-3', 'nope', ['no'], false),
      mk('task1', 'task1-2', 'up', ['up'], null),
    ];
    const s = summarizeTasks(rows, open);
    expect(s).toEqual([
      { task_id: 'task0', n: 2, rouge_l: 0.5, exact_match: 0.5, v_score: 0.5, constant_rate: 0.5 },
      { task_id: 'task1', n: 1, rouge_l: 1, exact_match: 1, v_score: null, constant_rate: 1 },
    ]);
    // Three answers of four alike, up to case and spacing.
    const same = [mk('task0', 'task0-2', 'Yes', ['yes'], true), mk('task0', 'task0-3', ' yes ', ['no'], true), mk('task0', 'task0-0', 'no', ['yes'], true), mk('task0', 'task0-1', 'YES', ['no'], true)];
    expect(summarizeTasks(same, open)[0].constant_rate).toBe(0.75);
    expect(summarizeTasks([], set)).toEqual([]);
  });

  it('a prediction file for another task set is detected', async () => {
    const other = tinyTaskSet({ seen: 2, heldOut: 1, train: 2, test: 3 });
    expect(taskSetFingerprint(other)).not.toBe(taskSetFingerprint(set));
    // Same ids, one reference changed: still another task set.
    const edited: TaskSet = structuredClone(set);
    edited.instances[0].outputs = ['maybe'];
    expect(taskSetFingerprint(edited)).not.toBe(taskSetFingerprint(set));
    expect(taskSetFingerprint(structuredClone(set))).toBe(taskSetFingerprint(set));

    const path = join(dirs.root, 'other.arrow');
    await writePredictions(path, [mk('task9', 'task9-0', 'x', ['y'], false)], { fingerprint: taskSetFingerprint(other) });
    await expect(readPredictions(path, { expect: set })).rejects.toThrow(/made for another task set/);
    expect(() => summarizeTasks([mk('task9', 'task9-0', 'x', ['y'], false)], set)).toThrow(/task 'task9', which the task set does not have/);
    expect(() => summarizeTasks([mk('task0', 'task0-99', 'x', ['y'], false)], set)).toThrow(/instance 'task0-99'/);
  });

  it('a file that is not a prediction table is rejected with its path', async () => {
    const junk = join(dirs.root, 'junk.arrow');
    writeFileSync(junk, 'not arrow at all');
    await expect(readPredictions(junk)).rejects.toThrow(/junk\.arrow: not a readable Arrow IPC file/);
    await expect(readPredictions(join(dirs.root, 'absent.arrow'))).rejects.toThrow(/cannot read .*absent\.arrow/);
    await expect(writePredictions(join(dirs.root, 'x.arrow'), [], { fingerprint: 'abc' })).rejects.toThrow(/64 hex digits/);
  });

  it('an empty prediction table is valid and summarises to nothing', async () => {
    const path = join(dirs.root, 'empty.arrow');
    await writePredictions(path, [], { fingerprint: taskSetFingerprint(set) });
    expect(await readPredictions(path, { expect: set })).toEqual([]);
  });
});

describe('kpig eval (CLI)', () => {
  const kpig = (...args: string[]) => spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });

  it('writes the prediction table of a task-set folder and prints the per-task summary', async () => {
    const data = join(dirs.root, 'cli-tasks');
    await writeTaskSet(data, set);
    const out = join(dirs.root, 'cli-preds.arrow');
    const r = kpig('eval', model.dir, '--data', data, '--out', out, '--tasks', 'task1,task3', '--max-instances', '2', '--max-new-tokens', '6', '--threads', '1', '--json');
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/evaluated 4\/4 instances/);
    const summary = JSON.parse(r.stdout) as { rows: number; tasks: { task_id: string; n: number }[] };
    expect(summary.rows).toBe(4);
    expect(summary.tasks.map((t) => [t.task_id, t.n])).toEqual([['task1', 2], ['task3', 2]]);
    const rows = await readPredictions(out, { expect: set });
    expect(rows.map((x) => x.instance_id)).toEqual(['task1-2', 'task1-3', 'task3-2', 'task3-3']);
    for (const x of rows) expect(x.rouge_l).toBe(rougeL(x.prediction, x.references));
  });

  it('an empty test split is one clear error line', async () => {
    const data = join(dirs.root, 'cli-no-test');
    await writeTaskSet(data, { ...set, instances: set.instances.filter((r) => !(r.task_id === 'task2' && r.split === 'test')) });
    const r = kpig('eval', model.dir, '--data', data, '--out', join(dirs.root, 'never.arrow'), '--threads', '1');
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe("kpig: evaluateModel: task(s) task2 have no 'test' instances; every evaluated task needs at least one");
    expect(kpig('eval', model.dir, '--data', data, '--out', 'x.arrow', '--split', 'dev').status).toBe(2);
  });
});
