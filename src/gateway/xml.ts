import type { S3Error } from './errors.js';

/**
 * The XML documents the gateway answers with. Built as strings (a handful of fixed shapes; no
 * XML library needed), every text value escaped. Namespaces and element order follow S3.
 */
const NS = 'http://s3.amazonaws.com/doc/2006-03-01/';
const DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n';

/** Escapes text for element content and attribute values; drops characters XML 1.0 forbids. */
export function escapeXml(text: string): string {
  return (
    text
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
      .replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!)
  );
}

/** <Name>escaped value</Name>, or nothing when the value is undefined. */
export function el(name: string, value: string | number | boolean | undefined): string {
  if (value === undefined) return '';
  return `<${name}>${escapeXml(String(value))}</${name}>`;
}

export function errorXml(err: S3Error, resource: string, requestId: string, hostId: string): string {
  const fields = Object.entries(err.fields)
    .map(([k, v]) => el(k, v))
    .join('');
  return (
    DECLARATION +
    `<Error>${el('Code', err.code)}${el('Message', err.message)}${fields}` +
    `${el('Resource', resource)}${el('RequestId', requestId)}${el('HostId', hostId)}</Error>`
  );
}

export interface Owner {
  id: string;
  displayName: string;
}

function ownerXml(owner: Owner): string {
  return `<Owner>${el('ID', owner.id)}${el('DisplayName', owner.displayName)}</Owner>`;
}

export function listBucketsXml(buckets: { name: string; created: Date }[], owner: Owner): string {
  const items = buckets.map((b) => `<Bucket>${el('Name', b.name)}${el('CreationDate', b.created.toISOString())}</Bucket>`).join('');
  return `${DECLARATION}<ListAllMyBucketsResult xmlns="${NS}">${ownerXml(owner)}<Buckets>${items}</Buckets></ListAllMyBucketsResult>`;
}

/** us-east-1 is answered as an empty LocationConstraint, as S3 does. */
export function locationXml(region: string): string {
  const value = region === 'us-east-1' ? '' : escapeXml(region);
  return `${DECLARATION}<LocationConstraint xmlns="${NS}">${value}</LocationConstraint>`;
}

export interface ListedObject {
  key: string;
  size: number;
  mtimeMs: number;
  etag: string;
}

/** What both list versions share: the page of keys and common prefixes and how it was asked for. */
export interface ListPage {
  bucket: string;
  prefix: string;
  delimiter?: string;
  maxKeys: number;
  /** Keys and prefixes are URL-encoded in the answer (encoding-type=url, what awscli asks for). */
  encodeUrl: boolean;
  objects: ListedObject[];
  commonPrefixes: string[];
  truncated: boolean;
  /** Each object's owner, where S3 gives it: always in v1, with fetch-owner=true in v2. */
  owner?: Owner;
}

export function listObjectsV2Xml(
  page: ListPage & { continuationToken?: string; nextContinuationToken?: string; startAfter?: string },
): string {
  const enc = encoder(page.encodeUrl);
  return (
    `${DECLARATION}<ListBucketResult xmlns="${NS}">` +
    el('Name', page.bucket) +
    el('Prefix', enc(page.prefix)) +
    (page.delimiter ? el('Delimiter', enc(page.delimiter)) : '') +
    el('MaxKeys', page.maxKeys) +
    (page.encodeUrl ? el('EncodingType', 'url') : '') +
    el('KeyCount', page.objects.length + page.commonPrefixes.length) +
    el('IsTruncated', page.truncated) +
    el('ContinuationToken', page.continuationToken) +
    el('NextContinuationToken', page.nextContinuationToken) +
    (page.startAfter !== undefined ? el('StartAfter', enc(page.startAfter)) : '') +
    contentsXml(page, enc) +
    '</ListBucketResult>'
  );
}

export function listObjectsV1Xml(page: ListPage & { marker: string; nextMarker?: string }): string {
  const enc = encoder(page.encodeUrl);
  return (
    `${DECLARATION}<ListBucketResult xmlns="${NS}">` +
    el('Name', page.bucket) +
    el('Prefix', enc(page.prefix)) +
    el('Marker', enc(page.marker)) +
    (page.nextMarker !== undefined ? el('NextMarker', enc(page.nextMarker)) : '') +
    el('MaxKeys', page.maxKeys) +
    (page.delimiter ? el('Delimiter', enc(page.delimiter)) : '') +
    (page.encodeUrl ? el('EncodingType', 'url') : '') +
    el('IsTruncated', page.truncated) +
    contentsXml(page, enc) +
    '</ListBucketResult>'
  );
}

function contentsXml(page: ListPage, enc: (s: string) => string): string {
  let out = '';
  for (const o of page.objects) {
    out +=
      `<Contents>${el('Key', enc(o.key))}${el('LastModified', new Date(o.mtimeMs).toISOString())}` +
      `${el('ETag', quoteEtag(o.etag))}${el('Size', o.size)}${page.owner ? ownerXml(page.owner) : ''}<StorageClass>STANDARD</StorageClass></Contents>`;
  }
  for (const p of page.commonPrefixes) out += `<CommonPrefixes>${el('Prefix', enc(p))}</CommonPrefixes>`;
  return out;
}

/** An ETag as S3 sends it: in double quotes. */
export function quoteEtag(version: string): string {
  return `"${version}"`;
}

function encoder(encodeUrl: boolean): (s: string) => string {
  return encodeUrl ? (s) => s3UrlEncode(s) : (s) => s;
}

/** S3's encoding-type=url: every byte but unreserved characters and "/" percent-encoded. */
export function s3UrlEncode(s: string): string {
  return encodeURIComponent(s)
    .replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
    .replace(/%2F/g, '/');
}
