import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError, ModelConfigError } from '../src/errors/index.js';
import {
  ByteTokenizer,
  HFTokenizer,
  loadTokenizer,
  writeByteTokenizer,
} from '../src/tokenizer/index.js';
import { addedToken, BYTE_LEVEL, byteChars, byteLevelTokenizerJson } from './support/tokenizers.js';

let root: string;
let dirCount = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kpig-tokenizer-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function modelDir(files: Record<string, unknown>): Promise<string> {
  const dir = join(root, `m${dirCount++}`);
  await mkdir(dir);
  for (const [name, content] of Object.entries(files)) {
    const text = typeof content === 'string' ? content : JSON.stringify(content);
    await writeFile(join(dir, name), text);
  }
  return dir;
}

// A tiny GPT-2-style byte-level BPE. Byte b has id b; the merges below get ids 256.. in order, so
// merge rank = id - 256; `<|endoftext|>` is an added special token with id 264.
const G = byteChars()[0x20]; // 'Ġ', the byte-level stand-in for a space
const MERGES: [string, string][] = [
  ['h', 'e'], // 256 he
  ['l', 'l'], // 257 ll
  ['he', 'll'], // 258 hell
  ['hell', 'o'], // 259 hello
  [G, 'w'], // 260 Ġw
  ['o', 'r'], // 261 or
  [`${G}w`, 'or'], // 262 Ġwor
  ['l', 'd'], // 263 ld
];
const EOT = 264;

function tinyTokenizerJson(postProcessor: unknown = BYTE_LEVEL, extraAdded: unknown[] = []) {
  return byteLevelTokenizerJson({ merges: MERGES, added: [addedToken(EOT, '<|endoftext|>'), ...extraAdded], postProcessor });
}

// A LLaMA-style template that puts `<s>` (id 265) before the text.
const BOS_TOKEN = addedToken(265, '<s>');
const BOS_TEMPLATE = {
  type: 'TemplateProcessing',
  single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
  pair: [
    { SpecialToken: { id: '<s>', type_id: 0 } },
    { Sequence: { id: 'A', type_id: 0 } },
    { Sequence: { id: 'B', type_id: 1 } },
  ],
  special_tokens: { '<s>': { id: '<s>', ids: [265], tokens: ['<s>'] } },
};

const SAMPLES = [
  '',
  'hello world',
  'Classify: positive or negative?',
  'héllo wörld — naïve café',
  '日本語のテキスト',
  'emoji 👋🏽 and 👨‍👩‍👧 family',
  '\uFEFFstarts with a BOM',
  'tabs\tand\nnewlines\r\n  spaces   ',
  'a . b , c ! don \'t',
];

