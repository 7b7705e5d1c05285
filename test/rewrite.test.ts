// Instruction diversity: the offline rewriter keeps key parts verbatim and is deterministic, bad
// variants are rejected with a reason, and on ../shared/data/superni-dev every variant keeps every key part.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { importSuperNI } from '../src/data/superni.js';
import type { InstructionRecord, TaskSet } from '../src/data/taskset.js';
import { validateTaskSet } from '../src/data/validate.js';
import { distinctN, diversityReport, novelN } from '../src/rewrite/diversity.js';
import { offlineRewriter } from '../src/rewrite/offline.js';
import { checkVariant, diversify, type Rewriter } from '../src/rewrite/variant.js';

const SHARED = resolve(__dirname, '..', '..', 'shared', 'data', 'superni-dev');
const hasShared = existsSync(join(SHARED, 'manifest.json'));
if (!hasShared) console.warn(`skipping the offline rewriter on superni-dev: ${SHARED} is absent`);

function fixture(): TaskSet {
  const text = 'In this task, you are given a movie review. Your task is to classify it into "good" or "bad". Answer in one word.';
  const keyPhrases = ['"good" or "bad"', 'in one word'];
  return {
    tasks: [
      { task_id: 'rev', kind: 'classification', label_set: ['good', 'bad'], source: 'jsonl', categories: [], examples: [{ input: 'A delight from start to end.', output: 'good', explanation: '' }] },
      { task_id: 'sum', kind: 'generation', label_set: null, source: 'jsonl', categories: [] },
    ],
    instructions: [
      {
        task_id: 'rev',
        instruction_id: 'rev/seed',
        text,
        key_spans: keyPhrases.map((p, i) => ({ start: text.indexOf(p), end: text.indexOf(p) + p.length, kind: i === 0 ? 'label' : 'length' })),
        origin: 'seed',
        key_source: 'explicit',
        parent_id: null,
      },
      { task_id: 'sum', instruction_id: 'sum/seed', text: 'Given a paragraph, write a summary.', key_spans: [], origin: 'seed', key_source: 'none', parent_id: null },
    ],
    instances: [
      { task_id: 'rev', instance_id: '0', split: 'train', input: 'Dull.', outputs: ['bad'] },
      { task_id: 'sum', instance_id: '0', split: 'train', input: 'Long text.', outputs: ['Short.'] },
    ],
    streams: [],
  };
}

const keysOf = (r: InstructionRecord) => r.key_spans.map((s) => r.text.slice(s.start, s.end));

