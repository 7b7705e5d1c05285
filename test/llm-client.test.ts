// The OpenAI-compatible client against a loopback HTTP server started here: cache keyed by request,
// retries on 5xx / 429 / timeouts / malformed JSON, a clear error at the end, concurrency limit; and
// the LLM key-part annotator and rewriter on top of it.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { TaskSet } from '../src/data/taskset.js';
import { EndpointError, InputError } from '../src/errors/index.js';
import { annotateKeyParts, annotateTaskSet } from '../src/keyparts/llm-annotate.js';
import { ChatClient, type ChatClientOptions } from '../src/llm/client.js';
import { replyJson, replyText } from '../src/llm/reply.js';
import { llmRewriter } from '../src/rewrite/llm-rewriter.js';
import { diversify } from '../src/rewrite/variant.js';

const root = mkdtempSync(join(tmpdir(), 'kpig-llm-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Handler = (body: { model: string; messages: { role: string; content: string }[] }, req: IncomingMessage, res: ServerResponse, n: number) => void;

let server: Server | null = null;
afterEach(async () => {
  const s = server;
  server = null;
  if (!s) return;
  s.closeAllConnections();
  await new Promise((r) => s.close(r));
});

/** A loopback server; `handler` sees the parsed body and the 1-based request count. */
async function serve(handler: Handler): Promise<{ url: string; hits: () => number; auth: string[] }> {
  let n = 0;
  const auth: string[] = [];
  server = createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      n++;
      auth.push(String(req.headers.authorization));
      handler(JSON.parse(data), req, res, n);
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}/v1`, hits: () => n, auth };
}

const answer = (res: ServerResponse, content: string) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ choices: [{ message: { role: 'assistant', content } }] }));
};

let cacheCount = 0;
const client = (url: string, over: Partial<ChatClientOptions> = {}) =>
  new ChatClient({ baseUrl: url, model: 'm', apiKey: 'sk-test', cacheDir: join(root, `cache-${cacheCount++}`), backoffMs: 5, timeoutMs: 2000, env: {}, ...over });

const filesUnder = (d: string): string[] => {
  try {
    return readdirSync(d, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
};

describe('ChatClient', () => {
  it('sends the request, caches the answer under the request hash, and serves reruns from the cache', async () => {
    const s = await serve((body, _req, res) => answer(res, `echo: ${body.messages.at(-1)!.content}`));
    const llm = client(`${s.url}/`);
    const first = await llm.complete([{ role: 'user', content: 'hello' }]);
    expect(first).toEqual({ content: 'echo: hello', cached: false, key: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(s.auth).toEqual(['Bearer sk-test']);
    const again = await llm.complete([{ role: 'user', content: 'hello' }]);
    expect(again).toEqual({ ...first, cached: true });
    // a fresh client on the same folder (another run) reads the same file
    const rerun = new ChatClient({ baseUrl: s.url, model: 'm', cacheDir: llm.cacheDir, env: {} });
    expect((await rerun.complete([{ role: 'user', content: 'hello' }])).cached).toBe(true);
    expect(s.hits()).toBe(1);
    const files = filesUnder(llm.cacheDir!);
    expect(files).toEqual([llm.cachePath(first.key)]);
    const entry = JSON.parse(readFileSync(files[0], 'utf8'));
    expect(entry.request.messages).toEqual([{ role: 'user', content: 'hello' }]);
    expect(JSON.stringify(entry)).not.toContain('sk-test');
    // another temperature is another request
    await llm.complete([{ role: 'user', content: 'hello' }], { temperature: 0.5 });
    expect(s.hits()).toBe(2);
  });

  it('takes endpoint, model and key from the environment', async () => {
    const s = await serve((_b, _r, res) => answer(res, 'ok'));
    const llm = new ChatClient({ cacheDir: null, env: { KPIG_LLM_BASE_URL: s.url, KPIG_LLM_MODEL: 'env-model', OPENAI_API_KEY: 'sk-env' } });
    expect(llm.model).toBe('env-model');
    await llm.complete([{ role: 'user', content: 'x' }]);
    expect(s.auth).toEqual(['Bearer sk-env']);
    expect(() => new ChatClient({ env: {} })).toThrow(InputError);
  });

  it('retries 500, 429, malformed JSON and a missing message, then succeeds', async () => {
    const s = await serve((_b, _r, res, n) => {
      if (n === 1) return res.writeHead(500).end('overloaded');
      if (n === 2) return res.writeHead(429, { 'retry-after': '0' }).end('slow down');
      if (n === 3) return res.writeHead(200).end('{"choices": [');
      if (n === 4) return res.writeHead(200).end('{"choices": []}');
      answer(res, 'finally');
    });
    const llm = client(s.url);
    expect((await llm.complete([{ role: 'user', content: 'q' }])).content).toBe('finally');
    expect(s.hits()).toBe(5);
    expect(llm.stats).toEqual({ sent: 5, cacheHits: 0, retries: 4 });
  });

  it('retries a timeout', async () => {
    const s = await serve((_b, _r, res, n) => {
      if (n === 1) return void setTimeout(() => answer(res, 'too late'), 1000);
      answer(res, 'in time');
    });
    const llm = client(s.url, { timeoutMs: 100 });
    expect((await llm.complete([{ role: 'user', content: 'q' }])).content).toBe('in time');
    expect(s.hits()).toBe(2);
  });

  it('gives up with a clear error after the retries, and leaves no cache file behind', async () => {
    const s = await serve((_b, _r, res) => res.writeHead(200).end('<html>not json</html>'));
    const llm = client(s.url, { maxRetries: 2 });
    const err = await llm.complete([{ role: 'user', content: 'q' }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EndpointError);
    expect((err as Error).message).toBe(`${s.url}/chat/completions: malformed JSON in the response body: "<html>not json</html>" (gave up after 3 attempts)`);
    expect(s.hits()).toBe(3);
    expect(filesUnder(llm.cacheDir!)).toEqual([]);

    const first = server!;
    first.closeAllConnections();
    await new Promise((r) => first.close(r));
    const slow = await serve((_b, _r, res) => void setTimeout(() => answer(res, 'late'), 500));
    const timed = client(slow.url, { maxRetries: 1, timeoutMs: 50 });
    await expect(timed.complete([{ role: 'user', content: 'q' }])).rejects.toThrow(/timed out after 50 ms \(gave up after 2 attempts\)/);
    expect(filesUnder(timed.cacheDir!)).toEqual([]);
  });

  it('does not retry a 4xx other than 429', async () => {
    const s = await serve((_b, _r, res) => res.writeHead(401).end('bad key'));
    await expect(client(s.url).complete([{ role: 'user', content: 'q' }])).rejects.toThrow(/HTTP 401, not retried: bad key/);
    expect(s.hits()).toBe(1);
  });

  it('keeps at most `concurrency` requests in flight and shares identical ones', async () => {
    let active = 0;
    let peak = 0;
    const s = await serve((body, _r, res) => {
      active++;
      peak = Math.max(peak, active);
      setTimeout(() => {
        active--;
        answer(res, body.messages[0].content.toUpperCase());
      }, 30);
    });
    const llm = client(s.url, { concurrency: 2 });
    const prompts = ['a', 'b', 'c', 'd', 'e', 'a'];
    const out = await Promise.all(prompts.map((p) => llm.complete([{ role: 'user', content: p }])));
    expect(out.map((o) => o.content)).toEqual(['A', 'B', 'C', 'D', 'E', 'A']);
    expect(peak).toBe(2);
    expect(s.hits()).toBe(5);
  });

  it('retries replies the caller rejects and never caches them', async () => {
    const s = await serve((_b, _r, res, n) => answer(res, n < 3 ? 'no json here' : '{"ok": true}'));
    const llm = client(s.url);
    const got = await llm.complete([{ role: 'user', content: 'q' }], { validate: (c) => (replyJson(c) ? null : 'not JSON') });
    expect(got.content).toBe('{"ok": true}');
    expect(s.hits()).toBe(3);
    expect(filesUnder(llm.cacheDir!)).toHaveLength(1);
  });
});

describe('model replies', () => {
  it('finds JSON in fences and prose, and strips rewrite labels and wrapping quotes', () => {
    expect(replyJson('```json\n{"a": 1}\n```')).toEqual({ a: 1 });
    expect(replyJson('Here you go: {"a": [2]} — done')).toEqual({ a: [2] });
    expect(replyJson('nothing')).toBeNull();
    expect(replyText('Rewritten instruction: "Say yes."')).toBe('Say yes.');
    expect(replyText('"Yes" or "No" are the answers')).toBe('"Yes" or "No" are the answers');
    expect(replyText('"Yes" or "No"')).toBe('"Yes" or "No"');
    expect(replyText('"Answer "A" or "B"."', 'Answer "A" or "B".')).toBe('Answer "A" or "B".');
    expect(replyText('"A" or "B" it is."', '"A" or "B" it is."')).toBe('"A" or "B" it is."');
  });
});

describe('LLM annotator and rewriter', () => {
  const instruction = 'You get a tweet. Answer with "Yes" or "No", in one word.';

  it('locates the phrases the model copies and rejects the ones it invents', async () => {
    const s = await serve((body, _r, res) => {
      expect(body.messages[1].content).toContain(instruction);
      answer(res, '```json\n{"key_parts": [{"text": "\\"Yes\\" or \\"No\\"", "kind": "label"}, {"text": "in one word", "kind": "length"}, {"text": "a single token", "kind": "length"}]}\n```');
    });
    const got = await annotateKeyParts(client(s.url), instruction);
    expect(got.spans.map((x) => [instruction.slice(x.start, x.end), x.kind])).toEqual([
      ['"Yes" or "No"', 'label'],
      ['in one word', 'length'],
    ]);
    expect(got.rejected).toEqual([{ text: 'a single token', reason: 'not found verbatim in the instruction' }]);
  });

  it('annotates a task set and leaves explicit spans alone', async () => {
    const s = await serve((_b, _r, res) => answer(res, '{"key_parts": ["in one word"]}'));
    const set: TaskSet = {
      tasks: [{ task_id: 't', kind: 'classification', label_set: ['Yes', 'No'], source: 'jsonl', categories: [] }],
      instructions: [
        { task_id: 't', instruction_id: 't/seed', text: instruction, key_spans: [], origin: 'seed', key_source: 'none', parent_id: null },
        { task_id: 't', instruction_id: 't/seed2', text: 'Say "Yes".', key_spans: [{ start: 4, end: 9 }], origin: 'seed', key_source: 'explicit', parent_id: null },
      ],
      instances: [],
      streams: [],
    };
    const { set: out } = await annotateTaskSet(set, 'llm', { client: client(s.url) });
    expect(out.instructions[0]).toMatchObject({ key_source: 'llm', key_spans: [{ start: 44, end: 55 }] });
    expect(out.instructions[1]).toEqual(set.instructions[1]);
    expect(s.hits()).toBe(1);
    const heur = await annotateTaskSet(set, 'heuristic');
    expect(heur.set.instructions[0].key_spans.map((x) => instruction.slice(x.start, x.end))).toEqual(['"Yes" or "No"', 'in one word']);
  });

  it('rewrites through the endpoint, rejects a variant that drops a key part, and reruns from the cache', async () => {
    const s = await serve((body, _r, res) => {
      const prompt = body.messages[0].content;
      const seed = prompt.slice(prompt.indexOf('Instruction:\n') + 13);
      if (prompt.includes('step by step')) return answer(res, seed.replace('"No"', '"Nope"'));
      answer(res, `Rewritten instruction: "Please note. ${seed.replaceAll('"', "'")}"`.replace("'Yes' or 'No'", '"Yes" or "No"'));
    });
    const set: TaskSet = {
      tasks: [{ task_id: 't', kind: 'classification', label_set: ['Yes', 'No'], source: 'jsonl', categories: [] }],
      instructions: [{ task_id: 't', instruction_id: 't/seed', text: instruction, key_spans: [{ start: 29, end: 42, kind: 'label' }], origin: 'seed', key_source: 'explicit', parent_id: null }],
      instances: [],
      streams: [],
    };
    const llm = client(s.url);
    const first = await diversify(set, llmRewriter(llm), { kinds: ['breadth', 'reasoning'] });
    expect(first.accepted.map((a) => [a.instruction_id, a.text])).toEqual([['t/breadth-0', 'Please note. You get a tweet. Answer with "Yes" or "No", in one word.']]);
    expect(first.accepted[0].key_spans).toEqual([{ start: 42, end: 55, kind: 'label' }]);
    expect(first.rejected).toEqual([expect.objectContaining({ origin: 'reasoning', reason: expect.stringContaining('not found verbatim') })]);
    expect(s.hits()).toBe(2);
    const second = await diversify(set, llmRewriter(new ChatClient({ baseUrl: s.url, model: 'm', cacheDir: llm.cacheDir, env: {} })), { kinds: ['breadth', 'reasoning'] });
    expect(second.set).toEqual(first.set);
    expect(s.hits()).toBe(2);
  });
});
