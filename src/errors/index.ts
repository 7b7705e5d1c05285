/**
 * Typed errors. Every error the toolkit raises on bad input is a `KpigError` whose `code` says what
 * kind of problem it is and whose message says what was wrong and where (file, tensor, field).
 */

/** Machine-readable error kinds; the native core uses the same codes. */
export type KpigErrorCode =
  | 'E_IO' // a file could not be read or written
  | 'E_SAFETENSORS' // a malformed safetensors file
  | 'E_CONFIG' // a malformed or inconsistent config.json / tokenizer file
  | 'E_WEIGHTS' // a missing, unexpected or mis-shaped tensor
  | 'E_UNSUPPORTED' // a valid model the engine does not implement
  | 'E_INPUT' // bad arguments to an API call (token ids, lengths, options)
  | 'E_ADDON' // the native addon could not be loaded
  | 'E_CANCELLED' // the caller cancelled a long call
  | 'E_ENDPOINT' // a remote endpoint (an LLM server) failed, timed out or answered malformed data
  | 'E_MEMORY' // the work needs more memory than the machine has (said before allocating it)
  | 'E_CLUSTER' // Slurm or MPI is missing, refused a job, or does not match the launcher
  | 'E_INTERNAL'; // a bug: please report

export class KpigError extends Error {
  readonly code: KpigErrorCode;
  constructor(code: KpigErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A safetensors file that cannot be read: truncated, bad header, bad offsets, unknown dtype. */
export class SafetensorsError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_SAFETENSORS', message, options);
  }
}

/** A config.json (or tokenizer file) that is missing, malformed or inconsistent. */
export class ModelConfigError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_CONFIG', message, options);
  }
}

/** Weights that do not match the config: missing, unexpected or mis-shaped tensors. */
export class ModelWeightsError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_WEIGHTS', message, options);
  }
}

/** A well-formed model the engine does not implement (model_type, rope_scaling, ...). */
export class UnsupportedModelError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_UNSUPPORTED', message, options);
  }
}

/** Bad arguments to an API call: token id out of range, sequence too long, bad option. */
export class InputError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_INPUT', message, options);
  }
}

/** File-system failure (missing file, permission, disk full), with the path in the message. */
export class KpigIOError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_IO', message, options);
  }
}

/** The native addon could not be loaded; the message lists what was tried and what to do. */
export class AddonLoadError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_ADDON', message, options);
  }
}

/** A long call was cancelled through its AbortSignal. */
export class CancelledError extends KpigError {
  constructor(message = 'the operation was cancelled') {
    super('E_CANCELLED', message);
  }
}

/** A remote endpoint (an OpenAI-compatible LLM server) kept failing after its retries, or refused the request. */
export class EndpointError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_ENDPOINT', message, options);
  }
}

const byCode: Record<string, new (message: string) => KpigError> = {
  E_SAFETENSORS: SafetensorsError,
  E_CONFIG: ModelConfigError,
  E_WEIGHTS: ModelWeightsError,
  E_UNSUPPORTED: UnsupportedModelError,
  E_INPUT: InputError,
  E_IO: KpigIOError,
  E_CANCELLED: CancelledError,
};

/** Slurm's client is missing or sbatch refused a job (its message included), or MPI cannot start under the launcher. */
export class ClusterError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_CLUSTER', message, options);
  }
}

/** The memory a model or a batch would need exceeds what the machine has; raised before allocating it. */
export class OutOfMemoryError extends KpigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_MEMORY', message, options);
    this.name = 'OutOfMemoryError';
  }
}

/** Turns an error thrown by the native addon (a plain Error with a `code`) into its typed class. */
export function fromNative(err: unknown): unknown {
  if (err instanceof KpigError || !(err instanceof Error)) return err;
  const code = (err as Error & { code?: string }).code;
  const Cls = code ? byCode[code] : undefined;
  if (!Cls) return new KpigError('E_INTERNAL', err.message, { cause: err });
  return new Cls(err.message);
}
