/**
 * Reading Arrow IPC (file or stream format) and Parquet with typed errors that name the path, and
 * the codecs other tools write by default: Arrow IPC buffers compressed with LZ4 frames
 * (`pandas.DataFrame.to_feather`; decoded by ./lz4.ts) or ZSTD (fzstd), registered with apache-arrow's compression registry on
 * import of this module; Parquet pages in every codec pandas, polars and pyarrow write (snappy,
 * gzip, brotli, zstd, lz4, lz4_raw) through hyparquet-compressors. What apache-arrow cannot read,
 * the view and large types polars writes by default (string_view, binary_view, large_list,
 * list_view), is decoded by @uwdata/flechette and rebuilt as the plain types (string, binary, list).
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import {
  Binary,
  Bool,
  CompressionType,
  type DataType,
  Field,
  Float16,
  Float32,
  Float64,
  Int,
  List,
  Null,
  Struct,
  Table,
  type Vector,
  Utf8,
  compressionRegistry,
  tableFromIPC,
  vectorFromArray,
} from 'apache-arrow';
import * as flechette from '@uwdata/flechette';
import { decompress as zstdDecompress } from 'fzstd';
import { parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { InputError, KpigIOError } from '../errors/index.js';
import { decodeLz4Frame } from './lz4.js';

compressionRegistry.set(CompressionType.LZ4_FRAME, { decode: (data) => decodeLz4Frame(data) });
// A buffer of its own (offset 0): apache-arrow views int64 columns as BigInt64Array, which needs
// 8-byte alignment that a decoder's output window need not have.
compressionRegistry.set(CompressionType.ZSTD, { decode: (data) => zstdDecompress(data).slice() });
const readOnly = () => {
  throw new Error('kpig registers Arrow codecs for reading only');
};
flechette.setCompressionCodec(flechette.CompressionType.LZ4_FRAME, { decode: (data) => decodeLz4Frame(data), encode: readOnly });
flechette.setCompressionCodec(flechette.CompressionType.ZSTD, { decode: (data) => zstdDecompress(data).slice(), encode: readOnly });

/** The Arrow types flechette decodes that apache-arrow does not, and the plain type each becomes. */
const VIEW_OR_LARGE = new Set<number>([flechette.Type.LargeUtf8, flechette.Type.Utf8View, flechette.Type.LargeBinary, flechette.Type.BinaryView, flechette.Type.LargeList, flechette.Type.ListView, flechette.Type.LargeListView]);

/** The apache-arrow type that holds the values of a flechette type: view and large types as their plain ones. */
function plainType(t: flechette.DataType, where: string): DataType {
  const T = flechette.Type;
  switch (t.typeId) {
    case T.Dictionary:
      return plainType(t.dictionary, where);
    case T.Null:
      return new Null();
    case T.Bool:
      return new Bool();
    case T.Int:
      return new Int(t.signed, t.bitWidth);
    case T.Float:
      return t.precision === flechette.Precision.HALF ? new Float16() : t.precision === flechette.Precision.SINGLE ? new Float32() : new Float64();
    case T.Utf8:
    case T.LargeUtf8:
    case T.Utf8View:
      return new Utf8();
    case T.Binary:
    case T.LargeBinary:
    case T.BinaryView:
      return new Binary();
    case T.List:
    case T.LargeList:
    case T.ListView:
    case T.LargeListView: {
      const child = t.children[0];
      return new List(new Field(child.name || 'item', plainType(child.type, `${where}[]`), child.nullable));
    }
    case T.Struct:
      return new Struct(t.children.map((c) => new Field(c.name, plainType(c.type, `${where}.${c.name}`), c.nullable)));
    default:
      throw new Error(`column ${where} has Arrow type id ${t.typeId}, which kpig does not convert`);
  }
}

