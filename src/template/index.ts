/**
 * Prompt templates: how an instruction and an input become the text a model reads, and that text
 * as tokens that each carry their segment (template scaffolding, instruction, input, response) and
 * whether they belong to a key part. Three sources: the SuperNI default ("Definition: … Input: …
 * Output:"), a user template string with `{instruction}` and `{input}` slots, and the chat template
 * of a model's `tokenizer_config.json`, rendered with @huggingface/jinja as `transformers` does.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Template } from '@huggingface/jinja';
import { InputError } from '../errors/index.js';
import type { KeySpan } from '../data/taskset.js';
import { readIfExists, readTokenizerConfig, type Tokenizer } from '../tokenizer/index.js';

export type Segment = 'template' | 'instruction' | 'input' | 'response';

/** The code of each segment in {@link TokenizedPrompt.segments}. */
export const SEGMENT_CODES: Readonly<Record<Segment, number>> = { template: 0, instruction: 1, input: 2, response: 3 };

export interface PromptParts {
  instruction: string;
  input: string;
  /** Key spans of the instruction (offsets into `instruction`). */
  keySpans?: readonly KeySpan[];
}

/** Characters [start, end) of the rendered text that hold one segment. */
export interface SegmentRange {
  segment: Segment;
  start: number;
  end: number;
}

export interface RenderedPrompt {
  text: string;
  /** Instruction and input ranges; every other character is template scaffolding. */
  ranges: SegmentRange[];
  /** The instruction's key spans moved to offsets into `text`. */
  keyRanges: KeySpan[];
}

export interface PromptTemplate {
  readonly name: string;
  /** Whether the tokenizer should add its special tokens (BOS); false when the template writes them itself. */
  readonly addSpecialTokens: boolean;
  render(parts: PromptParts): RenderedPrompt;
  /**
   * Chat templates only: the whole conversation with `output` as the assistant turn (no generation
   * prompt), as `apply_chat_template` renders it for training. It starts with `render(parts).text`;
   * what it writes after the response (e.g. `<|eot_id|>`, `<|im_end|>\n`) ends the response.
   * Templates without it end the response with the tokenizer's EOS token.
   */
  renderConversation?(parts: PromptParts, output: string): string;
}

/** Builds a rendered prompt from pieces, recording where the instruction and input land. */
function build(pieces: (string | { segment: 'instruction' | 'input'; text: string })[], parts: PromptParts): RenderedPrompt {
  let text = '';
  const ranges: SegmentRange[] = [];
  const keyRanges: KeySpan[] = [];
  for (const p of pieces) {
    if (typeof p === 'string') {
      text += p;
      continue;
    }
    if (p.text.length) ranges.push({ segment: p.segment, start: text.length, end: text.length + p.text.length });
    if (p.segment === 'instruction') for (const s of parts.keySpans ?? []) keyRanges.push({ ...s, start: s.start + text.length, end: s.end + text.length });
    text += p.text;
  }
  return { text, ranges, keyRanges };
}

/**
 * The SuperNI-style template, character for character the prompt of `renderPrompt`:
 * `Definition: <instruction>\n\nInput: <input>\nOutput: ` (the Input line is left out for an empty input).
 *
 * @example
 * superniTemplate().render({ instruction: 'Answer yes or no.', input: 'Is ice cold?' }).text;
 * // 'Definition: Answer yes or no.\n\nInput: Is ice cold?\nOutput: '
 */
export function superniTemplate(): PromptTemplate {
  return {
    name: 'superni',
    addSpecialTokens: true,
    render(parts) {
      return build(
        ['Definition: ', { segment: 'instruction', text: parts.instruction }, '\n\n', ...(parts.input ? ['Input: ', { segment: 'input' as const, text: parts.input }, '\n'] : []), 'Output: '],
        parts,
      );
    },
  };
}

/**
 * A template from a string with `{instruction}` (exactly once) and `{input}` (at most once) slots;
 * `{{` and `}}` stand for literal braces.
 *
 * @throws InputError for an unknown slot, a missing or repeated `{instruction}`, or a repeated `{input}`
 * @example
 * const t = userTemplate('### Task\n{instruction}\n### Input\n{input}\n### Answer\n');
 * t.render({ instruction: 'Add the numbers.', input: '2 3' }).text;
 */
