// Prompt templates end to end through the command line: a model folder with a Hugging Face
// byte-level tokenizer (byte b is id b; <|im_start|> 256, <|im_end|> 257, <|endoftext|> 258 the EOS)
// and a ChatML chat template. `--template chat` must give train, score, eval, generate and run the
// conversation's tokens, which the test writes out by hand from the template's definition.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenizeExample } from '../src/data/instructions.js';
import { writeTaskSet } from '../src/data/store.js';
import { Model } from '../src/model/model.js';
import { createRandomModel } from '../src/model/writer.js';
import { scorePairs } from '../src/scoring/pairs.js';
import { resolvePromptTemplate, stopTokens } from '../src/template/index.js';
import { ModelDir } from './support/models.js';
import { tinyTaskSet } from './support/tasks.js';
import { addedToken, byteLevelTokenizerJson } from './support/tokenizers.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());
const IM_START = 256, IM_END = 257, EOS = 258;
const CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const bytes = (s: string) => [...Buffer.from(s, 'utf8')];
/** The conversation's ids, from the template's definition: special tokens by id, text byte by byte. */
function conversation(instruction: string, input: string, output: string | null): number[] {
  const user = [IM_START, ...bytes(`user\n${instruction}${input ? `\n\n${input}` : ''}`), IM_END, ...bytes('\n'), IM_START, ...bytes('assistant\n')];
  return output === null ? user : [...user, ...bytes(output), IM_END];
}