/** Values as apache-arrow's builders take them: typed arrays of a list become plain arrays. */
function plainValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (ArrayBuffer.isView(v) && !(v instanceof Uint8Array)) return Array.from(v as unknown as ArrayLike<unknown>, plainValue);
  if (Array.isArray(v)) return v.map(plainValue);
  if (typeof v === 'object' && !(v instanceof Uint8Array)) return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, plainValue(x)]));
  return v;
}

/**
 * Arrow IPC bytes with view or large types (polars' `write_ipc`), decoded by flechette and rebuilt
 * as an apache-arrow table of the plain types; null when the bytes hold none of those types (the
 * caller's error stands).
 */
function viewTypesTable(bytes: Uint8Array): Table | null {
  const t = flechette.tableFromIPC(bytes, { useBigInt: true, useProxy: false, useMap: false });
  const uses = (d: flechette.DataType): boolean =>
    VIEW_OR_LARGE.has(d.typeId) || ('children' in d && Array.isArray(d.children) && d.children.some((c: flechette.Field) => uses(c.type))) || (d.typeId === flechette.Type.Dictionary && uses(d.dictionary));
  if (!t.schema.fields.some((f) => uses(f.type))) return null;
  const columns: Record<string, Vector> = {};
  for (const f of t.schema.fields) {
    const values = Array.from(t.getChild(f.name)!.toArray() as ArrayLike<unknown>, plainValue);
    columns[f.name] = vectorFromArray(values, plainType(f.type, f.name)) as Vector;
  }
  return new Table(columns);
}

/**
 * The format an output name asks for: `stream` (Arrow IPC stream) for `.arrows`, `parquet` for
 * `.parquet`, else `file` (Arrow IPC file).
 *
 * @example
 * outputFormat('scores.arrow'); // 'file'
 * outputFormat('scores.arrows'); // 'stream'
 */
export function outputFormat(path: string): 'file' | 'stream' | 'parquet' {
  const ext = extname(path).toLowerCase();
  return ext === '.arrows' ? 'stream' : ext === '.parquet' ? 'parquet' : 'file';
}

/** An InputError for an Arrow file that could not be read, naming it. */
export function arrowReadError(path: string, err: unknown): InputError {
  const message = (err as Error).message ?? String(err);
  return new InputError(`${path}: not a readable Arrow IPC file: ${message}`, { cause: err });
}

/**
 * The Arrow table in `bytes` (IPC file or stream format, uncompressed or LZ4/ZSTD; view and large
 * types become their plain types).
 *
 * @throws InputError naming `path` when the bytes are not readable Arrow IPC
 * @example
 * const table = arrowTableFromBytes(readFileSync('rows.feather'), 'rows.feather');
 */
export function arrowTableFromBytes(bytes: Uint8Array, path: string): Table {
  try {
    return tableFromIPC(bytes);
  } catch (err) {
    let converted: Table | null = null;
    try {
      converted = viewTypesTable(bytes);
    } catch (second) {
      throw arrowReadError(path, second);
    }
    if (converted) return converted;
    throw arrowReadError(path, err);
  }
}

/**
 * The table stored at `path`.
 *
 * @throws KpigIOError when the file cannot be read; InputError when it is not Arrow IPC
 * @example
 * const table = await readArrowTable('run/stage-01/plan.arrow');
 */
export async function readArrowTable(path: string): Promise<Table> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return arrowTableFromBytes(bytes, path);
}

/**
 * The rows of a Parquet file as objects, whatever codec its pages use.
 *
 * @throws InputError naming `path` when the bytes are not readable Parquet
 * @example
 * const rows = await parquetRows(readFileSync('train.parquet'), 'train.parquet');
 */
export async function parquetRows(bytes: Uint8Array, path: string): Promise<Record<string, unknown>[]> {
  const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  try {
    return (await parquetReadObjects({ file, compressors })) as Record<string, unknown>[];
  } catch (err) {
    throw new InputError(`${path}: not a readable Parquet file: ${(err as Error).message}`, { cause: err });
  }
}
