/**
 * Per-output metrics other than ROUGE-L (see rouge.ts) and the two scores of the KPIG paper built on
 * them: exact match (SuperNI's normalisation), validity against a task's label set, V-score
 * (instruction following) and P-score (generalisation). Every rule is spelled out in docs/eval.md.
 */
import { InputError } from '../errors/index.js';

/** The fields of a scored prediction that the aggregate scores read. */
export interface ScoredOutput {
  task_id: string;
  /** Inside the task's label set; null when the task has no label set. */
  valid: boolean | null;
  rouge_l: number;
}

/** Python's `str.split()` whitespace (what SuperNI's normaliser splits on), which JS `\s` does not match exactly. */
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
/** Python's `string.punctuation`: the 32 ASCII punctuation characters, and nothing else. */
const ASCII_PUNCTUATION = /[!-/:-@[-`{-~]/g;

/**
 * SuperNI's answer normalisation (SQuAD's, but articles are kept): lower-case, delete the 32 ASCII
 * punctuation characters, collapse whitespace runs to one space and trim.
 *
 * @example
 * normalizeAnswer('  The  Answer: "Yes"! '); // 'the answer yes'
 */
export function normalizeAnswer(text: string): string {
  return text
    .toLowerCase()
    .replace(ASCII_PUNCTUATION, '')
    .split(PY_WHITESPACE)
    .filter((w) => w.length > 0)
    .join(' ');
}

/**
 * 1 when the normalised prediction equals a normalised reference, else 0 (SuperNI's exact match,
 * maximised over references).
 *
 * @throws InputError when `references` is empty
 * @example
 * exactMatch('Yes.', ['yes']); // 1
 * exactMatch('an apple', ['apple']); // 0: articles are not removed
 */
export function exactMatch(prediction: string, references: readonly string[]): number {
  if (references.length === 0) throw new InputError('exactMatch: an instance needs at least one reference output');
  const p = normalizeAnswer(prediction);
  return references.some((r) => normalizeAnswer(r) === p) ? 1 : 0;
}

const EDGE_PUNCTUATION = /^[\p{P}\s]+|[\p{P}\s]+$/gu;

/**
 * The form in which outputs and label words are compared for validity: Unicode NFC, lower-case,
 * whitespace runs collapsed to one space, and leading/trailing punctuation and whitespace
 * (Unicode category P) stripped — unless that would leave nothing, as for a label that is itself
 * punctuation ("-"), which is then kept trimmed.
 *
 * @example
 * normalizeLabel(' "Not  Entailment." '); // 'not entailment'
 * normalizeLabel('-'); // '-'
 */
export function normalizeLabel(text: string): string {
  const base = text.normalize('NFC').toLowerCase().replace(/\s+/gu, ' ').trim();
  const stripped = base.replace(EDGE_PUNCTUATION, '');
  return stripped.length > 0 ? stripped : base;
}

/**
 * Whether `prediction` lies in the output space the instruction defines: its normalised form
 * ({@link normalizeLabel}) equals the normalised form of one label-set entry.
 *
 * @throws InputError when `labelSet` is empty
 * @example
 * isValidOutput('Positive.', ['positive', 'negative']); // true
 * isValidOutput('positive review', ['positive', 'negative']); // false
 */
export function isValidOutput(prediction: string, labelSet: readonly string[]): boolean {
  if (labelSet.length === 0) throw new InputError('isValidOutput: the label set is empty; use null for tasks without one');
  const p = normalizeLabel(prediction);
  return labelSet.some((l) => normalizeLabel(l) === p);
}

/** A score per task (null where it is undefined) and its mean over the tasks where it is defined. */
export interface TaskScores {
  perTask: Record<string, number | null>;
  /** Mean over tasks with a non-null score; null when there is none. */
  mean: number | null;
  /** Tasks that entered the mean. */
  counted: number;
}

function byTask<T extends ScoredOutput>(rows: readonly T[], tasks: readonly string[] | undefined): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const t of tasks ?? []) groups.set(t, []);
  for (const r of rows) {
    if (tasks && !groups.has(r.task_id)) continue;
    let g = groups.get(r.task_id);
    if (!g) groups.set(r.task_id, (g = []));
    g.push(r);
  }
  return groups;
}

function finish(perTask: Record<string, number | null>): TaskScores {
  const values = Object.values(perTask).filter((v): v is number => v !== null);
  return { perTask, mean: values.length ? values.reduce((a, b) => a + b, 0) / values.length : null, counted: values.length };
}

/**
 * V-score (instruction following): per task, the share of its outputs that are valid
 * (`valid === true`) among those with a validity (tasks without a label set have `valid: null`
 * and no V-score); `mean` is the macro average over tasks with a V-score. `tasks` restricts the
 * computation to those tasks (a listed task without rows gets null).
 *
 * @example
 * vScore([{ task_id: 'a', valid: true, rouge_l: 1 }, { task_id: 'a', valid: false, rouge_l: 0 }]).mean; // 0.5
 */
export function vScore(rows: readonly ScoredOutput[], options: { tasks?: readonly string[] } = {}): TaskScores {
  const perTask: Record<string, number | null> = {};
  for (const [task, group] of byTask(rows, options.tasks)) {
    const judged = group.filter((r) => r.valid !== null);
    perTask[task] = judged.length ? judged.filter((r) => r.valid).length / judged.length : null;
  }
  return finish(perTask);
}

/** P-score and, with a base model's rows, its retention ratio. */
export interface PScore extends TaskScores {
  /**
   * P(model) / P(base), both means taken over the tasks where both are defined; null without a
   * base, when no task is shared, or when the base's P-score there is 0.
   */
  retention: number | null;
}

/**
 * P-score (generalisation): per task, the mean ROUGE-L over its valid outputs — rows with
 * `valid !== false`, so every row of a task without a label set — null when a task has none;
 * `mean` is the macro average over tasks with a P-score. Pass the held-out tasks as `tasks`.
 * With `base` (the base model's rows on the same tasks) `retention` is the ratio to the base.
 *
 * @example
 * const p = pScore(rows, { tasks: stream.held_out, base: baseRows });
 * console.log(p.mean, p.retention);
 */
export function pScore(rows: readonly ScoredOutput[], options: { tasks?: readonly string[]; base?: readonly ScoredOutput[] } = {}): PScore {
  const perTaskOf = (rs: readonly ScoredOutput[]) => {
    const out: Record<string, number | null> = {};
    for (const [task, group] of byTask(rs, options.tasks)) {
      const ok = group.filter((r) => r.valid !== false);
      out[task] = ok.length ? ok.reduce((s, r) => s + r.rouge_l, 0) / ok.length : null;
    }
    return out;
  };
  const scores = finish(perTaskOf(rows));
  let retention: number | null = null;
  if (options.base) {
    const base = perTaskOf(options.base);
    const shared = Object.keys(scores.perTask).filter((t) => scores.perTask[t] !== null && base[t] !== null && base[t] !== undefined);
    if (shared.length) {
      const mean = (get: (t: string) => number) => shared.reduce((s, t) => s + get(t), 0) / shared.length;
      const b = mean((t) => base[t]!);
      if (b > 0) retention = mean((t) => scores.perTask[t]!) / b;
    }
  }
  return { ...scores, retention };
}
