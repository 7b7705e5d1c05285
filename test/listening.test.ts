// The listening probe and per-instance instructions: an instance bound to an instruction is asked
// with it and judged against that instruction's own label set (recomputed here with isValidOutput);
// probe follow / stale shares against hand-made rows; bad probe rows; and the suite's probes
// written to disk and read back with their binding.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTaskSet, writeTaskSet } from '../src/data/store.js';
import type { TaskSet } from '../src/data/taskset.js';
import { validateTaskSet } from '../src/data/validate.js';
import { InputError } from '../src/errors/index.js';
import { evaluateModel } from '../src/eval/evaluate.js';
import { isValidOutput } from '../src/eval/metrics.js';
import type { PredictionRow } from '../src/eval/predictions.js';
import { Model } from '../src/model/model.js';
import { probeScores } from '../src/pipeline/stage-eval.js';
import { generateSuite } from '../src/synth/tasks.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
const scratch = mkdtempSync(join(tmpdir(), 'kpig-listening-'));
afterAll(() => {
  dirs.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

/** One task whose two instructions name different label words; a test instance for each and a probe of the first. */
function boundSet(): TaskSet {
  const a = "Answer 'zib' if even, 'kov' if odd.", b = "Answer 'mup' if even, 'tal' if odd.";
  const span = (t: string, w: string) => ({ start: t.indexOf(w), end: t.indexOf(w) + w.length, kind: 'label' as const });
  return {
    tasks: [{ task_id: 't', kind: 'classification', label_set: ['zib', 'kov', 'mup', 'tal'], source: 'test', categories: [] }],
    instructions: [
      { task_id: 't', instruction_id: 't/seed', text: a, key_spans: [span(a, 'zib'), span(a, 'kov')], origin: 'seed', key_source: 'explicit', parent_id: null, label_set: ['zib', 'kov'] },
      { task_id: 't', instruction_id: 't/key-1', text: b, key_spans: [span(b, 'mup'), span(b, 'tal')], origin: 'seed', key_source: 'explicit', parent_id: null, label_set: ['mup', 'tal'] },
    ],
    instances: [
      { task_id: 't', instance_id: 'test-0', split: 'test', input: 'abcd', outputs: ['zib'], instruction_id: 't/seed' },
      { task_id: 't', instance_id: 'test-1', split: 'test', input: 'abc', outputs: ['tal'], instruction_id: 't/key-1' },
      { task_id: 't', instance_id: 'probe-0', split: 'probe', input: 'abcd', outputs: ['mup'], instruction_id: 't/key-1', probe_of: 'test-0' },
    ],
    streams: [{ name: 's', seen: ['t'], held_out: [] }],
  };
}

describe('per-instance instructions', () => {
  let model: Model;
  beforeAll(async () => {
    model = await Model.load(await dirs.make({ preset: 'llama-nano', seed: 5, config: { vocab_size: 259 } }), { threads: 1 });
  });
  afterAll(() => model.dispose());

  it('asks each instance with its own instruction and judges validity by that instruction’s labels', async () => {
    const set = boundSet();
    const rows = await evaluateModel(model, set, { split: 'test', maxNewTokens: 4 });
    expect(rows.map((r) => r.instance_id)).toEqual(['test-0', 'test-1']);
    const own = [['zib', 'kov'], ['mup', 'tal']];
    rows.forEach((r, i) => expect(r.valid).toBe(isValidOutput(r.prediction, own[i])));
    // A prediction of the other instruction's label counts as invalid: the task's union is not the test.
    const forced = await evaluateModel(model, set, { split: 'probe', maxNewTokens: 4 });
    expect(forced.map((r) => r.instance_id)).toEqual(['probe-0']);
    expect(forced[0].valid).toBe(isValidOutput(forced[0].prediction, ['mup', 'tal']));
  });

  it('refuses a binding to an unknown or foreign instruction and a probe without its test instance', () => {
    const set = boundSet();
    set.instances[0].instruction_id = 't/nope';
    expect(() => validateTaskSet(set, 'x')).toThrow(/instruction_id 't\/nope' is not in the set/);
    const probe = boundSet();
    probe.instances[2].probe_of = 'test-9';
    expect(() => validateTaskSet(probe, 'x')).toThrow(/probe_of 'test-9' is not an instance of its task/);
    const notProbe = boundSet();
    notProbe.instances[0].probe_of = 'test-1';
    expect(() => validateTaskSet(notProbe, 'x')).toThrow(/only a probe does/);
  });

  it('keeps bindings, probes and per-instruction label sets through the task-set folder', async () => {
    const suite = generateSuite({ seed: 2, seenTasks: 2, heldOutTasks: 1, trainPerTask: 5, testPerTask: 4, probePerTask: 3 });
    const dir = join(scratch, 'suite');
    await writeTaskSet(dir, suite.set);
    expect(await readTaskSet(dir)).toEqual(suite.set);
  });
});

describe('probe scores', () => {
  const set = boundSet();
  const row = (prediction: string, instance_id = 'probe-0'): PredictionRow => ({ task_id: 't', instance_id, prediction, references: ['mup'], valid: null, rouge_l: 0, exact_match: 0 });

  it('counts answers that follow the instruction given and answers that are stale', () => {
    expect(probeScores([row('mup')], set).tasks).toEqual([{ task_id: 't', n: 1, follow: 1, stale: 0 }]);
    // 'zib' answers the original test instance's instruction: the key parts were not read.
    expect(probeScores([row('Zib.')], set).tasks).toEqual([{ task_id: 't', n: 1, follow: 0, stale: 1 }]);
    expect(probeScores([row('mup'), row('zib'), row('kov')], set).tasks).toEqual([{ task_id: 't', n: 3, follow: 1 / 3, stale: 1 / 3 }]);
  });

  it('refuses a row that is not a probe', () => {
    expect(() => probeScores([row('mup', 'test-0')], set)).toThrow(InputError);
    expect(() => probeScores([row('mup', 'test-0')], set)).toThrow(/not a probe of the task set/);
  });
});
