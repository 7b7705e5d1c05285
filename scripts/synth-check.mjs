#!/usr/bin/env node
// End-to-end check of the synthetic testbed: builds (or reuses) the base model, evaluates it on the
// suite, fine-tunes it sequentially on the seen tasks (no replay), evaluates again, and prints
// accuracy (exact match) and valid-label share for seen and held-out tasks, before and after.
// The suite exists to show that the second row is worse than the first.
//
//   npx tsc -p . && node scripts/synth-check.mjs [--quick] [--threads 1] [--seed 0] [--cache DIR]
//       [--epochs 2] [--lr 1e-3] [--batch 8] [--mode full|lora] [--recipe JSON] [--suite JSON] [--json FILE]
//
// Without --cache the base model is built in a fresh temporary folder, so the build time is measured.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Model, Trainer, tokenizeExample } from '../dist/index.js';
import { nativeOf } from '../dist/model/model.js';
import { evaluateModel } from '../dist/eval/evaluate.js';
import { buildBaseModel, generateSuite } from '../dist/synth/index.js';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    threads: { type: 'string', default: '1' },
    seed: { type: 'string', default: '0' },
    cache: { type: 'string' },
    epochs: { type: 'string', default: '2' },
    lr: { type: 'string', default: '1e-3' },
    batch: { type: 'string', default: '8' },
    mode: { type: 'string', default: 'full' },
    recipe: { type: 'string', default: '{}' },
    suite: { type: 'string', default: '{}' },
    json: { type: 'string' },
  },
});
const threads = Number(args.threads), seed = Number(args.seed), epochs = Number(args.epochs), lr = Number(args.lr), batchSize = Number(args.batch);
const suiteOptions = { seed, ...(args.quick ? { seenTasks: 4, heldOutTasks: 3, trainPerTask: 100, testPerTask: 30 } : {}), ...JSON.parse(args.suite) };

const cacheDir = args.cache ?? mkdtempSync(join(tmpdir(), 'kpig-synth-check-'));
const t0 = Date.now();
let lastPrint = 0;
const base = await buildBaseModel({
  cacheDir,
  quick: args.quick,
  seed,
  threads,
  suite: suiteOptions,
  recipe: JSON.parse(args.recipe),
  onProgress: (p) => {
    if (p.phase === 'train' && Date.now() - lastPrint < 5000 && p.step !== p.totalSteps) return;
    lastPrint = Date.now();
    console.error(`  base ${p.phase} ${p.step}/${p.totalSteps} loss ${p.loss?.toFixed(3) ?? '-'} ${p.elapsedSeconds.toFixed(1)} s`);
  },
});
const buildSeconds = (Date.now() - t0) / 1000;
console.log(`base model: ${base.reused ? 'reused' : 'built'} in ${buildSeconds.toFixed(1)} s (${args.quick ? 'quick' : 'default'} recipe, threads ${threads}) at ${base.dir}`);

const suite = generateSuite(suiteOptions);
const { set, stream } = suite;
const tasks = [...stream.seen, ...stream.held_out];

/** Per task: accuracy (exact match) and valid share (null for open tasks). */
async function evaluate(model) {
  const rows = await evaluateModel(model, set, { tasks, maxNewTokens: 24, batchSize: 16 });
  const out = {};
  for (const id of tasks) {
    const mine = rows.filter((r) => r.task_id === id);
    const valid = mine[0].valid === null ? null : mine.filter((r) => r.valid).length / mine.length;
    out[id] = { acc: mine.reduce((s, r) => s + r.exact_match, 0) / mine.length, rouge: mine.reduce((s, r) => s + r.rouge_l, 0) / mine.length, valid, sample: mine.slice(0, 2).map((r) => r.prediction) };
  }
  return out;
}
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
function summary(scores) {
  const pick = (ids, f) => mean(ids.map((id) => scores[id][f]).filter((x) => x !== null));
  return {
    seenAcc: pick(stream.seen, 'acc'), seenRouge: pick(stream.seen, 'rouge'), seenValid: pick(stream.seen, 'valid'),
    heldAcc: pick(stream.held_out, 'acc'), heldRouge: pick(stream.held_out, 'rouge'), heldValid: pick(stream.held_out, 'valid'),
  };
}

