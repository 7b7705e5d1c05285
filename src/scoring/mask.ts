/**
 * Key-part masking: an instruction with its key spans replaced by a placeholder (or deleted), and
 * the full/masked token pair built with the prompt template. The response is tokenised on its own,
 * so both sequences end with exactly the same response tokens.
 */
import { InputError } from '../errors/index.js';
import { renderPrompt } from '../data/instructions.js';
import type { Tokenizer } from '../tokenizer/index.js';

/** A key part: characters [start, end) of the instruction (UTF-16 code units, as JS strings index). */
export interface KeySpan {
  start: number;
  end: number;
}

export type MaskMode = 'replace' | 'delete';

/**
 * Checks spans lie inside the instruction and do not overlap; returns them sorted by start.
 *
 * @example
 * validateSpans('Answer yes or no.', [{ start: 7, end: 16 }]);
 */
export function validateSpans(instruction: string, spans: readonly KeySpan[]): KeySpan[] {
  spans.forEach((s, i) => {
    if (!Number.isInteger(s.start) || !Number.isInteger(s.end) || s.start < 0 || s.end > instruction.length || s.start >= s.end)
      throw new InputError(`key span ${i} [${s.start}, ${s.end}) is not inside the instruction (length ${instruction.length})`);
  });
  const sorted = [...spans].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++)
    if (sorted[i].start < sorted[i - 1].end)
      throw new InputError(`key spans [${sorted[i - 1].start}, ${sorted[i - 1].end}) and [${sorted[i].start}, ${sorted[i].end}) overlap`);
  return sorted;
}

/**
 * The instruction with every key span replaced by `placeholder` (mode 'replace') or removed ('delete').
 *
 * @example
 * maskInstruction('Answer yes or no.', [{ start: 7, end: 16 }]); // 'Answer [MASK].'
 */
export function maskInstruction(instruction: string, spans: readonly KeySpan[], mode: MaskMode = 'replace', placeholder = '[MASK]'): string {
  let out = '';
  let at = 0;
  for (const s of validateSpans(instruction, spans)) {
    out += instruction.slice(at, s.start) + (mode === 'replace' ? placeholder : '');
    at = s.end;
  }
  return out + instruction.slice(at);
}

export interface ScoringRow {
  instruction: string;
  keySpans: readonly KeySpan[];
  input: string;
  output: string;
}

/** The token pair of one row, and the index of the first token where full and masked differ. */
export interface TokenPair {
  full: number[];
  masked: number[];
  responseLen: number;
  firstDiff: number;
}

/**
 * Tokenises a row into its full and masked sequences (prompt template + response).
 *
 * @example
 * const pair = buildPair(tokenizer, { instruction: 'Answer yes or no.', keySpans: [{ start: 7, end: 16 }], input: 'Is ice cold?', output: 'yes' });
 */
export function buildPair(tok: Tokenizer, row: ScoringRow, options: { mode?: MaskMode; placeholder?: string } = {}): TokenPair {
  const response = tok.encode(row.output);
  if (response.length === 0) throw new InputError('the response (output) is empty');
  const masked = maskInstruction(row.instruction, row.keySpans, options.mode, options.placeholder);
  const fullPrompt = tok.encode(renderPrompt({ instruction: row.instruction, input: row.input, output: row.output }), { addSpecialTokens: true });
  const maskedPrompt = tok.encode(renderPrompt({ instruction: masked, input: row.input, output: row.output }), { addSpecialTokens: true });
  const full = [...fullPrompt, ...response], maskedSeq = [...maskedPrompt, ...response];
  let firstDiff = 0;
  while (firstDiff < full.length && firstDiff < maskedSeq.length && full[firstDiff] === maskedSeq[firstDiff]) firstDiff++;
  return { full, masked: maskedSeq, responseLen: response.length, firstDiff };
}
