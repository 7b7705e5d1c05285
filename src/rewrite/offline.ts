/**
 * The offline rewriter (the default): deterministic, rule-based, no network. It edits only the
 * general description around the key parts, which are carried over character for character, so its
 * variants always keep their key parts. Every choice (which paraphrase, which added sentence) is a
 * hash of (run seed, task, kind, index): the same inputs give the same variants on every machine.
 *
 *   breadth      — paraphrases the general wording ("Your task is to" → "Your job is to");
 *   concretizing — makes the description more specific and adds an example input from the task;
 *   reasoning    — asks for step-by-step thought before the (unchanged) final answer;
 *   constraint   — adds an output constraint the gold outputs already satisfy, stored as a key
 *                  part of kind `format` because it decides the form of the answer.
 */
import { createHash } from 'node:crypto';
import type { KeySpan } from '../data/taskset.js';
import type { RewriteDraft, RewriteRequest, Rewriter } from './variant.js';

/** A pick among `n` options that depends only on the labels. */
function choose(n: number, ...labels: (string | number)[]): number {
  return createHash('sha256').update(labels.join('\u0000')).digest().readUInt32BE(0) % n;
}

// General-wording paraphrases: pattern → alternatives. Patterns are matched case-insensitively and
// a capital first letter is kept.
const BREADTH: [RegExp, string[]][] = [
  [/\bin this task,? you are given\b/giu, ['you will be shown', 'each example gives you', 'you receive']],
  [/\bin this task,? you will be given\b/giu, ['you will be shown', 'you receive']],
  [/\byour (?:task|job) is to\b/giu, ['you need to', 'what you have to do is', 'the aim is to']],
  [/\byou have to\b/giu, ['you need to', 'you must']],
  [/\byou must\b/giu, ['you have to', 'you need to']],
  [/\byou are supposed to\b/giu, ['you should', 'you are expected to']],
  [/\byou are given\b/giu, ['you receive', 'you get', 'you will be shown']],
  [/(?<=^|[.!?]\s+)given (a|an|the|two|such)\b/giu, ['when you receive $1', 'provided with $1']],
  [/\bdetermine\b/giu, ['work out', 'figure out']],
  [/\bidentify\b/giu, ['recognise', 'pin down']],
  [/\bgenerate\b/giu, ['produce', 'come up with']],
  [/\bprovide\b/giu, ['give', 'supply']],
  [/\bclassify\b/giu, ['sort', 'categorise']],
  [/\bbased on\b/giu, ['according to', 'going by']],
  [/\bdepending on\b/giu, ['according to', 'based on']],
  [/\busually\b/giu, ['typically', 'generally']],
  [/\bmay\b/giu, ['might', 'can']],
  [/\bshould be\b/giu, ['needs to be', 'ought to be']],
  [/\bthe goal is to\b/giu, ['the aim is to', 'what you need to do is']],
];

const CONCRETE: [RegExp, string][] = [
  [/\ba sentence\b/giu, 'a single sentence'],
  [/\ba question\b/giu, 'a single question'],
  [/\ba tweet\b/giu, 'a tweet (a short social-media post)'],
  [/\bthe input\b/giu, 'the input text'],
  [/\ba pair of words\b/giu, 'a pair of words (two single words)'],
];

const REASONING = [
  'Before answering, think step by step about which details of the input decide the answer, then write only the final answer.',
  'Work through the input carefully and reason about it first; the response itself should contain just the answer.',
  'First reason about what the input says and what the task asks, and only then give the answer.',
];

const CONSTRAINT_LABEL = [
  'Give the answer exactly as it is written above, with nothing before or after it.',
  'Do not explain your choice; the response is the answer alone.',
];

const CONSTRAINT_OPEN = [
  'Do not add an explanation or any text besides the answer.',
  'Write the answer as plain text, without lists or headings.',
];

function capitalise(template: string, match: string): string {
  return match[0] === match[0].toUpperCase() && match[0] !== match[0].toLowerCase() ? template[0].toUpperCase() + template.slice(1) : template;
}

/** The seed cut into general and key pieces, in order. */
interface Piece {
  text: string;
  key?: KeySpan['kind'] | 'key';
}

function pieces(text: string, spans: readonly KeySpan[]): Piece[] {
  const out: Piece[] = [];
  let at = 0;
  for (const s of [...spans].sort((a, b) => a.start - b.start)) {
    if (s.start > at) out.push({ text: text.slice(at, s.start) });
    out.push({ text: text.slice(s.start, s.end), key: s.kind ?? 'key' });
    at = s.end;
  }
  if (at < text.length) out.push({ text: text.slice(at) });
  return out;
}

