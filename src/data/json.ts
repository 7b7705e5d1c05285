/** JSON parsing whose errors name the file, line and column of the problem. */
import { InputError } from '../errors/index.js';

/**
 * The offset of the first syntax error in `text`, found by a small recursive-descent scan. Only
 * run after JSON.parse has failed: Node 20's parser names the offending token but not always its
 * position, and a file of a million characters needs a line and column to be fixable.
 */
function errorOffset(text: string): number {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const literal = (word: string) => {
    if (text.startsWith(word, i)) i += word.length;
    else fail();
  };
  const string = () => {
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text.charCodeAt(i) < 0x20) fail();
      if (text[i] === '\\') {
        i++;
        if (text[i] === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail();
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? '')) fail();
      }
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        string();
        ws();
        if (text[i] !== ':') fail();
        i++;
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return void i++;
        else fail();
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return void i++;
        else fail();
      }
    } else if (c === '"') string();
    else if (c === 't') literal('true');
    else if (c === 'f') literal('false');
    else if (c === 'n') literal('null');
    else {
      const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
      if (!m) fail();
      i += m![0].length;
    }
  };
  try {
    value();
    ws();
    return i;
  } catch (at) {
    return at as number;
  }
}

/**
 * Parses `text` (a leading BOM is ignored) or throws an {@link InputError} naming `path`, the line
 * and column of the first syntax error, and the parser's own message. `firstLine` is the line
 * number of the text's first line (for one line of a JSONL file).
 *
 * @example
 * parseJson('{"a": 1,}', 'task1.json');        // InputError: task1.json:1:9: not valid JSON: …
 * parseJson('{oops}', 'rows.jsonl', 12);       // InputError: rows.jsonl:12:2: not valid JSON: …
 */
export function parseJson(text: string, path: string, firstLine = 1): unknown {
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  try {
    return JSON.parse(body);
  } catch (err) {
    const pos = errorOffset(body);
    const before = body.slice(0, pos);
    const where = `${path}:${before.split('\n').length + firstLine - 1}:${pos - before.lastIndexOf('\n')}`;
    throw new InputError(`${where}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}