function kpig(...args: string[]) {
  const r = spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

let chat: string, plain: string, tasks: string;
beforeAll(async () => {
  chat = join(dirs.root, 'chat');
  await createRandomModel(chat, { preset: 'llama-nano', seed: 2, config: { vocab_size: 259, bos_token_id: null, eos_token_id: EOS } });
  writeFileSync(join(chat, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson({ added: [addedToken(IM_START, '<|im_start|>'), addedToken(IM_END, '<|im_end|>'), addedToken(EOS, '<|endoftext|>')] })));
  writeFileSync(join(chat, 'tokenizer_config.json'), JSON.stringify({ chat_template: CHATML, eos_token: '<|endoftext|>', bos_token: null }));
  plain = await dirs.make({ preset: 'llama-nano', seed: 2, config: { vocab_size: 259 } });
  tasks = join(dirs.root, 'tasks');
  await writeTaskSet(tasks, tinyTaskSet({ seen: 2, heldOut: 1, train: 4, test: 2 }));
});

describe('--template chat', () => {
  it('the library gives the conversation\'s tokens, and <|im_end|> ends generation', async () => {
    const model = await Model.load(chat, { threads: 1 });
    const template = await resolvePromptTemplate('chat', chat);
    const seq = tokenizeExample(model.tokenizer!, { instruction: 'Say yes.', input: 'café', output: 'yes' }, Infinity, template)!;
    expect(seq.tokens).toEqual(conversation('Say yes.', 'café', 'yes'));
    expect(stopTokens(model.tokenizer!, template).sort()).toEqual([IM_END, EOS]);
    model.dispose();
  });

  it('train, generate and eval run with the chat template', () => {
    const rows = join(dirs.root, 'rows.jsonl');
    writeFileSync(rows, ['{"instruction":"Say yes.","input":"","output":"yes"}', '{"instruction":"Say no.","input":"now","output":"no"}'].join('\n'));
    const t = kpig('train', chat, '--template', 'chat', '--data', rows, '--out', join(dirs.root, 'train'), '--full', '--max-steps', '2', '--batch-size', '2', '--json', '-t', '1');
    expect(t.err).not.toMatch(/error|Error/);
    expect(t.status).toBe(0);
    expect(JSON.parse(readFileSync(join(dirs.root, 'train', 'kpig-train.json'), 'utf8')).settings.template).toBe('chat');
    const g = kpig('generate', chat, '--template', 'chat', '-p', 'Say yes.', '-n', '3', '--json', '-t', '1');
    expect(g.status).toBe(0);
    expect(JSON.parse(g.out.trim()).tokens.length).toBeLessThanOrEqual(3);
    const e = kpig('eval', chat, '--template', 'chat', '--data', tasks, '--out', join(dirs.root, 'eval.arrow'), '--max-instances', '1', '--max-new-tokens', '2', '-t', '1');
    expect(e.status).toBe(0);
    const preds = tableFromIPC(readFileSync(join(dirs.root, 'eval.arrow')));
    expect(preds.numRows).toBe(3);
    expect(preds.schema.metadata.get('kpig.template')).toBe('chat');
  });

  it('score uses the conversation\'s tokens: its IG is the one of the hand-built pair', async () => {
    const data = join(dirs.root, 'score.jsonl');
    const row = { task_id: 't', instance_id: 'i', instruction: "Answer 'yes' or 'no'.", key_spans: [{ start: 7, end: 12 }], input: 'Is ice cold?', output: 'yes' };
    writeFileSync(data, JSON.stringify(row) + '\n');
    const ig = (template: string) => {
      const out = join(dirs.root, `score-${template}.arrow`);
      const r = kpig('score', chat, '--template', template, '--data', data, '--out', out, '-t', '1');
      expect(r.status, r.err).toBe(0);
      return tableFromIPC(readFileSync(out)).get(0)!.toJSON() as { ig_ce: number; status: string };
    };
    const viaChat = ig('chat');
    expect(viaChat.status).toBe('ok');
    const model = await Model.load(chat, { threads: 1 });
    const masked = "Answer [MASK] or 'no'.";
    const [ref] = await scorePairs(model, [{ full: conversation(row.instruction, row.input, null).concat(bytes('yes')), masked: conversation(masked, row.input, null).concat(bytes('yes')), responseLen: 3 }]);
    model.dispose();
    expect(viaChat.ig_ce).toBeCloseTo(ref.igCe, 5);
    expect(Math.abs(ig('superni').ig_ce - ref.igCe)).toBeGreaterThan(1e-6);
  });

  it('run trains, scores and evaluates with the template of its config; a resume refuses a changed template', () => {
    const cfg = join(dirs.root, 'run.json');
    writeFileSync(cfg, JSON.stringify({ model: chat, data: tasks, stream: 'main', template: 'chat', strategy: { name: 'kpig', m: 2 }, train: { batchSize: 2, checkpointEvery: 0, maxLength: 128 }, eval: { maxInstancesPerTask: 1, maxNewTokens: 2 }, threads: 1 }));
    const out = join(dirs.root, 'run');
    const r = kpig('run', cfg, '--out', out, '--quiet');
    expect(r.status, r.err).toBe(0);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).template).toBe('chat');
    expect(JSON.parse(readFileSync(join(out, 'inputs.json'), 'utf8')).template).toMatch(/^[0-9a-f]{64}$/);
    // A template file that changes under the run is refused on resume, like changed data.
    const file = join(dirs.root, 'run-template.txt');
    writeFileSync(file, 'Task: {instruction}\nQ: {input}\nA: ');
    const cfg2 = join(dirs.root, 'run2.json');
    writeFileSync(cfg2, JSON.stringify({ ...JSON.parse(readFileSync(cfg, 'utf8')), model: plain, template: file }));
    const out2 = join(dirs.root, 'run2');
    expect(kpig('run', cfg2, '--out', out2, '--quiet').status).toBe(0);
    expect(kpig('run', '--resume', out2, '--quiet').status).toBe(0);
    writeFileSync(file, 'Task: {instruction}\nInput: {input}\nA: ');
    const changed = kpig('run', '--resume', out2, '--quiet');
    expect(changed.status).not.toBe(0);
    expect(changed.err).toMatch(/the template \(.*run-template\.txt\) changed since the run started/);
  });

  it('bad templates are usage errors that say what is wrong', () => {
    const noChat = kpig('generate', plain, '--template', 'chat', '-p', 'x');
    expect(noChat.status).toBe(2);
    expect(noChat.err).toMatch(/has no chat template/);
    const missing = kpig('eval', chat, '--template', join(dirs.root, 'nope.txt'), '--data', tasks, '--out', join(dirs.root, 'x.arrow'));
    expect(missing.status).toBe(2);
    expect(missing.err).toMatch(/neither superni, chat nor a readable file/);
    writeFileSync(join(dirs.root, 'bad.txt'), 'Q: {question}');
    const bad = kpig('score', chat, '--template', join(dirs.root, 'bad.txt'), '--data', join(dirs.root, 'score.jsonl'), '--out', join(dirs.root, 'y.arrow'));
    expect(bad.status).toBe(2);
    expect(bad.err).toMatch(/unknown slot \{question\}/);
    const userTpl = join(dirs.root, 'qa.txt');
    writeFileSync(userTpl, 'Task: {instruction}\nQ: {input}\nA: ');
    expect(kpig('generate', plain, '--template', userTpl, '--input', 'hi', '-p', 'Say yes.', '-n', '2', '-t', '1').status).toBe(0);
    expect(kpig('generate', plain, '--input', 'hi', '-p', 'x').status).toBe(2);
  });
});
