// The synthetic key-part suite: determinism from the seed, exact key spans, outputs that follow the
// families' rules (recomputed here from the input text and the instruction, independently of the
// generator), held-out tasks with new key-part values, sizes, bad input; and the base model's
// cache (reuse, atomic writes, an unwritable folder) on a very small recipe.
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateTaskSet } from '../src/data/validate.js';
import { CancelledError, InputError, KpigIOError } from '../src/errors/index.js';
import { Model } from '../src/model/model.js';
import { buildBaseModel, type BaseModelRecipe } from '../src/synth/base-model.js';
import { generateSuite, mixtureExamples, type SynthSuite } from '../src/synth/tasks.js';

const root = mkdtempSync(join(tmpdir(), 'kpig-synth-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const instructionOf = (suite: SynthSuite, taskId: string) => suite.set.instructions.find((i) => i.task_id === taskId)!;
const instancesOf = (suite: SynthSuite, taskId: string) => suite.set.instances.filter((r) => r.task_id === taskId);
const familyOf = (suite: SynthSuite, taskId: string) => suite.specs.find((s) => s.task_id === taskId)!.family;
/** The quoted words of an instruction, in order. */
const quoted = (text: string) => [...text.matchAll(/'([^']+)'/g)].map((m) => m[1]);

// Class words as the tests know them, written out again rather than imported.
const CLASS_WORDS: Record<string, string[]> = {
  animal: ['cat', 'dog', 'fox', 'owl', 'lion', 'frog'],
  fruit: ['apple', 'pear', 'plum', 'fig', 'mango', 'melon'],
  color: ['red', 'blue', 'green', 'pink', 'gray', 'black'],
  tool: ['saw', 'axe', 'drill', 'hammer', 'rake', 'spade'],
  city: ['Paris', 'Rome', 'Oslo', 'Lima', 'Cairo', 'Tokyo'],
  drink: ['tea', 'milk', 'juice', 'water', 'coffee', 'soda'],
};
const GOOD_WORDS = ['tasty', 'warm', 'kind', 'fresh', 'clean', 'cozy'];
const BAD_WORDS = ['cold', 'rude', 'dull', 'noisy', 'dirty', 'slow'];

describe('synthetic suite', () => {
  const suite = generateSuite({ seed: 3 });

  it('is a valid task set with the default sizes and one stream of seen and held-out tasks', () => {
    validateTaskSet(suite.set, 'synth');
    expect(suite.stream.seen).toHaveLength(5);
    expect(suite.stream.held_out).toHaveLength(3);
    expect(suite.set.streams).toEqual([suite.stream]);
    expect(suite.set.tasks.map((t) => t.task_id)).toEqual([...suite.stream.seen, ...suite.stream.held_out]);
    for (const t of suite.set.tasks) {
      expect(t.source).toBe('synth');
      const rows = instancesOf(suite, t.task_id);
      expect(rows.filter((r) => r.split === 'train')).toHaveLength(200);
      expect(rows.filter((r) => r.split === 'test')).toHaveLength(50);
      const train = new Set(rows.filter((r) => r.split === 'train').map((r) => r.input));
      expect(rows.filter((r) => r.split === 'test' && train.has(r.input))).toEqual([]);
      expect(t.kind).toBe(t.label_set ? 'classification' : 'generation');
    }
    // The first three held-out tasks come from the label-set families, so a V-score exists.
    expect(suite.stream.held_out.every((id) => suite.set.tasks.find((t) => t.task_id === id)!.label_set !== null)).toBe(true);
  });

  it('honours the sizes asked for', () => {
    const small = generateSuite({ seed: 1, seenTasks: 2, heldOutTasks: 1, trainPerTask: 7, testPerTask: 3, streamName: 'mini' });
    expect(small.stream).toMatchObject({ name: 'mini' });
    expect(small.stream.seen).toHaveLength(2);
    expect(small.stream.held_out).toHaveLength(1);
    for (const t of small.set.tasks) {
      expect(instancesOf(small, t.task_id).filter((r) => r.split === 'train')).toHaveLength(7);
      expect(instancesOf(small, t.task_id).filter((r) => r.split === 'test')).toHaveLength(3);
    }
    const wide = generateSuite({ seed: 1, seenTasks: 12, heldOutTasks: 3, trainPerTask: 2, testPerTask: 1 });
    expect(new Set(wide.set.tasks.map((t) => t.task_id)).size).toBe(15);
  });

  it('is a function of the seed', () => {
    expect(generateSuite({ seed: 3 })).toEqual(suite);
    const other = generateSuite({ seed: 4 });
    expect(other.set.tasks.map((t) => t.task_id)).not.toEqual(suite.set.tasks.map((t) => t.task_id));
    expect(other.set.instances.map((r) => r.input)).not.toEqual(suite.set.instances.map((r) => r.input));
    expect(mixtureExamples({ seed: 3, size: 50 })).toEqual(mixtureExamples({ seed: 3, size: 50 }));
    expect(mixtureExamples({ seed: 3, size: 50 })).not.toEqual(mixtureExamples({ seed: 4, size: 50 }));
  });

  it('marks key spans that are exact substrings and cover every label word', () => {
    for (const seed of [0, 1, 2]) {
      const s = generateSuite({ seed, seenTasks: 6, heldOutTasks: 4, trainPerTask: 2, testPerTask: 1 });
      for (const t of s.set.tasks) {
        const ins = instructionOf(s, t.task_id);
        const spanTexts = ins.key_spans.map((k) => ins.text.slice(k.start, k.end));
        expect(ins.key_spans.length).toBeGreaterThan(0);
        for (const [k, span] of ins.key_spans.entries()) {
          expect(span.kind).toBeDefined();
          expect(spanTexts[k].length).toBe(span.end - span.start);
          expect(ins.text.includes(spanTexts[k])).toBe(true);
        }
        // Every key value of the spec stands in the instruction exactly where a span says.
        const values = Object.values(s.specs.find((x) => x.task_id === t.task_id)!.key);
        expect(spanTexts).toEqual(values);
        if (t.label_set) {
          // Label words are either spans (sentiment, membership) or implied by a format span (choice).
          const labelSpans = ins.key_spans.filter((k) => k.kind === 'label').map((k) => ins.text.slice(k.start, k.end));
          if (labelSpans.length > 0) expect([...labelSpans].sort()).toEqual([...t.label_set].sort());
          else expect(ins.key_spans.some((k) => k.kind === 'format')).toBe(true);
          for (const r of instancesOf(s, t.task_id)) expect(t.label_set).toContain(r.outputs[0]);
        }
      }
    }
  });

  it('computes outputs by the family rules (recomputed from input and instruction)', () => {
    const s = generateSuite({ seed: 11, seenTasks: 6, heldOutTasks: 4, trainPerTask: 40, testPerTask: 10 });
    const checked = new Set<string>();
    for (const t of s.set.tasks) {
      const text = instructionOf(s, t.task_id).text;
      const family = familyOf(s, t.task_id);
      for (const r of instancesOf(s, t.task_id)) {
        let want: string;
        if (family === 'sentiment') {
          const [pos, neg] = quoted(text);
          const words = r.input.replace('.', '').split(' ');
          expect(words.some((w) => GOOD_WORDS.includes(w)) !== words.some((w) => BAD_WORDS.includes(w))).toBe(true);
          want = words.some((w) => GOOD_WORDS.includes(w)) ? pos : neg;
        } else if (family === 'membership') {
          const category = /name any (\w+)\?/.exec(text)![1];
          const [yes, no] = quoted(text);
          want = r.input.split(', ').some((w) => CLASS_WORDS[category].includes(w)) ? yes : no;
        } else if (family === 'choice') {
          const category = /kind of (\w+)\?/.exec(text)![1];
          const options = r.input.split(/\s*\([ABC]\)\s*/).filter(Boolean);
          const hits = options.map((w, i) => (CLASS_WORDS[category].includes(w) ? i : -1)).filter((i) => i >= 0);
          expect(hits).toHaveLength(1);
          const formats: Record<string, string[]> = { letter: ['A', 'B', 'C'], number: ['1', '2', '3'], 'roman numeral': ['I', 'II', 'III'] };
          const format = /Answer with the (.+)\.$/.exec(text)![1];
          want = format === 'option text' ? options[hits[0]] : formats[format][hits[0]];
        } else if (family === 'length') {
          const [, end, n] = /Copy the (first|last) (\d) words/.exec(text)!;
          const words = r.input.split(' ');
          want = (end === 'first' ? words.slice(0, Number(n)) : words.slice(-Number(n))).join(' ');
        } else continue;
        expect(r.outputs, `${t.task_id} ${r.input}`).toEqual([want]);
        checked.add(family);
      }
    }
    expect([...checked].sort()).toEqual(['choice', 'length', 'membership', 'sentiment']);
  });

  it('gives different outputs for the same input under another task of the family', () => {
    const s = generateSuite({ seed: 5, seenTasks: 6, heldOutTasks: 3, trainPerTask: 30, testPerTask: 5 });
    for (const family of ['sentiment', 'membership', 'choice'] as const) {
      const [a, b] = s.specs.filter((x) => x.family === family).map((x) => x.task_id);
      // The held-out task's labels are disjoint from the seen task's: no output is shared.
      const outA = new Set(instancesOf(s, a).map((r) => r.outputs[0]));
      expect(instancesOf(s, b).filter((r) => outA.has(r.outputs[0]))).toEqual([]);
    }
  });

  it('gives held-out tasks key-part values no seen task of their family uses', () => {
    for (const seed of [0, 1, 2, 3]) {
      const s = generateSuite({ seed, seenTasks: 6, heldOutTasks: 6, trainPerTask: 2, testPerTask: 1 });
      for (const held of s.specs.filter((x) => x.role === 'held_out')) {
        for (const seen of s.specs.filter((x) => x.role === 'seen' && x.family === held.family)) {
          for (const part of Object.keys(held.key)) expect(held.key[part], `${held.task_id} vs ${seen.task_id}`).not.toBe(seen.key[part]);
        }
      }
    }
  });

  it('leaves the suite tasks out of the mixture and covers every family', () => {
    const exclude = suite.set.tasks.map((t) => t.task_id);
    const rows = mixtureExamples({ seed: 3, size: 3000, exclude });
    expect(rows.filter((r) => exclude.includes(r.task_id))).toEqual([]);
    expect(new Set(rows.map((r) => r.task_id.split('-')[0]))).toEqual(new Set(['sentiment', 'membership', 'choice', 'extract', 'transform', 'length']));
    // The held-out label words are known to the mixture, in other pairings.
    const heldLabels = suite.set.tasks.filter((t) => suite.stream.held_out.includes(t.task_id) && t.label_set).flatMap((t) => t.label_set!);
    for (const word of heldLabels) expect(rows.some((r) => quoted(r.instruction).includes(word) || r.output === word)).toBe(true);
  });

  it('rejects bad sizes, naming the option', () => {
    expect(() => generateSuite({ trainPerTask: 0 })).toThrow(InputError);
    expect(() => generateSuite({ trainPerTask: 0 })).toThrow(/trainPerTask/);
    expect(() => generateSuite({ testPerTask: -2 })).toThrow(/testPerTask must be a positive integer, got -2/);
    expect(() => generateSuite({ seenTasks: 1.5 })).toThrow(/seenTasks/);
    expect(() => generateSuite({ heldOutTasks: 0 })).toThrow(/heldOutTasks/);
    expect(() => generateSuite({ seed: -1 })).toThrow(/seed/);
    expect(() => mixtureExamples({ seed: 0, size: 0 })).toThrow(/size/);
    // Too many tasks for a family's key values, or too many instances for its inputs.
    // 66 seen tasks put 11 in the family 'length', which has 2 × 5 keys.
    expect(() => generateSuite({ seenTasks: 66, heldOutTasks: 1, trainPerTask: 1, testPerTask: 1 })).toThrow(/no key of family 'length' is left for seen task 66/);
    expect(() => generateSuite({ seenTasks: 1, heldOutTasks: 1, trainPerTask: 100_000, testPerTask: 1 })).toThrow(/distinct inputs/);
  });
});

describe('base model', () => {
  // A recipe far below the real ones: the cache and its atomicity, not the model, are under test.
  const tiny: Partial<BaseModelRecipe> = { hiddenSize: 32, layers: 1, heads: 2, kvHeads: 2, intermediateSize: 64, mixtureSize: 48, epochs: 1, batchSize: 16, warmupSteps: 0 };
  const suite = { seenTasks: 2, heldOutTasks: 1 };

  it('builds once, then reuses the cached folder; another seed is another build', async () => {
    const cacheDir = join(root, 'cache');
    const phases: string[] = [];
    const first = await buildBaseModel({ cacheDir, quick: true, seed: 1, threads: 1, suite, recipe: tiny, onProgress: (p) => phases.push(p.phase) });
    expect(first.reused).toBe(false);
    expect(first.dir).toBe(join(cacheDir, first.key));
    expect(phases[0]).toBe('init');
    expect(phases).toContain('train');
    expect(phases.at(-1)).toBe('save');
    expect(readdirSync(first.dir).sort()).toEqual(['config.json', 'kpig-base.json', 'kpig-tokenizer.json', 'model.safetensors']);
    expect(readdirSync(cacheDir)).toEqual([first.key]);

    const model = await Model.load(first.dir, { threads: 1 });
    expect(model.info.vocabSize).toBe(259);
    expect(model.tokenizer!.kind).toBe('byte');
    model.dispose();

    const again = await buildBaseModel({ cacheDir, quick: true, seed: 1, threads: 1, suite, recipe: tiny, onProgress: () => phases.push('again') });
    expect(again).toEqual({ ...first, reused: true });
    expect(phases).not.toContain('again');

    const other = await buildBaseModel({ cacheDir, quick: true, seed: 2, threads: 1, suite, recipe: tiny });
    expect(other.reused).toBe(false);
    expect(other.key).not.toBe(first.key);
  });

  it('leaves no folder behind when a build is interrupted', async () => {
    const cacheDir = join(root, 'interrupted');
    const controller = new AbortController();
    const build = buildBaseModel({
      cacheDir,
      seed: 1,
      threads: 1,
      suite,
      recipe: { ...tiny, mixtureSize: 400 },
      signal: controller.signal,
      onProgress: (p) => p.phase === 'train' && p.step === 2 && controller.abort(),
    });
    await expect(build).rejects.toThrow(CancelledError);
    expect(readdirSync(cacheDir)).toEqual([]);
  });

  it('refuses an unwritable cache folder, a folder holding another build, and bad options', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'not a folder');
    const bad = buildBaseModel({ cacheDir: join(file, 'cache'), seed: 1, threads: 1, suite, recipe: tiny });
    await expect(bad).rejects.toThrow(KpigIOError);
    await expect(bad).rejects.toThrow(join(file, 'cache'));

    const dir = join(root, 'explicit');
    const built = await buildBaseModel({ dir, seed: 1, threads: 1, suite, recipe: tiny });
    expect(built.dir).toBe(dir);
    await expect(buildBaseModel({ dir, seed: 2, threads: 1, suite, recipe: tiny })).rejects.toThrow(/holds another base model/);
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(true);

    await expect(buildBaseModel({ cacheDir: root, seed: -1 })).rejects.toThrow(/seed/);
    await expect(buildBaseModel({ cacheDir: root, threads: 1.5 })).rejects.toThrow(/threads/);
    await expect(buildBaseModel({ cacheDir: root, recipe: { mixtureSize: 0 } })).rejects.toThrow(/recipe\.mixtureSize/);
    await expect(buildBaseModel({ cacheDir: root, recipe: { hiddenSize: 30, heads: 4 } })).rejects.toThrow(/hiddenSize/);
  });
});