const model = await Model.load(base.dir, { threads });
const te = Date.now();
const before = await evaluate(model);
const evalSeconds = (Date.now() - te) / 1000;

// Sequential fine-tuning, as a continual run with strategy 'none' trains: one trainer, a fresh
// AdamW state per stage, constant learning rate, the stage's train instances shuffled per epoch.
const trainer = new Trainer(model, { mode: args.mode, lr, batchSize, seed });
const nat = nativeOf(model);
const prompts = new Map(set.instructions.map((i) => [i.task_id, i.text]));
const ts = Date.now();
const afterStage = [];
for (const [t, task] of stream.seen.entries()) {
  for (const info of nat.tensors().filter((x) => x.trainable)) {
    const zeros = new Float32Array(info.shape.reduce((a, b) => a * b, 1));
    nat.writeTensor(info.name, 'exp_avg', zeros);
    nat.writeTensor(info.name, 'exp_avg_sq', zeros);
  }
  nat.setOptimizerSteps(0);
  const seqs = set.instances
    .filter((r) => r.task_id === task && r.split === 'train')
    .map((r) => tokenizeExample(model.tokenizer, { instruction: prompts.get(task), input: r.input, output: r.outputs[0] }, model.info.maxPositions));
  let rnd = seed * 7919 + t + 1;
  let loss = 0;
  for (let e = 0; e < epochs; e++) {
    const order = seqs.map((s, i) => [((rnd = (rnd * 1103515245 + 12345) >>> 0), rnd), s]).sort((a, b) => a[0] - b[0]).map((x) => x[1]);
    for (let b = 0; b < order.length; b += batchSize) loss = (await trainer.trainStep(order.slice(b, b + batchSize), lr)).loss;
  }
  afterStage.push({ task, loss });
  console.error(`  stage ${t + 1}/${stream.seen.length} ${task}: last loss ${loss.toFixed(3)} (${((Date.now() - ts) / 1000).toFixed(1)} s)`);
}
const trainSeconds = (Date.now() - ts) / 1000;
const after = await evaluate(model);
model.dispose();

const pct = (x) => (x === null || Number.isNaN(x) ? '   -  ' : `${(100 * x).toFixed(1).padStart(5)}%`);
console.log(`\n${'task'.padEnd(44)} role      base acc  valid | seq-FT acc  valid | seq-FT sample`);
for (const id of tasks) {
  const role = stream.seen.includes(id) ? 'seen' : 'held-out';
  console.log(`${id.padEnd(44)} ${role.padEnd(9)} ${pct(before[id].acc)} ${pct(before[id].valid)} |   ${pct(after[id].acc)} ${pct(after[id].valid)} | ${JSON.stringify(after[id].sample)}`);
}
const b = summary(before), a = summary(after);
console.log(`\n                       base     seq-FT`);
console.log(`seen accuracy (AP)   ${pct(b.seenAcc)}   ${pct(a.seenAcc)}`);
console.log(`seen ROUGE-L          ${pct(b.seenRouge)}   ${pct(a.seenRouge)}`);
console.log(`seen valid share     ${pct(b.seenValid)}   ${pct(a.seenValid)}`);
console.log(`held-out accuracy    ${pct(b.heldAcc)}   ${pct(a.heldAcc)}`);
console.log(`held-out ROUGE-L      ${pct(b.heldRouge)}   ${pct(a.heldRouge)}`);
console.log(`held-out V-score     ${pct(b.heldValid)}   ${pct(a.heldValid)}`);
console.log(`\ntimes: base ${buildSeconds.toFixed(1)} s, one evaluation ${evalSeconds.toFixed(1)} s, sequential fine-tuning ${trainSeconds.toFixed(1)} s (${stream.seen.length} stages × ${epochs} epochs, ${args.mode}, lr ${lr}, batch ${batchSize})`);
const effect = a.heldValid < b.heldValid && a.seenAcc < b.seenAcc;
console.log(`effect present (held-out V-score and seen accuracy both fall): ${effect ? 'yes' : 'NO'}`);
if (args.json) writeFileSync(args.json, JSON.stringify({ buildSeconds, evalSeconds, trainSeconds, before, after, base: b, seqft: a, effect }, null, 2));
if (!args.cache) rmSync(cacheDir, { recursive: true, force: true });
