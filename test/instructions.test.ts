// Instruction rows from JSONL and Arrow IPC, the prompt template and response-only loss weights.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { readInstructions, renderPrompt, tokenizeExample } from '../src/data/instructions.js';
import { InputError } from '../src/errors/index.js';
import { ByteTokenizer } from '../src/tokenizer/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-rows-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('instruction data', () => {
  it('reads Arrow IPC files with a field mapping', async () => {
    const file = join(dir, 'rows.arrow');
    writeFileSync(file, tableToIPC(tableFromArrays({ prompt: ['Say hi.', 'Add.'], context: ['', '1 2'], answer: ['hi', '3'] }), 'file'));
    const rows = await readInstructions(file, { instruction: 'prompt', input: 'context', output: 'answer' });
    expect(rows).toEqual([
      { instruction: 'Say hi.', input: '', output: 'hi' },
      { instruction: 'Add.', input: '1 2', output: '3' },
    ]);
    await expect(readInstructions(file)).rejects.toThrow(/missing column\(s\) instruction, output \(columns: prompt, context, answer\)/);
    writeFileSync(join(dir, 'broken.arrow'), 'ARROW1 but not really');
    await expect(readInstructions(join(dir, 'broken.arrow'))).rejects.toBeInstanceOf(InputError);
  });

  it('reads JSONL, output lists included, and rejects bad lines with file:line', async () => {
    const file = join(dir, 'rows.jsonl');
    writeFileSync(file, '{"instruction": "A", "output": ["x", "y"]}\n\n{"instruction": "B", "input": "i", "output": "z"}\n');
    expect(await readInstructions(file)).toEqual([
      { instruction: 'A', input: '', output: 'x' },
      { instruction: 'B', input: 'i', output: 'z' },
    ]);
    writeFileSync(file, '{"instruction": "A", "output": "x"}\n{"instruction": 3, "output": "x"}\n');
    await expect(readInstructions(file)).rejects.toThrow(`${file}:2: field 'instruction' must be a string, got number`);
    writeFileSync(file, '{"instruction": "A", "output": "x"}\n{oops\n');
    await expect(readInstructions(file)).rejects.toThrow(new RegExp(`${file}:2: not valid JSON`));
    writeFileSync(file, '\n');
    await expect(readInstructions(file)).rejects.toThrow(/no rows/);
  });

  it('puts the loss on the response tokens and the EOS only', () => {
    const tok = new ByteTokenizer();
    const ex = { instruction: 'Say hi.', input: 'now', output: 'hi' };
    expect(renderPrompt(ex)).toBe('Definition: Say hi.\n\nInput: now\nOutput: ');
    const seq = tokenizeExample(tok, ex, 1000)!;
    const promptLen = tok.encode(renderPrompt(ex), { addSpecialTokens: true }).length;
    expect(seq.tokens.slice(promptLen)).toEqual([104, 105, ByteTokenizer.EOS_ID]);
    // Positions promptLen−1 .. len−2 predict 'h', 'i', EOS.
    expect(seq.weights.map((w, t) => (w ? t : -1)).filter((t) => t >= 0)).toEqual([promptLen - 1, promptLen, promptLen + 1]);
    expect(tokenizeExample(tok, ex, 10)).toBeNull();
  });
});
