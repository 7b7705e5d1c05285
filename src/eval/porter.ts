/**
 * The Porter stemmer (Porter 1980, "An algorithm for suffix stripping") in the variant that
 * `nltk.stem.porter.PorterStemmer()` runs by default (mode NLTK_EXTENSIONS), because that is the
 * stemmer Google's `rouge-score` applies and SuperNI's ROUGE-L is computed with it. The deviations
 * from the paper that this variant makes are marked "NLTK:" below; docs/eval.md lists them.
 * Agreement with NLTK is checked word by word by scripts/check-stemmer.mjs.
 */

/** Words NLTK maps by table before any rule runs. */
const IRREGULAR = new Map<string, string>([
  ['sky', 'sky'],
  ['skies', 'sky'],
  ['dying', 'die'],
  ['lying', 'lie'],
  ['tying', 'tie'],
  ['news', 'news'],
  ['innings', 'inning'],
  ['inning', 'inning'],
  ['outings', 'outing'],
  ['outing', 'outing'],
  ['cannings', 'canning'],
  ['canning', 'canning'],
  ['howe', 'howe'],
  ['proceed', 'proceed'],
  ['exceed', 'exceed'],
  ['succeed', 'succeed'],
]);

/**
 * A consonant is any letter but a, e, i, o, u, and y when preceded by a vowel (or at the start);
 * anything that is not a letter (digits) counts as a consonant too, as in NLTK.
 */
function isConsonant(w: string, i: number): boolean {
  const c = w[i];
  if (c === 'a' || c === 'e' || c === 'i' || c === 'o' || c === 'u') return false;
  if (c === 'y') return i === 0 ? true : !isConsonant(w, i - 1);
  return true;
}

/** m in [C](VC)^m[V]: the number of vowel→consonant transitions. */
function measure(stem: string): number {
  let m = 0;
  for (let i = 1; i < stem.length; i++) if (!isConsonant(stem, i - 1) && isConsonant(stem, i)) m++;
  return m;
}

function hasVowel(stem: string): boolean {
  for (let i = 0; i < stem.length; i++) if (!isConsonant(stem, i)) return true;
  return false;
}

/** *d: ends with the same consonant twice. */
function endsDoubleConsonant(w: string): boolean {
  const n = w.length;
  return n >= 2 && w[n - 1] === w[n - 2] && isConsonant(w, n - 1);
}

/** *o: ends consonant-vowel-consonant, the last not w, x or y. NLTK: a two-letter vowel-consonant stem also counts. */
function endsCvc(w: string): boolean {
  const n = w.length;
  if (n >= 3) {
    return isConsonant(w, n - 3) && !isConsonant(w, n - 2) && isConsonant(w, n - 1) && !'wxy'.includes(w[n - 1]);
  }
  return n === 2 && !isConsonant(w, 0) && isConsonant(w, 1);
}

type Rule = readonly [suffix: string, replacement: string, condition: ((stem: string) => boolean) | null];

/**
 * The rule whose suffix the word ends with first decides: its replacement if its condition holds
 * on the remaining stem, else the word unchanged (later rules are not tried).
 */
function firstRule(word: string, rules: readonly Rule[]): string {
  for (const [suffix, replacement, condition] of rules) {
    if (!word.endsWith(suffix)) continue;
    const stem = word.slice(0, word.length - suffix.length);
    return condition === null || condition(stem) ? stem + replacement : word;
  }
  return word;
}

const mPositive = (stem: string) => measure(stem) > 0;
const mAboveOne = (stem: string) => measure(stem) > 1;

function step1a(w: string): string {
  if (w.length === 4 && w.endsWith('ies')) return `${w.slice(0, 1)}ie`; // NLTK: "ties" → "tie", not "ti"
  return firstRule(w, [
    ['sses', 'ss', null],
    ['ies', 'i', null],
    ['ss', 'ss', null],
    ['s', '', null],
  ]);
}

function step1b(w: string): string {
  if (w.endsWith('ied')) return w.slice(0, -3) + (w.length === 4 ? 'ie' : 'i'); // NLTK
  if (w.endsWith('eed')) {
    const stem = w.slice(0, -3);
    return measure(stem) > 0 ? `${stem}ee` : w;
  }
  let stem: string | null = null;
  for (const suffix of ['ed', 'ing']) {
    if (w.endsWith(suffix) && hasVowel(w.slice(0, -suffix.length))) {
      stem = w.slice(0, -suffix.length);
      break;
    }
  }
  if (stem === null) return w;
  if (stem.endsWith('at') || stem.endsWith('bl') || stem.endsWith('iz')) return `${stem}e`;
  if (endsDoubleConsonant(stem)) return 'lsz'.includes(stem[stem.length - 1]) ? stem : stem.slice(0, -1);
  return measure(stem) === 1 && endsCvc(stem) ? `${stem}e` : stem;
}

