import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KpigIOError, SafetensorsError } from '../src/errors/index.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import {
  bf16ToF32,
  DTYPE_SIZE,
  encodeSafetensors,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  readSafetensors,
  type SafetensorsDtype,
  type TensorInput,
  toFloat32,
  toFloat64,
  writeSafetensors,
} from '../src/model/safetensors.js';
import { ORACLE_PATH, findOracle } from './support/oracle.js';

const oracle = findOracle();
const oracleMissing = 'skip' in oracle ? oracle.skip : null;
const python = 'python' in oracle ? oracle.python : '';
const referencePy = ORACLE_PATH;
if (oracleMissing) console.warn(`skipping the PyTorch cross-checks: ${oracleMissing}`);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kpig-st-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A raw file: 8-byte length, header text padded to 8, then `data`. */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0), pad = true): Buffer {
  const text = Buffer.from(header, 'utf8');
  const padded = pad ? Buffer.concat([text, Buffer.alloc((8 - (text.length % 8)) % 8, 0x20)]) : text;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([len, padded, data]);
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

const sample: Record<string, TensorInput> = {
  f64: { dtype: 'F64', shape: [3, 5], data: Float64Array.from({ length: 15 }, (_, i) => Math.sin(i) * 1e10) },
  f32: { dtype: 'F32', shape: [7], data: Float32Array.from({ length: 7 }, (_, i) => i / 3 - 1) },
  f16: { dtype: 'F16', shape: [2, 3], data: Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x3555]) },
  bf16: { dtype: 'BF16', shape: [5], data: Uint16Array.from([0x3f80, 0xbf80, 0x7f7f, 0x0001, 0x4049]) },
  i64: { dtype: 'I64', shape: [3], data: BigInt64Array.from([1n, -2n, 3n << 40n]) },
  i32: { dtype: 'I32', shape: [1, 2], data: Int32Array.from([7, -8]) },
  i16: { dtype: 'I16', shape: [1], data: Int16Array.from([-3]) },
  i8: { dtype: 'I8', shape: [3], data: Int8Array.from([-1, 2, 3]) },
  u8: { dtype: 'U8', shape: [2], data: Uint8Array.from([255, 0]) },
  bool: { dtype: 'BOOL', shape: [3], data: Uint8Array.from([1, 0, 1]) },
  scalar: { dtype: 'F64', shape: [], data: Float64Array.from([2.5]) },
  empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
};

