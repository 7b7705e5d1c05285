// Key parts: the heuristic extractor's rules on hand-written definitions, explicit spans, label-set
// detection, and label-word recall on the 10 classification tasks of ../shared/data/superni-dev.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { closedOutputSet, detectLabelSet, matchLabel } from '../src/data/labels.js';
import { InputError } from '../src/errors/index.js';
import { labelRecall, locateKeyParts, parseKeySpans, spanOffset } from '../src/keyparts/explicit.js';
import { extractKeyParts } from '../src/keyparts/heuristic.js';

const SHARED = resolve(__dirname, '..', '..', 'shared', 'data', 'superni-dev');
const hasShared = existsSync(join(SHARED, 'manifest.json'));
if (!hasShared) console.warn(`skipping the label-word recall measurement: ${SHARED} is absent`);

const keyTexts = (text: string) => extractKeyParts(text).spans.map((s) => [s.kind, text.slice(s.start, s.end)]);

describe('heuristic key-part extractor', () => {
  it('finds label lists after triggers, quoted answer words, length and the asked entity', () => {
    expect(keyTexts('Classify the review into "good" or "bad". Answer in one word.')).toEqual([
      ['entity', 'the review'],
      ['label', '"good" or "bad"'],
      ['length', 'in one word'],
    ]);
    expect(keyTexts('Each post is to be labelled as Spam, Ham or Unsure.')).toEqual([['label', 'Spam, Ham or Unsure']]);
    // a colon opens an answer space only after words that announce one
    expect(keyTexts('You are given two fields: Head and Tail, separated by a tab.')).toEqual([]);
    expect(keyTexts('Pick one of the following: red, green, or blue light.')).toEqual([['label', 'red, green, or blue light']]);
    expect(keyTexts('Pick one of the following: red, green, or blue.')).toEqual([['label', 'red, green, or blue']]);
    expect(keyTexts('The topics are: (1) sports (2) politics and (3) science. Reply with the number only.')).toEqual([
      ['label', '(1) sports (2) politics and (3) science'],
      ['format', 'Reply with the number only'],
    ]);
    expect(keyTexts("Mark the review 'POS' when it praises the film, otherwise 'NEG'.")).toEqual([
      ['label', "'POS'"],
      ['label', "'NEG'"],
    ]);
    // apostrophes inside words are not quotes; a quoted field name outside any answer sentence is 'other'
    expect(keyTexts("The speaker's line is given. The second field is called the 'context'.")).toEqual([['other', "'context'"]]);
    expect(keyTexts('Write a summary of at most 20 words. Do not include the names of people.')).toEqual([
      ['length', 'at most 20 words'],
      ['format', 'Do not include the names of people'],
    ]);
    expect(keyTexts('Given a question, write a brief answer.')).toEqual([['length', 'brief']]);
    expect(keyTexts('You are given one sentence of a story.')).toEqual([]);
    expect(keyTexts('Determine the language of the tweet.')).toEqual([['entity', 'the language of the tweet']]);
    expect(keyTexts('Fill "___" with a word.')).toEqual([]);
  });

  it('returns sorted spans that never overlap', () => {
    const text = 'Answer with "A", "B" or "C": the answer should be a single letter, in one word only, and "A" means agree.';
    const { spans } = extractKeyParts(text);
    for (let i = 1; i < spans.length; i++) expect(spans[i].start).toBeGreaterThanOrEqual(spans[i - 1].end);
    expect(spans.map((s) => text.slice(s.start, s.end))).toContain('"A", "B" or "C"');
  });
});

describe('label sets', () => {
  it('falls back to the outputs when they are a small closed set the instruction names in no way a rule reads', () => {
    const snli = 'Determine whether the sentences agree, disagree, or neither. Your answer must be in the form of the letters E, C, and N respectively.';
    const outputs = Array.from({ length: 60 }, (_, i) => 'ECN'[(i * 7) % 3]);
    expect(detectLabelSet(snli, { outputs })).toEqual(['E', 'C', 'N']);
    expect(detectLabelSet(snli, { outputs, fromOutputs: false })).toBeNull();
    // Open-ended outputs, or too few repeats of each value, stay open.
    expect(detectLabelSet('Write a title.', { outputs: Array.from({ length: 60 }, (_, i) => `title ${i}`) })).toBeNull();
    expect(detectLabelSet('Write a title.', { outputs: Array.from({ length: 30 }, (_, i) => `t${i % 10}`) })).toBeNull();
    expect(detectLabelSet('Summarise.', { outputs: Array.from({ length: 40 }, (_, i) => (i % 2 ? 'a long answer of many words' : 'short')) })).toBeNull();
    expect(closedOutputSet([...Array(15).fill('Yes'), ...Array(10).fill('no'), 'No', 'No', 'No', 'No', 'No', 'No', 'No', 'No', 'No', 'No', 'No'])).toEqual(['Yes', 'No']);
  });

  it('detects the closed output space and takes the spelling of the outputs', () => {
    expect(detectLabelSet('Classify the review into "good" or "bad".')).toEqual(['good', 'bad']);
    expect(detectLabelSet('Divide the reviews into two classes: negative or positive, based on the text.', { outputs: ['Positive', 'Negative', 'Positive'] })).toEqual([
      'Negative',
      'Positive',
    ]);
    // two lists: the one the outputs use wins
    const twoLists = 'The relation is one of the following: synonym (same), antonym, or none. Classify your answers into syn, ant and none.';
    expect(detectLabelSet(twoLists, { outputs: ['syn', 'ant', 'none', 'syn'] })).toEqual(['syn', 'ant', 'none']);
    // quoted words in the answer sentence form a set even when not joined
    expect(detectLabelSet('Label a review "P" if it is positive and "N" if it is negative.', { outputs: ['P', 'N'] })).toEqual(['P', 'N']);
    // outputs outside every candidate: open-ended
    expect(detectLabelSet('It can also be *yes* or *no*, or a name.', { outputs: ['Paris', 'yes', '1984'] })).toBeNull();
    expect(detectLabelSet('Write a poem about the sea.')).toBeNull();
    expect(matchLabel('  NEGATIVE ', ['Positive', 'Negative'])).toBe('Negative');
    expect(matchLabel('neutral', ['Positive', 'Negative'])).toBeNull();
  });
});

