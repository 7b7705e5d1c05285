/**
 * The key-part task suite: a stream of seen tasks and a set of held-out tasks drawn from the
 * families of families.ts, as a {@link TaskSet}; and the "general mixture" the base model is
 * trained on. Everything is a function of the seed (mulberry32 streams derived per purpose), so a
 * suite replays exactly on any machine.
 *
 * A task is a family with a pool of values per key part, and every instance draws its own key
 * from the pools: its instruction states that key and its output answers it, so within one task
 * the label words, options, format or target change from instance to instance and only a model
 * that reads the key parts can answer. Families come back in the stream with other pools, and a
 * held-out task's pool holds values (label words, formats, counts) that no seen task of its
 * family trains on. Probe instances ask a test input with other valid key values (docs/eval.md).
 */
import type { InstructionExample } from '../data/instructions.js';
import type { InstanceRecord, InstructionRecord, TaskRecord, TaskSet, TaskStream } from '../data/taskset.js';
import { InputError } from '../errors/index.js';
import { deriveSeed, mulberry32, shuffled, type Rng } from '../random/rng.js';
import { FAMILIES, HELD_OUT_FAMILY_ORDER, STREAM_FAMILY_ORDER, type Family, type FamilyName, familyByName, labelsClash, renderInstruction } from './families.js';

/**
 * Version of the generator's output: bump it whenever a word list, template, rule or draw order
 * changes, so that cached base models trained on older suites are not reused.
 */
export const SYNTH_VERSION = 3;

export interface SuiteOptions {
  /** Seed of every draw (default 0): a non-negative safe integer. */
  seed?: number;
  /** Tasks in the stream (default 5), families in the order of `STREAM_FAMILY_ORDER`. */
  seenTasks?: number;
  /** Held-out tasks (default 3), label-set families first. */
  heldOutTasks?: number;
  /** Train instances per task (default 200). */
  trainPerTask?: number;
  /** Test instances per task (default 100); their inputs never occur in the task's train split. */
  testPerTask?: number;
  /** Counterfactual probes per task (default min(50, `testPerTask`)): the first test inputs, asked with other key values. */
  probePerTask?: number;
  /**
   * Key values vary per instance inside a task (default true). False gives every task one fixed
   * key, as a suite where nothing rewards reading the key parts (the validity gate should fail on it).
   */
  keyVariation?: boolean;
  /** Name of the stream (default 'synth'). */
  streamName?: string;
}

/** The sizes a suite is built with, every option resolved. */
export type ResolvedSuiteOptions = Required<SuiteOptions>;

export const SUITE_DEFAULTS: ResolvedSuiteOptions = {
  seed: 0,
  seenTasks: 5,
  heldOutTasks: 3,
  trainPerTask: 200,
  testPerTask: 100,
  probePerTask: 50,
  keyVariation: true,
  streamName: 'synth',
};

/** How one task of a suite was made. */
export interface SynthTaskSpec {
  task_id: string;
  family: FamilyName;
  /** Key-part name → the values its instances draw from, as they stand in the instruction. */
  pools: Record<string, string[]>;
  role: 'seen' | 'held_out';
}

export interface SynthSuite {
  /** Seen tasks first (in stream order), then held-out ones; instructions; train, test and probe instances. */
  set: TaskSet;
  stream: TaskStream;
  specs: SynthTaskSpec[];
  options: ResolvedSuiteOptions;
}

/** The seed of one named stream of draws of the suite: its own namespace, then the suite's seed and the labels. */
function streamSeed(seed: number, ...labels: Array<string | number>): number {
  return deriveSeed(0, 'kpig-synth', seed, ...labels);
}

function positiveInt(where: string, name: string, value: number, min = 1): number {
  if (!Number.isSafeInteger(value) || value < min) throw new InputError(`${where}: ${name} must be ${min === 0 ? 'a non-negative' : 'a positive'} integer, got ${value}`);
  return value;
}

function checkSeed(where: string, seed: number): number {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new InputError(`${where}: seed must be a non-negative integer, got ${seed}`);
  return seed;
}

/**
 * The options with defaults filled in and every size checked.
 *
 * @throws InputError naming the first option that is not a positive integer (or a bad seed)
 * @example
 * resolveSuiteOptions({ seenTasks: 3 }).trainPerTask; // 200
 */
