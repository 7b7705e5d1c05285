/** The synthetic key-part task suite and its tiny base model (docs/synth.md). */
export { FAMILIES, HELD_OUT_FAMILY_ORDER, STREAM_FAMILY_ORDER, renderInstruction } from './families.js';
export type { Family, FamilyName, KeyPartDef } from './families.js';
export { SUITE_DEFAULTS, SYNTH_VERSION, generateSuite, mixtureExamples, resolveSuiteOptions } from './tasks.js';
export type { MixtureExample, ResolvedSuiteOptions, SuiteOptions, SynthSuite, SynthTaskSpec } from './tasks.js';
export { BASE_RECIPES, buildBaseModel, defaultBaseModelCache } from './base-model.js';
export type { BaseModel, BaseModelManifest, BaseModelOptions, BaseModelProgress, BaseModelRecipe } from './base-model.js';
