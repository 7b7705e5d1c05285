/**
 * Sharded scoring: `kpig score --shard i/n` scores a deterministic slice of the input and
 * `kpig merge` puts the slices back together.
 *
 * A shard is a run of whole input chunks (readScoringChunks: `chunkRows` JSONL rows, or an Arrow
 * record batch cut into `chunkRows` slices). Shard i of n takes chunks [⌊i·C/n⌋, ⌊(i+1)·C/n⌋) of
 * the C chunks, so shards never overlap and together cover every row once. Each chunk is scored
 * exactly as the unsharded run scores it (same rows, same engine batches, the prefix cache emptied
 * at every chunk), so the merged table equals the unsharded output byte for byte.
 *
 * A shard's Arrow file carries its manifest in the schema metadata under `kpig.shard`: the input's
 * SHA-256 and row count, the model's fingerprint, the options that decide the scores, its index,
 * and the row boundaries of all n shards (so a merge can say which rows a missing shard holds).
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { createInterface } from 'node:readline';
import { RecordBatch, Schema, Table, tableFromIPC } from 'apache-arrow';
import { InputError, KpigIOError } from '../errors/index.js';
import { arrowReadError } from '../io/arrow.js';
import { readScoringChunks, tableSink } from './stream.js';

/** Schema metadata key of a shard's manifest. */
export const SHARD_METADATA_KEY = 'kpig.shard';

/** Shard `index` (0-based) of `count`. */
export interface ShardSpec {
  index: number;
  count: number;
}

/** What a shard file says about itself (the `kpig.shard` schema metadata, JSON). */
export interface ShardManifest {
  format: 'kpig-score-shard';
  version: 1;
  shard: ShardSpec;
  /** This shard's input rows [start, end) and chunks [chunkStart, chunkEnd). */
  rows: { start: number; end: number; chunkStart: number; chunkEnd: number };
  /** Row boundaries of every shard: shard j holds rows [bounds[j], bounds[j+1]). */
  bounds: number[];
  input: { name: string; sha256: string; rows: number; chunks: number };
  model: { fingerprint: string };
  /** Every option that decides the scores (mask mode, placeholder, template, precision, batching, chunking). */
  options: Record<string, string | number>;
}

/**
 * Parses `i/n` (0 ≤ i < n).
 *
 * @throws InputError for anything else
 * @example
 * parseShard('2/7'); // { index: 2, count: 7 }
 */
export function parseShard(spec: string): ShardSpec {
  const m = /^(\d+)\/(\d+)$/.exec(spec.trim());
  const index = m ? Number(m[1]) : NaN, count = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(index) || !Number.isSafeInteger(count) || count < 1 || index >= count)
    throw new InputError(`--shard must be i/n with 0 ≤ i < n (shard i of n, counted from 0), got '${spec}'`);
  return { index, count };
}

/**
 * Row counts of the chunks that readScoringChunks(path, chunkRows) yields, in order. JSONL is
 * counted line by line (a blank line is no row, as when reading); Arrow is read batch by batch.
 */
export async function inputChunkSizes(path: string, chunkRows: number): Promise<number[]> {
  const ext = extname(path).toLowerCase();
  const sizes: number[] = [];
  if (ext === '.jsonl' || ext === '.ndjson') {
    let rows = 0, lineNo = 0;
    try {
      for await (const line of createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity })) {
        lineNo++;
        const text = lineNo === 1 && line.startsWith('\uFEFF') ? line.slice(1) : line;
        if (text.trim()) rows++;
      }
    } catch (err) {
      throw new KpigIOError(`cannot read the scoring input ${path}: ${(err as Error).message}`, { cause: err });
    }
    for (let r = 0; r < rows; r += chunkRows) sizes.push(Math.min(chunkRows, rows - r));
    return sizes;
  }
  for await (const chunk of readScoringChunks(path, chunkRows)) sizes.push(chunk.numRows);
  return sizes;
}

