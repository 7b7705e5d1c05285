/**
 * `kpig run <config>` and `kpig run --resume <run-dir>`: a continual run with a live view per
 * stage (step, loss, IG, tokens/s, ETA), a one-line summary per stage, or JSON lines for pipelines.
 */
import { readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { exitJob } from '../dist/index.js';
import { KpigError } from '../errors/index.js';
import { STRATEGY_NAMES, loadRunConfig, resolveRunConfig, type RunConfig } from '../pipeline/run-config.js';
import { runContinual, type RunEvent } from '../pipeline/continual.js';
import { templateSpec } from '../template/index.js';
import { TEMPLATE_HELP, collect, duration, int, overridesOf, threads } from './util.js';

function fmt(x: number | null | undefined, digits = 3): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

/** Adds `kpig run` to the program. */
export function registerRun(program: Command): void {
  program
    .command('run')
    .description('a continual run: for each seen task plan replay, train, checkpoint and evaluate every task (resumable)')
    .argument('[config]', 'run config (YAML or JSON): model, data, stream, strategy, train, eval, seed')
    .option('-o, --out <run-dir>', 'run directory (default: runs/<config name>)')
    .option('--resume <run-dir>', 'continue an interrupted run from its last completed step')
    .option('--strategy <name>', `override strategy.name (${STRATEGY_NAMES.join(', ')})`)
    .option('--seed <n>', 'override the seed', int('--seed', 0))
    .option('--template <spec>', `override the ${TEMPLATE_HELP}`)
    .option('-t, --threads <n>', 'override the worker threads (default: all cores)', threads)
    .option('--set <field=value>', 'override any config field by its dotted path (repeatable), e.g. strategy.m=50', collect, [])
    .option('--force', 'start over in a non-empty run directory')
    .option('--stop-after <steps>', 'stop after this many optimizer steps of this process (at a checkpoint-resumable point; exit status 0), e.g. to fit a job\'s time limit; continue with --resume', int('--stop-after', 1))
    .option('-q, --quiet', 'print only the final summary')
    .option('--json', 'one JSON line per event on stdout (for pipelines)')
    .action(async (configPath: string | undefined, o: Record<string, unknown>) => {
      let config: RunConfig;
      let runDir: string;
      const overrides = overridesOf(o.set as string[]);
      if (o.strategy) overrides['strategy.name'] = o.strategy as string;
      if (o.seed !== undefined) overrides.seed = String(o.seed);
      if (o.template !== undefined) overrides.template = templateSpec(o.template as string);
      if (o.threads !== undefined) overrides.threads = String(o.threads);
      if (o.resume) {
        if (configPath) throw new InvalidArgumentError('give either a config or --resume <run-dir>, not both');
        if (Object.keys(overrides).length) throw new InvalidArgumentError('a resumed run keeps its own config: drop --set/--strategy/--seed/--template/--threads');
        runDir = resolve(o.resume as string);
        let raw: unknown;
        try {
          raw = JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8'));
        } catch (err) {
          throw new InvalidArgumentError(`${runDir} is not a run directory: ${(err as Error).message}`);
        }
        config = resolveRunConfig(raw, { where: join(runDir, 'config.json') });
      } else {
        if (!configPath) throw new InvalidArgumentError('a run config is required (or --resume <run-dir>)');
        config = loadRunConfig(configPath, overrides);
        runDir = resolve((o.out as string | undefined) ?? join('runs', config.name || basename(configPath).replace(/\.[^.]+$/, '')));
      }
      // Under mpirun: the ranks share the run; rank 0 writes it and reports (the pipeline emits there only).
      const { worldFromEnv } = await import('../dist/index.js');
      const world = worldFromEnv();
      const lead = world.rank === 0;
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      const tty = process.stderr.isTTY && !o.json && !o.quiet;
      const say = (line: string) => {
        if (!o.json && !o.quiet) console.error(line);
      };
      let stages = 0;
      const onEvent = (e: RunEvent) => {
        if (o.json) {
          console.log(JSON.stringify(e));
          return;
        }
        switch (e.type) {
          case 'start':
            stages = e.stages;
            say(`kpig run: ${config.strategy.name}, ${e.stages} stages → ${runDir}${e.resumedFrom ? ` (resuming at stage ${e.resumedFrom})` : ''}`);
            if (world.size > 1) say(`kpig run: data-parallel over ${world.size} ranks (${world.transport}); each takes its share of every batch, evaluation and scoring`);
            break;
          case 'phase':
            if (tty) process.stderr.write(`\r\x1b[Kstage ${e.stage}/${stages} ${e.phase}${e.detail ? ` (${e.detail})` : ''}…`);
            break;
          case 'step':
            if (tty)
              process.stderr.write(
                `\r\x1b[Kstage ${e.stage}/${stages} ${e.task}  step ${e.step}/${e.totalSteps}  loss ${fmt(e.loss)}  IG ${fmt(e.ig)}  ${Math.round(e.tokensPerSecond)} tok/s  ETA ${duration(e.etaSeconds)}`,
              );
            break;
          case 'eval-progress':
            if (tty) process.stderr.write(`\r\x1b[Kstage ${e.stage}/${stages} eval ${e.done}/${e.total}`);
            break;
          case 'stage':
            if (tty) process.stderr.write('\r\x1b[K');
            say(
              `stage ${e.stage}/${stages} ${e.task}: ${e.steps} steps, ${e.trainItems} items (${e.replay} replayed), loss ${fmt(e.meanLoss)}, ` +
                `seen ROUGE-L ${fmt(e.seenRougeL)}, held-out ROUGE-L ${fmt(e.heldOutRougeL)}, held-out V ${fmt(e.heldOutVScore)}, ${duration(e.seconds)}`,
            );
            break;
          case 'skipped-long':
            if (tty) process.stderr.write('\r\x1b[K');
            say(`stage ${e.stage}/${stages} ${e.task}: ${e.count} training instance(s) longer than ${e.limit} tokens were skipped (length.json)`);
            break;
          case 'done':
            break;
        }
      };
      try {
        const result = await runContinual(config, runDir, {
          resume: Boolean(o.resume),
          overwrite: Boolean(o.force),
          signal: controller.signal,
          onEvent,
          world,
          stopAfterSteps: o.stopAfter as number | undefined,
        });
        if (!o.json && lead) {
          const last = result.matrix[result.matrix.length - 1];
          const T = result.matrix.length - 1; // seen tasks come first in the matrix's columns
          const ap = last.slice(0, T).reduce((a, b) => a + b, 0) / T;
          console.error(`kpig run: done; final mean ROUGE-L over seen tasks ${fmt(ap)}; results in ${join(runDir, 'results.json')}`);
        }
      } catch (err) {
        if (err instanceof KpigError && err.code === 'E_CANCELLED') {
          if (tty) process.stderr.write('\n');
          if (o.stopAfter !== undefined && !controller.signal.aborted) {
            // The stop that was asked for: every rank stops at the same step.
            if (lead) console.error(`kpig run: stopped after ${o.stopAfter as number} steps (--stop-after); continue with: kpig run --resume ${runDir}`);
            return;
          }
          if (lead) console.error(`kpig: ${err.message.includes('resume') ? err.message : `interrupted; continue with: kpig run --resume ${runDir}`}`);
          exitJob(130);
        }
        throw err;
      }
    });
}