describe('ByteTokenizer', () => {
  const tok = new ByteTokenizer();

  it('has the fixed byte layout', () => {
    expect(tok.kind).toBe('byte');
    expect(tok.vocabSize).toBe(259);
    expect(tok.bosId).toBe(256);
    expect(tok.eosIds).toEqual([257]);
    expect(tok.toJSON()).toEqual({
      type: 'byte',
      version: 1,
      bos_token_id: 256,
      eos_token_id: 257,
      pad_token_id: 258,
      vocab_size: 259,
    });
  });

  it('encodes UTF-8 bytes, with BOS only when asked', () => {
    expect(tok.encode('hé')).toEqual([0x68, 0xc3, 0xa9]);
    expect(tok.encode('🙂')).toEqual([0xf0, 0x9f, 0x99, 0x82]);
    expect(tok.encode('hé', { addSpecialTokens: true })).toEqual([256, 0x68, 0xc3, 0xa9]);
    expect(tok.encode('<s>')).toEqual([0x3c, 0x73, 0x3e]);
    expect(tok.encode('')).toEqual([]);
  });

  it.each(SAMPLES)('round-trips %j', (text) => {
    expect(tok.decode(tok.encode(text))).toBe(text);
    expect(tok.decode(tok.encode(text, { addSpecialTokens: true }))).toBe(text);
  });

  it('skips special tokens by default and names them on request', () => {
    const ids = [256, 0x68, 0x69, 257, 258];
    expect(tok.decode(ids)).toBe('hi');
    expect(tok.decode(ids, { skipSpecialTokens: false })).toBe('<s>hi</s><pad>');
  });

  it('decodes invalid UTF-8 to U+FFFD like TextDecoder', () => {
    const reference = (bytes: number[]) => new TextDecoder().decode(new Uint8Array(bytes));
    const cases = [
      [0xff],
      [0x68, 0xe2, 0x82],
      [0xc3, 0x28],
      [0xf0, 0x9f, 0x99],
      [0xed, 0xa0, 0x80],
      [0x80, 0x41],
    ];
    for (const bytes of cases) {
      expect(tok.decode(bytes)).toBe(reference(bytes));
      expect(tok.decode(bytes)).toContain('\uFFFD');
    }
    // A lone surrogate cannot be encoded; TextEncoder substitutes U+FFFD.
    expect(tok.encode('\uD800')).toEqual([0xef, 0xbf, 0xbd]);
  });

  it('splits byte runs at kept special tokens, joins them across skipped ones', () => {
    const ids = [0xe2, 0x82, 257, 0xac];
    expect(tok.decode(ids)).toBe('€');
    expect(tok.decode(ids, { skipSpecialTokens: false })).toBe('\uFFFD</s>\uFFFD');
  });

  it('accepts typed arrays and rejects ids outside the id space', () => {
    expect(tok.decode(Int32Array.from([0x6f, 0x6b]))).toBe('ok');
    expect(() => tok.decode([259])).toThrow(InputError);
    expect(() => tok.decode([-1])).toThrow(/index 0/);
    expect(() => tok.decode([65, 1.5])).toThrow(/index 1/);
  });

  it('validates its descriptor', () => {
    expect(ByteTokenizer.fromJSON(tok.toJSON(), 'x.json')).toBeInstanceOf(ByteTokenizer);
    expect(() => ByteTokenizer.fromJSON({ ...tok.toJSON(), type: 'bpe' }, 'x.json')).toThrow(
      /x\.json: "type" is "bpe"/,
    );
    expect(() => ByteTokenizer.fromJSON({ ...tok.toJSON(), vocab_size: 300 }, 'x.json')).toThrow(
      ModelConfigError,
    );
    expect(() => ByteTokenizer.fromJSON([], 'x.json')).toThrow(/expected a JSON object/);
  });
});

