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

/** Label words of `sentiment`: a task pairs one positive and one negative word. */
export const SENTIMENT_POSITIVE_LABELS = ['good', 'pos', 'like', 'up', 'plus', 'love', 'yay', 'win', 'smile', 'glad'] as const;
export const SENTIMENT_NEGATIVE_LABELS = ['bad', 'neg', 'dislike', 'down', 'minus', 'hate', 'nay', 'lose', 'frown', 'upset'] as const;

/** Label words of `membership`: a task pairs one affirmative and one negative word. */
export const AFFIRMATIVE_LABELS = ['yes', 'true', 'right', 'correct', 'present', 'found', 'sure', 'agree'] as const;
export const NEGATIVE_LABELS = ['no', 'false', 'wrong', 'incorrect', 'absent', 'missing', 'nope', 'disagree'] as const;
