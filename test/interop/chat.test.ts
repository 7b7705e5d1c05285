// Chat templates token for token as transformers applies them: two tokenizers trained with the
// `tokenizers` library and saved by transformers with a chat template (a Llama 3-style one, whose
// split pattern merges newlines with what follows and whose turns end with <|eot_id|> while EOS is
// <|end_of_text|>; a ChatML one as Qwen2 uses). kpig's generation prompt must be the ids of
// apply_chat_template(add_generation_prompt=True), its training sequence the ids of
// apply_chat_template(conversation) up to the end-of-turn token, and that token must end generation.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tokenizeExample } from '../../src/data/instructions.js';
import { buildPair } from '../../src/scoring/mask.js';
import { loadPromptTemplate, promptTokens, SEGMENT_CODES, stopTokens, tokenizePrompt } from '../../src/template/index.js';
import { loadTokenizer } from '../../src/tokenizer/index.js';
import { interopPython, runPython, scratch } from './python.js';

const python = interopPython(['tokenizers', 'transformers']);
const root = scratch('kpig-chat-');
afterAll(() => root.cleanup());

interface Case {
  instruction: string;
  input: string;
  output: string;
  prompt_ids: number[];
  conversation_ids: number[];
  conversation_text: string;
}
interface Written {
  name: string;
  dir: string;
  eot_id: number;
  eos_id: number;
  cases: Case[];
}

describe.skipIf(!python.ok)(`chat templates as transformers applies them${python.ok ? '' : ` (skipped: ${python.reason})`}`, () => {
  let written: Written[] = [];
  it('transformers writes the tokenizers and the ids of apply_chat_template', () => {
    written = (JSON.parse(runPython(python.path!, [join(__dirname, 'chat_templates.py'), root.dir])) as { tokenizers: Written[] }).tokenizers;
    expect(written.map((w) => w.name)).toEqual(['llama3-style', 'chatml']);
  });

  it.each(['llama3-style', 'chatml'])('%s: prompts, training sequences, scoring pairs and stop tokens', async (name) => {
    const w = written.find((x) => x.name === name)!;
    const tok = await loadTokenizer(w.dir);
    const template = await loadPromptTemplate(w.dir);
    expect(template.name).toMatch(/chat template/);
    // The end-of-turn token ends generation although it is not the tokenizer's EOS.
    expect(w.eot_id).not.toBe(w.eos_id);
    expect(stopTokens(tok, template)).toContain(w.eot_id);
    for (const c of w.cases) {
      const parts = { instruction: c.instruction, input: c.input };
      expect(promptTokens(tok, template, parts)).toEqual(c.prompt_ids);
      // The conversation up to and including the end-of-turn token after the answer.
      const end = c.conversation_ids.indexOf(w.eot_id, c.prompt_ids.length - 1);
      expect(end).toBeGreaterThan(0);
      const expected = c.conversation_ids.slice(0, end + 1);
      const seq = tokenizeExample(tok, c, Infinity, template)!;
      expect(seq.tokens).toEqual(expected);
      // The loss covers the answer and the end-of-turn token: the weighted targets decode to them.
      const targets = seq.tokens.filter((_, i) => i > 0 && seq.weights[i - 1] === 1);
      expect(targets[targets.length - 1]).toBe(w.eot_id);
      expect(tok.decode(targets).trim()).toBe(c.output.trim());
      const t = tokenizePrompt(tok, template, { ...parts, keySpans: [{ start: 0, end: 3 }] }, c.output)!;
      expect(t.tokens).toEqual(expected);
      const instr = t.tokens.filter((_, i) => t.segments[i] === SEGMENT_CODES.instruction);
      expect(tok.decode(instr)).toContain(c.instruction.trim().slice(3));
      expect(tok.decode(t.tokens.filter((_, i) => t.keyMask[i]))).toContain(c.instruction.slice(0, 3));
      // A scoring pair scores the answer's tokens, in the conversation's own tokenisation.
      const pair = buildPair(tok, { ...parts, keySpans: [{ start: 0, end: 3 }], output: c.output }, { template });
      expect(pair.full).toEqual(expected.slice(0, -1));
      expect(tok.decode(pair.full.slice(pair.full.length - pair.responseLen)).trim()).toBe(c.output.trim());
      expect(pair.masked.slice(pair.masked.length - pair.responseLen)).toEqual(pair.full.slice(pair.full.length - pair.responseLen));
    }
  });
});
