// Row ingest (JSONL, Arrow IPC, Parquet) with field mappings, format detection, choosing an
// instruction per instance, and the bad-input errors.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC, vectorFromArray, List, Field, Utf8, Table } from 'apache-arrow';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { afterAll, describe, expect, it } from 'vitest';
import { detectFormat, importData, summarizeTaskSet } from '../src/data/ingest.js';
import { importJsonl } from '../src/data/rows.js';
import { chooseInstruction, instructionsByTask } from '../src/data/select.js';
import { InputError } from '../src/errors/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-rows-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, body: string | Uint8Array) => {
  const p = join(dir, name);
  writeFileSync(p, body);
  return p;
};
const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

const SENT = 'Say whether the review is "pos" or "neg".';

describe('JSONL ingest', () => {
  it('maps fields, groups rows into tasks, takes explicit key parts, splits and detects label sets', async () => {
    const p = file(
      'mapped.jsonl',
      jsonl([
        { src: 'sent', prompt: SENT, text: 'great', answer: 'pos', kp: ['"pos" or "neg"'], part: 'train' },
        { src: 'sent', prompt: SENT, text: 'awful', answer: ['neg'], kp: ['"pos" or "neg"'], part: 'test' },
        { src: 'sum', prompt: 'Summarise the text.', text: 'long text', answer: ['short', 'brief'], part: 'train' },
      ]) + '\n',
    );
    const set = await importJsonl(p, { fields: { task: 'src', instruction: 'prompt', input: 'text', output: 'answer', keyParts: 'kp', split: 'part' } });
    expect(set.tasks.map((t) => [t.task_id, t.kind, t.label_set, t.source])).toEqual([
      ['sent', 'classification', ['pos', 'neg'], 'jsonl'],
      ['sum', 'generation', null, 'jsonl'],
    ]);
    expect(set.instructions[0]).toMatchObject({ instruction_id: 'sent/seed', key_source: 'explicit', key_spans: [{ start: 26, end: 40 }] }); // 'Say whether the review is ' is 26 characters
    expect(set.instances).toEqual([
      { task_id: 'sent', instance_id: '0', split: 'train', input: 'great', outputs: ['pos'] },
      { task_id: 'sent', instance_id: '1', split: 'test', input: 'awful', outputs: ['neg'] },
      { task_id: 'sum', instance_id: '0', split: 'train', input: 'long text', outputs: ['short', 'brief'] },
    ]);
    expect(summarizeTaskSet(set)[0]).toEqual({
      task_id: 'sent',
      kind: 'classification',
      source: 'jsonl',
      train: 1,
      test: 1,
      instructions: 1,
      label_set: ['pos', 'neg'],
      key_parts: [{ kind: 'other', text: '"pos" or "neg"' }],
    });
  });

  it('without a task field, each distinct instruction is a task named after the file', async () => {
    const p = file('alpaca.jsonl', jsonl([{ instruction: 'Add.', input: '1 2', output: '3' }, { instruction: 'Reverse.', input: 'ab', output: 'ba' }, { instruction: 'Add.', input: '2 2', output: '4' }]));
    const set = await importData(p, { testFraction: 0 });
    expect(set.tasks.map((t) => t.task_id)).toEqual(['alpaca-0', 'alpaca-1']);
    expect(set.instances.filter((x) => x.task_id === 'alpaca-0').map((x) => x.input)).toEqual(['1 2', '2 2']);
    expect(set.streams).toEqual([{ name: 'default', seen: ['alpaca-0', 'alpaca-1'], held_out: [] }]);
  });

  it('reports bad rows and mappings with file, line and field', async () => {
    const bad = file('bad.jsonl', '{"instruction": "A", "output": "x"}\n{"instruction": "A", "output": "y",}\n');
    await expect(importJsonl(bad)).rejects.toThrow(new RegExp(`${bad}:2:36: not valid JSON`)); // the '}' after the trailing comma
    const p = file('rows.jsonl', jsonl([{ q: 'A', a: 'x' }, { q: 'A', a: 'y' }]));
    await expect(importJsonl(p, { fields: { instruction: 'prompt', output: 'a' } })).rejects.toThrow(
      `${p}:1: the field mapping names 'prompt' for instruction, but there is no such field (fields: q, a)`,
    );
    await expect(importJsonl(p)).rejects.toThrow(`${p}:1: no instruction field (looked for 'instruction'; map another with fields.instruction) (fields: q, a)`);
    const later = file('later.jsonl', jsonl([{ q: 'A', a: 'x' }, { q: 'A', b: 'y' }]));
    await expect(importJsonl(later, { fields: { instruction: 'q', output: 'a' } })).rejects.toThrow(`${later}:2: the field mapping names 'a' for output, but this row has no such field (fields: q, b)`);
    const typed = file('typed.jsonl', jsonl([{ instruction: 'A', output: 7 }]));
    await expect(importJsonl(typed)).rejects.toThrow(`${typed}:1: field 'output' (output) must be a string or a non-empty list of strings, got 7`);
    const split = file('split.jsonl', jsonl([{ instruction: 'A', output: 'x', split: 'validation' }]));
    await expect(importJsonl(split)).rejects.toThrow(/field 'split' \(split\) must be 'train' or 'test', got 'validation'/);
    const two = file('two.jsonl', jsonl([{ task_id: 't', instruction: 'A', output: 'x' }, { task_id: 't', instruction: 'B', output: 'y' }]));
    await expect(importJsonl(two)).rejects.toThrow(`${two}:2: task 't' has another instruction than at ${two}:1`);
    const dup = file('dup.jsonl', jsonl([{ instruction: 'A', output: 'x', id: 'a' }, { instruction: 'A', output: 'y', id: 'a' }]));
    await expect(importJsonl(dup)).rejects.toThrow(`${dup}:2: instance id 'a' of task 'dup' repeats ${dup}:1`);
    const spans = file('spans.jsonl', jsonl([{ instruction: 'Say "a".', output: 'a', key_spans: [[4, 40]] }]));
    await expect(importJsonl(spans)).rejects.toThrow(`${spans}:1: key span 0 [4, 40) is not inside the instruction (length 8)`);
    await expect(importJsonl(file('empty.jsonl', '\n\n'))).rejects.toThrow(/empty\.jsonl: no rows/);
    await expect(importJsonl(join(dir, 'missing.jsonl'))).rejects.toThrow(/cannot read/);
  });
});

