// The two native builds compile the same sources: binding.gyp (node-gyp, the fallback without
// CMake) lists its files by hand, CMake globs them. A source added to the engine and not to
// binding.gyp would build with one and fail to link with the other.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');

/** The sources CMake compiles into the addon without MPI: its GLOB folders, the no-MPI communicator and the addon. */
function cmakeSources(): string[] {
  const cmake = readFileSync(join(root, 'CMakeLists.txt'), 'utf8');
  const glob = /file\(GLOB KPIG_CORE_SOURCES CONFIGURE_DEPENDS([^)]*)\)/.exec(cmake);
  expect(glob, 'CMakeLists.txt globs KPIG_CORE_SOURCES').not.toBeNull();
  const files: string[] = [];
  for (const pattern of glob![1].split(/\s+/).filter(Boolean)) {
    const m = /^\$\{CMAKE_CURRENT_SOURCE_DIR\}\/(.+)\/\*\.cpp$/.exec(pattern);
    expect(m, `a GLOB pattern this test reads: ${pattern}`).not.toBeNull();
    for (const f of readdirSync(join(root, m![1]))) if (f.endsWith('.cpp')) files.push(`${m![1]}/${f}`);
  }
  expect(cmake).toContain('native/src/dist/comm_none.cpp');
  expect(cmake).toContain('native/addon/addon.cpp');
  return [...files, 'native/src/dist/comm_none.cpp', 'native/addon/addon.cpp'].sort();
}

describe('binding.gyp and CMake build the same engine', () => {
  it('binding.gyp lists exactly the sources CMake compiles (without MPI)', () => {
    const gyp = readFileSync(join(root, 'binding.gyp'), 'utf8');
    const listed = [...gyp.matchAll(/"(native\/[^"]+\.cpp)"/g)].map((m) => m[1]).sort();
    expect(listed).toEqual(cmakeSources());
  });
});
