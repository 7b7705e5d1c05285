// The task-set folder: Arrow IPC round trip, schema version in the metadata, validation on write and read.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC, tableToIPC } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { readTaskSet, writeTaskSet } from '../src/data/store.js';
import { TASKSET_SCHEMA_VERSION, type TaskSet } from '../src/data/taskset.js';
import { InputError, KpigIOError } from '../src/errors/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sample(): TaskSet {
  return {
    tasks: [
      {
        task_id: 'sent',
        kind: 'classification',
        label_set: ['good', 'bad'],
        source: 'jsonl',
        categories: ['Sentiment'],
        examples: [{ input: 'great film', output: 'good', explanation: '' }],
      },
      { task_id: 'echo', kind: 'generation', label_set: null, source: 'superni', categories: [] },
    ],
    instructions: [
      { task_id: 'sent', instruction_id: 'sent/seed', text: 'Answer "good" or "bad".', key_spans: [{ start: 7, end: 22, kind: 'label' }], origin: 'seed', key_source: 'heuristic', parent_id: null },
      { task_id: 'sent', instruction_id: 'sent/breadth-0', text: 'Say "good" or "bad".', key_spans: [{ start: 4, end: 19 }], origin: 'breadth', key_source: 'heuristic', parent_id: 'sent/seed' },
      { task_id: 'echo', instruction_id: 'echo/seed', text: 'Repeat the input — 繰り返す.', key_spans: [], origin: 'seed', key_source: 'none', parent_id: null },
    ],
    instances: [
      { task_id: 'sent', instance_id: '1', split: 'train', input: 'nice', outputs: ['good'] },
      { task_id: 'sent', instance_id: '2', split: 'test', input: 'awful', outputs: ['bad'] },
      { task_id: 'echo', instance_id: '1', split: 'train', input: '', outputs: ['a', 'b', ''] },
    ],
    streams: [{ name: 'main', seen: ['sent'], held_out: ['echo'] }],
  };
}

describe('task-set store', () => {
  it('writes four Arrow IPC files and reads back the same set', async () => {
    const out = join(dir, 'set');
    await writeTaskSet(out, sample());
    expect(readdirSync(out).sort()).toEqual(['instances.arrow', 'instructions.arrow', 'streams.arrow', 'tasks.arrow']);
    expect(await readTaskSet(out)).toEqual(sample());
    const t = tableFromIPC(readFileSync(join(out, 'instructions.arrow')));
    expect(t.schema.metadata.get('kpig.schema_version')).toBe(String(TASKSET_SCHEMA_VERSION));
    expect(t.schema.metadata.get('kpig.schema')).toBe('taskset/instructions');
    expect(String(t.schema.fields.find((f) => f.name === 'key_spans')!.type)).toBe('List<Struct<{start:Int32, end:Int32, kind:Utf8}>>');
  });

  it('refuses to replace a folder without overwrite, and replaces it with overwrite', async () => {
    const out = join(dir, 'again');
    await writeTaskSet(out, sample());
    await expect(writeTaskSet(out, sample())).rejects.toThrow(/not empty/);
    const smaller = sample();
    smaller.instances.pop();
    await writeTaskSet(out, smaller, { overwrite: true });
    expect((await readTaskSet(out)).instances).toHaveLength(2);
  });

  it('rejects inconsistent sets before writing anything', async () => {
    const bad = sample();
    bad.instructions[0].key_spans = [{ start: 5, end: 40 }];
    await expect(writeTaskSet(join(dir, 'bad1'), bad)).rejects.toThrow(/instructions row 0 \(sent\/seed\): key span \[5, 40\) is not inside the text \(length 23\)/);
    const orphan = sample();
    orphan.instances.push({ task_id: 'nope', instance_id: '9', split: 'train', input: '', outputs: ['x'] });
    await expect(writeTaskSet(join(dir, 'bad2'), orphan)).rejects.toThrow(/instances row 3 \(nope\/9\): unknown task_id 'nope'/);
    const empty = sample();
    empty.instances[0].outputs = [];
    await expect(writeTaskSet(join(dir, 'bad3'), empty)).rejects.toThrow(/outputs must be a non-empty list/);
    expect(readdirSync(dir).filter((n) => n.startsWith('bad') || n.startsWith('.bad'))).toEqual([]);
  });

  it('reports a missing file, a foreign Arrow file and another schema version', async () => {
    const out = join(dir, 'damaged');
    await writeTaskSet(out, sample());
    rmSync(join(out, 'streams.arrow'));
    await expect(readTaskSet(out)).rejects.toBeInstanceOf(KpigIOError);
    writeFileSync(join(out, 'streams.arrow'), tableToIPC(tableFromIPC(readFileSync(join(out, 'tasks.arrow'))).select(['task_id']), 'file'));
    // select() keeps the metadata of the tasks table, so the missing columns are what is reported.
    await expect(readTaskSet(out)).rejects.toThrow(/streams.arrow: missing column\(s\) name, seen, held_out/);
    const bumped = tableFromIPC(readFileSync(join(out, 'tasks.arrow')));
    bumped.schema.metadata.set('kpig.schema_version', '99');
    writeFileSync(join(out, 'tasks.arrow'), tableToIPC(bumped, 'file'));
    await expect(readTaskSet(out)).rejects.toThrow(/tasks.arrow: task-set schema version 99; this build reads versions 1, 2/);
    writeFileSync(join(out, 'tasks.arrow'), 'not arrow at all');
    await expect(readTaskSet(out)).rejects.toBeInstanceOf(InputError);
  });
});