export function userTemplate(source: string, name = 'user'): PromptTemplate {
  const pieces: (string | 'instruction' | 'input')[] = [];
  let literal = '';
  const re = /\{\{|\}\}|\{([^{}]*)\}/g;
  let at = 0;
  for (const m of source.matchAll(re)) {
    literal += source.slice(at, m.index);
    at = m.index + m[0].length;
    if (m[0] === '{{' || m[0] === '}}') {
      literal += m[0][0];
      continue;
    }
    if (m[1] !== 'instruction' && m[1] !== 'input') throw new InputError(`prompt template '${name}': unknown slot {${m[1]}} at offset ${m.index} (use {instruction} and {input}; write {{ and }} for braces)`);
    if (pieces.includes(m[1])) throw new InputError(`prompt template '${name}': {${m[1]}} appears more than once`);
    pieces.push(literal, m[1]);
    literal = '';
  }
  pieces.push(literal + source.slice(at));
  if (!pieces.includes('instruction')) throw new InputError(`prompt template '${name}': no {instruction} slot`);
  return {
    name,
    addSpecialTokens: true,
    render(parts) {
      return build(
        pieces.map((p) => (p === 'instruction' ? { segment: 'instruction' as const, text: parts.instruction } : p === 'input' ? { segment: 'input' as const, text: parts.input } : p)),
        parts,
      );
    },
  };
}

export interface ChatTemplateOptions {
  bosToken?: string;
  eosToken?: string;
  /** A system message placed before the user turn. */
  system?: string;
  name?: string;
}

/**
 * A model's chat template (Jinja, from `tokenizer_config.json`). The user turn holds the
 * instruction, a blank line and the input; the generation prompt is appended. The template writes
 * its own special tokens, so the tokenizer adds none (as `apply_chat_template` does).
 *
 * @throws InputError when the template cannot be parsed, fails to render, or does not carry the
 *   user turn verbatim (the segments could not be located)
 * @example
 * const t = chatTemplate('{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>');
 * t.render({ instruction: 'Say hi.', input: '' }).text; // '<|user|>Say hi.\n<|assistant|>'
 */
export function chatTemplate(source: string, options: ChatTemplateOptions = {}): PromptTemplate {
  const name = options.name ?? 'chat';
  let template: Template;
  try {
    template = new Template(source);
  } catch (err) {
    throw new InputError(`chat template '${name}' does not parse: ${(err as Error).message}`, { cause: err });
  }
  const contentOf = (parts: PromptParts) => `${parts.instruction}${parts.input ? '\n\n' : ''}${parts.input}`;
  const run = (parts: PromptParts, output: string | null): string => {
    const messages = [
      ...(options.system ? [{ role: 'system', content: options.system }] : []),
      { role: 'user', content: contentOf(parts) },
      ...(output === null ? [] : [{ role: 'assistant', content: output }]),
    ];
    try {
      return template.render({ messages, add_generation_prompt: output === null, bos_token: options.bosToken ?? '', eos_token: options.eosToken ?? '' });
    } catch (err) {
      throw new InputError(`chat template '${name}' failed to render: ${(err as Error).message}`, { cause: err });
    }
  };
  return {
    name,
    addSpecialTokens: false,
    renderConversation: (parts, output) => run(parts, output),
    render(parts) {
      const sep = parts.input ? '\n\n' : '';
      const content = contentOf(parts);
      const text = run(parts, null);
      const at = text.indexOf(content, options.system ? text.indexOf(options.system) + options.system.length : 0);
      if (at < 0) throw new InputError(`chat template '${name}' does not carry the user message verbatim, so its segments cannot be located`);
      return build(
        [text.slice(0, at), { segment: 'instruction', text: parts.instruction }, sep, { segment: 'input', text: parts.input }, text.slice(at + content.length)],
        parts,
      );
    },
  };
}

function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

/**
 * The prompt template of a model folder: its chat template (`chat_template` in
 * `tokenizer_config.json`, a named list's `default` entry, or a `chat_template.jinja` file) when it
 * has one, else the SuperNI default.
 *
 * @throws ModelConfigError when tokenizer_config.json is not valid JSON
 * @example
 * const template = await loadPromptTemplate('/models/Qwen2.5-0.5B-Instruct');
 */
export async function loadPromptTemplate(modelDir: string): Promise<PromptTemplate> {
  const config = await readTokenizerConfig(modelDir);
  let source: string | null = null;
  const raw = config.chat_template;
  if (typeof raw === 'string') source = raw;
  else if (Array.isArray(raw)) source = (raw.find((t) => t?.name === 'default') ?? raw[0])?.template ?? null;
  source ??= await readIfExists(join(modelDir, 'chat_template.jinja'));
  if (source === null) return superniTemplate();
  return chatTemplate(source, { bosToken: tokenText(config.bos_token), eosToken: tokenText(config.eos_token), name: `${modelDir} chat template` });
}

