/**
 * `kpig data …`: import any supported input into a task-set folder, show a task set, write
 * instruction variants. Each command is a thin wrapper over src/data, src/keyparts and src/rewrite.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { importData, summarizeTaskSet, type DataFormat } from '../data/ingest.js';
import { InputError } from '../errors/index.js';
import type { FieldMapping } from '../data/rows.js';
import { readTaskSet, writeTaskSet } from '../data/store.js';
import { annotateTaskSet, type KeyPartMethod } from '../keyparts/llm-annotate.js';
import { ChatClient } from '../llm/client.js';
import { diversityReport } from '../rewrite/diversity.js';
import { llmRewriter } from '../rewrite/llm-rewriter.js';
import { offlineRewriter } from '../rewrite/offline.js';
import { REWRITE_KINDS, diversify, type RewriteKind } from '../rewrite/variant.js';
import { int } from './util.js';
import { ANSWER_STYLES, diversifyAnswerStyles, type AnswerStyle } from '../data/answer-style.js';

const FIELD_PARTS: (keyof FieldMapping)[] = ['task', 'instruction', 'input', 'output', 'id', 'split', 'keyParts'];

function field(value: string, previous: FieldMapping = {}): FieldMapping {
  const m = /^([A-Za-z]+)=(.+)$/.exec(value);
  if (!m || !FIELD_PARTS.includes(m[1] as keyof FieldMapping))
    throw new InvalidArgumentError(`--field takes PART=NAME with PART one of ${FIELD_PARTS.join(', ')}; got '${value}'`);
  return { ...previous, [m[1]]: m[2] };
}

function fraction(value: string): number {
  const n = Number(value);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError('--test-fraction must be a number in [0, 1]');
  return n;
}

function kinds(value: string): RewriteKind[] {
  const list = value.split(',').map((s) => s.trim()) as RewriteKind[];
  const bad = list.filter((k) => !REWRITE_KINDS.includes(k));
  if (bad.length) throw new InvalidArgumentError(`--kinds: unknown kind(s) ${bad.join(', ')} (use ${REWRITE_KINDS.join(', ')})`);
  return list;
}

function llmOptions(cmd: Command): Command {
  return cmd
    .option('--llm-base-url <url>', 'OpenAI-compatible endpoint (default: $KPIG_LLM_BASE_URL)')
    .option('--llm-model <name>', 'model name (default: $KPIG_LLM_MODEL)')
    .option('--llm-cache <dir>', 'response cache folder (default: $KPIG_LLM_CACHE or .kpig-cache/llm)')
    .option('--llm-concurrency <n>', 'requests in flight', int('--llm-concurrency', 1), 4);
}

function llmClient(o: { llmBaseUrl?: string; llmModel?: string; llmCache?: string; llmConcurrency: number }): ChatClient {
  return new ChatClient({ baseUrl: o.llmBaseUrl, model: o.llmModel, cacheDir: o.llmCache, concurrency: o.llmConcurrency });
}

/**
 * Adds `kpig data import`, `kpig data show`, `kpig data diversify` and `kpig data answer-styles` to the program.
 *
 * @example
 * registerData(program); // kpig data import ../shared/data/superni-dev -o data/dev
 */
