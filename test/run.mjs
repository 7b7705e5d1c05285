#!/usr/bin/env node
// `npm test`: the vitest suite, then the C++ tests (ctest), then one closing line with the totals
// of both. Extra arguments go to vitest (e.g. `npm test -- test/forward.test.ts`).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const scratch = mkdtempSync(join(tmpdir(), 'kpig-test-run-'));
const report = join(scratch, 'vitest.json');
const vitest = spawnSync(
  'npx',
  ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { stdio: 'inherit' },
);
let passed = 0;
let failed = 0;
let skipped = 0;
if (existsSync(report)) {
  const r = JSON.parse(readFileSync(report, 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + r.numTodoTests;
} else {
  failed += 1; // vitest did not even report
}
rmSync(scratch, { recursive: true, force: true });

let ctestOk = true;
if (existsSync('build/CTestTestfile.cmake')) {
  const ctest = spawnSync('ctest', ['--test-dir', 'build', '--output-on-failure'], { encoding: 'utf8' });
  process.stdout.write(ctest.stdout ?? '');
  process.stderr.write(ctest.stderr ?? '');
  const m = /(\d+)% tests passed, (\d+) tests failed out of (\d+)/.exec(ctest.stdout ?? '');
  if (m) {
    passed += Number(m[3]) - Number(m[2]);
    failed += Number(m[2]);
  }
  ctestOk = ctest.status === 0 && m !== null;
  if (!m) failed += 1;
} else {
  console.log('C++ tests: build/CTestTestfile.cmake not found (build with `npx cmake-js compile`); not run');
  failed += 1;
}
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(vitest.status === 0 && ctestOk && failed === 0 ? 0 : 1);
