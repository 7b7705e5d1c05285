/**
 * A client for any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama), built
 * for batch jobs that must be reproducible: every response is cached on disk under the SHA-256 of
 * the canonical request, so a rerun reads the cache and sends nothing. Timeouts, 429, 5xx, network
 * errors and malformed bodies are retried with exponential backoff; the number of requests in
 * flight is capped. A cache entry is written atomically and only for a well-formed answer.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { EndpointError, InputError } from '../errors/index.js';
import { writeJsonAtomic } from '../io/atomic.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatClientOptions {
  /** Default `KPIG_LLM_BASE_URL`, else `https://api.openai.com/v1`. */
  baseUrl?: string;
  /** Default `KPIG_LLM_MODEL`; required one way or the other. */
  model?: string;
  /** Default `KPIG_LLM_API_KEY`, else `OPENAI_API_KEY`; sent as a Bearer token, never cached. */
  apiKey?: string;
  /** Folder of cached responses; default `KPIG_LLM_CACHE`, else `.kpig-cache/llm` under the working folder; null: no cache. */
  cacheDir?: string | null;
  /** Retries after the first attempt (default 4). */
  maxRetries?: number;
  /** Per-attempt timeout in milliseconds (default 60000). */
  timeoutMs?: number;
  /** Requests in flight at once (default 4). */
  concurrency?: number;
  /** First backoff in milliseconds, doubled per retry (default 500), capped by `maxBackoffMs` (default 20000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Environment to read defaults from (default `process.env`). */
  env?: Record<string, string | undefined>;
}

export interface ChatRequestOptions {
  temperature?: number;
  maxTokens?: number;
  /** Ask the server for a JSON object (OpenAI `response_format: {type: 'json_object'}`). */
  json?: boolean;
  /**
   * Checks the answer text before it is accepted and cached: a returned reason makes the attempt
   * count as failed (retried, never cached), so a reply the caller cannot use is not frozen into the cache.
   */
  validate?: (content: string) => string | null;
  signal?: AbortSignal;
}

export interface ChatResult {
  content: string;
  /** True when the answer came from the disk cache. */
  cached: boolean;
  /** The cache key: SHA-256 of the canonical request. */
  key: string;
}

/** JSON with object keys sorted, so equal requests hash equally whatever order they were built in. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object')
    return `{${Object.keys(value)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(value);
}

class Retryable extends Error {}

/**
 * An OpenAI-compatible chat client with a disk cache, retries and a concurrency limit.
 *
 * @example
 * const llm = new ChatClient({ baseUrl: 'http://127.0.0.1:8000/v1', model: 'Qwen2.5-7B-Instruct', cacheDir: 'cache/llm' });
 * const { content } = await llm.complete([{ role: 'user', content: 'Say hi.' }]);
 */
export class ChatClient {
  readonly baseUrl: string;
  readonly model: string;
  readonly cacheDir: string | null;
  /** Counters since construction: requests sent over the network (retries included), cache hits. */
  readonly stats = { sent: 0, cacheHits: 0, retries: 0 };
  readonly #apiKey: string | undefined;
  readonly #maxRetries: number;
  readonly #timeoutMs: number;
  readonly #backoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #concurrency: number;
  #active = 0;
  readonly #waiting: (() => void)[] = [];
  readonly #inFlight = new Map<string, Promise<ChatResult>>();

  constructor(options: ChatClientOptions = {}) {
    const env = options.env ?? process.env;
    this.baseUrl = (options.baseUrl ?? env.KPIG_LLM_BASE_URL ?? 'https://api.openai.com/v1').replace(/\/+$/, '');
    const model = options.model ?? env.KPIG_LLM_MODEL;
    if (!model) throw new InputError('no model for the LLM endpoint: pass model or set KPIG_LLM_MODEL');
    this.model = model;
    this.#apiKey = options.apiKey ?? env.KPIG_LLM_API_KEY ?? env.OPENAI_API_KEY;
    this.cacheDir = options.cacheDir === undefined ? (env.KPIG_LLM_CACHE ?? join(process.cwd(), '.kpig-cache', 'llm')) : options.cacheDir;
    const positive = (name: string, v: number, min: number) => {
      if (!Number.isFinite(v) || v < min) throw new InputError(`${name} must be a number ≥ ${min}, got ${v}`);
      return v;
    };
    this.#maxRetries = positive('maxRetries', options.maxRetries ?? 4, 0);
    this.#timeoutMs = positive('timeoutMs', options.timeoutMs ?? 60_000, 1);
    this.#backoffMs = positive('backoffMs', options.backoffMs ?? 500, 0);
    this.#maxBackoffMs = positive('maxBackoffMs', options.maxBackoffMs ?? 20_000, 0);
    this.#concurrency = positive('concurrency', options.concurrency ?? 4, 1);
  }