describe('safetensors round trip', () => {
  it('keeps every dtype, a scalar and an empty tensor bit for bit, with metadata', async () => {
    const path = join(dir, 'rt.safetensors');
    await writeSafetensors(path, sample, { format: 'pt', note: 'hi' });
    const file = await readSafetensors(path);
    expect(file.metadata).toEqual({ format: 'pt', note: 'hi' });
    expect([...file.tensors.keys()].sort()).toEqual(Object.keys(sample).sort());
    for (const [name, t] of Object.entries(sample)) {
      const got = file.tensors.get(name)!;
      expect(got.dtype, name).toBe(t.dtype);
      expect(got.shape, name).toEqual(t.shape);
      expect(Buffer.from(got.bytes).equals(Buffer.from(bytesOf(t.data))), name).toBe(true);
    }
  });

  it('converts to float32 and float64 by value', async () => {
    const path = join(dir, 'rt.safetensors');
    await writeSafetensors(path, sample);
    const { tensors } = await readSafetensors(path);
    expect([...toFloat64(tensors.get('f16')!)]).toEqual([1, -2, 65504, 2 ** -24, -0, f16ToF32(0x3555)]);
    expect([...toFloat64(tensors.get('bf16')!)]).toEqual([1, -1, bf16ToF32(0x7f7f), bf16ToF32(0x0001), 3.140625]);
    expect([...toFloat64(tensors.get('i64')!)]).toEqual([1, -2, 3 * 2 ** 40]);
    expect([...toFloat64(tensors.get('i8')!)]).toEqual([-1, 2, 3]);
    expect([...toFloat64(tensors.get('u8')!)]).toEqual([255, 0]);
    expect([...toFloat64(tensors.get('bool')!)]).toEqual([1, 0, 1]);
    expect([...toFloat64(tensors.get('f64')!)]).toEqual([...(sample.f64!.data as Float64Array)]);
    expect(toFloat32(tensors.get('f32')!)).toEqual(sample.f32!.data);
    expect(toFloat32(tensors.get('f64')!)).toEqual(Float32Array.from(sample.f64!.data as Float64Array));
    expect(toFloat32(tensors.get('empty')!).length).toBe(0);
    expect([...toFloat64(tensors.get('scalar')!)]).toEqual([2.5]);
  });

  it('pads the header to 8 bytes and aligns every tensor to its element size', async () => {
    const path = join(dir, 'align.safetensors');
    await writeSafetensors(path, sample, { format: 'pt' });
    const blob = await readFile(path);
    const n = Number(blob.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const header = JSON.parse(blob.subarray(8, 8 + n).toString('utf8')) as Record<
      string,
      { dtype: SafetensorsDtype; data_offsets: [number, number] }
    >;
    const entries = Object.entries(header).filter(([k]) => k !== '__metadata__');
    for (const [name, info] of entries) {
      expect(info.data_offsets[0] % DTYPE_SIZE[info.dtype], name).toBe(0);
    }
    // Layout order: largest element size first, then by name.
    const order = [...entries].sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0] || a[1].data_offsets[1] - b[1].data_offsets[1]);
    const sizes = order.map(([, info]) => DTYPE_SIZE[info.dtype]);
    expect(sizes).toEqual([...sizes].sort((a, b) => b - a));
    const { tensors } = await readSafetensors(path);
    for (const t of tensors.values()) expect(t.bytes.byteOffset % DTYPE_SIZE[t.dtype]).toBe(0);
  });

  it('writes the exact bytes of a known file', async () => {
    const path = join(dir, 'known.safetensors');
    await writeSafetensors(path, { x: { dtype: 'F32', shape: [2], data: Float32Array.from([1, -2]) } });
    const data = Buffer.alloc(8);
    data.writeFloatLE(1, 0);
    data.writeFloatLE(-2, 4);
    const expected = rawFile('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', data);
    expect((await readFile(path)).equals(expected)).toBe(true);
    expect(Buffer.concat(encodeSafetensors({ x: { dtype: 'F32', shape: [2], data: Float32Array.from([1, -2]) } })).equals(expected)).toBe(true);
  });

  it('reads a file whose header is not padded to 8 bytes', async () => {
    const path = join(dir, 'unpadded.safetensors');
    const data = new Uint8Array(new Float64Array([1.5, -3]).buffer);
    await writeFile(path, rawFile('{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}', data, false));
    const { tensors } = await readSafetensors(path);
    expect([...toFloat64(tensors.get('a')!)]).toEqual([1.5, -3]);
  });

  it('refuses to write a tensor whose data does not fit its shape, naming file and tensor', async () => {
    const path = join(dir, 'bad-write.safetensors');
    await expect(writeSafetensors(path, { w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } })).rejects.toThrow(
      /bad-write\.safetensors.*tensor w/,
    );
    await expect(writeSafetensors(path, { w: { dtype: 'F8' as SafetensorsDtype, shape: [1], data: new Uint8Array(1) } })).rejects.toThrow(
      SafetensorsError,
    );
  });
});

