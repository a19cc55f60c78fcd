import { addonPath, optionalAddon } from '../addons/index.js';

/**
 * Buffers a process reads into for as long as it runs (the sockets' slabs), in transparent huge
 * pages where native/memory is built: on the VMs these hosts run on, touching fresh memory costs a
 * page fault per 4 KiB page, and a fault is dear (32 MiB touched for the first time: 83–98 ms in
 * 4 KiB pages, 3–6.5 ms in 2 MiB pages). A `fanout cat` touches its window of slabs while its first
 * pages arrive. Chosen once, at first use, and shown as `memoryPath`: 'huge' from the addon, 'js'
 * for Buffer.allocUnsafeSlow (no addon, or FANOUT_NO_NATIVE_MEMORY=1). A slab the addon cannot map
 * is allocated as usual too, and where THP is off the kernel backs the regions with 4 KiB pages.
 */
export type MemoryPath = 'huge' | 'js';

interface MemoryAddon {
  slab(bytes: number): Buffer | undefined;
}

export const MEMORY_ADDON_PATH = addonPath('memory', 'fanout_memory');

let addon: MemoryAddon | null | undefined;

function load(): MemoryAddon | null {
  if (addon !== undefined) return addon;
  return (addon = optionalAddon<MemoryAddon>(MEMORY_ADDON_PATH, process.env.FANOUT_NO_NATIVE_MEMORY === '1') ?? null);
}

/** The most one slab may be from the addon (larger ones are allocated as usual). */
export const MAX_SLAB_BYTES = 64 * 1024 * 1024;

/**
 * `bytes` of uninitialised memory meant to be kept and reused: from a huge-page region when the
 * addon is there and `bytes` ≤ MAX_SLAB_BYTES, else Buffer.allocUnsafeSlow. Freed when
 * garbage-collected, as any Buffer (smaller ones share a huge page, unmapped once all are).
 */
export function slabBuffer(bytes: number): Buffer {
  const slab = bytes > 0 && bytes <= MAX_SLAB_BYTES ? load()?.slab(bytes) : undefined;
  return slab ?? Buffer.allocUnsafeSlow(bytes);
}

/** How this process allocates its read buffers (for /v1/status and metrics). */
export function memoryPath(): MemoryPath {
  return load() ? 'huge' : 'js';
}

export { containerCutNote, containerMemory, containerShare } from './container.js';
