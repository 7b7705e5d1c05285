/**
 * The key-part task suite: a stream of seen tasks and a set of held-out tasks drawn from the
 * families of families.ts, as a {@link TaskSet}; and the "general mixture" the base model is
 * trained on. Everything is a function of the seed (mulberry32 streams derived per purpose), so a
 * suite replays exactly on any machine.
 *
 * Held-out tasks recombine a family's general description with key-part values that no seen task
 * of that family uses, in any key part; the mixture covers every value of every family but never
 * the exact key of a seen or held-out task.
 */
import type { InstructionExample } from '../data/instructions.js';
import type { InstanceRecord, InstructionRecord, TaskRecord, TaskSet, TaskStream } from '../data/taskset.js';
import { InputError } from '../errors/index.js';
import { deriveSeed, mulberry32, shuffled } from '../random/rng.js';
import { FAMILIES, type Family, type FamilyName, allKeys, renderInstruction, taskIdOf } from './families.js';

/**
 * Version of the generator's output: bump it whenever a word list, template, rule or draw order
 * changes, so that cached base models trained on older suites are not reused.
 */
export const SYNTH_VERSION = 1;

export interface SuiteOptions {
  /** Seed of every draw (default 0): a non-negative safe integer. */
  seed?: number;
  /** Tasks in the stream (default 5), from the families in order. */
  seenTasks?: number;
  /** Held-out tasks (default 3), label-set families first. */
  heldOutTasks?: number;
  /** Train instances per task (default 200). */
  trainPerTask?: number;
  /** Test instances per task (default 50); their inputs never occur in the task's train split. */
  testPerTask?: number;
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
  testPerTask: 50,
  streamName: 'synth',
};

/** How one task of a suite was made. */
export interface SynthTaskSpec {
  task_id: string;
  family: FamilyName;
  /** Key-part name → value, as it stands in the instruction. */
  key: Record<string, string>;
  role: 'seen' | 'held_out';
}

export interface SynthSuite {
  /** Seen tasks first (in stream order), then held-out ones; seed instructions; train and test instances. */
  set: TaskSet;
  stream: TaskStream;
  specs: SynthTaskSpec[];
  options: ResolvedSuiteOptions;
}

/** The seed of one named stream of draws of the suite: its own namespace, then the suite's seed and the labels. */
function streamSeed(seed: number, ...labels: Array<string | number>): number {
  return deriveSeed(0, 'kpig-synth', seed, ...labels);
}

function positiveInt(where: string, name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new InputError(`${where}: ${name} must be a positive integer, got ${value}`);
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
  const where = 'synth suite';
  checkSeed(where, o.seed);
  for (const name of ['seenTasks', 'heldOutTasks', 'trainPerTask', 'testPerTask'] as const) positiveInt(where, name, o[name]);
  if (typeof o.streamName !== 'string' || o.streamName.length === 0) throw new InputError(`${where}: streamName must be a non-empty string`);
  return o;
}

/** The keys of a family, in a seeded order; label-set keys first when the family has both kinds. */
function keyOrder(family: Family, seed: number): string[][] {
  const keys = shuffled(allKeys(family), mulberry32(streamSeed(seed, 'keys', family.name)));
  return [...keys.filter((k) => family.labelSet(k) !== null), ...keys.filter((k) => family.labelSet(k) === null)];
}

/**
 * Picks the key of every seen and held-out task. A held-out key differs from every seen key of its
 * family in every key part, so no label word, format, length or entity of it was trained on.
 */
function pickKeys(o: ResolvedSuiteOptions): { family: Family; key: string[]; role: 'seen' | 'held_out' }[] {
  const orders = new Map(FAMILIES.map((f) => [f.name, keyOrder(f, o.seed)]));
  const seenKeys = new Map<FamilyName, string[][]>(FAMILIES.map((f) => [f.name, []]));
  const picks: { family: Family; key: string[]; role: 'seen' | 'held_out' }[] = [];
  const take = (family: Family, role: 'seen' | 'held_out', accept: (k: string[]) => boolean, index: number) => {
    const order = orders.get(family.name)!;
    const at = order.findIndex(accept);
    if (at < 0) {
      throw new InputError(
        `synth suite: no key of family '${family.name}' is left for ${role === 'seen' ? 'seen' : 'held-out'} task ${index + 1} ` +
          `(its key parts have ${family.parts.map((p) => `${p.values.length} ${p.name} values`).join(', ')}); ask for fewer tasks`,
      );
    }
    const [key] = order.splice(at, 1);
    picks.push({ family, key: key!, role });
    return key!;
  };
  for (let i = 0; i < o.seenTasks; i++) {
    const family = FAMILIES[i % FAMILIES.length]!;
    seenKeys.get(family.name)!.push(take(family, 'seen', () => true, i));
  }
  for (let j = 0; j < o.heldOutTasks; j++) {
    const family = FAMILIES[j % FAMILIES.length]!;
    const seen = seenKeys.get(family.name)!;
    take(family, 'held_out', (k) => seen.every((s) => s.every((v, p) => v !== k[p])), j);
  }
  return picks;
}

