#!/usr/bin/env node
// Builds the native addon at install time: with CMake (cmake-js) when cmake ≥ 3.15 is on PATH,
// otherwise with node-gyp from binding.gyp. KPIG_BUILD=cmake|gyp forces one. Nothing is downloaded:
// both build against the Node-API headers of installed packages or of this Node.
import { spawnSync } from 'node:child_process';

function cmakeVersion() {
  const r = spawnSync('cmake', ['--version'], { encoding: 'utf8' });
  const m = r.status === 0 ? /cmake version (\d+)\.(\d+)/.exec(r.stdout) : null;
  return m ? [Number(m[1]), Number(m[2])] : null;
}

function run(cmd, args) {
  console.log(`kpig: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', shell: process.platform === 'win32' });
  if (r.status !== 0) {
    console.error(`kpig: building the native addon failed (${cmd} exited with ${r.status ?? r.signal}).`);
    process.exit(r.status ?? 1);
  }
}

const forced = process.env.KPIG_BUILD;
const v = cmakeVersion();
const haveCmake = v !== null && (v[0] > 3 || (v[0] === 3 && v[1] >= 15));
if (forced === 'cmake' || (forced !== 'gyp' && haveCmake)) {
  run('npx', ['cmake-js', 'compile', '--log-level', 'warn']);
} else {
  if (forced !== 'gyp') console.log('kpig: cmake ≥ 3.15 not found; building with node-gyp (binding.gyp) instead');
  run('npx', ['node-gyp', 'rebuild']);
}