describe('offline rewriter', () => {
  it('writes every kind of variant with the seed key parts verbatim at their new offsets', async () => {
    const set = fixture();
    const { set: out, accepted, rejected } = await diversify(set, offlineRewriter(), { perKind: 2, seed: 5 });
    expect(rejected).toEqual([]);
    expect(accepted).toHaveLength(2 * 4 * 2);
    validateTaskSet(out);
    expect(out.instructions.map((r) => r.instruction_id).slice(0, 3)).toEqual(['rev/seed', 'rev/concretizing-0', 'rev/concretizing-1']);
    for (const v of accepted.filter((a) => a.task_id === 'rev')) {
      expect(keysOf(v)).toEqual(expect.arrayContaining(['"good" or "bad"', 'in one word']));
      expect(v.text).not.toBe(set.instructions[0].text);
      expect(v.parent_id).toBe('rev/seed');
    }
    const byId = new Map(accepted.map((a) => [a.instruction_id, a]));
    expect(byId.get('rev/breadth-0')!.text).toMatch(/^(?:You receive|You get|You will be shown) a movie review\./);
    expect(byId.get('rev/concretizing-0')!.text).toContain('There are exactly 2 possible answers');
    expect(byId.get('rev/concretizing-0')!.text).toContain('"A delight from start to end."');
    const constraint = byId.get('rev/constraint-0')!;
    // the added constraint decides the form of the answer, so it is itself a key part
    expect(constraint.key_spans.at(-1)!.kind).toBe('format');
    expect(byId.get('rev/reasoning-0')!.text.startsWith(set.instructions[0].text)).toBe(false);
    expect(byId.get('rev/reasoning-1')!.text.startsWith(set.instructions[0].text)).toBe(true);
    // variants of one kind differ from each other
    expect(byId.get('rev/breadth-0')!.text).not.toBe(byId.get('rev/breadth-1')!.text);
  });

  it('is deterministic for a seed and idempotent on a diversified set', async () => {
    const a = await diversify(fixture(), offlineRewriter(), { seed: 1 });
    const b = await diversify(fixture(), offlineRewriter(), { seed: 1 });
    expect(a.set).toEqual(b.set);
    const twice = await diversify(a.set, offlineRewriter(), { seed: 1 });
    expect(twice.set).toEqual(a.set);
  });

  it('rejects a variant that loses or alters a key part, with the reason', async () => {
    const lossy: Rewriter = {
      name: 'lossy',
      async rewrite(req) {
        return { text: req.seed.text.replace('"bad"', '"poor"').replace('summary', 'short summary') };
      },
    };
    const { accepted, rejected } = await diversify(fixture(), lossy, { kinds: ['breadth'] });
    expect(rejected).toEqual([
      {
        task_id: 'rev',
        parent_id: 'rev/seed',
        origin: 'breadth',
        text: expect.stringContaining('"poor"'),
        reason: 'key part(s) not found verbatim in the rewrite: "\\"good\\" or \\"bad\\""',
      },
    ]);
    expect(accepted.map((a) => a.instruction_id)).toEqual(['sum/breadth-0']);
    const seed = fixture().instructions[0];
    expect(checkVariant(seed, { text: seed.text })).toEqual({ reason: 'the rewrite is the seed unchanged' });
    expect(checkVariant(seed, { text: '  ' })).toEqual({ reason: 'the rewrite is empty' });
    // re-located: the key parts moved to the front
    expect(checkVariant(seed, { text: 'Use "good" or "bad", in one word, for the review.' })).toEqual({
      spans: [
        { start: 4, end: 19, kind: 'label' },
        { start: 21, end: 32, kind: 'length' },
      ],
    });
  });

  it('measures diversity by hand-checkable counts', () => {
    expect(distinctN(['a b c', 'a b d'], 2)).toBe(3 / 4);
    expect(novelN('a b c', 'a b d', 2)).toBe(1 / 2);
    const set = fixture();
    set.instructions.push({ ...set.instructions[1], instruction_id: 'sum/breadth-0', origin: 'breadth', parent_id: 'sum/seed', text: 'Given a paragraph, write a short summary.' });
    const r = diversityReport(set, 2);
    // seed bigrams: given a, a paragraph, paragraph write, write a, a summary (5); the variant adds a short, short summary (2 new of 6)
    expect(r.novel).toBeCloseTo(2 / 6 / 1, 10);
    expect(r.variants).toBe(1);
  });
});

describe.skipIf(!hasShared)('offline rewriter on superni-dev (../shared/data/superni-dev)', () => {
  it('every variant of every task keeps all key parts verbatim, and adds wording', async () => {
    const set = await importSuperNI(SHARED, { maxInstances: 10 });
    const { set: out, accepted, rejected } = await diversify(set, offlineRewriter(), { perKind: 2 });
    expect(rejected).toEqual([]);
    expect(accepted).toHaveLength(set.tasks.length * 8);
    validateTaskSet(out);
    for (const v of accepted) {
      const seed = set.instructions.find((s) => s.instruction_id === v.parent_id)!;
      expect(keysOf(v), v.instruction_id).toEqual(expect.arrayContaining(keysOf(seed)));
    }
    const lines = [1, 2, 3].map((n) => {
      const r = diversityReport(out, n);
      expect(r.perSeedDistinct).toBeGreaterThan(r.copyBaseline);
      expect(r.novel).toBeGreaterThan(0.1);
      expect(r.allNgrams).toBeGreaterThan(r.seedNgrams);
      return `distinct-${n} per seed ${r.perSeedDistinct.toFixed(3)} (copies ${r.copyBaseline.toFixed(3)}), novel-${n} ${r.novel.toFixed(3)}, distinct ${n}-grams ${r.seedNgrams} → ${r.allNgrams}`;
    });
    console.log(`offline rewriter, ${set.tasks.length} seeds × 8 variants:\n  ${lines.join('\n  ')}`);
  });
});
