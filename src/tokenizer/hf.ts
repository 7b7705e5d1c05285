/**
 * Hugging Face tokenizers (`tokenizer.json` + `tokenizer_config.json`) through the pure-JS package
 * `@huggingface/tokenizers`, with the special-token rules of `transformers` layered on top: the
 * package ignores `add_bos_token` / `add_eos_token`, knows no bos/eos ids, throws on an empty
 * decode and cleans up tokenization spaces by default (which breaks byte-level round trips).
 */
import { Tokenizer as HFLibTokenizer } from '@huggingface/tokenizers';
import { InputError, ModelConfigError } from '../errors/index.js';
import type { ConfigTokenIds, DecodeOptions, EncodeOptions, Tokenizer } from './index.js';

/** Where an {@link HFTokenizer} comes from; paths are used only in error messages. */
export interface HFTokenizerOptions {
  /** Path of the `tokenizer.json` the first constructor argument was parsed from. */
  source: string;
  /** Parsed `tokenizer_config.json`, when the model has one. */
  tokenizerConfig?: unknown;
  /** Path of that `tokenizer_config.json`. */
  tokenizerConfigSource?: string;
  /** bos/eos ids from the model's `config.json`. */
  configIds?: ConfigTokenIds;
}

// Stands in for the text while the post-processor's template is read off once at load time; the
// NUL bytes keep it from colliding with a real token.
const SEQUENCE_SENTINEL = '\u0000kpig:sequence\u0000';

/**
 * A Hugging Face tokenizer. `bosId` comes from `tokenizer_config.json`'s `bos_token` (an explicit
 * `null` there means "no BOS"), else from config.json's `bos_token_id`. `eosIds` is the
 * tokenizer's `eos_token` followed by every config.json `eos_token_id` not already listed, since
 * instruct models end turns on several ids. `encode(..., { addSpecialTokens: true })` wraps the
 * text the way tokenizer.json's post-processor does, except that explicit `add_bos_token` /
 * `add_eos_token` flags in tokenizer_config.json win, as they do for `LlamaTokenizerFast`.
 *
 * @example
 * const tok = new HFTokenizer(JSON.parse(tokenizerJsonText), {
 *   source: '/models/gpt2/tokenizer.json',
 *   configIds: { eosIds: [50256], source: '/models/gpt2/config.json' },
 * });
 * const ids = tok.encode('Hello world'); // [15496, 995]
 * tok.decode(ids);                       // 'Hello world'
 */
