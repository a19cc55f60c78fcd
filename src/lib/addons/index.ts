import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
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
    return createRequire(import.meta.url)(path) as T;
  } catch {
    return undefined;
  }
}