/** Whether a template spec names a built-in template (`superni`, `chat`) rather than a file. */
export function isNamedTemplate(spec: string): boolean {
  return spec === 'superni' || spec === 'chat';
}

/**
 * A template spec as a run records it: `superni` and `chat` as they are, a file as its absolute
 * path (resolved against `base`).
 *
 * @example
 * templateSpec('templates/qa.txt', '/srv/project'); // '/srv/project/templates/qa.txt'
 */
export function templateSpec(spec: string, base = process.cwd()): string {
  return isNamedTemplate(spec) ? spec : resolve(base, spec);
}

/**
 * The template a command or run asks for: `superni` (the default prompt), `chat` (the model
 * folder's chat template; an error when it has none), or a file: a `.jinja` file is a chat
 * template, anything else a {@link userTemplate} string with `{instruction}` and `{input}` slots.
 *
 * @throws InputError for a missing file, a model without a chat template, or a bad template
 * @example
 * const template = await resolvePromptTemplate('chat', '/models/Qwen2.5-0.5B-Instruct');
 */
export async function resolvePromptTemplate(spec: string, modelDir: string): Promise<PromptTemplate> {
  if (spec === 'superni') return superniTemplate();
  if (spec === 'chat') {
    const t = await loadPromptTemplate(modelDir);
    if (t.name === 'superni') throw new InputError(`--template chat: ${modelDir} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja); use superni or a template file`);
    return t;
  }
  let source: string;
  try {
    source = await readFile(spec, 'utf8');
  } catch (err) {
    throw new InputError(`template '${spec}' is neither superni, chat nor a readable file: ${(err as Error).message}`, { cause: err });
  }
  if (/\.jinja2?$/i.test(spec)) {
    const config = await readTokenizerConfig(modelDir);
    return chatTemplate(source, { bosToken: tokenText(config.bos_token), eosToken: tokenText(config.eos_token), name: spec });
  }
  return userTemplate(source, spec);
}

export interface TokenizedPrompt {
  tokens: number[];
  /** Per token, its {@link SEGMENT_CODES} code. */
  segments: Uint8Array;
  /** Per token, 1 when it overlaps a key span of the instruction. */
  keyMask: Uint8Array;
  /** Per position, 1 where it predicts a response token (or the token that ends it): the loss covers the response only. */
  weights: number[];
  /** Tokens of the prompt; the response starts here. */
  promptLength: number;
}

/**
 * The end character of each token of `ids` in `text`, or null when decoding does not give `text`
 * back (then offsets cannot be trusted). Special tokens decode to their own text (a chat
 * template writes them). Tokens that complete no character (a byte of a multi-byte character)
 * end where the previous one did.
 */
function tokenEnds(tok: Tokenizer, ids: number[], text: string): number[] | null {
  const all = { skipSpecialTokens: false };
  const singles = ids.map((id) => tok.decode([id], all));
  if (singles.join('') === text) {
    let at = 0;
    return singles.map((s) => (at += s.length));
  }
  const ends: number[] = [];
  let prev = 0;
  for (let i = 0; i < ids.length; i++) {
    const prefix = tok.decode(ids.slice(0, i + 1), all);
    // A prefix that stops inside a character decodes to a trailing U+FFFD the text does not have.
    const end = prefix.endsWith('\uFFFD') && text[prefix.length - 1] !== '\uFFFD' ? prev : prefix.length;
    if (end < prev || text.slice(0, end) !== prefix.slice(0, end)) return null;
    ends.push(end);
    prev = end;
  }
  return prev === text.length ? ends : null;
}

/** One example as tokens: the prompt (with each token's end character when known), then the response and the token that ends it. */
interface EncodedTurn {
  rendered: RenderedPrompt;
  prompt: number[];
  /** End character of each prompt token in `rendered.text`; null when unknown (or not asked for). */
  ends: number[] | null;
  /** Response tokens, the last of them the end of the response (EOS, or the chat template's end-of-turn token) when `ended`. */
  response: number[];
  ended: boolean;
}

/**
 * A chat template's conversation: encoded in one piece as `apply_chat_template` does, then cut
 * where the response starts (the first token reaching past the generation prompt) and after the
 * first token the template writes after the response. Trailing template text after that token
 * (ChatML's newline) is never predicted and is left out.
 */
