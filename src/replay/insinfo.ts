/**
 * InsCL's InsInfo: how informative an instruction is, from the rarity of its tags across the
 * instruction pool, `InsInfo(I) = Σ_{tag ∈ tags(I)} log(N / f_tag)` (N instructions in the pool,
 * f_tag of them carry the tag). Tags come from an annotator; the offline one here derives them from
 * the instruction's key parts and content words, so it needs no network and is deterministic.
 */
import type { KeySpan } from '../data/taskset.js';
import type { ChatClient } from '../llm/client.js';
import { replyJson } from '../llm/reply.js';

const STOP = new Set(
  'a an and are as at be but by for from has have if in into is it its of on or that the their then there these this those to was were will with you your given task answer output input write which what when where who why how each one two should must can may not only also than more most other such same some any all both either neither'.split(' '),
);

/**
 * Offline tags of an instruction: every key part (lower-cased, as `key:<text>`) and every content
 * word of four letters or more outside a small stop list (as `word:<w>`), each once.
 *
 * @example
 * offlineTags('Answer with "good" or "bad".', [{ start: 13, end: 17 }, { start: 23, end: 26 }]);
 * // ['key:good', 'key:bad', 'word:good']  (word tags exclude stop words)
 */
export function offlineTags(text: string, keySpans: readonly KeySpan[] = []): string[] {
  const tags = new Set<string>();
  for (const s of keySpans) {
    const t = text.slice(s.start, s.end).trim().toLowerCase();
    if (t) tags.add(`key:${t}`);
  }
  for (const w of text.toLowerCase().match(/\p{L}+/gu) ?? []) if (w.length >= 4 && !STOP.has(w)) tags.add(`word:${w}`);
  return [...tags];
}

/**
 * InsInfo of every instruction in a pool, given each one's tags.
 *
 * @example
 * insInfo([['a', 'b'], ['a'], ['c']]); // [log 3/2 + log 3, log 3/2, log 3]
 */
export function insInfo(tagsPerInstruction: readonly (readonly string[])[]): number[] {
  const N = tagsPerInstruction.length;
  const freq = new Map<string, number>();
  for (const tags of tagsPerInstruction) for (const t of new Set(tags)) freq.set(t, (freq.get(t) ?? 0) + 1);
  return tagsPerInstruction.map((tags) => [...new Set(tags)].reduce((s, t) => s + Math.log(N / freq.get(t)!), 0));
}

function tagList(content: string): string[] | string {
  const json = replyJson(content) as { tags?: unknown } | null;
  if (!json || !Array.isArray(json.tags)) return 'expected a JSON object with a "tags" list';
  if (json.tags.some((t) => typeof t !== 'string')) return 'every tag must be a string';
  return [...new Set((json.tags as string[]).map((t) => t.trim().toLowerCase()).filter(Boolean))];
}

/**
 * Tags of an instruction from an OpenAI-compatible endpoint (InsCL's annotator): short labels for
 * the task's skills, domain and answer constraints, lower-cased and de-duplicated. Answers go
 * through the client's disk cache, so a rerun asks nothing.
 *
 * @throws EndpointError when the endpoint keeps failing or keeps answering without a tag list
 * @example
 * const tags = await llmTags(new ChatClient({ cacheDir: 'runs/x/llm-cache' }), 'Answer "yes" or "no".');
 */
export async function llmTags(client: ChatClient, instruction: string): Promise<string[]> {
  const { content } = await client.complete(
    [
      { role: 'system', content: 'You tag task instructions for instruction tuning. You answer with JSON only.' },
      {
        role: 'user',
        content: [
          'List short tags (one to three words each) naming the skills, the domain and the answer constraints of the instruction below.',
          'Answer with a JSON object: {"tags": ["...", "..."]}.',
          '',
          'Instruction:',
          instruction,
        ].join('\n'),
      },
    ],
    { json: true, temperature: 0, validate: (c) => (typeof tagList(c) === 'string' ? (tagList(c) as string) : null) },
  );
  return tagList(content) as string[];
}