export class HFTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosIds: readonly number[];
  readonly #tok: HFLibTokenizer;
  readonly #prefix: readonly number[];
  readonly #suffix: readonly number[];
  readonly #cleanUpSpaces: boolean;

  /**
   * @param tokenizerJson the parsed `tokenizer.json`
   * @throws ModelConfigError naming the file when either file cannot be used
   * @example
   * const tok = new HFTokenizer(tokenizerJson, { source: 'tokenizer.json', tokenizerConfig });
   */
  constructor(tokenizerJson: unknown, options: HFTokenizerOptions) {
    const { source, configIds } = options;
    const configSource = options.tokenizerConfigSource ?? 'tokenizer_config.json';
    if (!isRecord(tokenizerJson)) {
      throw new ModelConfigError(
        `${source}: expected a JSON object, got ${describe(tokenizerJson)}`,
      );
    }
    const rawConfig = options.tokenizerConfig ?? {};
    if (!isRecord(rawConfig)) {
      throw new ModelConfigError(
        `${configSource}: expected a JSON object, got ${describe(rawConfig)}`,
      );
    }
    const config = flattenTokenObjects(rawConfig, configSource);
    try {
      this.#tok = new HFLibTokenizer(tokenizerJson, config);
    } catch (err) {
      throw new ModelConfigError(
        `${source}: @huggingface/tokenizers cannot load it: ${(err as Error).message}`,
        { cause: err },
      );
    }
    // Added tokens are written into the model's id → token array, so its length spans them too.
    this.vocabSize = this.#tok.model?.vocab.length ?? 0;

    const idOf = (token: string, where: string): number => {
      const id = this.#tok.token_to_id(token);
      if (id === undefined) {
        throw new ModelConfigError(
          `${where} names token ${JSON.stringify(token)}, which is not in the vocabulary`,
        );
      }
      return id;
    };
    const checkConfigId = (id: number, field: string): number => {
      if (!this.#known(id)) {
        throw new ModelConfigError(
          `${configIds?.source}: ${field} ${id} is not a token id of ${source} ` +
            `(vocab size ${this.vocabSize})`,
        );
      }
      return id;
    };

    const bosToken = config.bos_token as string | null | undefined;
    if (bosToken === undefined) {
      const id = configIds?.bosId;
      this.bosId = id === undefined || id === null ? null : checkConfigId(id, 'bos_token_id');
    } else {
      this.bosId = bosToken === null ? null : idOf(bosToken, `${configSource}: bos_token`);
    }

    const eosToken = config.eos_token as string | null | undefined;
    const eosTokenId =
      typeof eosToken === 'string' ? idOf(eosToken, `${configSource}: eos_token`) : null;
    const eos = eosTokenId === null ? [] : [eosTokenId];
    for (const id of configIds?.eosIds ?? []) {
      if (!eos.includes(checkConfigId(id, 'eos_token_id'))) eos.push(id);
    }
    this.eosIds = eos;

    let prefix: number[] = [];
    let suffix: number[] = [];
    const post = this.#tok.post_processor;
    if (post) {
      const { tokens }: { tokens: string[] } = post([SEQUENCE_SENTINEL], null, true);
      const at = tokens.indexOf(SEQUENCE_SENTINEL);
      if (at < 0) {
        throw new ModelConfigError(`${source}: the post_processor drops the input text`);
      }
      prefix = tokens.slice(0, at).map((t) => idOf(t, `${source}: post_processor`));
      suffix = tokens.slice(at + 1).map((t) => idOf(t, `${source}: post_processor`));
    }
    const addBos = flag(config, 'add_bos_token', configSource);
    if (addBos !== undefined) {
      prefix = prefix.filter((id) => id !== this.bosId);
      if (addBos) prefix.unshift(required(this.bosId, 'add_bos_token', 'bos_token', configSource));
    }
    const addEos = flag(config, 'add_eos_token', configSource);
    if (addEos !== undefined) {
      suffix = suffix.filter((id) => id !== eosTokenId);
      if (addEos) suffix.push(required(eosTokenId, 'add_eos_token', 'eos_token', configSource));
    }
    this.#prefix = prefix;
    this.#suffix = suffix;
    // transformers now defaults to false; the package's default (true) rewrites " ." to "." etc.
    this.#cleanUpSpaces = flag(config, 'clean_up_tokenization_spaces', configSource) ?? false;
  }

  /**
   * Token ids of `text`. Special-token strings inside the text (e.g. `<|endoftext|>`) become their
   * ids, as in `transformers`; `addSpecialTokens` adds the template's bos/eos around the text.
   *
   * @example
   * tok.encode('hi', { addSpecialTokens: true }); // [bosId, ...ids of 'hi'] for a Llama tokenizer
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const { ids } = this.#tok.encode(text, { add_special_tokens: false });
    return options.addSpecialTokens ? [...this.#prefix, ...ids, ...this.#suffix] : ids;
  }

  /**
   * Text of `ids`; special tokens are dropped unless `skipSpecialTokens` is false. Invalid UTF-8
   * byte runs decode to U+FFFD.
   *
   * @throws InputError for an id that is not in the vocabulary
   * @example
   * tok.decode(tok.encode('Hello world')); // 'Hello world'
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const list = new Array<number>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!this.#known(id)) {
        throw new InputError(
          `token id ${id} at index ${i} is not in the vocabulary (size ${this.vocabSize})`,
        );
      }
      list[i] = id;
    }
    if (list.length === 0) return '';
    return this.#tok.decode(list, {
      skip_special_tokens: options.skipSpecialTokens ?? true,
      clean_up_tokenization_spaces: this.#cleanUpSpaces,
    });
  }

  // Ids below vocabSize can still be holes when a tokenizer.json skips ids.
  #known(id: number): boolean {
    return (
      Number.isInteger(id) &&
      id >= 0 &&
      id < this.vocabSize &&
      this.#tok.id_to_token(id) !== undefined
    );
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : typeof value;
}

const SPECIAL_TOKEN_KEYS = [
  'bos_token',
  'eos_token',
  'unk_token',
  'sep_token',
  'pad_token',
  'cls_token',
  'mask_token',
] as const;

/**
 * Older tokenizer_config.json files store special tokens as AddedToken objects
 * (`{"__type": "AddedToken", "content": "<s>", ...}`); the package and this module expect strings.
 */
function flattenTokenObjects(
  config: Record<string, unknown>,
  source: string,
): Record<string, unknown> {
  const content = (value: unknown, key: string): unknown => {
    if (!isRecord(value)) return value;
    if (typeof value.content !== 'string') {
      throw new ModelConfigError(`${source}: ${key} is an object without a string "content"`);
    }
    return value.content;
  };
  const out: Record<string, unknown> = { ...config };
  for (const key of SPECIAL_TOKEN_KEYS) {
    if (!(key in config)) continue;
    out[key] = content(config[key], key);
    if (out[key] !== null && typeof out[key] !== 'string') {
      throw new ModelConfigError(
        `${source}: ${key} must be a string or null, got ${describe(config[key])}`,
      );
    }
  }
  if (Array.isArray(config.additional_special_tokens)) {
    out.additional_special_tokens = config.additional_special_tokens.map((v) =>
      content(v, 'additional_special_tokens'),
    );
  }
  return out;
}

function flag(config: Record<string, unknown>, key: string, source: string): boolean | undefined {
  const value = config[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') {
    throw new ModelConfigError(
      `${source}: ${key} must be true or false, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function required(id: number | null, flagName: string, tokenName: string, source: string): number {
  if (id === null) {
    throw new ModelConfigError(`${source}: ${flagName} is true but no ${tokenName} is set`);
  }
  return id;
}
