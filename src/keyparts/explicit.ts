/**
 * Key parts given in the data: spans as offsets, or as the key phrases themselves, which are
 * located in the text. Also the measure used to judge any extractor: the share of known label words
 * that fall inside some key span.
 */
import { InputError } from '../errors/index.js';
import type { KeySpan, KeySpanKind } from '../data/taskset.js';
import { SPAN_KINDS } from '../data/validate.js';

/** The largest offset a key span may hold: spans are stored as Int32 columns. */
export const MAX_SPAN_OFFSET = 2 ** 31 - 1;

/**
 * A key-span offset as read from any source: a JSON number or an Arrow/pandas int64 (`bigint`)
 * that is an integer in [0, 2^31 − 1]. Anything else (1.5, "1", −1, 4294967306, NaN) returns null,
 * so that a caller names the row and refuses it instead of rounding, coercing or wrapping it.
 *
 * @example
 * spanOffset(7); spanOffset(7n); // 7, 7
 * spanOffset(1.5); spanOffset('1'); spanOffset(4294967306); // null, null, null
 */
export function spanOffset(value: unknown): number | null {
  const n = typeof value === 'bigint' ? (value >= 0n && value <= BigInt(MAX_SPAN_OFFSET) ? Number(value) : NaN) : value;
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_SPAN_OFFSET ? n : null;
}

/** A value as JSON for an error message, bigints included (JSON.stringify throws on them). */
function shown(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * The `{start, end}` offsets of one key span given as an object or a `[start, end]` pair, checked by
 * {@link spanOffset}; an InputError names `where`, the span's index and the value otherwise.
 *
 * @example
 * spanOffsets([7, 20], 'rows.jsonl:3', 0); // { start: 7, end: 20 }
 * spanOffsets({ start: 1.5, end: 4 }, 'rows.jsonl:3', 0); // throws InputError
 */
export function spanOffsets(value: unknown, where: string, index: number): { start: number; end: number; kind?: unknown } {
  const s = Array.isArray(value) ? { start: value[0], end: value[1], kind: value[2] } : (value as Record<string, unknown> | null);
  const start = s && typeof s === 'object' ? spanOffset(s.start) : null;
  const end = s && typeof s === 'object' ? spanOffset(s.end) : null;
  if (start === null || end === null)
    throw new InputError(`${where}: key span ${index} must be {start, end} or [start, end] with integer offsets in [0, ${MAX_SPAN_OFFSET}], got ${shown(value)}`);
  return { start, end, kind: s!.kind };
}

/** Where each phrase sits in a text, and the phrases that are not in it. */
export interface LocatedKeyParts {
  spans: KeySpan[];
  missing: string[];
}

/**
 * Finds each key phrase verbatim in `text` and returns its span. Phrases are searched in order,
 * each from the end of the previous one, then (if not found there) from the start, so repeated
 * phrases map to successive occurrences and reordered phrases are still found. A phrase that
 * overlaps one already placed, or is absent, is reported in `missing`.
 *
 * @example
 * locateKeyParts('Answer "yes" or "no" in one word.', ['"yes" or "no"', 'one word']);
 * // { spans: [{ start: 7, end: 20 }, { start: 24, end: 32 }], missing: [] }
 */
export function locateKeyParts(text: string, phrases: readonly (string | { text: string; kind?: KeySpanKind })[]): LocatedKeyParts {
  const spans: KeySpan[] = [];
  const missing: string[] = [];
  let from = 0;
  for (const p of phrases) {
    const phrase = typeof p === 'string' ? p : p.text;
    const kind = typeof p === 'string' ? undefined : p.kind;
    if (!phrase) continue;
    const free = (at: number) => at >= 0 && !spans.some((s) => at < s.end && s.start < at + phrase.length);
    let at = text.indexOf(phrase, from);
    while (at >= 0 && !free(at)) at = text.indexOf(phrase, at + 1);
    if (at < 0) {
      at = text.indexOf(phrase);
      while (at >= 0 && !free(at)) at = text.indexOf(phrase, at + 1);
    }
    if (at < 0) {
      missing.push(phrase);
      continue;
    }
    const span: KeySpan = { start: at, end: at + phrase.length };
    if (kind) span.kind = kind;
    spans.push(span);
    from = span.end;
  }
  spans.sort((a, b) => a.start - b.start);
  return { spans, missing };
}

/**
 * Reads explicit key parts from a data field: a list of `{start, end, kind?}` objects, of
 * `[start, end]` pairs, or of key phrases (strings, located in `text`). Offsets must lie inside the
 * text and not overlap.
 *
 * @throws InputError naming `where` for a value of another shape, a span outside the text, an
 *   overlap, or a phrase that is not in the text
 * @example
 * parseKeySpans([[7, 20]], 'Answer "yes" or "no".', 'rows.jsonl:3');       // [{ start: 7, end: 20 }]
 * parseKeySpans(['"yes" or "no"'], 'Answer "yes" or "no".', 'rows.jsonl:3'); // [{ start: 7, end: 20 }]
 */
export function parseKeySpans(value: unknown, text: string, where: string): KeySpan[] {
  if (value === null || value === undefined) return [];
  if (!Array.isArray(value)) throw new InputError(`${where}: key spans must be a list, got ${shown(value)}`);
  if (value.every((v) => typeof v === 'string')) {
    const { spans, missing } = locateKeyParts(text, value as string[]);
    if (missing.length) throw new InputError(`${where}: key part(s) not found in the instruction: ${missing.map((m) => JSON.stringify(m)).join(', ')}`);
    return spans;
  }
  const spans = value.map((v, i): KeySpan => {
    const s = spanOffsets(v, where, i);
    const span: KeySpan = { start: s.start, end: s.end };
    if (s.kind !== undefined && s.kind !== null) {
      if (!SPAN_KINDS.includes(s.kind as KeySpanKind)) throw new InputError(`${where}: key span ${i} kind ${JSON.stringify(s.kind)} is not one of ${SPAN_KINDS.join(', ')}`);
      span.kind = s.kind as KeySpanKind;
    }
    if (span.start < 0 || span.end > text.length || span.start >= span.end)
      throw new InputError(`${where}: key span ${i} [${span.start}, ${span.end}) is not inside the instruction (length ${text.length})`);
    return span;
  });
  spans.sort((a, b) => a.start - b.start);
  for (let i = 1; i < spans.length; i++)
    if (spans[i].start < spans[i - 1].end) throw new InputError(`${where}: key spans [${spans[i - 1].start}, ${spans[i - 1].end}) and [${spans[i].start}, ${spans[i].end}) overlap`);
  return spans;
}

/** Which label words lie inside some key span (compared case-insensitively). */
export interface LabelRecall {
  found: string[];
  missing: string[];
  recall: number;
}

/**
 * Label-word recall of a set of key spans: the share of `labels` that occur, case-insensitively,
 * inside the text of at least one span. The figure reported for the heuristic extractor in
 * docs/data.md is this measure against hand-read label sets.
 *
 * @example
 * labelRecall('Answer "yes" or "no".', [{ start: 7, end: 20 }], ['yes', 'no']); // { found: ['yes', 'no'], missing: [], recall: 1 }
 */
export function labelRecall(text: string, spans: readonly KeySpan[], labels: readonly string[]): LabelRecall {
  const pieces = spans.map((s) => text.slice(s.start, s.end).toLowerCase());
  const found = labels.filter((l) => pieces.some((p) => p.includes(l.toLowerCase())));
  const missing = labels.filter((l) => !found.includes(l));
  return { found, missing, recall: labels.length ? found.length / labels.length : 1 };
}
