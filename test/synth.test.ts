// The synthetic key-part suite: determinism from the seed, exact key spans, outputs that an oracle
// reading the instruction recomputes (independently of the generator) while the best key-blind
// solver stays at chance, per-instance key variation, held-out tasks with new key-part values,
// probes, sizes, bad input; and the base model's
// cache (reuse, atomic writes, an unwritable folder) on a very small recipe.
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateTaskSet } from '../src/data/validate.js';
import { CancelledError, InputError, KpigIOError } from '../src/errors/index.js';
import { Model } from '../src/model/model.js';
import { buildBaseModel, type BaseModelRecipe } from '../src/synth/base-model.js';
import { keyVariation, validityGate } from '../src/eval/stats.js';
import { FAMILIES } from '../src/synth/families.js';
import { generateSuite, mixtureExamples, type SynthSuite } from '../src/synth/tasks.js';
import { FIRST_LABELS, SECOND_LABELS } from '../src/synth/words.js';

const root = mkdtempSync(join(tmpdir(), 'kpig-synth-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

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
  const instructionById = (s: SynthSuite) => new Map(s.set.instructions.map((i) => [i.instruction_id, i]));

  it('is a valid task set with the default sizes and one stream of seen and held-out tasks', () => {
    validateTaskSet(suite.set, 'synth');
    expect(suite.stream.seen).toEqual(['sentiment-1', 'choice-1', 'membership-1', 'sentiment-2', 'choice-2']);
    expect(suite.stream.held_out).toEqual(['membership-h1', 'choice-h1', 'extract-h1']);
    expect(suite.set.streams).toEqual([suite.stream]);
    expect(suite.set.tasks.map((t) => t.task_id)).toEqual([...suite.stream.seen, ...suite.stream.held_out]);
    for (const t of suite.set.tasks) {
      expect(t.source).toBe('synth');
      const rows = instancesOf(suite, t.task_id);
      expect(rows.filter((r) => r.split === 'train')).toHaveLength(200);
      expect(rows.filter((r) => r.split === 'test')).toHaveLength(100);
      expect(rows.filter((r) => r.split === 'probe')).toHaveLength(50);
      const train = new Set(rows.filter((r) => r.split === 'train').map((r) => r.input));
      expect(rows.filter((r) => r.split === 'test' && train.has(r.input))).toEqual([]);
      expect(t.kind).toBe(t.label_set ? 'classification' : 'generation');
      // Every instance is asked with an instruction of its own task.
      for (const r of rows) expect(r.instruction_id?.startsWith(`${t.task_id}/`)).toBe(true);
    }
    // The first two held-out tasks have label sets, so a V-score exists.
    expect(suite.stream.held_out.map((id) => suite.set.tasks.find((t) => t.task_id === id)!.label_set !== null)).toEqual([true, true, false]);
  });

  it('honours the sizes asked for', () => {
    const small = generateSuite({ seed: 1, seenTasks: 2, heldOutTasks: 1, trainPerTask: 7, testPerTask: 3, probePerTask: 2, streamName: 'mini' });
    expect(small.stream).toMatchObject({ name: 'mini' });
    expect(small.stream.seen).toHaveLength(2);
    expect(small.stream.held_out).toHaveLength(1);
    for (const t of small.set.tasks) {
      expect(instancesOf(small, t.task_id).filter((r) => r.split === 'train')).toHaveLength(7);
      expect(instancesOf(small, t.task_id).filter((r) => r.split === 'test')).toHaveLength(3);
      expect(instancesOf(small, t.task_id).filter((r) => r.split === 'probe')).toHaveLength(2);
    }
    const wide = generateSuite({ seed: 1, seenTasks: 12, heldOutTasks: 6, trainPerTask: 2, testPerTask: 1, probePerTask: 1 });
    expect(new Set(wide.set.tasks.map((t) => t.task_id)).size).toBe(18);
    validateTaskSet(wide.set, 'wide');
  });

  it('is a function of the seed', () => {
    expect(generateSuite({ seed: 3 })).toEqual(suite);
    const other = generateSuite({ seed: 4 });
    expect(other.specs.map((t) => t.pools)).not.toEqual(suite.specs.map((t) => t.pools));
    expect(other.set.instances.map((r) => r.input)).not.toEqual(suite.set.instances.map((r) => r.input));
    expect(mixtureExamples({ seed: 3, size: 50 })).toEqual(mixtureExamples({ seed: 3, size: 50 }));
    expect(mixtureExamples({ seed: 3, size: 50 })).not.toEqual(mixtureExamples({ seed: 4, size: 50 }));
  });

  it('marks key spans that are exact substrings, drawn from the pools, with the instruction\'s own label set', () => {
    for (const seed of [0, 1, 2]) {
      const s = generateSuite({ seed, seenTasks: 9, heldOutTasks: 6, trainPerTask: 20, testPerTask: 5, probePerTask: 0 });
      const byId = instructionById(s);
      for (const t of s.set.tasks) {
        const spec = s.specs.find((x) => x.task_id === t.task_id)!;
        for (const r of instancesOf(s, t.task_id)) {
          const ins = byId.get(r.instruction_id!)!;
          const spanTexts = ins.key_spans.map((k) => ins.text.slice(k.start, k.end));
          expect(ins.key_spans.length).toBe(Object.keys(spec.pools).length);
          for (const span of ins.key_spans) expect(span.kind).toBeDefined();
          // Each key value stands in the instruction where its span says, and comes from the task's pool.
          Object.values(spec.pools).forEach((pool, i) => expect(pool).toContain(spanTexts[i]));
          if (t.label_set) {
            expect(ins.label_set).not.toBeNull();
            const labelSpans = ins.key_spans.filter((k) => k.kind === 'label').map((k) => ins.text.slice(k.start, k.end));
            if (labelSpans.length > 0) expect([...labelSpans].sort()).toEqual([...ins.label_set!].sort());
            expect(ins.label_set).toContain(r.outputs[0]);
            for (const l of ins.label_set!) expect(t.label_set).toContain(l);
          }
        }
      }
    }
  });

  it('lets an oracle that reads the instruction answer every instance (rules recomputed from the text)', () => {
    const s = generateSuite({ seed: 11, seenTasks: 9, heldOutTasks: 6, trainPerTask: 40, testPerTask: 10, probePerTask: 10 });
    const byId = instructionById(s);
    const checked = new Set<string>();
    const rewrite: Record<string, (w: string) => string> = {
      'as it is': (w) => w,
      'in upper case': (w) => w.toUpperCase(),
      backwards: (w) => [...w].reverse().join(''),
      twice: (w) => `${w} ${w}`,
      'with dashes between letters': (w) => [...w].join('-'),
      'without its first letter': (w) => w.slice(1),
    };
    const entityWords: Record<string, string[]> = {
      name: ['Mia', 'Tom', 'Ava', 'Leo', 'Zoe', 'Sam'],
      city: CLASS_WORDS.city,
      day: ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'],
      color: CLASS_WORDS.color,
      animal: CLASS_WORDS.animal,
    };
    for (const t of s.set.tasks) {
      const family = familyOf(s, t.task_id);
      for (const r of instancesOf(s, t.task_id)) {
        const text = byId.get(r.instruction_id!)!.text;
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
        } else if (family === 'extract') {
          const [, entity, format] = /^Find the (\w+) in the sentence and write it (.+)\.$/.exec(text)!;
          want = rewrite[format](r.input.split(/[^A-Za-z]+/).find((w) => entityWords[entity].includes(w))!);
        } else if (family === 'transform') {
          const [, position, format] = /^Write the (first|second|third) word (.+)\.$/.exec(text)!;
          want = rewrite[format](r.input.split(' ')[['first', 'second', 'third'].indexOf(position)]);
        } else {
          const [, end, n] = /Copy the (first|last) (\d) words/.exec(text)!;
          const words = r.input.split(' ');
          want = (end === 'first' ? words.slice(0, Number(n)) : words.slice(-Number(n))).join(' ');
        }
        expect(r.outputs, `${t.task_id} ${text} ${r.input}`).toEqual([want]);
        checked.add(family);
      }
    }
    expect(checked.size).toBe(6);
  });

  /**
   * The best any solver can do without the key parts: it knows the family, the task's pools and the
   * input, so it answers with the most likely output over the keys that could have produced the
   * input (label pools cut to 20 words). Returns its mean accuracy and the mean chance level 1 / |label set| over `tasks`.
   */
  function keyBlindBest(s: SynthSuite, tasks: string[]): { accuracy: number; chance: number } {
    let acc = 0, chance = 0, n = 0;
    const byId = instructionById(s);
    for (const task of tasks) {
      const spec = s.specs.find((x) => x.task_id === task)!;
      const family = FAMILIES.find((f) => f.name === spec.family)!;
      // A label pool of hundreds of words is cut to its first 20: fewer words can only make a guess more likely, so the bound stays an upper bound.
      const pools = Object.values(spec.pools).map((p) => p.slice(0, 20));
      let keys: string[][] = [[]];
      for (const pool of pools) keys = keys.flatMap((k) => pool.map((v) => [...k, v]));
      for (const r of instancesOf(s, task).filter((x) => x.split === 'test')) {
        const counts = new Map<string, number>();
        let possible = 0;
        for (const key of keys) {
          let out: string | undefined;
          try {
            out = family.output(key, r.input);
          } catch {
            out = undefined;
          }
          if (typeof out !== 'string') continue;
          possible++;
          counts.set(out, (counts.get(out) ?? 0) + 1);
        }
        const best = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]!;
        acc += best[0] === r.outputs[0] ? best[1] / possible : 0;
        chance += 1 / byId.get(r.instruction_id!)!.label_set!.length;
        n++;
      }
    }
    return { accuracy: acc / n, chance: chance / n };
  }

  it('leaves a solver that ignores the key parts at most at chance on the label-set tasks', () => {
    for (const seed of [0, 1]) {
      const s = generateSuite({ seed, trainPerTask: 20, testPerTask: 40, probePerTask: 0 });
      const { accuracy, chance } = keyBlindBest(s, s.set.tasks.filter((t) => t.label_set).map((t) => t.task_id));
      expect(accuracy).toBeLessThanOrEqual(chance + 0.02);
    }
    // With one fixed key per task the same solver is always right: nothing there requires reading the key parts.
    const fixed = generateSuite({ seed: 0, trainPerTask: 20, testPerTask: 40, probePerTask: 0, keyVariation: false });
    expect(keyBlindBest(fixed, fixed.stream.seen).accuracy).toBe(1);
  });

  it('gives every label word its own first letter, so copying a word starts with a byte no other label shares', () => {
    const words = [...FIRST_LABELS, ...SECOND_LABELS];
    expect(new Set(words.map((w) => w[0])).size).toBe(words.length);
  });

  it('varies key values per instance from large stream pools, and keeps held-out values out of the stream', () => {
    for (const seed of [0, 1, 2, 3]) {
      const s = generateSuite({ seed, trainPerTask: 50, testPerTask: 5, probePerTask: 0 });
      expect(keyVariation(s.set, s.stream.seen)).toEqual({ varying: 5, total: 5 });
      // Every task draws each label from a whole list of 10 words (100 label pairs), the lists disjoint.
      for (const id of ['sentiment-1', 'membership-1', 'membership-h1']) {
        const [first, second] = Object.values(s.specs.find((x) => x.task_id === id)!.pools).slice(-2);
        expect([...first].sort()).toEqual([...FIRST_LABELS].sort());
        expect([...second].sort()).toEqual([...SECOND_LABELS].sort());
      }
      // Held-out tasks ask classes that no seen task of their family asks; choice varies all three answer formats.
      for (const id of ['membership-1', 'choice-1', 'membership-h1', 'choice-h1']) expect(s.specs.find((x) => x.task_id === id)!.pools.category).toHaveLength(3);
      expect(s.specs.find((x) => x.task_id === 'choice-1')!.pools.format).toHaveLength(3);
      for (const held of s.specs.filter((x) => x.role === 'held_out')) {
        const family = FAMILIES.find((f) => f.name === held.family)!;
        for (const seen of s.specs.filter((x) => x.role === 'seen' && x.family === held.family)) {
          for (const part of family.parts.filter((p) => p.sharing !== 'shared'))
            expect(held.pools[part.name].filter((v) => seen.pools[part.name].includes(v)), `${held.task_id} vs ${seen.task_id} ${part.name}`).toEqual([]);
        }
      }
    }
    const fixed = generateSuite({ seed: 0, trainPerTask: 50, testPerTask: 5, probePerTask: 0, keyVariation: false });
    expect(keyVariation(fixed.set, fixed.stream.seen)).toEqual({ varying: 0, total: 5 });
    // The validity gate: the same run results pass on the varied suite and fail on the fixed one.
    const runs = { base: { seenAp: 0.4, heldOutV: 0.6 }, multitask: { heldOutV: 0.9 }, none: { seenAp: 0.2, heldOutV: 0.1 } };
    const varied = generateSuite({ seed: 0, trainPerTask: 50, testPerTask: 5, probePerTask: 0 });
    expect(validityGate({ ...runs, variation: keyVariation(varied.set, varied.stream.seen) }).pass).toBe(true);
    const gate = validityGate({ ...runs, variation: keyVariation(fixed.set, fixed.stream.seen) });
    expect(gate.pass).toBe(false);
    expect(gate.reason).toMatch(/key variation/);
  });

  it('makes probes that ask a test input with other key values and another answer', () => {
    const byId = instructionById(suite);
    const byKey = new Map(suite.set.instances.map((r) => [`${r.task_id}/${r.instance_id}`, r]));
    for (const p of suite.set.instances.filter((r) => r.split === 'probe')) {
      const original = byKey.get(`${p.task_id}/${p.probe_of}`)!;
      expect(original.split).toBe('test');
      expect(p.input).toBe(original.input);
      expect(p.outputs[0]).not.toBe(original.outputs[0]);
      const [pi, oi] = [byId.get(p.instruction_id!)!, byId.get(original.instruction_id!)!];
      expect(pi.text).not.toBe(oi.text);
      // Only the key parts changed: the texts outside the key spans are the same.
      const outside = (ins: typeof pi) => ins.key_spans.reduceRight((t, k) => t.slice(0, k.start) + '|' + t.slice(k.end), ins.text);
      expect(outside(pi)).toBe(outside(oi));
    }
  });

  it('covers every family in the mixture, with label words from every pool', () => {
    const rows = mixtureExamples({ seed: 3, size: 3000 });
    expect(new Set(rows.map((r) => r.family))).toEqual(new Set(['sentiment', 'membership', 'choice', 'extract', 'transform', 'length']));
    // The mixture teaches copying on the whole word list: held-out words are new to the stream, not to the base model.
    const mixed = new Set(rows.flatMap((r) => quoted(r.instruction)));
    for (const t of suite.set.tasks.filter((x) => x.task_id.startsWith('sentiment') || x.task_id.startsWith('membership'))) {
      const words = t.label_set!;
      expect(words.filter((w) => mixed.has(w)).length / words.length, t.task_id).toBeGreaterThan(0.9);
    }
  });

  it('with a label share, the mixture names a seeded part of each word list and the stream all of it', () => {
    const rows = mixtureExamples({ seed: 3, size: 3000, labelShare: 0.5 });
    const named = new Set(rows.flatMap((r) => (r.family === 'sentiment' || r.family === 'membership' ? quoted(r.instruction) : [])));
    const first = FIRST_LABELS.filter((w) => named.has(w)), second = SECOND_LABELS.filter((w) => named.has(w));
    expect([first.length, second.length]).toEqual([5, 5]);
    expect(mixtureExamples({ seed: 3, size: 3000, labelShare: 0.5 })).toEqual(rows);
    const other = new Set(mixtureExamples({ seed: 4, size: 3000, labelShare: 0.5 }).flatMap((r) => quoted(r.instruction)));
    expect(FIRST_LABELS.filter((w) => other.has(w))).not.toEqual(first);
    // The suite's seen and held-out label tasks still name every word, so the stream teaches the rest.
    const suiteWords = new Set(suite.set.instructions.flatMap((i) => i.label_set ?? []));
    for (const w of [...FIRST_LABELS, ...SECOND_LABELS]) expect(suiteWords.has(w), w).toBe(true);
    expect(() => mixtureExamples({ seed: 0, size: 10, labelShare: 0 })).toThrow(/labelShare must be in \(0, 1\]/);
  });

  it('rejects bad sizes, naming the option', () => {
    expect(() => generateSuite({ trainPerTask: 0 })).toThrow(InputError);
    expect(() => generateSuite({ trainPerTask: 0 })).toThrow(/trainPerTask/);
    expect(() => generateSuite({ testPerTask: -2 })).toThrow(/testPerTask must be a positive integer, got -2/);
    expect(() => generateSuite({ seenTasks: 1.5 })).toThrow(/seenTasks/);
    expect(() => generateSuite({ heldOutTasks: 0 })).toThrow(/heldOutTasks/);
    expect(() => generateSuite({ seed: -1 })).toThrow(/seed/);
    expect(() => generateSuite({ testPerTask: 5, probePerTask: 6 })).toThrow(/probePerTask \(6\) cannot exceed testPerTask \(5\)/);
    expect(() => mixtureExamples({ seed: 0, size: 0 })).toThrow(/size/);
    expect(() => generateSuite({ seenTasks: 1, heldOutTasks: 1, trainPerTask: 100_000, testPerTask: 1 })).toThrow(/distinct inputs/);
  });
});

