// `kpig score --slurm` on a real one-node Slurm cluster (scripts/slurm-local.sh, which .ci/run
// starts): a job array of shards and a merge job, a cancelled array task re-run alone on
// re-submission, and the merged table equal to the unsharded output byte for byte. Without a
// cluster (no answer from sinfo) those tests say so and are skipped; the dry run needs none.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { arraySpec, sbatchScript, shellQuote } from '../src/cluster/slurm.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
const root = mkdtempSync(join(tmpdir(), 'kpig-slurm-'));
afterAll(() => {
  dirs.cleanup();
  rmSync(root, { recursive: true, force: true });
});

const cluster = spawnSync('sinfo', ['-h', '-o', '%a'], { encoding: 'utf8' });
const hasCluster = cluster.status === 0 && /up/.test(cluster.stdout);
const clusterTitle = hasCluster ? '' : ' (skipped: no Slurm cluster answers sinfo; .ci/run starts one with scripts/slurm-local.sh)';

const kpig = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

function rows(n: number) {
  const labels = ['yes', 'no', 'maybe', 'true', 'false'];
  return Array.from({ length: n }, (_, i) => {
    const a = labels[i % 5], b = labels[(i + 2) % 5];
    const instruction = `Task ${i % 9}: answer "${a}" or "${b}".`;
    const s1 = instruction.indexOf(`"${a}"`), s2 = instruction.indexOf(`"${b}"`);
    return { task_id: `t${i % 9}`, instance_id: `i${i}`, instruction, key_spans: [[s1, s1 + a.length + 2], [s2, s2 + b.length + 2]], input: `case ${i}`, output: a };
  });
}

