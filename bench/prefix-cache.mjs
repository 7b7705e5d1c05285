#!/usr/bin/env node
// The prefix cache on SuperNI-shaped work, from ../shared/data/superni-dev: the first --tasks tasks
// of its training sequence, --per-task test instances each, every instance asked with its task's
// instruction in SuperNI's "definition + 2 positive examples" form (the paper's standard
// setting). Rows longer than the model's context are left out (and counted).
//  1. IG scoring (`scoreTable`, as `kpig score` runs it) with the prefix cache, without it, and the
//     tuned PyTorch peer scoring the same token pairs without sharing (bench/peers/torch_rows.py);
//     the scores with and without the cache must agree within 1e-5.
//  2. Greedy evaluation (`evaluateModel`) of the same tasks' test instances with and without the
//     cache; the predictions must be identical.
// Prints the CPU, ISA, date, hit rates and ratios (median of --reps).
//   node bench/prefix-cache.mjs [--model gpt2-small] [--tasks 4] [--per-task 8] [--reps 3] [--threads 2] [--class native|avx2] [--only score|eval] [--no-peer]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Field, Int32, List, Struct, Table, Utf8, vectorFromArray } from 'apache-arrow';
import { importSuperNI, seedInstruction } from '../dist/data/superni.js';
import { evaluateModel } from '../dist/eval/evaluate.js';
import { Model } from '../dist/model/model.js';
import { buildPair } from '../dist/scoring/mask.js';
import { ByteTokenizer, writeByteTokenizer } from '../dist/tokenizer/index.js';
import { createRandomModel } from '../dist/model/writer.js';
import { scoreTable } from '../dist/scoring/table.js';
import { cpuClass, cpuDescription, repoRoot, timed, torchPython } from './common.mjs';

const { values: opt } = parseArgs({
  options: {
    model: { type: 'string', default: 'gpt2-small' },
    tasks: { type: 'string', default: '4' },
    'per-task': { type: 'string', default: '8' },
    reps: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    class: { type: 'string', default: 'native' },
    'eval-tokens': { type: 'string', default: '8' },
    only: { type: 'string' },
    'no-peer': { type: 'boolean', default: false },
  },
});
if (opt.only && opt.only !== 'score' && opt.only !== 'eval') throw new Error('--only must be score or eval');
const { torchArgs } = cpuClass(opt.class);
const threads = Number(opt.threads), reps = Number(opt.reps), perTask = Number(opt['per-task']);
const data = join(repoRoot, '..', 'shared', 'data', 'superni-dev');
const set = await importSuperNI(data, { seed: 0, testSize: perTask });
const taskIds = set.streams[0].seen.slice(0, Number(opt.tasks));
// Random weights. Scoring: the preset's shapes (its 50k vocabulary, as the peer's) with the byte
// tokenizer's special ids, so the text's tokens are byte ids. Evaluation decodes what it generates,
// so its model has the byte tokenizer's vocabulary (the prefill, which the cache shortens, is over
// 98% of its matmul work either way).
const byteModel = async (name, config) => {
  const dir = join(tmpdir(), 'kpig-bench-models', `${opt.model}-${name}-s0`);
  if (!existsSync(join(dir, 'kpig-tokenizer.json'))) {
    await createRandomModel(dir, { preset: opt.model, seed: 0, overwrite: true, config: { bos_token_id: ByteTokenizer.BOS_ID, eos_token_id: ByteTokenizer.EOS_ID, ...config } });
    await writeByteTokenizer(dir);
  }
  return Model.load(dir, { threads });
};
const model = await byteModel('bytespecials', {});
console.log(JSON.stringify({ ...cpuDescription(), class: opt.class, isa: model.info.isa, threads, model: opt.model, tasks: taskIds }));

// "Definition + 2 positive examples", as the SuperNI paper encodes an instruction.
const instructionOf = new Map();
for (const task of set.tasks.filter((t) => taskIds.includes(t.task_id))) {
  const seed = set.instructions.find((i) => i.instruction_id === `${task.task_id}/seed`);
  const demos = (task.examples ?? []).slice(0, 2).map((e, k) => `\n\nPositive Example ${k + 1} -\nInput: ${e.input}\nOutput: ${e.output}`);
  const text = seed.text + demos.join('');
  instructionOf.set(task.task_id, { ...seedInstruction(task.task_id, seed.text), text });
}
const rows = [];
let tooLong = 0;
for (const x of set.instances.filter((i) => i.split === 'test' && taskIds.includes(i.task_id))) {
  const ins = instructionOf.get(x.task_id);
  const row = { task_id: x.task_id, instance_id: x.instance_id, instruction: ins.text, key_spans: ins.key_spans.map(({ start, end }) => ({ start, end })), input: x.input, output: x.outputs[0] };
  const pair = buildPair(model.tokenizer, { instruction: row.instruction, keySpans: row.key_spans, input: row.input, output: row.output });
  if (Math.max(pair.full.length, pair.masked.length) > model.info.maxPositions) {
    tooLong++;
    continue;
  }
  rows.push({ row, pair });
}
const spanType = new List(new Field('item', new Struct([new Field('start', new Int32()), new Field('end', new Int32())])));
const col = (k) => vectorFromArray(rows.map((r) => r.row[k]), new Utf8());
const table = new Table({ task_id: col('task_id'), instance_id: col('instance_id'), instruction: col('instruction'), key_spans: vectorFromArray(rows.map((r) => r.row.key_spans), spanType), input: col('input'), output: col('output') });
const tokens = rows.reduce((a, r) => a + r.pair.full.length + r.pair.masked.length, 0);
const instrTokens = [...instructionOf.values()].map((i) => model.tokenizer.encode(i.text).length);
console.log(JSON.stringify({ rows: rows.length, left_out_too_long: tooLong, tokens, mean_instruction_tokens: Math.round(instrTokens.reduce((a, b) => a + b, 0) / instrTokens.length) }));

