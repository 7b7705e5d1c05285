/**
 * The task families of the synthetic suite. A family fixes a general description, an input
 * generator and the rule that computes the output; its key parts (label words, answer format,
 * length, which field to extract) are slots of the instruction. Two tasks of one family therefore
 * read alike and see the same kind of input, yet answer differently: a model that ignores the key
 * parts answers with another task's labels.
 *
 * Every output is a function of the input text and the key only (the `output` rule re-reads the
 * input), so a model can learn it in principle and a test can recompute it independently.
 */
import type { KeySpan, KeySpanKind } from '../data/taskset.js';
import type { Rng } from '../random/rng.js';
import {
  CATEGORIES,
  CATEGORY_NAMES,
  type Category,
  DAYS,
  FIRST_LABELS,
  NEGATIVE_ADJECTIVES,
  PERSON_NAMES,
  POSITIVE_ADJECTIVES,
  REVIEW_NOUNS,
  SECOND_LABELS,
} from './words.js';

export type FamilyName = 'sentiment' | 'membership' | 'choice' | 'extract' | 'transform' | 'length';

/** One key part of a family: the values its slot in the instruction can take, verbatim. */
export interface KeyPartDef {
  name: string;
  kind: KeySpanKind;
  values: readonly string[];
  /**
   * How the tasks of a suite share this part's values. `partitioned` (default): the family's tasks
   * get disjoint pools where there are enough values, so a held-out task's values were never
   * trained in the stream. `shared`: every task draws from all of `pool` (the part varies per
   * instance everywhere; it is what makes a key-blind answer no better than chance).
   */
  sharing?: 'partitioned' | 'shared';
  /** The values task pools draw from, when not all of `values` (the mixture still uses all). */
  pool?: readonly string[];
}

export interface Family {
  name: FamilyName;
  parts: readonly KeyPartDef[];
  /** The instruction: literal text, and between it the index of the key part filling that slot. */
  template: readonly (string | number)[];
  /** The closed output space of a task with this key, or null when it is open. */
  labelSet(key: readonly string[]): string[] | null;
  /**
   * A fresh input; only `choice` reads the key, to place one option of the asked category, and
   * the task's pools (`pools[p]`: the values part p draws from), to take the other options from
   * the other asked categories, so that which option answers depends on which category is asked.
   */
  input(rnd: Rng, key: readonly string[], pools?: readonly (readonly string[])[]): string;
  output(key: readonly string[], input: string): string;
}

const pick = <T>(items: readonly T[], rnd: Rng): T => items[Math.floor(rnd() * items.length)]!;

/** `k` distinct items in random order. */
function distinct<T>(items: readonly T[], k: number, rnd: Rng): T[] {
  const pool = [...items];
  const out: T[] = [];
  for (let i = 0; i < k; i++) out.push(pool.splice(Math.floor(rnd() * pool.length), 1)[0]!);
  return out;
}

/** Words of a text, punctuation dropped. */
const wordsOf = (text: string): string[] => text.split(/[^A-Za-z0-9]+/).filter((w) => w.length > 0);

const categoryOf = (word: string): Category | undefined =>
  CATEGORY_NAMES.find((c) => (CATEGORIES[c] as readonly string[]).includes(word));

/** Lower-case category words: the inputs of `transform` and `length`. */
const PLAIN_WORDS = CATEGORY_NAMES.filter((c) => c !== 'city').flatMap((c) => CATEGORIES[c]);

const sentiment: Family = {
  name: 'sentiment',
  parts: [
    { name: 'positive', kind: 'label', values: FIRST_LABELS, sharing: 'shared' },
    { name: 'negative', kind: 'label', values: SECOND_LABELS, sharing: 'shared' },
  ],
  template: ["Is the review positive or negative? Answer '", 0, "' if positive, '", 1, "' if negative."],
  labelSet: (key) => [key[0]!, key[1]!],
  input(rnd) {
    const adjectives = rnd() < 0.5 ? POSITIVE_ADJECTIVES : NEGATIVE_ADJECTIVES;
    const noun = pick(REVIEW_NOUNS, rnd);
    if (rnd() < 0.4) return `The ${noun} was ${pick(adjectives, rnd)}.`;
    const [a, b] = distinct(adjectives, 2, rnd);
    return `The ${noun} was ${a} and ${b}.`;
  },
  output(key, input) {
    const positive = wordsOf(input).some((w) => (POSITIVE_ADJECTIVES as readonly string[]).includes(w));
    return positive ? key[0]! : key[1]!;
  },
};

