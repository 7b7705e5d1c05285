/**
 * `kpig eval <model-dir>`: a model's predictions and scores on a task set's test instances, as an
 * Arrow table; `kpig report <run-dir...>`: the Markdown + HTML report of one or more runs.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { KpigError } from '../errors/index.js';
import { pct } from '../report/tables.js';
import { PREFIX_CACHE_HELP, TEMPLATE_HELP, duration, int, outputName, prefixCacheSummary, templateArg, threads } from './util.js';

/**
 * Adds `kpig eval` and `kpig report` to the program.
 *
 * @example
 * const program = new Command('kpig');
 * registerEval(program);
 */
export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('greedy generation on the test instances of a task set (stop at newline/EOS), scored with ROUGE-L, exact match and label-set validity; predictions written as Arrow')
    .argument('<model-dir>', 'Hugging Face model folder')
    .requiredOption('--data <taskset-dir>', 'task-set folder (tasks.arrow, instructions.arrow, instances.arrow, streams.arrow)')
    .requiredOption('--out <file.arrow>', 'prediction table to write (Arrow IPC file; a name ending in .parquet gets Parquet)')
    .option('--tasks <ids>', 'comma-separated task ids (default: every task)')
    .option('--split <split>', 'test or train', 'test')
    .option('--max-instances <n>', 'at most n instances per task', int('--max-instances', 1))
    .option('--max-new-tokens <n>', 'most generated tokens per instance', int('--max-new-tokens', 1), 64)
    .option('--batch-size <n>', 'prompts per generation call', int('--batch-size', 1), 8)
    .option('--template <spec>', TEMPLATE_HELP, 'superni')
    .option('-t, --threads <n>', 'worker threads (default: all cores)', threads)
    .option('--prefix-cache-mb <n>', PREFIX_CACHE_HELP, int('--prefix-cache-mb', 0), 256)
    .option('--json', 'print the per-task summary as JSON on stdout')
    .action(async (modelDir: string, o: Record<string, unknown>) => {
      if (o.split !== 'test' && o.split !== 'train') throw new InvalidArgumentError('--split must be test or train');
      outputName('--out', o.out as string, ['.arrow', '.feather', '.ipc', '.parquet']);
      const { readTaskSet } = await import('../data/store.js');
      const { Model } = await import('../model/model.js');
      const { evaluateModel } = await import('../eval/evaluate.js');
      const { summarizeTasks, taskSetFingerprint, writePredictions } = await import('../eval/predictions.js');
      const set = await readTaskSet(o.data as string);
      const tasks = o.tasks ? (o.tasks as string).split(',').map((t) => t.trim()).filter(Boolean) : undefined;
      const model = await Model.load(modelDir, { threads: o.threads as number | undefined });
      model.setPrefixCache((o.prefixCacheMb as number) * 2 ** 20);
      const template = await templateArg(o.template as string, modelDir).catch((err: unknown) => {
        model.dispose();
        throw err;
      });
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      const tty = process.stderr.isTTY;
      const t0 = Date.now();
      let lastPrint = 0;
      try {
        const rows = await evaluateModel(model, set, {
          tasks,
          split: o.split as 'test' | 'train',
          maxInstancesPerTask: o.maxInstances as number | undefined,
          maxNewTokens: o.maxNewTokens as number,
          batchSize: o.batchSize as number,
          template,
          signal: controller.signal,
          onProgress: (done, total) => {
            const sec = (Date.now() - t0) / 1000;
            const line = `evaluated ${done}/${total} instances, ${(done / Math.max(sec, 1e-3)).toFixed(1)} instances/s, ETA ${duration(((total - done) * sec) / done)}`;
            if (tty) process.stderr.write(`\r${line}\x1b[K`);
            else if (done === total || Date.now() - lastPrint > 5000) {
              console.error(line);
              lastPrint = Date.now();
            }
          },
        });
        if (tty) process.stderr.write('\n');
        await writePredictions(o.out as string, rows, {
          fingerprint: taskSetFingerprint(set),
          extra: { model: modelDir, split: o.split as string, max_new_tokens: String(o.maxNewTokens), template: o.template as string },
        });
        const summary = summarizeTasks(rows, set);
        const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
        const vs = summary.map((s) => s.v_score).filter((v): v is number => v !== null);
        const overall = { rouge_l: mean(summary.map((s) => s.rouge_l)), exact_match: mean(summary.map((s) => s.exact_match)), v_score: mean(vs) };
        const prefixCache = prefixCacheSummary(model.prefixCacheStats());
        if (o.json) console.log(JSON.stringify({ out: o.out, rows: rows.length, tasks: summary, mean: overall, prefix_cache: prefixCache }, null, 2));
        else {
          const w = Math.max(4, ...summary.map((s) => s.task_id.length));
          console.log(`${'task'.padEnd(w)}  ${'n'.padStart(5)}  ROUGE-L  exact  V-score`);
          for (const s of summary) console.log(`${s.task_id.padEnd(w)}  ${String(s.n).padStart(5)}  ${pct(s.rouge_l).padStart(7)}  ${pct(s.exact_match).padStart(5)}  ${pct(s.v_score).padStart(7)}`);
          console.log(`${'mean'.padEnd(w)}  ${String(rows.length).padStart(5)}  ${pct(overall.rouge_l).padStart(7)}  ${pct(overall.exact_match).padStart(5)}  ${pct(overall.v_score).padStart(7)}`);
        }
        console.error(`kpig: ${rows.length} predictions in ${((Date.now() - t0) / 1000).toFixed(1)} s → ${o.out as string} (scores ×100, macro-averaged over tasks)`);
        if (prefixCache)
          console.error(`kpig: prefix cache: ${(prefixCache.hit_rate * 100).toFixed(1)}% of prompts started after a shared prefix, ${(prefixCache.token_reuse_rate * 100).toFixed(1)}% of prompt tokens reused`);
      } catch (err) {
        if (err instanceof KpigError && err.code === 'E_CANCELLED') {
          console.error('\nkpig: interrupted; nothing was written');
          process.exit(130);
        }
        throw err;
      } finally {
        model.dispose();
      }
    });

  program
    .command('report')
    .description('Markdown summary and self-contained HTML page (SVG plots) of one or more run directories; several runs get a comparison')
    .argument('<run-dir...>', 'run directories written by kpig run (partial runs are reported with what they miss)')
    .option('-o, --out <dir>', 'output folder (default: <run-dir>/report for one run, ./kpig-report for several)')
    .option('--json', 'print the written paths and each run\'s missing files as JSON')
    .action(async (runDirs: string[], o: { out?: string; json?: boolean }) => {
      const { writeReport } = await import('../report/report.js');
      const r = await writeReport(runDirs, o.out);
      if (o.json) {
        console.log(JSON.stringify({ markdown: r.markdown, html: r.html, runs: r.runs.map((x) => ({ dir: x.dir, name: x.name, missing: x.missing, problems: x.problems })) }, null, 2));
        return;
      }
      for (const run of r.runs) {
        if (run.missing.length) console.error(`kpig: ${run.dir} is incomplete; missing: ${run.missing.join('; ')}`);
        for (const p of run.problems) console.error(`kpig: ${run.dir}: ${p}`);
      }
      console.log(r.markdown);
      console.log(r.html);
    });
}
