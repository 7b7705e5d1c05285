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
export type { Gradients, StepOptions, StepOutcome, TrainerOptions, TrainProgress, TrainSummary } from './train/trainer.js';
export { ModelTraining, trainingOf } from './model/training.js';
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
export { TASKSET_SCHEMA_VERSION } from './data/taskset.js';
export type { InstanceRecord, InstructionOrigin, InstructionRecord, KeySource, KeySpanKind, Split, TaskExample, TaskKind, TaskRecord, TaskSet, TaskStream } from './data/taskset.js';
export { readTaskSet, writeTaskSet, TASKSET_FILES } from './data/store.js';
export { validateTaskSet } from './data/validate.js';
export { importSuperNI, readSuperNITask } from './data/superni.js';
export type { ImportOptions, SuperNITask } from './data/superni.js';
export { importArrow, importJsonl, importParquet } from './data/rows.js';
export type { FieldMapping, RowImportOptions } from './data/rows.js';
export { detectFormat, importData, summarizeTaskSet } from './data/ingest.js';
export type { DataFormat, TaskSummary } from './data/ingest.js';
export { splitTask } from './data/split.js';
export type { SplitOptions } from './data/split.js';
export { detectLabelSet, matchLabel } from './data/labels.js';
export type { DetectLabelOptions } from './data/labels.js';
export { chooseInstruction, instructionsByTask } from './data/select.js';
export type { ChooseOptions } from './data/select.js';
export { extractKeyParts } from './keyparts/heuristic.js';
export type { HeuristicKeyParts, LabelList } from './keyparts/heuristic.js';
export { labelRecall, locateKeyParts, parseKeySpans } from './keyparts/explicit.js';
export type { LabelRecall, LocatedKeyParts } from './keyparts/explicit.js';
export { annotateKeyParts, annotateTaskSet } from './keyparts/llm-annotate.js';
export type { KeyPartMethod, LlmKeyParts } from './keyparts/llm-annotate.js';
export { ChatClient } from './llm/client.js';
export type { ChatClientOptions, ChatMessage, ChatRequestOptions, ChatResult } from './llm/client.js';
export { checkVariant, diversify, REWRITE_KINDS } from './rewrite/variant.js';
export type { DiversifyOptions, DiversifyResult, RejectedVariant, RewriteDraft, RewriteKind, RewriteRequest, Rewriter } from './rewrite/variant.js';
export { offlineRewriter } from './rewrite/offline.js';
export { llmRewriter } from './rewrite/llm-rewriter.js';
export type { LlmRewriterOptions } from './rewrite/llm-rewriter.js';
export { distinctN, diversityReport, novelN } from './rewrite/diversity.js';
export type { DiversityReport } from './rewrite/diversity.js';
export { chatTemplate, encodeExample, loadPromptTemplate, promptTokens, resolvePromptTemplate, SEGMENT_CODES, stopTokens, superniTemplate, templateSpec, tokenizePrompt, userTemplate } from './template/index.js';
export type { ChatTemplateOptions, PromptParts, PromptTemplate, RenderedPrompt, Segment, SegmentRange, TokenizedPrompt } from './template/index.js';
export { porterStem } from './eval/porter.js';
export { lcsLength, rougeL, rougeLScore, rougeTokenize } from './eval/rouge.js';
export type { RougeScore } from './eval/rouge.js';
export { exactMatch, isValidOutput, normalizeAnswer, normalizeLabel, pScore, vScore } from './eval/metrics.js';
export type { PScore, ScoredOutput, TaskScores } from './eval/metrics.js';
export { matrixMetrics } from './eval/matrix.js';
export type { MatrixMetricOptions, MatrixMetrics, ScoreMatrix } from './eval/matrix.js';
export {
  PREDICTIONS_SCHEMA_VERSION,
  readPredictionFile,
  readPredictions,
  scorePrediction,
  summarizeRows,
  summarizeTasks,
  taskSetFingerprint,
  writePredictions,
} from './eval/predictions.js';
export type { PredictionMeta, PredictionRow, TaskSummary as PredictionTaskSummary } from './eval/predictions.js';
export { evaluateModel } from './eval/evaluate.js';
export type { EvaluateOptions } from './eval/evaluate.js';
export { readRun } from './report/run-dir.js';
export type { EvalScores, RunData, RunStatus, StageRecord, TrainStep } from './report/run-dir.js';
export { writeReport } from './report/report.js';
export type { ReportFiles } from './report/report.js';
export { renderMarkdown } from './report/markdown.js';
export { renderHtml } from './report/html.js';
export { loadRunConfig, resolveRunConfig, RunConfigError, STRATEGY_NAMES } from './pipeline/run-config.js';
export type { EvalConfig, RunConfig, StrategyConfig, StrategyName, TrainConfig } from './pipeline/run-config.js';
export { resolveStream, runContinual } from './pipeline/continual.js';
export type { RunEvent, RunOptions, RunResult } from './pipeline/continual.js';
export { builtinStrategy, insclPlan, kpigPlan, randomPlan } from './replay/strategy.js';
export type { ItemScore, PlanItem, ReplayPlan, Strategy, StrategyContext, TaskAllocation } from './replay/strategy.js';
export { ewcPenalty, kpigObjective, lwfDistillation, plainSequences } from './replay/loss-terms.js';
export type { LossTerm, PlanContext, StageEndContext, StageStartContext, StepContext, StepTerms } from './replay/loss-terms.js';
export { insclAllocation, kpigAllocation, lowestIndices, roundExactSum } from './replay/allocate.js';
export { cosineCost, emd } from './replay/ot.js';
export { insInfo, llmTags, offlineTags } from './replay/insinfo.js';
export { deriveSeed, mulberry32, sampleWithoutReplacement, shuffled } from './random/rng.js';
export { BASE_RECIPES, FAMILIES, SUITE_DEFAULTS, SYNTH_VERSION, buildBaseModel, defaultBaseModelCache, generateSuite, mixtureExamples, resolveSuiteOptions } from './synth/index.js';
export type { BaseModel, BaseModelOptions, BaseModelProgress, BaseModelRecipe, FamilyName, MixtureExample, SuiteOptions, SynthSuite, SynthTaskSpec } from './synth/index.js';
