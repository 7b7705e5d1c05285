/**
 * Tokenizers: the interface every stage codes against, and loading one from a model folder, either
 * a Hugging Face `tokenizer.json` or kpig's built-in byte tokenizer (`kpig-tokenizer.json`).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KpigIOError, ModelConfigError } from '../errors/index.js';
import { ByteTokenizer } from './byte.js';
import { HFTokenizer } from './hf.js';

export { ByteTokenizer, type ByteTokenizerDescriptor } from './byte.js';
export { HFTokenizer, type HFTokenizerOptions } from './hf.js';

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add the model's special tokens around the text (BOS for LLaMA-style models); default false. */
  addSpecialTokens?: boolean;
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (default true); when false they appear as their names, e.g. `</s>`. */
  skipSpecialTokens?: boolean;
}

/** bos/eos ids a model's `config.json` declares, with that file's path for error messages. */
export interface ConfigTokenIds {
  bosId?: number | null;
  eosIds?: readonly number[];
  source: string;
}

/** What every stage needs from a tokenizer; both kinds behave the same way. */
export interface Tokenizer {
  readonly kind: 'byte' | 'hf';
  /** Size of the tokenizer's id space, special and added tokens included. */
  readonly vocabSize: number;
  readonly bosId: number | null;
  /** Ids that end generation. */
  readonly eosIds: readonly number[];
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string;
}

const HF_FILE = 'tokenizer.json';
const HF_CONFIG_FILE = 'tokenizer_config.json';
const BYTE_FILE = 'kpig-tokenizer.json';
const MODEL_CONFIG_FILE = 'config.json';
/** transformers' generation defaults; its eos_token_id (often a list: Llama 3's <|eot_id|> too) ends generation as Hugging Face's generate does. */
const GENERATION_CONFIG_FILE = 'generation_config.json';

/** config.json's ids, with generation_config.json's eos ids added and its bos id used where config.json has none. */
function mergeIds(model: ConfigTokenIds | undefined, generation: ConfigTokenIds | undefined): ConfigTokenIds | undefined {
  if (!generation) return model;
  if (!model) return generation;
  return { bosId: model.bosId ?? generation.bosId, eosIds: [...new Set([...(model.eosIds ?? []), ...(generation.eosIds ?? [])])], source: `${model.source} and ${generation.source}` };
}

/**
 * Loads the tokenizer of a model folder: `tokenizer.json` (+ `tokenizer_config.json`) when present,
 * else `kpig-tokenizer.json`. `config.json` and `generation_config.json`, when present, supply
 * bos/eos ids the tokenizer files leave out, and extra ids that end generation.
 *
 * @throws ModelConfigError when the folder has neither file, or a file is malformed
 * @throws KpigIOError when a file exists but cannot be read
 * @example
 * const tok = await loadTokenizer('/models/Qwen2.5-0.5B');
 * const ids = tok.encode('Classify the sentiment.', { addSpecialTokens: true });
 * console.log(tok.decode(ids), tok.eosIds);
 */
export async function loadTokenizer(modelDir: string): Promise<Tokenizer> {
  const configIds = mergeIds(await readConfigIds(join(modelDir, MODEL_CONFIG_FILE)), await readConfigIds(join(modelDir, GENERATION_CONFIG_FILE)));

  const hfPath = join(modelDir, HF_FILE);
  const hfText = await readIfExists(hfPath);
  if (hfText !== null) {
    const configPath = join(modelDir, HF_CONFIG_FILE);
    const configText = await readIfExists(configPath);
    return new HFTokenizer(parseJson(hfText, hfPath), {
      source: hfPath,
      tokenizerConfig: configText === null ? undefined : parseJson(configText, configPath),
      tokenizerConfigSource: configPath,
      configIds,
    });
  }

  const bytePath = join(modelDir, BYTE_FILE);
  const byteText = await readIfExists(bytePath);
  if (byteText !== null) {
    return ByteTokenizer.fromJSON(parseJson(byteText, bytePath), bytePath, configIds);
  }

  const folderMissing = await stat(modelDir).then(
    () => false,
    () => true,
  );
  throw new ModelConfigError(
    `no tokenizer in ${modelDir}${folderMissing ? ' (the folder does not exist)' : ''}: tried ` +
      `${HF_FILE} (Hugging Face) and ${BYTE_FILE} (kpig byte tokenizer). Copy ${HF_FILE} and ` +
      `${HF_CONFIG_FILE} from the model's Hugging Face repository into the folder, or, for a ` +
      `model kpig created with the byte tokenizer, call writeByteTokenizer() on the folder.`,
  );
}

/**
 * Writes the byte tokenizer descriptor `kpig-tokenizer.json` into a model folder (created if
 * needed), atomically, so that `loadTokenizer` finds it.
 *
 * @throws KpigIOError when the file cannot be written
 * @example
 * await writeByteTokenizer('/models/tiny-byte');
 * const tok = await loadTokenizer('/models/tiny-byte'); // a ByteTokenizer
 */
export async function writeByteTokenizer(modelDir: string): Promise<void> {
  const path = join(modelDir, BYTE_FILE);
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    await mkdir(modelDir, { recursive: true });
    await writeFile(tmp, JSON.stringify(new ByteTokenizer().toJSON(), null, 2) + '\n');
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new KpigIOError(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A model folder's `tokenizer_config.json` as an object ({} when the folder has none).
 *
 * @throws ModelConfigError when it is not valid JSON (naming the line and column)
 * @example
 * const { chat_template, eos_token } = await readTokenizerConfig('/models/Qwen2.5-0.5B-Instruct');
 */
export async function readTokenizerConfig(modelDir: string): Promise<Record<string, unknown>> {
  const path = join(modelDir, HF_CONFIG_FILE);
  const text = await readIfExists(path);
  return text === null ? {} : (parseJson(text, path) as Record<string, unknown>);
}

/** A file's text, or null when it does not exist. */
export async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

function parseJson(text: string, path: string): unknown {
  try {
    // Editors on Windows may prepend a BOM, which JSON.parse rejects.
    return JSON.parse(text.startsWith('\uFEFF') ? text.slice(1) : text);
  } catch (err) {
    const message = (err as Error).message;
    const at = /at position (\d+)/.exec(message);
    let where = '';
    if (at) {
      const before = text.slice(0, Number(at[1]));
      const line = before.split('\n').length;
      where = ` (line ${line}, column ${before.length - before.lastIndexOf('\n')})`;
    }
    throw new ModelConfigError(`${path}: not valid JSON: ${message}${where}`, { cause: err });
  }
}

async function readConfigIds(path: string): Promise<ConfigTokenIds | undefined> {
  const text = await readIfExists(path);
  if (text === null) return undefined;
  const json = parseJson(text, path);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelConfigError(`${path}: expected a JSON object`);
  }
  const { bos_token_id: bos, eos_token_id: eos } = json as Record<string, unknown>;
  const tokenId = (value: unknown, field: string): number => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
      throw new ModelConfigError(
        `${path}: ${field} must be a non-negative integer, got ${JSON.stringify(value)}`,
      );
    }
    return value;
  };
  const eosList = eos === undefined || eos === null ? [] : Array.isArray(eos) ? eos : [eos];
  return {
    bosId: bos === undefined || bos === null ? null : tokenId(bos, 'bos_token_id'),
    eosIds: eosList.map((id) => tokenId(id, 'eos_token_id')),
    source: path,
  };
}
