import { FanoutError, errorFromJSON } from '../core/errors.js';

/** A worker's JSON answer, or its error (with the worker's code) for any status but 200. */
export function parseJsonBody(url: string, statusCode: number, text: string): unknown {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new FanoutError('WORKER_UNAVAILABLE', `${url} answered HTTP ${statusCode} with a non-JSON body`);
  }
  if (statusCode !== 200) throw errorFromJSON(body, statusCode);
  return body;
}

/** An endpoint is an http(s) URL of a worker; anything else fails here, not as a fetch error later. */
export function checkEndpoint(endpoint: string): string {
  let url: URL | undefined;
  try {
    url = new URL(endpoint);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname) {
    throw new FanoutError('INVALID_ARGUMENT', `endpoint "${String(endpoint).slice(0, 200)}" is not a worker URL: expected http://HOST:PORT or https://HOST:PORT`);
  }
  return endpoint.replace(/\/+$/, '');
}
