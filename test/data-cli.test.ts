// `kpig data import` and `kpig data show` end to end on a SuperNI folder the test writes.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readTaskSet } from '../src/data/store.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-data-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function kpig(args: string[]) {
  return spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });
}

function superni(name: string, files: Record<string, unknown>): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  for (const [f, body] of Object.entries(files)) writeFileSync(join(d, f), typeof body === 'string' ? body : JSON.stringify(body));
  return d;
}

const parity = {
  Definition: ['Decide whether the number in the input is even. Answer with "even" or "odd".'],
  'Positive Examples': [{ input: '4', output: 'even', explanation: '4 = 2 × 2.' }],
  Instances: Array.from({ length: 30 }, (_, i) => ({ id: `p-${i}`, input: String(i), output: [i % 2 ? 'odd' : 'even'] })),
};

describe('kpig data', () => {
  it('imports a SuperNI folder into a task set and shows it', async () => {
    const src = superni('ok', { 'task1_parity.json': parity });
    const out = join(dir, 'set');
    const r = kpig(['data', 'import', src, '-o', out, '--test-size', '10', '--seed', '3']);
    expect(r.status, r.stderr).toBe(0);
    const set = await readTaskSet(out);
    expect(set.tasks.map((t) => t.task_id)).toEqual(['task1_parity']);
    expect(set.tasks[0].label_set?.sort()).toEqual(['even', 'odd']);
    expect(set.instances.filter((x) => x.split === 'test')).toHaveLength(10);
    expect(set.instances.filter((x) => x.split === 'train')).toHaveLength(20);
    const seed = set.instructions.find((x) => x.origin === 'seed')!;
    expect(seed.key_spans.map((s) => seed.text.slice(s.start, s.end)).join(' ')).toMatch(/even/);
    const show = kpig(['data', 'show', out, '--json']);
    expect(show.status, show.stderr).toBe(0);
    expect(show.stdout).toContain('task1_parity');
  });

  it('fails with one line naming the file for malformed JSON, and writes nothing', () => {
    const src = superni('bad', { 'task2_x.json': '{"Definition": ["a"], "Instances": [ , ]}' });
    const out = join(dir, 'bad-set');
    const r = kpig(['data', 'import', src, '-o', out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/task2_x\.json/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(spawnSync('ls', [out]).status).not.toBe(0);
  });
});
