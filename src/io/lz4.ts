/**
 * LZ4 frame decoding (the format Arrow IPC uses for `lz4` buffers), written from the LZ4 frame and
 * block format specifications: independent or linked blocks, stored (uncompressed) blocks, block
 * and content checksums (skipped), content size, concatenated frames. Dictionaries and legacy
 * frames are refused; a malformed frame throws instead of returning wrong bytes.
 */

const MAGIC = 0x184d2204;
const SKIPPABLE = 0x184d2a50; // 0x184D2A50 … 0x184D2A5F

/** A byte buffer that grows by doubling. */
class Output {
  buf: Uint8Array;
  len = 0;
  constructor(size: number) {
    this.buf = new Uint8Array(Math.max(64, size));
  }
  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
}

function u32(data: Uint8Array, at: number): number {
  if (at + 4 > data.length) throw new Error(`LZ4: the frame ends inside a 4-byte field at byte ${at}`);
  return (data[at] | (data[at + 1] << 8) | (data[at + 2] << 16) | (data[at + 3] << 24)) >>> 0;
}

/** A length of 15 in a token goes on in bytes of 255 and one final byte: the full length and where reading continues. */
function extended(data: Uint8Array, i: number, to: number, len: number, what: string): [number, number] {
  let b: number;
  do {
    if (i >= to) throw new Error(`LZ4: a ${what} length runs past the block`);
    b = data[i++];
    len += b;
  } while (b === 255);
  return [len, i];
}

/** Decodes one LZ4 block (`data[from, to)`) onto the end of `out`; matches may reach into earlier output. */
function decodeBlock(data: Uint8Array, from: number, to: number, out: Output, linkedFrom: number): void {
  let i = from;
  while (i < to) {
    const token = data[i++];
    let lit = token >>> 4;
    if (lit === 15) [lit, i] = extended(data, i, to, lit, 'literal');
    if (i + lit > to) throw new Error('LZ4: literals run past the block');
    out.reserve(lit);
    out.buf.set(data.subarray(i, i + lit), out.len);
    out.len += lit;
    i += lit;
    if (i === to) return; // the last sequence has literals only
    if (i + 2 > to) throw new Error('LZ4: a match offset runs past the block');
    const offset = data[i] | (data[i + 1] << 8);
    i += 2;
    if (offset === 0 || offset > out.len - linkedFrom) throw new Error(`LZ4: match offset ${offset} reaches before the data`);
    let len = (token & 15) + 4;
    if ((token & 15) === 15) [len, i] = extended(data, i, to, len, 'match');
    out.reserve(len);
    let src = out.len - offset;
    const buf = out.buf;
    for (let k = 0; k < len; k++) buf[out.len++] = buf[src++]; // byte by byte: the match may overlap its own output
  }
}

/**
 * The bytes of one or more concatenated LZ4 frames.
 *
 * @throws Error for a bad magic number, an unknown version, a dictionary frame, or a block that
 *   does not decode
 * @example
 * decodeLz4Frame(bytes); // Uint8Array of the original data
 */
export function decodeLz4Frame(data: Uint8Array): Uint8Array {
  const out = new Output(data.length * 4);
  let at = 0;
  while (at < data.length) {
    const magic = u32(data, at);
    if (magic >= SKIPPABLE && magic <= SKIPPABLE + 15) {
      at += 8 + u32(data, at + 4);
      continue;
    }
    if (magic !== MAGIC) throw new Error(`LZ4: not an LZ4 frame (magic 0x${magic.toString(16)} at byte ${at})`);
    const flg = data[at + 4];
    if (flg >>> 6 !== 1) throw new Error(`LZ4: frame version ${flg >>> 6} is not 1`);
    const independent = (flg & 0x20) !== 0, blockChecksum = (flg & 0x10) !== 0, contentSize = (flg & 0x08) !== 0;
    const contentChecksum = (flg & 0x04) !== 0, dictionary = (flg & 0x01) !== 0;
    if (dictionary) throw new Error('LZ4: frames with a dictionary are not supported');
    at += 6 + (contentSize ? 8 : 0) + 1; // FLG, BD, content size, header checksum
    const frameStart = out.len;
    for (;;) {
      const size = u32(data, at);
      at += 4;
      if (size === 0) break; // end mark
      const stored = (size & 0x80000000) !== 0, n = size & 0x7fffffff;
      if (at + n > data.length) throw new Error(`LZ4: a block of ${n} bytes runs past the frame`);
      if (stored) {
        out.reserve(n);
        out.buf.set(data.subarray(at, at + n), out.len);
        out.len += n;
      } else decodeBlock(data, at, at + n, out, independent ? out.len : frameStart);
      at += n + (blockChecksum ? 4 : 0);
    }
    at += contentChecksum ? 4 : 0;
  }
  return out.buf.slice(0, out.len);
}