/** `n` distinct inputs of a family that `taken` does not hold yet (they are added to it). */
function drawInputs(family: Family, key: readonly string[], n: number, taken: Set<string>, rnd: () => number, taskId: string): string[] {
  const out: string[] = [];
  // A family's input space is large (hundreds to millions); many misses in a row mean it is used up.
  let misses = 0;
  while (out.length < n) {
    const input = family.input(rnd, key);
    if (taken.has(input)) {
      if (++misses > 10_000) {
        throw new InputError(`synth suite: task '${taskId}' cannot get ${n} more distinct inputs after ${taken.size}; ask for fewer instances per task`);
      }
      continue;
    }
    misses = 0;
    taken.add(input);
    out.push(input);
  }
  return out;
}

/**
 * Generates the key-part task suite: `seenTasks` tasks forming one stream, `heldOutTasks` held-out
 * tasks, each with its seed instruction (exact key spans) and `trainPerTask` + `testPerTask`
 * instances whose output follows from the input and the key parts by the family's rule.
 * Identical options give an identical suite.
 *
 * @throws InputError when a size is not a positive integer (naming the option) or when a family
 *   has too few key values or inputs for the sizes asked
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
  for (const { family, key, role } of pickKeys(o)) {
    const task_id = taskIdOf(family, key);
    const labels = family.labelSet(key);
    tasks.push({ task_id, kind: labels ? 'classification' : 'generation', label_set: labels, source: 'synth', categories: [family.name] });
    const { text, key_spans } = renderInstruction(family, key);
    instructions.push({ task_id, instruction_id: `${task_id}/seed`, text, key_spans, origin: 'seed', key_source: 'explicit', parent_id: null });
    const rnd = mulberry32(streamSeed(o.seed, 'instances', task_id));
    const taken = new Set<string>();
    const train = drawInputs(family, key, o.trainPerTask, taken, rnd, task_id);
    const test = drawInputs(family, key, o.testPerTask, taken, rnd, task_id);
    const digits = String(Math.max(o.trainPerTask, o.testPerTask) - 1).length;
    for (const [split, inputs] of [['train', train], ['test', test]] as const) {
      inputs.forEach((input, i) =>
        instances.push({ task_id, instance_id: `${split}-${String(i).padStart(digits, '0')}`, split, input, outputs: [family.output(key, input)] }),
      );
    }
    specs.push({ task_id, family: family.name, key: Object.fromEntries(family.parts.map((p, i) => [p.name, key[i]!])), role });
  }
  const stream: TaskStream = {
    name: o.streamName,
    seen: specs.filter((s) => s.role === 'seen').map((s) => s.task_id),
    held_out: specs.filter((s) => s.role === 'held_out').map((s) => s.task_id),
  };
  return { set: { tasks, instructions, instances, streams: [stream] }, stream, specs, options: o };
}

/** A row of the general mixture, with the task it was drawn from. */
export interface MixtureExample extends InstructionExample {
  task_id: string;
}

/**
 * The general mixture a base model learns instruction following from: `size` rows, each from a
 * family drawn uniformly, a key drawn uniformly among the family's keys that are not in `exclude`
 * (the task ids of a suite), and a fresh input.
 *
 * @throws InputError for a bad size or seed, or when `exclude` leaves a family no key
 * @example
 * const suite = generateSuite({ seed: 0 });
 * const rows = mixtureExamples({ seed: 0, size: 4000, exclude: suite.set.tasks.map((t) => t.task_id) });
 */
export function mixtureExamples(options: { seed: number; size: number; exclude?: readonly string[] }): MixtureExample[] {
  const where = 'synth mixture';
  const seed = checkSeed(where, options.seed);
  const size = positiveInt(where, 'size', options.size);
  const exclude = new Set(options.exclude ?? []);
  const pools = FAMILIES.map((family) => {
    const keys = allKeys(family).filter((k) => !exclude.has(taskIdOf(family, k)));
    if (keys.length === 0) throw new InputError(`${where}: every key of family '${family.name}' is excluded`);
    return { family, keys };
  });
  const rnd = mulberry32(streamSeed(seed, 'mixture'));
  const rows: MixtureExample[] = [];
  for (let i = 0; i < size; i++) {
    const { family, keys } = pools[Math.floor(rnd() * pools.length)]!;
    const key = keys[Math.floor(rnd() * keys.length)]!;
    const input = family.input(rnd, key);
    rows.push({ task_id: taskIdOf(family, key), instruction: renderInstruction(family, key).text, input, output: family.output(key, input) });
  }
  return rows;
}
