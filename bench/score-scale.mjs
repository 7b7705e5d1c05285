#!/usr/bin/env node
// Scale: scoring N generated rows (JSONL → Arrow stream) with a tiny model through scoreStream,
// in a child process per size so each reports its own peak RSS. Bounded memory shows as a peak
// that does not grow with N; the output must hold exactly one row per input row.
//   node bench/score-scale.mjs [--sizes 10000,100000] [--chunk-rows 4096]
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tableFromIPC } from 'apache-arrow';
import { Model } from '../dist/model/model.js';
import { readScoringChunks, scoreStream } from '../dist/scoring/stream.js';
import { createRandomModel } from '../dist/model/writer.js';
import { writeByteTokenizer } from '../dist/tokenizer/index.js';

const { values: opt } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10000,100000' },
    'chunk-rows': { type: 'string', default: '4096' },
    child: { type: 'string' },
    dir: { type: 'string' },
  },
});

if (opt.child) {
  const n = Number(opt.child);
  const data = join(opt.dir, `rows-${n}.jsonl`);
  const out = createWriteStream(data);
  const labels = ['yes', 'no', 'maybe', 'unclear'];
  for (let i = 0; i < n; i++) {
    const a = labels[i % 4], b = labels[(i + 1) % 4];
    const instruction = `Answer "${a}" or "${b}" about the statement.`;
    const row = {
      task_id: `task${i % 10}`,
      instance_id: `i${i}`,
      instruction,
      key_spans: [[8, 10 + a.length], [instruction.indexOf(`"${b}"`), instruction.indexOf(`"${b}"`) + b.length + 2]],
      input: `statement number ${i}`,
      output: a,
    };
    if (!out.write(JSON.stringify(row) + '\n')) await new Promise((r) => out.once('drain', r));
  }
  await new Promise((r) => out.end(r));
  const model = await Model.load(join(opt.dir, 'model'));
  const t0 = Date.now();
  const rows = await scoreStream(model, readScoringChunks(data, Number(opt['chunk-rows'])), join(opt.dir, `scores-${n}.arrow`));
  const sec = (Date.now() - t0) / 1000;
  const table = tableFromIPC(readFileSync(join(opt.dir, `scores-${n}.arrow`)));
  const ok = Array.from(table.getChild('status').toArray()).filter((s) => s === 'ok').length;
  console.log(JSON.stringify({ rows_in: n, rows_out: rows, table_rows: table.numRows, ok_rows: ok, seconds: +sec.toFixed(1),
    samples_per_s: Math.round(n / sec), peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024) }));
  process.exit(0);
}

const dir = mkdtempSync(join(tmpdir(), 'kpig-scale-'));
try {
  await createRandomModel(join(dir, 'model'), { preset: 'gpt2-nano', seed: 1, config: { vocab_size: 259, bos_token_id: 256, eos_token_id: 257 } });
  await writeByteTokenizer(join(dir, 'model'));
  for (const n of opt.sizes.split(',')) {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', n, '--dir', dir, '--chunk-rows', opt['chunk-rows']], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    const line = JSON.parse(r.stdout.trim());
    if (line.rows_out !== line.rows_in || line.table_rows !== line.rows_in) throw new Error(`row count mismatch: ${r.stdout}`);
    console.log(JSON.stringify(line));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