/** Joins pieces back into text and the spans of the key pieces. */
function assemble(parts: Piece[]): RewriteDraft {
  let text = '';
  const spans: KeySpan[] = [];
  for (const p of parts) {
    if (p.key) {
      const span: KeySpan = { start: text.length, end: text.length + p.text.length };
      if (p.key !== 'key') span.kind = p.key;
      spans.push(span);
    }
    text += p.text;
  }
  return { text, spans };
}

/**
 * Applies the rules to the general pieces in one pass over the original wording (so one rule's
 * output is never rewritten by another); `pick` chooses among a rule's alternatives.
 */
function rewriteGeneral(parts: Piece[], rules: [RegExp, string[]][], pick: (rule: number, n: number) => number): { parts: Piece[]; changed: boolean } {
  let changed = false;
  const out = parts.map((p) => {
    if (p.key) return p;
    const hits = rules
      .flatMap(([re, alternatives], r) => [...p.text.matchAll(re)].map((m) => ({ m, r, alternatives })))
      .sort((a, b) => a.m.index - b.m.index || a.r - b.r);
    let text = '';
    let at = 0;
    for (const { m, r, alternatives } of hits) {
      if (m.index < at) continue;
      const alt = alternatives[pick(r, alternatives.length)].replace(/\$(\d)/g, (_, g) => m[Number(g)] ?? '');
      text += p.text.slice(at, m.index) + capitalise(alt, m[0]);
      at = m.index + m[0].length;
      changed = true;
    }
    return { text: text + p.text.slice(at) };
  });
  return { parts: out, changed };
}

function snippet(input: string): string {
  const flat = input.replace(/\s+/g, ' ').replace(/"/g, "'").trim();
  if (flat.length <= 80) return flat;
  const cut = flat.slice(0, 80);
  return `${cut.slice(0, Math.max(cut.lastIndexOf(' '), 40))} …`;
}

/** Appends a sentence after the last piece, with one space between. */
function append(parts: Piece[], sentence: string, key?: Piece['key']): Piece[] {
  const last = parts[parts.length - 1];
  const sep = last && !/\s$/.test(last.text) ? ' ' : '';
  return [...parts, { text: sep }, { text: sentence, key }];
}

/**
 * The offline rewriter. Deterministic for a given request and run seed; needs no network.
 *
 * @example
 * const { set: diverse } = await diversify(set, offlineRewriter(), { perKind: 2, seed: 1 });
 */
export function offlineRewriter(): Rewriter {
  return {
    name: 'offline',
    async rewrite(req: RewriteRequest): Promise<RewriteDraft> {
      // Choices hash everything but the index, which then shifts them, so variants 0..k-1 differ.
      const labels = [req.runSeed, req.task.task_id, req.kind];
      const base = pieces(req.seed.text, req.seed.key_spans);
      const labelSet = req.seed.label_set ?? req.task.label_set;
      const closed = labelSet !== null;
      switch (req.kind) {
        case 'breadth': {
          const { parts, changed } = rewriteGeneral(base, BREADTH, (r, n) => (choose(n, ...labels, r) + req.index) % n);
          return assemble(changed ? parts : [{ text: 'Here is what to do. ' }, ...parts]);
        }
        case 'concretizing': {
          const { parts } = rewriteGeneral(base, CONCRETE.map(([re, s]) => [re, [s]] as [RegExp, string[]]), () => 0);
          const examples = req.task.examples ?? [];
          const space = closed
            ? `There are exactly ${labelSet!.length} possible answers, all named above.`
            : 'There is no fixed list of answers; write one that fits the input.';
          let example = 'Work from the exact wording of the input you are given, including its punctuation.';
          if (examples.length) {
            const quoted = snippet(examples[(choose(examples.length, ...labels) + req.index) % examples.length].input);
            example = `For instance, an input may look like this: "${quoted}"${/[.!?…]$/u.test(quoted) ? '' : '.'}`;
          }
          return assemble(append(append(parts, space), example));
        }
        case 'reasoning': {
          const sentence = REASONING[(choose(REASONING.length, ...labels) + req.index) % REASONING.length];
          // Even indices put the request for reasoning first, odd ones last, for variety of position.
          return assemble(req.index % 2 === 0 ? [{ text: `${sentence} ` }, ...base] : append(base, sentence));
        }
        case 'constraint': {
          const options = closed ? CONSTRAINT_LABEL : CONSTRAINT_OPEN;
          return assemble(append(base, options[(choose(options.length, ...labels) + req.index) % options.length], 'format'));
        }
      }
    },
  };
}