function encodeChatTurn(tok: Tokenizer, template: PromptTemplate, parts: PromptParts, output: string): EncodedTurn | null {
  const rendered = template.render(parts);
  const conv = template.renderConversation!(parts, output);
  const p = rendered.text.length;
  if (!conv.startsWith(rendered.text))
    throw new InputError(`chat template '${template.name}' renders the conversation with another beginning than its generation prompt, so the response cannot be located`);
  const rest = conv.slice(p);
  const response = rest.startsWith(output) ? output : rest.startsWith(output.trim()) ? output.trim() : null;
  if (response === null) throw new InputError(`chat template '${template.name}' does not carry the response verbatim after the generation prompt`);
  if (!response) return null;
  const ids = tok.encode(conv, { addSpecialTokens: template.addSpecialTokens });
  const ends = tokenEnds(tok, ids, conv);
  const responseEnd = p + response.length;
  if (!ends) {
    // No character offsets: prompt, response and end encoded apart (a boundary may then differ from apply_chat_template).
    const end = tok.encode(rest.slice(response.length));
    const stop = end.length ? end[0] : tok.eosIds[0];
    return { rendered, prompt: tok.encode(rendered.text, { addSpecialTokens: template.addSpecialTokens }), ends: null, response: [...tok.encode(response), ...(stop === undefined ? [] : [stop])], ended: stop !== undefined };
  }
  let k = 0;
  while (k < ids.length && ends[k] <= p) k++;
  let j = k;
  while (j < ids.length && ends[j] <= responseEnd) j++;
  // j: the first token past the response, the end-of-turn token; a template that writes nothing after the response gets EOS.
  const tail = j < ids.length ? [ids[j]] : tok.eosIds.length ? [tok.eosIds[0]] : [];
  return { rendered, prompt: ids.slice(0, k), ends: ends.slice(0, k), response: [...ids.slice(k, j), ...tail], ended: tail.length > 0 };
}

/** Weight 1 at every position that predicts a token after the prompt (the response and its end), 0 elsewhere. */
function responseWeights(promptLength: number, length: number): number[] {
  const weights = new Array<number>(length).fill(0);
  for (let t = Math.max(promptLength - 1, 0); t < length - 1; t++) weights[t] = 1;
  return weights;
}

function encodeTurn(tok: Tokenizer, template: PromptTemplate, parts: PromptParts, output: string, withEnds: boolean): EncodedTurn | null {
  if (template.renderConversation) return encodeChatTurn(tok, template, parts, output);
  const rendered = template.render(parts);
  const prompt = tok.encode(rendered.text, { addSpecialTokens: template.addSpecialTokens });
  const response = tok.encode(output);
  if (response.length === 0) return null;
  if (tok.eosIds.length) response.push(tok.eosIds[0]);
  return { rendered, prompt, ends: withEnds ? tokenEnds(tok, prompt, rendered.text) : null, response, ended: tok.eosIds.length > 0 };
}

/**
 * The prompt tokens of `parts` for generation: the template's text with its generation prompt,
 * encoded as `apply_chat_template(..., add_generation_prompt=True)` does for a chat template.
 *
 * @example
 * const ids = promptTokens(tok, template, { instruction: 'Say hi.', input: '' });
 */
export function promptTokens(tok: Tokenizer, template: PromptTemplate, parts: PromptParts): number[] {
  return tok.encode(template.render(parts).text, { addSpecialTokens: template.addSpecialTokens });
}

/**
 * Token ids that end a generated response under `template`: `modelEos` (the model config's EOS
 * ids), the tokenizer's EOS ids, and for a chat template the special token it writes after an
 * assistant turn (Llama 3's `<|eot_id|>`, ChatML's `<|im_end|>`).
 *
 * @example
 * const gens = await model.generate(prompts, { eosIds: stopTokens(tok, template, model.info.eosIds) });
 */
export function stopTokens(tok: Tokenizer, template: PromptTemplate, modelEos: readonly number[] = []): number[] {
  const ids = new Set([...modelEos, ...tok.eosIds]);
  if (template.renderConversation) {
    const turn = encodeChatTurn(tok, template, { instruction: 'x', input: '' }, 'y');
    const last = turn?.response[turn.response.length - 1];
    if (last !== undefined && tok.decode([last]) === '') ids.add(last);
  }
  return [...ids];
}

/**
 * Prompt + response tokens of one example and the weight of each position (1 where it predicts a
 * response token or the token that ends the response), without segments: the training form of
 * {@link tokenizePrompt}. Null when the response is empty or the sequence exceeds `maxLength`.
 *
 * @example
 * const seq = encodeExample(tok, superniTemplate(), { instruction: 'Answer yes or no.', input: 'Is ice cold?' }, 'yes');
 */
