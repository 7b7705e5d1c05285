// Sharded scoring: `kpig score --shard i/n` slices the input into runs of whole chunks, and
// `kpig merge` joins the shards into a table equal, byte for byte, to the unsharded output; every
// way of getting the shards wrong is an error that names the file.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Int32, List, RecordBatchFileWriter, Schema, Struct, Table, Utf8, tableFromIPC, tableToIPC, vectorFromArray } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inputChunkSizes, parseShard, shardBounds, SHARD_METADATA_KEY } from '../src/scoring/shard.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
const root = mkdtempSync(join(tmpdir(), 'kpig-shard-'));
afterAll(() => {
  dirs.cleanup();
  rmSync(root, { recursive: true, force: true });
});

/** Rows of 13 tasks (one instruction each, so the prefix cache shares within a chunk); every 17th has no response (an error row). */
function rows(n: number, salt = '') {
  const labels = ['yes', 'no', 'maybe', 'true', 'false'];
  return Array.from({ length: n }, (_, i) => {
    const a = labels[i % 5], b = labels[(i + 2) % 5];
    const instruction = `Task ${i % 13}${salt}: answer "${a}" or "${b}".`;
    const s1 = instruction.indexOf(`"${a}"`), s2 = instruction.indexOf(`"${b}"`);
    return {
      task_id: `t${i % 13}`,
      instance_id: `i${i}`,
      instruction,
      key_spans: [[s1, s1 + a.length + 2], [s2, s2 + b.length + 2]],
      input: `case ${i} ${'x'.repeat(i % 40)}`,
      output: i % 17 === 5 ? '' : a,
    };
  });
}

const kpig = (...args: string[]) => spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });

