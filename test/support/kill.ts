// Runs `kpig run` with --json and kills it (SIGKILL: no cleanup) once a given step of a given stage
// is reported: how tests show that a run resumes after the hardest stop.
import { spawn } from 'node:child_process';

/** Spawns `node dist/cli/main.js run <config> --out <out> --json` and SIGKILLs it at (stage, step). */
export function killRunAt(config: string, out: string, stage: number, step: number): Promise<void> {
  return new Promise<void>((done, fail) => {
    const child = spawn(process.execPath, ['dist/cli/main.js', 'run', config, '--out', out, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let killed = false;
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n').slice(0, -1)) {
        const e = JSON.parse(line);
        if (!killed && e.type === 'step' && e.stage === stage && e.step === step) {
          killed = true;
          child.kill('SIGKILL');
        }
      }
      buf = buf.slice(buf.lastIndexOf('\n') + 1);
    });
    child.on('exit', (code, signal) => (killed && signal === 'SIGKILL' ? done() : fail(new Error(`the run ended before it was killed (${code})`))));
  });
}