const membership: Family = {
  name: 'membership',
  parts: [
    { name: 'category', kind: 'entity', values: CATEGORY_NAMES },
    { name: 'affirmative', kind: 'label', values: FIRST_LABELS, sharing: 'shared' },
    { name: 'negative', kind: 'label', values: SECOND_LABELS, sharing: 'shared' },
  ],
  template: ['Does the list name any ', 0, "? Answer '", 1, "' if so, '", 2, "' if not."],
  labelSet: (key) => [key[1]!, key[2]!],
  // Three of the six categories: half the lists name the asked one, so both answers are common.
  input(rnd) {
    const cats = distinct(CATEGORY_NAMES, 3, rnd);
    return cats.map((c) => pick(CATEGORIES[c], rnd)).join(', ');
  },
  output(key, input) {
    const hit = wordsOf(input).some((w) => categoryOf(w) === key[0]);
    return hit ? key[1]! : key[2]!;
  },
};

/** The answer of `choice` for the option at index 0, 1, 2, per format; null: the option's text. */
const CHOICE_FORMATS: Readonly<Record<string, readonly string[] | null>> = {
  'the letter': ['A', 'B', 'C'],
  'the number': ['1', '2', '3'],
  'the roman numeral': ['I', 'II', 'III'],
  'the option text': null,
};

const choice: Family = {
  name: 'choice',
  parts: [
    { name: 'category', kind: 'entity', values: CATEGORY_NAMES },
    // Task pools keep to the formats with a closed label set, so every choice task has a V-score.
    { name: 'format', kind: 'format', values: Object.keys(CHOICE_FORMATS), pool: Object.keys(CHOICE_FORMATS).filter((f) => CHOICE_FORMATS[f] !== null), sharing: 'shared' },
  ],
  template: ['Which option is a kind of ', 0, '? Answer with ', 1, '.'],
  labelSet: (key) => (CHOICE_FORMATS[key[1]!] ? [...CHOICE_FORMATS[key[1]!]!] : null),
  input(rnd, key, pools) {
    const asked = (pools?.[0] ?? []).filter((c) => c !== key[0]) as Category[];
    const others = asked.length >= 2 ? distinct(asked, 2, rnd) : distinct(CATEGORY_NAMES.filter((c) => c !== key[0]), 2, rnd);
    const words = distinct([key[0] as Category, ...others], 3, rnd).map((c) => pick(CATEGORIES[c], rnd));
    return `(A) ${words[0]} (B) ${words[1]} (C) ${words[2]}`;
  },
  output(key, input) {
    const options = /^\(A\) (\S+) \(B\) (\S+) \(C\) (\S+)$/.exec(input)!.slice(1);
    const at = options.findIndex((w) => categoryOf(w) === key[0]);
    const labels = CHOICE_FORMATS[key[1]!];
    return labels ? labels[at]! : options[at]!;
  },
};

/** Which word list answers each `extract` entity. */
const ENTITY_WORDS: Readonly<Record<string, readonly string[]>> = {
  name: PERSON_NAMES,
  city: CATEGORIES.city,
  day: DAYS,
  color: CATEGORIES.color,
  animal: CATEGORIES.animal,
};

/** Word rewrites shared by `extract` and `transform`, so a format seen in one family carries to the other. */
const REWRITES: Readonly<Record<string, (word: string) => string>> = {
  'as it is': (w) => w,
  'in upper case': (w) => w.toUpperCase(),
  backwards: (w) => [...w].reverse().join(''),
  twice: (w) => `${w} ${w}`,
  'with dashes between letters': (w) => [...w].join('-'),
  'without its first letter': (w) => w.slice(1),
};

