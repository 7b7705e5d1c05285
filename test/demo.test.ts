// `kpig demo`: bad arguments, an unwritable cache, Ctrl-C followed by a demo that resumes, and the
// methods from the field in the demo.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEMO_LORA, DEMO_PRESETS, generalCount } from '../src/pipeline/demo-suite.js';
import { BASE_RECIPES } from '../src/synth/base-model.js';
import { mixtureExamples } from '../src/synth/tasks.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-demo-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function kpig(args: string[]) {
  return spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });
}

describe('kpig demo', () => {
  it('refuses --seeds 0 and an unknown strategy with a usage error', () => {
    const r = kpig(['demo', '--seeds', '0']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--seeds must be an integer ≥ 1/);
    const s = kpig(['demo', '--strategies', 'none,magic']);
    expect(s.status).toBe(2);
    expect(s.stderr).toMatch(/'magic' is not one of/);
  });

  it('names an unwritable cache folder', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a folder');
    const r = kpig(['demo', '--quick', '--cache', join(file, 'cache'), '--out', join(dir, 'out-bad')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot write the base-model cache folder .*a-file\/cache/);
    expect(r.stderr.trim().split('\n').pop()).toMatch(/^kpig: /);
  });

  it('stops cleanly on Ctrl-C and the next demo resumes', async () => {
    const out = join(dir, 'out'), cache = join(dir, 'cache');
    const args = ['dist/cli/main.js', 'demo', '--quick', '--strategies', 'none', '--out', out, '--cache', cache, '--threads', '1', '--json'];
    const stderr = await new Promise<string>((done, fail) => {
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let buf = '', err = '', sent = false;
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) {
          const e = JSON.parse(l);
          if (!sent && e.type === 'run' && e.event.type === 'stage' && e.event.stage === 1) {
            sent = true;
            child.kill('SIGINT');
          }
        }
      });
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('exit', (code) => (sent && code === 130 ? done(err) : fail(new Error(`exit ${code} before/without SIGINT: ${err}`))));
    });
    expect(stderr).toMatch(/interrupted\. Finished stages are kept; run the same command again to resume/);
    const runDir = join(out, 'seed-0', 'none');
    expect(existsSync(join(runDir, 'stage-01', 'done.json'))).toBe(true);
    expect(JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8')).state).not.toBe('done');
    const again = kpig(args.slice(1).filter((a) => a !== '--json'));
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/base model reused from/);
    expect(again.stderr).toMatch(/none \(resuming\)/);
    expect(again.stdout).toMatch(/\| none \|/);
    expect(JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8')).state).toBe('done');
    expect(existsSync(join(out, 'report', 'report.html'))).toBe(true);
    // Listening probes after the base model and every stage; the masking record; the gate, which
    // cannot pass without a multitask run, and the held-out columns marked for it.
    for (const d of ['base', 'stage-01', 'stage-04']) {
      const probe = JSON.parse(readFileSync(join(runDir, d, 'probe.json'), 'utf8'));
      expect(probe.tasks.length).toBe(7);
      for (const p of probe.tasks) expect(p.follow + p.stale).toBeLessThanOrEqual(1);
    }
    expect(JSON.parse(readFileSync(join(runDir, 'masking.json'), 'utf8')).placeholder_pool.length).toBeGreaterThan(5);
    const comparison = JSON.parse(readFileSync(join(out, 'comparison.json'), 'utf8'));
    expect(comparison.gate.pass).toBe(false);
    expect(comparison.gate.reason).toMatch(/no multitask run/);
    expect(again.stdout).toMatch(/V-score \(held-out\) \(not evidence\)/);
    expect(again.stdout).toMatch(/validity gate: FAIL/);
    expect(readFileSync(join(out, 'report', 'report.md'), 'utf8')).toMatch(/validity gate: FAIL/);
  });

  it('runs the methods from the field: gere on its base model\'s general mixture, the adapter strategies on LoRA', () => {
    const out = join(dir, 'out'), cache = join(dir, 'cache');
    const r = kpig(['demo', '--quick', '--strategies', 'gere,seqlora', '--out', out, '--cache', cache, '--threads', '1']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\| gere \|/);
    expect(r.stdout).toMatch(/\| seqlora \|/);
    const general = readFileSync(join(out, 'seed-0', 'general.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const preset = DEMO_PRESETS.quick;
    expect(general).toHaveLength(generalCount(preset));
    const mixture = mixtureExamples({ seed: 0, size: BASE_RECIPES.quick.mixtureSize, labelShare: BASE_RECIPES.quick.mixtureLabelShare });
    expect(general).toEqual(mixture.slice(0, general.length).map((m) => ({ instruction: m.instruction, input: m.input, output: m.output })));
    const gere = JSON.parse(readFileSync(join(out, 'seed-0', 'gere', 'config.json'), 'utf8'));
    expect(gere.strategy.generalSamples).toBe(general.length);
    const seq = JSON.parse(readFileSync(join(out, 'seed-0', 'seqlora', 'config.json'), 'utf8'));
    expect(seq.train).toMatchObject({ mode: 'lora', loraRank: DEMO_LORA.rank, loraAlpha: DEMO_LORA.alpha });
    expect(existsSync(join(out, 'seed-0', 'seqlora', 'stage-04', 'final', 'adapter_model.safetensors'))).toBe(true);
  });
});
