/**
 * Instruction data for supervised fine-tuning: rows of (instruction, input, output) read from JSONL
 * or Arrow IPC, with a field mapping, and the SuperNI-style prompt that turns a row into tokens with
 * the loss on the response only.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { arrowTableFromBytes } from '../io/arrow.js';
import { InputError, KpigIOError } from '../errors/index.js';
import { encodeExample, superniTemplate, type PromptTemplate } from '../template/index.js';
import type { Tokenizer } from '../tokenizer/index.js';

const SUPERNI = superniTemplate();

export interface InstructionExample {
  instruction: string;
  input: string;
  output: string;
}

/** Which source field holds each part (defaults: instruction, input, output). */
export interface FieldMap {
  instruction?: string;
  input?: string;
  output?: string;
}

function fieldsOf(map: FieldMap = {}) {
  return { instruction: map.instruction ?? 'instruction', input: map.input ?? 'input', output: map.output ?? 'output' };
}

function text(value: unknown, where: string, field: string, required: boolean): string {
  if (value === undefined || value === null) {
    if (required) throw new InputError(`${where}: field '${field}' is missing`);
    return '';
  }
  if (Array.isArray(value) && value.length > 0 && typeof value[0] === 'string') return value[0]; // SuperNI-style output lists
  if (typeof value !== 'string') throw new InputError(`${where}: field '${field}' must be a string, got ${typeof value}`);
  return value;
}

/**
 * Reads instruction rows from a `.jsonl` file (one JSON object per line) or an Arrow IPC file
 * (`.arrow` / `.feather` / `.ipc`). `output` may be a string or a list (its first entry is used).
 * `input` may be absent.
 *
 * @example
 * const rows = await readInstructions('data/train.jsonl', { instruction: 'prompt', output: 'completion' });
 */
export async function readInstructions(path: string, map?: FieldMap): Promise<InstructionExample[]> {
  const f = fieldsOf(map);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`);
  }
  const ext = extname(path).toLowerCase();
  const rows: InstructionExample[] = [];
  if (ext === '.arrow' || ext === '.feather' || ext === '.ipc') {
    const table = arrowTableFromBytes(bytes, path);
    const names = table.schema.fields.map((x) => x.name);
    const missing = [f.instruction, f.output].filter((n) => !names.includes(n));
    if (missing.length) throw new InputError(`${path}: missing column(s) ${missing.join(', ')} (columns: ${names.join(', ')})`);
    const ins = table.getChild(f.instruction)!, inp = names.includes(f.input) ? table.getChild(f.input) : null, out = table.getChild(f.output)!;
    for (let i = 0; i < table.numRows; i++) {
      const where = `${path} row ${i}`;
      const o = out.get(i);
      rows.push({
        instruction: text(ins.get(i), where, f.instruction, true),
        input: text(inp?.get(i), where, f.input, false),
        output: text(o && typeof o === 'object' && 'toArray' in o ? Array.from(o.toArray() as string[]) : o, where, f.output, true),
      });
    }
  } else if (ext === '.jsonl' || ext === '.json' || ext === '.ndjson') {
    const lines = bytes.toString('utf8').split('\n');
    lines.forEach((line, i) => {
      if (!line.trim()) return;
      const where = `${path}:${i + 1}`;
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(line);
      } catch (err) {
        throw new InputError(`${where}: not valid JSON: ${(err as Error).message}`);
      }
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new InputError(`${where}: each line must be a JSON object`);
      rows.push({
        instruction: text(obj[f.instruction], where, f.instruction, true),
        input: text(obj[f.input], where, f.input, false),
        output: text(obj[f.output], where, f.output, true),
      });
    });
  } else {
    throw new InputError(`${path}: unknown data format '${ext}' (use .jsonl or .arrow)`);
  }
  if (rows.length === 0) throw new InputError(`${path}: no rows`);
  return rows;
}

/**
 * The SuperNI-style prompt ("Definition: … Input: … Output:") of a row, without its response: the
 * default template of src/template/, the one prompt renderer of training, scoring and evaluation.
 *
 * @example
 * renderPrompt({ instruction: 'Answer yes or no.', input: 'Is ice cold?', output: 'yes' });
 */
export function renderPrompt(ex: InstructionExample): string {
  return superniTemplate().render({ instruction: ex.instruction, input: ex.input }).text;
}

/** A tokenised training sequence and the weight of each position (1 where it predicts a response token). */
export interface TrainingSequence {
  tokens: number[];
  weights: number[];
  /**
   * A further loss on the sequence's final-normed hidden states (`tokens.length × hidden`,
   * row-major, under the current weights): its value and its gradient, which training adds to the
   * step like the weighted cross-entropy (divided by the same normalizer). GeRe's activation
   * constraint is one.
   */
  hidden?: (states: Float32Array) => { loss: number; grad: Float32Array };
}

/**
 * Tokenises a row as prompt + response + its end (EOS, or a chat template's end-of-turn token)
 * with weight 1 on every position that predicts a response token or that end, 0 on the prompt:
 * the loss covers the response only. The prompt is `template`'s (default: the SuperNI prompt of
 * {@link renderPrompt}). Returns null when the sequence would exceed `maxLength` tokens or the
 * response is empty.
 *
 * @example
 * const seq = tokenizeExample(tokenizer, row, 512);
 */
export function tokenizeExample(tok: Tokenizer, ex: InstructionExample, maxLength: number, template: PromptTemplate = SUPERNI): TrainingSequence | null {
  const seq = encodeExample(tok, template, { instruction: ex.instruction, input: ex.input }, ex.output, maxLength);
  return seq && { tokens: seq.tokens, weights: seq.weights };
}
