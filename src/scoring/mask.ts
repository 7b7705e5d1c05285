/**
 * Key-part masking: an instruction with its key spans replaced by a placeholder (or deleted), and
 * the full/masked token pair built with the prompt template. Both sequences end with exactly the
 * same response tokens.
 */
import { InputError } from '../errors/index.js';
import { deriveSeed, mulberry32 } from '../random/rng.js';
import { encodeExample, superniTemplate, type PromptTemplate } from '../template/index.js';
import type { Tokenizer } from '../tokenizer/index.js';

const SUPERNI = superniTemplate();

/** A key part: characters [start, end) of the instruction (UTF-16 code units, as JS strings index). */
export interface KeySpan {
  start: number;
  end: number;
}

export type MaskMode = 'replace' | 'delete';

/**
 * Checks spans lie inside the instruction and do not overlap; returns them sorted by start.
 *
 * @example
 * validateSpans('Answer yes or no.', [{ start: 7, end: 16 }]);
 */
export function validateSpans(instruction: string, spans: readonly KeySpan[]): KeySpan[] {
  spans.forEach((s, i) => {
    if (!Number.isInteger(s.start) || !Number.isInteger(s.end) || s.start < 0 || s.end > instruction.length || s.start >= s.end)
      throw new InputError(`key span ${i} [${s.start}, ${s.end}) is not inside the instruction (length ${instruction.length})`);
  });
  const sorted = [...spans].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++)
    if (sorted[i].start < sorted[i - 1].end)
      throw new InputError(`key spans [${sorted[i - 1].start}, ${sorted[i - 1].end}) and [${sorted[i].start}, ${sorted[i].end}) overlap`);
  return sorted;
}

/**
 * The instruction with every key span replaced by `placeholder` (mode 'replace') or removed ('delete').
 *
 * @example
 * maskInstruction('Answer yes or no.', [{ start: 7, end: 16 }]); // 'Answer [MASK].'
 */
export function maskInstruction(instruction: string, spans: readonly KeySpan[], mode: MaskMode = 'replace', placeholder = '[MASK]'): string {
  let out = '';
  let at = 0;
  for (const s of validateSpans(instruction, spans)) {
    out += instruction.slice(at, s.start) + (mode === 'replace' ? placeholder : '');
    at = s.end;
  }
  return out + instruction.slice(at);
}

/**
 * Placeholders a masked key part may be replaced with. Varying them keeps the IG from measuring
 * how the model reacts to one particular token (`[MASK]`) rather than to the missing key part.
 */
export const PLACEHOLDER_POOL: readonly string[] = Object.freeze([
  '[MASK]',
  '___',
  '<?>',
  '[X]',
  '...',
  '(blank)',
  '[?]',
  '***',
  '<hidden>',
  '{ }',
  '--',
  '[redacted]',
]);

/**
 * A placeholder from {@link PLACEHOLDER_POOL}, the same for the same seed and labels (an
 * instruction id, a stage), drawn from the stream `deriveSeed(seed, 'placeholder', ...labels)`.
 *
 * @example
 * maskInstruction('Answer yes or no.', [{ start: 7, end: 16 }], 'replace', pickPlaceholder(0, 'task3', 17));
 */
export function pickPlaceholder(seed: number, ...labels: Array<string | number>): string {
  const rnd = mulberry32(deriveSeed(seed, 'placeholder', ...labels));
  return PLACEHOLDER_POOL[Math.floor(rnd() * PLACEHOLDER_POOL.length)];
}

/**
 * A counterfactual instruction: every key span replaced by another value of its kind (e.g. the
 * label set of a sibling task) instead of a placeholder, so the "masked" prompt stays fluent.
 *
 * `alternatives(i, text)` lists the candidate values of span i; `i` indexes the spans **sorted by
 * start** (as {@link validateSpans} returns them), not the order they were passed in, and `text` is
 * the span's own text, which is never chosen. Each span's value is drawn with `rnd` (uniformly when
 * the spans compete for nothing); two spans get the same value only when no assignment of distinct
 * values exists. Returns null when some span has no alternative, so the caller can fall back to a
 * placeholder.
 *
 * @example
 * counterfactualInstruction('Answer yes or no.', [{ start: 7, end: 10 }, { start: 14, end: 16 }], () => ['yes', 'no', 'maybe'], mulberry32(1));
 * // e.g. 'Answer maybe or yes.'
 */
