/**
 * Access to the independent PyTorch oracle (`../shared/peers/reference.py`). It needs a Python
 * with torch: Debian's `/usr/bin/python3` after `apt-get install python3-torch python3-numpy`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ORACLE_PATH = resolve(repoRoot, '..', 'shared', 'peers', 'reference.py');

function hasTorch(python: string): boolean {
  const r = spawnSync(python, ['-c', 'import torch, numpy'], { stdio: 'ignore' });
  return r.status === 0;
}

/** The Python that can run the oracle, or the reason none can. */
export function findOracle(): { python: string } | { skip: string } {
  if (!existsSync(ORACLE_PATH)) return { skip: `the oracle ${ORACLE_PATH} is absent (../shared is not beside the repo)` };
  for (const python of ['python3', '/usr/bin/python3']) if (hasTorch(python)) return { python };
  return { skip: 'no python3 with torch (install: apt-get install -y python3-torch python3-numpy)' };
}

/** Runs `reference.py <args>`; throws with its stderr when it fails. */
export function runOracle(python: string, args: string[]): string {
  const r = spawnSync(python, [ORACLE_PATH, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`reference.py ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}
