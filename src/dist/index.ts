/**
 * The processes of a data-parallel training job. A job started by an MPI launcher (`mpirun -np k
 * kpig train …`) has k ranks: each takes its slice of every global batch, the gradients are summed
 * over the ranks (MPI allreduce) before every optimizer step, and rank 0 writes what the job
 * writes. Anything else is a one-process world. The communicator is an interface so that another
 * transport (NCCL, with a GPU backend) can stand behind it.
 */
import { ClusterError, KpigError } from '../errors/index.js';
import { loadAddon, type NativeModel } from '../native/index.js';

export interface World {
  rank: number;
  size: number;
  /** What carries the collectives, e.g. "Open MPI v4.1.4", or "one process". */
  transport: string;
  /** `values` summed over the ranks (every rank calls with the same length, in the same order). */
  allreduceSum(values: number[]): number[];
  /** The model's gradients summed over the ranks. */
  allreduceGrads(model: NativeModel): Promise<void>;
  /** Ends every rank of the job with `code` (a failing rank must: the others wait for it). */
  abort(code: number): never;
}

/** The world of one process. */
export const SINGLE_PROCESS: World = {
  rank: 0,
  size: 1,
  transport: 'one process',
  allreduceSum: (values) => values,
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
    allreduceSum: (values) => Array.from(addon.distAllreduceSum(Float64Array.from(values))),
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
