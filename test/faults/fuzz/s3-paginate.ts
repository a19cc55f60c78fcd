import fc from 'fast-check';
import { answered, checkS3Error } from './checks.js';
import { checkListPage, expectedKeys, parseList, type ListAnswer } from './s3-list.js';
import type { S3View } from './s3-api.js';
import { encodeQuery, signV4 } from './s3sign.js';
import type { Sender } from './send.js';

/**
 * Paging through a listing (ListObjectsV2 continuation tokens, v1 markers) with small max-keys
 * returns exactly what one unpaged listing returns, each entry once, and without a delimiter
 * exactly the bucket's files under the prefix.
 */
export interface PagingSpec {
  bucket: string;
  prefix: string;
  delimiter: string;
  maxKeys: number;
  version: 1 | 2;
}

export function pagingArb(view: S3View): fc.Arbitrary<PagingSpec> {
  return fc.record({
    bucket: fc.constantFrom(...view.buckets),
    prefix: fc.constantFrom('', '', 'nested/', 'nested/a', 'n', 'dir', 'a/', 'z', 'unicodé', 'empty-dir/', 'x'),
    delimiter: fc.constantFrom('', '', '/', 'a', 'e', '.'),
    maxKeys: fc.integer({ min: 1, max: 4 }),
    version: fc.constantFrom<1 | 2>(1, 2),
  });
}

const MAX_PAGES = 60;

export async function checkPaging(view: S3View, sender: Sender, spec: PagingSpec): Promise<string | undefined> {
  const list = async (query: [string, string][]): Promise<ListAnswer | string> => {
    const path = `/${spec.bucket}`;
    const headers = signV4({ method: 'GET', path, query, host: view.host, extra: [] });
    const res = answered(await sender.send({ method: 'GET', target: path + encodeQuery(query), headers }));
    if (typeof res === 'string') return res;
    if (res.status !== 200) return `listing ${JSON.stringify(query)} answered ${res.status}: ${checkS3Error(res, 'GET') ?? res.body.toString().slice(0, 300)}`;
    return parseList(res.body.toString('utf8'), false);
  };
  const base: [string, string][] = [['prefix', spec.prefix], ['delimiter', spec.delimiter]];
  if (spec.version === 2) base.push(['list-type', '2']);
  const whole = await list(base);
  if (typeof whole === 'string') return whole;
  if (whole.truncated) return 'a listing of a dozen files is truncated at 1000 keys';
  const files = view.files.get(spec.bucket)!;
  const extraDirs = view.extraDirs.get(spec.bucket) ?? [];
  const wholeProblem = checkListPage(whole, files, { prefix: spec.prefix, delimiter: spec.delimiter, maxKeys: 1000 }, extraDirs);
  if (wholeProblem) return `unpaged: ${wholeProblem}`;
  if (!spec.delimiter) {
    const want = expectedKeys(files, spec.prefix, extraDirs);
    if (JSON.stringify(whole.keys) !== JSON.stringify(want)) return `unpaged keys ${JSON.stringify(whole.keys)}, the bucket has ${JSON.stringify(want)}`;
  }
  const keys: string[] = [];
  const prefixes: string[] = [];
  let resume: [string, string][] = [];
  for (let page = 0; page < MAX_PAGES; page++) {
    const answer = await list([...base, ['max-keys', String(spec.maxKeys)], ...resume]);
    if (typeof answer === 'string') return `page ${page}: ${answer}`;
    const problem = checkListPage(answer, files, { prefix: spec.prefix, delimiter: spec.delimiter, maxKeys: spec.maxKeys }, extraDirs);
    if (problem) return `page ${page}: ${problem}`;
    keys.push(...answer.keys);
    prefixes.push(...answer.prefixes);
    if (!answer.truncated) {
      if (JSON.stringify(keys) !== JSON.stringify(whole.keys)) return `paged keys ${JSON.stringify(keys)} differ from unpaged ${JSON.stringify(whole.keys)}`;
      if (JSON.stringify(prefixes) !== JSON.stringify(whole.prefixes)) return `paged prefixes ${JSON.stringify(prefixes)} differ from unpaged ${JSON.stringify(whole.prefixes)}`;
      return undefined;
    }
    if (spec.version === 2) {
      if (!answer.nextToken) return `page ${page} is truncated without a NextContinuationToken`;
      resume = [['continuation-token', answer.nextToken]];
    } else {
      // v1 clients resume from NextMarker, or from the last key when there is none.
      const marker = answer.nextMarker ?? answer.keys.at(-1);
      if (marker === undefined) return `page ${page} is truncated with neither NextMarker nor a key`;
      resume = [['marker', marker]];
    }
  }
  return `still truncated after ${MAX_PAGES} pages of ${spec.maxKeys}`;
}