export function counterfactualInstruction(
  instruction: string,
  spans: readonly KeySpan[],
  alternatives: (spanIndex: number, text: string) => readonly string[],
  rnd: () => number,
): string | null {
  const sorted = validateSpans(instruction, spans);
  const texts = sorted.map((s) => instruction.slice(s.start, s.end));
  const options: string[][] = [];
  for (let i = 0; i < sorted.length; i++) {
    const own = texts[i];
    const cands = [...new Set(alternatives(i, own))].filter((t) => t !== own);
    if (cands.length === 0) return null;
    // Shuffled once here, so the matching below tries candidates in a random order.
    for (let k = cands.length - 1; k > 0; k--) {
      const j = Math.floor(rnd() * (k + 1));
      [cands[k], cands[j]] = [cands[j], cands[k]];
    }
    options.push(cands);
  }
  // Distinct values by augmenting paths (Kuhn's matching): greedy alone would give span 0 the only
  // value span 1 can take. The span counts are tiny, so the quadratic cost does not matter.
  const holder = new Map<string, number>();
  const chosen = new Array<string | undefined>(sorted.length);
  const place = (i: number, seen: Set<string>): boolean => {
    for (const v of options[i]) {
      if (seen.has(v)) continue;
      seen.add(v);
      const h = holder.get(v);
      if (h === undefined || place(h, seen)) {
        holder.set(v, i);
        chosen[i] = v;
        return true;
      }
    }
    return false;
  };
  for (let i = 0; i < sorted.length; i++) if (!place(i, new Set())) chosen[i] = options[i][0];
  let out = '';
  let at = 0;
  sorted.forEach((s, i) => {
    out += instruction.slice(at, s.start) + chosen[i];
    at = s.end;
  });
  return out + instruction.slice(at);
}

/** An instruction as {@link keyValuePools} reads it: its task and its key spans, with their kind. */
export interface PooledInstruction {
  task_id: string;
  text: string;
  key_spans: readonly { start: number; end: number; kind?: string }[];
}

/**
 * Value pools for counterfactual masking: the distinct key-span texts per (task, kind), in the
 * order first seen. A task whose own pool of a kind has fewer than 2 values gets the pool of that
 * kind over all tasks instead (one value is the span itself and would leave nothing to swap in).
 * A span without a kind counts as kind 'other'. Every call returns a fresh array.
 *
 * @example
 * const pools = keyValuePools(instructions);
 * pools('task12', 'label'); // e.g. ['positive', 'negative']
 */
export function keyValuePools(instructions: readonly PooledInstruction[]): (task: string, kind: string | undefined) => string[] {
  const perTask = new Map<string, Map<string, Set<string>>>();
  const overall = new Map<string, Set<string>>();
  const addTo = <K>(m: Map<K, Set<string>>, k: K, v: string) => {
    const set = m.get(k);
    if (set) set.add(v);
    else m.set(k, new Set([v]));
  };
  instructions.forEach((ins, n) => {
    try {
      validateSpans(ins.text, ins.key_spans);
    } catch (e) {
      throw new InputError(`instruction ${n} (task ${ins.task_id}): ${(e as Error).message}`, { cause: e });
    }
    let kinds = perTask.get(ins.task_id);
    if (!kinds) perTask.set(ins.task_id, (kinds = new Map()));
    // Spans in the order given, not by start: "first seen" is the data's own order.
    for (const s of ins.key_spans) {
      const kind = s.kind ?? 'other';
      const text = ins.text.slice(s.start, s.end);
      addTo(kinds, kind, text);
      addTo(overall, kind, text);
    }
  });
  return (task, kind) => {
    const k = kind ?? 'other';
    const own = perTask.get(task)?.get(k);
    return [...(own && own.size >= 2 ? own : overall.get(k) ?? [])];
  };
}

export interface ScoringRow {
  instruction: string;
  keySpans: readonly KeySpan[];
  input: string;
  output: string;
}

/** The token pair of one row, and the index of the first token where full and masked differ. */
export interface TokenPair {
  full: number[];
  masked: number[];
  responseLen: number;
  firstDiff: number;
}

/**
 * Tokenises a row into its full and masked sequences (prompt template + the output's tokens; the
 * SuperNI prompt unless `template` says otherwise). Both end with the full sequence's response
 * tokens; the token that would end the response (EOS, end-of-turn) is not part of the pair.
 *
 * @throws InputError when the response is empty
 * @example
 * const pair = buildPair(tokenizer, { instruction: 'Answer yes or no.', keySpans: [{ start: 7, end: 16 }], input: 'Is ice cold?', output: 'yes' });
 */
export function buildPair(tok: Tokenizer, row: ScoringRow, options: { mode?: MaskMode; placeholder?: string; template?: PromptTemplate } = {}): TokenPair {
  const template = options.template ?? SUPERNI;
  const masked = maskInstruction(row.instruction, row.keySpans, options.mode, options.placeholder);
  const full = encodeExample(tok, template, { instruction: row.instruction, input: row.input }, row.output);
  const other = encodeExample(tok, template, { instruction: masked, input: row.input }, row.output);
  if (!full || !other) throw new InputError('the response (output) is empty');
  // The scored response is the output's tokens, without the token that ends it.
  const response = full.tokens.slice(full.promptLength, full.tokens.length - full.endTokens);
  const fullSeq = [...full.tokens.slice(0, full.promptLength), ...response];
  const maskedSeq = [...other.tokens.slice(0, other.promptLength), ...response];
  let firstDiff = 0;
  while (firstDiff < fullSeq.length && firstDiff < maskedSeq.length && fullSeq[firstDiff] === maskedSeq[firstDiff]) firstDiff++;
  return { full: fullSeq, masked: maskedSeq, responseLen: response.length, firstDiff };
}
