// SuperNI ingest: fixtures written by the test, bad-input errors, seeded splits, and the round trip of ../shared/data/superni-dev.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { splitTask } from '../src/data/split.js';
import { readTaskSet, writeTaskSet } from '../src/data/store.js';
import { importSuperNI } from '../src/data/superni.js';
import { InputError } from '../src/errors/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-superni-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SHARED = resolve(__dirname, '..', '..', 'shared', 'data', 'superni-dev');
const hasShared = existsSync(join(SHARED, 'manifest.json'));
if (!hasShared) console.warn(`skipping the superni-dev round trip: ${SHARED} is absent`);

function task(over: Record<string, unknown> = {}) {
  return {
    Definition: ['Decide whether the number in the input is even. Answer with "even" or "odd".'],
    Categories: ['Arithmetic'],
    'Positive Examples': [{ input: '4', output: 'even', explanation: '4 = 2 × 2.' }],
    Instances: Array.from({ length: 20 }, (_, i) => ({ id: `t-${i}`, input: String(i), output: [i % 2 ? 'odd' : 'even'] })),
    ...over,
  };
}

function folder(name: string, files: Record<string, unknown>): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  for (const [f, body] of Object.entries(files)) {
    mkdirSync(join(d, f, '..'), { recursive: true });
    writeFileSync(join(d, f), typeof body === 'string' ? body : JSON.stringify(body, null, 1));
  }
  return d;
}

describe('SuperNI ingest', () => {
  it('imports tasks with seed instruction, key parts, label set, examples and a seeded split', async () => {
    const d = folder('ok', {
      'task1_parity.json': task(),
      'task2_echo.json': task({ Definition: 'Repeat the input.', 'Positive Examples': [], Instances: [{ id: 'a', input: 'x', output: ['x', 'X'] }] }),
      'notes.json': '{ this file is not a task }',
    });
    const set = await importSuperNI(d, { seed: 3, testSize: 5 });
    expect(set.tasks.map((t) => [t.task_id, t.kind, t.label_set])).toEqual([
      ['task1_parity', 'classification', ['even', 'odd']],
      ['task2_echo', 'generation', null],
    ]);
    expect(set.tasks[0].examples).toEqual([{ input: '4', output: 'even', explanation: '4 = 2 × 2.' }]);
    const seed = set.instructions[0];
    expect(seed.instruction_id).toBe('task1_parity/seed');
    const keyTexts = seed.key_spans.map((s) => seed.text.slice(s.start, s.end));
    expect(keyTexts).toContain('"even" or "odd"');
    expect(seed.key_source).toBe('heuristic');
    const t1 = set.instances.filter((x) => x.task_id === 'task1_parity');
    expect(t1).toHaveLength(20);
    expect(t1.filter((x) => x.split === 'test')).toHaveLength(5);
    expect(t1.map((x) => x.instance_id)).toEqual(Array.from({ length: 20 }, (_, i) => `t-${i}`)); // original order kept
    // one instance cannot give a test split of 5 without emptying train: it all goes to test, as asked
    expect(set.instances.filter((x) => x.task_id === 'task2_echo')).toEqual([{ task_id: 'task2_echo', instance_id: 'a', split: 'test', input: 'x', outputs: ['x', 'X'] }]);
    expect(set.streams).toEqual([{ name: 'default', seen: ['task1_parity', 'task2_echo'], held_out: [] }]);
    const again = await importSuperNI(d, { seed: 3, testSize: 5 });
    expect(again).toEqual(set);
    const other = await importSuperNI(d, { seed: 4, testSize: 5 });
    expect(other.instances.map((x) => x.split)).not.toEqual(set.instances.map((x) => x.split));
  });

  it('caps instances with a seeded sample and reads a manifest stream from the folder', async () => {
    const d = folder('capped', {
      'manifest.json': { set: 'mini', sequence: ['task1_a'], held_out: ['task2_b'] },
      'tasks/task1_a.json': task(),
      'tasks/task2_b.json': task(),
    });
    const set = await importSuperNI(d, { maxInstances: 8, testFraction: 0.25 });
    expect(set.instances.filter((x) => x.task_id === 'task1_a')).toHaveLength(8);
    expect(set.instances.filter((x) => x.task_id === 'task1_a' && x.split === 'test')).toHaveLength(2);
    expect(set.streams).toEqual([{ name: 'mini', seen: ['task1_a'], held_out: ['task2_b'] }]);
  });

  it('splits one instance the same way whatever else the task holds', () => {
    const ids = Array.from({ length: 200 }, (_, i) => `id${i}`);
    const full = splitTask('t', ids, { seed: 9, testFraction: 0.5 });
    expect(full.filter((s) => s.split === 'test')).toHaveLength(100);
    // hand check: the rank is sha256("9\0t\0<id>"), so the test half are the 100 smallest hashes
    const hash = (id: string) => createHash('sha256').update(`9\u0000t\u0000${id}`).digest('hex');
    const sorted = [...ids].sort((a, b) => (hash(a) < hash(b) ? -1 : 1));
    expect(new Set(full.filter((s) => s.split === 'test').map((s) => ids[s.index]))).toEqual(new Set(sorted.slice(0, 100)));
    expect(() => splitTask('t', ids, { testFraction: 1.5 })).toThrow(InputError);
    expect(() => splitTask('t', ids, { maxInstances: 0 })).toThrow(/maxInstances must be an integer ≥ 1/);
  });

  it('names the file and position of malformed JSON', async () => {
    const d = folder('malformed', { 'task1_x.json': '{\n  "Definition": ["a"],\n  "Instances": [ , ]\n}' }); // line 3: the comma is the 18th character
    const err = await importSuperNI(d).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(new RegExp(`${join(d, 'task1_x.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:18: not valid JSON`));
    const cut = folder('truncated', { 'task1_x.json': '{"Definition": ["a"], "Instances": [' });
    await expect(importSuperNI(cut)).rejects.toThrow(/task1_x\.json:1:37: not valid JSON/);
  });

  it('rejects a task without Definition, an output that is not a list, and an empty task', async () => {
    const noDef = task();
    delete (noDef as Record<string, unknown>).Definition;
    await expect(importSuperNI(folder('nodef', { 'task7_a.json': noDef }))).rejects.toThrow(/task7_a\.json: no 'Definition' field/);
    await expect(importSuperNI(folder('emptydef', { 'task7_a.json': task({ Definition: ['  '] }) }))).rejects.toThrow(/'Definition' is empty/);
    const scalar = task();
    (scalar.Instances[3] as Record<string, unknown>).output = 'odd';
    await expect(importSuperNI(folder('scalar', { 'task8_b.json': scalar }))).rejects.toThrow(
      /task8_b\.json: Instances\[3\] \(id t-3\): 'output' must be a list of accepted outputs, got "odd"/,
    );
    await expect(importSuperNI(folder('emptylist', { 'task8_b.json': task({ Instances: [{ id: 'q', input: '', output: [] }] }) }))).rejects.toThrow(/Instances\[0\] \(id q\): 'output' is an empty list/);
    await expect(importSuperNI(folder('empty', { 'task9_c.json': task({ Instances: [] }) }))).rejects.toThrow(/task9_c\.json: the task is empty/);
    await expect(importSuperNI(folder('none', { 'readme.txt': 'x' }))).rejects.toThrow(/no task\*\.json files/);
  });
});

