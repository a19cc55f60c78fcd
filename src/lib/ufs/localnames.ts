import { readdir } from 'node:fs/promises';
import type { Dirent } from 'node:fs';

/**
 * File names that are not UTF-8, in a directory source. Node's readdir gives names as strings,
 * with U+FFFD for each byte that is no UTF-8: such a name names no file (stat of it is ENOENT),
 * or another file whose real name has U+FFFD there. Neither can become a key, so the listing
 * leaves them out and says so (ListOptions.onSkipped).
 */

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function isUtf8(raw: Uint8Array): boolean {
  try {
    strictUtf8.decode(raw);
    return true;
  } catch {
    return false;
  }
}

/** The name for messages: valid UTF-8 as is, every other byte as \xNN (Python's backslashreplace). */
export function printableName(raw: Uint8Array): string {
  let out = '';
  let i = 0;
  while (i < raw.length) {
    const lead = raw[i]!;
    const length = lead < 0x80 ? 1 : lead >= 0xf5 ? 0 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 ? 2 : 0;
    if (length > 0 && i + length <= raw.length && isUtf8(raw.subarray(i, i + length))) {
      out += strictUtf8.decode(raw.subarray(i, i + length));
      i += length;
    } else {
      out += `\\x${lead.toString(16).padStart(2, '0')}`;
      i++;
    }
  }
  return out;
}

/**
 * `dirents` (readdir's, as strings) without the names that are not UTF-8, and those names' raw
 * bytes. Only a listing with a U+FFFD in a name reads the directory again, as bytes: every other
 * listing costs nothing more. Of two raw names read as one string, the UTF-8 one is kept.
 */
export async function withoutUndecodable(dir: string, dirents: Dirent[]): Promise<{ dirents: Dirent[]; undecodable: Buffer[] }> {
  if (!dirents.some((d) => d.name.includes('\uFFFD'))) return { dirents, undecodable: [] };
  const raw = await readdir(dir, { encoding: 'buffer' });
  const undecodable = raw.filter((name) => !isUtf8(name));
  const real = new Set(raw.filter((name) => isUtf8(name) && name.includes(0xef)).map((name) => name.toString('utf8')));
  const kept = new Set<string>();
  const named = dirents.filter((d) => {
    if (!d.name.includes('\uFFFD')) return true;
    if (!real.has(d.name) || kept.has(d.name)) return false;
    kept.add(d.name);
    return true;
  });
  return { dirents: named, undecodable };
}