describe('HFTokenizer (generated byte-level BPE)', () => {
  let tok: HFTokenizer;
  beforeAll(async () => {
    const dir = await modelDir({
      'tokenizer.json': tinyTokenizerJson(),
      'config.json': { bos_token_id: EOT, eos_token_id: EOT },
    });
    tok = (await loadTokenizer(dir)) as HFTokenizer;
  });

  it('loads with the ids of config.json', () => {
    expect(tok).toBeInstanceOf(HFTokenizer);
    expect(tok.kind).toBe('hf');
    expect(tok.vocabSize).toBe(265);
    expect(tok.bosId).toBe(EOT);
    expect(tok.eosIds).toEqual([EOT]);
  });

  it('adds the eos ids of generation_config.json, which Hugging Face generation stops at', async () => {
    const dir = await modelDir({
      'tokenizer.json': tinyTokenizerJson(),
      'config.json': { bos_token_id: EOT, eos_token_id: EOT },
      'generation_config.json': { eos_token_id: [EOT, 7, 9] },
    });
    expect((await loadTokenizer(dir)).eosIds).toEqual([EOT, 7, 9]);
    const bad = await modelDir({ 'tokenizer.json': tinyTokenizerJson(), 'generation_config.json': { eos_token_id: 'x' } });
    await expect(loadTokenizer(bad)).rejects.toThrow(/generation_config\.json: eos_token_id must be a non-negative integer/);
  });

  it('applies the merges in rank order', () => {
    // hello: h e l l o → he l l o → he ll o → hell o → hello
    // Ġworld: Ġ w o r l d → Ġw o r l d → Ġw or l d → Ġwor l d → Ġwor ld
    expect(tok.encode('hello world')).toEqual([259, 262, 263]);
    // held: h e l d → he l d → he ld ("l l" never applies)
    expect(tok.encode('held')).toEqual([256, 263]);
    expect(tok.encode('hello!')).toEqual([259, 0x21]);
    expect(tok.encode('wor')).toEqual([0x77, 261]);
    expect(tok.encode('hé')).toEqual([0x68, 0xc3, 0xa9]);
  });

  it('maps the special-token string to its id and adds nothing by default', () => {
    expect(tok.encode('hello world<|endoftext|>')).toEqual([259, 262, 263, EOT]);
    // The ByteLevel post-processor adds no tokens, as for GPT-2.
    expect(tok.encode('hello', { addSpecialTokens: true })).toEqual([259]);
  });

  it.each(SAMPLES)('round-trips %j', (text) => {
    expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('skips special tokens by default and keeps them on request', () => {
    const ids = [259, EOT, 262, 263];
    expect(tok.decode(ids)).toBe('hello world');
    expect(tok.decode(ids, { skipSpecialTokens: false })).toBe('hello<|endoftext|> world');
  });

  it('decodes invalid UTF-8 to U+FFFD and rejects unknown ids', () => {
    expect(tok.decode([0xf0, 0x9f])).toBe('\uFFFD');
    expect(tok.decode([])).toBe('');
    expect(tok.decode(Uint32Array.from([259]))).toBe('hello');
    expect(() => tok.decode([265])).toThrow(InputError);
    expect(() => tok.decode([-3])).toThrow(/index 0/);
  });
});

describe('HFTokenizer special-token rules', () => {
  it('adds BOS from a TemplateProcessing post-processor', async () => {
    const dir = await modelDir({
      'tokenizer.json': tinyTokenizerJson(BOS_TEMPLATE, [BOS_TOKEN]),
      'tokenizer_config.json': { bos_token: '<s>', eos_token: '<|endoftext|>' },
    });
    const tok = await loadTokenizer(dir);
    expect(tok.bosId).toBe(265);
    expect(tok.eosIds).toEqual([EOT]);
    expect(tok.encode('hello')).toEqual([259]);
    expect(tok.encode('hello', { addSpecialTokens: true })).toEqual([265, 259]);
    expect(tok.decode([265, 259])).toBe('hello');
    expect(tok.decode([265, 259], { skipSpecialTokens: false })).toBe('<s>hello');
  });

  it('lets add_bos_token / add_eos_token override the template', async () => {
    const dir = await modelDir({
      'tokenizer.json': tinyTokenizerJson(BOS_TEMPLATE, [BOS_TOKEN]),
      'tokenizer_config.json': {
        add_bos_token: false,
        add_eos_token: true,
        bos_token: { __type: 'AddedToken', content: '<s>', special: true },
        eos_token: { __type: 'AddedToken', content: '<|endoftext|>', special: true },
      },
    });
    const tok = await loadTokenizer(dir);
    expect(tok.bosId).toBe(265);
    expect(tok.encode('hello', { addSpecialTokens: true })).toEqual([259, EOT]);
  });

  it('adds BOS on add_bos_token even when the post-processor does not', async () => {
    const dir = await modelDir({
      'tokenizer.json': tinyTokenizerJson(),
      'tokenizer_config.json': { add_bos_token: true, bos_token: '<|endoftext|>' },
    });
    const tok = await loadTokenizer(dir);
    expect(tok.encode('hello', { addSpecialTokens: true })).toEqual([EOT, 259]);
  });

  it('treats bos_token: null as "no BOS" and merges eos ids with config.json', async () => {
    const dir = await modelDir({
      'tokenizer.json': tinyTokenizerJson(BOS_TEMPLATE, [BOS_TOKEN]),
      'tokenizer_config.json': { bos_token: null, eos_token: '<s>' },
      'config.json': { bos_token_id: EOT, eos_token_id: [EOT, 265] },
    });
    const tok = await loadTokenizer(dir);
    expect(tok.bosId).toBeNull();
    expect(tok.eosIds).toEqual([265, EOT]);
  });

  it('rejects tokens and ids the vocabulary does not have', async () => {
    const unknownToken = await modelDir({
      'tokenizer.json': tinyTokenizerJson(),
      'tokenizer_config.json': { eos_token: '<|im_end|>' },
    });
    await expect(loadTokenizer(unknownToken)).rejects.toThrow(
      /tokenizer_config\.json: eos_token .*<\|im_end\|>/,
    );
    const badConfigId = await modelDir({
      'tokenizer.json': tinyTokenizerJson(),
      'config.json': { eos_token_id: 9999 },
    });
    await expect(loadTokenizer(badConfigId)).rejects.toThrow(/config\.json: eos_token_id 9999/);
    const unsetBos = await modelDir({
      'tokenizer.json': tinyTokenizerJson(),
      'tokenizer_config.json': { add_bos_token: true },
    });
    await expect(loadTokenizer(unsetBos)).rejects.toThrow(/add_bos_token is true but no bos_token/);
  });
});

describe('loadTokenizer', () => {
  it('prefers tokenizer.json over kpig-tokenizer.json', async () => {
    const dir = await modelDir({
      'tokenizer.json': tinyTokenizerJson(),
      'kpig-tokenizer.json': new ByteTokenizer().toJSON(),
    });
    expect((await loadTokenizer(dir)).kind).toBe('hf');
  });

  it('writes and loads the byte tokenizer atomically', async () => {
    const dir = join(root, 'written', 'model');
    await writeByteTokenizer(dir);
    expect(await readdir(dir)).toEqual(['kpig-tokenizer.json']);
    expect(JSON.parse(await readFile(join(dir, 'kpig-tokenizer.json'), 'utf8'))).toEqual({
      type: 'byte',
      version: 1,
      bos_token_id: 256,
      eos_token_id: 257,
      pad_token_id: 258,
      vocab_size: 259,
    });
    const tok = await loadTokenizer(dir);
    expect(tok).toBeInstanceOf(ByteTokenizer);
    expect(tok.decode(tok.encode('ok 👍'))).toBe('ok 👍');
  });

  it('adds config.json eos ids to the byte tokenizer', async () => {
    const dir = await modelDir({
      'kpig-tokenizer.json': new ByteTokenizer().toJSON(),
      'config.json': { eos_token_id: [257, 10] },
    });
    expect((await loadTokenizer(dir)).eosIds).toEqual([257, 10]);
  });

  it('names the folder and both files when neither exists', async () => {
    const dir = await modelDir({ 'config.json': {} });
    const err = await loadTokenizer(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelConfigError);
    const { message } = err as ModelConfigError;
    expect(message).toContain(dir);
    expect(message).toContain('tokenizer.json');
    expect(message).toContain('kpig-tokenizer.json');
    expect(message).toContain('writeByteTokenizer');
    await expect(loadTokenizer(join(root, 'nowhere'))).rejects.toThrow(/folder does not exist/);
  });

  it('reports malformed JSON with the file and position, without falling back', async () => {
    const dir = await modelDir({
      'tokenizer.json': '{\n  "model": {,\n}',
      'kpig-tokenizer.json': new ByteTokenizer().toJSON(),
    });
    const err = await loadTokenizer(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelConfigError);
    expect((err as Error).message).toContain(join(dir, 'tokenizer.json'));
    expect((err as Error).message).toMatch(/position 14 \(line 2, column 13\)/);
  });

  it('reports a byte descriptor of the wrong type', async () => {
    const dir = await modelDir({ 'kpig-tokenizer.json': { type: 'sentencepiece', version: 1 } });
    await expect(loadTokenizer(dir)).rejects.toThrow(
      new RegExp(`kpig-tokenizer\\.json: "type" is "sentencepiece"`),
    );
  });

  it('reports a tokenizer.json the package cannot load', async () => {
    const dir = await modelDir({ 'tokenizer.json': { model: { type: 'Nonsense' } } });
    const err = await loadTokenizer(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelConfigError);
    expect((err as Error).message).toContain('tokenizer.json');
  });

  it('reports malformed config.json ids', async () => {
    const dir = await modelDir({
      'kpig-tokenizer.json': new ByteTokenizer().toJSON(),
      'config.json': { eos_token_id: ['</s>'] },
    });
    await expect(loadTokenizer(dir)).rejects.toThrow(
      /config\.json: eos_token_id must be a non-negative integer/,
    );
  });
});
