import { FanoutError } from './errors.js';

/**
 * A validated "/MOUNT/PATH". Rejects anything that could escape a mount: "..", ".", empty
 * segments, backslashes, NUL and control characters. Callers pass already-percent-decoded
 * text; decoding happens once, at the HTTP edge, so "%2e%2e" arrives here as "..".
 */
export interface FanoutPath {
  mount: string;
  /** Path inside the mount, "" for the mount's root. No leading or trailing slash. */
  path: string;
}

const MOUNT_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function isValidMountName(name: string): boolean {
  return MOUNT_NAME.test(name);
}

/** Whether `name` can be one segment of a fanout path (what parseFanoutPath accepts). */
export function isFanoutName(name: string): boolean {
  // eslint-disable-next-line no-control-regex
  return name !== '' && name !== '.' && name !== '..' && !/[\u0000-\u001f\u007f\\/]/.test(name);
}

export function parseFanoutPath(raw: string): FanoutPath {
  if (typeof raw !== 'string' || raw.length === 0) throw invalid(raw, 'empty path');
  if (raw.length > 4096) throw invalid(raw.slice(0, 64) + '…', 'path longer than 4096 characters');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(raw)) throw invalid(raw, 'control characters and backslashes are not allowed');
  const trimmed = raw.replace(/^\/+/, '').replace(/\/+$/, '');
  if (trimmed === '') return { mount: '', path: '' };
  const segments = trimmed.split('/');
  for (const segment of segments) {
    if (segment === '') throw invalid(raw, 'empty path segment');
    if (segment === '.' || segment === '..') throw invalid(raw, `"${segment}" segments are not allowed`);
  }
  const [mount, ...rest] = segments;
  if (!isValidMountName(mount!)) throw invalid(raw, `"${mount}" is not a valid mount name`);
  return { mount: mount!, path: rest.join('/') };
}

/** Decodes a percent-encoded URL path; a malformed escape is a client error, not a crash. */
export function decodeUrlPath(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw new FanoutError('INVALID_PATH', `malformed percent-encoding in path: ${encoded.slice(0, 200)}`);
  }
}

/** Encodes each segment of a path for use in a URL, keeping the slashes. */
export function encodeUrlPath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export function joinFanoutPath(mount: string, path: string): string {
  return path ? `/${mount}/${path}` : `/${mount}/`;
}

function invalid(raw: string, why: string): FanoutError {
  return new FanoutError('INVALID_PATH', `invalid path ${JSON.stringify(raw)}: ${why}`);
}
