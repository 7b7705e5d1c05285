/**
 * `kpig demo`: the built-in benchmark. Progress goes to stderr; the comparison table and the
 * report path go to stdout.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { KpigError } from '../errors/index.js';
import { DEMO_STRATEGIES, demoTable, gateText, runDemo, type DemoEvent } from '../pipeline/demo-suite.js';
import { markdownTable } from '../report/markdown.js';
import { STRATEGY_NAMES, type StrategyName } from '../pipeline/run-config.js';
import { duration, int, threads } from './util.js';

/** Adds `kpig demo` to the program. */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('the built-in benchmark: a generated key-part task suite, a tiny base model per seed, the validity gate, and none / random / inscl / kpig / multitask compared')
    .option('--quick', 'a smaller suite and base model (from 25 s to 75 s on 2 cores, by CPU; a smoke run, not evidence)')
    .option('--seeds <n>', 'repeat with seeds 0..n−1 (a base model each) and report mean ± 95% interval', int('--seeds', 1), 1)
    .option('-o, --out <dir>', 'where runs and the report go (default runs/demo or runs/demo-quick)')
    .option('--cache <dir>', 'base-model cache (default $KPIG_CACHE/base-models or ~/.cache/kpig/base-models)')
    .option('--strategies <list>', `comma-separated (default ${DEMO_STRATEGIES.join(',')})`)
    .option('-t, --threads <n>', 'worker threads (default: all cores)', threads)
    .option('--json', 'one JSON line per event on stdout, then the result')
    .action(async (o: { quick?: boolean; seeds: number; out?: string; cache?: string; strategies?: string; threads?: number; json?: boolean }) => {
      const strategies = o.strategies?.split(',').map((s) => s.trim()) as StrategyName[] | undefined;
      for (const s of strategies ?? [])
        if (!STRATEGY_NAMES.includes(s)) throw new InvalidArgumentError(`--strategies: '${s}' is not one of ${STRATEGY_NAMES.join(', ')}`);
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      const tty = process.stderr.isTTY && !o.json;
      const t0 = Date.now();
      const line = (text: string) => {
        if (tty) process.stderr.write(`\r\x1b[K${text}`);
      };
      const say = (text: string) => {
        if (o.json) return;
        if (tty) process.stderr.write('\r\x1b[K');
        console.error(text);
      };
      const onEvent = (e: DemoEvent) => {
        if (o.json) {
          console.log(JSON.stringify(e));
          return;
        }
        if (e.type === 'base') {
          const p = e.progress;
          line(`seed ${e.seed}: base model ${p.phase}${p.totalSteps ? ` step ${p.step}/${p.totalSteps}` : ''}${p.loss !== null ? ` loss ${p.loss.toFixed(3)}` : ''} (${duration(p.elapsedSeconds)})`);
        } else if (e.type === 'base-ready') say(`seed ${e.seed}: base model ${e.reused ? 'reused from' : 'built in'} ${e.dir}`);
        else if (e.type === 'run-start') say(`seed ${e.seed}: ${e.strategy}${e.reused ? ' (finished earlier, reused)' : e.resumed ? ' (resuming)' : ''}`);
        else if (e.type === 'run') {
          const r = e.event;
          if (r.type === 'step') line(`  ${e.strategy} stage ${r.stage} step ${r.step}/${r.totalSteps} loss ${r.loss.toFixed(3)}${r.ig !== null ? ` IG ${r.ig.toFixed(3)}` : ''} ETA ${duration(r.etaSeconds)}`);
          else if (r.type === 'phase') line(`  ${e.strategy} stage ${r.stage} ${r.phase}…`);
          else if (r.type === 'eval-progress') line(`  ${e.strategy} stage ${r.stage} eval ${r.done}/${r.total}`);
          else if (r.type === 'stage')
            say(`  ${e.strategy} stage ${r.stage}: loss ${r.meanLoss.toFixed(3)}, seen ROUGE-L ${r.seenRougeL.toFixed(3)}, held-out V ${r.heldOutVScore === null ? '–' : r.heldOutVScore.toFixed(3)} (${duration(r.seconds)})`);
        }
      };
      try {
        const result = await runDemo({ quick: o.quick, seeds: o.seeds, out: o.out, cacheDir: o.cache, threads: o.threads, strategies, signal: controller.signal, onEvent });
        if (o.json) {
          console.log(JSON.stringify({ type: 'result', ...result }));
          return;
        }
        console.log(`\nkpig demo${o.quick ? ' --quick' : ''}: ${o.seeds} seed${o.seeds > 1 ? 's' : ''}, ${duration((Date.now() - t0) / 1000)}\n`);
        console.log(markdownTable(demoTable(result)));
        console.log(`\n${gateText(result)}`);
        console.log(
          `\nAP, BWT and forgetting: ROUGE-L over the seen tasks (stage × task matrix). Held-out: P-score = ROUGE-L over outputs inside the label set, V-score = share of outputs inside it. ` +
            `Listening: share of probe answers that follow the instruction given when its key parts take other values. Constant answers: share of a task's most frequent answer, mean over tasks.`,
        );
        console.log(`report: ${result.report.html}`);
      } catch (err) {
        if (err instanceof KpigError && err.code === 'E_CANCELLED') {
          if (tty) process.stderr.write('\n');
          console.error('kpig demo: interrupted. Finished stages are kept; run the same command again to resume.');
          process.exit(130);
        }
        throw err;
      }
    });
}
