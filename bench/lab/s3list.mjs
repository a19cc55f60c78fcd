// ListObjectsV2 over a directory, for the lab's origin (origin.mjs --bucket): enough of S3 for a
// fanout mount `s3://BUCKET` to list it (releases need a listable source: workers find the
// release manifests under `.fanout-releases/`). Keys are paths relative to the directory; ETags
// are the origin's "SIZE-MTIMEMS". Pagination: the continuation token is the last key returned.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

const xml = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Every file under DIR/sub (recursively), as keys. */
async function walk(root, sub) {
  const out = [];
  const entries = await readdir(join(root, sub), { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const key = sub + e.name;
    if (e.isDirectory()) out.push(...(await walk(root, `${key}/`)));
    else if (e.isFile()) out.push(key);
  }
  return out;
}

/** The ListBucketResult XML for `query` (URLSearchParams of a list-type=2 request). */
export async function listObjects(root, bucket, query) {
  const prefix = query.get('prefix') ?? '';
  const delimiter = query.get('delimiter') ?? '';
  const maxKeys = Math.min(1000, Number(query.get('max-keys') ?? 1000));
  const after = query.get('continuation-token') ?? query.get('start-after') ?? '';
  const dir = prefix.slice(0, prefix.lastIndexOf('/') + 1);
  const items = []; // { key, prefix: boolean }
  if (delimiter === '/') {
    const entries = await readdir(join(root, dir), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const key = dir + e.name;
      if (!key.startsWith(prefix)) continue;
      if (e.isDirectory()) items.push({ key: `${key}/`, prefix: true });
      else if (e.isFile()) items.push({ key, prefix: false });
    }
  } else {
    for (const key of await walk(root, dir)) if (key.startsWith(prefix)) items.push({ key, prefix: false });
  }
  items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const rest = items.filter((i) => i.key > after);
  const page = rest.slice(0, maxKeys);
  const truncated = rest.length > page.length;
  const parts = [];
  for (const item of page) {
    if (item.prefix) {
      parts.push(`<CommonPrefixes><Prefix>${xml(item.key)}</Prefix></CommonPrefixes>`);
      continue;
    }
    const st = await stat(join(root, item.key)).catch(() => null);
    if (!st) continue; // removed since the listing
    parts.push(
      `<Contents><Key>${xml(item.key)}</Key><LastModified>${st.mtime.toISOString()}</LastModified>` +
        `<ETag>&quot;${st.size}-${Math.floor(st.mtimeMs)}&quot;</ETag><Size>${st.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`,
    );
  }
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
    `<Name>${xml(bucket)}</Name><Prefix>${xml(prefix)}</Prefix>${delimiter ? `<Delimiter>${xml(delimiter)}</Delimiter>` : ''}` +
    `<MaxKeys>${maxKeys}</MaxKeys><KeyCount>${page.length}</KeyCount><IsTruncated>${truncated}</IsTruncated>` +
    (truncated ? `<NextContinuationToken>${xml(page.at(-1).key)}</NextContinuationToken>` : '') +
    parts.join('') +
    '</ListBucketResult>'
  );
}