/** Waits for `path` to appear, polling the file system (no accounting needed), for at most `seconds`. */
async function appears(path: string, seconds = 120): Promise<boolean> {
  for (let waited = 0; waited < seconds * 1000; waited += 250) {
    if (existsSync(path)) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

const jobIds = (stderr: string) => ({
  array: /submitted array job (\d+)/.exec(stderr)?.[1],
  merge: /merge job (\d+)/.exec(stderr)?.[1],
});

describe('kpig score --slurm', () => {
  let model: string;
  let data: string;
  let full: string;
  const opts = ['--chunk-rows', '50'];
  beforeAll(async () => {
    model = await dirs.make({ preset: 'gpt2-nano', seed: 4, config: { vocab_size: 259 } });
    data = join(root, 'rows.jsonl');
    writeFileSync(data, rows(400).map((r) => JSON.stringify(r)).join('\n') + '\n');
    full = join(root, 'full.arrow');
    expect(kpig(['score', model, '--data', data, '--out', full, ...opts]).status).toBe(0);
  });

  it('--dry-run prints the array and merge scripts and writes nothing', () => {
    const out = join(root, 'dry.arrow');
    const r = kpig(['score', model, '--data', data, '--out', out, ...opts, '--slurm', '--array', '4', '--partition', 'gpu', '--time', '1:00:00', '--cpus-per-task', '3', '--dry-run']);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('4 shards in');
    expect(r.stderr).toContain('4 to run (0,1,2,3), 0 already done');
    expect(r.stdout).toContain('#SBATCH --array=0-3');
    expect(r.stdout).toContain('#SBATCH --partition=gpu');
    expect(r.stdout).toContain('#SBATCH --time=1:00:00');
    expect(r.stdout).toContain('#SBATCH --cpus-per-task=3');
    expect(r.stdout).toContain(`--shard "$SLURM_ARRAY_TASK_ID"/4 --threads 3 --chunk-rows 50`);
    expect(r.stdout).toContain(`merge ${out}.shards/shard-0-of-4.arrow`);
    expect(existsSync(`${out}.shards`)).toBe(false);
  });

  it('without sbatch on PATH the submission is a clear error, and --slurm flags without --slurm are usage errors', () => {
    const emptyPath = mkdtempSync(join(root, 'path-'));
    let r = kpig(['score', model, '--data', data, '--out', join(root, 'nosb.arrow'), ...opts, '--slurm'], { PATH: emptyPath });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('sbatch was not found on PATH');
    r = kpig(['score', model, '--data', data, '--out', join(root, 'x.arrow'), '--partition', 'gpu']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--partition goes with --slurm');
    r = kpig(['score', model, '--data', data, '--out', join(root, 'x.arrow'), '--slurm', '--shard', '0/2']);
    expect(r.status).toBe(2);
  });

  it(`a job array of 4 shards and the merge job complete; the merged table is the unsharded output${clusterTitle}`, { skip: !hasCluster, timeout: 180_000 }, async () => {
    const out = join(root, 'array.arrow');
    const r = kpig(['score', model, '--data', data, '--out', out, ...opts, '--slurm', '--array', '4']);
    expect(r.status).toBe(0);
    const ids = jobIds(r.stderr);
    expect(ids.array).toMatch(/^\d+$/);
    expect(ids.merge).toMatch(/^\d+$/);
    expect(await appears(out)).toBe(true);
    expect(Buffer.compare(readFileSync(out), readFileSync(full))).toBe(0);
    expect(readdirSync(join(`${out}.shards`, 'logs')).sort()).toEqual(['merge.log', 'shard-0.log', 'shard-1.log', 'shard-2.log', 'shard-3.log']);
  });

  it(`a cancelled array task cancels the merge; re-submitting runs only that shard, and the merge is the same${clusterTitle}`, { skip: !hasCluster, timeout: 180_000 }, async () => {
    const out = join(root, 'cancel.arrow');
    // Submitted held (SBATCH_HOLD), so task 2 is cancelled before it can start.
    let r = kpig(['score', model, '--data', data, '--out', out, ...opts, '--slurm', '--array', '4'], { SBATCH_HOLD: '1' });
    expect(r.status).toBe(0);
    const first = jobIds(r.stderr);
    expect(spawnSync('scancel', [`${first.array}_2`]).status).toBe(0);
    expect(spawnSync('scontrol', ['release', first.array!]).status).toBe(0);
    spawnSync('scontrol', ['release', first.merge!]);
    const shards = `${out}.shards`;
    expect(await appears(join(shards, 'shard-3-of-4.arrow'))).toBe(true);
    expect(await appears(join(shards, 'shard-0-of-4.arrow'))).toBe(true);
    expect(await appears(join(shards, 'shard-1-of-4.arrow'))).toBe(true);
    // The merge job was cancelled with its dependency (squeue no longer lists it).
    for (let i = 0; i < 120 && spawnSync('squeue', ['-h', '-j', first.merge!], { encoding: 'utf8' }).stdout.trim(); i++) await new Promise((res) => setTimeout(res, 250));
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(shards, 'shard-2-of-4.arrow'))).toBe(false);
    r = kpig(['score', model, '--data', data, '--out', out, ...opts, '--slurm', '--array', '4']);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('1 to run (2), 3 already done');
    expect(r.stderr).toMatch(/submitted array job \d+ \(tasks 2\)/);
    expect(await appears(out)).toBe(true);
    expect(Buffer.compare(readFileSync(out), readFileSync(full))).toBe(0);
  });
});

describe('job scripts', () => {
  it('array ids become ranges; words are quoted for bash', () => {
    expect(arraySpec([5, 0, 1, 2, 3, 7, 8])).toBe('0-3,5,7-8');
    expect(arraySpec([4])).toBe('4');
    expect(shellQuote('plain/path-1.arrow')).toBe('plain/path-1.arrow');
    expect(shellQuote("it's [x]")).toBe(`'it'\\''s [x]'`);
    const s = sbatchScript({ jobName: 'j', output: '/l/%a.log', array: [0, 1] }, ['echo', { prefix: 'a b', suffix: '.txt' }]);
    expect(s).toContain(`exec echo 'a b'"$SLURM_ARRAY_TASK_ID".txt`);
    // bash itself reads the word back as one argument
    const r = spawnSync('bash', ['-c', `SLURM_ARRAY_TASK_ID=7; set -- ${s.split('exec echo ')[1].trim()}; printf '%s|' "$#" "$1"`], { encoding: 'utf8' });
    expect(r.stdout).toBe('1|a b7.txt|');
  });
});

describe('kpig sweep', () => {
  let config: string;
  beforeAll(async () => {
    const { writeTaskSet } = await import('../src/data/store.js');
    const { tinyTaskSet } = await import('./support/tasks.js');
    const model = await dirs.make({ preset: 'llama-nano', seed: 3, config: { vocab_size: 259 } });
    const data = join(root, 'tasks');
    await writeTaskSet(data, tinyTaskSet());
    config = join(root, 'sweep-config.json');
    writeFileSync(
      config,
      JSON.stringify({
        model, data, stream: 'main', strategy: { m: 3 }, seed: 1, threads: 1,
        train: { batchSize: 4, lr: 3e-3, checkpointEvery: 1, maxLength: 128 },
        eval: { maxInstancesPerTask: 2, maxNewTokens: 4, batchSize: 8 },
      }),
    );
  });

  it('--dry-run lists one array task per (strategy, seed) and the report job; a bad strategy fails before anything runs', () => {
    const out = join(root, 'sweep-dry');
    let r = kpig(['sweep', config, '--strategies', 'none,random', '--seeds', '0,1', '-o', out, '--slurm', '--dry-run']);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('4 runs in');
    expect(r.stderr).toContain('4 to run (0: none seed 0, 1: random seed 0, 2: none seed 1, 3: random seed 1), 0 done');
    expect(r.stdout).toContain('#SBATCH --array=0-3');
    expect(r.stdout).toContain(`sweep --task "$SLURM_ARRAY_TASK_ID" ${out}`);
    expect(r.stdout).toContain(`report ${out}/none-s0 ${out}/random-s0 ${out}/none-s1 ${out}/random-s1 -o ${out}/report`);
    expect(existsSync(out)).toBe(false);
    r = kpig(['sweep', config, '--strategies', 'none,nonesuch', '-o', out]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('nonesuch');
  });

  it(`a Slurm sweep runs every (strategy, seed) as an array task, then the report; a re-submission runs nothing again${clusterTitle}`, { skip: !hasCluster, timeout: 300_000 }, async () => {
    const out = join(root, 'sweep');
    let r = kpig(['sweep', config, '--strategies', 'none,random', '--seeds', '0,1', '-o', out, '--slurm']);
    expect(r.status).toBe(0);
    expect(await appears(join(out, 'report', 'report.md'), 240)).toBe(true);
    for (const run of ['none-s0', 'random-s0', 'none-s1', 'random-s1'])
      expect(JSON.parse(readFileSync(join(out, run, 'status.json'), 'utf8')).state).toBe('done');
    const md = readFileSync(join(out, 'report', 'report.md'), 'utf8');
    expect(md).toContain('# kpig report: 4 runs');
    r = kpig(['sweep', config, '--strategies', 'none,random', '--seeds', '0,1', '-o', out, '--slurm']);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('0 to run, 4 done');
    expect(r.stderr).toContain('every run is done: submitted report job');
    r = kpig(['sweep', config, '--strategies', 'none', '--seeds', '0', '-o', out, '--slurm', '--dry-run']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('another sweep');
  });
});