const extract: Family = {
  name: 'extract',
  parts: [
    { name: 'entity', kind: 'entity', values: Object.keys(ENTITY_WORDS) },
    { name: 'format', kind: 'format', values: ['as it is', 'in upper case', 'backwards'], sharing: 'shared' },
  ],
  template: ['Find the ', 0, ' in the sentence and write it ', 1, '.'],
  labelSet: () => null,
  // The fields move between sentence shapes, so their position never gives the answer away.
  input(rnd) {
    const name = pick(PERSON_NAMES, rnd), city = pick(CATEGORIES.city, rnd), day = pick(DAYS, rnd);
    const color = pick(CATEGORIES.color, rnd), animal = pick(CATEGORIES.animal, rnd);
    const shapes = [
      `${name} saw a ${color} ${animal} in ${city} on ${day}.`,
      `On ${day}, ${name} took a ${color} ${animal} to ${city}.`,
      `In ${city} a ${color} ${animal} met ${name} on ${day}.`,
    ];
    return pick(shapes, rnd);
  },
  output(key, input) {
    const word = wordsOf(input).find((w) => ENTITY_WORDS[key[0]!]!.includes(w))!;
    return REWRITES[key[1]!]!(word);
  },
};

const POSITIONS = ['first', 'second', 'third'];

const transform: Family = {
  name: 'transform',
  parts: [
    { name: 'position', kind: 'entity', values: POSITIONS, sharing: 'shared' },
    { name: 'format', kind: 'format', values: ['backwards', 'twice', 'in upper case', 'with dashes between letters', 'without its first letter'] },
  ],
  template: ['Write the ', 0, ' word ', 1, '.'],
  labelSet: () => null,
  input: (rnd) => distinct(PLAIN_WORDS, 3, rnd).join(' '),
  output(key, input) {
    const word = input.split(' ')[POSITIONS.indexOf(key[0]!)]!;
    return REWRITES[key[1]!]!(word);
  },
};

const length: Family = {
  name: 'length',
  parts: [
    { name: 'end', kind: 'format', values: ['first', 'last'], sharing: 'shared' },
    { name: 'count', kind: 'length', values: ['2', '3', '4', '5', '6'] },
  ],
  template: ['Copy the ', 0, ' ', 1, ' words of the input.'],
  labelSet: () => null,
  input: (rnd) => distinct(PLAIN_WORDS, 7, rnd).join(' '),
  output(key, input) {
    const words = input.split(' ');
    const n = Number(key[1]);
    return (key[0] === 'first' ? words.slice(0, n) : words.slice(words.length - n)).join(' ');
  },
};

/** Every family; the label-set families first. */
export const FAMILIES: readonly Family[] = [sentiment, membership, choice, extract, transform, length];

/**
 * The family of seen task i: the label-set families in turn, twice (so the stream meets each of
 * them again with other key values after it has learnt something else), then the generation ones.
 */
export const STREAM_FAMILY_ORDER: readonly FamilyName[] = ['sentiment', 'choice', 'membership', 'sentiment', 'choice', 'membership', 'extract', 'transform', 'length'];

/**
 * The family of held-out task j: the label-set families with a partitioned key part first (a
 * V-score is defined there), then the generation families. `sentiment` has no held-out task: its
 * only key parts are its label words, which every task shares.
 */
export const HELD_OUT_FAMILY_ORDER: readonly FamilyName[] = ['membership', 'choice', 'extract', 'transform', 'length'];

/** The family of that name. */
export const familyByName = (name: FamilyName): Family => FAMILIES.find((f) => f.name === name)!;

/**
 * The instruction of a family for a key, with the exact span of every key part.
 *
 * @example
 * const { text, key_spans } = renderInstruction(FAMILIES[0], ['good', 'bad']);
 * text.slice(key_spans[0].start, key_spans[0].end); // 'good'
 */
export function renderInstruction(family: Family, key: readonly string[]): { text: string; key_spans: KeySpan[] } {
  let text = '';
  const key_spans: KeySpan[] = [];
  for (const piece of family.template) {
    if (typeof piece === 'string') {
      text += piece;
      continue;
    }
    const value = key[piece]!;
    key_spans.push({ start: text.length, end: text.length + value.length, kind: family.parts[piece]!.kind });
    text += value;
  }
  return { text, key_spans };
}

/** Whether a key names two label parts alike (an instruction that cannot tell its answers apart). */
export function labelsClash(family: Family, key: readonly string[]): boolean {
  const labels = family.parts.map((p, i) => (p.kind === 'label' ? key[i] : null)).filter((v): v is string => v !== null);
  return new Set(labels).size < labels.length;
}
