/**
 * The word lists of the synthetic suite. Short, plain ASCII words so that a prompt stays around
 * 100–200 bytes for the byte-level base model, and few of them (six per class), so that the tiny
 * model memorises which class a word belongs to within its training budget. Three rules keep the rules of the families exact:
 * every category word is unique across categories, no label word appears in any input, and no word
 * contains a space.
 */

/** Words by category: the options of `choice`, the lists of `membership`, the fields of `extract`. */
export const CATEGORIES = {
  animal: ['cat', 'dog', 'fox', 'owl', 'lion', 'frog'],
  fruit: ['apple', 'pear', 'plum', 'fig', 'mango', 'melon'],
  color: ['red', 'blue', 'green', 'pink', 'gray', 'black'],
  tool: ['saw', 'axe', 'drill', 'hammer', 'rake', 'spade'],
  city: ['Paris', 'Rome', 'Oslo', 'Lima', 'Cairo', 'Tokyo'],
  drink: ['tea', 'milk', 'juice', 'water', 'coffee', 'soda'],
} as const satisfies Record<string, readonly string[]>;

export type Category = keyof typeof CATEGORIES;

export const CATEGORY_NAMES = Object.keys(CATEGORIES) as Category[];

export const PERSON_NAMES = ['Mia', 'Tom', 'Ava', 'Leo', 'Zoe', 'Sam'] as const;

export const DAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'] as const;

/** What a review is about. */
export const REVIEW_NOUNS = ['soup', 'room', 'film', 'staff', 'bus', 'park', 'book', 'song', 'cafe', 'hotel'] as const;

/** Review adjectives by polarity; the polarity of a review is the polarity of its adjectives. */
export const POSITIVE_ADJECTIVES = ['tasty', 'warm', 'kind', 'fresh', 'clean', 'cozy'] as const;
export const NEGATIVE_ADJECTIVES = ['cold', 'rude', 'dull', 'noisy', 'dirty', 'slow'] as const;

/**
 * Label words of `sentiment` and `membership`, in two lists: the first label of an instruction
 * (positive, "if so") is always from `FIRST_LABELS`, the second (negative, "if not") from
 * `SECOND_LABELS`. Which word of its list an instruction names changes from instance to instance,
 * so a model has to copy the word the instruction names. Two things let the byte-level base
 * model learn to copy within a few minutes of training (docs/synth.md has the measurements):
 * the two slots draw from disjoint lists (one list for both slots left it at V-score 0.3), and
 * no two of the 20 words share a first letter (with lists of 30 it answered `good` for `gold`,
 * `plus` for `pos`: held-out V-score 0.78, seen AP 0.29; with these, 0.99 and 0.56).
 */
export const FIRST_LABELS = [
  'good', 'yes', 'true', 'up', 'plus', 'sun', 'kite', 'harp', 'ring', 'coat',
] as const;
export const SECOND_LABELS = [
  'bad', 'no', 'false', 'down', 'moon', 'iron', 'wall', 'lamp', 'east', 'alpha',
] as const;