export function resolveSuiteOptions(options: SuiteOptions = {}): ResolvedSuiteOptions {
  const o = { ...SUITE_DEFAULTS };
  // An option given as undefined keeps its default, as if it were left out.
  for (const [name, value] of Object.entries(options)) if (value !== undefined) Object.assign(o, { [name]: value });
  // Probes reuse test inputs: without an explicit count, a small test split caps them.
  if (options.probePerTask === undefined && Number.isSafeInteger(o.testPerTask)) o.probePerTask = Math.min(o.probePerTask, o.testPerTask);
  const where = 'synth suite';
  checkSeed(where, o.seed);
  for (const name of ['seenTasks', 'heldOutTasks', 'trainPerTask', 'testPerTask'] as const) positiveInt(where, name, o[name]);
  positiveInt(where, 'probePerTask', o.probePerTask, 0);
  if (o.probePerTask > o.testPerTask) throw new InputError(`${where}: probePerTask (${o.probePerTask}) cannot exceed testPerTask (${o.testPerTask}): probes reuse test inputs`);
  if (typeof o.keyVariation !== 'boolean') throw new InputError(`${where}: keyVariation must be true or false`);
  if (typeof o.streamName !== 'string' || o.streamName.length === 0) throw new InputError(`${where}: streamName must be a non-empty string`);
  return o;
}

interface TaskPlan {
  family: Family;
  role: 'seen' | 'held_out';
  task_id: string;
  /** Per key part (family order), the values the task's instances draw from. */
  pools: string[][];
}

/**
 * The tasks of a suite and their pools. A partitioned part's values are shuffled per family and
 * value list; every held-out task of the family using the list takes its own chunk of ⌊values / (held-out tasks using it + 1)⌋
 * from the back, and the seen tasks share all the rest, so a held-out task's values are never
 * trained in the stream, and a seen task draws from every value the stream has. Two parts of one
 * task on the same list share a pool.
 * A shared part gives every task all of its values. Without key variation each pool keeps its
 * first value only (label parts their first two distinct values, one each).
 */
function planTasks(o: ResolvedSuiteOptions): TaskPlan[] {
  const seenFamilies = Array.from({ length: o.seenTasks }, (_, i) => STREAM_FAMILY_ORDER[i % STREAM_FAMILY_ORDER.length]!);
  const heldFamilies = Array.from({ length: o.heldOutTasks }, (_, j) => HELD_OUT_FAMILY_ORDER[j % HELD_OUT_FAMILY_ORDER.length]!);
  const occurrence = new Map<string, number>();
  const tasks = [...seenFamilies.map((f) => [f, 'seen'] as const), ...heldFamilies.map((f) => [f, 'held_out'] as const)].map(([name, role]) => {
    const tag = `${role}:${name}`;
    const index = occurrence.get(tag) ?? 0;
    occurrence.set(tag, index + 1);
    return { family: familyByName(name), role, task_id: role === 'seen' ? `${name}-${index + 1}` : `${name}-h${index + 1}` };
  });
  const listOf = (part: Family['parts'][number]) => part.pool ?? part.values;
  const listKey = (family: Family, values: readonly string[]) => `${family.name}\u0000${values.join('\u0000')}`;
  // Per value list, the tasks that partition it, in order: seen ones, then held-out ones.
  const users = new Map<string, { seen: string[]; held: string[] }>();
  for (const t of tasks)
    for (const part of t.family.parts) {
      if (part.sharing === 'shared') continue;
      const key = listKey(t.family, listOf(part));
      const u = users.get(key) ?? { seen: [], held: [] };
      const side = t.role === 'seen' ? u.seen : u.held;
      if (!side.includes(t.task_id)) side.push(t.task_id);
      users.set(key, u);
    }
  return tasks.map((t) => {
    const pools = t.family.parts.map((part) => {
      const values = listOf(part);
      const order = shuffled(values, mulberry32(streamSeed(o.seed, 'pool', listKey(t.family, values))));
      if (part.sharing === 'shared') return order;
      const u = users.get(listKey(t.family, values))!;
      // Two label parts of a task draw distinct words from one pool, so a label pool keeps at least two.
      const per = Math.max(part.kind === 'label' ? 2 : 1, Math.floor(order.length / (u.held.length + 1)));
      const heldOut = order.length - u.held.length * per >= per ? u.held.length * per : 0;
      if (t.role === 'seen') return heldOut > 0 ? order.slice(0, order.length - heldOut) : order;
      const k = u.held.indexOf(t.task_id);
      return heldOut > 0 ? order.slice(order.length - (k + 1) * per, order.length - k * per) : order.slice(0, per);
    });
    if (!o.keyVariation) {
      // One fixed key: each part its first value, label parts distinct values of their pool.
      const used = new Set<string>();
      return {
        ...t,
        pools: pools.map((pool, p) => {
          const v = t.family.parts[p]!.kind === 'label' ? (pool.find((x) => !used.has(x)) ?? pool[0]!) : pool[0]!;
          used.add(v);
          return [v];
        }),
      };
    }
    return { ...t, pools };
  });
}

