#!/usr/bin/env node
/**
 * The `kpig` command line. Each subcommand is a thin wrapper over the library API; errors print
 * one clear line (the typed error's message) and exit with status 1, or 2 for usage errors.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { createReadStream, existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError, KpigError, KpigIOError } from '../errors/index.js';
import { PRESETS, isPresetName, type ConfigOverrides } from '../model/config.js';
import { Model } from '../model/model.js';
import { createRandomModel, type WeightsDtype } from '../model/writer.js';
import { ByteTokenizer, writeByteTokenizer } from '../tokenizer/index.js';
import { registerData } from './data.js';
import { registerEval } from './eval.js';
import { registerDemo } from './demo.js';
import { registerRun } from './run.js';
import { registerScore } from './score.js';
import { exitJob, launcherSize } from '../dist/index.js';
import { registerSweep } from './sweep.js';
import { templateSpec } from '../template/index.js';
import { PREFIX_CACHE_HELP, TEMPLATE_HELP, bytes, count, duration, fraction, int, nonNegative, outputName, positive, probability, prefixCacheSummary, samePath, templateArg, threads, usageErrors } from './util.js';

const pkg = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8')) as {
  version: string;
};

/** The commands that run data-parallel under an MPI launcher. */
const DATA_PARALLEL = ['train', 'run'];

const program = new Command()
  .name('kpig')
  .description('Continual instruction tuning with key-part information gain: native engine, CLI and pipeline.')
  .version(pkg.version)
  .showHelpAfterError()
  // Commander's own parse errors (bad option values, unknown options) are usage errors: status 2.
  .exitOverride()
  // Only `kpig train` and `kpig run` spread their work over the ranks of an MPI job; any other
  // command started k times would do the same work k times and race on its outputs.
  .hook('preAction', (_program, command) => {
    const ranks = launcherSize();
    if (ranks > 1 && !DATA_PARALLEL.includes(command.name()))
      throw new InvalidArgumentError(`kpig ${command.name()} was started as ${ranks} MPI ranks, but only ${DATA_PARALLEL.map((c) => `kpig ${c}`).join(' and ')} run data-parallel; start it once`);
  });

