/**
 * The processes of a data-parallel training job. A job started by an MPI launcher (`mpirun -np k
 * kpig train …`) has k ranks: each takes its slice of every global batch, the gradients are summed
 * over the ranks (MPI allreduce) before every optimizer step, and rank 0 writes what the job
 * writes. Anything else is a one-process world. The communicator is an interface so that another
 * transport (NCCL, with a GPU backend) can stand behind it.
 */
import { ClusterError, KpigError } from '../errors/index.js';
import type { ModelTraining } from '../model/training.js';
import { loadAddon } from '../native/index.js';

export interface World {
  rank: number;
  size: number;
  /** What carries the collectives, e.g. "Open MPI v4.1.4", or "one process". */
  transport: string;
  /** `values` summed over the ranks (every rank calls with the same length, in the same order). */
  allreduceSum(values: ArrayLike<number>): Float64Array;
  /** The model's gradients summed over the ranks. */
  allreduceGrads(model: ModelTraining): Promise<void>;
  /** Ends every rank of the job with `code` (a failing rank must: the others wait for it). */
  abort(code: number): never;
}

/** The world of one process. */
export const SINGLE_PROCESS: World = {
  rank: 0,
  size: 1,
  transport: 'one process',
  allreduceSum: (values) => Float64Array.from(values),
  allreduceGrads: async () => undefined,
  abort: (code) => process.exit(code),
};

/** Ranks of this job as MPI launchers announce them (Open MPI, PMI/PMIx, MPICH's Hydra, MVAPICH); 1 outside a launcher. */
export function launcherSize(env: NodeJS.ProcessEnv = process.env): number {
  for (const k of ['OMPI_COMM_WORLD_SIZE', 'PMIX_SIZE', 'PMI_SIZE', 'MPI_LOCALNRANKS', 'MV2_COMM_WORLD_SIZE']) {
    const n = Number(env[k]);
    if (Number.isInteger(n) && n >= 1) return n;
  }
  return 1;
}

let world: World | null = null;

/**
 * This process's world: MPI when an MPI launcher started it with more than one rank (the addon
 * must be built with MPI), else one process. Started once; later calls return the same world.
 *
 * @throws ClusterError when launched with several ranks by an addon built without MPI
 * @example
 * const w = worldFromEnv();
 * if (w.rank === 0) console.log(`training on ${w.size} ranks (${w.transport})`);
 */
export function worldFromEnv(env: NodeJS.ProcessEnv = process.env): World {
  if (world) return world;
  const expected = launcherSize(env);
  if (expected <= 1) return (world = SINGLE_PROCESS);
  const addon = loadAddon();
  let info;
  try {
    info = addon.distInit();
  } catch (err) {
    const message = err instanceof KpigError || err instanceof Error ? err.message : String(err);
    throw new ClusterError(`started by an MPI launcher with ${expected} ranks, but MPI cannot start here: ${message}`, { cause: err });
  }
  if (info.size !== expected) throw new ClusterError(`the MPI launcher announced ${expected} ranks but MPI reports ${info.size}: is this kpig linked to the launcher's MPI?`);
  world = {
    rank: info.rank,
    size: info.size,
    transport: info.library,
    allreduceSum: (values) => addon.distAllreduceSum(values instanceof Float64Array ? values : Float64Array.from(values)),
    allreduceGrads: (model) => model.allreduceGrads(),
    abort: (code) => {
      addon.distAbort(code);
      return process.exit(code);
    },
  };
  return world;
}

/**
 * Exits this process with `code`, and the whole job with it when this is one rank of several:
 * a rank that stops alone would leave the others waiting in their next allreduce.
 */
export function exitJob(code: number): never {
  return (world ?? SINGLE_PROCESS).abort(code);
}

/** Waits until every rank has arrived (what one rank wrote before it is there for the others after it). */
export function barrier(world: World): void {
  if (world.size > 1) world.allreduceSum([0]);
}

/**
 * The items [start, end) of `n` that this rank takes when work is split into contiguous shares:
 * ⌊r·n/k⌋ to ⌊(r+1)·n/k⌋, so the shares cover every item once, in order.
 *
 * @example
 * const [from, to] = shareOf(world, items.length);
 */
export function shareOf(world: World, n: number): [number, number] {
  return [Math.floor((world.rank * n) / world.size), Math.floor(((world.rank + 1) * n) / world.size)];
}

/**
 * Rows computed by different ranks, gathered on every rank: each rank passes `n` × `width`
 * numbers with its own rows filled and every other row zero (an allreduce sum is then an
 * allgather). Every rank gets the same array back.
 */
export function gatherRows(world: World, rows: Float64Array): Float64Array {
  return world.size === 1 ? rows : world.allreduceSum(rows);
}

/**
 * Texts computed by different ranks, gathered on every rank: `texts[i]` is the text where this
 * rank computed item i and null where another did; every item must be computed by exactly one
 * rank. Every rank gets the same list back.
 */
export function gatherTexts(world: World, texts: ReadonlyArray<string | null>): string[] {
  if (world.size === 1) return texts.map((t) => t ?? '');
  const enc = new TextEncoder();
  const bytes = texts.map((t) => (t === null ? null : enc.encode(t)));
  // Per item: its byte length and how many ranks computed it (one).
  const own = new Float64Array(2 * texts.length);
  bytes.forEach((b, i) => {
    if (b !== null) {
      own[2 * i] = b.length;
      own[2 * i + 1] = 1;
    }
  });
  const meta = gatherRows(world, own);
  const offsets = new Array<number>(texts.length + 1);
  offsets[0] = 0;
  for (let i = 0; i < texts.length; i++) {
    if (meta[2 * i + 1] !== 1) throw new ClusterError(`gathering texts: item ${i} was computed by ${meta[2 * i + 1]} ranks instead of one`);
    offsets[i + 1] = offsets[i] + meta[2 * i];
  }
  const flat = new Float64Array(offsets[texts.length]);
  bytes.forEach((b, i) => b?.forEach((x, j) => (flat[offsets[i] + j] = x)));
  const all = gatherRows(world, flat);
  const dec = new TextDecoder();
  return texts.map((_, i) => dec.decode(Uint8Array.from(all.subarray(offsets[i], offsets[i + 1]))));
}

/**
 * Rank 0's `values` on every rank (a broadcast, and a barrier): decisions that depend on files
 * rank 0 writes, such as where a resumed run picks up, are taken once and followed by all.
 */
export function fromLead(world: World, values: number[]): number[] {
  if (world.size === 1) return values;
  return Array.from(world.allreduceSum(world.rank === 0 ? values : values.map(() => 0)));
}
