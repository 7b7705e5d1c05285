/**
 * Prompt templates: how an instruction and an input become the text a model reads, and that text
 * as tokens that each carry their segment (template scaffolding, instruction, input, response) and
 * whether they belong to a key part. Three sources: the SuperNI default ("Definition: … Input: …
 * Output:"), a user template string with `{instruction}` and `{input}` slots, and the chat template
 * of a model's `tokenizer_config.json`, rendered with @huggingface/jinja as `transformers` does.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { InputError, KpigIOError, ModelConfigError } from '../errors/index.js';
import type { KeySpan } from '../data/taskset.js';
import type { Tokenizer } from '../tokenizer/index.js';

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
  return {
    name,
    addSpecialTokens: false,
    render(parts) {
      const sep = parts.input ? '\n\n' : '';
      const content = `${parts.instruction}${sep}${parts.input}`;
      const messages = [...(options.system ? [{ role: 'system', content: options.system }] : []), { role: 'user', content }];
      let text: string;
      try {
        text = template.render({ messages, add_generation_prompt: true, bos_token: options.bosToken ?? '', eos_token: options.eosToken ?? '' });
      } catch (err) {
        throw new InputError(`chat template '${name}' failed to render: ${(err as Error).message}`, { cause: err });
      }
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
  const read = async (path: string) => {
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const configPath = join(modelDir, 'tokenizer_config.json');
  const configText = await read(configPath);
  let config: Record<string, unknown> = {};
  if (configText !== null) {
    try {
      config = JSON.parse(configText);
    } catch (err) {
      throw new ModelConfigError(`${configPath}: not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  }
  let source: string | null = null;
  const raw = config.chat_template;
  if (typeof raw === 'string') source = raw;
  else if (Array.isArray(raw)) source = (raw.find((t) => t?.name === 'default') ?? raw[0])?.template ?? null;
  source ??= await read(join(modelDir, 'chat_template.jinja'));
  if (source === null) return superniTemplate();
  return chatTemplate(source, { bosToken: tokenText(config.bos_token), eosToken: tokenText(config.eos_token), name: `${modelDir} chat template` });
}

export interface TokenizedPrompt {
  tokens: number[];
  /** Per token, its {@link SEGMENT_CODES} code. */
  segments: Uint8Array;
  /** Per token, 1 when it overlaps a key span of the instruction. */
  keyMask: Uint8Array;
  /** Per position, 1 where it predicts a response token (or the EOS): the loss covers the response only. */
  weights: number[];
  /** Tokens of the prompt; the response starts here. */
  promptLength: number;
}

/**
 * The end character of each token of `ids` in `text`, or null when decoding does not give `text`
 * back (then offsets cannot be trusted). Tokens that complete no character (a byte of a multi-byte
 * character, a special token) end where the previous one did.
 */
function tokenEnds(tok: Tokenizer, ids: number[], text: string): number[] | null {
  const singles = ids.map((id) => tok.decode([id]));
  if (singles.join('') === text) {
    let at = 0;
    return singles.map((s) => (at += s.length));
  }
  const ends: number[] = [];
  let prev = 0;
  for (let i = 0; i < ids.length; i++) {
    const prefix = tok.decode(ids.slice(0, i + 1));
    // A prefix that stops inside a character decodes to a trailing U+FFFD the text does not have.
    const end = prefix.endsWith('\uFFFD') && text[prefix.length - 1] !== '\uFFFD' ? prev : prefix.length;
    if (end < prev || text.slice(0, end) !== prefix.slice(0, end)) return null;
    ends.push(end);
    prev = end;
  }
  return prev === text.length ? ends : null;
}

/**
 * Renders and tokenises one example: the prompt through `template` (tokens aligned to characters
 * by decoding, so a token's segment and key flag come from the characters it covers), then the
 * response on its own plus EOS, as `tokenizeExample` does. A tokenizer that does not decode its own
 * encoding back to the prompt gets each segment encoded separately instead. Returns null when the
 * sequence would exceed `maxLength` or the response is empty.
 *
 * @example
 * const t = tokenizePrompt(tok, superniTemplate(), { instruction: 'Answer "yes" or "no".', input: 'Is ice cold?', keySpans: [{ start: 7, end: 20 }] }, 'yes');
 * // t.segments: 0 for "Definition: ", 1 for the instruction, 2 for the input, 3 for "yes" + EOS; t.keyMask: 1 on '"yes" or "no"'
 */
export function tokenizePrompt(tok: Tokenizer, template: PromptTemplate, parts: PromptParts, output: string, options: { maxLength?: number } = {}): TokenizedPrompt | null {
  const rendered = template.render(parts);
  const segmentAt = (pos: number): number => SEGMENT_CODES[rendered.ranges.find((r) => r.start <= pos && pos < r.end)?.segment ?? 'template'];
  const keyIn = (start: number, end: number) => (rendered.keyRanges.some((k) => start < k.end && k.start < end) ? 1 : 0);
  let prompt = tok.encode(rendered.text, { addSpecialTokens: template.addSpecialTokens });
  let segs: number[] = [];
  let keys: number[] = [];
  const ends = tokenEnds(tok, prompt, rendered.text);
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
  const response = tok.encode(output);
  if (tok.eosIds.length) response.push(tok.eosIds[0]);
  if (response.length === 0) return null;
  const tokens = [...prompt, ...response];
  if (options.maxLength !== undefined && tokens.length > options.maxLength) return null;
  const weights = new Array<number>(tokens.length).fill(0);
  for (let t = prompt.length - 1; t < tokens.length - 1; t++) weights[t] = 1;
  return {
    tokens,
    segments: Uint8Array.from([...segs, ...response.map(() => SEGMENT_CODES.response)]),
    keyMask: Uint8Array.from([...keys, ...response.map(() => 0)]),
    weights,
    promptLength: prompt.length,
  };
}
