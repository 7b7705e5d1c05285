// Key-span masking and scoreTable: Arrow in, Arrow out, one row per input row, per-row errors.
import { Field, Int32, List, Struct, Table, Utf8, tableFromArrays, tableFromIPC, tableToIPC, vectorFromArray } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../src/errors/index.js';
import { Model } from '../src/model/model.js';
import { buildPair, maskInstruction } from '../src/scoring/mask.js';
import { scorePairs } from '../src/scoring/pairs.js';
import { scoreTable } from '../src/scoring/table.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

describe('masking', () => {
  const instr = 'Classify the review as "Positive" or "Negative". Answer in one word.';
  const at = (w: string) => ({ start: instr.indexOf(w), end: instr.indexOf(w) + w.length });
  const spans = [at('"Positive"'), at('"Negative"')];

  it('replaces or deletes key spans', () => {
    expect(spans[0]).toEqual({ start: 23, end: 33 });
    expect(maskInstruction(instr, spans)).toBe('Classify the review as [MASK] or [MASK]. Answer in one word.');
    expect(maskInstruction(instr, [...spans].reverse(), 'delete')).toBe('Classify the review as  or . Answer in one word.');
  });

  it('rejects spans outside the instruction or overlapping', () => {
    expect(() => maskInstruction(instr, [{ start: 60, end: 90 }])).toThrow(/key span 0 \[60, 90\) is not inside the instruction \(length 68\)/);
    expect(() => maskInstruction(instr, [{ start: 5, end: 12 }, { start: 10, end: 20 }])).toThrow(/\[5, 12\) and \[10, 20\) overlap/);
    expect(() => maskInstruction(instr, [{ start: 5, end: 5 }])).toThrow(InputError);
  });

  it('builds pairs that share the response and reports the first differing token', async () => {
    const model = await Model.load(await dirs.make({ preset: 'llama-nano', seed: 1, config: { vocab_size: 259 } }));
    const pair = buildPair(model.tokenizer!, { instruction: instr, keySpans: spans, input: 'Great film.', output: 'Positive' });
    expect(pair.responseLen).toBe(8);
    expect(pair.full.slice(-8)).toEqual(pair.masked.slice(-8));
    // BOS + "Definition: " + "Classify the review as " = 1 + 12 + 23 bytes, then '"' vs '['.
    expect(pair.firstDiff).toBe(36);
    expect(pair.full[36]).toBe('"'.charCodeAt(0));
    expect(pair.masked[36]).toBe('['.charCodeAt(0));
    expect(() => buildPair(model.tokenizer!, { instruction: instr, keySpans: spans, input: '', output: '' })).toThrow(/response \(output\) is empty/);
    model.dispose();
  });
});

describe('scoreTable', () => {
  let model: Model;
  beforeAll(async () => {
    model = await Model.load(await dirs.make({ preset: 'gpt2-nano', seed: 3, config: { vocab_size: 259, n_positions: 128 } }));
  });
  afterAll(() => model.dispose());

  function instances(): Table {
    const rows = [
      { task: 't1', id: 'a', instr: 'Answer "yes" or "no".', spans: [{ start: 7, end: 12 }, { start: 16, end: 20 }], input: 'Is ice cold?', output: 'yes' },
      { task: 't1', id: 'b', instr: 'Answer "yes" or "no".', spans: [{ start: 7, end: 12 }], input: 'Is fire cold?', output: 'no' },
      { task: 't2', id: 'c', instr: 'Say "hi".', spans: [{ start: 40, end: 45 }], input: '', output: 'hi' }, // span outside
      { task: 't2', id: 'd', instr: 'Say "hi".', spans: [{ start: 4, end: 8 }], input: '', output: '' }, // empty response
      { task: 't2', id: 'e', instr: 'Repeat.', spans: [{ start: 0, end: 6 }], input: 'x'.repeat(150), output: 'x' }, // too long
      { task: 't3', id: 'f', instr: 'Pick A or B.', spans: [{ start: 5, end: 6 }, { start: 10, end: 11 }], input: 'Which?', output: 'A' },
    ];
    const spanType = new List(new Field('item', new Struct([new Field('start', new Int32()), new Field('end', new Int32())])));
    return new Table({
      task_id: vectorFromArray(rows.map((r) => r.task), new Utf8()),
      instance_id: vectorFromArray(rows.map((r) => r.id), new Utf8()),
      instruction: vectorFromArray(rows.map((r) => r.instr), new Utf8()),
      key_spans: vectorFromArray(rows.map((r) => r.spans), spanType),
      input: vectorFromArray(rows.map((r) => r.input), new Utf8()),
      output: vectorFromArray(rows.map((r) => r.output), new Utf8()),
    });
  }

  it('returns one row per input row, keyed by the ids, with per-row errors', async () => {
    const table = tableFromIPC(tableToIPC(instances(), 'file')); // through the IPC format, as from a file
    const progress: number[] = [];
    const out = await scoreTable(model, table, { maxTokensPerBatch: 60, onProgress: (p) => progress.push(p.rows) });
    expect(out.numRows).toBe(6);
    const get = (c: string) => Array.from(out.getChild(c)!.toArray() as ArrayLike<unknown>);
    expect(get('instance_id')).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    expect(get('status')).toEqual(['ok', 'ok', 'error', 'error', 'error', 'ok']);
    const errs = get('error') as (string | null)[];
    expect(errs[2]).toMatch(/key span 0 \[40, 45\) is not inside the instruction/);
    expect(errs[3]).toMatch(/response \(output\) is empty/);
    expect(errs[4]).toMatch(/more than the model's context of 128/);
    expect(errs[0]).toBeNull();
    expect(progress.at(-1)).toBe(6);
    // The scores equal scoring the same pairs directly (up to float32 rounding: the direct call reads
    // the instruction's keys and values from the prefix cache).
    const pair = buildPair(model.tokenizer!, { instruction: 'Answer "yes" or "no".', keySpans: [{ start: 7, end: 12 }, { start: 16, end: 20 }], input: 'Is ice cold?', output: 'yes' });
    const [direct] = await scorePairs(model, [pair]);
    expect((get('ig_kl') as number[])[0]).toBeCloseTo(direct.igKl, 6);
    expect((get('n_tokens') as number[])[0]).toBe(3);
    expect((get('first_diff') as number[])[0]).toBe(pair.firstDiff);
    expect(Number.isNaN((get('ig_ce') as number[])[2])).toBe(true);
  });

  it('names missing columns', async () => {
    await expect(scoreTable(model, tableFromArrays({ task_id: ['x'], instruction: ['y'] }))).rejects.toThrow(
      'missing column(s): instance_id, key_spans, input, output (the table has: task_id, instruction)',
    );
  });
});
