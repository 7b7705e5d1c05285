// Prompt templates: SuperNI default, user templates, chat templates from tokenizer_config.json, and
// tokenised prompts with a segment and a key flag per token.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { renderPrompt, tokenizeExample } from '../src/data/instructions.js';
import { InputError } from '../src/errors/index.js';
import { chatTemplate, loadPromptTemplate, superniTemplate, tokenizePrompt, userTemplate } from '../src/template/index.js';
import { ByteTokenizer, type Tokenizer } from '../src/tokenizer/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-template-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Two characters per token, so tokens straddle segment boundaries; `lower` makes decoding lossy. */
class PairTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize = 1 << 20;
  readonly bosId = null;
  readonly eosIds = [0];
  readonly #pieces = ['</s>'];
  constructor(readonly lower = false) {}
  encode(text: string): number[] {
    const ids: number[] = [];
    for (let i = 0; i < text.length; i += 2) {
      const p = text.slice(i, i + 2);
      let id = this.#pieces.indexOf(p);
      if (id < 0) id = this.#pieces.push(p) - 1;
      ids.push(id);
    }
    return ids;
  }
  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    const s = Array.from(ids, (id) => (id === 0 && options.skipSpecialTokens !== false ? '' : this.#pieces[id])).join('');
    return this.lower ? s.toLowerCase() : s;
  }
}

const C = { template: 0, instruction: 1, input: 2, response: 3 };

describe('templates', () => {
  it('the SuperNI template writes the SuperNI prompt (renderPrompt is it), with the instruction and input located', () => {
    const ex = { instruction: 'Answer yes or no.', input: 'Is ice cold?', output: 'yes' };
    const r = superniTemplate().render({ ...ex, keySpans: [{ start: 7, end: 16 }] });
    expect(r.text).toBe('Definition: Answer yes or no.\n\nInput: Is ice cold?\nOutput: ');
    expect(renderPrompt(ex)).toBe(r.text);
    expect(r.ranges).toEqual([
      { segment: 'instruction', start: 12, end: 29 },
      { segment: 'input', start: 38, end: 50 },
    ]);
    expect(r.text.slice(r.keyRanges[0].start, r.keyRanges[0].end)).toBe('yes or no');
    expect(superniTemplate().render({ instruction: 'Say hi.', input: '' }).text).toBe('Definition: Say hi.\n\nOutput: ');
  });

  it('user templates fill {instruction} and {input} and reject bad slots', () => {
    const t = userTemplate('### Task {{v2}}\n{instruction}\n### Input\n{input}\n### Answer\n');
    const r = t.render({ instruction: 'Add.', input: '2 3' });
    expect(r.text).toBe('### Task {v2}\n{instruction}\n### Input\n{input}\n### Answer\n'.replace('{instruction}', 'Add.').replace('{input}', '2 3'));
    expect(r.ranges).toEqual([
      { segment: 'instruction', start: 14, end: 18 },
      { segment: 'input', start: 29, end: 32 },
    ]);
    expect(() => userTemplate('{instruction} {output}')).toThrow(/unknown slot \{output\} at offset 14/);
    expect(() => userTemplate('{input} only')).toThrow(/no \{instruction\} slot/);
    expect(() => userTemplate('{instruction}{instruction}')).toThrow(/appears more than once/);
  });

  it('chat templates render like apply_chat_template and locate the user turn', async () => {
    const source =
      "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    const t = chatTemplate(source, { bosToken: '<s>', system: 'Be terse.' });
    const r = t.render({ instruction: 'Say "hi".', input: 'now', keySpans: [{ start: 4, end: 8 }] });
    expect(r.text).toBe('<s><|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nSay "hi".\n\nnow<|im_end|>\n<|im_start|>assistant\n');
    expect(r.ranges.map((x) => r.text.slice(x.start, x.end))).toEqual(['Say "hi".', 'now']);
    expect(r.text.slice(r.keyRanges[0].start, r.keyRanges[0].end)).toBe('"hi"');
    expect(t.addSpecialTokens).toBe(false);
    expect(() => chatTemplate('{% for m in messages %}{{ m.content | upper }}{% endfor %}').render({ instruction: 'a', input: '' })).toThrow(/does not carry the user message verbatim/);
    expect(() => chatTemplate('{% for %}')).toThrow(InputError);

    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: source, bos_token: { content: '<B>', special: true } }));
    const loaded = await loadPromptTemplate(dir);
    expect(loaded.render({ instruction: 'x', input: '' }).text).toBe('<B><|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'T{{ messages[0].content }}' }, { name: 'default', template: 'D{{ messages[0].content }}' }] }));
    expect((await loadPromptTemplate(dir)).render({ instruction: 'x', input: '' }).text).toBe('Dx');
    expect((await loadPromptTemplate(join(dir, 'no-such-model'))).name).toBe('superni');
  });
});