describe('safetensors reader rejects malformed files', () => {
  const f32 = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);
  const cases: [string, () => Buffer, RegExp][] = [
    ['shorter than 8 bytes', () => Buffer.from([1, 2, 3]), /shorter than the 8-byte header length/],
    [
      'header length beyond the file',
      () => {
        const b = rawFile('{}');
        b.writeBigUInt64LE(1000n, 0);
        return b;
      },
      /header length 1000 runs past the end/,
    ],
    ['header length of 2^64 - 1', () => {
      const b = rawFile('{}');
      b.writeBigUInt64LE(2n ** 64n - 1n, 0);
      return b;
    }, /runs past the end/],
    ['header not JSON', () => rawFile('{"x": nope}'), /header is not valid UTF-8 JSON/],
    ['header not an object', () => rawFile('[1, 2]'), /header is not a JSON object/],
    ['bad metadata', () => rawFile('{"__metadata__":{"a":1}}'), /__metadata__ must map strings to strings/],
    ['unknown dtype', () => rawFile('{"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}', new Uint8Array(1)), /tensor w has unsupported dtype "F8"/],
    ['bad shape', () => rawFile('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', f32([1])), /tensor w has invalid shape/],
    ['shape × size ≠ bytes', () => rawFile('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', f32([1, 2])), /tensor w has 8 bytes, but shape \[3\] F32 needs 12/],
    ['offsets beyond the data', () => rawFile('{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', f32([1, 2])), /tensor w data_offsets \[4, 12\] are out of range/],
    ['end before begin', () => rawFile('{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}', f32([1, 2])), /tensor w data_offsets \[8, 4\] are out of range/],
    ['bad data_offsets', () => rawFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', f32([1])), /tensor w has invalid data_offsets/],
    ['a gap', () => rawFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32([1, 2])), /tensor w starts at 4, expected 0 \(a gap\)/],
    [
      'an overlap',
      () => rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32([1, 2])),
      /tensor b starts at 4, expected 8 \(an overlap\)/,
    ],
    ['trailing bytes', () => rawFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32([1, 2])), /4 trailing bytes after the last tensor/],
    ['a truncated file', () => rawFile('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32([1, 2])).subarray(0, -1), /out of range/],
  ];
  for (const [what, make, message] of cases) {
    it(what, async () => {
      const name = `bad-${what.replace(/\W+/g, '-')}.safetensors`;
      const path = join(dir, name);
      await writeFile(path, make());
      const err = await readSafetensors(path).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(SafetensorsError);
      expect((err as SafetensorsError).code).toBe('E_SAFETENSORS');
      expect((err as Error).message).toContain(name);
      expect((err as Error).message).toMatch(message);
    });
  }

  it('reports a missing file as an IO error naming it', async () => {
    await expect(readSafetensors(join(dir, 'nope.safetensors'))).rejects.toThrow(KpigIOError);
    await expect(readSafetensors(join(dir, 'nope.safetensors'))).rejects.toThrow(/nope\.safetensors/);
  });
});

