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
export { Trainer, latestCheckpoint } from './train/trainer.js';
export type { StepOutcome, TrainerOptions, TrainProgress, TrainSummary } from './train/trainer.js';
export { addLora, loadAdapter, loadCheckpoint, loraSettings, mergeLora, saveAdapter, saveCheckpoint, saveModel } from './train/checkpoint.js';
export type { LoraSettings, TrainerState } from './train/checkpoint.js';
export { learningRate } from './train/schedule.js';
export type { ScheduleKind, ScheduleOptions } from './train/schedule.js';
export { readInstructions, renderPrompt, tokenizeExample } from './data/instructions.js';
export type { FieldMap, InstructionExample, TrainingSequence } from './data/instructions.js';
export { scorePairs } from './scoring/pairs.js';
export type { IgPairInput, IgScore, IgTokenValues } from './scoring/pairs.js';
export { buildPair, maskInstruction, validateSpans } from './scoring/mask.js';
export type { KeySpan, MaskMode, ScoringRow, TokenPair } from './scoring/mask.js';
export { scoreTable, SCORE_INPUT_COLUMNS } from './scoring/table.js';
export type { ScoreTableOptions } from './scoring/table.js';
export { readScoringChunks, scoreStream } from './scoring/stream.js';
