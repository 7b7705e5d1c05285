/**
 * Learning-rate schedules: linear warm-up from 0 to the peak, then cosine or linear decay to
 * `minLrRatio · lr` at the last step, or constant.
 */
export type ScheduleKind = 'cosine' | 'linear' | 'constant';

export interface ScheduleOptions {
  lr: number;
  totalSteps: number;
  warmupSteps?: number;
  schedule?: ScheduleKind;
  minLrRatio?: number;
}

/**
 * Learning rate of (0-based) step `step`.
 *
 * @example
 * learningRate(0, { lr: 1e-3, totalSteps: 100, warmupSteps: 10 }); // 1e-4
 */
export function learningRate(step: number, o: ScheduleOptions): number {
  const warm = o.warmupSteps ?? 0;
  if (step < warm) return (o.lr * (step + 1)) / warm;
  const kind = o.schedule ?? 'cosine';
  if (kind === 'constant') return o.lr;
  const span = Math.max(1, o.totalSteps - warm);
  const progress = Math.min(1, (step - warm) / span);
  const floor = o.lr * (o.minLrRatio ?? 0);
  const shape = kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return floor + (o.lr - floor) * shape;
}
