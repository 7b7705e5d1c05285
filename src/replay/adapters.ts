/**
 * The arithmetic of strategies that train a new LoRA adapter per task (docs/continual.md): O-LoRA's
 * orthogonality penalty and L2 term, and RegLoRA's record of the largest entries of a task's update
 * with the penalty on later updates there. Matrices are row-major in PEFT's layout: A is
 * (rank × in), B is (out × rank), the update is ΔW = scale·B·A (out × in).
 */
import { InputError } from '../errors/index.js';

/** A loss and its gradient with respect to one matrix. */
export interface PenaltyGrad {
  loss: number;
  grad: Float32Array;
}

/**
 * O-LoRA's orthogonality penalty of the new adapter's A against earlier tasks' A:
 * L = Σⱼ ‖Aⱼ·Aₜᵀ‖²_F (squared Frobenius norm of the r_j × r overlap), with
 * ∂L/∂Aₜ = 2·Σⱼ (Aₜ·Aⱼᵀ)·Aⱼ.
 *
 * @example
 * const { loss, grad } = orthogonalityPenalty(aNow, [aTask1, aTask2], 8, 64);
 */
export function orthogonalityPenalty(current: Float32Array, earlier: readonly Float32Array[], rank: number, inDim: number): PenaltyGrad {
  if (current.length !== rank * inDim) throw new InputError(`orthogonalityPenalty: A has ${current.length} entries, rank × in is ${rank * inDim}`);
  const grad = new Float32Array(current.length);
  let loss = 0;
  for (const prev of earlier) {
    if (prev.length % inDim !== 0) throw new InputError(`orthogonalityPenalty: an earlier A has ${prev.length} entries, not a multiple of in = ${inDim}`);
    const rj = prev.length / inDim;
    // G = Aₜ·Aⱼᵀ (rank × rj); its entries are the overlaps whose squares the penalty sums.
    const G = new Float64Array(rank * rj);
    for (let i = 0; i < rank; i++)
      for (let j = 0; j < rj; j++) {
        let s = 0;
        for (let k = 0; k < inDim; k++) s += current[i * inDim + k] * prev[j * inDim + k];
        G[i * rj + j] = s;
        loss += s * s;
      }
    for (let i = 0; i < rank; i++)
      for (let j = 0; j < rj; j++) {
        const g = 2 * G[i * rj + j];
        if (g === 0) continue;
        for (let k = 0; k < inDim; k++) grad[i * inDim + k] += g * prev[j * inDim + k];
      }
  }
  return { loss, grad };
}

/** ‖θ‖₂ (not squared, as O-LoRA's code sums it per matrix) and its gradient θ/‖θ‖ (zero at θ = 0). */
export function normPenalty(theta: Float32Array): PenaltyGrad {
  let s = 0;
  for (const v of theta) s += v * v;
  const n = Math.sqrt(s);
  const grad = new Float32Array(theta.length);
  if (n > 0) for (let i = 0; i < theta.length; i++) grad[i] = theta[i] / n;
  return { loss: n, grad };
}

/** B·A (out × in), unscaled. */
export function adapterProduct(B: Float32Array, A: Float32Array, out: number, rank: number, inDim: number): Float32Array {
  if (B.length !== out * rank || A.length !== rank * inDim) throw new InputError(`adapterProduct: B has ${B.length} entries (want ${out * rank}), A ${A.length} (want ${rank * inDim})`);
  const d = new Float32Array(out * inDim);
  for (let i = 0; i < out; i++)
    for (let r = 0; r < rank; r++) {
      const b = B[i * rank + r];
      if (b === 0) continue;
      for (let k = 0; k < inDim; k++) d[i * inDim + k] += b * A[r * inDim + k];
    }
  return d;
}

/**
 * RegLoRA's record of a task: the flat indices of the ⌊share·n⌋ entries of largest |ΔW| (ties to
 * the lower index), ascending.
 */
export function largestEntries(delta: Float32Array, share: number): Int32Array {
  if (!(share > 0 && share <= 1)) throw new InputError(`largestEntries: share must be in (0, 1], got ${share}`);
  const k = Math.floor(share * delta.length);
  const order = Array.from({ length: delta.length }, (_, i) => i);
  order.sort((a, b) => Math.abs(delta[b]) - Math.abs(delta[a]) || a - b);
  return Int32Array.from(order.slice(0, k)).sort();
}

/**
 * RegLoRA's penalty on the current adapter at recorded entries (SEFE's code: the mean of |(B·A)ᵢₖ|
 * over the recorded indices of every earlier task, duplicates counted), with its gradients:
 * ∂/∂B[i,:] = Σ sign(ΔWᵢₖ)·A[:,k]/n, ∂/∂A[:,k] = Σ sign(ΔWᵢₖ)·B[i,:]/n.
 */
export function recordedEntryPenalty(B: Float32Array, A: Float32Array, out: number, rank: number, inDim: number, indices: Int32Array): { loss: number; gradA: Float32Array; gradB: Float32Array } {
  const gradA = new Float32Array(A.length);
  const gradB = new Float32Array(B.length);
  const n = indices.length;
  let loss = 0;
  if (n === 0) return { loss, gradA, gradB };
  for (const idx of indices) {
    if (idx < 0 || idx >= out * inDim) throw new InputError(`recordedEntryPenalty: index ${idx} outside a ${out} × ${inDim} matrix`);
    const i = Math.floor(idx / inDim), k = idx % inDim;
    let d = 0;
    for (let r = 0; r < rank; r++) d += B[i * rank + r] * A[r * inDim + k];
    loss += Math.abs(d);
    const sg = Math.sign(d) / n;
    if (sg === 0) continue;
    for (let r = 0; r < rank; r++) {
      gradB[i * rank + r] += sg * A[r * inDim + k];
      gradA[r * inDim + k] += sg * B[i * rank + r];
    }
  }
  return { loss: loss / n, gradA, gradB };
}