describe.skipIf(!hasShared)('superni-dev round trip (../shared/data/superni-dev)', () => {
  it('imports, writes Arrow, reads back: counts, outputs, label sets and stream match the source', async () => {
    const manifest = JSON.parse(readFileSync(join(SHARED, 'manifest.json'), 'utf8'));
    const set = await importSuperNI(SHARED, { seed: 0, testSize: 100 });
    const out = join(dir, 'dev');
    await writeTaskSet(out, set);
    const back = await readTaskSet(out);
    expect(back).toEqual(set);
    const files = readdirSync(join(SHARED, 'tasks')).filter((f) => f.endsWith('.json'));
    expect(back.tasks).toHaveLength(files.length);
    for (const f of files) {
      const src = JSON.parse(readFileSync(join(SHARED, 'tasks', f), 'utf8'));
      const id = f.replace(/\.json$/, '');
      const rows = back.instances.filter((x) => x.task_id === id);
      expect(rows, id).toHaveLength(src.Instances.length);
      expect(rows.filter((x) => x.split === 'test'), id).toHaveLength(100);
      expect(rows.map((x) => [x.instance_id, x.input, x.outputs]), id).toEqual(src.Instances.map((x: { id: string; input: string; output: string[] }) => [x.id, x.input, x.output]));
      const m = manifest.tasks[id];
      const t = back.tasks.find((x) => x.task_id === id)!;
      expect(t.kind, id).toBe(m.kind);
      expect(t.label_set === null ? null : [...t.label_set].sort(), id).toEqual(m.instruction_label_set === null ? null : [...m.instruction_label_set].sort());
      expect(t.categories, id).toEqual(src.Categories);
    }
    expect(back.streams).toEqual([{ name: manifest.set, seen: manifest.sequence, held_out: manifest.held_out }]);
  });
});
