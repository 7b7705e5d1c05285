/**
 * The built-in byte-level tokenizer for models kpig creates itself. One id per UTF-8 byte plus
 * three special tokens: any text encodes without a trained vocabulary, and any id sequence decodes.
 */
import { InputError, ModelConfigError } from '../errors/index.js';
import type { ConfigTokenIds, DecodeOptions, EncodeOptions, Tokenizer } from './index.js';

/** The descriptor written to a model folder as `kpig-tokenizer.json`. */
export interface ByteTokenizerDescriptor {
  type: 'byte';
  version: 1;
  bos_token_id: 256;
  eos_token_id: 257;
  pad_token_id: 258;
  vocab_size: 259;
}

const DESCRIPTOR: ByteTokenizerDescriptor = {
  type: 'byte',
  version: 1,
  bos_token_id: 256,
  eos_token_id: 257,
  pad_token_id: 258,
  vocab_size: 259,
};

const SPECIAL_NAMES = ['<s>', '</s>', '<pad>'] as const;

const utf8Encoder = new TextEncoder();
// Not fatal: invalid byte runs (a model can emit any byte) become U+FFFD instead of throwing.
// ignoreBOM: a text that starts with U+FEFF must survive the round trip.
const utf8Decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/**
 * Byte-level tokenizer: ids 0..255 are UTF-8 bytes, 256 = `<s>`, 257 = `</s>`, 258 = `<pad>`.
 *
 * @example
 * const tok = new ByteTokenizer();
 * tok.encode('hé', { addSpecialTokens: true }); // [256, 104, 195, 169]
 * tok.decode([256, 104, 195, 169]);              // 'hé'
 * tok.decode([256, 104], { skipSpecialTokens: false }); // '<s>h'
 */
export class ByteTokenizer implements Tokenizer {
  static readonly BOS_ID = DESCRIPTOR.bos_token_id;
  static readonly EOS_ID = DESCRIPTOR.eos_token_id;
  static readonly PAD_ID = DESCRIPTOR.pad_token_id;
  static readonly VOCAB_SIZE = DESCRIPTOR.vocab_size;

  readonly kind = 'byte' as const;
  readonly vocabSize = ByteTokenizer.VOCAB_SIZE;
  readonly bosId = ByteTokenizer.BOS_ID;
  readonly eosIds: readonly number[];

  /**
   * @param configIds ids from the model's config.json; its eos ids are added to `</s>` so that
   *   generation also stops on them. Its bos id is ignored: the byte layout fixes `<s>`.
   * @example
   * const tok = new ByteTokenizer();
   * tok.eosIds; // [257]
   */
  constructor(configIds?: ConfigTokenIds) {
    const eos: number[] = [ByteTokenizer.EOS_ID];
    for (const id of configIds?.eosIds ?? []) {
      if (!Number.isInteger(id) || id < 0 || id >= ByteTokenizer.VOCAB_SIZE) {
        throw new ModelConfigError(
          `${configIds!.source}: eos_token_id ${id} is outside the byte tokenizer's id space ` +
            `0..${ByteTokenizer.VOCAB_SIZE - 1}`,
        );
      }
      if (!eos.includes(id)) eos.push(id);
    }
    this.eosIds = eos;
  }

  /**
   * Checks a parsed `kpig-tokenizer.json` and builds the tokenizer it describes.
   *
   * @param json the parsed file content
   * @param source the file path, for error messages
   * @param configIds ids from the model's config.json, as for the constructor
   * @throws ModelConfigError when the descriptor is not the byte layout this version implements
   * @example
   * const tok = ByteTokenizer.fromJSON(JSON.parse(text), '/models/tiny/kpig-tokenizer.json');
   */
  static fromJSON(json: unknown, source: string, configIds?: ConfigTokenIds): ByteTokenizer {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new ModelConfigError(`${source}: expected a JSON object, got ${describe(json)}`);
    }
    const obj = json as Record<string, unknown>;
    if (obj.type !== DESCRIPTOR.type) {
      throw new ModelConfigError(
        `${source}: "type" is ${JSON.stringify(obj.type)}, expected "byte" ` +
          '(the only built-in tokenizer; Hugging Face tokenizers belong in tokenizer.json)',
      );
    }
    for (const key of Object.keys(DESCRIPTOR) as (keyof ByteTokenizerDescriptor)[]) {
      if (obj[key] !== DESCRIPTOR[key]) {
        throw new ModelConfigError(
          `${source}: "${key}" is ${JSON.stringify(obj[key])}, expected ${DESCRIPTOR[key]} ` +
            '(the byte tokenizer has a fixed layout)',
        );
      }
    }
    return new ByteTokenizer(configIds);
  }

  /**
   * The descriptor that `writeByteTokenizer` stores as `kpig-tokenizer.json`.
   *
   * @example
   * JSON.stringify(new ByteTokenizer()); // '{"type":"byte","version":1,...}'
   */
  toJSON(): ByteTokenizerDescriptor {
    return { ...DESCRIPTOR };
  }

  /**
   * UTF-8 bytes of `text`, preceded by `<s>` when `addSpecialTokens` is set. Lone surrogates encode
   * as U+FFFD, as `TextEncoder` does. Special-token names in the text are plain bytes, never ids.
   *
   * @example
   * new ByteTokenizer().encode('A'); // [65]
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const bytes = utf8Encoder.encode(text);
    const offset = options.addSpecialTokens ? 1 : 0;
    const ids = new Array<number>(bytes.length + offset);
    if (offset) ids[0] = ByteTokenizer.BOS_ID;
    for (let i = 0; i < bytes.length; i++) ids[i + offset] = bytes[i];
    return ids;
  }

  /**
   * UTF-8 text of the byte ids. Special ids are dropped (default) or written as their names;
   * bytes on both sides of a dropped special id decode as one run, as Hugging Face byte-level
   * decoding does.
   *
   * @throws InputError for an id outside 0..258
   * @example
   * new ByteTokenizer().decode([0xf0, 0x9f, 0x99, 0x82]); // '🙂'
   * new ByteTokenizer().decode([0xff]);                   // '\uFFFD'
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens ?? true;
    const run = new Uint8Array(ids.length);
    let n = 0;
    let text = '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= ByteTokenizer.VOCAB_SIZE) {
        throw new InputError(
          `token id ${id} at index ${i} is outside the byte tokenizer's id space ` +
            `0..${ByteTokenizer.VOCAB_SIZE - 1}`,
        );
      }
      if (id < 256) {
        run[n++] = id;
      } else if (!skip) {
        text += utf8Decoder.decode(run.subarray(0, n)) + SPECIAL_NAMES[id - 256];
        n = 0;
      }
    }
    return text + utf8Decoder.decode(run.subarray(0, n));
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : typeof value;
}
