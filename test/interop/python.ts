/**
 * The Python that the interop tests use as the independent side: `$KPIG_INTEROP_PYTHON`, else the
 * virtual environment `.venv-interop/` at the repository root (`.ci/run` makes it with pip when
 * the local package index has the packages). A test suite whose packages are missing is skipped
 * with the reason in its title.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export function interopPython(modules: string[]): { ok: boolean; path?: string; reason?: string } {
  const path = process.env.KPIG_INTEROP_PYTHON ?? resolve(__dirname, '..', '..', '.venv-interop', 'bin', 'python');
  if (!existsSync(path)) return { ok: false, reason: `no interop Python at ${path} (run .ci/run, or set KPIG_INTEROP_PYTHON)` };
  const r = spawnSync(path, ['-c', `import ${modules.join(', ')}`], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) return { ok: false, reason: `${path} cannot import ${modules.join(', ')}: ${(r.stderr || '').trim().split('\n').at(-1)}` };
  return { ok: true, path };
}

/** Runs a Python script and returns its stdout; a failure throws with its stderr. */
export function runPython(python: string, args: string[]): string {
  const r = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: 600_000, env: { ...process.env, OMP_NUM_THREADS: '1', TOKENIZERS_PARALLELISM: 'false' } });
  if (r.status !== 0) throw new Error(`${args[0]} failed (status ${r.status}):\n${r.stderr}`);
  return r.stdout;
}

export function scratch(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
