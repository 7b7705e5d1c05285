/**
 * Answer-style diversification (ASD, from SEFE): a share of each task's training instances is
 * asked in another answer style, so that a model does not tie a task to one answer format. The
 * styles made offline from the data itself:
 *   - `yesno`: "Is the answer "<candidate>"? Answer yes or no." about the gold answer or a wrong one
 *     (even odds), answered `yes` / `no`;
 *   - `choice`: the gold answer among up to three wrong ones as lettered options, answered by the letter.
 * Wrong answers come from the instruction's label set, else the task's, else the task's other
 * training answers. SEFE's explanation styles (brief, detailed) need generated text and are not made
 * here. Test and probe instances are never changed.
 */
import { InputError } from '../errors/index.js';
import { deriveSeed, mulberry32, shuffled } from '../random/rng.js';
import type { InstanceRecord, TaskSet } from './taskset.js';

export const ANSWER_STYLES = ['yesno', 'choice'] as const;
export type AnswerStyle = (typeof ANSWER_STYLES)[number];

export interface AnswerStyleOptions {
  /** Share of each task's training instances converted (SEFE: 0.2). */
  ratio?: number;
  styles?: readonly AnswerStyle[];
  seed?: number;
}

export interface AnswerStyleReport {
  /** Per task: instances converted per style, and those left as they were for want of a wrong answer. */
  tasks: Array<{ task_id: string; converted: Record<AnswerStyle, number>; unconvertible: number }>;
}

const LETTERS = 'ABCD';

/** One instance in another answer style (null when the task offers no wrong answer). */
export function restyle(x: InstanceRecord, style: AnswerStyle, candidates: readonly string[], rnd: () => number): InstanceRecord | null {
  const gold = x.outputs[0] ?? '';
  const wrong = [...new Set(candidates)].filter((c) => c !== gold && !x.outputs.includes(c));
  if (!gold || wrong.length === 0) return null;
  const sep = x.input ? `${x.input}\n\n` : '';
  if (style === 'yesno') {
    const asksGold = rnd() < 0.5;
    const cand = asksGold ? gold : wrong[Math.floor(rnd() * wrong.length)];
    return { ...x, input: `${sep}Is the answer "${cand}"? Answer yes or no.`, outputs: [asksGold ? 'yes' : 'no'] };
  }
  const options = shuffled([gold, ...shuffled(wrong, rnd).slice(0, 3)], rnd);
  const lines = options.map((o, i) => `(${LETTERS[i]}) ${o}`).join('\n');
  return { ...x, input: `${sep}Options:\n${lines}\nAnswer with the letter of the correct option.`, outputs: [LETTERS[options.indexOf(gold)]] };
}

/**
 * A copy of the task set with ⌊ratio·n⌋ of each task's n training instances (a seeded draw) in
 * another answer style, split equally over `styles`.
 *
 * @example
 * const { set: asd, report } = diversifyAnswerStyles(set, { ratio: 0.2, seed: 0 });
 */
export function diversifyAnswerStyles(set: TaskSet, options: AnswerStyleOptions = {}): { set: TaskSet; report: AnswerStyleReport } {
  const ratio = options.ratio ?? 0.2;
  const styles = options.styles ?? ANSWER_STYLES;
  const seed = options.seed ?? 0;
  if (!(ratio >= 0 && ratio <= 1)) throw new InputError(`answer styles: ratio must be in [0, 1], got ${ratio}`);
  if (styles.length === 0) throw new InputError('answer styles: name at least one style');
  for (const s of styles) if (!ANSWER_STYLES.includes(s)) throw new InputError(`answer styles: '${s}' is not one of ${ANSWER_STYLES.join(', ')}`);
  const instructions = new Map(set.instructions.map((i) => [i.instruction_id, i]));
  const replaced = new Map<InstanceRecord, InstanceRecord>();
  const report: AnswerStyleReport = { tasks: [] };
  for (const task of set.tasks) {
    const train = set.instances.filter((x) => x.task_id === task.task_id && x.split === 'train');
    const answers = [...new Set(train.map((x) => x.outputs[0]).filter((o): o is string => !!o))];
    const rnd = mulberry32(deriveSeed(seed, 'answer-style', task.task_id));
    const picked = shuffled(train, rnd).slice(0, Math.floor(ratio * train.length));
    const converted = Object.fromEntries(ANSWER_STYLES.map((s) => [s, 0])) as Record<AnswerStyle, number>;
    let unconvertible = 0;
    picked.forEach((x, i) => {
      const own = x.instruction_id ? instructions.get(x.instruction_id)?.label_set : null;
      const candidates = own ?? task.label_set ?? answers;
      const style = styles[i % styles.length];
      const y = restyle(x, style, candidates, rnd);
      if (y) {
        replaced.set(x, y);
        converted[style]++;
      } else unconvertible++;
    });
    report.tasks.push({ task_id: task.task_id, converted, unconvertible });
  }
  return { set: { ...set, instances: set.instances.map((x) => replaced.get(x) ?? x) }, report };
}
