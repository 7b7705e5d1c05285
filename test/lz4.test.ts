// The LZ4 frame decoder on frames built by hand from the format specification (pandas, polars
// and pyarrow files are decoded in test/interop/tables.test.ts): overlapping matches, stored
// blocks, checksums, linked blocks, and malformed frames that must throw rather than return bytes.
import { describe, expect, it } from 'vitest';
import { decodeLz4Frame } from '../src/io/lz4.js';

const MAGIC = [0x04, 0x22, 0x4d, 0x18];
const le = (n: number) => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255];
const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');
/** A frame: FLG, BD 64 KiB, a header-checksum byte (not checked), the blocks, the end mark. */
function frame(flg: number, blocks: number[][], trailer: number[] = []): Uint8Array {
  return Uint8Array.from([...MAGIC, flg, 0x40, 0x00, ...blocks.flat(), 0, 0, 0, 0, ...trailer]);
}
// "ab", then a match 2 back of length 6 (overlapping its own output), then the literal "c".
const BLOCK = [0x22, 0x61, 0x62, 0x02, 0x00, 0x10, 0x63];

describe('LZ4 frames', () => {
  it('decodes literals and overlapping matches', () => {
    expect(text(decodeLz4Frame(frame(0x60, [[...le(BLOCK.length), ...BLOCK]])))).toBe('ababababc');
  });

  it('copies stored blocks, skips block and content checksums and the content size, and reads concatenated frames', () => {
    const stored = [...le(0x80000000 | 3), 0x78, 0x79, 0x7a];
    const withChecksums = frame(0x74, [[...le(BLOCK.length), ...BLOCK, 1, 2, 3, 4], [...stored, 5, 6, 7, 8]], [9, 9, 9, 9]);
    expect(text(decodeLz4Frame(withChecksums))).toBe('ababababcxyz');
    const sized = Uint8Array.from([...MAGIC, 0x68, 0x40, ...le(9), 0, 0, 0, 0, 0x00, ...le(BLOCK.length), ...BLOCK, 0, 0, 0, 0]);
    expect(text(decodeLz4Frame(sized))).toBe('ababababc');
    expect(text(decodeLz4Frame(Uint8Array.from([...frame(0x60, [[...le(BLOCK.length), ...BLOCK]]), ...frame(0x60, [stored])])))).toBe('ababababcxyz');
  });

  it('lets a linked block match into the previous block, and refuses that in independent blocks', () => {
    const linkedBlock = [0x04, 0x09, 0x00]; // no literals, match offset 9, length 4 + 4 = 8, then nothing
    const tail = [0x10, 0x21]; // literal "!"
    const linked = frame(0x40, [[...le(BLOCK.length), ...BLOCK], [...le(linkedBlock.length + tail.length), ...linkedBlock, ...tail]]);
    // The match starts 9 bytes back, at the first byte of the first block, and copies 8 of them.
    expect(text(decodeLz4Frame(linked))).toBe('ababababc' + 'abababab' + '!');
    const independent = frame(0x60, [[...le(BLOCK.length), ...BLOCK], [...le(linkedBlock.length + tail.length), ...linkedBlock, ...tail]]);
    expect(() => decodeLz4Frame(independent)).toThrow(/match offset 9 reaches before the data/);
  });

  it('throws on malformed frames instead of returning bytes', () => {
    const good = frame(0x60, [[...le(BLOCK.length), ...BLOCK]]);
    expect(() => decodeLz4Frame(good.subarray(0, good.length - 6))).toThrow(/LZ4/);
    expect(() => decodeLz4Frame(Uint8Array.from([1, 2, 3, 4, 5, 6, 7]))).toThrow(/not an LZ4 frame/);
    expect(() => decodeLz4Frame(frame(0x61, []))).toThrow(/dictionary/);
    expect(() => decodeLz4Frame(frame(0x60, [[...le(3), 0x00, 0x05, 0x00]]))).toThrow(/match offset 5 reaches before the data/);
  });
});
