/**
 * `scoreTable`: information gain for every row of an Arrow table of instances with key spans.
 * Rows are tokenised into full/masked pairs, grouped by instruction, packed into batches by token
 * budget, scored by the native engine (its prefix cache computes a shared instruction once), and
 * returned as an Arrow table keyed by the input ids, in input order. A bad row gets
 * status 'error' and a message; the rest of its batch is still scored.
 */
import { Field, RecordBatch, Schema, Struct, Table, Utf8, makeData, makeVector, vectorFromArray, type Vector } from 'apache-arrow';
import { InputError, KpigError } from '../errors/index.js';
import type { Model } from '../model/model.js';
import { spanOffsets } from '../keyparts/explicit.js';
import type { PromptTemplate } from '../template/index.js';
import { buildPair, type KeySpan, type MaskMode, type TokenPair } from './mask.js';
import { scorePairs, type IgScore } from './pairs.js';

export const SCORE_INPUT_COLUMNS = ['task_id', 'instance_id', 'instruction', 'key_spans', 'input', 'output'] as const;

export interface ScoreTableOptions {
  /** Token budget of one engine call: Σ over its pairs of len(full) + len(masked) (default 16384). */
  maxTokensPerBatch?: number;
  maskMode?: MaskMode;
  placeholder?: string;
  /** The prompt template (default: the SuperNI prompt). */
  template?: PromptTemplate;
  onProgress?: (p: { rows: number; totalRows: number; tokens: number; elapsedSeconds: number }) => void;
  signal?: AbortSignal;
}

/** The key spans of one row (an Arrow list of structs, int32 or int64 offsets); a bad offset is the row's InputError. */
function spansOf(value: unknown, row: number): KeySpan[] {
  if (value === null || value === undefined) return [];
  const items = typeof value === 'object' && value !== null && 'toArray' in value ? (value as { toArray(): unknown[] }).toArray() : (value as unknown[]);
  return Array.from(items, (s, i) => {
    const { start, end } = spanOffsets(s, `row ${row}`, i);
    return { start, end };
  });
}

/**
 * Scores every row of `table` (columns task_id, instance_id, instruction, key_spans
 * list<{start, end}>, input, output) and returns a table with task_id, instance_id, status, error,
 * ce_full, ce_masked, ig_ce, ig_kl, ig_js, entropy_full, entropy_masked, n_tokens, shared_prefix,
 * first_diff — one row per input row, in input order.
 *
 * @example
 * const scores = await scoreTable(model, tableFromIPC(readFileSync('instances.arrow')));
 */
