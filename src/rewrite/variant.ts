/**
 * Instruction diversity, the first stage of KPIG: every seed instruction is rewritten into variants
 * (concretizing, reasoning, constraint, breadth) by a pluggable rewriter. A variant is kept only if
 * every key part of its seed appears in it verbatim; its spans are re-located in the new text. A
 * variant that loses a key part is rejected with the reason, never repaired silently.
 */
import { InputError } from '../errors/index.js';
import { locateKeyParts } from '../keyparts/explicit.js';
import type { InstructionOrigin, InstructionRecord, KeySpan, TaskRecord, TaskSet } from '../data/taskset.js';

export type RewriteKind = Exclude<InstructionOrigin, 'seed'>;

export const REWRITE_KINDS: readonly RewriteKind[] = ['concretizing', 'reasoning', 'constraint', 'breadth'];

/** What a rewriter is asked for: the `index`-th variant of kind `kind` of a seed. */
export interface RewriteRequest {
  task: TaskRecord;
  seed: InstructionRecord;
  kind: RewriteKind;
  index: number;
  /** Seed of the run; a deterministic rewriter derives all its choices from it. */
  runSeed: number;
}

/** A rewriter's answer: the new text and, if it knows them, the spans of the seed's key parts in it (plus any it added). */
export interface RewriteDraft {
  text: string;
  spans?: KeySpan[];
}

export interface Rewriter {
  readonly name: string;
  rewrite(request: RewriteRequest): Promise<RewriteDraft>;
}

export interface RejectedVariant {
  task_id: string;
  parent_id: string;
  origin: RewriteKind;
  text: string;
  reason: string;
}

/**
 * Checks a draft against its seed and returns the spans to store, or the reason to reject it. With
 * `draft.spans`, each seed key part must be the text of one of them; without, each is located verbatim.
 *
 * @example
 * checkVariant(seed, { text: 'Please answer "yes" or "no".' }); // { spans: [{ start: 14, end: 27, kind: 'label' }] }
 */
export function checkVariant(seed: InstructionRecord, draft: RewriteDraft): { spans: KeySpan[] } | { reason: string } {
  const text = draft.text;
  if (!text.trim()) return { reason: 'the rewrite is empty' };
  if (text.trim() === seed.text.trim()) return { reason: 'the rewrite is the seed unchanged' };
  const keys = seed.key_spans.map((s) => ({ text: seed.text.slice(s.start, s.end), kind: s.kind }));
  if (draft.spans) {
    const lost = keys.filter((k) => !draft.spans!.some((s) => text.slice(s.start, s.end) === k.text));
    if (lost.length) return { reason: `key part(s) not kept verbatim: ${lost.map((k) => JSON.stringify(k.text)).join(', ')}` };
    return { spans: [...draft.spans].sort((a, b) => a.start - b.start) };
  }
  const { spans, missing } = locateKeyParts(text, keys);
  if (missing.length) return { reason: `key part(s) not found verbatim in the rewrite: ${missing.map((m) => JSON.stringify(m)).join(', ')}` };
  return { spans };
}

/**
 * The id of a rewrite: `<task_id>/<kind>-<n>` for the rewrites of a task's `<task_id>/seed`, and
 * `<seed id>/<kind>-<n>` for those of a task's other seeds (a task with an instruction per key).
 *
 * @example
 * variantId({ task_id: 't', instruction_id: 't/key-3' } as InstructionRecord, 'breadth', 0); // 't/key-3/breadth-0'
 */
export function variantId(seed: Pick<InstructionRecord, 'task_id' | 'instruction_id'>, kind: RewriteKind, index: number): string {
  const stem = seed.instruction_id === `${seed.task_id}/seed` ? seed.task_id : seed.instruction_id;
  return `${stem}/${kind}-${index}`;
}

export interface DiversifyOptions {
  kinds?: readonly RewriteKind[];
  /** Variants of each kind per seed (default 1). */
  perKind?: number;
  seed?: number;
  /** Only these seeds are rewritten (default: every seed instruction). */
  only?: (seed: InstructionRecord) => boolean;
  /** Rewrite requests in flight at once (default 4); an LLM client also enforces its own limit. */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface DiversifyResult {
  /** The input set with the accepted variants appended to its instructions. */
  set: TaskSet;
  accepted: InstructionRecord[];
  rejected: RejectedVariant[];
}

/**
 * Rewrites every seed instruction of `set` into variants with `rewriter` and appends the accepted
 * ones (ids by {@link variantId}, parent the seed, key spans re-located). Variants already in the
 * set are replaced, so running it twice gives the same set.
 *
 * @example
 * const { set: diverse, rejected } = await diversify(set, offlineRewriter(), { perKind: 2 });
 */
export async function diversify(set: TaskSet, rewriter: Rewriter, options: DiversifyOptions = {}): Promise<DiversifyResult> {
  const kinds = options.kinds ?? REWRITE_KINDS;
  const perKind = options.perKind ?? 1;
  if (!Number.isInteger(perKind) || perKind < 1) throw new InputError(`perKind must be an integer ≥ 1, got ${perKind}`);
  const unknown = kinds.filter((k) => !REWRITE_KINDS.includes(k));
  if (unknown.length) throw new InputError(`unknown rewrite kind(s) ${unknown.join(', ')} (use ${REWRITE_KINDS.join(', ')})`);
  const tasks = new Map(set.tasks.map((t) => [t.task_id, t]));
  const requests: RewriteRequest[] = [];
  for (const seed of set.instructions.filter((r) => r.origin === 'seed' && (options.only?.(r) ?? true)))
    for (const kind of kinds)
      for (let index = 0; index < perKind; index++) requests.push({ task: tasks.get(seed.task_id)!, seed, kind, index, runSeed: options.seed ?? 0 });
  const results: (InstructionRecord | RejectedVariant)[] = new Array(requests.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < requests.length) {
      const i = next++;
      const r = requests[i];
      const draft = await rewriter.rewrite(r);
      const checked = checkVariant(r.seed, draft);
      results[i] =
        'reason' in checked
          ? { task_id: r.seed.task_id, parent_id: r.seed.instruction_id, origin: r.kind, text: draft.text, reason: checked.reason }
          : {
              task_id: r.seed.task_id,
              instruction_id: variantId(r.seed, r.kind, r.index),
              text: draft.text,
              key_spans: checked.spans,
              origin: r.kind,
              key_source: r.seed.key_source,
              parent_id: r.seed.instruction_id,
              ...(r.seed.label_set != null ? { label_set: r.seed.label_set } : {}),
            };
      options.onProgress?.(++done, requests.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 4, requests.length)) }, worker));
  const accepted = results.filter((x): x is InstructionRecord => 'instruction_id' in x);
  const rejected = results.filter((x): x is RejectedVariant => 'reason' in x);
  const seedIds = new Set(requests.map((r) => r.seed.instruction_id));
  // Seeds with their variants in set order, so a reader finds a task's instructions together.
  const kept = set.instructions.filter((r) => r.origin === 'seed' || !seedIds.has(r.parent_id ?? ''));
  const instructions = kept.flatMap((r) => (r.origin === 'seed' ? [r, ...accepted.filter((a) => a.parent_id === r.instruction_id)] : [r]));
  return { set: { ...set, instructions }, accepted, rejected };
}