describe('16-bit float conversions', () => {
  it('rounds to bfloat16 to nearest even, keeps NaN, overflows to infinity', () => {
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(-2)).toBe(0xc000);
    expect(f32ToBf16(-0)).toBe(0x8000);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie → even (down)
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(f32ToBf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81); // above the tie
    expect(f32ToBf16(1 + 2 ** -9)).toBe(0x3f80); // below the tie
    expect(f32ToBf16(Math.PI)).toBe(0x4049);
    expect(f32ToBf16(Infinity)).toBe(0x7f80);
    expect(f32ToBf16(-Infinity)).toBe(0xff80);
    expect(f32ToBf16(3.4028234663852886e38)).toBe(0x7f80); // largest f32 rounds up past the largest bf16
    expect(f32ToBf16(2 ** -133)).toBe(0x0001); // f32 subnormal → bf16 subnormal
    const nan = f32ToBf16(NaN);
    expect(bf16ToF32(nan)).toBeNaN();
    expect(bf16ToF32(0x7f7f)).toBe(3.3895313892515355e38);
  });

  it('round-trips every bfloat16 bit pattern', () => {
    const wrong: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const x = bf16ToF32(h);
      const ok = Number.isNaN(x) ? Number.isNaN(bf16ToF32(f32ToBf16(x))) : f32ToBf16(x) === h;
      if (!ok) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });

  it('rounds to half precision to nearest even, with subnormals and overflow', () => {
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(-2)).toBe(0xc000);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToF16(0.1)).toBe(0x2e66);
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie → even (down)
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(f32ToF16(65504)).toBe(0x7bff); // largest half
    expect(f32ToF16(65519.99)).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00); // the tie with 65536 rounds to even: infinity
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-1e6)).toBe(0xfc00);
    expect(f32ToF16(2 ** -14)).toBe(0x0400); // smallest normal
    expect(f32ToF16(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up from subnormal into normal
    expect(f32ToF16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie → even: zero
    expect(f32ToF16(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 → even
    expect(f32ToF16(5 * 2 ** -25)).toBe(0x0002); // tie between 2 and 3 → even
    expect(f32ToF16(2 ** -26)).toBe(0x0000);
    expect(f32ToF16(-(2 ** -24))).toBe(0x8001);
    expect(f32ToF16(1e-40)).toBe(0x0000); // f32 subnormal
    expect(f16ToF32(f32ToF16(NaN))).toBeNaN();
    expect(f32ToF16(Infinity)).toBe(0x7c00);
    expect(f16ToF32(0x3555)).toBe(0.333251953125);
  });

  it('round-trips every half-precision bit pattern', () => {
    const wrong: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const x = f16ToF32(h);
      const ok = Number.isNaN(x) ? Number.isNaN(f16ToF32(f32ToF16(x))) : f32ToF16(x) === h;
      if (!ok) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });

  it('rounds every value between two adjacent halves to the nearer one', () => {
    for (let h = 0x0000; h < 0x7bff; h += 97) {
      const lo = f16ToF32(h);
      const hi = f16ToF32(h + 1);
      const mid = (lo + hi) / 2;
      expect(f32ToF16(lo + (hi - lo) * 0.25)).toBe(h);
      expect(f32ToF16(lo + (hi - lo) * 0.75)).toBe(h + 1);
      expect(f32ToF16(mid)).toBe(h % 2 === 0 ? h : h + 1);
    }
  });
});

describe('atomic writes', () => {
  it('replaces the file whole and leaves no temporary file', async () => {
    const sub = await mkdtemp(join(dir, 'atomic-'));
    const path = join(sub, 'a.txt');
    await writeFileAtomic(path, 'first');
    await writeFileAtomic(path, [Buffer.from('sec'), Buffer.from('ond')]);
    expect(await readFile(path, 'utf8')).toBe('second');
    expect(await readdir(sub)).toEqual(['a.txt']);
  });

  it('removes the temporary file and names the path when the write fails', async () => {
    const sub = await mkdtemp(join(dir, 'atomic-'));
    await expect(writeFileAtomic(join(sub, 'missing', 'x'), 'x')).rejects.toThrow(KpigIOError);
    // Renaming a file over a non-empty folder fails only after the temporary file is complete.
    const folder = join(sub, 'folder');
    await mkdir(folder);
    await writeFile(join(folder, 'child'), '');
    await expect(writeFileAtomic(folder, 'data')).rejects.toThrow(/folder/);
    expect(await readdir(sub)).toEqual(['folder']);
  });
});

describe.skipIf(oracleMissing !== null)('against reference.py (PyTorch)', () => {
  // The oracle loads our file with its strict reader, rewrites it with its own writer, and casts
  // the float32 values `x` to f16 and bf16 with torch.
  const script = [
    'import sys, torch',
    'sys.path.insert(0, sys.argv[1])',
    'import reference as r',
    't, meta = r.load_safetensors(sys.argv[2])',
    'r.save_safetensors(sys.argv[3], t, metadata=meta)',
    "r.save_safetensors(sys.argv[4], {'f16': t['x'].to(torch.float16), 'bf16': t['x'].to(torch.bfloat16)})",
  ].join('\n');

  it('reads our files, writes byte-identical ones, and rounds to f16/bf16 as we do', async () => {
    const values: number[] = [];
    for (let i = 0; i < 20000; i++) {
      const mant = Math.abs(Math.sin(i) * 43758.5453) % 1;
      values.push(Math.fround((i % 2 ? -1 : 1) * (1 + mant) * 2 ** ((i % 70) - 45)));
    }
    for (let h = 0; h < 0x7bff; h += 7) values.push(Math.fround((f16ToF32(h) + f16ToF32(h + 1)) / 2));
    for (let h = 0; h < 0x7f7f; h += 13) values.push(bf16ToF32(h) + (bf16ToF32(h + 1) - bf16ToF32(h)) / 2);
    values.push(0, -0, Infinity, -Infinity, 65504, 65520, 3.4028234663852886e38, 2 ** -25, 2 ** -24, 1e-40);
    const x = Float32Array.from(values);

    const ours = join(dir, 'oracle-in.safetensors');
    const theirs = join(dir, 'oracle-same.safetensors');
    const casts = join(dir, 'oracle-casts.safetensors');
    await writeSafetensors(ours, { ...sample, x: { dtype: 'F32', shape: [x.length], data: x } }, { format: 'pt' });
    const run = spawnSync(python, ['-c', script, dirname(referencePy), ours, theirs, casts], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);

    expect((await readFile(theirs)).equals(await readFile(ours))).toBe(true);
    const { tensors } = await readSafetensors(casts);
    const f16 = new Uint16Array(tensors.get('f16')!.bytes.slice().buffer);
    const bf16 = new Uint16Array(tensors.get('bf16')!.bytes.slice().buffer);
    const wrong: string[] = [];
    x.forEach((v, i) => {
      if (f32ToF16(v) !== f16[i]) wrong.push(`f16(${v}) = ${f32ToF16(v)}, torch ${f16[i]}`);
      if (f32ToBf16(v) !== bf16[i]) wrong.push(`bf16(${v}) = ${f32ToBf16(v)}, torch ${bf16[i]}`);
    });
    expect(wrong.slice(0, 10)).toEqual([]);
  });
});
