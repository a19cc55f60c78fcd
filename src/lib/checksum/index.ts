import { createRequire } from 'node:module';
import { addonPath, optionalAddon } from '../addons/index.js';

/**
 * CRC32 of page bytes (the zlib/gzip polynomial: the value in page file names and the
 * x-fanout-crc32 header). Every reader checks every page it receives, and the store every page it
 * writes or loads, so this is on the data path once per byte on each side: native/checksum does it
 * with PCLMUL at ≈ 12 GB/s here where Node's zlib.crc32 (a table) runs at 3–4.5 GB/s. The way is
 * chosen once, at first use, and shown as `checksumPath` ('vclmul' from the addon on a CPU with
 * AVX-512 VPCLMULQDQ (FANOUT_CRC32_NO_AVX512=1 turns it off), 'clmul' on one with carry-less multiply, 'table' from the addon without it, 'js' for Node's zlib);
 * FANOUT_NO_NATIVE_CHECKSUM=1 forces 'js'. Both give the same value for the same bytes.
 */
export type ChecksumPath = 'vclmul' | 'clmul' | 'table' | 'js';

interface ChecksumAddon {
  crc32(data: ArrayBufferView, crc?: number): number;
  kind(): 'vclmul' | 'clmul' | 'table';
  /** Absent where the process has no OpenSSL SHA256/SHA512 to call. */
  digest?(name: DigestName, data: Buffer): Buffer;
}

export type DigestName = 'sha256' | 'sha512';
type Digest = (name: DigestName, data: Buffer) => Buffer;

export const CHECKSUM_ADDON_PATH = addonPath('checksum', 'fanout_checksum');

type Crc32 = (data: ArrayBufferView, crc?: number) => number;
let chosen: { path: ChecksumPath; crc32: Crc32; digest: Digest } | undefined;

function choose(): { path: ChecksumPath; crc32: Crc32; digest: Digest } {
  if (chosen) return chosen;
  const js = { path: 'js' as const, crc32: jsCrc32, digest: cryptoDigest };
  const addon = optionalAddon<ChecksumAddon>(CHECKSUM_ADDON_PATH, process.env.FANOUT_NO_NATIVE_CHECKSUM === '1');
  return (chosen = addon ? { path: addon.kind(), crc32: addon.crc32, digest: addon.digest ?? cryptoDigest } : js);
}

/**
 * node:crypto, loaded by the first digest made without the addon: loading it costs a short
 * command (a 1-byte `fanout cat`, which hashes a page key and builds a ring) 5–15 ms of CPU, where
 * the addon, loaded for the CRC anyway, calls the OpenSSL Node already has.
 */
let crypto: typeof import('node:crypto') | undefined;

function cryptoDigest(name: DigestName, data: Buffer): Buffer {
  crypto ??= createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
  return crypto.createHash(name).update(data).digest();
}

/** SHA-256 of `data` (a string as UTF-8): page keys and ring positions. */
export function sha256(data: string | Buffer): Buffer {
  return choose().digest('sha256', typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
}

/** SHA-512 of `data` (a string as UTF-8): the ring's virtual node positions. */
export function sha512(data: string | Buffer): Buffer {
  return choose().digest('sha512', typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
}

/** The digest through node:crypto, whatever was chosen (tests compare both ways). */
export const digestJs: Digest = cryptoDigest;

/** node:zlib, loaded by the first pure-JS checksum: with the addon, a `fanout cat` never needs it (≈ 1 ms to load). */
let zlib: typeof import('node:zlib') | undefined;

/**
 * Node's zlib.crc32 returns 0 for an empty buffer whatever the running value (zlib's answer to a
 * null pointer): an empty chunk must leave a running CRC unchanged, as the addon does.
 */
function jsCrc32(data: ArrayBufferView, crc = 0): number {
  if (data.byteLength === 0) return crc >>> 0;
  zlib ??= createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib');
  return zlib.crc32(data as Uint8Array, crc);
}

/** CRC32 of `data`, continuing from `crc` (the CRC of the bytes before it; 0 to start). */
export function crc32(data: ArrayBufferView, crc = 0): number {
  return choose().crc32(data, crc);
}

/** How this process computes checksums (for /v1/status and metrics). */
export function checksumPath(): ChecksumPath {
  return choose().path;
}

/** The pure-JS checksum, whatever was chosen (tests compare both ways). */
export const crc32Js: Crc32 = jsCrc32;