/** Row boundaries of the n shards of these chunks: shard j holds rows [bounds[j], bounds[j+1]). */
export function shardBounds(chunkSizes: readonly number[], count: number): { rows: number[]; chunks: number[] } {
  const C = chunkSizes.length;
  const starts = [0];
  for (const s of chunkSizes) starts.push(starts[starts.length - 1] + s);
  const chunks = Array.from({ length: count + 1 }, (_, j) => Math.floor((j * C) / count));
  return { rows: chunks.map((c) => starts[c]), chunks };
}

/** The manifest of a shard file's schema, or an InputError naming the file. */
function manifestOf(table: Table, path: string): ShardManifest {
  const raw = table.schema.metadata.get(SHARD_METADATA_KEY);
  if (raw === undefined)
    throw new InputError(`${path}: not a kpig score shard (its schema has no '${SHARD_METADATA_KEY}' manifest); write shards with kpig score --shard i/n`);
  let m: ShardManifest;
  try {
    m = JSON.parse(raw);
  } catch (err) {
    throw new InputError(`${path}: its '${SHARD_METADATA_KEY}' manifest is not JSON: ${(err as Error).message}`);
  }
  const n = m?.shard?.count;
  const ok =
    m?.format === 'kpig-score-shard' && m.version === 1 && Number.isSafeInteger(n) && n >= 1 && Number.isSafeInteger(m.shard.index) &&
    m.shard.index >= 0 && m.shard.index < n && Array.isArray(m.bounds) && m.bounds.length === n + 1 &&
    m.bounds.every((b, j) => Number.isSafeInteger(b) && b >= 0 && (j === 0 || b >= m.bounds[j - 1])) &&
    m.rows?.start === m.bounds[m.shard.index] && m.rows?.end === m.bounds[m.shard.index + 1] && m.bounds[n] === m.input?.rows &&
    typeof m.input?.sha256 === 'string' && typeof m.model?.fingerprint === 'string' && typeof m.options === 'object' && m.options !== null;
  if (!ok) throw new InputError(`${path}: its '${SHARD_METADATA_KEY}' manifest is incomplete or inconsistent (format, shard, rows, bounds, input, model, options)`);
  return m;
}

const short = (h: string) => h.slice(0, 12);
/** Keys whose values differ between two option sets. */
const differingOptions = (a: ShardManifest['options'], b: ShardManifest['options']) =>
  [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => a[k] !== b[k]).sort();

/**
 * Checks that `paths` are the n shards of one scoring run (same input, model and options; every
 * index exactly once) and writes their rows, in input order, to `outPath` (Arrow IPC file, a
 * stream for `.arrows`, Parquet for `.parquet`; written atomically). For Arrow output the result
 * equals what the unsharded `kpig score` writes, byte for byte. Resolves with the row count.
 *
 * @throws InputError naming the file: not a shard, another input, model, options or shard count,
 *   an index given twice (overlap), a file whose rows disagree with its manifest; and, naming the
 *   indices and their rows, the shards that are missing
 * @example
 * await mergeShards(['s0.arrow', 's1.arrow', 's2.arrow'], 'scores.arrow');
 */
