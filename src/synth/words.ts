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
 * Label words of `sentiment` and `membership`: a task's instruction names two of them, and which
 * one answers is only written there. There are many of them so that a model cannot get a task
 * right by remembering a few label words: it has to copy the one the instruction names.
 */
export const LABEL_WORDS = [
  'good', 'bad', 'yes', 'no', 'true', 'false', 'pos', 'neg', 'up', 'down', 'plus', 'minus',
  'sun', 'moon', 'star', 'rain', 'snow', 'wind', 'gold', 'iron', 'stone', 'wood', 'glass', 'salt',
  'bread', 'rice', 'corn', 'boat', 'ship', 'car', 'kite', 'drum', 'bell', 'horn', 'harp', 'lamp',
  'door', 'wall', 'roof', 'bed', 'chair', 'desk', 'cup', 'bowl', 'fork', 'spoon', 'ring', 'coin',
  'key', 'box', 'bag', 'hat', 'shoe', 'sock', 'coat', 'north', 'south', 'east', 'west', 'alpha',
] as const;
