#!/usr/bin/env node
// Compares kpig's Porter stemmer (src/eval/porter.ts) with NLTK's PorterStemmer() — the default
// NLTK_EXTENSIONS mode that rouge-score uses — on every distinct ROUGE token of the reference
// outputs of a SuperNI task folder. NLTK runs under Debian's python (/usr/bin/python3, package
// python3-nltk).
//
//   node scripts/check-stemmer.mjs [tasks-dir] [--inputs]
//
// tasks-dir defaults to ../shared/data/superni-dev/tasks; --inputs also takes the words of the
// definitions and instance inputs. Stems with the built dist/ (run `npx tsc -p .` first). Exit
// status 0: all agree, 1: mismatches, 3: NLTK or the data is not available.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const PYTHON = '/usr/bin/python3';
export const DEFAULT_TASKS_DIR = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'shared', 'data', 'superni-dev', 'tasks');

/** Why the check cannot run here (NLTK or the data missing), or null when it can. */
export function unavailable(tasksDir = DEFAULT_TASKS_DIR) {
  if (!existsSync(PYTHON)) return `${PYTHON} not found`;
  const probe = spawnSync(PYTHON, ['-c', 'import nltk'], { encoding: 'utf8' });
  if (probe.status !== 0) return `NLTK is not importable by ${PYTHON} (install python3-nltk)`;
  if (!existsSync(tasksDir)) return `no task folder at ${tasksDir}`;
  if (!readdirSync(tasksDir).some((f) => f.endsWith('.json'))) return `no task JSON files in ${tasksDir}`;
  return null;
}

/** The distinct unstemmed ROUGE tokens (lower-case [a-z0-9] runs) of the outputs (and, with `inputs`, definitions and inputs) of every task file. */
export function collectWords(tasksDir = DEFAULT_TASKS_DIR, options = {}) {
  const words = new Set();
  const add = (text) => {
    for (const w of String(text).toLowerCase().split(/[^a-z0-9]+/)) if (w) words.add(w);
  };
  for (const file of readdirSync(tasksDir).filter((f) => f.endsWith('.json')).sort()) {
    const task = JSON.parse(readFileSync(join(tasksDir, file), 'utf8'));
    for (const inst of task.Instances ?? []) {
      for (const out of Array.isArray(inst.output) ? inst.output : [inst.output]) add(out ?? '');
      if (options.inputs) add(inst.input ?? '');
    }
    if (options.inputs) for (const d of task.Definition ?? []) add(d);
  }
  return [...words].sort();
}

/** NLTK's stems of `words`, in order. */
export function nltkStems(words) {
  const code = [
    'import sys',
    'from nltk.stem.porter import PorterStemmer',
    's = PorterStemmer()',
    'words = sys.stdin.read().split("\\n")',
    'sys.stdout.write("\\n".join(s.stem(w) for w in words))',
  ].join('\n');
  const r = spawnSync(PYTHON, ['-c', code], { input: words.join('\n'), encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`NLTK stemming failed: ${r.stderr}`);
  const stems = r.stdout.split('\n');
  if (stems.length !== words.length) throw new Error(`NLTK returned ${stems.length} stems for ${words.length} words`);
  return stems;
}

/** Runs the comparison with the given stemmer; returns the word count and every disagreement. */
export function compareStemmer(stem, tasksDir = DEFAULT_TASKS_DIR, options = {}) {
  const words = collectWords(tasksDir, options);
  const expected = nltkStems(words);
  const mismatches = [];
  words.forEach((w, i) => {
    const got = stem(w);
    if (got !== expected[i]) mismatches.push({ word: w, nltk: expected[i], kpig: got });
  });
  return { words: words.length, mismatches };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const tasksDir = resolve(args.find((a) => !a.startsWith('--')) ?? DEFAULT_TASKS_DIR);
  const why = unavailable(tasksDir);
  if (why) {
    console.error(`check-stemmer: skipped: ${why}`);
    process.exit(3);
  }
  const dist = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', 'dist', 'eval', 'porter.js');
  if (!existsSync(dist)) {
    console.error(`check-stemmer: ${dist} is missing; build first with npx tsc -p .`);
    process.exit(3);
  }
  const { porterStem } = await import(pathToFileURL(dist).href);
  const { words, mismatches } = compareStemmer(porterStem, tasksDir, { inputs: args.includes('--inputs') });
  for (const m of mismatches.slice(0, 50)) console.log(`${m.word}: nltk ${m.nltk}, kpig ${m.kpig}`);
  console.log(`check-stemmer: ${words} distinct words from ${tasksDir}, ${mismatches.length} mismatch(es)`);
  process.exit(mismatches.length ? 1 : 0);
}
