// The addon loader: a failed load says every path it tried, why each failed, and what to do.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AddonLoadError } from '../src/errors/index.js';
import { addonCandidates, loadAddonFrom } from '../src/native/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kpig-addon-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('addon loader', () => {
  it('lists every path tried, with its reason, and how to build', () => {
    const missing = join(dir, 'missing.node');
    const corrupt = join(dir, 'corrupt.node');
    writeFileSync(corrupt, 'not a shared object');
    let err: unknown;
    try {
      loadAddonFrom([missing, corrupt]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AddonLoadError);
    const msg = (err as Error).message;
    expect(msg).toContain(`${missing}: not found`);
    expect(msg).toMatch(new RegExp(`${corrupt}: .*(invalid ELF|too short|file)`));
    expect(msg).toContain('npx cmake-js compile');
    expect(msg).toContain('KPIG_ADDON');
  });

  it('looks at KPIG_ADDON first', () => {
    const before = process.env.KPIG_ADDON;
    process.env.KPIG_ADDON = join(dir, 'x.node');
    try {
      expect(addonCandidates()[0]).toBe(join(dir, 'x.node'));
    } finally {
      if (before === undefined) delete process.env.KPIG_ADDON;
      else process.env.KPIG_ADDON = before;
    }
  });

  it('loads the built addon', () => {
    const addon = loadAddonFrom(addonCandidates());
    expect(typeof addon.loadModel).toBe('function');
  });
});
