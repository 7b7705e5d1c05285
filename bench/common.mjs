// Shared pieces of the benchmarks: bench models (cached in the temp folder), timing, the PyTorch
// peer (../shared/peers/torch_kpig.py) run in the same benchmark run, and peak RSS of a child.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { mkdtempSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRandomModel } from '../dist/model/writer.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const peersDir = resolve(repoRoot, '..', 'shared', 'peers');

/** A random model of a preset, written once into the temp folder and reused. */
export async function benchModel(preset, seed = 0) {
  const dir = join(tmpdir(), 'kpig-bench-models', `${preset}-s${seed}`);
  if (!existsSync(join(dir, 'config.json'))) await createRandomModel(dir, { preset, seed, overwrite: true });
  return dir;
}

/** The median of a list of numbers (the upper middle one for an even count). */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Median, min and max seconds of `reps` timed calls after `warmup` untimed ones. */
export async function timed(fn, { warmup = 2, reps = 5 } = {}) {
  for (let i = 0; i < warmup; i++) await fn();
  const ts = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  ts.sort((a, b) => a - b);
  return { median: ts[Math.floor(ts.length / 2)], min: ts[0], max: ts[ts.length - 1] };
}

/** Python with torch for the peer, or null. */
export function torchPython() {
  for (const py of ['/usr/bin/python3', 'python3'])
    if (spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) return py;
  return null;
}

/** Runs torch_kpig.py with its tuned defaults and returns its JSON result line. */
export function torchPeer(args) {
  const py = torchPython();
  if (!py) throw new Error('PyTorch is not installed for /usr/bin/python3 (apt-get install -y python3-torch python3-numpy)');
  const r = spawnSync(py, [join(peersDir, 'torch_kpig.py'), ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`torch_kpig.py ${args.join(' ')} failed:\n${r.stderr}`);
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  return JSON.parse(line);
}

/** Deterministic pseudo-random integers in [0, n). */
export function rng(seed) {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

/**
 * The machine's fp32 FMA peak (GFLOP/s) with `threads` threads, measured now with the peers'
 * fma_peak.c (register-resident FMA chains), or null when it cannot be built here. `isa` 'avx2'
 * reads its 256-bit line (the AVX2 class on any machine); otherwise its last line, the widest fp32
 * FMA path the machine has.
 */
export function fmaPeak(threads, isa = 'native') {
  const src = join(peersDir, 'fma_peak.c');
  if (!existsSync(src)) return null;
  const exe = join(mkdtempSync(join(tmpdir(), 'kpig-fma-')), 'fma_peak');
  if (spawnSync('gcc', ['-O2', '-march=native', '-fopenmp', src, '-o', exe]).status !== 0) return null;
  const r = spawnSync(exe, [], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  const pattern = isa === 'avx2' ? /AVX2 FP32 FMA\s*:\s*([\d.]+)/g : /FP32 FMA peak\s*:\s*([\d.]+)/g;
  const vals = [...r.stdout.matchAll(pattern)].map((m) => Number(m[1]));
  return vals.length ? Math.max(...vals) : null;
}

/** The CPU's model name and the widest ISA it has, for the header line of every bench. */
export function cpuDescription() {
  let info = '';
  try {
    info = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {}
  const name = /model name\s*:\s*(.*)/.exec(info)?.[1]?.trim() ?? 'unknown CPU';
  const flags = /flags\s*:\s*(.*)/.exec(info)?.[1]?.split(' ') ?? [];
  const widest = flags.includes('amx_tile') ? 'AMX + AVX-512' : flags.includes('avx512f') ? 'AVX-512' : flags.includes('avx2') ? 'AVX2 + FMA' : 'SSE';
  return { cpu: name, cpu_isa: widest, date: new Date().toISOString().slice(0, 10) };
}

/**
 * The CPU class a bench measures: 'native' (what the machine has) or 'avx2' (the AVX2 + FMA class
 * on any machine: KPIG_ISA=avx2 for kpig, set before its first kernel runs, and PyTorch with AVX2
 * ATen kernels and OpenBLAS's Haswell kernels). Returns the peer arguments for torch_kpig.py.
 */
export function cpuClass(cls) {
  if (cls === 'avx2') {
    process.env.KPIG_ISA = 'avx2';
    return { torchArgs: ['--aten-cap', 'avx2', '--coretype', 'Haswell'] };
  }
  if (cls !== 'native') throw new Error(`--class must be native or avx2, not '${cls}'`);
  return { torchArgs: [] };
}

/**
 * The onnxruntime-node peer (../shared/peers/node/ort_ig.cjs) on the IG batch of torch_kpig.py:
 * the peers folder is copied to a writable scratch folder once (the export writes beside it),
 * the ONNX graph exported once (gigabytes for the 124M shapes), then timed. `ortModules` is a
 * node_modules folder holding onnxruntime-node (install it in a scratch folder with
 * `ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node@1.30.0`).
 */
export function ortPeer(model, threads, reps, ortModules) {
  const scratch = join(tmpdir(), 'kpig-bench-peers');
  const peers = join(scratch, 'peers');
  if (!existsSync(join(peers, 'torch_kpig.py'))) cpSync(peersDir, peers, { recursive: true });
  const dir = join(peers, 'out', 'onnx', model);
  if (!existsSync(join(dir, 'ig.onnx'))) {
    const py = torchPython();
    const r = spawnSync(py, [join(peers, 'export_onnx.py'), '--model', model], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`export_onnx.py --model ${model} failed:\n${r.stderr}`);
  }
  const r = spawnSync(process.execPath, [join(peers, 'node', 'ort_ig.cjs'), '--dir', dir, '--threads', String(threads), '--graph', 'ig', '--warmup', '1', '--reps', String(reps)], {
    encoding: 'utf8',
    env: { ...process.env, NODE_PATH: ortModules },
    maxBuffer: 1 << 26,
  });
  if (r.status !== 0) throw new Error(`ort_ig.cjs failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop());
}

/**
 * Matmul FLOPs of one forward pass of a T-token sequence with the LM head on R rows: the
 * projections and MLP of every token, attention over the full T × T, and the head.
 */
export function forwardMatmulFlops(info, T, R) {
  const C = info.hiddenSize, F = info.intermediateSize, L = info.numLayers, V = info.vocabSize;
  const qkv = C * (info.numHeads + 2 * info.numKvHeads) * info.headDim;
  const mlp = info.arch === 'gpt2' ? 2 * C * F : 3 * C * F;
  const perToken = L * (qkv + info.numHeads * info.headDim * C + mlp);
  const attn = L * 2 * 2 * info.numHeads * info.headDim * T * T; // q·kᵀ and p·v
  return 2 * T * perToken + attn + 2 * R * C * V;
}
