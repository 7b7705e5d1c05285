/**
 * Scoring inputs larger than memory: rows are read a chunk at a time (Arrow IPC record batches or
 * JSONL lines), scored with {@link scoreTable}, and appended to an Arrow IPC file on disk (the IPC
 * stream format for a `.arrows` name). The output appears under its final name only when complete
 * (temp file + rename).
 */
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { extname } from 'node:path';
import { finished } from 'node:stream/promises';
import { Field, Int32, List, RecordBatch, RecordBatchFileWriter, RecordBatchReader, RecordBatchStreamWriter, Schema, Struct, Table, Utf8, vectorFromArray } from 'apache-arrow';
import { InputError, KpigIOError } from '../errors/index.js';
import { spanOffsets } from '../keyparts/explicit.js';
import { arrowReadError, outputFormat, readArrowTable } from '../io/arrow.js';
import { tempSiblingPath } from '../io/atomic.js';
import { ParquetTableWriter } from '../io/parquet.js';
import type { Model } from '../model/model.js';
import { scoreTable, type ScoreTableOptions } from './table.js';

const SPAN_TYPE = new List(new Field('item', new Struct([new Field('start', new Int32()), new Field('end', new Int32())])));

/**
 * JSONL rows → Arrow tables of `chunkRows` rows with the scoring input columns; with `range`, only
 * chunks [start, end) (the rows of the others are counted, not parsed, and reading stops at end).
 */