describe('base model', () => {
  // A recipe far below the real ones: the cache and its atomicity, not the model, are under test.
  const tiny: Partial<BaseModelRecipe> = { hiddenSize: 32, layers: 1, heads: 2, kvHeads: 2, intermediateSize: 64, mixtureSize: 48, epochs: 1, batchSize: 16, warmupSteps: 0 };

  it('builds once, then reuses the cached folder; another seed is another build', async () => {
    const cacheDir = join(root, 'cache');
    const phases: string[] = [];
    const first = await buildBaseModel({ cacheDir, quick: true, seed: 1, threads: 1, recipe: tiny, onProgress: (p) => phases.push(p.phase) });
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

    const again = await buildBaseModel({ cacheDir, quick: true, seed: 1, threads: 1, recipe: tiny, onProgress: () => phases.push('again') });
    expect(again).toEqual({ ...first, reused: true });
    expect(phases).not.toContain('again');

    const other = await buildBaseModel({ cacheDir, quick: true, seed: 2, threads: 1, recipe: tiny });
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
    const bad = buildBaseModel({ cacheDir: join(file, 'cache'), seed: 1, threads: 1, recipe: tiny });
    await expect(bad).rejects.toThrow(KpigIOError);
    await expect(bad).rejects.toThrow(join(file, 'cache'));

    const dir = join(root, 'explicit');
    const built = await buildBaseModel({ dir, seed: 1, threads: 1, recipe: tiny });
    expect(built.dir).toBe(dir);
    await expect(buildBaseModel({ dir, seed: 2, threads: 1, recipe: tiny })).rejects.toThrow(/holds another base model/);
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(true);

    await expect(buildBaseModel({ cacheDir: root, seed: -1 })).rejects.toThrow(/seed/);
    await expect(buildBaseModel({ cacheDir: root, threads: 1.5 })).rejects.toThrow(/threads/);
    await expect(buildBaseModel({ cacheDir: root, recipe: { mixtureSize: 0 } })).rejects.toThrow(/recipe\.mixtureSize/);
    await expect(buildBaseModel({ cacheDir: root, recipe: { mixtureLabelShare: 1.5 } })).rejects.toThrow(/recipe\.mixtureLabelShare must be in \(0, 1\]/);
    await expect(buildBaseModel({ cacheDir: root, recipe: { hiddenSize: 30, heads: 4 } })).rejects.toThrow(/hiddenSize/);
  });
});
