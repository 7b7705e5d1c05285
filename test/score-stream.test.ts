// `kpig score` over files: JSONL and Arrow input read a chunk at a time, an Arrow IPC file out
// (a stream for `.arrows`) with exactly one row per input row, and clear errors for bad files.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Int64, List, Struct, Table, Utf8, tableFromIPC, tableToIPC, vectorFromArray } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../src/model/model.js';
import { readScoringChunks, scoreStream } from '../src/scoring/stream.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
const root = mkdtempSync(join(tmpdir(), 'kpig-score-'));
afterAll(() => {
  dirs.cleanup();
  rmSync(root, { recursive: true, force: true });
});

function rows(n: number) {
  const labels = ['yes', 'no', 'maybe'];
  return Array.from({ length: n }, (_, i) => {
    const a = labels[i % 3], b = labels[(i + 1) % 3];
    const instruction = `Answer "${a}" or "${b}".`;
    return {
      task_id: `t${i % 7}`,
      instance_id: `i${i}`,
      instruction,
      key_spans: [[8, 8 + a.length + 2], [instruction.indexOf(`"${b}"`), instruction.indexOf(`"${b}"`) + b.length + 2]],
      input: `case ${i}`,
      output: i % 11 === 5 ? '' : a, // every 11th row has an empty response: an error row
    };
  });
}

