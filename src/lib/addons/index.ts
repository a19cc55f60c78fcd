import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This checkout's root (dist/src/lib/addons/ → four levels up). */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');

/** Where native/<dir>'s addon `<target>.node` is built (scripts/build-native.sh). */
export function addonPath(dir: string, target: string): string {
  return join(root, 'native', dir, 'build/Release', `${target}.node`);
}

/**
 * An optional native addon of the data path: undefined when `off` (its FANOUT_NO_* switch, or
 * a platform it is not for), when it is not built, or when it cannot be loaded (built for another
 * Node ABI, say). Every caller has a pure-JS way for then.
 */
export function optionalAddon<T>(path: string, off = false): T | undefined {
  if (off || !existsSync(path)) return undefined;
  try {
    return loadAddon(path) as T;
  } catch {
    return undefined;
  }
}

/**
 * Addons loaded in this process, by path. Kept on `process` under a registered symbol so that the
 * copies of this module in two bundles share it: an addon is initialised once per process, as
 * require() does it (the send addon's init makes its pool of send threads).
 */
const loaded: Map<string, unknown> = ((process as unknown as Record<symbol, Map<string, unknown> | undefined>)[Symbol.for('fanout.addons')] ??= new Map());

/**
 * Loads the addon at `path` (absolute), as require() would but without the module loader: require
 * first resolves the path (a realpath, the package scope's package.json), ≈ 1 ms per addon of a
 * 1-byte `fanout cat`, which loads three. Throws as require() does (not built for this Node…).
 */
function loadAddon(path: string): unknown {
  if (loaded.has(path)) return loaded.get(path);
  const module = { exports: {} };
  process.dlopen(module, path);
  loaded.set(path, module.exports);
  return module.exports;
}
