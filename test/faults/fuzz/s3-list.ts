import { compareKeys } from '../../../src/gateway/listing.js';
import type { SourceFile } from './fixture.js';

/** Reading ListObjects answers and checking them against the source tree. */

export interface ListAnswer {
  keys: string[];
  prefixes: string[];
  truncated: boolean;
  nextToken?: string;
  nextMarker?: string;
}

function unescapeXml(text: string): string {
  return text.replace(/&(amp|lt|gt|quot|apos);/g, (_, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" })[e]!);
}

export function parseList(xml: string, urlEncoded: boolean): ListAnswer {
  const decode = (s: string) => {
    const text = unescapeXml(s);
    return urlEncoded ? decodeURIComponent(text) : text;
  };
  const keys = [...xml.matchAll(/<Contents><Key>([^<]*)<\/Key>/g)].map((m) => decode(m[1]!));
  const prefixes = [...xml.matchAll(/<CommonPrefixes><Prefix>([^<]*)<\/Prefix><\/CommonPrefixes>/g)].map((m) => decode(m[1]!));
  const nextToken = /<NextContinuationToken>([^<]*)</.exec(xml)?.[1];
  const nextMarker = /<NextMarker>([^<]*)</.exec(xml)?.[1];
  return {
    keys,
    prefixes,
    truncated: /<IsTruncated>true<\/IsTruncated>/.test(xml),
    nextToken: nextToken === undefined ? undefined : unescapeXml(nextToken),
    nextMarker: nextMarker === undefined ? undefined : decode(nextMarker),
  };
}

/** The keys and directories of a bucket, from the source tree. */
export function bucketKeys(files: Map<string, SourceFile>): { keys: string[]; dirs: string[] } {
  const keys = [...files.keys()].sort(compareKeys);
  const dirs = new Set<string>();
  for (const key of keys) {
    const parts = key.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/') + '/');
  }
  return { keys, dirs: [...dirs] };
}

/** What one page of a listing must satisfy, whatever the parameters were. */
export function checkListPage(answer: ListAnswer, files: Map<string, SourceFile>, params: { prefix: string; delimiter: string; maxKeys: number }, extraDirs: string[]): string | undefined {
  const { prefix, delimiter, maxKeys } = params;
  for (const key of answer.keys) {
    if (!files.has(key) && !extraDirs.includes(key)) return `listed key ${JSON.stringify(key)} is no file or empty directory of the bucket`;
    if (!key.startsWith(prefix)) return `listed key ${JSON.stringify(key)} outside prefix ${JSON.stringify(prefix)}`;
    if (delimiter && key.indexOf(delimiter, prefix.length) !== -1) return `key ${JSON.stringify(key)} should have rolled up at delimiter ${JSON.stringify(delimiter)}`;
  }
  for (let i = 1; i < answer.keys.length; i++) {
    if (compareKeys(answer.keys[i - 1]!, answer.keys[i]!) >= 0) return `keys out of order: ${JSON.stringify(answer.keys.slice(i - 1, i + 1))}`;
  }
  const known = [...files.keys(), ...extraDirs];
  for (const p of answer.prefixes) {
    if (!delimiter) return `common prefix ${JSON.stringify(p)} without a delimiter`;
    if (!p.startsWith(prefix) || !p.endsWith(delimiter)) return `common prefix ${JSON.stringify(p)} does not fit prefix ${JSON.stringify(prefix)} and delimiter ${JSON.stringify(delimiter)}`;
    if (!known.some((k) => k.startsWith(p))) return `common prefix ${JSON.stringify(p)} covers nothing in the bucket`;
  }
  if (new Set(answer.prefixes).size !== answer.prefixes.length) return `a common prefix repeats: ${JSON.stringify(answer.prefixes)}`;
  if (answer.keys.length + answer.prefixes.length > maxKeys) return `${answer.keys.length + answer.prefixes.length} entries for max-keys ${maxKeys}`;
  return undefined;
}

/** All keys under a prefix when there is no delimiter (files, and empty directories' markers "dir/"): what a full listing must return exactly. */
export function expectedKeys(files: Map<string, SourceFile>, prefix: string, emptyDirs: string[]): string[] {
  return [...files.keys(), ...emptyDirs].filter((k) => k.startsWith(prefix)).sort(compareKeys);
}
