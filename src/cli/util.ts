/** Small helpers shared by the subcommands: argument parsers and human-readable numbers. */
import { InvalidArgumentError } from 'commander';
import { realpathSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../errors/index.js';
import type { PrefixCacheStats } from '../model/model.js';
import { resolvePromptTemplate, type PromptTemplate } from '../template/index.js';

/** A parser for a finite number ≥ 0. */
export function nonNegative(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || value.trim() === '') throw new InvalidArgumentError(`${name} must be a number ≥ 0`);
    return n;
  };
}

/** A parser for a probability in (0, 1]. */
export function probability(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!(n > 0 && n <= 1)) throw new InvalidArgumentError(`${name} must be a number in (0, 1]`);
    return n;
  };
}

/** A parser for a finite number > 0. */
export function positive(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!(Number.isFinite(n) && n > 0) || value.trim() === '') throw new InvalidArgumentError(`${name} must be a number > 0`);
    return n;
  };
}

/** A parser for a number in [0, 1). */
export function fraction(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!(n >= 0 && n < 1) || value.trim() === '') throw new InvalidArgumentError(`${name} must be a number in [0, 1)`);
    return n;
  };
}

/**
 * Checks that an output name ends in one of `extensions` (the formats the command writes), so a
 * table is never written under a name that promises another format.
 */
export function outputName(flag: string, path: string, extensions: readonly string[]): void {
  const lower = path.toLowerCase();
  if (!extensions.some((e) => lower.endsWith(e))) throw new InvalidArgumentError(`${flag} ${path}: the name must end in ${extensions.join(', ')} (the formats written)`);
}

/** The `--threads` parser: an integer from 1 to the cores this process may use. */
export function threads(value: string): number {
  const n = int('--threads', 1)(value);
  const cores = availableParallelism();
  if (n > cores) throw new InvalidArgumentError(`--threads ${n} is more than the ${cores} cores of this machine; give at most ${cores}`);
  return n;
}

/** True when two paths name the same file (following links; a path that does not exist yet is compared resolved). */
export function samePath(a: string, b: string): boolean {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  return real(a) === real(b);
}

export function int(name: string, min: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}`);
    return n;
  };
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export function duration(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const m = Math.floor(sec / 60), s = Math.round(sec % 60);
  return m > 0 ? `${m}m${String(s).padStart(2, '0')}s` : `${s}s`;
}

/**
 * `make()`'s result, with an InputError it throws or rejects with turned into a usage error
 * (status 2): for library calls that check what a flag said (a template, trainer options, --out).
 */
export function usageErrors<T>(make: () => T): T {
  const toUsage = (err: unknown): never => {
    if (err instanceof InputError) throw new InvalidArgumentError(err.message);
    throw err;
  };
  try {
    const out = make();
    return (out instanceof Promise ? out.catch(toUsage) : out) as T;
  } catch (err) {
    return toUsage(err);
  }
}

/** The help text of every `--template` flag. */
export const TEMPLATE_HELP =
  'prompt template: superni ("Definition: … Output:"), chat (the model\'s chat template; its end-of-turn token ends each response) or a file (.jinja: a chat template; else text with {instruction} and {input} slots)';

/** The prompt template a `--template` flag names (superni, chat or a file); a bad value is a usage error. */
export function templateArg(spec: string, modelDir: string): Promise<PromptTemplate> {
  return usageErrors(() => resolvePromptTemplate(spec, modelDir));
}

/** `--prefix-cache-mb` help, shared by the commands that score or generate. */
export const PREFIX_CACHE_HELP =
  'MiB of instruction-prefix keys and values kept between engine calls (sequences that start with the same instruction compute it once); 0 turns sharing off';

/** Hit and token-reuse rates of a model's prefix cache (null before it planned anything). */
export function prefixCacheSummary(st: PrefixCacheStats): { hit_rate: number; token_reuse_rate: number; store_hits: number; entries: number; bytes: number } | null {
  if (st.sequences === 0) return null;
  const pct = (x: number) => Math.round(1000 * x) / 1000;
  return { hit_rate: pct(st.hits / st.sequences), token_reuse_rate: pct(st.tokensReused / st.tokens), store_hits: st.storeHits, entries: st.entries, bytes: st.bytes };
}

/** The kpig CLI script (absolute path), as job scripts call it. */
export const CLI_SCRIPT = resolve(fileURLToPath(import.meta.url), '..', 'main.js');

/** A usage error for a --slurm-only flag given without --slurm. */
export function requireSlurmFor(o: Record<string, unknown>, keys: readonly string[] = ['partition', 'time', 'cpusPerTask', 'dryRun']): void {
  const given = keys.find((k) => o[k] !== undefined && !o.slurm);
  if (given) throw new InvalidArgumentError(`--${given.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} goes with --slurm`);
}

/** Commander's reducer for a repeatable option: every value, in order. */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `--set field=value` options as a map of dotted config paths to values. */
export function overridesOf(sets: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`--set wants field=value (e.g. strategy.m=50), got '${s}'`);
    out[s.slice(0, eq)] = s.slice(eq + 1);
  }
  return out;
}