describe('explicit key parts', () => {
  it('locates phrases verbatim, successive occurrences for repeats, and reports the missing', () => {
    const text = 'Say "x" or "y". If unsure, say "x".';
    expect(locateKeyParts(text, ['"x"', '"x"', 'nowhere'])).toEqual({ spans: [{ start: 4, end: 7 }, { start: 31, end: 34 }], missing: ['nowhere'] });
    expect(locateKeyParts(text, [{ text: 'unsure', kind: 'other' }, '"y"'])).toEqual({ spans: [{ start: 11, end: 14 }, { start: 19, end: 25, kind: 'other' }], missing: [] });
  });

  it('parses offsets, pairs and phrases, and names the row of a bad span', () => {
    const text = 'Answer "yes" or "no".';
    expect(parseKeySpans([{ start: 7, end: 20, kind: 'label' }], text, 'f:1')).toEqual([{ start: 7, end: 20, kind: 'label' }]);
    expect(parseKeySpans([[16, 20], [7, 12]], text, 'f:1')).toEqual([{ start: 7, end: 12 }, { start: 16, end: 20 }]);
    expect(parseKeySpans(['"no"'], text, 'f:1')).toEqual([{ start: 16, end: 20 }]);
    expect(() => parseKeySpans([[7, 40]], text, 'f:2')).toThrow(/f:2: key span 0 \[7, 40\) is not inside the instruction \(length 21\)/);
    expect(() => parseKeySpans([[0, 10], [5, 12]], text, 'f:3')).toThrow(/f:3: key spans \[0, 10\) and \[5, 12\) overlap/);
    expect(() => parseKeySpans(['"maybe"'], text, 'f:4')).toThrow(InputError);
    expect(() => parseKeySpans([{ start: 1, end: 2, kind: 'colour' }], text, 'f:5')).toThrow(/kind "colour" is not one of/);
  });

  it('takes int64 offsets (bigint, what pandas writes) and refuses non-integers and offsets past int32 by row', () => {
    const text = 'Answer "yes" or "no".';
    expect(parseKeySpans([{ start: 7n, end: 12n }, [16n, 20n]], text, 'f:1')).toEqual([{ start: 7, end: 12 }, { start: 16, end: 20 }]);
    for (const bad of [{ start: 7n, end: 4294967306n }, { start: 1.5, end: 4 }, { start: '1', end: 4 }, [-1, 4], { start: 2 }])
      expect(() => parseKeySpans([bad], text, 'f:6'), JSON.stringify(bad, (_k, v) => (typeof v === 'bigint' ? String(v) : v))).toThrow(/^f:6: key span 0 must be \{start, end\} or \[start, end\] with integer offsets in \[0, 2147483647\]/);
    expect(spanOffset(2n ** 31n - 1n)).toBe(2 ** 31 - 1);
    expect(spanOffset(2 ** 31)).toBeNull();
  });

  it('measures label-word recall inside spans', () => {
    expect(labelRecall('Answer "Yes" or "No". Be brief.', [{ start: 7, end: 20 }], ['yes', 'no', 'maybe'])).toEqual({ found: ['yes', 'no'], missing: ['maybe'], recall: 2 / 3 });
  });
});

describe.skipIf(!hasShared)('label-word recall on superni-dev (../shared/data/superni-dev)', () => {
  it('the heuristic extractor covers the hand-read label sets of the classification tasks', () => {
    const manifest = JSON.parse(readFileSync(join(SHARED, 'manifest.json'), 'utf8'));
    const cls = Object.entries(manifest.tasks as Record<string, { kind: string; instruction_label_set: string[]; file: string }>).filter(([, t]) => t.kind === 'classification');
    expect(cls).toHaveLength(10);
    let found = 0;
    let total = 0;
    const lines: string[] = [];
    for (const [id, t] of cls) {
      const def = JSON.parse(readFileSync(join(SHARED, t.file), 'utf8')).Definition.join('\n').trim();
      const r = labelRecall(def, extractKeyParts(def).spans, t.instruction_label_set);
      found += r.found.length;
      total += t.instruction_label_set.length;
      lines.push(`${id}: ${r.found.length}/${t.instruction_label_set.length}${r.missing.length ? ` (missing ${r.missing.join(', ')})` : ''}`);
    }
    console.log(`label-word recall ${found}/${total} = ${(found / total).toFixed(3)}\n  ${lines.join('\n  ')}`);
    expect(found / total).toBeGreaterThanOrEqual(0.9);
  });
});
