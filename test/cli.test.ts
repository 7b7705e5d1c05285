// The `kpig` command line, run as a user would: create a model, inspect it, generate from it,
// and get one clear line and a non-zero status on bad input.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = mkdtempSync(join(tmpdir(), 'kpig-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function kpig(...args: string[]) {
  const r = spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('kpig CLI', () => {
  const model = join(root, 'llama');

  it('create-model writes a loadable Hugging Face folder', () => {
    const r = kpig('create-model', model, '--preset', 'llama-nano', '--seed', '3', '--dtype', 'bf16');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('model.safetensors');
  });

  it('info prints architecture, parameters, dtype and memory', () => {
    const r = kpig('info', model);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/model\s+llama/);
    expect(r.stdout).toMatch(/parameters\s+[\d.]+K \([\d,]+\)/);
    expect(r.stdout).toMatch(/weights\s+BF16 in 1 file/);
    expect(r.stdout).toMatch(/GQA 2:1/);
    const j = JSON.parse(kpig('info', model, '--json').stdout);
    expect(j.vocabSize).toBe(259);
    expect(j.tokenizer.kind).toBe('byte');
  });

  it('info describes a folder without a tokenizer and names what is missing', () => {
    const bare = join(root, 'bare');
    expect(kpig('create-model', bare, '--preset', 'llama-nano', '--seed', '4').status).toBe(0);
    rmSync(join(bare, 'kpig-tokenizer.json'));
    const r = kpig('info', bare);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/tokenizer\s+missing/);
    expect(r.stdout).toContain('note: no tokenizer in');
    expect(r.stdout).toMatch(/parameters\s+\d/);
    // Commands that read text still refuse it, with the same message.
    const g = kpig('generate', bare, '-p', 'hi');
    expect(g.status).not.toBe(0);
    expect(g.stderr).toContain('no tokenizer in');
  });

  it('generate samples with a seed, the same draws for the same seed; bad sampling options exit 2', () => {
    const args = ['generate', model, '-p', 'ab', '-p', 'cd', '-n', '6', '--temperature', '1', '--seed', '5', '--json'];
    const a = kpig(...args), b = kpig(...args);
    expect(a.status).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    expect(a.stdout).not.toBe(kpig(...args.slice(0, -3), '--seed', '6', '--json').stdout);
    const bad = kpig('generate', model, '-p', 'x', '--top-p', '2');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--top-p must be a number in (0, 1]');
  });

  it('generate prints one JSON line per prompt', () => {
    const r = kpig('generate', model, '-p', 'Hello', '-p', 'Hi', '-n', '5', '--json');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      expect(l.tokens.length).toBeLessThanOrEqual(5);
      expect(['eos', 'length']).toContain(l.finishReason);
    }
  });

  it('fails with one clear line on bad input', () => {
    const missing = kpig('info', join(root, 'nope'));
    expect(missing.status).toBe(1);
    expect(missing.stderr.trim()).toBe(`kpig: model folder '${join(root, 'nope')}' does not exist`);
    const exists = kpig('create-model', model);
    expect(exists.status).toBe(1);
    expect(exists.stderr).toContain('--force');
    const preset = kpig('create-model', join(root, 'x'), '--preset', 'gpt5');
    expect(preset.status).toBe(2);
    expect(preset.stderr).toContain("unknown preset 'gpt5'");
    const n = kpig('generate', model, '-p', 'x', '-n', '-1');
    expect(n.status).not.toBe(0);
    expect(n.stderr).toContain('--max-new-tokens must be an integer');
  });

  it('bad option values exit 2 with one line, before anything is written', () => {
    const data = join(root, 'bad-args.jsonl');
    writeFileSync(data, '{"instruction":"Say yes.","input":"","output":"yes"}\n');
    const out = join(root, 'bad-args-out');
    const cases: string[][] = [
      ['train', model, '--data', data, '--out', out, '--lr', 'abc'],
      ['train', model, '--data', data, '--out', out, '--lora-alpha', '-2'],
      ['train', model, '--data', data, '--out', out, '--lora-dropout', '1'],
      ['train', model, '--data', data, '--out', out, '--lora-targets', 'nope'],
      ['train', model, '--data', data, '--out', out, '--weight-decay', '-1'],
      ['train', model, '--data', data, '--out', out, '--max-grad-norm', 'x'],
      ['score', model, '--data', data, '--out', join(root, 'scores.csv')],
      ['eval', model, '--data', root, '--out', join(root, 'eval.txt')],
    ];
    for (const args of cases) {
      const r = kpig(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).not.toMatch(/\n\s+at /);
      expect(r.stderr.trim().split('\n')[0], args.join(' ')).toMatch(/^(kpig|error):/);
    }
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(root, 'scores.csv'))).toBe(false);
  });

  it('train: LoRA with JSON progress, checkpoints, resume and a final PEFT adapter', () => {
    const data = join(root, 'rows.jsonl');
    const rows = [['cat', 'mammal'], ['owl', 'bird'], ['trout', 'fish']].map(([input, output]) => ({ instruction: 'Name the class.', input, output }));
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join('\n'));
    const out = join(root, 'run');
    const r = kpig('train', model, '--data', data, '--out', out, '--epochs', '4', '--batch-size', '3', '--checkpoint-every', '2', '--json', '--lora-targets', 'q_proj,v_proj', '--max-steps', '2');
    expect(r.stderr).toContain('adapter saved');
    expect(r.status).toBe(0);
    const steps = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(steps.map((p) => p.step)).toEqual([1, 2]);
    expect(steps.every((p) => Number.isFinite(p.loss) && p.totalSteps === 2)).toBe(true);
    expect(existsSync(join(out, 'checkpoint-2', 'optimizer.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'final-adapter', 'adapter_model.safetensors'))).toBe(true);
    const again = kpig('train', model, '--data', data, '--out', out, '--epochs', '4', '--batch-size', '3', '--json', '--lora-targets', 'q_proj,v_proj', '--resume');
    expect(again.status).toBe(0);
    expect(again.stderr).toContain(`resumed from ${join(out, 'checkpoint-2')} (step 2)`);
    expect(again.stdout.trim().split('\n').map((l) => JSON.parse(l).step)).toEqual([3, 4]);
  });

  it('train: refuses a non-empty --out without --resume or --force, and a resume with other data, batch size or model', () => {
    const data = join(root, 'rows2.jsonl');
    const rows = [['cat', 'mammal'], ['owl', 'bird'], ['trout', 'fish']].map(([input, output]) => ({ instruction: 'Name the class.', input, output }));
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join('\n'));
    const out = join(root, 'guarded');
    const args = ['--data', data, '--out', out, '--batch-size', '3', '--max-steps', '2', '--checkpoint-every', '1', '--json'];
    expect(kpig('train', model, ...args).status).toBe(0);
    const before = readdirSync(out).sort();
    const again = kpig('train', model, ...args);
    expect(again.status).toBe(2);
    expect(again.stderr).toContain(`--out ${out} is not empty`);
    expect(again.stderr).toContain('--resume');
    expect(readdirSync(out).sort()).toEqual(before);
    // Resume checks what the run was started with.
    const other = join(root, 'rows3.jsonl');
    writeFileSync(other, rows.slice(0, 2).map((r) => JSON.stringify(r)).join('\n'));
    const otherData = kpig('train', model, '--data', other, '--out', out, '--batch-size', '3', '--resume');
    expect(otherData.status).toBe(2);
    expect(otherData.stderr).toMatch(/data: .*rows2\.jsonl \(3 rows\) → .*rows3\.jsonl \(2 rows, other content\)/);
    const otherBatch = kpig('train', model, '--data', data, '--out', out, '--batch-size', '2', '--resume');
    expect(otherBatch.status).toBe(2);
    expect(otherBatch.stderr).toContain('batchSize: 3 → 2');
    const model2 = join(root, 'llama-other');
    expect(kpig('create-model', model2, '--preset', 'llama-nano', '--seed', '9').status).toBe(0);
    const otherModel = kpig('train', model2, '--data', data, '--out', out, '--batch-size', '3', '--resume');
    expect(otherModel.status).toBe(2);
    expect(otherModel.stderr).toContain('model: ');
    // A killed writer's temporary folder is cleaned; --force starts over and keeps foreign files.
    mkdirSync(join(out, '.checkpoint-3.tmp-999999-0badc0de'));
    writeFileSync(join(out, 'notes.txt'), 'mine');
    const forced = kpig('train', model, ...args, '--force');
    expect(forced.status).toBe(0);
    expect(forced.stderr).toContain('removed 1 temporary folder(s) of killed runs');
    expect(forced.stderr).toContain('--force: removed the earlier run');
    expect(readdirSync(out).sort()).toEqual([...before, 'notes.txt'].sort());
    expect(readFileSync(join(out, 'notes.txt'), 'utf8')).toBe('mine');
  });

  it('train: bad data names the file and line', () => {
    const data = join(root, 'bad.jsonl');
    writeFileSync(data, '{"instruction": "x", "output": "y"}\n{"instruction": "x"}\n');
    const r = kpig('train', model, '--data', data, '--out', join(root, 'bad-run'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe(`kpig: ${data}:2: field 'output' is missing`);
  });
});
