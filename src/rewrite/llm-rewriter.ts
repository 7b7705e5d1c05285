/**
 * The LLM rewriter: each variant is one chat request to an OpenAI-compatible endpoint, through a
 * {@link ChatClient} whose disk cache makes reruns free and identical. The model is told which key
 * parts to copy verbatim; whether it did is checked afterwards (checkVariant), not trusted.
 */
import type { ChatClient } from '../llm/client.js';
import { replyText } from '../llm/reply.js';
import type { RewriteDraft, RewriteKind, RewriteRequest, Rewriter } from './variant.js';

const GOALS: Record<RewriteKind, string> = {
  concretizing: 'Make the instruction more concrete and specific: say precisely what the input looks like and what the answer must address.',
  reasoning: 'Rewrite the instruction so that it asks the solver to reason step by step before answering, while the answer itself keeps the same form.',
  constraint: 'Add one more constraint on the answer that correct answers to the original instruction already satisfy.',
  breadth: 'Reword the general description in different words and sentence structure; change nothing that decides the answer.',
};

export interface LlmRewriterOptions {
  /** Sampling temperature (default 0.7: variants of one kind should differ; the cache keeps them fixed). */
  temperature?: number;
  maxTokens?: number;
}

/**
 * A rewriter backed by a chat model. Each (seed, kind, index) is a distinct request, so its answer
 * is cached separately.
 *
 * @example
 * const llm = new ChatClient({ cacheDir: 'cache/llm' }); // endpoint and model from KPIG_LLM_* variables
 * const { set: diverse, rejected } = await diversify(set, llmRewriter(llm), { perKind: 2 });
 */
export function llmRewriter(client: ChatClient, options: LlmRewriterOptions = {}): Rewriter {
  return {
    name: `llm:${client.model}`,
    async rewrite(req: RewriteRequest): Promise<RewriteDraft> {
      const keys = req.seed.key_spans.map((s) => req.seed.text.slice(s.start, s.end));
      const lines = [
        `Rewrite the task instruction below. ${GOALS[req.kind]}`,
        keys.length
          ? `These key parts must appear in your rewrite exactly as written, character for character (quotes and capitals included):\n${keys.map((k, i) => `${i + 1}. ${k}`).join('\n')}`
          : 'The instruction has no marked key parts; keep its meaning.',
        `This is variant number ${req.index + 1} of this kind (seed ${req.runSeed}); make it differ from the others.`,
        'Answer with the rewritten instruction only, no preamble.',
        '',
        'Instruction:',
        req.seed.text,
      ];
      const { content } = await client.complete([{ role: 'user', content: lines.join('\n') }], {
        temperature: options.temperature ?? 0.7,
        maxTokens: options.maxTokens,
        validate: (c) => (replyText(c, req.seed.text) ? null : 'the rewrite is empty'),
      });
      return { text: replyText(content, req.seed.text) };
    },
  };
}
