/**
 * The heuristic key-part extractor for task definitions written the way SuperNI writes them. It
 * reads no model: a handful of surface rules find the spans that decide the content, length or
 * format of the answer, and the closed answer space when the text states one.
 *
 * Rules, in the priority used when two spans overlap (the higher one wins, the other is dropped):
 *   label  — an enumeration after an answer-space trigger ("classify … into", "classified as",
 *            "answer with", "one of the following:", any colon), a numbered list "(1) a (2) b",
 *            a run of quoted words joined by or/and, and single quoted words ("…", '…', *…*)
 *            that name a listed label or sit in a sentence about the answer;
 *   length — "in a few words", "one sentence", "at most 20 words", "short" / "brief" near the answer;
 *   format — "answer with / in …", "the output should be …", "in the form of …", "do not include …";
 *   entity — what the task asks for: "determine the speaker of the dialogue";
 *   other  — remaining quoted words ('concept' as the name of an input field).
 * The rules and the label-word recall they reach on the SuperNI dev tasks are in docs/data.md.
 */
import type { KeySpan, KeySpanKind } from '../data/taskset.js';

/** A candidate closed answer space found in the text. */
export interface LabelList {
  /** The items in text order, quotes and list punctuation removed. */
  items: string[];
  /** Characters [start, end) of the whole enumeration. */
  start: number;
  end: number;
  /** How sure the rule is that this is the answer space: 3 explicit trigger, 2 colon / numbered, 1 loose. */
  strength: number;
  rule: string;
}

export interface HeuristicKeyParts {
  /** Non-overlapping spans sorted by start, each with its kind. */
  spans: KeySpan[];
  /** Every enumeration that may be the answer space, strongest first. */
  labelLists: LabelList[];
}

interface Candidate extends KeySpan {
  kind: KeySpanKind;
}

const PRIORITY: Record<KeySpanKind, number> = { label: 5, length: 4, format: 3, entity: 2, other: 1 };

// Words that end a bare list item: list joiners, clause openers and verbs that follow a list.
const STOP_WORDS = new Set(
  'and or as into onto than using after before but nor if based depending according since because so then that which who when where while whether for to with from by of in on at is are be was were should must can will would the a an each every your their this these those it its'.split(' '),
);

const QUOTE_RE = /"([^"\n]{1,40}?)"|“([^”\n]{1,40}?)”|(?<![\p{L}\p{N}])'([^'\n]{1,40}?)'(?![\p{L}\p{N}])|‘([^’\n]{1,40}?)’|\\?\*([^*\n]{1,40}?)\\?\*/gu;
const HAS_LETTER = /\p{L}/u;

/** A quoted item at `pos` (after optional spaces): its text and end, or null. */
function quotedAt(text: string, pos: number): { item: string; start: number; end: number } | null {
  const re = new RegExp(QUOTE_RE.source, 'uy');
  const ws = /\s*/y;
  ws.lastIndex = pos;
  ws.exec(text);
  re.lastIndex = ws.lastIndex;
  const m = re.exec(text);
  if (!m) return null;
  const item = (m[1] ?? m[2] ?? m[3] ?? m[4] ?? m[5]).trim();
  if (!HAS_LETTER.test(item)) return null;
  return { item, start: m.index, end: m.index + m[0].length };
}