  /** The request body and its cache key. */
  #request(messages: readonly ChatMessage[], options: ChatRequestOptions) {
    const body = {
      model: this.model,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      temperature: options.temperature ?? 0,
      max_tokens: options.maxTokens,
      response_format: options.json ? { type: 'json_object' } : undefined,
    };
    const key = createHash('sha256').update(canonical({ url: `${this.baseUrl}/chat/completions`, body })).digest('hex');
    return { body, key };
  }

  /**
   * Where the answer to request `key` is cached, or null without a cache.
   *
   * @example
   * const { key } = await llm.complete(messages); llm.cachePath(key); // '.kpig-cache/llm/3f/3f…json'
   */
  cachePath(key: string): string | null {
    return this.cacheDir === null ? null : join(this.cacheDir, key.slice(0, 2), `${key}.json`);
  }

  /**
   * Sends one chat request (or reads its cached answer) and returns the assistant's text.
   *
   * @throws EndpointError after the retries are spent, or at once for a 4xx other than 429
   * @example
   * const { content, cached } = await llm.complete([{ role: 'user', content: 'Rewrite: …' }], { maxTokens: 300 });
   */
  async complete(messages: readonly ChatMessage[], options: ChatRequestOptions = {}): Promise<ChatResult> {
    const { body, key } = this.#request(messages, options);
    const path = this.cachePath(key);
    if (path) {
      const hit = await readFile(path, 'utf8').then(
        (t) => JSON.parse(t) as { response?: { content?: unknown } },
        () => null,
      );
      if (typeof hit?.response?.content === 'string') {
        this.stats.cacheHits++;
        return { content: hit.response.content, cached: true, key };
      }
    }
    // Identical requests issued together share one network call.
    let pending = this.#inFlight.get(key);
    if (!pending) {
      pending = this.#fetchAndCache(body, key, path, options).finally(() => this.#inFlight.delete(key));
      this.#inFlight.set(key, pending);
    }
    return pending;
  }

  async #acquire(): Promise<void> {
    if (this.#active < this.#concurrency) {
      this.#active++;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#active--;
  }

  async #fetchAndCache(body: object, key: string, path: string | null, options: ChatRequestOptions): Promise<ChatResult> {
    const signal = options.signal;
    const url = `${this.baseUrl}/chat/completions`;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.#apiKey) headers.authorization = `Bearer ${this.#apiKey}`;
    const payload = JSON.stringify(body);
    let lastReason = '';
    for (let attempt = 0; attempt <= this.#maxRetries; attempt++) {
      if (attempt > 0) this.stats.retries++;
      let retryAfterMs = 0;
      await this.#acquire();
      try {
        const { content, raw } = await this.#attempt(url, headers, payload, signal);
        const rejected = options.validate?.(content) ?? null;
        if (rejected !== null) throw new Retryable(`the reply was rejected: ${rejected}`);
        if (path) {
          await mkdir(dirname(path), { recursive: true });
          await writeJsonAtomic(path, { key, url, request: body, response: { content, raw } });
        }
        return { content, cached: false, key };
      } catch (err) {
        if (!(err instanceof Retryable)) throw err;
        lastReason = err.message;
        retryAfterMs = (err as Retryable & { retryAfterMs?: number }).retryAfterMs ?? 0;
      } finally {
        this.#release();
      }
      if (attempt < this.#maxRetries) await sleep(Math.min(this.#maxBackoffMs, Math.max(retryAfterMs, this.#backoffMs * 2 ** attempt)), undefined, { signal });
    }
    throw new EndpointError(`${url}: ${lastReason} (gave up after ${this.#maxRetries + 1} attempts)`);
  }

  /** One HTTP attempt: the answer text, or a Retryable / EndpointError. */
  async #attempt(url: string, headers: Record<string, string>, payload: string, signal?: AbortSignal): Promise<{ content: string; raw: unknown }> {
    this.stats.sent++;
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let status: number;
    let text: string;
    let retryAfter: string | null;
    try {
      const res = await fetch(url, { method: 'POST', headers, body: payload, signal: combined });
      status = res.status;
      retryAfter = res.headers.get('retry-after');
      text = await res.text();
    } catch (err) {
      if (signal?.aborted) throw err;
      if (timeout.aborted) throw new Retryable(`timed out after ${this.#timeoutMs} ms`);
      throw new Retryable(`request failed: ${(err as Error).message}${(err as { cause?: Error }).cause ? ` (${(err as { cause: Error }).cause.message})` : ''}`);
    }
    if (status === 429 || status >= 500) {
      const e = new Retryable(`HTTP ${status}: ${text.slice(0, 200)}`);
      const seconds = Number(retryAfter);
      if (retryAfter !== null && Number.isFinite(seconds)) Object.assign(e, { retryAfterMs: seconds * 1000 });
      throw e;
    }
    if (status < 200 || status >= 300) throw new EndpointError(`${url}: HTTP ${status}, not retried: ${text.slice(0, 300)}`);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new Retryable(`malformed JSON in the response body: ${JSON.stringify(text.slice(0, 120))}`);
    }
    const content = (raw as { choices?: { message?: { content?: unknown } }[] })?.choices?.[0]?.message?.content;
    if (typeof content !== 'string') throw new Retryable(`the response has no choices[0].message.content: ${text.slice(0, 120)}`);
    return { content, raw };
  }
}