describe('Arrow and Parquet ingest', () => {
  it('reads Arrow IPC rows with list outputs and a mapping', async () => {
    const outputs = vectorFromArray([['yes'], ['no', 'nope']], new List(new Field('item', new Utf8())));
    const base = tableFromArrays({ instruction: [SENT, SENT], input: ['a', 'b'] });
    const table = new Table({ instruction: base.getChild('instruction')!, input: base.getChild('input')!, answers: outputs });
    const p = file('rows.arrow', tableToIPC(table, 'file'));
    expect(await detectFormat(p)).toBe('arrow');
    const set = await importData(p, { fields: { output: 'answers' }, taskId: 'yn', testFraction: 0 });
    expect(set.instances).toEqual([
      { task_id: 'yn', instance_id: '0', split: 'train', input: 'a', outputs: ['yes'] },
      { task_id: 'yn', instance_id: '1', split: 'train', input: 'b', outputs: ['no', 'nope'] },
    ]);
    expect(set.tasks[0].source).toBe('arrow');
    await expect(importData(p, { fields: { output: 'target' } })).rejects.toThrow(`${p}: the field mapping names 'target' for output, but there is no such field (fields: instruction, input, answers)`);
    await expect(importData(file('junk.arrow', 'not arrow'))).rejects.toThrow(/junk\.arrow: not a readable Arrow IPC file/);
  });

  it('reads Parquet rows written by hyparquet-writer', async () => {
    const buf = parquetWriteBuffer({
      columnData: [
        { name: 'task', data: ['t1', 't1', 't2'], type: 'STRING' },
        { name: 'definition', data: ['Answer "yes" or "no".', 'Answer "yes" or "no".', 'Echo the input.'], type: 'STRING' },
        { name: 'input', data: ['Is it?', 'Is it not?', 'hi'], type: 'STRING' },
        { name: 'target', data: ['yes', 'no', 'hi'], type: 'STRING' },
        { name: 'uid', data: [10, 11, 12], type: 'INT32' },
      ],
    });
    const p = file('rows.parquet', new Uint8Array(buf));
    const set = await importData(p, { fields: { task: 'task', instruction: 'definition', output: 'target', id: 'uid' }, testFraction: 0 });
    expect(set.tasks.map((t) => [t.task_id, t.label_set, t.source])).toEqual([
      ['t1', ['yes', 'no'], 'parquet'],
      ['t2', null, 'parquet'],
    ]);
    expect(set.instances.map((x) => [x.task_id, x.instance_id, x.outputs[0]])).toEqual([
      ['t1', '10', 'yes'],
      ['t1', '11', 'no'],
      ['t2', '12', 'hi'],
    ]);
    await expect(importData(p, { fields: { instruction: 'prompt' } })).rejects.toThrow(/names 'prompt' for instruction, but there is no such field \(fields: task, definition, input, target, uid\)/);
    await expect(importData(file('junk.parquet', 'PAR1 nope'))).rejects.toThrow(InputError);
  });

  it('rejects an unknown format', async () => {
    await expect(importData(file('rows.csv', 'a,b'))).rejects.toThrow(/unknown data format '\.csv'/);
  });
});

describe('choosing an instruction', () => {
  it('uses the seed by default, and spreads instances over the seed and its rewrites with any', async () => {
    const p = file('choose.jsonl', jsonl(Array.from({ length: 60 }, (_, i) => ({ task_id: 't', instruction: SENT, input: String(i), output: 'pos' }))));
    const set = await importJsonl(p);
    set.instructions.push({ ...set.instructions[0], instruction_id: 't/breadth-0', origin: 'breadth', parent_id: 't/seed', text: `Please: ${SENT}` });
    const byTask = instructionsByTask(set);
    expect(set.instances.every((x) => chooseInstruction(set, x, {}, byTask).instruction_id === 't/seed')).toBe(true);
    const picks = set.instances.map((x) => chooseInstruction(set, x, { policy: 'any', seed: 2 }, byTask).instruction_id);
    const rewrites = picks.filter((id) => id === 't/breadth-0').length;
    expect(rewrites).toBeGreaterThan(15);
    expect(rewrites).toBeLessThan(45);
    expect(set.instances.map((x) => chooseInstruction(set, x, { policy: 'any', seed: 2 }, byTask).instruction_id)).toEqual(picks);
    expect(chooseInstruction(set, set.instances[0], { policy: 'any', origins: ['breadth'] }).instruction_id).toBe('t/breadth-0');
    expect(() => chooseInstruction(set, { ...set.instances[0], task_id: 'nope' })).toThrow(/task 'nope' has no seed instruction/);
  });
});