describe('kpig score', () => {
  let model: string;
  beforeAll(async () => {
    model = await dirs.make({ preset: 'gpt2-nano', seed: 4, config: { vocab_size: 259 } });
  });

  it('scores JSONL in chunks into an Arrow stream with one row per input row', () => {
    const data = join(root, 'rows.jsonl');
    const input = rows(2500);
    writeFileSync(data, input.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const out = join(root, 'scores.arrow');
    const r = spawnSync(process.execPath, ['dist/cli/main.js', 'score', model, '--data', data, '--out', out, '--chunk-rows', '700', '--json'], { encoding: 'utf8' });
    expect(r.stderr).toContain('2500 rows scored');
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n').map((l) => JSON.parse(l).rows)).toEqual([700, 1400, 2100, 2500]);
    const table = tableFromIPC(readFileSync(out));
    expect(table.numRows).toBe(2500);
    const ids = table.getChild('instance_id')!.toArray() as string[];
    expect(Array.from(ids)).toEqual(input.map((x) => x.instance_id));
    const status = Array.from(table.getChild('status')!.toArray() as string[]);
    expect(status.filter((s) => s === 'error')).toHaveLength(input.filter((x) => x.output === '').length);
    const kl = table.getChild('ig_kl')!.toArray() as Float64Array;
    expect(status.every((s, i) => (s === 'ok') === Number.isFinite(kl[i]))).toBe(true);
  });

  it('--precision bf16 scores the same rows within bf16 rounding of fp32; a bad value exits 2', () => {
    const data = join(root, 'prec.jsonl');
    writeFileSync(data, rows(30).map((r) => JSON.stringify(r)).join('\n') + '\n');
    const score = (precision: string) => {
      const out = join(root, `prec-${precision}.arrow`);
      const r = spawnSync(process.execPath, ['dist/cli/main.js', 'score', model, '--data', data, '--out', out, '--precision', precision], { encoding: 'utf8' });
      return { r, table: r.status === 0 ? tableFromIPC(readFileSync(out)) : null };
    };
    const fp32 = score('fp32'), bf16 = score('bf16');
    expect(fp32.r.status).toBe(0);
    expect(bf16.r.status).toBe(0);
    const ce = (t: typeof fp32.table) => Array.from(t!.getChild('ce_full')!.toArray() as Float64Array);
    const a = ce(fp32.table), b = ce(bf16.table);
    let differ = 0;
    a.forEach((x, i) => {
      if (!Number.isFinite(x)) return expect(Number.isFinite(b[i])).toBe(false);
      expect(Math.abs(b[i] - x) / x).toBeLessThan(1e-2);
      if (b[i] !== x) differ++;
    });
    expect(differ).toBeGreaterThan(0);
    const bad = score('fp16');
    expect(bad.r.status).toBe(2);
    expect(bad.r.stderr).toContain('--precision must be fp32 or bf16');
  });

  it('reads Arrow input batch by batch and agrees with JSONL input', async () => {
    const m = await Model.load(model);
    const jsonl = join(root, 'few.jsonl');
    writeFileSync(jsonl, rows(40).map((r) => JSON.stringify(r)).join('\n'));
    const chunks = [];
    for await (const c of readScoringChunks(jsonl, 15)) chunks.push(c);
    expect(chunks.map((c) => c.numRows)).toEqual([15, 15, 10]);
    const arrowIn = join(root, 'few.arrow');
    const { Table } = await import('apache-arrow');
    writeFileSync(arrowIn, tableToIPC(new Table(chunks.flatMap((c) => c.batches)), 'stream'));
    const a = join(root, 'a.arrow'), b = join(root, 'b.arrow');
    m.setPrefixCache(0); // same inputs, same computation: the scores must agree to the bit
    expect(await scoreStream(m, readScoringChunks(jsonl, 15), a)).toBe(40);
    expect(await scoreStream(m, readScoringChunks(arrowIn), b)).toBe(40);
    const ta = tableFromIPC(readFileSync(a)), tb = tableFromIPC(readFileSync(b));
    expect(Array.from(tb.getChild('ig_ce')!.toArray() as Float64Array)).toEqual(Array.from(ta.getChild('ig_ce')!.toArray() as Float64Array));
    m.dispose();
  });

  it('fails clearly on a corrupt Arrow file and bad JSONL, leaving no output', async () => {
    const m = await Model.load(model);
    const bad = join(root, 'corrupt.arrow');
    writeFileSync(bad, Buffer.from('ARROW1\0\0garbage that is not arrow at all'));
    const out = join(root, 'never.arrow');
    await expect(scoreStream(m, readScoringChunks(bad), out)).rejects.toThrow(/corrupt\.arrow: (not a readable Arrow IPC file|corrupt Arrow data)/);
    const jsonl = join(root, 'bad.jsonl');
    writeFileSync(jsonl, JSON.stringify(rows(1)[0]) + '\n{"task_id": "x"}\n');
    await expect(scoreStream(m, readScoringChunks(jsonl), out)).rejects.toThrow(`${jsonl}:2: missing field(s) instance_id, instruction, key_spans, output`);
    expect(existsSync(out)).toBe(false);
    m.dispose();
  });

  // The IPC file format starts and ends with the magic "ARROW1"; the stream format has neither.
  const magic = (path: string) => {
    const b = readFileSync(path);
    return [b.subarray(0, 6).toString('latin1'), b.subarray(b.length - 6).toString('latin1')];
  };
  const cli = (...args: string[]) => spawnSync(process.execPath, ['dist/cli/main.js', 'score', model, ...args], { encoding: 'utf8' });

  it('writes the Arrow IPC file format for .arrow and the stream format only for .arrows', () => {
    const data = join(root, 'fmt.jsonl');
    writeFileSync(data, rows(30).map((r) => JSON.stringify(r)).join('\n'));
    const file = join(root, 'fmt.arrow'), stream = join(root, 'fmt.arrows');
    expect(cli('--data', data, '--out', file).status).toBe(0);
    expect(cli('--data', data, '--out', stream).status).toBe(0);
    expect(magic(file)).toEqual(['ARROW1', 'ARROW1']);
    expect(magic(stream)[0]).not.toBe('ARROW1');
    expect(tableFromIPC(readFileSync(file)).numRows).toBe(30);
    expect(tableFromIPC(readFileSync(stream)).numRows).toBe(30);
  });

  it('refuses key-span offsets that are not integers in [0, 2^31 − 1] instead of wrapping or coercing them', () => {
    const out = join(root, 'spans.arrow');
    for (const bad of [4294967306, 1.5, '1', -1, null]) {
      const r = rows(3).map((x) => JSON.stringify(x));
      const row = rows(3)[1];
      r[1] = JSON.stringify({ ...row, key_spans: [[0, 4], { start: 0, end: bad }] });
      const data = join(root, 'spans.jsonl');
      writeFileSync(data, r.join('\n'));
      const res = cli('--data', data, '--out', out);
      expect(res.status, `${bad}`).toBe(1);
      expect(res.stderr).toContain(`${data}:2: key span 1 must be {start, end} or [start, end] with integer offsets in [0, 2147483647]`);
      expect(existsSync(out)).toBe(false);
    }
  });

  it('reads int64 offsets (what pandas writes) from Arrow input like int32 ones', async () => {
    const m = await Model.load(model);
    const input = rows(12);
    const span = new List(new Field('item', new Struct([new Field('start', new Int64()), new Field('end', new Int64())])));
    const utf8 = (f: (r: (typeof input)[number]) => string) => vectorFromArray(input.map(f), new Utf8());
    const table = new Table({
      task_id: utf8((r) => r.task_id), instance_id: utf8((r) => r.instance_id), instruction: utf8((r) => r.instruction),
      key_spans: vectorFromArray(input.map((r) => r.key_spans.map(([a, b]) => ({ start: BigInt(a), end: BigInt(b) }))), span),
      input: utf8((r) => r.input), output: utf8((r) => r.output),
    });
    const wide = join(root, 'int64.arrow');
    writeFileSync(wide, tableToIPC(table, 'file'));
    const jsonl = join(root, 'int32.jsonl');
    writeFileSync(jsonl, input.map((r) => JSON.stringify(r)).join('\n'));
    const a = join(root, 'int64-scores.arrow'), b = join(root, 'int32-scores.arrow');
    m.setPrefixCache(0); // same inputs, same computation: the scores must agree to the bit
    await scoreStream(m, readScoringChunks(wide), a);
    await scoreStream(m, readScoringChunks(jsonl), b);
    const ta = tableFromIPC(readFileSync(a)), tb = tableFromIPC(readFileSync(b));
    expect(Array.from(ta.getChild('status')!.toArray() as string[])).toEqual(Array.from(tb.getChild('status')!.toArray() as string[]));
    expect(Array.from(ta.getChild('ig_kl')!.toArray() as Float64Array)).toEqual(Array.from(tb.getChild('ig_kl')!.toArray() as Float64Array));
    m.dispose();
  });

  it('reads JSONL that starts with a UTF-8 byte-order mark', () => {
    const data = join(root, 'bom.jsonl');
    writeFileSync(data, '\uFEFF' + rows(4).map((r) => JSON.stringify(r)).join('\n'));
    const out = join(root, 'bom.arrow');
    const r = cli('--data', data, '--out', out);
    expect(r.stderr).toContain('4 rows scored');
    expect(tableFromIPC(readFileSync(out)).numRows).toBe(4);
  });

  it('writes the output schema with zero rows for an empty input', () => {
    const data = join(root, 'empty.jsonl');
    writeFileSync(data, '');
    const out = join(root, 'empty.arrow');
    expect(cli('--data', data, '--out', out).status).toBe(0);
    const t = tableFromIPC(readFileSync(out));
    expect(t.numRows).toBe(0);
    expect(t.schema.fields.map((f) => f.name)).toEqual(expect.arrayContaining(['task_id', 'instance_id', 'status', 'ig_kl']));
  });

  it('refuses --out naming the --data file and leaves the input as it was', () => {
    const data = join(root, 'same.jsonl');
    const text = rows(3).map((r) => JSON.stringify(r)).join('\n');
    writeFileSync(data, text);
    const r = cli('--data', data, '--out', join(root, '.', 'same.jsonl'));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('is the --data file');
    expect(readFileSync(data, 'utf8')).toBe(text);
  });

  it('a missing input is one line naming it, status 1', () => {
    const r = cli('--data', join(root, 'missing.jsonl'), '--out', join(root, 'never3.arrow'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(/^kpig: cannot read the scoring input .*missing\.jsonl: ENOENT/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('refuses more threads than the machine has cores, before starting any', () => {
    const r = cli('--data', join(root, 'same.jsonl'), '--out', join(root, 'never2.arrow'), '-t', '100000');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--threads 100000 is more than the \d+ cores of this machine/);
  });
});