const pickFrom = <T>(items: readonly T[], rnd: Rng): T => items[Math.floor(rnd() * items.length)]!;

/** A key drawn from the pools: one value per part, redrawn while two label parts name the same word. */
function drawKey(family: Family, pools: readonly (readonly string[])[], rnd: Rng): string[] {
  for (;;) {
    const key = pools.map((pool) => pickFrom(pool, rnd));
    if (!labelsClash(family, key)) return key;
  }
}

/** `n` distinct inputs (with their keys) that `taken` does not hold yet (they are added to it). */
function drawInstances(plan: TaskPlan, n: number, taken: Set<string>, rnd: Rng): { key: string[]; input: string }[] {
  const out: { key: string[]; input: string }[] = [];
  // A family's input space is large (hundreds to millions); many misses in a row mean it is used up.
  let misses = 0;
  while (out.length < n) {
    const key = drawKey(plan.family, plan.pools, rnd);
    const input = plan.family.input(rnd, key, plan.pools);
    if (taken.has(input)) {
      if (++misses > 10_000) {
        throw new InputError(`synth suite: task '${plan.task_id}' cannot get ${n} more distinct inputs after ${taken.size}; ask for fewer instances per task`);
      }
      continue;
    }
    misses = 0;
    taken.add(input);
    out.push({ key, input });
  }
  return out;
}

/**
 * The key of a probe: every part that has another value takes one (from the task's pool, or the
 * family's values when the pool has just one), redrawn until the rule gives a defined answer that
 * differs from the instance's own; null when no draw does.
 */
function probeKey(plan: TaskPlan, key: readonly string[], input: string, rnd: Rng): string[] | null {
  const answer = plan.family.output(key, input);
  for (let attempt = 0; attempt < 200; attempt++) {
    const next = plan.family.parts.map((part, p) => {
      const pool = plan.pools[p]!.length > 1 ? plan.pools[p]! : (part.pool ?? part.values);
      const others = pool.filter((v) => v !== key[p]);
      return others.length ? pickFrom(others, rnd) : key[p]!;
    });
    if (labelsClash(plan.family, next)) continue;
    let out: string | undefined;
    try {
      out = plan.family.output(next, input);
    } catch {
      out = undefined;
    }
    if (typeof out === 'string' && out.length > 0 && out !== answer) return next;
  }
  return null;
}

/**
 * Generates the key-part task suite: `seenTasks` tasks forming one stream, `heldOutTasks` held-out
 * tasks, each with `trainPerTask` + `testPerTask` instances whose key is drawn per instance from
 * the task's pools, whose instruction (exact key spans, its own label set) states that key and
 * whose output follows from the input and the key by the family's rule; plus `probePerTask`
 * probes per task. Identical options give an identical suite.
 *
 * @throws InputError when a size is not a positive integer (naming the option) or when a family
 *   has too few inputs for the sizes asked
 * @example
 * const { set, stream } = generateSuite({ seed: 7, seenTasks: 4, heldOutTasks: 2 });
 * await writeTaskSet('tasks/synth', set);
 * console.log(stream.seen, stream.held_out);
 */