program
  .command('info')
  .description('show a model folder: architecture, parameter count, dtype, memory, tokenizer')
  .argument('<model-dir>', 'Hugging Face model folder (config.json + *.safetensors)')
  .option('--json', 'print machine-readable JSON')
  .action(async (dir: string, opts: { json?: boolean }) => {
    // info needs no tokenizer: a folder without one is described, and the missing tokenizer named.
    const { loadTokenizer } = await import('../tokenizer/index.js');
    let tokenizerProblem: string | null = null;
    const found = existsSync(join(dir, 'config.json'))
      ? await loadTokenizer(dir).catch((err: Error) => {
          tokenizerProblem = err.message;
          return null;
        })
      : null;
    const model = await Model.load(dir, { threads: 1, tokenizer: found ?? false });
    const tok = model.tokenizer;
    const i = model.info;
    if (opts.json) {
      console.log(JSON.stringify({ ...i, tokenizer: tok ? { kind: tok.kind, vocabSize: tok.vocabSize, bosId: tok.bosId, eosIds: tok.eosIds } : { missing: tokenizerProblem } }, null, 2));
      return;
    }
    const rows: [string, string][] = [
      ['model', `${i.modelType} (${i.arch === 'gpt2' ? 'LayerNorm, learned positions, GELU' : 'RMSNorm, RoPE, SwiGLU'})`],
      ['parameters', `${count(i.numParams)} (${i.numParams.toLocaleString('en-US')})`],
      ['layers × hidden', `${i.numLayers} × ${i.hiddenSize}, MLP ${i.intermediateSize}`],
      ['attention', `${i.numHeads} heads of ${i.headDim}, ${i.numKvHeads} kv heads${i.numKvHeads < i.numHeads ? ` (GQA ${i.numHeads / i.numKvHeads}:1)` : ''}${i.qkvBias ? ', q/k/v bias' : ''}${i.oBias ? ', o bias' : ''}`],
      ['vocabulary', `${i.vocabSize}${i.tiedEmbeddings ? ' (head tied to embeddings)' : ''}`],
      ['context', `${i.maxPositions} positions${i.arch === 'llama' ? `, rope θ = ${i.ropeTheta}${i.ropeType !== 'default' ? ` (${i.ropeType} scaling)` : ''}` : ''}`],
      ['weights', `${i.weightsDtype} in ${i.files.length} file${i.files.length > 1 ? 's' : ''}, ${bytes(i.weightsFileBytes)}`],
      ['engine memory', `${bytes(i.memoryBytes)} of float32 weights (${i.isa} kernels, ${i.threads} thread${i.threads > 1 ? 's' : ''})`],
      ['tokenizer', tok ? `${tok.kind === 'byte' ? 'built-in byte-level' : 'Hugging Face tokenizer.json'}, ${tok.vocabSize} ids, bos ${tok.bosId ?? '-'}, eos ${tok.eosIds.join(',') || '-'}` : 'missing (commands that read text need one; see the note)'],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
    for (const note of i.notes) console.log(`note: ${note}`);
    if (tokenizerProblem) console.log(`note: ${tokenizerProblem}`);
    model.dispose();
  });

program
  .command('generate')
  .description('generation from one or more prompts, greedy or sampled (batched, KV cache); streams a single prompt as it is generated')
  .argument('<model-dir>', 'Hugging Face model folder')
  .requiredOption('-p, --prompt <text...>', 'prompt text (repeat for a batch)')
  .option('-n, --max-new-tokens <n>', 'most new tokens per prompt', int('--max-new-tokens', 0), 64)
  .option('--stop <text...>', 'stop strings (the output is cut before them)')
  .option('--no-special-tokens', 'do not add the tokenizer\'s BOS to the prompts')
  .option('--template <spec>', 'wrap each prompt as the instruction of a prompt template: superni, chat (the model\'s chat template) or a template file; a chat template\'s end-of-turn token ends generation (default: the prompt as it is)')
  .option('--input <text>', 'with --template: the input shown with every prompt', '')
  .option('--temperature <x>', 'sampling temperature (0: greedy)', nonNegative('--temperature'), 0)
  .option('--top-k <n>', 'sample among the k most likely tokens (0: all)', int('--top-k', 0), 0)
  .option('--top-p <p>', 'sample among the smallest set of tokens whose probability reaches p', probability('--top-p'), 1)
  .option('--seed <n>', 'seed of the draws (prompt i draws from a stream of seed, i and the step)', int('--seed', 0), 0)
  .option('-t, --threads <n>', 'worker threads (default: all cores)', threads)
  .option('--json', 'print one JSON object per prompt instead of text')
  .action(
    async (
      dir: string,
      opts: { prompt: string[]; maxNewTokens: number; stop?: string[]; specialTokens: boolean; threads?: number; json?: boolean; temperature: number; topK: number; topP: number; seed: number; template?: string; input: string },
    ) => {
      if (opts.input && !opts.template) throw new InvalidArgumentError('--input needs --template (it fills the template\'s input slot)');
      const model = await Model.load(dir, { threads: opts.threads });
      let prompts: string[] | number[][] = opts.prompt;
      let eosIds: number[] | undefined;
      if (opts.template) {
        const { promptTokens, stopTokens } = await import('../template/index.js');
        const template = await templateArg(opts.template, dir);
        prompts = opts.prompt.map((p) => promptTokens(model.tokenizer!, template, { instruction: p, input: opts.input }));
        eosIds = stopTokens(model.tokenizer!, template, model.info.eosIds);
      }
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      const stream = opts.prompt.length === 1 && !opts.json && process.stdout.isTTY;
      let shown = '';
      const produced: number[] = [];
      const results = await model.generate(prompts, {
        maxNewTokens: opts.maxNewTokens,
        stop: opts.stop,
        eosIds,
        addSpecialTokens: opts.specialTokens,
        signal: controller.signal,
        temperature: opts.temperature,
        topK: opts.topK,
        topP: opts.topP,
        seed: opts.seed,
        onToken: stream
          ? (_i, token) => {
              produced.push(token);
              const text = model.tokenizer!.decode(produced);
              if (!text.endsWith('\ufffd')) {
                process.stdout.write(text.slice(shown.length));
                shown = text;
              }
            }
          : undefined,
      });
      if (stream) {
        process.stdout.write('\n');
        console.error(`[${results[0].tokens.length} tokens, finished: ${results[0].finishReason}]`);
      } else {
        results.forEach((r, i) => {
          if (opts.json) console.log(JSON.stringify({ prompt: opts.prompt[i], text: r.text, tokens: r.tokens, finishReason: r.finishReason }));
          else console.log(`${opts.prompt.length > 1 ? `[${i}] ` : ''}${r.text}${opts.prompt.length > 1 ? `  (${r.finishReason})` : ''}`);
        });
      }
      model.dispose();
    },
  );

program
  .command('create-model')
  .description(
    'write a randomly initialised model as a Hugging Face folder (config.json + model.safetensors + the built-in ' +
      'byte tokenizer; vocab_size is the tokenizer\'s 259 unless --config sets it)',
  )
  .argument('<out-dir>', 'folder to create')
  .option('--preset <name>', `architecture preset: ${Object.keys(PRESETS).join(', ')}`, 'llama-nano')
  .option('--config <json>', 'config.json fields over the preset, e.g. \'{"num_hidden_layers": 4}\'')
  .option('--seed <n>', 'random seed', int('--seed', 0), 0)
  .option('--dtype <dtype>', 'weights dtype: f32, f16 or bf16', 'f32')
  .option('--shards <n>', 'split the weights into n files with an index', int('--shards', 1), 1)
  .option('--force', 'replace the folder if it exists')
  .action(async (out: string, opts: { preset: string; config?: string; seed: number; dtype: string; shards: number; force?: boolean }) => {
    if (!isPresetName(opts.preset)) throw new InvalidArgumentError(`unknown preset '${opts.preset}' (known: ${Object.keys(PRESETS).join(', ')})`);
    if (!['f32', 'f16', 'bf16'].includes(opts.dtype)) throw new InvalidArgumentError(`--dtype must be f32, f16 or bf16`);
    if (!opts.force && existsSync(out) && readdirSync(out).length > 0)
      throw new KpigIOError(`${out} exists and is not empty; pass --force to replace it`);
    let overrides: ConfigOverrides = {};
    if (opts.config) {
      try {
        overrides = JSON.parse(opts.config) as ConfigOverrides;
      } catch (err) {
        throw new InvalidArgumentError(`--config is not valid JSON: ${(err as Error).message}`);
      }
    }
    // The vocabulary and special ids of the built-in byte tokenizer, so every generated id decodes
    // and generation stops on its EOS; --config may still override them.
    const config: ConfigOverrides = {
      vocab_size: ByteTokenizer.VOCAB_SIZE,
      bos_token_id: ByteTokenizer.BOS_ID,
      eos_token_id: ByteTokenizer.EOS_ID,
      ...overrides,
    };
    const made = await createRandomModel(out, {
      preset: opts.preset,
      config,
      seed: opts.seed,
      dtype: opts.dtype as WeightsDtype,
      shards: opts.shards,
      overwrite: opts.force,
    });
    await writeByteTokenizer(made.dir);
    console.log(`wrote ${made.dir}: ${opts.preset}, ${count(made.parameters)} parameters, ${opts.dtype}, ${made.files.join(', ')}, kpig-tokenizer.json`);
  });

program
  .command('train')
  .description('supervised fine-tuning on instruction data (loss on the response tokens only), full or LoRA, with checkpoints and resume')
  .argument('<model-dir>', 'Hugging Face model folder to start from')
  .requiredOption('--data <file>', 'training rows: .jsonl or .arrow with instruction/input/output fields')
  .requiredOption('--out <dir>', 'output folder: checkpoint-<step>/ and final/ (or final-adapter/)')
  .option('--full', 'train every weight (default: LoRA adapters only)')
  .option('--lora-rank <n>', 'LoRA rank', int('--lora-rank', 1), 8)
  .option('--lora-alpha <x>', 'LoRA alpha', positive('--lora-alpha'), 16)
  .option('--lora-dropout <p>', 'LoRA dropout', fraction('--lora-dropout'), 0)
  .option('--lora-targets <names>', 'comma-separated module names, or all-linear (default: q_proj,v_proj; c_attn for GPT-2)')
  .option('--merge', 'with LoRA: also write final/ with the adapters merged into the weights')
  .option('--lr <x>', 'peak learning rate (default 2e-4 LoRA, 5e-5 full)', positive('--lr'))
  .option('--schedule <kind>', 'cosine, linear or constant', 'cosine')
  .option('--warmup <steps>', 'linear warm-up steps', int('--warmup', 0), 0)
  .option('--weight-decay <x>', 'AdamW weight decay (≥ 2-D base weights)', nonNegative('--weight-decay'), 0)
  .option('--max-grad-norm <x>', 'clip the global gradient norm (0: off)', nonNegative('--max-grad-norm'), 1)
  .option('--epochs <n>', 'passes over the data', int('--epochs', 1), 1)
  .option('--max-steps <n>', 'stop after this many optimizer steps', int('--max-steps', 1))
  .option('--batch-size <n>', 'sequences per micro-batch', int('--batch-size', 1), 8)
  .option('--grad-accum <n>', 'micro-batches per optimizer step', int('--grad-accum', 1), 1)
  .option('--max-length <n>', 'drop rows longer than this many tokens (default: the model context)', int('--max-length', 2))
  .option('--checkpoint-every <n>', 'steps between checkpoints (0: only at the end)', int('--checkpoint-every', 0), 0)
  .option('--resume', 'continue from the latest checkpoint in --out (the same model, data and settings, else refused)')
  .option('--force', 'start over in a non-empty --out, removing the earlier run there (checkpoints, final folders)')
  .option('--seed <n>', 'seed of data order and LoRA init', int('--seed', 0), 0)
  .option('--instruction-field <name>', 'field holding the instruction', 'instruction')
  .option('--input-field <name>', 'field holding the input', 'input')
  .option('--output-field <name>', 'field holding the response', 'output')
  .option('--template <spec>', TEMPLATE_HELP, 'superni')
  .option('-t, --threads <n>', 'worker threads (default: all cores)', threads)
  .option('--json', 'one JSON line per step on stdout instead of a progress bar')
  .action(async (dir: string, o: Record<string, unknown>) => {
    const { readInstructions, tokenizeExample } = await import('../data/instructions.js');
    const { Trainer, latestCheckpoint } = await import('../train/trainer.js');
    const { mergeLora, saveAdapter, saveModel } = await import('../train/checkpoint.js');
    if (!['cosine', 'linear', 'constant'].includes(o.schedule as string)) throw new InvalidArgumentError('--schedule must be cosine, linear or constant');
    // Under mpirun: this rank's place in the job (rank 0 writes and reports, the others train quietly).
    const { worldFromEnv } = await import('../dist/index.js');
    const world = worldFromEnv();
    const lead = world.rank === 0;
    const model = await Model.load(dir, { threads: o.threads as number | undefined });
    const rows = await readInstructions(o.data as string, {
      instruction: o.instructionField as string,
      input: o.inputField as string,
      output: o.outputField as string,
    });
    const maxLength = (o.maxLength as number | undefined) ?? model.info.maxPositions;
    const template = await templateArg(o.template as string, dir);
    const seqs = rows.map((r) => tokenizeExample(model.tokenizer!, r, maxLength, template)).filter((x) => x !== null);
    if (seqs.length < rows.length && lead) console.error(`kpig: ${rows.length - seqs.length} of ${rows.length} rows are longer than ${maxLength} tokens and were left out`);
    const out = o.out as string;
    if (o.resume && o.force) throw new InvalidArgumentError('--resume and --force contradict each other: continue the run in --out, or start over');
    // Bad trainer options are refused before anything is written to --out.
    const trainer = usageErrors(() => new Trainer(model, {
      mode: o.full ? 'full' : 'lora',
      lora: {
        rank: o.loraRank as number,
        alpha: o.loraAlpha as number,
        dropout: o.loraDropout as number,
        targets: o.loraTargets ? (o.loraTargets as string).split(',').map((t) => t.trim()) : undefined,
      },
      lr: o.lr as number | undefined,
      schedule: o.schedule as 'cosine',
      warmupSteps: o.warmup as number,
      weightDecay: o.weightDecay as number,
      maxGradNorm: o.maxGradNorm as number,
      epochs: o.epochs as number,
      maxSteps: o.maxSteps as number | undefined,
      batchSize: o.batchSize as number,
      gradAccum: o.gradAccum as number,
      seed: o.seed as number,
      outDir: out,
      checkpointEvery: o.checkpointEvery as number,
      world,
    }));
    const { prepareTrainFolder } = await import('../train/run-record.js');
    const { dataFingerprint, modelFingerprint } = await import('../io/fingerprint.js');
    // What a step means: a resumed run must keep these (it may change the schedule, epochs or steps).
    const settings = {
      mode: o.full ? 'full' : 'lora',
      ...(o.full ? {} : { loraRank: o.loraRank as number, loraAlpha: o.loraAlpha as number, loraDropout: o.loraDropout as number, loraTargets: (o.loraTargets as string | undefined) ?? null }),
      batchSize: o.batchSize as number,
      gradAccum: o.gradAccum as number,
      seed: o.seed as number,
      maxLength,
      fields: `${o.instructionField as string},${o.inputField as string},${o.outputField as string}`,
      template: templateSpec(o.template as string),
    };
    const record = {
      kind: 'kpig-train-run' as const,
      model: { path: resolve(dir), fingerprint: await modelFingerprint(dir) },
      data: { path: resolve(o.data as string), sha256: await dataFingerprint(o.data as string), rows: rows.length },
      settings,
    };
    // A folder that holds another run is a usage error (status 2), like any bad argument.
    // Rank 0 owns the folder; the other ranks only read its checkpoint when resuming.
    if (lead) {
      const prepared = await usageErrors(() => prepareTrainFolder(out, record, { resume: Boolean(o.resume), force: Boolean(o.force) }));
      if (prepared.cleaned.length) console.error(`kpig: removed ${prepared.cleaned.length} temporary folder(s) of killed runs from ${out}`);
      if (prepared.replaced.length) console.error(`kpig: --force: removed the earlier run in ${out} (${prepared.replaced.join(', ')})`);
      if (world.size > 1) console.error(`kpig: data-parallel over ${world.size} ranks (${world.transport}); each takes its share of every micro-batch of ${o.batchSize as number}`);
    }
    if (o.resume) {
      const ckpt = latestCheckpoint(out);
      if (!ckpt) throw new KpigIOError(`--resume: no checkpoint-<step> folder in ${out}`);
      await trainer.resume(ckpt);
      if (lead) console.error(`kpig: resumed from ${ckpt} (step ${trainer.step})`);
    }
    const controller = new AbortController();
    process.once('SIGINT', () => controller.abort());
    const tty = process.stderr.isTTY && !o.json;
    let lastPrint = 0;
    try {
      const summary = await trainer.train(seqs, {
        signal: controller.signal,
        onProgress: (p) => {
          if (!lead) return;
          if (o.json) {
            console.log(JSON.stringify(p));
            return;
          }
          const width = 24, filled = Math.round((width * p.step) / p.totalSteps);
          const line =
            `step ${p.step}/${p.totalSteps} [${'='.repeat(filled)}${' '.repeat(width - filled)}] loss ${p.loss.toFixed(4)}` +
            ` lr ${p.lr.toExponential(2)} ${Math.round(p.tokensPerSecond)} tok/s ETA ${duration(p.etaSeconds)}${p.skipped ? ' (step skipped: non-finite gradients or no weighted tokens)' : ''}`;
          if (tty) process.stderr.write(`\r${line}\x1b[K`);
          else if (p.step === p.totalSteps || Date.now() - lastPrint > 5000 || p.skipped) {
            console.error(line);
            lastPrint = Date.now();
          }
        },
      });
      if (tty) process.stderr.write('\n');
      if (!lead) {
        model.dispose();
        return;
      }
      if (o.full) {
        await saveModel(model, join(out, 'final'), { overwrite: true });
        console.error(`kpig: ${summary.steps} steps; model saved to ${join(out, 'final')}`);
      } else {
        await saveAdapter(model, join(out, 'final-adapter'), { overwrite: true });
        let where = join(out, 'final-adapter');
        if (o.merge) {
          mergeLora(model);
          await saveModel(model, join(out, 'final'), { overwrite: true });
          where += ` and merged into ${join(out, 'final')}`;
        }
        console.error(`kpig: ${summary.steps} steps; adapter saved to ${where}`);
      }
      if (summary.skippedSteps.length) console.error(`kpig: ${summary.skippedSteps.length} step(s) were skipped: ${summary.skippedSteps.slice(0, 10).join(', ')}`);
    } catch (err) {
      if (err instanceof KpigError && err.code === 'E_CANCELLED') {
        if (tty) process.stderr.write('\n');
        console.error(`kpig: interrupted at step ${trainer.step}; run again with --resume to continue from the last checkpoint`);
        exitJob(130);
      }
      throw err;
    }
    model.dispose();
  });

// Subcommands that live in their own files.
registerData(program);
registerEval(program);
registerRun(program);
registerDemo(program);
registerScore(program);
registerSweep(program);

program.parseAsync().catch((err: unknown) => {
  if (err instanceof InvalidArgumentError) {
    console.error(`kpig: ${err.message}`); // thrown by an action
    exitJob(2);
  }
  if (err instanceof CommanderError) exitJob(err.exitCode === 0 ? 0 : 2); // commander printed the message
  if (err instanceof KpigError) {
    console.error(`kpig: ${err.message}`);
    exitJob(1);
  }
  console.error(err);
  exitJob(1);
});
