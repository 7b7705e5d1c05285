/** The task set a run reads: the folder named by the config's `data` field. */
export { readTaskSet as loadTaskSet } from '../data/store.js';
