/**
 * safetensors in TypeScript: a strict reader, a writer, and the 16-bit float conversions.
 *
 * File = u64 little-endian header length N | N bytes of JSON header | raw little-endian tensor data.
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets from
 * the start of the data) and may hold "__metadata__": {string: string}. We write the header compact
 * and padded with spaces to a multiple of 8, and lay tensors out largest element size first, then by
 * name (as the safetensors library does), so every tensor starts aligned to its element size and can
 * be viewed as a typed array in place. The reader requires the tensors to tile the data exactly.
 *
 * Typed-array views use the host's byte order; Node runs on little-endian hosts only, which is the
 * byte order of the format.
 */

import { open, type FileHandle } from 'node:fs/promises';

import { KpigIOError, SafetensorsError } from '../errors/index.js';
import { writeFileAtomic } from '../io/atomic.js';

/** The element types a safetensors file may hold here. */
export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/**
 * A tensor to write. `data` holds the raw elements in row-major order: a typed array of the matching
 * kind (Float32Array for F32, Uint16Array of raw bits for F16/BF16, BigInt64Array for I64, ...) or
 * plain bytes; only its byte length is checked against `shape` × element size.
 */
export interface TensorInput {
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: ArrayBufferView;
}

/** A tensor read from a file: its raw little-endian bytes, aligned to its element size. */
export interface StoredTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  bytes: Uint8Array;
}

/** A whole safetensors file: `__metadata__` and the tensors in file order. */
export interface SafetensorsFile {
  metadata: Record<string, string>;
  tensors: Map<string, StoredTensor>;
}

/**
 * Whether `value` names a dtype this module knows.
 *
 * @example
 * isSafetensorsDtype('BF16'); // true
 * isSafetensorsDtype('F8_E4M3'); // false
 */
export function isSafetensorsDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.hasOwn(DTYPE_SIZE, value);
}

/**
 * Number of elements of a shape; the empty shape is a scalar with one element.
 *
 * @example
 * numel([2, 3]); // 6
 * numel([]); // 1
 */
export function numel(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

/**
 * Encodes tensors as safetensors chunks: the 8-byte length plus padded header, then each tensor's
 * bytes in layout order (views of the inputs, not copies). `label` names the destination in errors.
 *
 * @example
 * const chunks = encodeSafetensors({ x: { dtype: 'F32', shape: [2], data: new Float32Array([1, -2]) } });
 * const bytes = Buffer.concat(chunks);
 */
export function encodeSafetensors(
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
  label = 'safetensors',
): Uint8Array[] {
  const entries = Object.entries(tensors).map(([name, t]) => {
    if (name === '__metadata__' || name === '') {
      throw new SafetensorsError(`${label}: "${name}" cannot be a tensor name`);
    }
    if (!isSafetensorsDtype(t.dtype)) {
      throw new SafetensorsError(`${label}: tensor ${name} has unsupported dtype ${String(t.dtype)}`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(`${label}: tensor ${name} has invalid shape [${t.shape.join(', ')}]`);
    }
    const expected = numel(t.shape) * DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== expected) {
      throw new SafetensorsError(
        `${label}: tensor ${name} has ${t.data.byteLength} bytes, but shape [${t.shape.join(', ')}] ` +
          `${t.dtype} needs ${expected}`,
      );
    }
    return { name, t };
  });
  entries.sort((a, b) => DTYPE_SIZE[b.t.dtype] - DTYPE_SIZE[a.t.dtype] || compareNames(a.name, b.name));

  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = { ...metadata };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const { name, t } of entries) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }

  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = json.byteLength + ((8 - (json.byteLength % 8)) % 8);
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);
  return [head, ...chunks];
}

/**
 * Writes tensors to `path` as a safetensors file, atomically. See the module comment for the layout.
 *
 * @example
 * await writeSafetensors('out/x.safetensors', {
 *   w: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
 * }, { format: 'pt' });
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(tensors, metadata, path));
}

/**
 * Reads and validates a safetensors file. Errors: {@link SafetensorsError} for a malformed file (the
 * message names the file and, where it applies, the tensor), {@link KpigIOError} when it can't be read.
 *
 * @example
 * const { metadata, tensors } = await readSafetensors('model/model.safetensors');
 * const wte = toFloat32(tensors.get('transformer.wte.weight')!);
 */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const { size } = await handle.stat();
    if (size < 8) throw new SafetensorsError(`${path}: ${size} bytes, shorter than the 8-byte header length`);
    const lengthBytes = await readExactly(handle, 0, 8, path);
    const headerLength = headerLengthOf(lengthBytes, size, path);
    const header = parseHeader(await readExactly(handle, 8, headerLength, path), path);
    // A fresh buffer for the data section keeps tensors aligned whatever the header length.
    const data = await readExactly(handle, 8 + headerLength, size - 8 - headerLength, path);
    return assemble(header, data, path);
  } catch (err) {
    if (err instanceof SafetensorsError) throw err;
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    await handle.close();
  }
}

