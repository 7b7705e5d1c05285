// POT (Python Optimal Transport, Debian python3-pot) as the independent reference for exact
// Wasserstein distances; tests skip with a message when Debian's python lacks it.
import { spawnSync } from 'node:child_process';

const PY = '/usr/bin/python3';

export function havePot(): boolean {
  return spawnSync(PY, ['-c', 'import ot, numpy'], { encoding: 'utf8' }).status === 0;
}

/** ot.emd2(a, b, C) for each case, computed by POT. */
export function potEmd2(cases: Array<{ a: number[]; b: number[]; C: number[][] }>): number[] {
  const script = 'import json,sys,numpy as np,ot\ncases=json.load(sys.stdin)\nprint(json.dumps([float(ot.emd2(np.array(c["a"]),np.array(c["b"]),np.array(c["C"]))) for c in cases]))';
  const r = spawnSync(PY, ['-c', script], { input: JSON.stringify(cases), encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`POT failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as number[];
}