describe('tokenised prompts', () => {
  it('byte tokenizer: same tokens and weights as tokenizeExample, a segment and key flag per byte', () => {
    const tok = new ByteTokenizer();
    const ex = { instruction: 'Réponds "oui".', input: 'ok?', output: 'oui' };
    const t = tokenizePrompt(tok, superniTemplate(), { ...ex, keySpans: [{ start: 8, end: 13 }] }, ex.output)!;
    const ref = tokenizeExample(tok, ex, 1000)!;
    expect(t.tokens).toEqual(ref.tokens);
    expect(t.weights).toEqual(ref.weights);
    // bytes: <s>, 'Definition: ' (12), instruction (15 bytes: é is two), '\n\n', 'Input: ' (7), 'ok?' (3), '\n', 'Output: ' (8), 'oui' + </s>
    const expected = [
      ...Array(1 + 12).fill(C.template),
      ...Array(15).fill(C.instruction),
      ...Array(2 + 7).fill(C.template),
      ...Array(3).fill(C.input),
      ...Array(1 + 8).fill(C.template),
      ...Array(4).fill(C.response),
    ];
    expect(Array.from(t.segments)).toEqual(expected);
    const key = Array.from(t.keyMask).flatMap((k, i) => (k ? [i] : []));
    // '"oui"' is characters 8..12 of the instruction = bytes 9..13 of it (é takes two), after 13 leading tokens
    expect(key).toEqual([22, 23, 24, 25, 26]);
    expect(tok.decode(t.tokens.filter((_, i) => t.keyMask[i]))).toBe('"oui"');
    expect(t.promptLength).toBe(ref.tokens.length - 4);
    expect(tokenizePrompt(tok, superniTemplate(), ex, ex.output, { maxLength: 10 })).toBeNull();
  });

  it('a token straddling two segments takes its first character\'s segment; any overlap sets the key flag', () => {
    const tok = new PairTokenizer();
    // text 'abc|de' → tokens 'ab' 'c|' 'de'
    const t = tokenizePrompt(tok, userTemplate('{instruction}|{input}'), { instruction: 'abc', input: 'de', keySpans: [{ start: 1, end: 2 }] }, 'xy')!;
    expect(t.tokens.map((id) => tok.decode([id], { skipSpecialTokens: false }))).toEqual(['ab', 'c|', 'de', 'xy', '</s>']);
    expect(Array.from(t.segments)).toEqual([C.instruction, C.instruction, C.input, C.response, C.response]);
    expect(Array.from(t.keyMask)).toEqual([1, 0, 0, 0, 0]);
    expect(t.weights).toEqual([0, 0, 1, 1, 0]);
  });

  it('falls back to one encoding per segment when decoding does not give the prompt back', () => {
    const tok = new PairTokenizer(true);
    // cuts at 0, 1, 2 (key), 3 (instruction end), 4 (input start), 6 → pieces 'A' 'B' 'C' '|' 'DE'
    const t = tokenizePrompt(tok, userTemplate('{instruction}|{input}'), { instruction: 'ABC', input: 'DE', keySpans: [{ start: 1, end: 2 }] }, 'xy')!;
    expect(t.tokens.slice(0, t.promptLength).map((id) => tok.decode([id]))).toEqual(['a', 'b', 'c', '|', 'de']);
    expect(Array.from(t.segments.slice(0, t.promptLength))).toEqual([C.instruction, C.instruction, C.instruction, C.template, C.input]);
    expect(Array.from(t.keyMask.slice(0, t.promptLength))).toEqual([0, 1, 0, 0, 0]);
  });
});