function writeJsonl(name: string, data: object[]): string {
  const path = join(root, name);
  writeFileSync(path, data.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return path;
}

/** Scores shard i of n of `data` into root/<prefix>-<i>.<ext>; returns the path. */
function shard(model: string, data: string, i: number, n: number, prefix: string, extra: string[] = [], ext = 'arrow'): string {
  const out = join(root, `${prefix}-${i}.${ext}`);
  const r = kpig('score', model, '--data', data, '--out', out, '--shard', `${i}/${n}`, ...extra);
  expect(r.stderr).toContain(`shard ${i}/${n}`);
  expect(r.status).toBe(0);
  return out;
}

describe('sharded scoring', () => {
  let model: string;
  let data: string;
  let shards: string[];
  const chunk = ['--chunk-rows', '100'];
  beforeAll(async () => {
    model = await dirs.make({ preset: 'gpt2-nano', seed: 4, config: { vocab_size: 259 } });
    data = writeJsonl('rows.jsonl', rows(1250));
    shards = Array.from({ length: 7 }, (_, i) => shard(model, data, i, 7, 'a', chunk));
  });

  it('7 shards merged equal the unsharded output byte for byte, whatever order the shards are named in', () => {
    const full = join(root, 'full.arrow');
    expect(kpig('score', model, '--data', data, '--out', full, ...chunk).status).toBe(0);
    const merged = join(root, 'merged.arrow');
    const r = kpig('merge', ...[...shards].reverse(), '-o', merged);
    expect(r.stderr).toContain('7 shards, 1250 rows merged');
    expect(r.status).toBe(0);
    expect(Buffer.compare(readFileSync(merged), readFileSync(full))).toBe(0);
  });

  it('each shard is a run of whole chunks; together they hold every row once, in input order', () => {
    const ids: string[] = [];
    let expectStart = 0;
    shards.forEach((path, i) => {
      const t = tableFromIPC(readFileSync(path));
      const m = JSON.parse(t.schema.metadata.get(SHARD_METADATA_KEY)!);
      expect(m.shard).toEqual({ index: i, count: 7 });
      expect(m.rows.start).toBe(expectStart);
      expect(m.rows.start % 100).toBe(0); // chunk-aligned
      expect(t.numRows).toBe(m.rows.end - m.rows.start);
      expectStart = m.rows.end;
      ids.push(...Array.from(t.getChild('instance_id')!.toArray() as string[]));
    });
    expect(expectStart).toBe(1250);
    expect(ids).toEqual(rows(1250).map((r) => r.instance_id));
  });

  it('an Arrow input whose one record batch is cut into chunks: shards as streams, merged equal to the unsharded stream', () => {
    const input = rows(430, 'b');
    const spans = new List(new Field('item', new Struct([new Field('start', new Int32()), new Field('end', new Int32())])));
    const table = new Table({
      task_id: vectorFromArray(input.map((r) => r.task_id), new Utf8()),
      instance_id: vectorFromArray(input.map((r) => r.instance_id), new Utf8()),
      instruction: vectorFromArray(input.map((r) => r.instruction), new Utf8()),
      key_spans: vectorFromArray(input.map((r) => r.key_spans.map(([start, end]) => ({ start, end }))), spans),
      input: vectorFromArray(input.map((r) => r.input), new Utf8()),
      output: vectorFromArray(input.map((r) => r.output), new Utf8()),
    });
    expect(table.batches).toHaveLength(1);
    const arrowIn = join(root, 'rows.arrow');
    writeFileSync(arrowIn, tableToIPC(table, 'file'));
    const full = join(root, 'full-b.arrows');
    expect(kpig('score', model, '--data', arrowIn, '--out', full, '--chunk-rows', '64').status).toBe(0);
    expect(tableFromIPC(readFileSync(full)).batches.map((b) => b.numRows)).toEqual([64, 64, 64, 64, 64, 64, 46]);
    const parts = [0, 1, 2].map((i) => shard(model, arrowIn, i, 3, 'b', ['--chunk-rows', '64'], 'arrows'));
    const merged = join(root, 'merged-b.arrows');
    expect(kpig('merge', ...parts, '-o', merged).status).toBe(0);
    expect(Buffer.compare(readFileSync(merged), readFileSync(full))).toBe(0);
  });

  it('more shards than chunks: the extra shards are empty and the merge is still the unsharded output', () => {
    const small = writeJsonl('small.jsonl', rows(150, 'c'));
    const full = join(root, 'full-c.arrow');
    expect(kpig('score', model, '--data', small, '--out', full, ...chunk).status).toBe(0);
    const parts = [0, 1, 2, 3].map((i) => shard(model, small, i, 4, 'c', chunk));
    expect(parts.map((p) => tableFromIPC(readFileSync(p)).numRows)).toEqual([0, 100, 0, 50]);
    const merged = join(root, 'merged-c.arrow');
    expect(kpig('merge', ...parts, '-o', merged).status).toBe(0);
    expect(Buffer.compare(readFileSync(merged), readFileSync(full))).toBe(0);
  });

  it('a missing shard is an error naming its index and rows; nothing is written', () => {
    const out = join(root, 'missing.arrow');
    const r = kpig('merge', ...shards.filter((_, i) => i !== 2 && i !== 5), '-o', out);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('missing shard(s) of rows.jsonl (1250 rows): 2/7 (rows 300–500), 5/7 (rows 900–1100)');
    expect(existsSync(out)).toBe(false);
  });

  it('a shard of another input, model or options is an error naming the file', async () => {
    const other = writeJsonl('other.jsonl', rows(1250, 'd'));
    const foreign = shard(model, other, 3, 7, 'd', chunk);
    let r = kpig('merge', ...shards.slice(0, 3), foreign, ...shards.slice(4), '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`${foreign.replace(/[.]/g, '\\.')}: a shard of another input \\(other\\.jsonl`));
    const model2 = await dirs.make({ preset: 'gpt2-nano', seed: 5, config: { vocab_size: 259 } });
    const otherModel = shard(model2, data, 3, 7, 'e', chunk);
    r = kpig('merge', shards[0], otherModel, '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${otherModel}: scored with another model`);
    const otherOptions = shard(model, data, 3, 7, 'f', [...chunk, '--placeholder', '<key>']);
    r = kpig('merge', shards[0], otherOptions, '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${otherOptions}: scored with other options than ${shards[0]}: placeholder "<key>" vs "[MASK]"`);
    expect(existsSync(join(root, 'x.arrow'))).toBe(false);
  });

  it('overlapping shards (one index twice, or a shard of another split) are errors naming the file', () => {
    let r = kpig('merge', ...shards, shards[4], '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${shards[4]}: shard 4/7 again (also ${shards[4]}): the shards overlap`);
    const fifth = shard(model, data, 1, 5, 'g', chunk);
    r = kpig('merge', ...shards, fifth, '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${fifth}: shard 1/5 of another split than ${shards[0]} (shard 0/7): the shards overlap`);
  });

  it('a table that is not a shard, and a shard whose rows disagree with its manifest, are errors naming the file', () => {
    const plain = join(root, 'full.arrow');
    let r = kpig('merge', plain, '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${plain}: not a kpig score shard`);
    // Shard 1's manifest over half its rows.
    const t = tableFromIPC(readFileSync(shards[1]));
    const cut = t.slice(0, Math.floor(t.numRows / 2));
    const altered = join(root, 'altered.arrow');
    const writer = new RecordBatchFileWriter();
    const schema = new Schema(t.schema.fields, t.schema.metadata);
    writer.write(new Table(schema, cut.batches.map((b) => b)) as never);
    writeFileSync(altered, writer.toUint8Array(true));
    r = kpig('merge', shards[0], altered, ...shards.slice(2), '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${altered}: holds ${cut.numRows} rows, but its manifest says rows 100–300 (200): the file is incomplete or was altered`);
    r = kpig('merge', join(root, 'rows.jsonl'), '-o', join(root, 'x.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('not a readable Arrow IPC file');
  });

  it('usage errors: a bad --shard, --shard with Parquet output, merge onto one of its shards', () => {
    for (const spec of ['7/7', '1', '-1/3', 'a/b', '2/0']) {
      const r = kpig('score', model, '--data', data, '--out', join(root, 'x.arrow'), '--shard', spec);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('--shard must be i/n');
    }
    let r = kpig('score', model, '--data', data, '--out', join(root, 'x.parquet'), '--shard', '0/2');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--shard writes an Arrow file');
    r = kpig('merge', shards[0], '-o', shards[0]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('is one of the shards');
  });
});

describe('shard arithmetic', () => {
  it('parseShard reads i/n counted from 0', () => {
    expect(parseShard('0/1')).toEqual({ index: 0, count: 1 });
    expect(parseShard(' 6/7 ')).toEqual({ index: 6, count: 7 });
    expect(() => parseShard('7/7')).toThrow(/0 ≤ i < n/);
  });

  it('shardBounds covers every chunk once, in order, against a plain count', () => {
    let seed = 3;
    const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let trial = 0; trial < 200; trial++) {
      const sizes = Array.from({ length: next(30) }, () => 1 + next(9));
      const n = 1 + next(12);
      const { rows, chunks } = shardBounds(sizes, n);
      // Plain reference: chunk c goes to the shard j with ⌊j·C/n⌋ ≤ c < ⌊(j+1)·C/n⌋.
      const owner = sizes.map((_, c) => Array.from({ length: n }, (_, j) => j).find((j) => Math.floor((j * sizes.length) / n) <= c && c < Math.floor(((j + 1) * sizes.length) / n)));
      expect(owner.every((o) => o !== undefined)).toBe(true);
      for (let j = 0; j < n; j++) {
        const mine = sizes.filter((_, c) => owner[c] === j);
        expect(rows[j + 1] - rows[j]).toBe(mine.reduce((a, b) => a + b, 0));
        expect(chunks[j + 1] - chunks[j]).toBe(mine.length);
      }
      expect(rows[n]).toBe(sizes.reduce((a, b) => a + b, 0));
    }
  });

  it('inputChunkSizes counts JSONL rows as the reader does (blank lines and a BOM are no rows)', async () => {
    const path = join(root, 'blank.jsonl');
    const lines = rows(25, 'e').map((r) => JSON.stringify(r));
    writeFileSync(path, '\uFEFF' + lines.slice(0, 10).join('\n') + '\n\n   \n' + lines.slice(10).join('\r\n') + '\n');
    expect(await inputChunkSizes(path, 10)).toEqual([10, 10, 5]);
  });
});
