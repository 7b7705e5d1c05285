/**
 * The label space of a task: the closed set of outputs its instruction allows ("Answer with "Yes"
 * or "No""), found among the heuristic extractor's enumerations. When the task's outputs are known
 * they pick the enumeration that covers them (a definition may list several: the relation names and
 * then their short codes) and fix the labels' casing; V-score counts an output as valid when
 * {@link matchLabel} finds it in this set.
 */
import { extractKeyParts, type LabelList } from '../keyparts/heuristic.js';

export interface DetectLabelOptions {
  /** Known outputs of the task (demonstrations and instances); each is one accepted answer. */
  outputs?: readonly string[];
  /** Share of `outputs` a candidate must cover to be the label set (default 0.9). */
  minCoverage?: number;
  /**
   * When no enumeration in the instruction covers the outputs, take the outputs themselves as the
   * label set if they form a small closed set (default true; {@link closedOutputSet}).
   */
  fromOutputs?: boolean;
}

/**
 * The outputs as a label set when they are a small closed set: at least 20 outputs, at most 20
 * distinct values (compared trimmed, case-insensitively), each short (≤ 4 words, ≤ 40
 * characters), each value given five times on average. Values in order of first
 * appearance, each in its most frequent spelling; null otherwise. This is how a task whose
 * instruction names its labels in a way no rule reads ("the letters E, C, and N respectively")
 * still gets its label space from its training outputs.
 *
 * @example
 * closedOutputSet(Array.from({ length: 30 }, (_, i) => 'ECN'[i % 3])); // ['E', 'C', 'N']
 */
export function closedOutputSet(outputs: readonly string[]): string[] | null {
  if (outputs.length < 20) return null;
  const spellings = new Map<string, Map<string, number>>();
  for (const raw of outputs) {
    const o = raw.trim();
    if (!o || o.length > 40 || o.split(/\s+/).length > 4) return null;
    const key = norm(o);
    const m = spellings.get(key) ?? new Map<string, number>();
    m.set(o, (m.get(o) ?? 0) + 1);
    spellings.set(key, m);
    if (spellings.size > 20) return null;
  }
  if (spellings.size < 2 || outputs.length < 5 * spellings.size) return null;
  return [...spellings.values()].map((m) => [...m].sort((a, b) => b[1] - a[1])[0][0]);
}

const norm = (s: string) => s.trim().toLowerCase();

/**
 * The output in `labels` that `output` names, compared trimmed and case-insensitively, or null.
 *
 * @example
 * matchLabel(' positive', ['Positive', 'Negative']); // 'Positive'
 */
export function matchLabel(output: string, labels: readonly string[]): string | null {
  const o = norm(output);
  return labels.find((l) => norm(l) === o) ?? null;
}

/** Single quoted words in sentences about the answer ("POS" … "NEG"), as one candidate. */
function quotedSet(text: string, lists: readonly LabelList[]): LabelList | null {
  const items: string[] = [];
  for (const s of extractKeyParts(text).spans) {
    if (s.kind !== 'label' || lists.some((l) => l.start <= s.start && s.end <= l.end)) continue;
    const inner = text.slice(s.start, s.end).replace(/^[\\*"'“‘\s]+|[\\*"'”’\s]+$/gu, '');
    if (inner && !items.some((i) => norm(i) === norm(inner))) items.push(inner);
  }
  return items.length >= 2 ? { items, start: 0, end: text.length, strength: 2, rule: 'quoted-set' } : null;
}

/**
 * Detects the closed output space an instruction defines: its label words or options, or null for
 * an open-ended task. Without `outputs` the strongest enumeration is taken (explicit triggers such as
 * "classify … into" before colon lists; loose runs of quoted words are not enough). With `outputs`
 * the candidate covering the largest share of them wins if that share reaches `minCoverage`, and a
 * label whose exact spelling never occurs among the outputs takes the one spelling they use.
 *
 * @example
 * detectLabelSet('Classify the review into "good" or "bad".'); // ['good', 'bad']
 * detectLabelSet('Divide them into two classes: negative or positive.', { outputs: ['Positive', 'Negative'] }); // ['Negative', 'Positive']
 * detectLabelSet('Write a title for the article.', { outputs: ['A day at sea'] }); // null
 */
export function detectLabelSet(instruction: string, options: DetectLabelOptions = {}): string[] | null {
  const lists = extractKeyParts(instruction).labelLists;
  const quoted = quotedSet(instruction, lists);
  const candidates = quoted ? [...lists, quoted] : lists;
  const dedupe = (items: string[]) => items.filter((x, i) => items.findIndex((y) => norm(y) === norm(x)) === i);
  const outputs = options.outputs ?? [];
  if (outputs.length === 0) {
    const best = candidates.find((c) => c.strength >= 2);
    return best ? dedupe(best.items) : null;
  }
  let best: LabelList | null = null;
  let bestCoverage = -1;
  for (const c of candidates) {
    const coverage = outputs.filter((o) => matchLabel(o, c.items) !== null).length / outputs.length;
    if (coverage > bestCoverage || (coverage === bestCoverage && best !== null && c.strength > best.strength)) {
      best = c;
      bestCoverage = coverage;
    }
  }
  if (!best || bestCoverage < (options.minCoverage ?? 0.9)) return options.fromOutputs === false ? null : closedOutputSet(outputs);
  return dedupe(best.items).map((label) => {
    if (outputs.includes(label)) return label;
    const spellings = new Set(outputs.map((o) => o.trim()).filter((o) => norm(o) === norm(label)));
    return spellings.size === 1 ? [...spellings][0] : label;
  });
}