// 1. Scoring.
if (opt.only !== 'eval') {
const run = async (bytes) => {
  model.setPrefixCache(0); // empty, so no rep reuses the previous one's prefixes
  model.setPrefixCache(bytes);
  return scoreTable(model, table);
};
const before = model.prefixCacheStats();
const withCache = await run(256 * 2 ** 20);
const after = model.prefixCacheStats();
const without = await run(0);
let worst = 0;
for (const k of ['ig_ce', 'ig_kl', 'ig_js', 'ce_full', 'ce_masked']) {
  const a = withCache.getChild(k).toArray(), b = without.getChild(k).toArray();
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
}
const seqs = after.sequences - before.sequences;
const t_on = await timed(() => run(256 * 2 ** 20), { warmup: 0, reps });
const t_off = await timed(() => run(0), { warmup: 0, reps });
const scoring = {
  task: 'IG scoring (scoreTable)',
  kpig_cache_sec: +t_on.median.toFixed(3),
  kpig_no_cache_sec: +t_off.median.toFixed(3),
  cache_speedup: +(t_off.median / t_on.median).toFixed(3),
  hit_rate: +((after.hits - before.hits) / seqs).toFixed(3),
  token_reuse_rate: +((after.tokensReused - before.tokensReused) / (after.tokens - before.tokens)).toFixed(3),
  max_abs_score_diff_cache_vs_none: +worst.toExponential(2),
};
if (!opt['no-peer']) {
  const py = torchPython();
  if (!py) throw new Error('PyTorch is not installed for /usr/bin/python3 (apt-get install -y python3-torch python3-numpy libopenblas0-openmp)');
  const file = join(mkdtempSync(join(tmpdir(), 'kpig-rows-')), 'rows.json');
  writeFileSync(file, JSON.stringify({ pairs: rows.map((r) => ({ full: r.pair.full, masked: r.pair.masked, response_len: r.pair.responseLen })) }));
  const r = spawnSync(py, [join(repoRoot, 'bench', 'peers', 'torch_rows.py'), '--model', opt.model, '--rows', file, '--threads', String(threads), '--reps', String(reps), ...torchArgs], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`torch_rows.py failed:\n${r.stderr}`);
  const torch = JSON.parse(r.stdout.trim().split('\n').pop());
  scoring.torch_no_sharing_sec = +torch.sec_median.toFixed(3);
  scoring.speedup_vs_torch = +(torch.sec_median / t_on.median).toFixed(3);
  scoring.kpig_no_cache_vs_torch = +(torch.sec_median / t_off.median).toFixed(3);
}
console.log(JSON.stringify(scoring));
}

// 2. Greedy evaluation of the same rows (the test instances whose prompt fits the context).
const fits = new Set(rows.map((r) => r.row.instance_id));
const evalSet = { ...set, instances: set.instances.filter((i) => i.split !== 'test' || fits.has(i.instance_id)) };
const evalTasks = taskIds.filter((t) => rows.some((r) => r.row.task_id === t)); // tasks with rows that fit
const evalOpts = { tasks: evalTasks, maxInstancesPerTask: perTask, maxNewTokens: Number(opt['eval-tokens']), batchSize: 16, instructionFor: (t) => instructionOf.get(t.task_id).text };
model.dispose();
const evalModel = await byteModel('byte', { vocab_size: ByteTokenizer.VOCAB_SIZE });
const evalRun = async (bytes) => {
  evalModel.setPrefixCache(0);
  evalModel.setPrefixCache(bytes);
  return evaluateModel(evalModel, evalSet, evalOpts);
};
const st0 = evalModel.prefixCacheStats();
const p_on = await evalRun(256 * 2 ** 20);
const st1 = evalModel.prefixCacheStats();
const p_off = await evalRun(0);
const same = p_on.every((r, i) => r.prediction === p_off[i].prediction);
const e_on = await timed(() => evalRun(256 * 2 ** 20), { warmup: 0, reps });
const e_off = await timed(() => evalRun(0), { warmup: 0, reps });
console.log(JSON.stringify({
  task: `greedy evaluation (${p_on.length} test instances, ≤ ${opt['eval-tokens']} new tokens)`,
  kpig_cache_sec: +e_on.median.toFixed(3),
  kpig_no_cache_sec: +e_off.median.toFixed(3),
  cache_speedup: +(e_off.median / e_on.median).toFixed(3),
  identical_predictions: same,
  hit_rate: +((st1.hits - st0.hits) / (st1.sequences - st0.sequences)).toFixed(3),
  token_reuse_rate: +((st1.tokensReused - st0.tokensReused) / (st1.tokens - st0.tokens)).toFixed(3),
}));
evalModel.dispose();
