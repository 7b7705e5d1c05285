/**
 * A tiny task set for run tests, written by the test itself: label tasks whose key parts (the
 * label words) decide the answer, a seed instruction and one rewrite per task, train and test
 * instances, and one stream.
 */
import type { InstanceRecord, InstructionRecord, TaskRecord, TaskSet } from '../../src/data/taskset.js';

const WORDS = ['ant', 'bee', 'cat', 'dog', 'eel', 'fox', 'gnu', 'hen', 'ibis', 'jay', 'kiwi', 'lynx', 'mole', 'newt', 'orca', 'puma'];

function spanOf(text: string, word: string, from = 0) {
  const start = text.indexOf(word, from);
  if (start < 0) throw new Error(`fixture: '${word}' not in '${text}'`);
  return { start, end: start + word.length, kind: 'label' as const };
}

/**
 * `seen` + `heldOut` tasks; task k answers labels[k][0] for words of even length, else labels[k][1].
 */
export function tinyTaskSet(options: { seen?: number; heldOut?: number; train?: number; test?: number; emptyTrainTask?: boolean } = {}): TaskSet {
  const seen = options.seen ?? 3, heldOut = options.heldOut ?? 1, nTrain = options.train ?? 8, nTest = options.test ?? 4;
  const labels = [['yes', 'no'], ['up', 'down'], ['hot', 'cold'], ['red', 'blue'], ['on', 'off']];
  const tasks: TaskRecord[] = [], instructions: InstructionRecord[] = [], instances: InstanceRecord[] = [];
  const ids: string[] = [];
  for (let k = 0; k < seen + heldOut; k++) {
    const id = `task${k}`;
    ids.push(id);
    const [a, b] = labels[k % labels.length];
    tasks.push({ task_id: id, kind: 'classification', label_set: [a, b], source: 'test', categories: [] });
    const seedText = `Is the word even? Answer '${a}' or '${b}'.`;
    instructions.push({ task_id: id, instruction_id: `${id}/seed`, text: seedText, key_spans: [spanOf(seedText, a), spanOf(seedText, b, seedText.indexOf(a) + a.length)], origin: 'seed', key_source: 'explicit', parent_id: null });
    const varText = `Reply '${a}' when the word has even length, otherwise '${b}'.`;
    instructions.push({ task_id: id, instruction_id: `${id}/breadth-1`, text: varText, key_spans: [spanOf(varText, a), spanOf(varText, b, varText.indexOf(a) + a.length)], origin: 'breadth', key_source: 'explicit', parent_id: `${id}/seed` });
    const emptyTrain = options.emptyTrainTask && k === 0;
    for (let i = 0; i < nTrain + nTest; i++) {
      const split = i < nTrain ? 'train' : 'test';
      if (emptyTrain && split === 'train') continue;
      const w = WORDS[(i * 5 + k * 3) % WORDS.length];
      instances.push({ task_id: id, instance_id: `${id}-${i}`, split, input: w, outputs: [w.length % 2 === 0 ? a : b] });
    }
  }
  return { tasks, instructions, instances, streams: [{ name: 'main', seen: ids.slice(0, seen), held_out: ids.slice(seen) }] };
}