export function registerData(program: Command): void {
  const data = program.command('data').description('task sets: import SuperNI / JSONL / Arrow / Parquet, show, write instruction variants');

  llmOptions(
    data
      .command('import')
      .description('import a SuperNI folder, a JSONL / Arrow / Parquet file of rows, or a task-set folder into a task-set folder (Arrow IPC)')
      .argument('<path>', 'input folder or file')
      .requiredOption('-o, --out <dir>', 'task-set folder to write')
      .addOption(new Option('--format <format>', 'input format (default: from the path)').choices(['superni', 'taskset', 'jsonl', 'arrow', 'parquet']))
      .option('--field <part=name>', `field mapping for row data, repeatable; parts: ${FIELD_PARTS.join(', ')}`, field)
      .option('--task-id <id>', 'task id for row data without a task field')
      .option('--seed <n>', 'seed of the train/test split', int('--seed', 0), 0)
      .option('--test-fraction <x>', 'share of each task that goes to test', fraction)
      .option('--test-size <n>', 'test instances per task (wins over --test-fraction)', int('--test-size', 0))
      .option('--max-instances <n>', 'keep at most n instances per task (seeded sample)', int('--max-instances', 1))
      .addOption(new Option('--key-parts <method>', 'how key parts of instructions without explicit ones are found').choices(['heuristic', 'llm', 'none']).default('heuristic'))
      .option('--overwrite', 'replace an existing task-set folder'),
  ).action(
    async (
      path: string,
      o: {
        out: string;
        format?: DataFormat;
        field?: FieldMapping;
        taskId?: string;
        seed: number;
        testFraction?: number;
        testSize?: number;
        maxInstances?: number;
        keyParts: KeyPartMethod;
        overwrite?: boolean;
        llmBaseUrl?: string;
        llmModel?: string;
        llmCache?: string;
        llmConcurrency: number;
      },
    ) => {
      let set = await importData(path, {
        format: o.format,
        fields: o.field,
        taskId: o.taskId,
        seed: o.seed,
        testFraction: o.testFraction,
        testSize: o.testSize,
        maxInstances: o.maxInstances,
        keyParts: o.keyParts === 'llm' ? 'none' : o.keyParts,
      });
      if (o.keyParts === 'llm') {
        const { set: annotated, rejected } = await annotateTaskSet(set, 'llm', { client: llmClient(o) });
        set = annotated;
        for (const [id, list] of rejected) for (const r of list) console.error(`kpig: ${id}: key part ${JSON.stringify(r.text)} dropped: ${r.reason}`);
      }
      await writeTaskSet(o.out, set, { overwrite: o.overwrite });
      const s = summarizeTaskSet(set);
      console.log(
        `${o.out}: ${set.tasks.length} tasks (${s.filter((t) => t.kind === 'classification').length} with a label set), ` +
          `${set.instances.length} instances (${s.reduce((a, t) => a + t.train, 0)} train, ${s.reduce((a, t) => a + t.test, 0)} test), ` +
          `${set.instructions.length} instructions, ${set.streams.length} stream(s)`,
      );
    },
  );

  data
    .command('show')
    .description('summarise a task set: tasks, counts, label sets, key parts, streams')
    .argument('<dir>', 'task-set folder (or any importable input)')
    .option('--task <id>', 'show one task in full: its instructions with key parts marked')
    .option('--json', 'print machine-readable JSON')
    .action(async (dir: string, o: { task?: string; json?: boolean }) => {
      const set = await importData(dir);
      const summary = summarizeTaskSet(set).filter((t) => !o.task || t.task_id === o.task);
      if (o.task && summary.length === 0) throw new InputError(`no task '${o.task}' in ${dir}`);
      if (o.json) {
        console.log(JSON.stringify({ tasks: summary, streams: set.streams }, null, 2));
        return;
      }
      const w = Math.max(4, ...summary.map((t) => t.task_id.length));
      console.log(`${'task'.padEnd(w)}  kind            train   test  instr  label set`);
      for (const t of summary)
        console.log(
          `${t.task_id.padEnd(w)}  ${t.kind.padEnd(14)}  ${String(t.train).padStart(5)}  ${String(t.test).padStart(5)}  ${String(t.instructions).padStart(5)}  ${t.label_set ? t.label_set.join(' | ') : '(open)'}`,
        );
      for (const s of set.streams) console.log(`stream ${s.name}: ${s.seen.join(' → ')}${s.held_out.length ? `; held out: ${s.held_out.join(', ')}` : ''}`);
      if (!o.task) {
        for (const t of summary) if (t.key_parts.length) console.log(`${t.task_id} key parts: ${t.key_parts.map((k) => `[${k.kind}] ${JSON.stringify(k.text)}`).join('  ')}`);
        return;
      }
      for (const r of set.instructions.filter((x) => x.task_id === o.task)) {
        let marked = '';
        let at = 0;
        for (const s of r.key_spans) {
          marked += `${r.text.slice(at, s.start)}⟦${r.text.slice(s.start, s.end)}⟧`;
          at = s.end;
        }
        console.log(`\n${r.instruction_id} (${r.origin}, key parts: ${r.key_source})\n${marked + r.text.slice(at)}`);
      }
    });

  llmOptions(
    data
      .command('diversify')
      .description('rewrite every seed instruction into variants (concretizing, reasoning, constraint, breadth) that keep its key parts verbatim')
      .argument('<dir>', 'task-set folder')
      .requiredOption('-o, --out <dir>', 'task-set folder to write (may be <dir> with --overwrite)')
      .addOption(new Option('--rewriter <name>', 'offline rules or an OpenAI-compatible endpoint').choices(['offline', 'llm']).default('offline'))
      .option('--kinds <list>', `comma-separated rewrite kinds (default: ${REWRITE_KINDS.join(',')})`, kinds)
      .option('--per-kind <n>', 'variants of each kind per seed', int('--per-kind', 1), 1)
      .option('--seed <n>', 'seed of the offline rewriter', int('--seed', 0), 0)
      .option('--overwrite', 'replace an existing task-set folder'),
  ).action(
    async (
      dir: string,
      o: { out: string; rewriter: 'offline' | 'llm'; kinds?: RewriteKind[]; perKind: number; seed: number; overwrite?: boolean; llmBaseUrl?: string; llmModel?: string; llmCache?: string; llmConcurrency: number },
    ) => {
      const set = await readTaskSet(dir);
      const rewriter = o.rewriter === 'llm' ? llmRewriter(llmClient(o)) : offlineRewriter();
      const { set: out, accepted, rejected } = await diversify(set, rewriter, { kinds: o.kinds, perKind: o.perKind, seed: o.seed, concurrency: o.llmConcurrency });
      for (const r of rejected) console.error(`kpig: rejected ${r.origin} variant of ${r.parent_id}: ${r.reason}`);
      await writeTaskSet(o.out, out, { overwrite: o.overwrite });
      const d = diversityReport(out, 2);
      console.log(
        `${o.out}: ${accepted.length} variants kept, ${rejected.length} rejected (${rewriter.name}); ` +
          `distinct-2 per seed ${d.perSeedDistinct.toFixed(3)} (copies would give ${d.copyBaseline.toFixed(3)}), novel bigrams ${(100 * d.novel).toFixed(1)}%`,
      );
    },
  );

  data
    .command('answer-styles')
    .description("answer-style diversification (SEFE's ASD): ask a share of each task's training instances as yes/no or multiple-choice questions")
    .argument('<dir>', 'task-set folder')
    .requiredOption('-o, --out <dir>', 'task-set folder to write (may be <dir> with --overwrite)')
    .option('--ratio <x>', "share of each task's training instances converted (SEFE: 0.2)", (v: string) => {
      const x = Number(v);
      if (!(x >= 0 && x <= 1)) throw new InvalidArgumentError(`--ratio must be in [0, 1], got ${v}`);
      return x;
    }, 0.2)
    .option('--styles <list>', `comma-separated (default ${ANSWER_STYLES.join(',')})`, (v: string) => {
      const list = v.split(',').map((x) => x.trim());
      const bad = list.filter((x) => !ANSWER_STYLES.includes(x as AnswerStyle));
      if (bad.length) throw new InvalidArgumentError(`--styles: unknown style(s) ${bad.join(', ')} (use ${ANSWER_STYLES.join(', ')})`);
      return list as AnswerStyle[];
    })
    .option('--seed <n>', 'seed of the draw', int('--seed', 0), 0)
    .option('--overwrite', 'replace an existing task-set folder')
    .action(async (dir: string, o: { out: string; ratio: number; styles?: AnswerStyle[]; seed: number; overwrite?: boolean }) => {
      const { set, report } = diversifyAnswerStyles(await readTaskSet(dir), { ratio: o.ratio, styles: o.styles, seed: o.seed });
      await writeTaskSet(o.out, set, { overwrite: o.overwrite });
      for (const t of report.tasks)
        console.log(`${t.task_id}: ${Object.entries(t.converted).map(([k, n]) => `${n} ${k}`).join(', ')}${t.unconvertible ? `, ${t.unconvertible} left as they were (no wrong answer to offer)` : ''}`);
      console.log(`${o.out}: written`);
    });
}
