/**
 * Key parts from an LLM: the model is asked to copy the key phrases of an instruction verbatim, and
 * each phrase is then located in the text. A phrase that is not in the text (paraphrased, invented)
 * or overlaps another is reported, not guessed at.
 */
import type { KeySpan, KeySpanKind, TaskSet } from '../data/taskset.js';
import { SPAN_KINDS } from '../data/validate.js';
import { InputError } from '../errors/index.js';
import type { ChatClient } from '../llm/client.js';
import { replyJson } from '../llm/reply.js';
import { extractKeyParts } from './heuristic.js';
import { locateKeyParts } from './explicit.js';

export interface LlmKeyParts {
  spans: KeySpan[];
  /** Phrases the model gave that could not be placed, with why. */
  rejected: { text: string; reason: string }[];
}

const SYSTEM = 'You annotate task instructions for instruction tuning. You answer with JSON only.';

function prompt(instruction: string): string {
  return [
    'Mark the key parts of the instruction below: the spans that decide the content, length or format of a correct answer.',
    'Kinds: label (a label word, an answer option or the list of them), format (how the answer must be written), length (how long it may be), entity (the specific thing the task asks about), other.',
    'General description ("In this task, you are given ...") is not a key part.',
    'Copy every key part character for character from the instruction, quotes included; do not paraphrase and do not overlap parts.',
    'Answer with a JSON object: {"key_parts": [{"text": "...", "kind": "label|format|length|entity|other"}]}.',
    '',
    'Instruction:',
    instruction,
  ].join('\n');
}

type Phrase = { text: string; kind?: KeySpanKind };

function phrasesOf(content: string): Phrase[] | string {
  const json = replyJson(content) as { key_parts?: unknown } | null;
  if (!json || !Array.isArray(json.key_parts)) return 'expected a JSON object with a "key_parts" list';
  const out: Phrase[] = [];
  for (const p of json.key_parts) {
    const text = typeof p === 'string' ? p : (p as { text?: unknown })?.text;
    if (typeof text !== 'string') return `a key part is not a string or {"text": ...}: ${JSON.stringify(p).slice(0, 80)}`;
    const kind = (p as { kind?: unknown })?.kind;
    out.push({ text, kind: SPAN_KINDS.includes(kind as KeySpanKind) ? (kind as KeySpanKind) : undefined });
  }
  return out;
}

/**
 * Asks the model behind `client` for the key parts of `instruction` and locates them. Replies that
 * are not the JSON asked for are retried by the client and never cached.
 *
 * @throws EndpointError when the endpoint keeps failing or keeps answering malformed JSON
 * @example
 * const { spans, rejected } = await annotateKeyParts(llm, 'Answer "yes" or "no" in one word.');
 */
export async function annotateKeyParts(client: ChatClient, instruction: string): Promise<LlmKeyParts> {
  const { content } = await client.complete(
    [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: prompt(instruction) },
    ],
    {
      json: true,
      validate: (c) => {
        const parsed = phrasesOf(c);
        return typeof parsed === 'string' ? parsed : null;
      },
    },
  );
  const phrases = phrasesOf(content) as Phrase[];
  const { spans, missing } = locateKeyParts(instruction, phrases);
  return {
    spans,
    rejected: missing.map((text) => ({ text, reason: instruction.includes(text) ? 'overlaps another key part' : 'not found verbatim in the instruction' })),
  };
}

export type KeyPartMethod = 'heuristic' | 'llm' | 'none';

/**
 * Sets the key spans of every instruction whose spans were not given in the data (`key_source`
 * other than `explicit`) by `method`. Returns the new set and, for the LLM, the rejected phrases per
 * instruction id.
 *
 * @example
 * const { set: annotated } = await annotateTaskSet(set, 'llm', { client: new ChatClient() });
 */
export async function annotateTaskSet(
  set: TaskSet,
  method: KeyPartMethod,
  options: { client?: ChatClient } = {},
): Promise<{ set: TaskSet; rejected: Map<string, { text: string; reason: string }[]> }> {
  const rejected = new Map<string, { text: string; reason: string }[]>();
  const instructions = await Promise.all(
    set.instructions.map(async (r) => {
      if (r.key_source === 'explicit') return r;
      if (method === 'none') return { ...r, key_spans: [], key_source: 'none' as const };
      if (method === 'heuristic') {
        const spans = extractKeyParts(r.text).spans;
        return { ...r, key_spans: spans, key_source: spans.length ? ('heuristic' as const) : ('none' as const) };
      }
      if (!options.client) throw new InputError('annotateTaskSet: the llm method needs a client');
      const got = await annotateKeyParts(options.client, r.text);
      if (got.rejected.length) rejected.set(r.instruction_id, got.rejected);
      return { ...r, key_spans: got.spans, key_source: 'llm' as const };
    }),
  );
  return { set: { ...set, instructions }, rejected };
}