/** A bare item (1–3 words, optional parenthetical) at `pos`, ended by list punctuation or a joiner. */
function bareAt(text: string, pos: number): { item: string; start: number; end: number } | null {
  const word = /\s*([\p{L}][\p{L}\p{N}'-]*)/uy;
  let at = pos;
  let start = -1;
  const words: string[] = [];
  while (words.length < 3) {
    word.lastIndex = at;
    const m = word.exec(text);
    if (!m || STOP_WORDS.has(m[1].toLowerCase())) break;
    if (start < 0) start = m.index + m[0].length - m[1].length;
    words.push(m[1]);
    at = word.lastIndex;
  }
  if (words.length === 0) return null;
  const paren = /\s*\([^()\n]{1,30}\)/y;
  paren.lastIndex = at;
  if (paren.exec(text)) at = paren.lastIndex;
  // A bare item has no quotes to mark its end, so it must be followed by list punctuation or a joiner.
  if (!/^\s*(?:[,.;:!?)\n]|(?:and|or)\b|$)/u.test(text.slice(at, at + 6))) return null;
  return { item: text.slice(start, at).trim(), start, end: at };
}

const SEPARATOR = /\s*,\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+|\s*\/\s*/y;

/** The enumeration starting at `pos`: ≥ 2 items of one style (all quoted or all bare). */
function listAt(text: string, pos: number): { items: string[]; start: number; end: number } | null {
  const either = /\s*(?:either\s+)?/y;
  either.lastIndex = pos;
  either.exec(text);
  const first = quotedAt(text, either.lastIndex) ?? bareAt(text, either.lastIndex);
  if (!first) return null;
  const quoted = text[first.start] !== first.item[0];
  const next = quoted ? quotedAt : bareAt;
  const items = [first.item];
  let end = first.end;
  for (;;) {
    SEPARATOR.lastIndex = end;
    if (!SEPARATOR.exec(text)) break;
    const item = next(text, SEPARATOR.lastIndex);
    if (!item) break;
    items.push(item.item);
    end = item.end;
  }
  return items.length >= 2 ? { items, start: first.start, end } : null;
}

const TRIGGERS: [RegExp, number, string][] = [
  [/\b(?:classify|categori[sz]e|label|divide|sort|group|tag|mark)\b[^.:;!?]{0,60}?\b(?:into|as)\b/giu, 3, 'classify-into'],
  [/\b(?:classified|categori[sz]ed|labell?ed|marked|tagged|divided)\s+(?:as|into)\b/giu, 3, 'classified-as'],
  [/\b(?:answer|respond|reply|output|return|choose|select|pick)\s+(?:with|from|between|among)\b/giu, 3, 'answer-with'],
  [/\bone of(?: the following)?(?:\s+\p{L}+)?\s*:?/giu, 3, 'one-of'],
  // A colon opens an answer space only after words that announce one ("two classes:", "topics:").
  [/\b(?:class|classes|categories|category|topics|labels|options|choices|answers|types|following|classify|answer)\b[^.:;!?]{0,30}:/giu, 2, 'colon'],
];

function findLists(text: string): LabelList[] {
  const lists: LabelList[] = [];
  for (const [re, strength, rule] of TRIGGERS) {
    for (const m of text.matchAll(re)) {
      const list = listAt(text, m.index + m[0].length);
      if (list) lists.push({ ...list, strength, rule });
    }
  }
  // Numbered lists: "(1) algebra (2) arithmetic … and (5) probability".
  for (const m of text.matchAll(/\(1\)\s*/gu)) {
    const items: string[] = [];
    let at = m.index;
    let end = at;
    for (let k = 1; ; k++) {
      const re = new RegExp(`(?:\\s*,)?(?:\\s*and)?\\s*\\(${k}\\)\\s*([\\p{L}][\\p{L}\\p{N}' -]{0,30}?)(?=\\s*(?:,|\\.|;|\\(${k + 1}\\)|\\band\\b|$))`, 'uy');
      re.lastIndex = at;
      const hit = re.exec(text);
      if (!hit) break;
      items.push(hit[1].trim());
      end = re.lastIndex;
      at = end;
    }
    if (items.length >= 2) lists.push({ items, start: m.index, end, strength: 2, rule: 'numbered' });
  }
  // Quoted words joined by or/and need no trigger: the quotes already say they are literals.
  for (const m of text.matchAll(QUOTE_RE)) {
    const list = listAt(text, m.index);
    if (list && !lists.some((l) => l.start <= list.start && list.end <= l.end)) lists.push({ ...list, strength: 1, rule: 'quoted-run' });
  }
  const seen = new Set<string>();
  return lists
    .filter((l) => {
      const key = `${l.start}:${l.end}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .sort((a, b) => b.strength - a.strength || a.start - b.start);
}

/** Start and end of the sentence around `pos` (split on . ! ? followed by a space or the end). */
function sentenceAt(text: string, pos: number): [number, number] {
  let start = 0;
  for (const m of text.matchAll(/[.!?](?:\s+|$)/g)) {
    const end = m.index + m[0].length;
    if (end > pos) return [start, end];
    start = end;
  }
  return [start, text.length];
}

const ANSWER_WORDS = /\b(?:answers?|label(?:s|led|ed)?|mark(?:ed)?|tag(?:ged)?|classif(?:y|ied)|categori[sz]ed?|outputs?|return|respond|response|reply|class|is either)\b/iu;
const LENGTH_WORD = /^(?:short|brief|concise|succinct|long)$/iu;

// "in a few words" and "one word only" always bound the answer; "one sentence" alone may describe the input.
const LENGTH_IN = /\(?\bin\s+(?:a|one|two|three|four|five|\d+|a few|a single|single)\s+(?:words?|sentences?|lines?|paragraphs?|characters?|tokens?)(?:\s+only)?\b\)?|\b(?:one|two|three|\d+|a single|single)\s+(?:words?|sentences?|lines?)\s+only\b/giu;
const LENGTH_BARE = /\b(?:one|two|three|four|five|\d+|a few|a single|single)\s+(?:words?|sentences?|lines?|paragraphs?|characters?|tokens?)\b/giu;
const ANSWER_CONTEXT = /\b(?:answer|output|response|reply|summary|title|generate|write)\b/iu;

const LENGTH_RES: RegExp[] = [
  /\b(?:at most|no more than|not more than|less than|fewer than|up to|a maximum of|at least|exactly|under|within)\s+\d+\s+(?:words?|sentences?|lines?|paragraphs?|characters?|tokens?)\b/giu,
];

const FORMAT_RES: RegExp[] = [
  /\b(?:answer|respond|reply|output|write|return|give)\s+(?:only\s+)?(?:in|using|as|with)\s+[^.;:!?\n]{2,60}/giu,
  /\b(?:your|the)\s+(?:answer|output|response|reply)\s+(?:should|must|has to|needs to)\s+(?:be|contain|consist of|start with|end with|include|not)\b[^.;!?\n]{0,60}/giu,
  /\bin\s+(?:the\s+)?(?:form|format)\s+of\b[^.;!?\n]{0,50}/giu,
  /\bdo not\s+(?:include|add|write|use|output|repeat|generate|provide)\b[^.;!?\n]{0,60}/giu,
];

const ENTITY_RE = /\b(?:determine|identify|detect|predict|find|generate|judge|decide|recogni[sz]e|extract|output|provide|classify|choose|select)\s+(?:whether\s+|if\s+)?((?:the|which|what)\s+)/giu;

/** End of the noun phrase after a determiner at `pos`: up to 8 words; "of" / "between" join nouns. */
function nounPhraseAt(text: string, pos: number): number | null {
  const word = /\s*([\p{L}][\p{L}\p{N}'-]*)/uy;
  let at = pos;
  let lastNoun = -1;
  // True right after the determiner or a joiner, where an article may follow ("of a question").
  let afterJoin = true;
  for (let n = 0; n < 8; n++) {
    word.lastIndex = at;
    const m = word.exec(text);
    if (!m) break;
    const w = m[1].toLowerCase();
    if (w === 'of' || w === 'between') {
      if (afterJoin) break;
      afterJoin = true;
    } else if (w === 'a' || w === 'an' || w === 'the') {
      if (!afterJoin) break;
    } else if (STOP_WORDS.has(w)) {
      break;
    } else {
      lastNoun = word.lastIndex;
      afterJoin = false;
    }
    at = word.lastIndex;
  }
  return lastNoun > pos ? lastNoun : null;
}

/**
 * Finds the key parts of an instruction: label sets and options, quoted answer words, output
 * format and length constraints, the entity the task asks about. Deterministic; no network.
 *
 * @example
 * const { spans, labelLists } = extractKeyParts('Classify the review into "good" or "bad". Answer in one word.');
 * // spans: [{ start: 25, end: 40, kind: 'label' }, { start: 49, end: 60, kind: 'length' }]
 * // labelLists[0].items: ['good', 'bad']
 */
export function extractKeyParts(text: string): HeuristicKeyParts {
  const labelLists = findLists(text);
  const listed = new Set(labelLists.flatMap((l) => l.items.map((i) => i.toLowerCase())));
  const candidates: Candidate[] = labelLists.map((l) => ({ start: l.start, end: l.end, kind: 'label' }));
  for (const m of text.matchAll(QUOTE_RE)) {
    const item = (m[1] ?? m[2] ?? m[3] ?? m[4] ?? m[5]).trim();
    if (!HAS_LETTER.test(item)) continue;
    const [s, e] = sentenceAt(text, m.index);
    const kind: KeySpanKind = LENGTH_WORD.test(item)
      ? 'length'
      : listed.has(item.toLowerCase()) || ANSWER_WORDS.test(text.slice(s, e))
        ? 'label'
        : 'other';
    candidates.push({ start: m.index, end: m.index + m[0].length, kind });
  }
  for (const re of [LENGTH_IN, ...LENGTH_RES]) for (const m of text.matchAll(re)) candidates.push({ start: m.index, end: m.index + m[0].length, kind: 'length' });
  for (const re of [LENGTH_BARE, /\b(?:short|brief|concise|succinct)\b/giu])
    for (const m of text.matchAll(re)) {
      const [s, e] = sentenceAt(text, m.index);
      if (ANSWER_CONTEXT.test(text.slice(s, e))) candidates.push({ start: m.index, end: m.index + m[0].length, kind: 'length' });
    }
  for (const re of FORMAT_RES)
    for (const m of text.matchAll(re)) {
      const trimmed = m[0].replace(/[\s,]+$/u, '');
      candidates.push({ start: m.index, end: m.index + trimmed.length, kind: 'format' });
    }
  for (const m of text.matchAll(ENTITY_RE)) {
    const start = m.index + m[0].length - m[1].length;
    const end = nounPhraseAt(text, start + m[1].trimEnd().length);
    if (end !== null) candidates.push({ start, end, kind: 'entity' });
  }
  candidates.sort((a, b) => PRIORITY[b.kind] - PRIORITY[a.kind] || b.end - b.start - (a.end - a.start) || a.start - b.start);
  const spans: KeySpan[] = [];
  for (const c of candidates) if (!spans.some((s) => c.start < s.end && s.start < c.end)) spans.push({ start: c.start, end: c.end, kind: c.kind });
  spans.sort((a, b) => a.start - b.start);
  return { spans, labelLists };
}