export async function mergeShards(paths: readonly string[], outPath: string): Promise<number> {
  if (paths.length === 0) throw new InputError('kpig merge needs at least one shard file');
  // First pass: every manifest, checked against the first; the rows are read again when written.
  const seen = new Map<number, string>();
  let first: { path: string; m: ShardManifest } | null = null;
  for (const path of paths) {
    const table = await readShard(path);
    const m = manifestOf(table, path);
    if (table.numRows !== m.rows.end - m.rows.start)
      throw new InputError(`${path}: holds ${table.numRows} rows, but its manifest says rows ${m.rows.start}–${m.rows.end} (${m.rows.end - m.rows.start}): the file is incomplete or was altered`);
    if (!first) first = { path, m };
    else {
      const f = first.m;
      if (m.input.sha256 !== f.input.sha256)
        throw new InputError(`${path}: a shard of another input (${m.input.name}, sha256 ${short(m.input.sha256)}…) than ${first.path} (${f.input.name}, sha256 ${short(f.input.sha256)}…)`);
      if (m.model.fingerprint !== f.model.fingerprint)
        throw new InputError(`${path}: scored with another model (fingerprint ${short(m.model.fingerprint)}…) than ${first.path} (${short(f.model.fingerprint)}…)`);
      const differ = differingOptions(m.options, f.options);
      if (differ.length)
        throw new InputError(`${path}: scored with other options than ${first.path}: ${differ.map((k) => `${k} ${JSON.stringify(m.options[k])} vs ${JSON.stringify(f.options[k])}`).join(', ')}`);
      if (m.shard.count !== f.shard.count || m.bounds.join() !== f.bounds.join())
        throw new InputError(`${path}: shard ${m.shard.index}/${m.shard.count} of another split than ${first.path} (shard ${f.shard.index}/${f.shard.count}): the shards overlap`);
    }
    const other = seen.get(m.shard.index);
    if (other !== undefined) throw new InputError(`${path}: shard ${m.shard.index}/${m.shard.count} again (also ${other}): the shards overlap`);
    seen.set(m.shard.index, path);
  }
  const m = first!.m;
  const missing = Array.from({ length: m.shard.count }, (_, j) => j).filter((j) => !seen.has(j));
  if (missing.length)
    throw new InputError(
      `missing shard(s) of ${m.input.name} (${m.input.rows} rows): ${missing.map((j) => `${j}/${m.shard.count} (rows ${m.bounds[j]}–${m.bounds[j + 1]})`).join(', ')}`,
    );
  // Second pass, in shard order: the batches as scored, without the manifest.
  const sink = tableSink(outPath);
  let rows = 0, schema: Schema | null = null, emptyBatch: RecordBatch | null = null;
  try {
    for (let j = 0; j < m.shard.count; j++) {
      const path = seen.get(j)!;
      const table = await readShard(path);
      schema ??= new Schema(table.schema.fields);
      for (const batch of table.batches) {
        // An empty shard holds one empty batch (its schema); the unsharded output has none of them
        // unless the whole input is empty.
        if (batch.numRows === 0) {
          emptyBatch ??= new RecordBatch(schema, batch.data);
          continue;
        }
        sink.write(new Table([new RecordBatch(schema, batch.data)]));
        rows += batch.numRows;
      }
    }
    if (rows === 0 && emptyBatch) sink.write(new Table([emptyBatch]));
    await sink.finish();
  } catch (err) {
    await sink.abort();
    throw err;
  }
  return rows;
}

async function readShard(path: string): Promise<Table> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new KpigIOError(`cannot read the shard ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return tableFromIPC(bytes);
  } catch (err) {
    throw arrowReadError(path, err);
  }
}

/** A manifest for shard `spec` of `dataPath` (see ShardManifest). */
export function shardManifest(args: {
  spec: ShardSpec;
  dataPath: string;
  sha256: string;
  chunkSizes: readonly number[];
  modelFingerprint: string;
  options: Record<string, string | number>;
}): ShardManifest {
  const { rows, chunks } = shardBounds(args.chunkSizes, args.spec.count);
  const i = args.spec.index;
  return {
    format: 'kpig-score-shard',
    version: 1,
    shard: args.spec,
    rows: { start: rows[i], end: rows[i + 1], chunkStart: chunks[i], chunkEnd: chunks[i + 1] },
    bounds: rows,
    input: { name: basename(args.dataPath), sha256: args.sha256, rows: rows[rows.length - 1], chunks: args.chunkSizes.length },
    model: { fingerprint: args.modelFingerprint },
    options: args.options,
  };
}

/**
 * Whether `path` holds shard `expected.shard` as `expected` describes it (same input, model,
 * options and rows, every row present): 'ok', 'missing', or why it cannot be used.
 */
export async function shardFileState(path: string, expected: ShardManifest): Promise<'ok' | 'missing' | string> {
  let table: Table;
  try {
    table = await readShard(path);
  } catch (err) {
    if ((err as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT') return 'missing';
    return (err as Error).message;
  }
  try {
    const m = manifestOf(table, path);
    if (JSON.stringify(m) !== JSON.stringify(expected)) return `${path}: its manifest is of another input, model, options or split`;
    if (table.numRows !== m.rows.end - m.rows.start) return `${path}: holds ${table.numRows} of its ${m.rows.end - m.rows.start} rows`;
  } catch (err) {
    return (err as Error).message;
  }
  return 'ok';
}
