import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FanoutError } from '../../core/errors.js';
import { parseWorkerConfig } from './index.js';

const invalid = (pattern: RegExp) => (err: FanoutError) => err.code === 'INVALID_CONFIG' && pattern.test(err.message);
const withKeys = (...credentials: { accessKeyId: string; secretAccessKey: string }[]) => ({ id: 'w', gateway: { listen: '127.0.0.1:0', credentials } });

test('a gateway access key id no signature could carry is refused at start, naming the field', () => {
  // "/" splits SigV4's credential scope, ":" ends SigV2's id, "," splits SigV4's Authorization; spaces and controls end a header token.
  for (const accessKeyId of ['AKID/2', 'AKID:2', 'AKID,2', 'AK ID', 'AKID\t', 'AKID\n', 'AK\u0000ID', 'AKIDé']) {
    assert.throws(
      () => parseWorkerConfig(withKeys({ accessKeyId, secretAccessKey: 'secret' })),
      invalid(/gateway\.credentials\.0\.accessKeyId: access key ids are printable ASCII/),
      JSON.stringify(accessKeyId),
    );
  }
  const ok = parseWorkerConfig(withKeys({ accessKeyId: 'AKIA_EXAMPLE-1.x+y=z', secretAccessKey: 'secret/with:any chars' }));
  assert.equal(ok.gateway.credentials[0]!.accessKeyId, 'AKIA_EXAMPLE-1.x+y=z');
});

test('an access key id given twice is refused (one of its two secrets would never work)', () => {
  assert.throws(
    () => parseWorkerConfig(withKeys({ accessKeyId: 'A', secretAccessKey: 's1' }, { accessKeyId: 'B', secretAccessKey: 's2' }, { accessKeyId: 'A', secretAccessKey: 's3' })),
    invalid(/gateway\.credentials\.2\.accessKeyId: access key id "A" is given twice/),
  );
  assert.equal(parseWorkerConfig(withKeys({ accessKeyId: 'A', secretAccessKey: 's1' }, { accessKeyId: 'B', secretAccessKey: 's1' })).gateway.credentials.length, 2);
});
