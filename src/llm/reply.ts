/** Reading what a chat model wrote: the JSON object in a reply, the bare text of a rewrite. */

/**
 * The JSON value in a model reply, tolerating a Markdown code fence or prose around one object;
 * null when there is none.
 *
 * @example
 * replyJson('```json\n{"key_parts": []}\n```'); // { key_parts: [] }
 */
export function replyJson(content: string): unknown {
  const fenced = /```(?:json)?\s*([\s\S]*?)```/u.exec(content);
  const body = (fenced ? fenced[1] : content).trim();
  try {
    return JSON.parse(body);
  } catch {
    const first = body.indexOf('{');
    const last = body.lastIndexOf('}');
    if (first < 0 || last <= first) return null;
    try {
      return JSON.parse(body.slice(first, last + 1));
    } catch {
      return null;
    }
  }
}

/**
 * A rewrite as plain text: a code fence, a leading "Rewritten instruction:" label and wrapping
 * quotes are removed. Quotes around a text that itself contains quotes are ambiguous ('"Yes" or
 * "No"'); they are removed only when `original` (the text that was rewritten) does not start with one.
 *
 * @example
 * replyText('Rewritten instruction: "Say yes."'); // 'Say yes.'
 * replyText('"Answer "A" or "B"."', 'Answer "A" or "B".'); // 'Answer "A" or "B".'
 */
export function replyText(content: string, original?: string): string {
  let t = content.trim();
  const fenced = /^```[a-z]*\s*([\s\S]*?)```$/u.exec(t);
  if (fenced) t = fenced[1].trim();
  t = t.replace(/^(?:rewritten|new)\s+instruction\s*:\s*/iu, '');
  if (t.length > 1 && ((t.startsWith('"') && t.endsWith('"')) || (t.startsWith('“') && t.endsWith('”')))) {
    const inner = t.slice(1, -1);
    const quotedOriginal = original !== undefined && /^["“]/u.test(original.trim());
    if (original !== undefined ? !quotedOriginal : !/["“”]/u.test(inner)) t = inner;
  }
  return t.trim();
}