/**
 * Elements of a stored tensor as float32 (integers and bools converted by value, F64 rounded).
 *
 * @example
 * const w = toFloat32(file.tensors.get('model.norm.weight')!); // Float32Array
 */
export function toFloat32(tensor: StoredTensor): Float32Array {
  if (tensor.dtype === 'F32') return new Float32Array(typedView(tensor) as Float32Array);
  return Float32Array.from(toFloat64(tensor));
}

/**
 * Elements of a stored tensor as float64; every dtype converts exactly except I64 beyond 2^53.
 *
 * @example
 * const logits = toFloat64(file.tensors.get('logits')!); // Float64Array
 */
export function toFloat64(tensor: StoredTensor): Float64Array {
  const view = typedView(tensor);
  if (tensor.dtype === 'F16' || tensor.dtype === 'BF16') {
    const decode = tensor.dtype === 'F16' ? f16ToF32 : bf16ToF32;
    const out = new Float64Array(view.length);
    for (let i = 0; i < view.length; i++) out[i] = decode((view as Uint16Array)[i]!);
    return out;
  }
  if (view instanceof BigInt64Array) return Float64Array.from(view, (v) => Number(v));
  return Float64Array.from(view as ArrayLike<number>);
}

// ------------------------------------------------------------------------------------------------
// 16-bit floats. bf16 is the top half of an f32; f16 is IEEE binary16 (1 sign, 5 exponent, 10 mantissa
// bits, bias 15). Both conversions from f32 round to nearest, ties to even, as torch's casts do.
// ------------------------------------------------------------------------------------------------

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/**
 * Bits of `x` (first rounded to f32) as bfloat16, rounded to nearest even. NaN stays a quiet NaN;
 * values past the largest bf16 round to ±infinity.
 *
 * @example
 * f32ToBf16(1); // 0x3f80
 * f32ToBf16(1 + 2 ** -8); // 0x3f80 (a tie, rounded to the even neighbour)
 */
export function f32ToBf16(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0]!;
  // Rounding a NaN's mantissa could carry it into infinity; keep the sign and force a quiet NaN.
  if (x !== x) return ((bits >>> 16) & 0x8000) | 0x7fc0;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * The value of bfloat16 bits (exact).
 *
 * @example
 * bf16ToF32(0x3f80); // 1
 */
export function bf16ToF32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0]!;
}

/**
 * Bits of `x` (first rounded to f32) as IEEE half precision, rounded to nearest even: values from
 * 65520 up become infinity, values below 2^-14 become subnormals, and NaN stays NaN.
 *
 * @example
 * f32ToF16(65504); // 0x7bff, the largest half
 * f32ToF16(2 ** -24); // 0x0001, the smallest subnormal
 */
export function f32ToF16(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15; // the half-precision biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: value = m · 2^-24 with m = significand >> (14 − e). Shifts of 25 or more leave
    // less than half the smallest subnormal, which rounds to zero.
    const shift = 14 - e;
    if (shift > 24) return sign;
    const significand = mant | 0x800000;
    const rounded = roundShift(significand, shift);
    return sign | rounded; // a carry into 0x400 is exactly the smallest normal
  }
  // A carry out of the mantissa bumps the exponent, and from 0x7bff on reaches infinity, as it should.
  return sign | roundShift((e << 23) | mant, 13);
}

/**
 * The value of half-precision bits (exact).
 *
 * @example
 * f16ToF32(0x3c00); // 1
 * f16ToF32(0x0001); // 2 ** -24
 */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** `value >> shift` rounded to nearest, ties to even (value < 2^31, 0 < shift ≤ 24). */
function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

// ------------------------------------------------------------------------------------------------
// Reader internals
// ------------------------------------------------------------------------------------------------

interface HeaderEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

interface Header {
  metadata: Record<string, string>;
  entries: HeaderEntry[];
}