export async function scoreTable(model: Model, table: Table, options: ScoreTableOptions = {}): Promise<Table> {
  const names = table.schema.fields.map((f) => f.name);
  const missing = SCORE_INPUT_COLUMNS.filter((c) => !names.includes(c));
  if (missing.length) throw new InputError(`missing column(s): ${missing.join(', ')} (the table has: ${names.join(', ')})`);
  const tok = model.tokenizer;
  if (!tok) throw new InputError('scoring needs the model tokenizer; load the model with one');
  const budget = options.maxTokensPerBatch ?? 16384;
  if (!Number.isInteger(budget) || budget < 2) throw new InputError(`maxTokensPerBatch must be an integer ≥ 2, got ${budget}`);
  const n = table.numRows;
  const col = (name: string) => table.getChild(name)!;
  const [ins, spans, inp, outp] = [col('instruction'), col('key_spans'), col('input'), col('output')];
  const scores: (IgScore | null)[] = new Array(n).fill(null);
  const errors: (string | null)[] = new Array(n).fill(null);
  const firstDiff = new Int32Array(n).fill(-1);
  const t0 = Date.now();
  let tokensDone = 0;
  let rowsDone = 0;
  const flush = async (batch: { row: number; pair: TokenPair }[]) => {
    if (batch.length === 0) return;
    if (options.signal?.aborted) throw new KpigError('E_CANCELLED', `scoring was cancelled after ${rowsDone} rows`);
    let result: IgScore[] | null = null;
    try {
      result = await scorePairs(model, batch.map((b) => ({ full: b.pair.full, masked: b.pair.masked, responseLen: b.pair.responseLen })));
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
    }
    for (let i = 0; i < batch.length; i++) {
      const { row, pair } = batch[i];
      if (result) scores[row] = result[i];
      else {
        // Isolate the bad row(s): score this batch's rows one by one.
        try {
          scores[row] = (await scorePairs(model, [{ full: pair.full, masked: pair.masked, responseLen: pair.responseLen }]))[0];
        } catch (err) {
          if (!(err instanceof InputError)) throw err;
          errors[row] = err.message.replace(/^pair 0: /, '');
        }
      }
      tokensDone += pair.full.length + pair.masked.length;
    }
    rowsDone += batch.length;
    options.onProgress?.({ rows: rowsDone, totalRows: n, tokens: tokensDone, elapsedSeconds: (Date.now() - t0) / 1000 });
  };
  let batch: { row: number; pair: TokenPair }[] = [];
  let batchTokens = 0;
  // Rows of one instruction go through the engine together (stable: input order inside an
  // instruction), so its prefix cache computes each instruction, and each masked variant, once.
  const instructionOf = Array.from({ length: n }, (_, row) => String(ins.get(row) ?? ''));
  const order = Array.from({ length: n }, (_, row) => row).sort((a, b) =>
    instructionOf[a] < instructionOf[b] ? -1 : instructionOf[a] > instructionOf[b] ? 1 : a - b,
  );
  for (const row of order) {
    let pair: TokenPair;
    try {
      pair = buildPair(
        tok,
        { instruction: instructionOf[row], keySpans: spansOf(spans.get(row), row), input: String(inp.get(row) ?? ''), output: String(outp.get(row) ?? '') },
        { mode: options.maskMode, placeholder: options.placeholder, template: options.template },
      );
      const longest = Math.max(pair.full.length, pair.masked.length);
      if (longest > model.info.maxPositions)
        throw new InputError(`the sample has ${longest} tokens, more than the model's context of ${model.info.maxPositions}`);
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      errors[row] = err.message;
      rowsDone++;
      continue;
    }
    firstDiff[row] = pair.firstDiff;
    const cost = pair.full.length + pair.masked.length;
    if (batchTokens + cost > budget && batch.length > 0) {
      await flush(batch);
      batch = [];
      batchTokens = 0;
    }
    batch.push({ row, pair });
    batchTokens += cost;
  }
  await flush(batch);

  const num = (get: (s: IgScore) => number) => makeVector(Float64Array.from(scores, (s) => (s ? get(s) : NaN)));
  const int = (get: (s: IgScore) => number) => makeVector(Int32Array.from(scores, (s) => (s ? get(s) : -1)));
  const ids = (name: string) => vectorFromArray(Array.from({ length: n }, (_, i) => col(name).get(i)), col(name).type);
  const columns: [string, Vector][] = [
    ['task_id', ids('task_id')],
    ['instance_id', ids('instance_id')],
    ['status', vectorFromArray(errors.map((e) => (e ? 'error' : 'ok')), new Utf8())],
    ['error', vectorFromArray(errors, new Utf8())],
    ['ce_full', num((s) => s.ceFull)],
    ['ce_masked', num((s) => s.ceMasked)],
    ['ig_ce', num((s) => s.igCe)],
    ['ig_kl', num((s) => s.igKl)],
    ['ig_js', num((s) => s.igJs)],
    ['entropy_full', num((s) => s.entropyFull)],
    ['entropy_masked', num((s) => s.entropyMasked)],
    ['n_tokens', int((s) => s.nTokens)],
    ['shared_prefix', int((s) => s.sharedPrefix)],
    ['first_diff', makeVector(firstDiff)],
  ];
  // One fixed schema (every field nullable) whatever the chunk holds, so scored chunks can be
  // appended to one Arrow stream.
  const schema = new Schema(columns.map(([name, v]) => new Field(name, v.type, true)));
  const children = columns.map(([, v]) => (v.data.length === 1 ? v.data[0] : makeVector(v.toArray()).data[0]));
  const data = makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children });
  return new Table(schema, [new RecordBatch(schema, data)]);
}
