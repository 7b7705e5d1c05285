/**
 * Information gain of key parts (DESIGN.md §1) for token-level full/masked pairs: the native engine
 * runs each pair's shared prefix once and the LM head only where response tokens are predicted.
 */
import { fromNative } from '../errors/index.js';
import { type Model, packSequences } from '../model/model.js';

/** A full/masked pair of token sequences that end with the same `responseLen` response tokens. */
export interface IgPairInput {
  full: ArrayLike<number>;
  masked: ArrayLike<number>;
  responseLen: number;
}

export interface IgTokenValues {
  nllFull: Float32Array;
  nllMasked: Float32Array;
  kl: Float32Array;
  js: Float32Array;
  entropyFull: Float32Array;
  entropyMasked: Float32Array;
}

/** Scores of one pair, in nats, means over its response tokens. */
export interface IgScore {
  ceFull: number;
  ceMasked: number;
  /** ce_masked − ce_full: how much the correct response depends on the key parts. */
  igCe: number;
  /** mean KL(p_full ‖ p_masked) */
  igKl: number;
  /** mean JS(p_full, p_masked), ≤ ln 2 */
  igJs: number;
  entropyFull: number;
  entropyMasked: number;
  nTokens: number;
  /** Tokens the two sequences share from the start (computed once). */
  sharedPrefix: number;
  /** Positions the engine ran for this pair: at most len(full) + len(masked) − sharedPrefix (less when the prefix cache held a prefix). */
  positionsComputed: number;
  perToken?: IgTokenValues;
}

/**
 * Scores full/masked pairs with the model (teacher-forced on the shared response).
 *
 * @example
 * const [s] = await scorePairs(model, [{ full: [1, 2, 3, 9, 9], masked: [1, 7, 3, 9, 9], responseLen: 2 }]);
 * console.log(s.igCe, s.igKl, s.igJs);
 */
export async function scorePairs(model: Model, pairs: IgPairInput[], options: { perToken?: boolean } = {}): Promise<IgScore[]> {
  if (pairs.length === 0) return [];
  const full = packSequences(pairs.map((p) => p.full));
  const masked = packSequences(pairs.map((p) => p.masked));
  const r = Int32Array.from(pairs.map((p) => p.responseLen));
  let cols;
  try {
    cols = await model.igColumns(full, masked, r, options.perToken ?? false);
  } catch (err) {
    throw fromNative(err);
  }
  const out: IgScore[] = [];
  let at = 0;
  for (let i = 0; i < pairs.length; i++) {
    const s: IgScore = {
      ceFull: cols.ceFull[i],
      ceMasked: cols.ceMasked[i],
      igCe: cols.igCe[i],
      igKl: cols.igKl[i],
      igJs: cols.igJs[i],
      entropyFull: cols.entropyFull[i],
      entropyMasked: cols.entropyMasked[i],
      nTokens: cols.nTokens[i],
      sharedPrefix: cols.sharedPrefix[i],
      positionsComputed: cols.positionsComputed[i],
    };
    if (options.perToken) {
      const n = pairs[i].responseLen;
      const sl = (a?: Float32Array) => a!.subarray(at, at + n);
      s.perToken = {
        nllFull: sl(cols.tokNllFull),
        nllMasked: sl(cols.tokNllMasked),
        kl: sl(cols.tokKl),
        js: sl(cols.tokJs),
        entropyFull: sl(cols.tokEntropyFull),
        entropyMasked: sl(cols.tokEntropyMasked),
      };
      at += n;
    }
    out.push(s);
  }
  return out;
}