/** Orders names by UTF-16 code units, like Python's `sorted` on ASCII names, independent of locale. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function headerLengthOf(first8: Uint8Array, fileSize: number, label: string): number {
  const length = Buffer.from(first8.buffer, first8.byteOffset, 8).readBigUInt64LE(0);
  if (length > BigInt(fileSize - 8)) {
    throw new SafetensorsError(
      `${label}: header length ${length} runs past the end of the file (${fileSize} bytes)`,
    );
  }
  return Number(length);
}

function parseHeader(bytes: Uint8Array, label: string): Header {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new SafetensorsError(`${label}: header is not valid UTF-8 JSON (${(err as Error).message})`, {
      cause: err,
    });
  }
  if (!isPlainObject(parsed)) throw new SafetensorsError(`${label}: header is not a JSON object`);

  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, info] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      if (!isPlainObject(info) || !Object.values(info).every((v) => typeof v === 'string')) {
        throw new SafetensorsError(`${label}: __metadata__ must map strings to strings`);
      }
      Object.assign(metadata, info);
      continue;
    }
    if (!isPlainObject(info)) throw new SafetensorsError(`${label}: tensor ${name}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = info;
    if (!isSafetensorsDtype(dtype)) {
      throw new SafetensorsError(`${label}: tensor ${name} has unsupported dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(`${label}: tensor ${name} has invalid shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new SafetensorsError(`${label}: tensor ${name} has invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    entries.push({ name, dtype, shape: shape as number[], begin: offsets[0], end: offsets[1] });
  }
  return { metadata, entries };
}

function assemble(header: Header, data: Uint8Array, label: string): SafetensorsFile {
  for (const { name, dtype, shape, begin, end } of header.entries) {
    if (end < begin || end > data.byteLength) {
      throw new SafetensorsError(
        `${label}: tensor ${name} data_offsets [${begin}, ${end}] are out of range (data is ${data.byteLength} bytes)`,
      );
    }
    const expected = numel(shape) * DTYPE_SIZE[dtype];
    if (end - begin !== expected) {
      throw new SafetensorsError(
        `${label}: tensor ${name} has ${end - begin} bytes, but shape [${shape.join(', ')}] ${dtype} needs ${expected}`,
      );
    }
  }

  const spans = [...header.entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let position = 0;
  for (const { name, begin, end } of spans) {
    if (begin !== position) {
      const problem = begin > position ? 'a gap' : 'an overlap';
      throw new SafetensorsError(`${label}: tensor ${name} starts at ${begin}, expected ${position} (${problem})`);
    }
    position = end;
  }
  if (position !== data.byteLength) {
    throw new SafetensorsError(`${label}: ${data.byteLength - position} trailing bytes after the last tensor`);
  }

  const tensors = new Map<string, StoredTensor>();
  for (const { name, dtype, shape, begin, end } of header.entries) {
    tensors.set(name, { dtype, shape, bytes: data.subarray(begin, end) });
  }
  return { metadata: header.metadata, tensors };
}

async function readExactly(handle: FileHandle, position: number, length: number, path: string): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    // Reads are capped at 1 GiB because the OS returns at most ~2 GiB per call anyway.
    const want = Math.min(length - done, 1 << 30);
    const { bytesRead } = await handle.read(out, done, want, position + done);
    if (bytesRead === 0) throw new SafetensorsError(`${path}: file ended early (it changed while being read?)`);
    done += bytesRead;
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

type NumericView =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

/** A typed-array view of a tensor's bytes (copied first when they are not aligned to the element size). */
function typedView(tensor: StoredTensor): NumericView {
  const size = DTYPE_SIZE[tensor.dtype];
  const bytes = tensor.bytes.byteOffset % size === 0 ? tensor.bytes : tensor.bytes.slice();
  const { buffer, byteOffset } = bytes;
  const n = bytes.byteLength / size;
  switch (tensor.dtype) {
    case 'F64':
      return new Float64Array(buffer, byteOffset, n);
    case 'F32':
      return new Float32Array(buffer, byteOffset, n);
    case 'F16':
    case 'BF16':
      return new Uint16Array(buffer, byteOffset, n);
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, n);
    case 'I32':
      return new Int32Array(buffer, byteOffset, n);
    case 'I16':
      return new Int16Array(buffer, byteOffset, n);
    case 'I8':
      return new Int8Array(buffer, byteOffset, n);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(buffer, byteOffset, n);
  }
}
