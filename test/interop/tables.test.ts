// Tables other tools write and read. Every file pandas, polars and pyarrow write by default or
// with a named codec (Parquet: snappy, gzip, brotli, zstd, lz4, none; Arrow IPC: lz4 and zstd,
// file and stream, large strings; polars' default IPC with string_view and large_list, in every
// codec) imports with the same rows and int64 key spans. The other way: a task set and a
// `kpig score` output (Arrow and Parquet) and a `kpig eval` Parquet output open in pandas, polars,
// pyarrow and DuckDB with every row.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importData } from '../../src/data/ingest.js';
import { readArrowTable } from '../../src/io/arrow.js';
import { TASKSET_FILES, writeTaskSet } from '../../src/data/store.js';
import { readScoringChunks } from '../../src/scoring/stream.js';
import { ModelDir } from '../support/models.js';
import { interopPython, runPython, scratch } from './python.js';

const python = interopPython(['pandas', 'polars', 'pyarrow', 'duckdb']);
const root = scratch('kpig-tables-');
const dirs = new ModelDir();
afterAll(() => {
  root.cleanup();
  dirs.cleanup();
});
const script = join(__dirname, 'tables.py');

describe.skipIf(!python.ok)(`tables of pandas, polars, pyarrow and DuckDB${python.ok ? '' : ` (skipped: ${python.reason})`}`, () => {
  let files: { name: string; path: string; expect: 'ok' | 'ok-nospans' | 'error' }[] = [];
  let rows = 0;
  beforeAll(() => {
    const w = JSON.parse(runPython(python.path!, [script, 'write', root.dir]));
    files = w.files;
    rows = w.rows;
  });

  it('imports every file the libraries write, in every codec, with the same rows and key spans', async () => {
    expect(files.length).toBeGreaterThanOrEqual(20);
    for (const f of files.filter((x) => x.expect !== 'error')) {
      const set = await importData(f.path, { testFraction: 0.2, seed: 1 });
      expect(set.instances, f.name).toHaveLength(rows);
      // Row i answers ['yes', 'no', 'maybe'][i % 3] in task t(i % 3): every instance keeps its id, task and output.
      expect(set.instances.every((x) => x.task_id === `t${Number(x.instance_id) % 3}` && x.outputs[0] === ['yes', 'no', 'maybe'][Number(x.instance_id) % 3]), f.name).toBe(true);
      if (f.expect === 'ok-nospans') continue;
      const ins = set.instructions.find((i) => i.text === 'Answer "no" or "maybe".')!;
      expect(ins.key_spans.map((s) => [s.start, s.end]), f.name).toEqual([[7, 11], [15, 22]]);
    }
  });

  it("reads polars' string_view and large_list IPC (file and stream) as plain strings and lists", async () => {
    const names = files.filter((f) => f.name.startsWith('polars-') && /\.arrows?$/.test(f.name) && f.expect === 'ok').map((f) => f.name);
    expect(names).toEqual(['polars-default.arrow', 'polars-uncompressed.arrow', 'polars-lz4.arrow', 'polars-lists.arrow', 'polars-stream.arrows']);
    for (const name of names) {
      const table = await readArrowTable(files.find((x) => x.name === name)!.path);
      expect(String(table.schema.fields.find((f) => f.name === 'key_spans')!.type), name).toMatch(/^List<Struct</);
      expect(String(table.schema.fields.find((f) => f.name === 'instruction')!.type), name).toBe('Utf8');
    }
  });

  it('scores compressed Arrow input (lz4 file, zstd stream, polars view types) chunk by chunk', async () => {
    for (const name of ['pandas-default.feather', 'pandas-zstd.feather', 'pyarrow-zstd-stream.arrows', 'polars-default.arrow', 'polars-stream.arrows']) {
      let n = 0;
      for await (const chunk of readScoringChunks(files.find((x) => x.name === name)!.path)) n += chunk.numRows;
      expect(n, name).toBe(rows);
    }
  });

  it('writes a task set and scores that pandas, polars, pyarrow and DuckDB read with every row', async () => {
    const set = await importData(files.find((x) => x.name === 'pandas-default.parquet')!.path, { testFraction: 0.2, seed: 1 });
    const tasks = join(root.dir, 'taskset');
    await writeTaskSet(tasks, set);
    const model = await dirs.make({ preset: 'gpt2-nano', seed: 2, config: { vocab_size: 259 } });
    const scores = join(root.dir, 'scores.arrow');
    const jsonl = files.find((x) => x.name === 'pyarrow-default.feather')!.path;
    const r = spawnSync(process.execPath, ['dist/cli/main.js', 'score', model, '--data', jsonl, '--out', scores], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    // Parquet output: scores written chunk by chunk (row groups), and an evaluation with list columns and metadata.
    const scoresPq = join(root.dir, 'scores.parquet');
    const rp = spawnSync(process.execPath, ['dist/cli/main.js', 'score', model, '--data', jsonl, '--out', scoresPq, '--chunk-rows', '7'], { encoding: 'utf8' });
    expect(rp.status, rp.stderr).toBe(0);
    const evalPq = join(root.dir, 'eval.parquet');
    const re = spawnSync(process.execPath, ['dist/cli/main.js', 'eval', model, '--data', tasks, '--out', evalPq, '--max-new-tokens', '2', '-t', '1'], { encoding: 'utf8' });
    expect(re.status, re.stderr).toBe(0);
    const paths = [...Object.values(TASKSET_FILES).map((f) => join(tasks, f)), scores, scoresPq, evalPq];
    const seen = JSON.parse(runPython(python.path!, [script, 'read', ...paths])) as Record<
      string,
      { pandas: number; polars: number; pyarrow: number; duckdb: number; columns: string[]; metadata?: Record<string, string>; types?: Record<string, string> }
    >;
    expect(seen[join(tasks, TASKSET_FILES.instances)].pandas).toBe(rows);
    for (const p of paths) {
      const s = seen[p];
      expect([s.polars, s.pyarrow, s.duckdb], p).toEqual([s.pandas, s.pandas, s.pandas]);
    }
    expect(seen[scores].pandas).toBe(rows);
    expect(seen[scores].columns).toEqual(expect.arrayContaining(['task_id', 'instance_id', 'status', 'ig_kl']));
    expect(seen[scoresPq].pandas).toBe(rows);
    expect(seen[scoresPq].columns).toEqual(seen[scores].columns);
    expect(seen[scoresPq].types).toMatchObject({ task_id: 'string', ig_ce: 'double', n_tokens: 'int32' });
    expect(seen[evalPq].pandas).toBe(set.instances.filter((x) => x.split === 'test').length);
    expect(seen[evalPq].types!.references).toMatch(/^list</);
    expect(seen[evalPq].metadata!['kpig.kind']).toBe('predictions');
  });
});