/** NLTK: y → i only after a consonant that is not the whole stem ("happy" → "happi", "enjoy" and "by" stay). */
function step1c(w: string): string {
  if (!w.endsWith('y')) return w;
  const stem = w.slice(0, -1);
  return stem.length > 1 && isConsonant(stem, stem.length - 1) ? `${stem}i` : w;
}

function step2(w: string): string {
  // NLTK: "alli" → "al" is tried before the table and the result goes through step 2 again.
  if (w.endsWith('alli') && mPositive(w.slice(0, -4))) return step2(`${w.slice(0, -4)}al`);
  return firstRule(w, [
    ['ational', 'ate', mPositive],
    ['tional', 'tion', mPositive],
    ['enci', 'ence', mPositive],
    ['anci', 'ance', mPositive],
    ['izer', 'ize', mPositive],
    ['bli', 'ble', mPositive], // Porter's own correction of the paper's "abli" → "able"
    ['alli', 'al', mPositive],
    ['entli', 'ent', mPositive],
    ['eli', 'e', mPositive],
    ['ousli', 'ous', mPositive],
    ['ization', 'ize', mPositive],
    ['ation', 'ate', mPositive],
    ['ator', 'ate', mPositive],
    ['alism', 'al', mPositive],
    ['iveness', 'ive', mPositive],
    ['fulness', 'ful', mPositive],
    ['ousness', 'ous', mPositive],
    ['aliti', 'al', mPositive],
    ['iviti', 'ive', mPositive],
    ['biliti', 'ble', mPositive],
    ['fulli', 'ful', mPositive], // NLTK
    // NLTK: the measure is taken with the "l" kept on the stem, so "geologi" → "geolog".
    ['logi', 'log', () => mPositive(w.slice(0, -3))],
  ]);
}

function step3(w: string): string {
  return firstRule(w, [
    ['icate', 'ic', mPositive],
    ['ative', '', mPositive],
    ['alize', 'al', mPositive],
    ['iciti', 'ic', mPositive],
    ['ical', 'ic', mPositive],
    ['ful', '', mPositive],
    ['ness', '', mPositive],
  ]);
}

function step4(w: string): string {
  return firstRule(w, [
    ['al', '', mAboveOne],
    ['ance', '', mAboveOne],
    ['ence', '', mAboveOne],
    ['er', '', mAboveOne],
    ['ic', '', mAboveOne],
    ['able', '', mAboveOne],
    ['ible', '', mAboveOne],
    ['ant', '', mAboveOne],
    ['ement', '', mAboveOne],
    ['ment', '', mAboveOne],
    ['ent', '', mAboveOne],
    ['ion', '', (s) => mAboveOne(s) && (s.endsWith('s') || s.endsWith('t'))],
    ['ou', '', mAboveOne],
    ['ism', '', mAboveOne],
    ['ate', '', mAboveOne],
    ['iti', '', mAboveOne],
    ['ous', '', mAboveOne],
    ['ive', '', mAboveOne],
    ['ize', '', mAboveOne],
  ]);
}

/** Both e-rules are tried (unlike the first-suffix-decides tables): m > 1, or m = 1 and not *o. */
function step5a(w: string): string {
  if (!w.endsWith('e')) return w;
  const stem = w.slice(0, -1);
  const m = measure(stem);
  return m > 1 || (m === 1 && !endsCvc(stem)) ? stem : w;
}

/** -ll → -l when m > 1, the measure taken on the word less one l. */
function step5b(w: string): string {
  return w.endsWith('ll') && measure(w.slice(0, -1)) > 1 ? w.slice(0, -1) : w;
}

/**
 * Porter stem of one word, as NLTK's default `PorterStemmer().stem(word)` computes it: the word is
 * lower-cased, a few irregular forms are looked up, words of one or two characters are returned
 * as they are, and steps 1a–5b run in order.
 *
 * @example
 * porterStem('running');     // 'run'
 * porterStem('generalization'); // 'gener'
 * porterStem('skies');       // 'sky'
 */
export function porterStem(word: string): string {
  const lower = word.toLowerCase();
  // NLTK looks up the word as given, before lower-casing.
  const irregular = IRREGULAR.get(word);
  if (irregular !== undefined) return irregular;
  if (word.length <= 2) return lower;
  let w = step1a(lower);
  w = step1b(w);
  w = step1c(w);
  w = step2(w);
  w = step3(w);
  w = step4(w);
  w = step5a(w);
  return step5b(w);
}
