/**
 * `kpig score` (information gain of every row of a table, optionally one shard of it) and
 * `kpig merge` (the shards of one scoring run back into one table).
 */
import { createReadStream, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { KpigError } from '../errors/index.js';
import { outputFormat } from '../io/arrow.js';
import { Model } from '../model/model.js';
import type { ShardSpec } from '../scoring/shard.js';
import { templateFingerprint } from '../template/index.js';
import { CLI_SCRIPT, PREFIX_CACHE_HELP, TEMPLATE_HELP, duration, int, outputName, prefixCacheSummary, samePath, requireSlurmFor, templateArg, threads, usageErrors } from './util.js';

const SCORE_FORMATS = ['.arrow', '.arrows', '.feather', '.ipc', '.parquet'];

export function registerScore(program: Command): void {
  program
    .command('score')
    .description('information gain of the key parts of every row (full vs key-parts-masked instruction), written as Arrow')
    .argument('<model-dir>', 'Hugging Face model folder')
    .requiredOption('--data <file>', 'rows with task_id, instance_id, instruction, key_spans [{start, end}], input, output: .jsonl or .arrow')
    .requiredOption('--out <file>', 'output table, one row per input row keyed by task_id and instance_id: an Arrow IPC file; a name ending in .arrows gets the IPC stream format, .parquet gets Parquet')
    .option('--max-tokens-per-batch <n>', 'token budget of one engine call (full + masked tokens)', int('--max-tokens-per-batch', 2), 16384)
    .option('--chunk-rows <n>', 'rows read and scored at a time (bounds memory; an Arrow batch of more rows is cut into pieces of this size)', int('--chunk-rows', 1), 4096)
    .option('--mask-mode <mode>', 'replace key spans with the placeholder, or delete them', 'replace')
    .option('--placeholder <text>', 'text that replaces a key span', '[MASK]')
    .option('--template <spec>', TEMPLATE_HELP, 'superni')
    .option('-t, --threads <n>', 'worker threads (default: all cores)', threads)
    .option('--precision <p>', 'matmul precision: fp32, or bf16 (inputs rounded to bfloat16, float32 accumulation; AMX where present)', 'fp32')
    .addOption(new Option('--device <d>', 'where IG scoring runs: cpu, or cuda (bf16 tensor cores; falls back to the CPU, saying why, when no GPU can be used; not yet run on a GPU: README)').choices(['cpu', 'cuda']).default('cpu'))
    .option('--prefix-cache-mb <n>', PREFIX_CACHE_HELP, int('--prefix-cache-mb', 0), 256)
    .option(
      '--shard <i/n>',
      'score only shard i of n (counted from 0): whole chunks [⌊i·C/n⌋, ⌊(i+1)·C/n⌋) of the C chunks of --chunk-rows rows, written to an Arrow --out with a manifest; kpig merge joins the n shards into the unsharded output',
    )
    .option('--slurm', 'submit the shards as a Slurm job array (sbatch) and a merge job that runs after them; the scripts, shards and logs go to <out>.shards/, and a re-submission runs only the shards that are missing or unusable')
    .option('--array <n>', 'with --slurm: the number of shards (array tasks)', int('--array', 1), 8)
    .option('--partition <name>', 'with --slurm: the partition the jobs run in (default: the cluster\'s default)')
    .option('--cpus-per-task <n>', 'with --slurm: CPUs (and scoring threads) of each array task', int('--cpus-per-task', 1))
    .option('--time <limit>', 'with --slurm: the time limit of each job, as sbatch reads it (e.g. 2:00:00)')
    .option('--dry-run', 'with --slurm: print the job scripts and which shards would run; submit and write nothing')
    .option('--json', 'one JSON progress line per chunk on stdout instead of a progress line')
    .action(async (dir: string, o: Record<string, unknown>) => {
      const { readScoringChunks, scoreStream } = await import('../scoring/stream.js');
      const shardApi = await import('../scoring/shard.js');
      const data = o.data as string, out = o.out as string;
      if (o.maskMode !== 'replace' && o.maskMode !== 'delete') throw new InvalidArgumentError('--mask-mode must be replace or delete');
      if (o.precision !== 'fp32' && o.precision !== 'bf16') throw new InvalidArgumentError('--precision must be fp32 or bf16');
      if (samePath(data, out)) throw new InvalidArgumentError(`--out ${out} is the --data file: scoring would replace its input; choose another --out`);
      outputName('--out', out, SCORE_FORMATS);
      const shard = o.shard === undefined ? null : usageErrors(() => shardApi.parseShard(o.shard as string));
      if (shard && outputFormat(out) === 'parquet') throw new InvalidArgumentError(`--shard writes an Arrow file with its manifest: name --out .arrow or .arrows, not ${out}`);
      if (shard && o.slurm) throw new InvalidArgumentError('--shard and --slurm do not go together: --slurm runs every shard as an array task');
      requireSlurmFor(o);
      let chunks = readScoringChunks(data, o.chunkRows as number); // checks the input before the model loads
      const template = await templateArg(o.template as string, dir);
      // A shard's manifest: everything that decides a chunk's scores (threads do not).
      const manifestFor = async () => {
        const { dataFingerprint, modelFingerprint } = await import('../io/fingerprint.js');
        const base = {
          dataPath: data,
          sha256: await dataFingerprint(data),
          chunkSizes: await shardApi.inputChunkSizes(data, o.chunkRows as number),
          modelFingerprint: await modelFingerprint(dir),
          options: {
            mask_mode: o.maskMode as string,
            placeholder: o.placeholder as string,
            template: templateFingerprint(template),
            precision: o.precision as string,
            max_tokens_per_batch: o.maxTokensPerBatch as number,
            chunk_rows: o.chunkRows as number,
            prefix_cache_mb: o.prefixCacheMb as number,
            // The GPU's scores differ from the CPU's by bf16 rounding: shards of both never merge.
            ...(o.device !== 'cpu' ? { device: o.device as string } : {}),
          },
        };
        return (spec: ShardSpec) => shardApi.shardManifest({ ...base, spec });
      };
      if (o.slurm) {
        if (outputFormat(out) === 'parquet') throw new InvalidArgumentError(`--slurm merges into an Arrow file: name --out .arrow or .arrows, not ${out}`);
        const { submitScoreArray } = await import('../cluster/score-array.js');
        const templatePath = existsSync(o.template as string) ? resolve(o.template as string) : (o.template as string);
        const plan = await submitScoreArray({
          node: process.execPath,
          cli: CLI_SCRIPT,
          model: dir,
          data,
          out,
          count: o.array as number,
          manifest: await manifestFor(),
          scoreArgs: [
            '--chunk-rows', String(o.chunkRows), '--max-tokens-per-batch', String(o.maxTokensPerBatch), '--mask-mode', o.maskMode as string,
            '--placeholder', o.placeholder as string, '--template', templatePath, '--precision', o.precision as string, '--prefix-cache-mb', String(o.prefixCacheMb),
            ...(o.device !== 'cpu' ? ['--device', o.device as string] : []),
          ],
          cpusPerTask: (o.cpusPerTask as number | undefined) ?? 1,
          partition: o.partition as string | undefined,
          time: o.time as string | undefined,
          dryRun: o.dryRun as boolean | undefined,
          log: (line) => console.error(`kpig: ${line}`),
        });
        if (o.dryRun) {
          if (plan.run.length) console.log(`# ${plan.dir}/score.sbatch\n${plan.arrayScript}`);
          console.log(`# ${plan.dir}/merge.sbatch${plan.run.length ? ' (submitted with --dependency=afterok:<array job> --kill-on-invalid-dep=yes)' : ''}\n${plan.mergeScript}`);
        }
        return;
      }
      const model = await Model.load(dir, { threads: o.threads as number | undefined, device: o.device as 'cpu' | 'cuda' });
      if (model.info.deviceNote) console.error(`kpig: ${model.info.deviceNote}`);
      model.setMatmulPrecision(o.precision);
      model.setPrefixCache((o.prefixCacheMb as number) * 2 ** 20);
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      // Rows to score, for the ETA (one cheap pass over a JSONL file; the shard's range).
      let totalRows = 0;
      let schemaMetadata: Map<string, string> | undefined;
      if (shard) {
        const manifest = (await manifestFor())(shard);
        chunks = readScoringChunks(data, o.chunkRows as number, { start: manifest.rows.chunkStart, end: manifest.rows.chunkEnd });
        schemaMetadata = new Map([[shardApi.SHARD_METADATA_KEY, JSON.stringify(manifest)]]);
        totalRows = manifest.rows.end - manifest.rows.start;
        console.error(
          `kpig: shard ${shard.index}/${shard.count}: rows ${manifest.rows.start}–${manifest.rows.end} of ${manifest.input.rows} (chunks ${manifest.rows.chunkStart}–${manifest.rows.chunkEnd} of ${manifest.input.chunks})`,
        );
      } else if (/\.(jsonl|ndjson)$/i.test(data)) {
        for await (const chunk of createReadStream(data)) for (const b of chunk as Buffer) if (b === 10) totalRows++;
      }
      const t0 = Date.now();
      let tokens = 0;
      let rowsBefore = 0;
      const tty = process.stderr.isTTY && !o.json;
      try {
        const rows = await scoreStream(model, chunks, out, {
          maxTokensPerBatch: o.maxTokensPerBatch as number,
          maskMode: o.maskMode as 'replace' | 'delete',
          placeholder: o.placeholder as string,
          template,
          signal: controller.signal,
          schemaMetadata,
          onProgress: (p) => {
            const sec = (Date.now() - t0) / 1000;
            const done = rowsBefore + p.rows;
            const eta = totalRows > done ? ` ETA ${duration(((totalRows - done) * sec) / done)}` : '';
            const line = `scored ${done}${totalRows ? `/${totalRows}` : ''} rows, ${Math.round(done / sec)} samples/s, ${Math.round((tokens + p.tokens) / sec)} tokens/s${eta}`;
            if (tty) process.stderr.write(`\r${line}\x1b[K`);
            if (p.rows === p.totalRows) {
              tokens += p.tokens;
              rowsBefore += p.totalRows;
              if (o.json) console.log(JSON.stringify({ rows: rowsBefore, tokens, seconds: sec, prefix_cache: prefixCacheSummary(model.prefixCacheStats()) }));
            }
          },
        });
        if (tty) process.stderr.write('\n');
        console.error(`kpig: ${rows} rows scored in ${((Date.now() - t0) / 1000).toFixed(1)} s → ${out}`);
        const pc = prefixCacheSummary(model.prefixCacheStats());
        if (pc) console.error(`kpig: prefix cache: ${(pc.hit_rate * 100).toFixed(1)}% of sequences started after a shared prefix, ${(pc.token_reuse_rate * 100).toFixed(1)}% of tokens reused`);
      } catch (err) {
        if (err instanceof KpigError && err.code === 'E_CANCELLED') {
          console.error('\nkpig: interrupted; nothing was written');
          process.exit(130);
        }
        throw err;
      }
      model.dispose();
    });

  program
    .command('merge')
    .description('join the shards of one kpig score --shard run into one table in input order (equal to the unsharded output)')
    .argument('<shards...>', 'the shard files (.arrow / .arrows written by kpig score --shard i/n), in any order')
    .requiredOption('-o, --out <file>', 'merged table: an Arrow IPC file; .arrows gets the IPC stream format, .parquet gets Parquet')
    .action(async (shards: string[], o: Record<string, unknown>) => {
      const { mergeShards } = await import('../scoring/shard.js');
      const out = o.out as string;
      outputName('--out', out, SCORE_FORMATS);
      const clash = shards.find((s) => samePath(s, out));
      if (clash) throw new InvalidArgumentError(`--out ${out} is one of the shards (${clash}): merging would replace it; choose another --out`);
      const t0 = Date.now();
      const rows = await mergeShards(shards, out);
      console.error(`kpig: ${shards.length} shards, ${rows} rows merged in ${((Date.now() - t0) / 1000).toFixed(1)} s → ${out}`);
    });
}

