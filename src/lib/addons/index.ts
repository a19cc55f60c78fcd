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
 * Loads the addon at `path` (absolute), as require() would but without the module loader: require
 * first resolves the path (a realpath, the package scope's package.json), ≈ 1 ms per addon of a
 * 1-byte `fanout cat`, which loads three. Throws as require() does (not built for this Node…).
 * Loading one twice in a process (two bundles each holding this module) gives a second, working
 * exports object: Node finds an N-API addon's init by its symbol (checked for each of ours).
 */
function loadAddon(path: string): unknown {
  const module = { exports: {} };
  process.dlopen(module, path);
  return module.exports;
}
