/**
 * Reading Arrow IPC (file or stream format) and Parquet with typed errors that name the path, and
 * the codecs other tools write by default: Arrow IPC buffers compressed with LZ4 frames
 * (`pandas.DataFrame.to_feather`; decoded by ./lz4.ts) or ZSTD (fzstd), registered with apache-arrow's compression registry on
 * import of this module; Parquet pages in every codec pandas, polars and pyarrow write (snappy,
 * gzip, brotli, zstd, lz4, lz4_raw) through hyparquet-compressors.
 */
import { readFile } from 'node:fs/promises';
import { CompressionType, type Table, compressionRegistry, tableFromIPC } from 'apache-arrow';
import { decompress as zstdDecompress } from 'fzstd';
import { parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { InputError, KpigIOError } from '../errors/index.js';
import { decodeLz4Frame } from './lz4.js';

compressionRegistry.set(CompressionType.LZ4_FRAME, { decode: (data) => decodeLz4Frame(data) });
// A buffer of its own (offset 0): apache-arrow views int64 columns as BigInt64Array, which needs
// 8-byte alignment that a decoder's output window need not have.
compressionRegistry.set(CompressionType.ZSTD, { decode: (data) => zstdDecompress(data).slice() });

/**
 * An InputError for an Arrow file apache-arrow could not read, with what to do where the cause is
 * known: apache-arrow reads neither the view types polars writes by default nor large lists.
 */
export function arrowReadError(path: string, err: unknown): InputError {
  const message = (err as Error).message ?? String(err);
  const view = /Utf8View|BinaryView|ListView|LargeList|Unrecognized type|type id/i.test(message);
  const hint = view
    ? ' (apache-arrow reads neither view types nor large lists; polars writes string_view by default and large_list for every list: write Parquet with `df.write_parquet(path)`, or convert with pyarrow to string and list)'
    : '';
  return new InputError(`${path}: not a readable Arrow IPC file: ${message}${hint}`, { cause: err });
}

/**
 * The Arrow table in `bytes` (IPC file or stream format, uncompressed or LZ4/ZSTD).
 *
 * @throws InputError naming `path` when the bytes are not readable Arrow IPC
 * @example
 * const table = arrowTableFromBytes(readFileSync('rows.feather'), 'rows.feather');
 */
export function arrowTableFromBytes(bytes: Uint8Array, path: string): Table {
  try {
    return tableFromIPC(bytes);
  } catch (err) {
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
