/**
 * kpig: continual instruction tuning with key-part information gain.
 * The library surface: models (load, forward, generate, create), tokenizers and typed errors.
 */
export * from './errors/index.js';
export { Model, packSequences } from './model/model.js';
export type { FinishReason, Generation, GenerateOptions, LoadModelOptions, ModelInfo, PackedSequences } from './model/model.js';
export { PRESETS, resolveConfig, describeConfig, countParameters } from './model/config.js';
export type { ModelConfig, PresetName } from './model/config.js';
export { createRandomModel } from './model/writer.js';
export type { RandomModelOptions, WeightsDtype } from './model/writer.js';
export { readSafetensors, writeSafetensors } from './model/safetensors.js';
export { loadTokenizer, writeByteTokenizer, ByteTokenizer, HFTokenizer } from './tokenizer/index.js';
export type { Tokenizer } from './tokenizer/index.js';