export function encodeExample(
  tok: Tokenizer,
  template: PromptTemplate,
  parts: PromptParts,
  output: string,
  maxLength = Infinity,
): { tokens: number[]; weights: number[]; promptLength: number; /** 1 when the last token ends the response (EOS or end-of-turn), else 0. */ endTokens: number } | null {
  const turn = encodeTurn(tok, template, parts, output, false);
  if (!turn || turn.response.length === 0) return null;
  const tokens = [...turn.prompt, ...turn.response];
  if (tokens.length > maxLength) return null;
  return { tokens, weights: responseWeights(turn.prompt.length, tokens.length), promptLength: turn.prompt.length, endTokens: turn.ended ? 1 : 0 };
}

/**
 * Renders and tokenises one example: the prompt through `template` (tokens aligned to characters
 * by decoding, so a token's segment and key flag come from the characters it covers), then the
 * response and the token that ends it. For SuperNI and user templates the response is encoded on
 * its own plus EOS, as `tokenizeExample` does; a chat template's conversation is encoded in one
 * piece, token for token what `apply_chat_template` gives, up to its end-of-turn token. A
 * tokenizer that does not decode its own encoding back to the prompt gets each segment encoded
 * separately instead. Returns null when the sequence would exceed `maxLength` or the response is empty.
 *
 * @example
 * const t = tokenizePrompt(tok, superniTemplate(), { instruction: 'Answer "yes" or "no".', input: 'Is ice cold?', keySpans: [{ start: 7, end: 20 }] }, 'yes');
 * // t.segments: 0 for "Definition: ", 1 for the instruction, 2 for the input, 3 for "yes" + EOS; t.keyMask: 1 on '"yes" or "no"'
 */
export function tokenizePrompt(tok: Tokenizer, template: PromptTemplate, parts: PromptParts, output: string, options: { maxLength?: number } = {}): TokenizedPrompt | null {
  const turn = encodeTurn(tok, template, parts, output, true);
  if (!turn || turn.response.length === 0) return null;
  const { rendered, response, ends } = turn;
  let prompt = turn.prompt;
  const segmentAt = (pos: number): number => SEGMENT_CODES[rendered.ranges.find((r) => r.start <= pos && pos < r.end)?.segment ?? 'template'];
  const keyIn = (start: number, end: number) => (rendered.keyRanges.some((k) => start < k.end && k.start < end) ? 1 : 0);
  let segs: number[] = [];
  let keys: number[] = [];
  if (ends) {
    let prev = 0;
    prompt.forEach((id, i) => {
      const special = tok.decode([id]) === '' && tok.decode([id], { skipSpecialTokens: false }) !== '';
      const [s, e] = ends[i] > prev ? [prev, ends[i]] : [prev, prev + 1];
      segs.push(special ? SEGMENT_CODES.template : segmentAt(s));
      keys.push(special ? 0 : keyIn(s, e));
      prev = ends[i];
    });
  } else {
    // Cut at every segment and key boundary so that no token straddles two of them.
    const cuts = [...new Set([0, rendered.text.length, ...rendered.ranges.flatMap((r) => [r.start, r.end]), ...rendered.keyRanges.flatMap((k) => [k.start, k.end])])].sort((a, b) => a - b);
    prompt = template.addSpecialTokens && tok.bosId !== null ? [tok.bosId] : [];
    segs = prompt.map(() => SEGMENT_CODES.template);
    keys = prompt.map(() => 0);
    for (let i = 0; i + 1 < cuts.length; i++) {
      const ids = tok.encode(rendered.text.slice(cuts[i], cuts[i + 1]));
      prompt.push(...ids);
      for (let k = 0; k < ids.length; k++) {
        segs.push(segmentAt(cuts[i]));
        keys.push(keyIn(cuts[i], cuts[i + 1]));
      }
    }
  }
  const tokens = [...prompt, ...response];
  if (options.maxLength !== undefined && tokens.length > options.maxLength) return null;
  return {
    tokens,
    weights: responseWeights(prompt.length, tokens.length),
    segments: Uint8Array.from([...segs, ...response.map(() => SEGMENT_CODES.response)]),
    keyMask: Uint8Array.from([...keys, ...response.map(() => 0)]),
    promptLength: prompt.length,
  };
}

/**
 * A fingerprint of what a template writes: the SHA-256 of its rendering of placeholder parts (and
 * of the conversation form for chat templates). Two specs that render alike share it.
 *
 * @example
 * templateFingerprint(superniTemplate()); // 'a41c…'
 */
export function templateFingerprint(t: PromptTemplate): string {
  const parts = { instruction: '\u0001', input: '\u0002' };
  return createHash('sha256').update(`${t.render(parts).text}\u0000${t.renderConversation?.(parts, '\u0003') ?? ''}`).digest('hex');
}