async function* jsonlChunks(path: string, chunkRows: number, range?: ChunkRange): AsyncGenerator<Table> {
  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let rows: Record<string, unknown>[] = [];
  let lineNo = 0;
  const table = () =>
    new Table({
      task_id: vectorFromArray(rows.map((r) => String(r.task_id ?? '')), new Utf8()),
      instance_id: vectorFromArray(rows.map((r) => String(r.instance_id ?? '')), new Utf8()),
      instruction: vectorFromArray(rows.map((r) => String(r.instruction ?? '')), new Utf8()),
      key_spans: vectorFromArray(rows.map((r) => r.key_spans as { start: number; end: number }[]), SPAN_TYPE),
      input: vectorFromArray(rows.map((r) => String(r.input ?? '')), new Utf8()),
      output: vectorFromArray(rows.map((r) => (Array.isArray(r.output) ? String(r.output[0] ?? '') : String(r.output ?? ''))), new Utf8()),
    });
  const skipRows = range ? range.start * chunkRows : 0, endRow = range ? range.end * chunkRows : Infinity;
  let row = 0;
  for await (const line of lines) {
    lineNo++;
    const text = lineNo === 1 && line.startsWith('\uFEFF') ? line.slice(1) : line;
    if (!text.trim()) continue;
    if (row++ < skipRows) continue;
    if (row > endRow) break;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(text);
    } catch (err) {
      throw new InputError(`${path}:${lineNo}: not valid JSON: ${(err as Error).message}`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new InputError(`${path}:${lineNo}: a row must be a JSON object`);
    const missing = ['task_id', 'instance_id', 'instruction', 'key_spans', 'output'].filter((k) => !(k in obj));
    if (missing.length) throw new InputError(`${path}:${lineNo}: missing field(s) ${missing.join(', ')}`);
    const spans = obj.key_spans;
    if (!Array.isArray(spans)) throw new InputError(`${path}:${lineNo}: key_spans must be a list of {start, end}`);
    // Offsets are checked here, before they are packed into Int32 columns: no rounding, coercion or wrap-around.
    obj.key_spans = spans.map((s, i) => {
      const { start, end } = spanOffsets(s, `${path}:${lineNo}`, i);
      return { start, end };
    });
    rows.push(obj);
    if (rows.length === chunkRows) {
      yield table();
      rows = [];
    }
  }
  if (rows.length) yield table();
}

/** The scoring input columns with no rows. */
function emptyInput(): Table {
  const utf8 = () => vectorFromArray([] as string[], new Utf8());
  return new Table({ task_id: utf8(), instance_id: utf8(), instruction: utf8(), key_spans: vectorFromArray([], SPAN_TYPE), input: utf8(), output: utf8() });
}

/** A record batch as tables of at most `chunkRows` rows. */
function* slices(table: Table, chunkRows: number): Generator<Table> {
  if (table.numRows <= chunkRows) return yield table;
  for (let r = 0; r < table.numRows; r += chunkRows) yield table.slice(r, Math.min(table.numRows, r + chunkRows));
}

/** Chunks [start, end) of an input (counted from 0). */
export interface ChunkRange {
  start: number;
  end: number;
}

/** The chunks of `all` with index in `range` (all of them without one). */
async function* inRange(all: AsyncIterable<Table>, range?: ChunkRange): AsyncGenerator<Table> {
  let i = 0;
  for await (const chunk of all) {
    if (range && i >= range.end) return;
    if (!range || i >= range.start) yield chunk;
    i++;
  }
}

/** Arrow IPC (file or stream format) → one table per record batch, a batch longer than `chunkRows` in slices. */
async function* arrowChunks(path: string, chunkRows: number): AsyncGenerator<Table> {
  // View and large types (polars' default) are beyond apache-arrow's streaming reader: such a file
  // is decoded whole (arrowTableFromBytes rebuilds the plain types), then handed out batch by batch.
  const whole = async function* () {
    const table = await readArrowTable(path);
    for (const batch of table.batches) yield* slices(new Table(batch), chunkRows);
  };
  let reader;
  try {
    reader = await RecordBatchReader.from(createReadStream(path));
  } catch (err) {
    if (/Unrecognized type/.test((err as Error).message)) return yield* whole();
    throw arrowReadError(path, err);
  }
  let yielded = 0;
  try {
    for await (const batch of reader) {
      yielded++;
      yield* slices(new Table(batch), chunkRows);
    }
  } catch (err) {
    if (/Unrecognized type/.test((err as Error).message)) {
      if (yielded === 0) return yield* whole();
      throw arrowReadError(path, err);
    }
    throw new InputError(`${path}: corrupt Arrow data: ${(err as Error).message}`);
  }
}

/**
 * The scoring input of a file, a chunk at a time: `.jsonl` (`chunkRows` rows per chunk) or Arrow IPC
 * (`.arrow` / `.arrows` / `.ipc` / `.feather`, one chunk per record batch, a batch of more than
 * `chunkRows` rows in slices of `chunkRows`). The chunks are a pure function of the file and
 * `chunkRows`, which is what sharded scoring splits on; `range` keeps chunks [start, end) only.
 *
 * @example
 * for await (const chunk of readScoringChunks('instances.jsonl')) console.log(chunk.numRows);
 */
export function readScoringChunks(path: string, chunkRows = 4096, range?: ChunkRange): AsyncGenerator<Table> {
  try {
    if (!statSync(path).isFile()) throw new Error('not a file');
  } catch (err) {
    throw new KpigIOError(`cannot read the scoring input ${path}: ${(err as Error).message}`, { cause: err });
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson') return jsonlChunks(path, chunkRows, range);
  if (['.arrow', '.arrows', '.ipc', '.feather'].includes(ext)) return inRange(arrowChunks(path, chunkRows), range);
  throw new InputError(`${path}: unknown input format '${ext}' (use .jsonl or .arrow)`);
}

/**
 * Scores chunks as they come and appends each scored chunk to the table file at `outPath`: Arrow
 * IPC file format, an IPC stream when the name ends in `.arrows`, Parquet for `.parquet`
 * ({@link outputFormat}). Memory stays bounded by one chunk. Resolves with the number of rows
 * written (one per input row). The prefix cache's store is emptied before every chunk, so a chunk's
 * scores do not depend on the chunks before it (a shard scores its chunks as the whole run does).
 * `schemaMetadata` goes into the Arrow schema (a shard's manifest); Parquet output takes none.
 *
 * @example
 * const rows = await scoreStream(model, readScoringChunks('big.jsonl'), 'scores.arrow');
 */
export async function scoreStream(
  model: Model,
  chunks: AsyncIterable<Table>,
  outPath: string,
  options: ScoreTableOptions & { onChunk?: (rowsDone: number) => void; schemaMetadata?: Map<string, string> } = {},
): Promise<number> {
  const sink = tableSink(outPath, options.schemaMetadata);
  let rows = 0;
  let chunksSeen = 0;
  try {
    for await (const chunk of chunks) {
      model.clearPrefixCache();
      const scored = await scoreTable(model, chunk, options);
      sink.write(scored);
      rows += scored.numRows;
      chunksSeen++;
      options.onChunk?.(rows);
    }
    // An empty input still gets the output schema, so readers see the columns and zero rows.
    if (chunksSeen === 0) sink.write(await scoreTable(model, emptyInput(), options));
    await sink.finish();
  } catch (err) {
    await sink.abort();
    if (err instanceof InputError || (err as { code?: string }).code?.startsWith?.('E_')) throw err;
    throw new KpigIOError(`scoring into ${outPath} failed: ${(err as Error).message}`, { cause: err });
  }
  return rows;
}

/** Tables appended to one output file, which appears under its name only when finished. */
export interface TableSink {
  write(table: Table): void;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * A sink for `outPath` in the format its name asks for ({@link outputFormat}); `metadata` goes into
 * the Arrow schema (Parquet output takes none).
 *
 * @throws InputError for metadata with a Parquet name
 * @example
 * const sink = tableSink('scores.arrow');
 * sink.write(table);
 * await sink.finish();
 */
export function tableSink(outPath: string, metadata?: Map<string, string>): TableSink {
  if (outputFormat(outPath) !== 'parquet') return arrowSink(outPath, metadata);
  if (metadata) throw new InputError(`${outPath}: schema metadata (a shard manifest) needs Arrow output (.arrow or .arrows), not Parquet`);
  return parquetSink(outPath);
}

/** Arrow IPC into a temporary sibling, renamed into place at the end; `metadata` on the schema. */
function arrowSink(outPath: string, metadata?: Map<string, string>): TableSink {
  const temp = tempSiblingPath(outPath);
  const file = createWriteStream(temp);
  // `.arrows` is the IPC stream format; any other name gets the IPC file format (what
  // pandas.read_feather, polars.read_ipc and pyarrow.ipc.open_file read).
  const writer = outputFormat(outPath) === 'stream' ? new RecordBatchStreamWriter() : new RecordBatchFileWriter();
  writer.pipe(file);
  return {
    write: (table) => {
      const schema = metadata ? new Schema(table.schema.fields, metadata) : table.schema;
      for (const batch of table.batches) writer.write(metadata ? new RecordBatch(schema, batch.data) : batch);
    },
    finish: async () => {
      writer.finish();
      await finished(file);
      await rename(temp, outPath);
    },
    abort: async () => {
      writer.finish();
      await finished(file).catch(() => undefined);
      await rm(temp, { force: true });
    },
  };
}

/** Parquet, one row group per scored chunk, opened with the first chunk's schema. */
function parquetSink(outPath: string): TableSink {
  let writer: ParquetTableWriter | null = null;
  return {
    write: (table) => {
      writer ??= new ParquetTableWriter(outPath, table.schema);
      writer.write(table);
    },
    finish: async () => writer?.finish(),
    abort: async () => writer?.abort(),
  };
}
