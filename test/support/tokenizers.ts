/**
 * Hugging Face `tokenizer.json` documents for tests, written from the format's definition: a
 * GPT-2-style byte-level BPE whose byte b has id b, merges from id 256 on, then added tokens.
 */

/** GPT-2's byte → printable character table, written independently of the package under test. */
export function byteChars(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) chars.push(String.fromCharCode(printable(b) ? b : 256 + shifted++));
  return chars;
}

export const BYTE_LEVEL = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };

/** An added special token as tokenizer.json lists it. */
export function addedToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** A byte-level BPE tokenizer.json: byte b is id b, merge i is id 256 + i, then `added`. */
export function byteLevelTokenizerJson(options: { merges?: [string, string][]; added?: unknown[]; postProcessor?: unknown } = {}) {
  const merges = options.merges ?? [];
  const vocab: Record<string, number> = {};
  byteChars().forEach((c, b) => (vocab[c] = b));
  merges.forEach(([a, b], i) => (vocab[a + b] = 256 + i));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: options.added ?? [],
    normalizer: null,
    pre_tokenizer: BYTE_LEVEL,
    post_processor: options.postProcessor ?? BYTE_LEVEL,
    decoder: BYTE_LEVEL,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}