export function generateSuite(options: SuiteOptions = {}): SynthSuite {
  const o = resolveSuiteOptions(options);
  const tasks: TaskRecord[] = [];
  const instructions: InstructionRecord[] = [];
  const instances: InstanceRecord[] = [];
  const specs: SynthTaskSpec[] = [];
  for (const plan of planTasks(o)) {
    const { family, task_id } = plan;
    const byText = new Map<string, InstructionRecord>();
    // One instruction per distinct key: `<task>/seed` for the first, `<task>/key-<n>` after it.
    const instructionOf = (key: readonly string[], probe: number | null): InstructionRecord => {
      const { text, key_spans } = renderInstruction(family, key);
      if (probe === null && byText.has(text)) return byText.get(text)!;
      const instruction_id = probe !== null ? `${task_id}/probe-${probe}` : byText.size === 0 ? `${task_id}/seed` : `${task_id}/key-${byText.size}`;
      const record: InstructionRecord = { task_id, instruction_id, text, key_spans, origin: 'seed', key_source: 'explicit', parent_id: null, label_set: family.labelSet(key) };
      if (probe === null) byText.set(text, record);
      instructions.push(record);
      return record;
    };
    const rnd = mulberry32(streamSeed(o.seed, 'instances', task_id));
    const taken = new Set<string>();
    const train = drawInstances(plan, o.trainPerTask, taken, rnd);
    const test = drawInstances(plan, o.testPerTask, taken, rnd);
    const digits = String(Math.max(o.trainPerTask, o.testPerTask) - 1).length;
    const id = (split: string, i: number) => `${split}-${String(i).padStart(digits, '0')}`;
    for (const [split, drawn] of [['train', train], ['test', test]] as const) {
      drawn.forEach(({ key, input }, i) =>
        instances.push({ task_id, instance_id: id(split, i), split, input, outputs: [family.output(key, input)], instruction_id: instructionOf(key, null).instruction_id }),
      );
    }
    const probeRnd = mulberry32(streamSeed(o.seed, 'probes', task_id));
    for (let i = 0; i < o.probePerTask; i++) {
      const { key, input } = test[i]!;
      const next = probeKey(plan, key, input, probeRnd);
      if (!next) continue;
      instances.push({
        task_id,
        instance_id: id('probe', i),
        split: 'probe',
        input,
        outputs: [family.output(next, input)],
        instruction_id: instructionOf(next, i).instruction_id,
        probe_of: id('test', i),
      });
    }
    const labelSets = [...byText.values()].map((r) => r.label_set ?? null);
    const union = labelSets.every((l) => l !== null) ? [...new Set(labelSets.flatMap((l) => l!))] : null;
    tasks.push({ task_id, kind: union ? 'classification' : 'generation', label_set: union, source: 'synth', categories: [family.name] });
    specs.push({ task_id, family: family.name, pools: Object.fromEntries(family.parts.map((p, i) => [p.name, plan.pools[i]!])), role: plan.role });
  }
  // Tasks first in stream order, then their instructions and instances in task order.
  const stream: TaskStream = {
    name: o.streamName,
    seen: specs.filter((s) => s.role === 'seen').map((s) => s.task_id),
    held_out: specs.filter((s) => s.role === 'held_out').map((s) => s.task_id),
  };
  return { set: { tasks, instructions, instances, streams: [stream] }, stream, specs, options: o };
}

/** A row of the general mixture, with the family it was drawn from. */
export interface MixtureExample extends InstructionExample {
  family: FamilyName;
}

/**
 * The general mixture a base model learns instruction following from: `size` rows, each from a
 * family drawn uniformly, each key part's value drawn uniformly among all of its values (two label
 * parts never alike), and a fresh input. It knows every class and format, as a pretrained model
 * knows the words of a new label set; the suite's held-out tasks are new to the stream, not to the
 * language. With `labelShare` below 1, each label slot draws from a seeded share of its word list
 * only (at least two words): the other label words are learnt in the stream, not before it.
 *
 * @throws InputError for a bad size, seed or share
 * @example
 * const rows = mixtureExamples({ seed: 0, size: 4000 });
 */
export function mixtureExamples(options: { seed: number; size: number; labelShare?: number }): MixtureExample[] {
  const where = 'synth mixture';
  const seed = checkSeed(where, options.seed);
  const size = positiveInt(where, 'size', options.size);
  const share = options.labelShare ?? 1;
  if (!(share > 0 && share <= 1)) throw new InputError(`${where}: labelShare must be in (0, 1], got ${share}`);
  const known = mixtureLabelWords(seed, share);
  const rnd = mulberry32(streamSeed(seed, 'mixture'));
  const rows: MixtureExample[] = [];
  for (let i = 0; i < size; i++) {
    const family = FAMILIES[Math.floor(rnd() * FAMILIES.length)]!;
    const key = drawKey(family, family.parts.map((p) => (p.kind === 'label' ? known.get(p.values)! : p.values)), rnd);
    const input = family.input(rnd, key);
    rows.push({ family: family.name, instruction: renderInstruction(family, key).text, input, output: family.output(key, input) });
  }
  return rows;
}

/**
 * The label words the mixture uses, per word list: all of them, or with `share` below 1 a seeded
 * subset of ⌈share · n⌉ (at least 2) of each list.
 *
 * @example
 * mixtureLabelWords(0, 0.5).get(FIRST_LABELS); // five of the ten first-label words
 */
export function mixtureLabelWords(seed: number, share: number): Map<readonly string[], readonly string[]> {
  const out = new Map<readonly string[], readonly string[]>();
  for (const family of FAMILIES)
    for (const p of family.parts) {
      if (p.kind !== 'label' || out.has(p.values)) continue;
      const n = share >= 1 ? p.values.length : Math.max(2, Math.ceil(share * p.values.length));
      out.set(p.values, n === p.values.length ? p.values : shuffled(p.values, mulberry32(streamSeed(seed, 'mixture-labels', out.size))).slice(0, n));
    }
  return out;
}
