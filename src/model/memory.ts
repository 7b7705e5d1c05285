/**
 * Memory estimates made before a big allocation, so that a model too large for the machine is
 * refused with what it needs and what there is, instead of swapping or dying in the allocator.
 */
import { constants } from 'node:buffer';
import { totalmem } from 'node:os';
import { OutOfMemoryError } from '../errors/index.js';

const GiB = 1024 ** 3;
const gib = (n: number) => `${(n / GiB).toFixed(1)} GiB`;

/** The share of the machine's memory one allocation may plan for. */
export const MEMORY_SHARE = 0.85;

/**
 * Throws OutOfMemoryError when `bytes` exceed {@link MEMORY_SHARE} of the machine's RAM
 * (`machineBytes`, default `os.totalmem()`).
 *
 * @example
 * checkMemory(7e9 * 4, 'loading models/llama-7b (float32 weights)');
 */
export function checkMemory(bytes: number, what: string, machineBytes = totalmem()): void {
  if (bytes > MEMORY_SHARE * machineBytes)
    throw new OutOfMemoryError(`${what} needs about ${gib(bytes)}, more than ${Math.round(MEMORY_SHARE * 100)}% of this machine's ${gib(machineBytes)} of RAM`);
}

/**
 * Throws OutOfMemoryError for one tensor larger than a Node buffer can be.
 *
 * @example
 * checkTensorBytes(2 ** 33, 'model.embed_tokens.weight');
 */
export function checkTensorBytes(bytes: number, name: string): void {
  if (bytes > constants.MAX_LENGTH)
    throw new OutOfMemoryError(`tensor ${name} would take ${gib(bytes)}, more than the ${gib(constants.MAX_LENGTH)} one Node buffer can hold`);
}
